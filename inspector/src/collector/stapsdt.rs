//! `.note.stapsdt` parsing: where every USDT site of an ELF file is, and at
//! which file offset a uprobe must be planted for it.
//!
//! Each `probe::probe!` (or `DTRACE_PROBE`) site adds one note of type
//! `NT_STAPSDT` (3), owner `stapsdt`, whose descriptor is
//!
//! ```text
//! u64 pc          link-time address of the site's `nop`
//! u64 base        link-time address of `_.stapsdt.base`
//! u64 semaphore   address of the gating semaphore, 0 when ungated
//! char provider[] char name[] char args[]     (each NUL terminated)
//! ```
//!
//! A source probe can compile to several sites (inlining, loop unrolling);
//! each site is its own note, and all of them must be traced.
//!
//! Like libbpf (`usdt.c`, `collect_usdt_targets`), the site's address is
//! adjusted by the difference between the actual address of the
//! `.stapsdt.base` section and the note's `base` (prelink may have moved the
//! file), then turned into a file offset through the executable `PT_LOAD`
//! segment that contains it: `offset = vaddr - p_vaddr + p_offset`. Uprobes
//! are attached at file offsets; a virtual address would plant the breakpoint
//! at the wrong byte of a PIE or shared object.
//!
//! Malformed input (truncated notes, strings without NUL) is an error for the
//! whole file, and so is a site that is not provably the start of the `nop`
//! every USDT site compiles to (decoded from its function's start, see
//! [`code`](super::code)): the collector never attaches at an offset it is
//! not sure of. A site outside every executable segment is skipped: the
//! linker leaves such notes behind for functions it discarded, and nothing
//! runs there, so nothing is attached there either.

use object::{
    Endianness, Object as _, ObjectSection as _, ReadRef, elf,
    read::elf::{ElfFile64, ProgramHeader as _, SectionHeader as _},
};

use super::code::{Code, SiteError};

/// `n_type` of a stapsdt note.
pub const NT_STAPSDT: u32 = 3;

/// One probe site found in `.note.stapsdt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Provider (`slabscope` for ours).
    pub provider: String,
    /// Probe name.
    pub name: String,
    /// The site's address after the `.stapsdt.base` adjustment.
    pub vaddr: u64,
    /// File offset of the site: where the uprobe goes.
    pub file_offset: u64,
    /// Address of the semaphore (0 when the probe is not gated).
    pub semaphore: u64,
    /// Argument spec string, e.g. `-8@%rax -8@%rdx`.
    pub args: String,
}

/// Why `.note.stapsdt` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StapsdtError {
    /// The file is not a 64-bit ELF object, or its headers are damaged.
    #[error("not a readable 64-bit ELF file: {0}")]
    Elf(#[source] object::Error),
    /// The note section could not be read or iterated (truncated, bad sizes).
    #[error(".note.stapsdt is damaged: {0}")]
    Notes(#[source] object::Error),
    /// A note's descriptor is shorter than the three addresses and three
    /// NUL-terminated strings it must hold.
    #[error("stapsdt note #{index} is truncated: {reason}")]
    Truncated {
        /// The note's index in the section, from 0.
        index: usize,
        /// What is missing.
        reason: &'static str,
    },
    /// A provider, name or argument string is not UTF-8.
    #[error("stapsdt note #{index} has a string that is not UTF-8")]
    NotUtf8 {
        /// The note's index in the section, from 0.
        index: usize,
    },
    /// The site is not the start of a `nop` instruction in code (see
    /// [`code`](super::code)): a uprobe there would change what the traced
    /// program computes. Nothing in the file is attached.
    #[error(
        "stapsdt note #{index} ({provider}:{name}) at file offset {file_offset:#x} is no place \
         for a breakpoint: {reason}"
    )]
    UnsafeSite {
        /// The note's index in the section, from 0.
        index: usize,
        /// The note's provider, as the file gives it.
        provider: String,
        /// The note's probe name, as the file gives it.
        name: String,
        /// The site's file offset.
        file_offset: u64,
        /// Why the site is no place for a breakpoint.
        reason: Box<SiteError>,
    },
    /// The site is outside every executable `PT_LOAD` segment.
    #[error(
        "stapsdt note #{index} ({provider}:{name}) points at {vaddr:#x}, outside every \
         executable PT_LOAD segment"
    )]
    NotInText {
        /// The note's index in the section, from 0.
        index: usize,
        /// The note's provider, as the file gives it.
        provider: String,
        /// The note's probe name, as the file gives it.
        name: String,
        /// The address the note gives.
        vaddr: u64,
    },
}

