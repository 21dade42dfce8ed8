//! x86-64 USDT argument specs → [`UsdtArgSpec`], the way libbpf's `usdt.c`
//! parses them (`parse_usdt_arg` for x86).
//!
//! A stapsdt note describes each argument as `SIZE@LOCATION`, where SIZE is
//! 1, 2, 4 or 8 bytes, negative for signed values, and LOCATION is an AT&T
//! operand chosen by the compiler:
//!
//! | form                        | example              | [`UsdtArgSpec::arg_type`] |
//! |-----------------------------|----------------------|---------------------------|
//! | `$imm`                      | `-4@$-1`             | [`ARG_CONST`]             |
//! | `%reg`                      | `8@%rax`, `-2@%ax`   | [`ARG_REG`]               |
//! | `disp(%reg)`, `(%reg)`      | `8@-16(%rbp)`        | [`ARG_REG_DEREF`]         |
//! | `disp(%base,%index,scale)`  | `-8@8(%rbx,%rcx,4)`  | [`ARG_SIB`]               |
//!
//! The eBPF side reads the whole 64-bit register (or 8 bytes of memory) and
//! keeps the low SIZE bytes, sign- or zero-extending them with
//! [`UsdtArgSpec::arg_bitshift`], so a sub-register (`%eax`, `%ax`, `%al`)
//! maps to the offset of its full register. High-byte registers (`%ah`),
//! `%rip`-relative and symbolic operands are rejected, as libbpf rejects them.

use slabscope_probes::{
    ARG_CONST, ARG_REG, ARG_REG_DEREF, ARG_SIB, MAX_ARGS, UsdtArgSpec, UsdtSpec,
};

/// Why an argument spec could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgSpecError {
    /// The argument has no `SIZE@` prefix.
    #[error("argument {0:?} has no `SIZE@` prefix")]
    NoSize(String),
    /// SIZE is not ±1, ±2, ±4 or ±8.
    #[error("argument {0:?} has an unsupported size (expected ±1, ±2, ±4 or ±8)")]
    BadSize(String),
    /// The location is not one of the supported forms.
    #[error("argument {0:?} has an unsupported location")]
    BadLocation(String),
    /// A register name is unknown or not readable from `struct pt_regs`.
    #[error("argument {arg:?} names register %{reg}, which cannot be read from pt_regs")]
    BadRegister {
        /// The whole argument spec.
        arg: String,
        /// The register it names, without the `%`.
        reg: String,
    },
    /// An immediate or displacement is not a number.
    #[error("argument {0:?} has a non-numeric immediate or displacement")]
    BadNumber(String),
    /// The scale of a base-index form is not 1, 2, 4 or 8.
    #[error("argument {0:?} has a scale other than 1, 2, 4 or 8")]
    BadScale(String),
    /// More than [`MAX_ARGS`] arguments.
    #[error("probe site has {0} arguments; at most {MAX_ARGS} are supported")]
    TooMany(usize),
}

/// Byte offset of a 64-bit register in x86-64 `struct pt_regs`
/// (arch/x86/include/asm/ptrace.h), for every name that aliases its low bytes.
fn reg_offset(name: &str) -> Option<u16> {
    const REGS: &[(&[&str], u16)] = &[
        (&["r15", "r15d", "r15w", "r15b"], 0),
        (&["r14", "r14d", "r14w", "r14b"], 8),
        (&["r13", "r13d", "r13w", "r13b"], 16),
        (&["r12", "r12d", "r12w", "r12b"], 24),
        (&["rbp", "ebp", "bp", "bpl"], 32),
        (&["rbx", "ebx", "bx", "bl"], 40),
        (&["r11", "r11d", "r11w", "r11b"], 48),
        (&["r10", "r10d", "r10w", "r10b"], 56),
        (&["r9", "r9d", "r9w", "r9b"], 64),
        (&["r8", "r8d", "r8w", "r8b"], 72),
        (&["rax", "eax", "ax", "al"], 80),
        (&["rcx", "ecx", "cx", "cl"], 88),
        (&["rdx", "edx", "dx", "dl"], 96),
        (&["rsi", "esi", "si", "sil"], 104),
        (&["rdi", "edi", "di", "dil"], 112),
        // 120 orig_rax, 128 rip, 136 cs, 144 eflags
        (&["rsp", "esp", "sp", "spl"], 152),
    ];
    REGS.iter()
        .find(|(names, _)| names.contains(&name))
        .map(|&(_, off)| off)
}

/// Parses an integer as the assembler prints it: decimal or `0x` hex, with an
/// optional sign.
fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u64>().ok()?
        }
    };
    // Wrapping: `$-1` and `$0xffffffffffffffff` are the same 64-bit pattern.
    Some(if neg {
        (magnitude as i64).wrapping_neg()
    } else {
        magnitude as i64
    })
}

