//! The committed JSON Schema of `--json` (docs/slabscope.schema.json), and
//! a check that a document validates against it, for the tests that run
//! the real binary and for `json_schema`.

use std::path::Path;

/// The committed JSON Schema of `--json` (docs/slabscope.schema.json).
pub fn committed_schema() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/slabscope.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Panics, listing every violation, unless `doc` (one `--json` document)
/// validates against the committed schema.
pub fn assert_matches_schema(doc: &serde_json::Value) {
    let schema = committed_schema();
    let validator = jsonschema::validator_for(&schema).expect("the committed schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "--json output does not match docs/slabscope.schema.json:\n{}\n\nthe document:\n{doc:#}",
        errors.join("\n")
    );
}
