//! Label values taken from traced processes: escaped twice, reversibly.
//!
//! A cache name or a `comm` is whatever the traced program chose: any bytes,
//! control characters and invalid UTF-8 included. Two layers make it safe in
//! the exposition and keep the real name recoverable:
//!
//! 1. the inspector's one escaping function, [`escape_bytes`]: what a
//!    terminal would show of the name is what Prometheus stores and Grafana
//!    shows (`\x1b`, `\n`, `\u{202e}`, `\xff` for a byte that is not UTF-8,
//!    `\\` for a backslash), and [`recover`] turns it back into the
//!    original bytes;
//! 2. [`exposition`]: the OpenMetrics text format's own escapes (`\\`, `\"`,
//!    `\n`), which the `prometheus-client` crate leaves to the caller for
//!    label values. A scraper undoes this layer when it parses.

use crate::escape::escape_bytes;

/// The original bytes of a label value as Prometheus stores it (layer 1),
/// or `None` when `text` is not one.
pub use crate::escape::unescape as recover;

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
    exposition(&escape_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::HOSTILE_NAMES;

    #[test]
    fn plain_names_pass_unchanged() {
        assert_eq!(label_value(b"zio_buf_512"), "zio_buf_512");
        assert_eq!(label_value("caché-ü".as_bytes()), "caché-ü");
    }

    #[test]
    fn hostile_names_are_escaped_visibly() {
        assert_eq!(label_value(b"a\x1b[31mb"), r"a\\x1b[31mb");
        assert_eq!(label_value(b"x\ny"), r"x\\ny");
        assert_eq!(label_value(b"\x7f"), r"\\x7f");
        assert_eq!(label_value("\u{85}".as_bytes()), r"\\u{85}");
        assert_eq!(label_value("ab\u{202e}cd".as_bytes()), r"ab\\u{202e}cd");
        assert_eq!(label_value(b"\xff\xfe"), r"\\xff\\xfe");
        for name in HOSTILE_NAMES {
            let v = label_value(name.as_bytes());
            assert!(
                v.chars().all(|c| !c.is_control() && c != '\u{202e}'),
                "{v:?}"
            );
        }
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
        for name in names
            .into_iter()
            .chain(HOSTILE_NAMES.iter().map(|n| n.as_bytes()))
        {
            let stored = escape_bytes(name);
            assert_eq!(recover(&stored).as_deref(), Some(name), "{stored:?}");
        }
    }
}