fn register(arg: &str, operand: &str) -> Result<u16, ArgSpecError> {
    let name = operand
        .strip_prefix('%')
        .ok_or_else(|| ArgSpecError::BadLocation(arg.to_owned()))?;
    reg_offset(name).ok_or_else(|| ArgSpecError::BadRegister {
        arg: arg.to_owned(),
        reg: name.to_owned(),
    })
}

/// Parses one `SIZE@LOCATION` argument.
pub fn parse_arg(arg: &str) -> Result<UsdtArgSpec, ArgSpecError> {
    let (size, loc) = arg
        .split_once('@')
        .ok_or_else(|| ArgSpecError::NoSize(arg.to_owned()))?;
    let size: i32 = size
        .parse()
        .map_err(|_| ArgSpecError::NoSize(arg.to_owned()))?;
    let bytes = size.unsigned_abs();
    if !matches!(bytes, 1 | 2 | 4 | 8) {
        return Err(ArgSpecError::BadSize(arg.to_owned()));
    }
    let mut spec = UsdtArgSpec {
        arg_signed: u8::from(size < 0),
        arg_bitshift: (64 - 8 * bytes) as u8,
        ..UsdtArgSpec::default()
    };

    if let Some(imm) = loc.strip_prefix('$') {
        spec.arg_type = ARG_CONST;
        spec.val_off =
            parse_int(imm).ok_or_else(|| ArgSpecError::BadNumber(arg.to_owned()))? as u64;
    } else if loc.starts_with('%') {
        spec.arg_type = ARG_REG;
        spec.reg_off = register(arg, loc)?;
    } else if let Some(open) = loc.find('(') {
        let inner = loc[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| ArgSpecError::BadLocation(arg.to_owned()))?;
        let disp = &loc[..open];
        spec.val_off = if disp.is_empty() {
            0
        } else {
            parse_int(disp).ok_or_else(|| ArgSpecError::BadNumber(arg.to_owned()))? as u64
        };
        let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
        match parts.as_slice() {
            [base] => {
                spec.arg_type = ARG_REG_DEREF;
                spec.reg_off = register(arg, base)?;
            }
            [base, index] | [base, index, _] => {
                spec.arg_type = ARG_SIB;
                spec.reg_off = register(arg, base)?;
                spec.idx_reg_off = register(arg, index)?;
                spec.scale_bits = match parts.get(2) {
                    None => 0,
                    Some(&"1") => 0,
                    Some(&"2") => 1,
                    Some(&"4") => 2,
                    Some(&"8") => 3,
                    Some(_) => return Err(ArgSpecError::BadScale(arg.to_owned())),
                };
            }
            _ => return Err(ArgSpecError::BadLocation(arg.to_owned())),
        }
    } else {
        return Err(ArgSpecError::BadLocation(arg.to_owned()));
    }
    Ok(spec)
}

