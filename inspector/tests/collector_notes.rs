//! `.note.stapsdt` parsing on a real binary (the probe fixture), and on
//! copies of it with damaged notes. Needs no root.

mod collector_support;

use object::{Object as _, ObjectSection as _};
use slabscope_inspector::collector::{
    argspec,
    code::SiteError,
    plan,
    stapsdt::{self, StapsdtError},
    target::{self, ProbeFile},
};
use slabscope_probes::{PROBES, PROVIDER};

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(collector_support::fixture()).expect("reading the fixture binary")
}

#[test]
fn fixture_carries_every_probe_with_its_documented_argument_count() {
    let path = collector_support::fixture();
    let sites = target::slabscope_sites(&path).expect("parsing the fixture's notes");
    for def in &PROBES {
        let mine: Vec<_> = sites.iter().filter(|s| s.name == def.name).collect();
        assert!(!mine.is_empty(), "no site for slabscope:{}", def.name);
        for site in mine {
            assert_eq!(site.provider, PROVIDER);
            let spec =
                argspec::parse_args(&site.args).unwrap_or_else(|e| panic!("{}: {e}", site.name));
            assert_eq!(
                usize::from(spec.arg_cnt),
                def.args.len(),
                "slabscope:{} has args {:?}",
                def.name,
                site.args
            );
            assert_eq!(
                site.semaphore, 0,
                "slabscope:{} is semaphore-gated",
                def.name
            );
        }
    }
    // The fixture fires grow_start and grow_done from two call sites each.
    for name in ["grow_start", "grow_done"] {
        let n = sites.iter().filter(|s| s.name == name).count();
        assert!(n >= 2, "expected several {name} sites, found {n}");
    }
    // Every site of a known probe is planned for attachment.
    let file = ProbeFile {
        path: path.clone(),
        attach_path: path,
        sites: sites.clone(),
    };
    let planned = plan(std::slice::from_ref(&file)).expect("planning the fixture's sites");
    assert_eq!(planned.len(), sites.len());
}

#[test]
fn every_site_offset_lands_on_the_sites_nop() {
    let data = fixture_bytes();
    let sites = stapsdt::parse(&data[..]).expect("parsing the fixture's notes");
    let elf = object::File::parse(&data[..]).unwrap();
    let ours: Vec<_> = sites.iter().filter(|s| s.provider == PROVIDER).collect();
    assert!(!ours.is_empty());
    for site in ours {
        // Cross-check the segment-based conversion against the section
        // that holds the address.
        let text = elf
            .sections()
            .find(|s| s.address() <= site.vaddr && site.vaddr < s.address() + s.size())
            .unwrap_or_else(|| panic!("no section holds {:#x}", site.vaddr));
        let (sec_off, _) = text.file_range().expect("code section has file data");
        assert_eq!(
            site.file_offset,
            site.vaddr - text.address() + sec_off,
            "{}",
            site.name
        );
        assert_eq!(
            data[site.file_offset as usize], 0x90,
            "slabscope:{} offset {:#x} is not a nop",
            site.name, site.file_offset
        );
    }
}

/// File offset of the first stapsdt note and its descriptor size.
fn first_note(data: &[u8]) -> (usize, usize) {
    let elf = object::File::parse(data).unwrap();
    let section = elf
        .section_by_name(".note.stapsdt")
        .expect("fixture has notes");
    let (off, _) = section.file_range().unwrap();
    let off = off as usize;
    let namesz = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
    let descsz = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap()) as usize;
    assert_eq!(namesz, 8, "stapsdt\\0");
    (off, descsz)
}

fn parse_damaged(f: impl FnOnce(&mut Vec<u8>)) -> StapsdtError {
    let mut data = fixture_bytes();
    f(&mut data);
    match stapsdt::parse(&data[..]) {
        Ok(sites) => panic!("damaged notes parsed into {} sites", sites.len()),
        Err(e) => e,
    }
}

