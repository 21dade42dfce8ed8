//! The built `libslabscope.so` carries every probe of
//! `slabscope_probes::PROBES`, each site with the documented number of
//! arguments, none semaphore-gated: what tracers (and the probe reference)
//! rely on, checked on the allocator itself rather than on a fixture.
//! Without the `probes` feature there are no sites, and nothing to check.
#![cfg(feature = "probes")]

mod support;

use std::collections::BTreeMap;

use slabscope_probes::{PROBES, PROVIDER};

/// One `.note.stapsdt` entry: (provider, probe, semaphore, argument string).
type Note = (String, String, u64, String);

/// Every stapsdt note of a 64-bit little-endian ELF file.
fn stapsdt_notes(elf: &[u8]) -> Vec<Note> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(0x28) as usize,
        u16_at(0x3a),
        u16_at(0x3c),
        u16_at(0x3e),
    );
    let section = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(section(shstrndx) + 0x18) as usize;
    let name_of = |i: usize| {
        let start = strtab + u32_at(section(i));
        let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
        &elf[start..end]
    };
    let idx = (0..shnum)
        .find(|&i| name_of(i) == b".note.stapsdt")
        .expect("the library has a .note.stapsdt section");
    let (off, size) = (
        u64_at(section(idx) + 0x18) as usize,
        u64_at(section(idx) + 0x20) as usize,
    );
    let align4 = |n: usize| (n + 3) & !3;
    let mut notes = Vec::new();
    let mut at = off;
    while at < off + size {
        let (namesz, descsz, kind) = (u32_at(at), u32_at(at + 4), u32_at(at + 8));
        let name = &elf[at + 12..at + 12 + namesz];
        let desc = &elf[at + 12 + align4(namesz)..][..descsz];
        at += 12 + align4(namesz) + align4(descsz);
        if name != b"stapsdt\0" || kind != 3 {
            continue;
        }
        let semaphore = u64::from_le_bytes(desc[16..24].try_into().unwrap());
        let mut strings = desc[24..]
            .split(|&b| b == 0)
            .map(|s| String::from_utf8(s.to_vec()).expect("UTF-8 note strings"));
        let (provider, probe, args) = (
            strings.next().unwrap(),
            strings.next().unwrap(),
            strings.next().unwrap(),
        );
        notes.push((provider, probe, semaphore, args));
    }
    notes
}

#[test]
fn the_shared_library_carries_every_documented_probe() {
    let path = support::lib_dir().join("libslabscope.so");
    let elf = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let notes = stapsdt_notes(&elf);
    let mut sites: BTreeMap<&str, usize> = BTreeMap::new();
    for (provider, probe, semaphore, args) in &notes {
        assert_eq!(provider, PROVIDER, "only slabscope probes: {probe}");
        let def = PROBES
            .iter()
            .find(|d| d.name == probe)
            .unwrap_or_else(|| panic!("undocumented probe {provider}:{probe}"));
        assert_eq!(
            args.split_whitespace().count(),
            def.args.len(),
            "{probe} site has arguments {args:?}, documented {}",
            def.args.len()
        );
        assert_eq!(*semaphore, 0, "{probe} is semaphore-gated");
        *sites.entry(def.name).or_default() += 1;
    }
    for def in &PROBES {
        assert!(
            sites.contains_key(def.name),
            "{} has no site in {}",
            def.name,
            path.display()
        );
    }
}