/// Parses the whitespace-separated argument string of one probe site.
pub fn parse_args(args: &str) -> Result<UsdtSpec, ArgSpecError> {
    let args: Vec<&str> = args.split_whitespace().collect();
    if args.len() > MAX_ARGS {
        return Err(ArgSpecError::TooMany(args.len()));
    }
    let mut spec = UsdtSpec::default();
    for (slot, arg) in spec.args.iter_mut().zip(&args) {
        *slot = parse_arg(arg)?;
    }
    spec.arg_cnt = args.len() as u16;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAX: u16 = 80;
    const RBX: u16 = 40;
    const RCX: u16 = 88;
    const RDI: u16 = 112;
    const RBP: u16 = 32;

    fn spec(arg_type: u8, reg_off: u16, val_off: u64, signed: bool, bytes: u8) -> UsdtArgSpec {
        UsdtArgSpec {
            val_off,
            reg_off,
            arg_type,
            arg_signed: u8::from(signed),
            arg_bitshift: 64 - 8 * bytes,
            ..UsdtArgSpec::default()
        }
    }

    #[test]
    fn immediates() {
        assert_eq!(
            parse_arg("-4@$-1").unwrap(),
            spec(ARG_CONST, 0, u64::MAX, true, 4)
        );
        assert_eq!(
            parse_arg("8@$42").unwrap(),
            spec(ARG_CONST, 0, 42, false, 8)
        );
        assert_eq!(
            parse_arg("2@$0x1f").unwrap(),
            spec(ARG_CONST, 0, 0x1f, false, 2)
        );
        assert_eq!(
            parse_arg("-8@$-9223372036854775808").unwrap(),
            spec(ARG_CONST, 0, 1 << 63, true, 8)
        );
    }

    #[test]
    fn registers_of_every_width_alias_the_full_register() {
        assert_eq!(
            parse_arg("8@%rax").unwrap(),
            spec(ARG_REG, RAX, 0, false, 8)
        );
        assert_eq!(
            parse_arg("-8@%rax").unwrap(),
            spec(ARG_REG, RAX, 0, true, 8)
        );
        assert_eq!(
            parse_arg("-4@%eax").unwrap(),
            spec(ARG_REG, RAX, 0, true, 4)
        );
        assert_eq!(parse_arg("-2@%ax").unwrap(), spec(ARG_REG, RAX, 0, true, 2));
        assert_eq!(parse_arg("1@%al").unwrap(), spec(ARG_REG, RAX, 0, false, 1));
        assert_eq!(parse_arg("4@%r9d").unwrap(), spec(ARG_REG, 64, 0, false, 4));
        assert_eq!(
            parse_arg("1@%sil").unwrap(),
            spec(ARG_REG, 104, 0, false, 1)
        );
        assert_eq!(
            parse_arg("8@%rsp").unwrap(),
            spec(ARG_REG, 152, 0, false, 8)
        );
        assert_eq!(parse_arg("-8@%r15").unwrap(), spec(ARG_REG, 0, 0, true, 8));
    }

    #[test]
    fn register_indirect() {
        assert_eq!(
            parse_arg("8@-16(%rbp)").unwrap(),
            spec(ARG_REG_DEREF, RBP, (-16i64) as u64, false, 8)
        );
        assert_eq!(
            parse_arg("8@(%rdi)").unwrap(),
            spec(ARG_REG_DEREF, RDI, 0, false, 8)
        );
        assert_eq!(
            parse_arg("-4@0x10(%rbx)").unwrap(),
            spec(ARG_REG_DEREF, RBX, 16, true, 4)
        );
    }

    #[test]
    fn base_index_scale() {
        let mut want = spec(ARG_SIB, RBX, 8, true, 8);
        want.idx_reg_off = RCX;
        want.scale_bits = 2;
        assert_eq!(parse_arg("-8@8(%rbx,%rcx,4)").unwrap(), want);

        let mut want = spec(ARG_SIB, RAX, 0, false, 1);
        want.idx_reg_off = RDI;
        assert_eq!(parse_arg("1@(%rax,%rdi)").unwrap(), want);
        assert_eq!(parse_arg("1@(%rax,%rdi,1)").unwrap(), want);

        let mut want = spec(ARG_SIB, RBP, (-24i64) as u64, false, 2);
        want.idx_reg_off = RCX;
        want.scale_bits = 3;
        assert_eq!(parse_arg("2@-24(%rbp,%rcx,8)").unwrap(), want);
    }

    #[test]
    fn bad_inputs_are_rejected_with_the_reason() {
        use ArgSpecError::*;
        type Variant = fn(String) -> ArgSpecError;
        let cases: &[(&str, Variant)] = &[
            ("%rax", NoSize),
            ("x@%rax", NoSize),
            ("3@%rax", BadSize),
            ("-16@%rax", BadSize),
            ("0@%rax", BadSize),
            ("8@rax", BadLocation),
            ("8@", BadLocation),
            ("8@$", BadNumber),
            ("8@$abc", BadNumber),
            ("8@sym(%rip)", BadNumber),
            ("8@8(%rax", BadLocation),
            ("8@(%rax,%rbx,3)", BadScale),
            ("8@(%rax,%rbx,4,1)", BadLocation),
            ("8@(rax)", BadLocation),
        ];
        for (input, want) in cases {
            assert_eq!(parse_arg(input), Err(want(input.to_string())), "{input}");
        }
        for (input, reg) in [
            ("1@%ah", "ah"),
            ("8@%rip", "rip"),
            ("8@8(%rip)", "rip"),
            ("8@%xmm0", "xmm0"),
        ] {
            assert_eq!(
                parse_arg(input),
                Err(BadRegister {
                    arg: input.to_string(),
                    reg: reg.to_string()
                }),
                "{input}"
            );
        }
    }

    #[test]
    fn argument_lists() {
        let s = parse_args("-8@%rax 8@-16(%rbp)  -4@$-1").unwrap();
        assert_eq!(s.arg_cnt, 3);
        assert_eq!(s.args[0], spec(ARG_REG, RAX, 0, true, 8));
        assert_eq!(s.args[2], spec(ARG_CONST, 0, u64::MAX, true, 4));
        assert_eq!(s.args[3], UsdtArgSpec::default());
        assert_eq!(parse_args("").unwrap().arg_cnt, 0);
        let many = vec!["8@%rax"; MAX_ARGS + 1].join(" ");
        assert_eq!(parse_args(&many), Err(ArgSpecError::TooMany(MAX_ARGS + 1)));
        assert_eq!(
            parse_args("8@%rax 8@%bogus"),
            Err(ArgSpecError::BadRegister {
                arg: "8@%bogus".into(),
                reg: "bogus".into()
            })
        );
    }
}
