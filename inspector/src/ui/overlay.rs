//! Overlays drawn over a view: the help screen (`?`) and the sort-column
//! picker (`<`, `>` or F6, as in `htop`).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

use super::HEADER;
use crate::app::State;
use crate::columns::{COLUMNS, Column};
use crate::format::FLAGS;

/// Every key, as the help overlay lists it.
pub const KEYS: &[(&str, &str)] = &[
    (
        "↑ ↓  j k",
        "select a cache (in the detail view: previous / next cache)",
    ),
    ("PgUp PgDn g G", "page up / down, first / last cache"),
    ("Enter", "detail view of the selected cache"),
    ("Esc", "back to the table; clear the filter"),
    ("/", "filter caches by name (Enter accept, Esc clear)"),
    ("< > F6", "pick the sort column"),
    ("r", "reverse the sort order"),
    ("Space", "pause (updates wait and are applied on resume)"),
    ("h", "human-readable sizes"),
    ("x", "flags in hex, as /proc/spl/kmem/slab prints them"),
    ("?", "this help (any key closes it)"),
    ("q  Ctrl-C", "quit"),
];

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// The help overlay.
pub fn help(area: Rect, buf: &mut Buffer) {
    let mut lines = vec![Line::from(Span::styled("Keys", HEADER))];
    for (k, what) in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<15}"), HEADER),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Sort keys (press again to reverse)",
        HEADER,
    )));
    let sort_keys: Vec<String> = COLUMNS
        .iter()
        .filter_map(|d| d.key.map(|k| format!("{k} {}", d.id)))
        .collect();
    for chunk in sort_keys.chunks(5) {
        lines.push(Line::from(format!("  {}", chunk.join("  "))));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled("Flags", HEADER)));
    let flags: Vec<String> = FLAGS
        .iter()
        .map(|f| format!("{} {}", f.letter, f.name))
        .collect();
    for chunk in flags.chunks(4) {
        lines.push(Line::from(format!("  {}", chunk.join("  "))));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(
        "Red rows: caches that are DEADLOCKED or hold emergency objects.",
    ));
    lines.push(Line::from(
        "Grey rows: destroyed caches, caches of exited processes.",
    ));
    let area = centered(area, 84, lines.len() as u16 + 2);
    Clear.render(area, buf);
    Paragraph::new(lines)
        .block(Block::new().borders(Borders::ALL).title(" slabscope help "))
        .render(area, buf);
}

/// The sort-column picker with its cursor on `cursor`.
pub fn picker(state: &State, cursor: Column, area: Rect, buf: &mut Buffer) {
    let lines: Vec<Line> = COLUMNS
        .iter()
        .map(|d| {
            let mark = if d.column == state.sort {
                if state.descending { "▼" } else { "▲" }
            } else {
                " "
            };
            let key = d.key.map(|k| k.to_string()).unwrap_or_default();
            let text = format!(" {mark} {:<12} {key:>1}  {}", d.id, d.about);
            let style = if d.column == cursor {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Line::styled(text, style)
        })
        .collect();
    let area = centered(area, 76, lines.len() as u16 + 2);
    Clear.render(area, buf);
    Paragraph::new(lines)
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(" sort by (↑↓ move, Enter pick, Esc cancel) "),
        )
        .render(area, buf);
}
