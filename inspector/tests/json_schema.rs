//! The `--json` contract: the committed JSON Schema (docs/slabscope.schema.json)
//! is the one generated from the output types, and docs/JSON.md documents
//! exactly the fields the schema has. The real output of a traced process is
//! validated against the schema by `cli_workload` and `cli_histograms`
//! (they need root).
//!
//! After changing an output type, regenerate the schema with
//! `SLABSCOPE_UPDATE_SCHEMA=1 cargo test -p slabscope-inspector --test json_schema`.

mod schema_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use slabscope_inspector::output::{SCHEMA_VERSION, json_schema};

const UPDATE: &str = "SLABSCOPE_UPDATE_SCHEMA";

fn docs(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = docs("slabscope.schema.json");
    let generated = json_schema();
    if std::env::var_os(UPDATE).is_some() {
        std::fs::write(&path, &generated)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/slabscope.schema.json is not the schema the output types generate; after \
         changing them, regenerate it with `{UPDATE}=1 cargo test -p slabscope-inspector \
         --test json_schema`, update docs/JSON.md to match, and bump SCHEMA_VERSION if a \
         field was removed, renamed or changed its type or unit"
    );
}

/// Every field of the schema as a path: `at`, `caches[].name`,
/// `caches[].counters.last_ns`, `caches[].histograms[].buckets[].count`.
fn schema_paths(schema: &Value) -> BTreeSet<String> {
    fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/$defs/")
                    .unwrap_or_else(|| panic!("unexpected $ref {r}"));
                resolve(root, &root["$defs"][name])
            }
            None => node,
        }
    }
    fn walk(root: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        let node = resolve(root, node);
        if let Some(items) = node.get("items") {
            walk(root, items, &format!("{prefix}[]"), out);
            return;
        }
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, sub) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.insert(path.clone());
            walk(root, sub, &path, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(schema, schema, "", &mut out);
    out
}

/// The fields docs/JSON.md documents: the first cell of every table row,
/// when it is a backquoted path.
fn documented_paths(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(path, _)| path.to_string())
        .collect()
}

#[test]
fn json_md_documents_every_field_of_the_schema_and_no_other() {
    let schema: Value = serde_json::from_str(&json_schema()).expect("the schema is JSON");
    let in_schema = schema_paths(&schema);
    assert!(
        in_schema.contains("caches[].counters.last_ns")
            && in_schema.contains("caches[].histograms[].buckets[].lt_seconds")
            && in_schema.contains("caches[].obj_alloc"),
        "the walk misses nested or flattened fields: {in_schema:?}"
    );
    let path = docs("JSON.md");
    let markdown = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let in_doc = documented_paths(&markdown);
    let undocumented: Vec<&String> = in_schema.difference(&in_doc).collect();
    let stale: Vec<&String> = in_doc.difference(&in_schema).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/JSON.md and the schema disagree.\nfields in the schema but not in docs/JSON.md \
         (add a table row `| `path` | type | unit | meaning |`): {undocumented:?}\nrows in \
         docs/JSON.md for no field of the schema: {stale:?}"
    );
    assert!(
        markdown.contains(&format!("`schema_version` is {SCHEMA_VERSION}")),
        "docs/JSON.md must say which schema_version it documents"
    );
}

#[test]
fn a_sample_with_every_part_validates_and_a_broken_one_does_not() {
    use slabscope_inspector::output::json_line;
    use slabscope_inspector::sample::{CacheState, Sample};
    use slabscope_probes::{
        CacheCounters, CacheSnapshot, HistKey, HistKind, Log2Histogram, flags::KMC_KVMEM, name_buf,
    };

    let snapshot = CacheSnapshot {
        cache_id: 0x7f00_0000_1000,
        flags: KMC_KVMEM | 1 << 40,
        obj_size: 104,
        ncpus: 2,
        name: name_buf(b"kmem_alloc_104"),
        ..CacheSnapshot::default()
    };
    let mut hist = Log2Histogram::ZERO;
    hist.buckets[20] = 3;
    hist.sum_ns = 3_000_000;
    let mut sample = Sample {
        caches: vec![CacheState {
            pid: 7,
            snapshot,
            counters: CacheCounters {
                stats: 2,
                last_ns: 123,
                ..CacheCounters::default()
            },
            destroyed: false,
        }],
        ..Sample::default()
    };
    sample.histograms.insert(
        HistKey {
            pid: 7,
            kind: HistKind::Grow as u32,
            cache_id: snapshot.cache_id,
        },
        hist,
    );
    let doc: Value = serde_json::from_str(&json_line(&sample)).expect("JSON");
    assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    assert_eq!(
        doc["caches"][0]["flag_names"],
        serde_json::json!(["KMC_KVMEM", "0x10000000000"])
    );
    assert!(
        doc["caches"][0]["histograms"][0]["buckets"].is_array(),
        "the sample has a histogram: {doc:#}"
    );
    schema_support::assert_matches_schema(&doc);

    // The validator can fail: a missing field and a wrong type are caught.
    let mut broken = doc.clone();
    broken["caches"][0]
        .as_object_mut()
        .unwrap()
        .remove("obj_alloc");
    broken["at"] = Value::from("soon");
    let schema = schema_support::committed_schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    assert_eq!(validator.iter_errors(&broken).count(), 2, "{broken:#}");
}
