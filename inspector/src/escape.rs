//! The one way a string from a traced process reaches the user.
//!
//! The inspector runs as root and prints what an unprivileged process wrote:
//! cache names, probe names and file names from its ELF notes and its
//! mappings. Printed raw, a name such as `"\x1b]52;c;...\x07"` writes root's
//! clipboard, `"\x1b[2J"` clears the screen, a newline forges a row, and a
//! bidi override (U+202E) shows the rest of a line reversed. So every such
//! string goes through [`escape`] ([`escape_bytes`] for bytes that need not
//! be UTF-8) before it reaches a terminal (the text outputs, the terminal
//! UI, stderr) or a dashboard (`slabscope serve`'s label values, which add
//! only the exposition format's own quoting on top), and every JSON document
//! through [`ascii_json`]; ripgrep and git escape file names the same way.
//! [`unescape`] gives back the original bytes of an escaped string.
//!
//! [`escape`] keeps a character only when it is printable and takes exactly
//! one terminal column (per `unicode-width`), and is not a bidi or other
//! format control. Everything else is shown as a visible escape: `\n`, `\r`,
//! `\t`, `\x1b` below U+0080, `\u{9b}` above (C1 controls, bidi overrides
//! and isolates, zero-width and combining characters, wide characters), and
//! `\` itself as `\\` so the result cannot be mistaken for another string.
//! Hence an escaped string is one line, and its width in columns is its
//! length in characters: a name can neither add a line nor shift a column,
//! whichever way a view pads it.
//!
//! JSON keeps the real string: [`ascii_json`] writes every non-ASCII
//! character and DEL as a `\uXXXX` escape (as Python's `json.dumps` does by
//! default), so the document is pure printable ASCII and a JSON parser gives
//! back the original string. A name that is not UTF-8 has already become
//! U+FFFD by then (`CacheStats::from` decodes it lossily).

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_width::UnicodeWidthChar as _;

/// Whether `c` is shown as itself: printable, one column wide, and neither
/// a control nor a format character that changes how text around it shows.
fn shown_as_is(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_graphic() || c == ' ';
    }
    !c.is_control() && !is_format_control(c) && c.width() == Some(1)
}