/// Every attachable stapsdt site of the ELF file `data`, in note order. A
/// file without a `.note.stapsdt` section has none. Sites outside every
/// executable segment (left behind by functions the linker discarded) are
/// skipped; a damaged note, or a site that is not the start of a `nop`
/// instruction in code, is an error.
pub fn parse<'data, R: ReadRef<'data>>(data: R) -> Result<Vec<Site>, StapsdtError> {
    parse_provider(data, None)
}

/// The attachable sites of `provider` (every provider with `None`), as
/// [`parse`] finds them. Every note must be well formed, but only the sites
/// returned are checked instruction by instruction ([`code`](super::code)):
/// other providers' sites (the C library has its own) are never attached, and
/// a stripped library's may not be provable.
pub fn parse_provider<'data, R: ReadRef<'data>>(
    data: R,
    provider: Option<&str>,
) -> Result<Vec<Site>, StapsdtError> {
    let file = ElfFile64::<Endianness, R>::parse(data).map_err(StapsdtError::Elf)?;
    let endian = file.endian();
    let Some(section) = file.section_by_name(".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let actual_base = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let mut notes = match section
        .elf_section_header()
        .notes(endian, data)
        .map_err(StapsdtError::Notes)?
    {
        Some(notes) => notes,
        None => return Ok(Vec::new()),
    };

    let segments: Vec<(u64, u64, u64)> = file
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian) & elf::PF_X != 0)
        .map(|ph| (ph.p_vaddr(endian), ph.p_filesz(endian), ph.p_offset(endian)))
        .collect();

    let code = Code::of(&file, &segments);
    let mut sites = Vec::new();
    let mut index = 0;
    while let Some(note) = notes.next().map_err(StapsdtError::Notes)? {
        if note.name() != b"stapsdt" || note.n_type(endian) != NT_STAPSDT {
            continue;
        }
        match parse_desc(
            note.desc(),
            index,
            file.is_little_endian(),
            actual_base,
            &segments,
        ) {
            Ok(site) if provider.is_some_and(|p| p != site.provider) => {}
            Ok(site) => {
                code.check(data, site.vaddr, site.file_offset)
                    .map_err(|reason| StapsdtError::UnsafeSite {
                        index,
                        provider: site.provider.clone(),
                        name: site.name.clone(),
                        file_offset: site.file_offset,
                        reason: Box::new(reason),
                    })?;
                sites.push(site);
            }
            // The linker dropped the function holding this site (an API
            // function the program never calls, removed by --gc-sections) but
            // kept its note, whose address now points outside every
            // executable segment. Nothing runs there, so there is nothing to
            // attach: skip it, as bcc and bpftrace do.
            Err(StapsdtError::NotInText { .. }) => {}
            Err(e) => return Err(e),
        }
        index += 1;
    }
    Ok(sites)
}

