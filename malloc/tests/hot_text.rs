//! The library is linked with `hot-text.ld` (its `build.rs`): the code
//! programs run on it, gathered in one output section at the start of
//! its code, so that they keep those pages resident and not the whole
//! library (`cargo xtask hot-text` regenerates the script; `BENCHMARKS.md`
//! measures what a process keeps).

use object::{Object, ObjectSection, ObjectSymbol};

mod common;

#[test]
fn the_code_programs_run_lies_in_the_hot_section() {
    let lib = common::lib();
    let data = std::fs::read(&lib).unwrap_or_else(|e| panic!("reading {}: {e}", lib.display()));
    let elf = object::File::parse(&*data).expect("the library is an ELF file");
    let hot = elf
        .section_by_name(".text.hot")
        .expect("a .text.hot section: build.rs links with hot-text.ld");
    let text = elf.section_by_name(".text").expect("a .text section");
    assert!(
        hot.address() < text.address(),
        "the hot section comes first, with the code that starts the library"
    );
    assert!(
        elf.section_by_name(".plt").is_none(),
        "the PLT, which std's thread-local storage calls through, is in the hot section"
    );
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
