//! `cargo xtask test`'s layering check: the top-level modules of a crate
//! import each other without a cycle.
//!
//! A node is a top-level module with its whole tree (`cache` is
//! `cache/mod.rs`, `cache/grow.rs`, ...): inside a tree a child may import
//! its parent, as the house style allows; between trees every import must
//! point one way. An edge `a -> b` is any `crate::b` path in a file of tree
//! `a`, in `use` items and in expressions alike (`crate::{b, c::d}` groups
//! included), or a `crate::Name` that `lib.rs` re-exports from `b`. Comments
//! and string literals are skipped; `super::` paths are not read (they stay
//! within a tree unless they climb out of it, which a tree's files do not
//! do). `#[path]` attributes are refused: module trees are directories.
//!
//! The same check runs on the allocator and on the bench crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The module graph of one crate: top-level module -> modules it imports.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Checks the crate whose `src` directory is `src` (with `lib.rs` or
/// `main.rs` as its root) and returns its graph, or an error naming a cycle.
pub fn check(src: &Path) -> Result<Graph> {
    let graph = graph(src)?;
    if let Some(cycle) = find_cycle(&graph) {
        bail!(
            "{}: the modules import each other in a circle: {}; move the shared part \
             down into a module both can import, or pass it in from the upper one",
            src.display(),
            cycle.join(" -> ")
        );
    }
    Ok(graph)
}

/// `cargo xtask layers`: each crate's graph, modules in an order where
/// every module comes after those it imports, then any cycle.
pub fn print() -> Result<()> {
    for krate in ["allocator", "bench"] {
        let src = crate::run::workspace_root().join(krate).join("src");
        let g = graph(&src)?;
        println!("{krate}:");
        for (m, to) in &g {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            println!("  {m:<12} -> {}", to.join(", "));
        }
        match find_cycle(&g) {
            Some(c) => println!("  CYCLE: {}", c.join(" -> ")),
            None => println!("  no cycle"),
        }
    }
    Ok(())
}

/// Reads the module graph of the crate under `src`.
pub fn graph(src: &Path) -> Result<Graph> {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|r| src.join(r))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has neither lib.rs nor main.rs", src.display()))?;
    let mut files = Vec::new();
    rust_files(src, &mut files)?;

    // Top-level modules: foo.rs and foo/ (with mod.rs or children).
    let mut modules = BTreeSet::new();
    for f in &files {
        if let Some(top) = top_module(src, f, &root) {
            modules.insert(top);
        }
    }
    let reexports = reexports(&strip(&read(&root)?), &modules);

    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let text = strip(&read(f)?);
        if text.contains("#[path") {
            bail!(
                "{}: a #[path] attribute; give the module tree a directory instead",
                f.display()
            );
        }
        let Some(from) = top_module(src, f, &root) else {
            continue;
        };
        for name in crate_paths(&text) {
            let to = if modules.contains(&name) {
                Some(name)
            } else {
                reexports.get(&name).cloned()
            };
            if let Some(to) = to
                && to != from
            {
                graph.get_mut(&from).expect("every module").insert(to);
            }
        }
    }
    Ok(graph)
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for e in entries {
        let p = e
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// The top-level module a file belongs to; `None` for the crate root.
fn top_module(src: &Path, file: &Path, root: &Path) -> Option<String> {
    if file == root {
        return None;
    }
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.strip_suffix(".rs").unwrap_or(first).to_string())
}

/// `text` without comments and with string and char literals emptied.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string: r"..." or r#"..."#.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && b[j + 1..].iter().take(hashes).all(|&c| c == b'#') {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\''), or a lifetime ('a).
                let close = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|p| i + 2 + p)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match close {
                    Some(c) => {
                        out.push_str("' '");
                        i = c + 1;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            _ => {
                let ch = text[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every `crate::` path: `crate::a::b` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `$crate::` or `my_crate::`
        }
        let after = after.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        let id = ident_at(&group[i..]);
                        if !id.is_empty() && id != "self" {
                            out.insert(id.to_string());
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(after);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// Names the crate root re-exports from one of its modules:
/// `pub use cache::{Cache, CacheBuilder};` maps `Cache` and `CacheBuilder`
/// to `cache`.
fn reexports(root: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in root.split(';') {
        let s = stmt.trim();
        let Some(path) = s
            .strip_prefix("pub use ")
            .or_else(|| s.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        let module = ident_at(path);
        if !modules.contains(module) {
            continue;
        }
        let tail = &path[module.len()..];
        for word in tail.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.is_empty() && word != "self" && word != "as" {
                out.insert(word.to_string(), module.to_string());
            }
        }
    }
    out
}

/// A cycle of the graph as a path that starts and ends at the same module,
/// or `None`.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit<'a>(
        g: &'a Graph,
        n: &'a str,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(n, Mark::Open);
        stack.push(n);
        for m in g.get(n).into_iter().flatten() {
            match marks.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|s| *s == m).expect("on the stack");
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(g, m, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(graph, n, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a fresh temporary directory: (path, contents) pairs.
    fn fixture(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-modgraph-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let dir = fixture(
            "cycle",
            &[
                ("lib.rs", "mod a; mod b; mod c;"),
                ("a.rs", "use crate::b::B;\npub struct A;"),
                ("b.rs", "pub struct B;\nfn f() { crate::c::g() }"),
                ("c.rs", "use crate::{a::A, b};\npub fn g() {}"),
            ],
        );
        let err = check(&dir).unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_tree_may_import_its_parent_and_comments_and_strings_do_not_count() {
        let dir = fixture(
            "tree",
            &[
                ("lib.rs", "mod cache;\nmod slab;\npub use cache::Cache;"),
                (
                    "cache/mod.rs",
                    "mod grow;\nuse crate::slab::Slab;\npub struct Cache;",
                ),
                (
                    "cache/grow.rs",
                    "use crate::cache::Cache;\nuse super::Cache as C;",
                ),
                (
                    "slab.rs",
                    "//! Used by [`crate::cache`].\n/* crate::cache */\n\
                     const S: &str = \"crate::cache\";\nconst R: &str = r#\"crate::Cache\"#;\n\
                     pub struct Slab;",
                ),
            ],
        );
        let g = check(&dir).unwrap();
        assert_eq!(g["cache"], BTreeSet::from(["slab".to_string()]));
        assert!(g["slab"].is_empty(), "{g:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_root_reexport_is_an_edge_to_its_module() {
        let dir = fixture(
            "reexport",
            &[
                (
                    "lib.rs",
                    "mod cache;\nmod slab;\npub use cache::{Cache, Builder};",
                ),
                ("cache.rs", "use crate::slab::Slab;\npub struct Cache;"),
                ("slab.rs", "pub struct Slab;\nimpl crate::Cache {}"),
            ],
        );
        let err = check(&dir).unwrap_err().to_string();
        assert!(err.contains("cache -> slab -> cache"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn path_attributes_are_refused() {
        let dir = fixture(
            "path",
            &[
                ("lib.rs", "mod a;"),
                ("a.rs", "#[path = \"b.rs\"]\nmod b;"),
                ("b.rs", ""),
            ],
        );
        let err = check(&dir).unwrap_err().to_string();
        assert!(err.contains("#[path]"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