fn parse_desc(
    desc: &[u8],
    index: usize,
    little_endian: bool,
    actual_base: Option<u64>,
    segments: &[(u64, u64, u64)],
) -> Result<Site, StapsdtError> {
    let word = |i: usize| -> Option<u64> {
        let bytes: [u8; 8] = desc.get(i * 8..i * 8 + 8)?.try_into().ok()?;
        Some(if little_endian {
            u64::from_le_bytes(bytes)
        } else {
            u64::from_be_bytes(bytes)
        })
    };
    let truncated = |reason| StapsdtError::Truncated { index, reason };
    let pc = word(0).ok_or_else(|| truncated("no room for the site address"))?;
    let base = word(1).ok_or_else(|| truncated("no room for the base address"))?;
    let semaphore = word(2).ok_or_else(|| truncated("no room for the semaphore address"))?;

    let mut rest = &desc[24..];
    let mut string = |what| -> Result<String, StapsdtError> {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| truncated(what))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| StapsdtError::NotUtf8 { index })?;
        rest = &rest[end + 1..];
        Ok(s.to_owned())
    };
    let provider = string("the provider is not NUL terminated")?;
    let name = string("the probe name is not NUL terminated")?;
    let args = string("the argument string is not NUL terminated")?;
    if provider.is_empty() || name.is_empty() {
        return Err(truncated("empty provider or probe name"));
    }

    let vaddr = match actual_base {
        Some(actual) if base != 0 => pc.wrapping_add(actual).wrapping_sub(base),
        _ => pc,
    };
    let file_offset = segments
        .iter()
        .find(|&&(start, size, _)| vaddr >= start && vaddr - start < size)
        .map(|&(start, _, offset)| vaddr - start + offset)
        .ok_or_else(|| StapsdtError::NotInText {
            index,
            provider: provider.clone(),
            name: name.clone(),
            vaddr,
        })?;
    Ok(Site {
        provider,
        name,
        vaddr,
        file_offset,
        semaphore,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[(u64, u64, u64)] = &[(0x1000, 0x2000, 0x800)];

    fn desc(pc: u64, base: u64, strings: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&pc.to_le_bytes());
        d.extend_from_slice(&base.to_le_bytes());
        d.extend_from_slice(&0u64.to_le_bytes());
        d.extend_from_slice(strings);
        d
    }

    #[test]
    fn descriptor_with_base_adjustment_and_segment_offset() {
        let d = desc(0x1100, 0x5000, b"slabscope\0reap\0-8@%rax -8@%rdx\0");
        // .stapsdt.base moved by +0x10: so did the site.
        let site = parse_desc(&d, 0, true, Some(0x5010), TEXT).unwrap();
        assert_eq!(site.vaddr, 0x1110);
        assert_eq!(site.file_offset, 0x1110 - 0x1000 + 0x800);
        assert_eq!(site.provider, "slabscope");
        assert_eq!(site.name, "reap");
        assert_eq!(site.args, "-8@%rax -8@%rdx");
        // No .stapsdt.base section: no adjustment (libbpf does the same).
        let site = parse_desc(&d, 0, true, None, TEXT).unwrap();
        assert_eq!(site.vaddr, 0x1100);
    }

    #[test]
    fn truncated_descriptors_are_errors() {
        let full = desc(0x1100, 0, b"slabscope\0reap\0-8@%rax\0");
        for len in [0, 7, 8, 16, 23, 24, 30, full.len() - 1] {
            let err = parse_desc(&full[..len], 4, true, None, TEXT).unwrap_err();
            assert!(
                matches!(err, StapsdtError::Truncated { index: 4, .. }),
                "length {len}: {err}"
            );
        }
        assert!(parse_desc(&full, 0, true, None, TEXT).is_ok());
    }

    #[test]
    fn sites_outside_text_and_bad_strings_are_errors() {
        let d = desc(0x3000, 0, b"slabscope\0reap\0\0");
        assert!(matches!(
            parse_desc(&d, 0, true, None, TEXT),
            Err(StapsdtError::NotInText { vaddr: 0x3000, .. })
        ));
        let d = desc(0x1100, 0, b"slab\xffscope\0reap\0\0");
        assert!(matches!(
            parse_desc(&d, 0, true, None, TEXT),
            Err(StapsdtError::NotUtf8 { index: 0 })
        ));
        let d = desc(0x1100, 0, b"\0reap\0\0");
        assert!(matches!(
            parse_desc(&d, 0, true, None, TEXT),
            Err(StapsdtError::Truncated { .. })
        ));
    }

    #[test]
    fn non_elf_input_is_an_error() {
        assert!(matches!(
            parse(&b"#!/bin/sh\n"[..]),
            Err(StapsdtError::Elf(_))
        ));
        assert!(matches!(parse(&[][..]), Err(StapsdtError::Elf(_))));
    }
}
