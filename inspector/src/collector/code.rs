//! Proving a probe site is safe to plant a breakpoint on: that it is the
//! first byte of an instruction, and that instruction is a `nop`.
//!
//! A uprobe overwrites the byte at its offset with `int3`. At the start of the
//! `nop` a USDT site compiles to, that changes nothing the program computes.
//! Anywhere else it does: a note pointing at a `0x90` byte inside the
//! immediate of `movabs $0x9090909090909090,%rax` passes a one-byte check,
//! and the traced program then loads another value (or crashes) while it is
//! traced, in every process that maps the file when it is traced with
//! `--exe`. The notes come from the target, so they are not trusted.
//!
//! On x86-64, where instructions have any length from 1 to 15 bytes, the
//! only sound way to know where instructions start is to decode from a known
//! start. [`Code::check`] finds the function symbol that contains the site
//! (from `.symtab`, else `.dynsym`), decodes from its first byte with
//! `iced-x86` up to the site, and accepts the site only if an instruction
//! starts exactly there and it is a `nop` of any length. The site must also
//! lie in a section flagged executable (`SHF_EXECINSTR`), not in data that
//! happens to be mapped executable.
//!
//! A site that no function symbol covers is refused, never attached on a
//! weaker check: a binary stripped of `.symtab` whose `.dynsym` does not
//! cover the site cannot be traced (rebuild it, or keep its symbol table,
//! e.g. `strip --strip-debug` instead of `strip`). So is a function that
//! does not decode up to the site (data inside code, or a symbol whose size
//! is wrong).
//!
//! On AArch64 every instruction is 4 bytes: a site must be 4-byte aligned and
//! hold `nop` (`0xd503201f`). Other architectures are refused.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{
    Endianness, Object as _, ObjectSection as _, ObjectSymbol, ReadRef, SectionFlags, SymbolKind,
    elf, read::elf::ElfFile64,
};

/// The longest x86 instruction.
const MAX_INSN: u64 = 15;

/// Why a site is not a place to plant a breakpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    /// The site is in a section that does not hold code.
    #[error("it is in {section}, a section that holds no code")]
    NotCode {
        /// The section's name.
        section: String,
    },
    /// No function symbol contains the site, so where instructions start
    /// cannot be proven.
    #[error(
        "no function symbol covers it, so slabscope cannot prove it is the start of an \
         instruction; keep the file's symbol table (do not strip it, or use \
         `strip --strip-debug`)"
    )]
    NoSymbol,
    /// Decoding from the function's start met bytes that are no instruction.
    #[error(
        "the function {function} does not decode up to it (invalid instruction at {at:#x}), \
         so it cannot be proven to be an instruction"
    )]
    Undecodable {
        /// The function symbol holding the site.
        function: String,
        /// The address of the bytes that do not decode.
        at: u64,
    },
    /// The site is inside an instruction, not at its start.
    #[error(
        "it is byte {into} of the {len}-byte instruction {mnemonic} at {start:#x} in {function}, \
         not the start of an instruction: a breakpoint there would change that instruction"
    )]
    InsideInstruction {
        /// The function symbol holding the site.
        function: String,
        /// The address where the instruction starts.
        start: u64,
        /// Its length in bytes.
        len: usize,
        /// How many bytes into it the site is.
        into: u64,
        /// Its mnemonic.
        mnemonic: String,
    },
    /// An instruction starts at the site but is not a `nop`.
    #[error("it holds a {mnemonic} instruction ({bytes:02x?}), not the site's nop")]
    NotANop {
        /// Its mnemonic.
        mnemonic: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The bytes at the site cannot be read from the file.
    #[error("its bytes are not in the file")]
    Unreadable,
    /// This architecture's instructions are not checked, so its sites are
    /// not attached.
    #[error("slabscope cannot check probe sites of {0:?} code")]
    Architecture(object::Architecture),
}

/// The defined function symbols (with a size) of `symbols`.
fn functions<'data, S: ObjectSymbol<'data>>(symbols: impl Iterator<Item = S>) -> Vec<Function> {
    symbols
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0 && s.is_definition())
        .map(|s| Function {
            start: s.address(),
            size: s.size(),
            name: s.name().unwrap_or("(unnamed)").to_owned(),
        })
        .collect()
}