/// Unicode format characters that steer the display of other text: bidi
/// embeddings, overrides, isolates and marks, line and paragraph separators,
/// zero-width (non-)joiners and spaces, the BOM. Most are zero-width (and
/// [`shown_as_is`] rejects them for that too); they are listed so the rule
/// does not hang on one crate's width table.
fn is_format_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// `s` for a terminal: every character that is not printable and exactly one
/// column wide as a visible escape, `\` as `\\`. Borrowed when nothing needed
/// escaping.
///
/// # Examples
///
/// ```
/// use slabscope_inspector::escape::escape;
///
/// assert_eq!(escape("zio_cache"), "zio_cache");
/// assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
/// assert_eq!(escape("a\nfake row"), "a\\nfake row");
/// assert_eq!(escape("\u{9b}2J \u{202e}txt"), "\\u{9b}2J \\u{202e}txt");
/// ```
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().all(|c| c != '\\' && shown_as_is(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape`] for bytes that need not be UTF-8 (a `comm`, a path, a name
/// read from a process's memory): the UTF-8 runs are escaped as [`escape`]
/// does, and each byte that is not part of a UTF-8 character is written as
/// `\xNN`. [`unescape`] gives back the bytes.
///
/// # Examples
///
/// ```
/// use slabscope_inspector::escape::escape_bytes;
///
/// assert_eq!(escape_bytes(b"zio_cache"), "zio_cache");
/// assert_eq!(escape_bytes(b"st_\x1b[31m\xff"), "st_\\x1b[31m\\xff");
/// ```
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return escape(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// Appends `c` as [`escape`] shows it.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if shown_as_is(c) => out.push(c),
        // Writing to a String cannot fail.
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// The bytes an [`escape`]d or [`escape_bytes`]d text was made from, or
/// `None` when `text` is not such a text. Every escape stands for one
/// thing: `\xNN` is the byte NN (an ASCII control, or a byte that is not
/// UTF-8), `\u{H}` the UTF-8 of U+H.
///
/// # Examples
///
/// ```
/// use slabscope_inspector::escape::{escape_bytes, unescape};
///
/// let name = b"st_\x1b[31m\"red\\\xff";
/// assert_eq!(unescape(&escape_bytes(name)).as_deref(), Some(&name[..]));
/// ```
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next()? {
            '\\' => out.push(b'\\'),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                if hex.len() != 2 || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let mut hex = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        h if h.is_ascii_hexdigit() => hex.push(h),
                        _ => return None,
                    }
                }
                let c = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A serialized JSON document with every character outside printable ASCII
/// written as a `\uXXXX` escape (UTF-16 surrogate pairs above U+FFFF).
/// Outside strings, JSON is ASCII, so only string contents change, and
/// parsing gives back the same strings. `serde_json` already escapes C0
/// controls; this adds DEL, C1 controls, bidi controls and the rest.
///
/// # Examples
///
/// ```
/// use slabscope_inspector::escape::ascii_json;
///
/// let json = serde_json::to_string("\u{9b}2J\u{202e}").unwrap();
/// let safe = ascii_json(&json);
/// assert_eq!(safe, r#""\u009b2J\u202e""#);
/// assert_eq!(serde_json::from_str::<String>(&safe).unwrap(), "\u{9b}2J\u{202e}");
/// ```
pub fn ascii_json(json: &str) -> Cow<'_, str> {
    if json
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n')
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if c.is_ascii() && c != '\x7f' {
            out.push(c);
            continue;
        }
        for unit in c.encode_utf16(&mut units) {
            let _ = write!(out, "\\u{unit:04x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::HOSTILE_NAMES as HOSTILE;
    use unicode_width::UnicodeWidthStr as _;

    #[test]
    fn plain_names_are_borrowed_unchanged() {
        for name in ["zio_cache", "arc_buf_hdr_t_full", "a b-c.d", "é_cache", ""] {
            assert!(
                matches!(escape(name), Cow::Borrowed(n) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn controls_and_bidi_become_visible_escapes() {
        assert_eq!(escape("\x1b[2J"), "\\x1b[2J");
        assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escape("\0\x7f"), "\\x00\\x7f");
        assert_eq!(escape("\u{80}\u{9b}\u{9f}"), "\\u{80}\\u{9b}\\u{9f}");
        for c in ('\u{202a}'..='\u{202e}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(escape(&c.to_string()), format!("\\u{{{:x}}}", c as u32));
        }
        assert_eq!(
            escape("\u{200e}\u{200f}\u{61c}"),
            "\\u{200e}\\u{200f}\\u{61c}"
        );
        assert_eq!(escape("e\u{301}"), "e\\u{301}");
        assert_eq!(escape("\u{4e2d}"), "\\u{4e2d}");
        // A literal backslash cannot pass for an escape.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
    }

    #[test]
    fn an_escaped_name_is_one_line_one_column_per_char() {
        for name in HOSTILE {
            let e = escape(name);
            assert!(!e.contains(['\n', '\r']), "{e}");
            assert!(e.chars().all(shown_as_is), "{e:?}");
            assert_eq!(e.width(), e.chars().count(), "{e:?}");
        }
        // Every code point below U+3000, and the planes' edges.
        for c in (0..0x3000u32)
            .chain(0xfe00..0x10000)
            .chain(0x1f300..0x1f400)
            .filter_map(char::from_u32)
        {
            let s = c.to_string();
            let e = escape(&s);
            assert_eq!(e.width(), e.chars().count(), "U+{:04X} as {e:?}", c as u32);
            assert!(e.chars().all(|c| !c.is_control()), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn bytes_escape_like_text_and_invalid_bytes_as_hex() {
        for name in HOSTILE {
            assert_eq!(escape_bytes(name.as_bytes()), escape(name), "{name:?}");
        }
        assert_eq!(escape_bytes(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape_bytes(b"a\xc3"), "a\\xc3");
        assert_eq!(escape_bytes("\u{e9}\x1b".as_bytes()), "\u{e9}\\x1b");
        assert!(matches!(escape_bytes(b"plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn every_escaped_name_gives_back_its_bytes() {
        for name in HOSTILE {
            let e = escape(name);
            assert_eq!(unescape(&e).as_deref(), Some(name.as_bytes()), "{e:?}");
        }
        let names: [&[u8]; 6] = [
            b"\xff\x00\x80",
            br"\x41 is not A",
            br"\u{41}",
            b"\xef\xbf\xbd\xfe",
            b"\xe4\xb8",
            b"",
        ];
        for name in names {
            let e = escape_bytes(name);
            assert!(e.chars().all(shown_as_is), "{e:?}");
            assert_eq!(unescape(&e).as_deref(), Some(name), "{e:?}");
        }
        // Exhaustively over byte pairs that mix ASCII, controls, UTF-8
        // lead and continuation bytes, and backslashes.
        for a in 0..=255u8 {
            for b in [0u8, b'\\', b'x', b'u', b'{', 0x80, 0xc3, 0xbc, 0xe2, 0xff] {
                let name = [a, b];
                let e = escape_bytes(&name);
                assert_eq!(unescape(&e).as_deref(), Some(&name[..]), "{e:?}");
            }
        }
    }

    #[test]
    fn malformed_escapes_are_not_unescaped() {
        for bad in [
            "\\",
            "\\q",
            "\\xZZ",
            "\\x4",
            "\\u{zz}",
            "\\u{41",
            "\\u41",
            "\\u{110000}",
            "\\x+1",
            "\\u{+41}",
        ] {
            assert_eq!(unescape(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_is_ascii_and_gives_back_the_name() {
        for name in HOSTILE.iter().chain(&["é", "\u{1f600}", "plain"]) {
            let json = serde_json::to_string(&serde_json::json!({ "name": name })).unwrap();
            let safe = ascii_json(&json);
            assert!(safe.bytes().all(|b| (0x20..0x7f).contains(&b)), "{safe}");
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back["name"], **name, "{safe}");
        }
        assert_eq!(ascii_json("\"\u{9b}\""), "\"\\u009b\"");
        assert_eq!(ascii_json("\"\u{1f600}\""), "\"\\ud83d\\ude00\"");
        assert_eq!(ascii_json("\"\x7f\""), "\"\\u007f\"");
        // Pretty JSON keeps its own newlines.
        assert!(matches!(ascii_json("{\n  \"a\": 1\n}"), Cow::Borrowed(_)));
    }
}
