//! Label values taken from traced processes: escaped twice, reversibly.
//!
//! A cache name or a `comm` is whatever the traced program chose: any bytes,
//! control characters and invalid UTF-8 included. Two layers make it safe in
//! the exposition and keep the real name recoverable:
//!
//! 1. [`visible`]: printable text passes; a backslash becomes `\\`; C0 and C1
//!    controls, DEL and the bidi controls (which reorder what a terminal or a
//!    dashboard shows) become `\u{XXXX}`; bytes that are not UTF-8 become
//!    `\xNN`. This is what Prometheus stores and Grafana shows, and
//!    [`recover`] turns it back into the original bytes.
//! 2. [`exposition`]: the OpenMetrics text format's own escapes (`\\`, `\"`,
//!    `\n`), which the `prometheus-client` crate leaves to the caller for
//!    label values. A scraper undoes this layer when it parses.

use std::fmt::Write as _;

/// Whether `c` is shown as an escape rather than as itself: C0, DEL, C1 and
/// the Unicode bidi controls.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Layer 1: `bytes` as printable text that [`recover`] turns back into them.
pub fn visible(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if is_hidden(c) {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Layer 2: `text` escaped for a label value of the OpenMetrics (and
/// Prometheus 0.0.4) text format.
pub fn exposition(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Both layers: a label value ready to be written between the quotes.
pub fn label_value(bytes: &[u8]) -> String {
    exposition(&visible(bytes))
}

/// The original bytes of a [`visible`] text (a label value as Prometheus
/// stores it), or `None` when `text` is not one.
pub fn recover(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_unchanged() {
        assert_eq!(label_value(b"zio_buf_512"), "zio_buf_512");
        assert_eq!(label_value("caché-ü".as_bytes()), "caché-ü");
    }

    #[test]
    fn hostile_names_are_escaped_visibly() {
        assert_eq!(visible(b"a\x1b[31mb"), "a\\u{001b}[31mb");
        assert_eq!(visible(b"x\ny"), "x\\u{000a}y");
        assert_eq!(visible(b"\x7f"), "\\u{007f}");
        assert_eq!(visible("\u{85}".as_bytes()), "\\u{0085}");
        assert_eq!(visible("ab\u{202e}cd".as_bytes()), "ab\\u{202e}cd");
        assert_eq!(visible(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(visible(br"back\slash"), r"back\\slash");
    }

    #[test]
    fn the_exposition_layer_escapes_quotes_backslashes_and_newlines() {
        assert_eq!(exposition("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        // A name that tries to close the label and start another.
        assert_eq!(
            label_value(br#"x",pid="1"#),
            r#"x\",pid=\"1"#,
            "the quote must stay inside the value"
        );
        assert_eq!(label_value(b"a\\b"), r"a\\\\b");
    }

    #[test]
    fn every_name_is_recoverable() {
        let names: [&[u8]; 8] = [
            b"plain",
            b"a\x1b[2Jb",
            b"\xff\x00\x80",
            br"\x41 is not A",
            br"\u{41}",
            "\u{2066}bidi\u{2069}".as_bytes(),
            "ümlaut\u{9f}".as_bytes(),
            b"",
        ];
        for name in names {
            let v = visible(name);
            assert!(!v.chars().any(is_hidden), "{v:?}");
            assert_eq!(recover(&v).as_deref(), Some(name), "{v:?}");
        }
        // Exhaustively over every byte pair.
        for a in 0..=255u8 {
            for b in [0u8, b'\\', b'x', 0x80, 0xc3, 0xbc, 0xff] {
                let name = [a, b];
                assert_eq!(recover(&visible(&name)).as_deref(), Some(&name[..]));
            }
        }
    }

    #[test]
    fn malformed_escapes_are_not_recovered() {
        assert_eq!(recover("\\"), None);
        assert_eq!(recover("\\q"), None);
        assert_eq!(recover("\\xZZ"), None);
        assert_eq!(recover("\\u{zz}"), None);
    }
}
