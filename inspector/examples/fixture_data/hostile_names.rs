//! The cache names of `probe_fixture hostile`, shared with the tests that
//! check what the inspector prints for them.

/// Cache names meant to take over the terminal of whoever prints them: set
/// the window title, write the clipboard, clear the screen, forge a row, or
/// reverse the rest of a line. Ids are `0x5555_0000_7000 + 0x100 * index`.
pub const HOSTILE_NAMES: &[&str] = &[
    "\x1b]0;pwned\x07",
    "\x1b]52;c;cm0gLXJmIH4K\x07",
    "\x1b[2J",
    "h_row\nfake 0x00080 1 2 3",
    "h_csi\u{9b}31m",
    "h_bidi\u{202e}lave",
    "h_iso\u{2066}late\u{2069}",
    "h_del\x7f\r",
];