#[test]
fn a_descriptor_too_short_for_its_addresses_is_an_error() {
    let err = parse_damaged(|d| {
        let (off, _) = first_note(d);
        d[off + 4..off + 8].copy_from_slice(&16u32.to_le_bytes());
    });
    assert!(
        matches!(err, StapsdtError::Truncated { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_note_running_past_its_section_is_an_error() {
    let err = parse_damaged(|d| {
        let (off, _) = first_note(d);
        d[off + 4..off + 8].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    });
    assert!(matches!(err, StapsdtError::Notes(_)), "{err}");
}

#[test]
fn a_string_without_its_nul_is_an_error() {
    let err = parse_damaged(|d| {
        let (off, descsz) = first_note(d);
        // header (12) + "stapsdt\0" (8) + descriptor; its last byte ends the
        // argument string.
        d[off + 20 + descsz - 1] = b'x';
    });
    assert!(
        matches!(err, StapsdtError::Truncated { index: 0, .. }),
        "{err}"
    );
}

/// Site address (`pc`) of the first note, and where it is in the file.
fn first_pc(data: &[u8]) -> (usize, u64) {
    let (off, _) = first_note(data);
    let at = off + 20;
    (at, u64::from_le_bytes(data[at..at + 8].try_into().unwrap()))
}

#[test]
fn a_site_outside_the_code_is_skipped_never_attached() {
    // What --gc-sections leaves behind when it drops an unused function: a
    // note whose address points outside every executable segment.
    let data = fixture_bytes();
    let intact = stapsdt::parse(&data[..]).expect("parsing the fixture's notes");
    let mut damaged = data.clone();
    let (off, _) = first_note(&damaged);
    damaged[off + 20..off + 28].copy_from_slice(&0x10u64.to_le_bytes());
    let sites = stapsdt::parse(&damaged[..]).expect("a stray site does not spoil the file");
    assert_eq!(
        sites.len(),
        intact.len() - 1,
        "only the stray site is dropped"
    );
    assert_eq!(sites[..], intact[1..], "the other sites are untouched");
    assert!(sites.iter().all(|s| s.vaddr != 0x10));
}

#[test]
fn a_site_moved_off_its_nop_is_an_error() {
    let err = parse_damaged(|d| {
        let sites = stapsdt::parse(&d[..]).expect("parsing the fixture's notes");
        let (at, pc) = first_pc(d);
        // The first byte after the site's nop that is not a nop.
        let off = sites[0].file_offset as usize;
        let k = (1..64)
            .find(|k| d[off + k] != 0x90)
            .expect("code after the site") as u64;
        d[at..at + 8].copy_from_slice(&(pc + k).to_le_bytes());
    });
    assert!(
        matches!(err, StapsdtError::UnsafeSite { index: 0, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("is no place for a breakpoint"),
        "{err}"
    );
}

/// Address of the fixture's `slabscope_fixture_decoy`: `movabs
/// $0x9090909090909090,%rax` (10 bytes), `nopl 0x90909090(%rax)` (7 bytes),
/// `nop`.
fn decoy(data: &[u8]) -> u64 {
    use object::ObjectSymbol as _;
    let elf = object::File::parse(data).unwrap();
    let sym = elf
        .symbols()
        .find(|s| s.name() == Ok("slabscope_fixture_decoy"))
        .expect("the fixture exports its decoy");
    let off = elf
        .sections()
        .find_map(|s| {
            let (off, _) = s.file_range()?;
            (s.address() <= sym.address() && sym.address() < s.address() + s.size())
                .then(|| off + sym.address() - s.address())
        })
        .expect("the decoy's bytes") as usize;
    assert_eq!(
        data[off..off + 18],
        [
            0x48, 0xb8, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x0f, 0x1f, 0x80, 0x90,
            0x90, 0x90, 0x90, 0x90
        ],
        "the decoy's code"
    );
    sym.address()
}

/// The fixture with its first note's site moved to `pc`.
fn with_first_site_at(pc: u64) -> Vec<u8> {
    let mut data = fixture_bytes();
    let (at, _) = first_pc(&data);
    data[at..at + 8].copy_from_slice(&pc.to_le_bytes());
    data
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_0x90_inside_an_immediate_is_refused() {
    let data = fixture_bytes();
    let decoy = decoy(&data);
    // Byte 2 of the movabs: a 0x90 of its immediate.
    let err = stapsdt::parse(&with_first_site_at(decoy + 2)[..]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            StapsdtError::UnsafeSite { index: 0, reason, .. }
                if matches!(**reason, SiteError::InsideInstruction { len: 10, into: 2, .. })
        ),
        "{err}"
    );
    assert!(
        text.contains("byte 2 of the 10-byte instruction mov")
            && text.contains("slabscope_fixture_decoy"),
        "{text}"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_middle_of_a_multi_byte_nop_is_refused_its_start_is_not() {
    let data = fixture_bytes();
    let decoy = decoy(&data);
    // Byte 3 of the 7-byte nop: a 0x90 of its displacement.
    let err = stapsdt::parse(&with_first_site_at(decoy + 13)[..]).unwrap_err();
    assert!(
        matches!(
            &err,
            StapsdtError::UnsafeSite { reason, .. }
                if matches!(**reason, SiteError::InsideInstruction { len: 7, into: 3, .. })
        ),
        "{err}"
    );
    // The start of that nop, and the one-byte nop after it, are sites.
    for pc in [decoy + 10, decoy + 17] {
        let sites = stapsdt::parse(&with_first_site_at(pc)[..])
            .unwrap_or_else(|e| panic!("a nop at {pc:#x} refused: {e}"));
        assert_eq!(sites[0].vaddr, pc);
    }
}

#[test]
fn a_site_in_a_data_section_mapped_executable_is_refused() {
    // Make the segment that holds .rodata executable, as old linkers laid
    // files out, and point the site at a 0x90 byte of its data.
    let mut data = fixture_bytes();
    let elf = object::File::parse(&data[..]).unwrap();
    let rodata = elf.section_by_name(".rodata").expect(".rodata");
    let (ro_off, ro_size) = rodata.file_range().expect(".rodata is in the file");
    let ro_addr = rodata.address();
    drop(elf);
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(data[0x36..0x38].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(data[0x38..0x3a].try_into().unwrap()) as usize;
    let segment = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| {
            let word =
                |at: usize| u64::from_le_bytes(data[ph + at..ph + at + 8].try_into().unwrap());
            let p_type = u32::from_le_bytes(data[ph..ph + 4].try_into().unwrap());
            p_type == 1 && word(16) <= ro_addr && ro_addr < word(16) + word(32)
        })
        .expect("a PT_LOAD holds .rodata");
    data[segment + 4..segment + 8].copy_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    let at = ro_off as usize + 16.min(ro_size as usize - 1);
    data[at] = 0x90;
    let pc = ro_addr + (at as u64 - ro_off);
    let (note, _) = first_pc(&data);
    data[note..note + 8].copy_from_slice(&pc.to_le_bytes());
    let err = stapsdt::parse(&data[..]).unwrap_err();
    assert!(
        matches!(
            &err,
            StapsdtError::UnsafeSite { reason, .. }
                if matches!(&**reason, SiteError::NotCode { section } if section == ".rodata")
        ),
        "{err}"
    );
}

#[test]
fn a_truncated_file_is_an_error() {
    let data = fixture_bytes();
    let (off, _) = first_note(&data);
    for len in [off + 10, data.len() / 2, 64, 0] {
        assert!(
            stapsdt::parse(&data[..len]).is_err(),
            "file cut at {len} bytes parsed"
        );
    }
}