/// A function symbol: start address, size, name.
#[derive(Clone, Debug)]
struct Function {
    start: u64,
    size: u64,
    name: String,
}

/// What [`Code::check`] needs of one ELF file: its architecture, executable
/// segments and sections, and function symbols.
#[derive(Debug)]
pub struct Code {
    arch: object::Architecture,
    /// Executable `PT_LOAD` segments: (vaddr, filesz, offset).
    segments: Vec<(u64, u64, u64)>,
    /// Allocated sections: (address, size, executable, name).
    sections: Vec<(u64, u64, bool, String)>,
    /// Function symbols of `.symtab`, or of `.dynsym` when there is no
    /// `.symtab`, sorted by start.
    functions: Vec<Function>,
}

impl Code {
    /// Collects what the checks need from `file`; `segments` are its
    /// executable `PT_LOAD` segments as (vaddr, filesz, offset).
    pub fn of<'data, R: ReadRef<'data>>(
        file: &ElfFile64<'data, Endianness, R>,
        segments: &[(u64, u64, u64)],
    ) -> Code {
        let sections = file
            .sections()
            .filter_map(|s| {
                let SectionFlags::Elf { sh_flags } = s.flags() else {
                    return None;
                };
                if sh_flags & u64::from(elf::SHF_ALLOC) == 0 {
                    return None;
                }
                let exec = sh_flags & u64::from(elf::SHF_EXECINSTR) != 0;
                let name = s.name().unwrap_or("(unnamed)").to_owned();
                Some((s.address(), s.size(), exec, name))
            })
            .collect();
        let mut funcs = functions(file.symbols());
        if funcs.is_empty() {
            funcs = functions(file.dynamic_symbols());
        }
        funcs.sort_by_key(|f| (f.start, f.size));
        Code {
            arch: file.architecture(),
            segments: segments.to_vec(),
            sections,
            functions: funcs,
        }
    }

    /// File offset of `vaddr`, through the executable segment holding it.
    fn offset_of(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(start, size, _)| vaddr >= start && vaddr - start < size)
            .map(|&(start, _, offset)| vaddr - start + offset)
    }

    /// The innermost function symbol containing `vaddr`.
    fn function_at(&self, vaddr: u64) -> Option<&Function> {
        let end = self.functions.partition_point(|f| f.start <= vaddr);
        self.functions[..end]
            .iter()
            .rev()
            .find(|f| vaddr - f.start < f.size)
    }

    /// Checks that the site at `vaddr` (file offset `file_offset`) is the
    /// start of a `nop` instruction in code.
    pub fn check<'data, R: ReadRef<'data>>(
        &self,
        data: R,
        vaddr: u64,
        file_offset: u64,
    ) -> Result<(), SiteError> {
        match self
            .sections
            .iter()
            .find(|&&(start, size, _, _)| vaddr >= start && vaddr - start < size)
        {
            Some((_, _, true, _)) => {}
            Some((_, _, false, name)) => {
                return Err(SiteError::NotCode {
                    section: name.clone(),
                });
            }
            None => {
                return Err(SiteError::NotCode {
                    section: "no section".into(),
                });
            }
        }
        match self.arch {
            object::Architecture::X86_64 => self.check_x86_64(data, vaddr),
            object::Architecture::Aarch64 => {
                const NOP: [u8; 4] = 0xd503_201fu32.to_le_bytes();
                let bytes = data.read_bytes_at(file_offset, 4).unwrap_or(&[]);
                if vaddr.is_multiple_of(4) && bytes == NOP {
                    Ok(())
                } else {
                    Err(SiteError::NotANop {
                        mnemonic: "non-nop or misaligned".into(),
                        bytes: bytes.to_vec(),
                    })
                }
            }
            arch => Err(SiteError::Architecture(arch)),
        }
    }

    fn check_x86_64<'data, R: ReadRef<'data>>(&self, data: R, vaddr: u64) -> Result<(), SiteError> {
        let f = self.function_at(vaddr).ok_or(SiteError::NoSymbol)?;
        let offset = self.offset_of(f.start).ok_or(SiteError::Unreadable)?;
        // Up to the site's instruction, cut at the function's end.
        let len = (vaddr - f.start + MAX_INSN).min(f.size);
        let code = data
            .read_bytes_at(offset, len)
            .map_err(|()| SiteError::Unreadable)?;
        check_boundary(code, f.start, vaddr, &f.name)
    }
}

