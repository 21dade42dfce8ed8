//! The library is linked with `hot-text.ld` (its `build.rs`): the code
//! programs run on it, gathered in one output section at the start of
//! its code, so that they keep those pages resident and not the whole
//! library (`cargo xtask hot-text` regenerates the script; `BENCHMARKS.md`
//! measures what a process keeps). These tests check the layout, that
//! the script has not gone stale, and that the library brings no shared
//! library of its own into a process beyond libc and the loader.

use object::{Object, ObjectSection, ObjectSymbol};

mod common;

/// The bytes of the library this test run built.
fn library() -> Vec<u8> {
    let lib = common::lib();
    std::fs::read(&lib).unwrap_or_else(|e| panic!("reading {}: {e}", lib.display()))
}

#[test]
fn the_code_programs_run_lies_in_the_hot_section() {
    let data = library();
    let elf = object::File::parse(&*data).expect("the library is an ELF file");
    let hot = elf
        .section_by_name(".text.hot")
        .expect("a .text.hot section: build.rs links with hot-text.ld");
    let text = elf.section_by_name(".text").expect("a .text section");
    assert!(
        hot.address() < text.address(),
        "the hot section comes first, with the code that starts the library"
    );
    // The PLT, which std's thread-local storage calls through, is in the
    // hot section (lld) or right before it (GNU ld, which puts it there).
    if let Some(plt) = elf.section_by_name(".plt") {
        assert!(
            plt.address() + plt.size() <= hot.address()
                && hot.address() - (plt.address() + plt.size()) < 64,
            "the PLT at {:#x} lies apart from the hot section at {:#x}",
            plt.address(),
            hot.address()
        );
    }
    let within = |name: &str| {
        let s = elf
            .dynamic_symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} is exported"));
        (hot.address()..hot.address() + hot.size()).contains(&s.address())
    };
    for f in ["malloc", "free", "calloc", "realloc", "malloc_usable_size"] {
        assert!(within(f), "{f} lies in .text.hot");
    }
}

/// `pattern` (with `*` only, as `hot-text.ld` writes them) matches `name`.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn the_scripts_patterns_still_name_the_librarys_functions() {
    // A rename, a new toolchain or a changed std leaves patterns that
    // match nothing, and the code they named among the cold: then
    // `sudo cargo xtask hot-text` regenerates the script.
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-text.ld"),
    )
    .expect("malloc/hot-text.ld");
    let patterns: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("*(.text*.")?.strip_suffix(')'))
        .collect();
    assert!(
        patterns.len() > 50,
        "{} patterns in hot-text.ld",
        patterns.len()
    );
    let data = library();
    let elf = object::File::parse(&*data).expect("the library is an ELF file");
    let names: Vec<&str> = elf
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter_map(|s| s.name().ok())
        .collect();
    let unmatched: Vec<&str> = patterns
        .iter()
        .copied()
        .filter(|p| !names.iter().any(|n| glob(p, n)))
        .collect();
    assert!(
        unmatched.len() * 10 <= patterns.len(),
        "{} of hot-text.ld's {} patterns match no function of the library: regenerate it \
         with `sudo cargo xtask hot-text`. Unmatched:\n{}",
        unmatched.len(),
        patterns.len(),
        unmatched.join("\n")
    );
}

#[test]
fn the_glob_matches_as_the_linker_does() {
    assert!(glob("malloc", "malloc"));
    assert!(!glob("malloc", "malloc_trim"));
    assert!(glob("_ZN1a4build17h*", "_ZN1a4build17h0123456789abcdefE"));
    assert!(!glob("_ZN1a4build17h*", "_ZN1a5build217h0123456789abcdefE"));
    assert!(glob(
        "*5Mutex14lock_contended",
        "_RNvMNtCsx_3std5Mutex14lock_contended"
    ));
    assert!(glob("_RNvCs*_3std*4init", "_RNvCsAbC_3std9something4init"));
    assert!(!glob("*7Condvar*", "_RNv4Mutex"));
}

/// The library needs no shared library but libc and the dynamic loader:
/// the unwinder std would take from `libgcc_s.so.1` is linked in from
/// `libgcc_eh.a` (its `build.rs`), so a program that does not load
/// `libgcc_s` keeps none of it resident for this library.
#[test]
fn the_library_needs_only_libc_and_the_loader() {
    use object::read::elf::{Dyn, ElfFile64};
    let data = library();
    let elf = ElfFile64::<object::Endianness>::parse(&*data).expect("the library is an ELF file");
    let endian = elf.endian();
    let sections = elf.elf_section_table();
    let (dynamic, link) = sections
        .dynamic(endian, &*data)
        .expect("a readable dynamic section")
        .expect("a dynamic section");
    let strings = sections.strings(endian, &*data, link).expect("its strings");
    let needed: Vec<String> = dynamic
        .iter()
        .filter(|d| d.d_tag(endian) == object::elf::DT_NEEDED)
        .map(|d| {
            let at = u32::try_from(d.d_val(endian)).expect("a string offset");
            String::from_utf8_lossy(strings.get(at).expect("a needed library's name")).into_owned()
        })
        .collect();
    assert!(!needed.is_empty(), "the library needs libc");
    for n in &needed {
        assert!(
            n.starts_with("libc.so") || n.starts_with("ld-linux"),
            "the library needs {n} (all: {needed:?}); build.rs links the unwinder in"
        );
    }
}