/// Decodes `code` (the bytes of function `function`, which starts at
/// `start`) up to `site`, and succeeds when an instruction starts at `site`
/// and it is a `nop`.
pub fn check_boundary(code: &[u8], start: u64, site: u64, function: &str) -> Result<(), SiteError> {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    while decoder.can_decode() {
        let at = decoder.ip();
        let insn = decoder.decode();
        if insn.is_invalid() {
            return Err(SiteError::Undecodable {
                function: function.to_owned(),
                at,
            });
        }
        if at == site {
            return if insn.mnemonic() == Mnemonic::Nop {
                Ok(())
            } else {
                let from = (at - start) as usize;
                Err(SiteError::NotANop {
                    mnemonic: format!("{:?}", insn.mnemonic()).to_lowercase(),
                    bytes: code[from..from + insn.len()].to_vec(),
                })
            };
        }
        if insn.next_ip() > site {
            return Err(SiteError::InsideInstruction {
                function: function.to_owned(),
                start: at,
                len: insn.len(),
                into: site - at,
                mnemonic: format!("{:?}", insn.mnemonic()).to_lowercase(),
            });
        }
    }
    // The bytes ran out before the site: the function is shorter than its
    // symbol says, or the last instruction is cut.
    Err(SiteError::Undecodable {
        function: function.to_owned(),
        at: decoder.ip(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `movabs $0x9090909090909090,%rax; nopl 0x90909090(%rax); nop; ret`
    const CODE: &[u8] = &[
        0x48, 0xb8, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, // movabs
        0x0f, 0x1f, 0x80, 0x90, 0x90, 0x90, 0x90, // nopl 0x90909090(%rax)
        0x90, // nop
        0xc3, // ret
    ];
    const START: u64 = 0x1000;

    fn check(site: u64) -> Result<(), SiteError> {
        check_boundary(CODE, START, START + site, "f")
    }

    #[test]
    fn nops_of_any_length_at_an_instruction_start_pass() {
        assert_eq!(check(10), Ok(()), "the 7-byte nop");
        assert_eq!(check(17), Ok(()), "the 1-byte nop");
    }

    #[test]
    fn a_0x90_inside_an_immediate_is_refused() {
        for into in 1..10 {
            let e = check(into).unwrap_err();
            assert!(
                matches!(
                    e,
                    SiteError::InsideInstruction {
                        start: 0x1000,
                        len: 10,
                        ..
                    }
                ),
                "{into}: {e}"
            );
        }
        let e = check(2).unwrap_err().to_string();
        assert!(
            e.contains("byte 2 of the 10-byte instruction mov at 0x1000 in f"),
            "{e}"
        );
    }

    #[test]
    fn the_middle_of_a_multi_byte_nop_is_refused() {
        for into in 11..17 {
            assert!(
                matches!(
                    check(into),
                    Err(SiteError::InsideInstruction {
                        start: 0x100a,
                        len: 7,
                        ..
                    })
                ),
                "{into}"
            );
        }
    }

    #[test]
    fn other_instructions_and_bad_code_are_refused() {
        assert_eq!(
            check(0),
            Err(SiteError::NotANop {
                mnemonic: "mov".into(),
                bytes: CODE[..10].to_vec()
            })
        );
        assert!(matches!(check(18), Err(SiteError::NotANop { .. })));
        // Past the end of the bytes.
        assert!(matches!(check(19), Err(SiteError::Undecodable { .. })));
        // Bytes that are no instruction (0x06 is invalid in 64-bit mode).
        let bad = [0x06, 0x90];
        assert_eq!(
            check_boundary(&bad, START, START + 1, "g"),
            Err(SiteError::Undecodable {
                function: "g".into(),
                at: START
            })
        );
    }
}
