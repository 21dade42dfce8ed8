//! The summary block at the top of the main view, in `slabtop`'s spirit:
//! objects, slabs and caches (active / total), memory held against memory in
//! use, what sits in magazines, emergency objects and deadlocks, and the
//! health of the event stream.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::{ALARM, HEADER};
use crate::app::State;
use crate::format::{bytes, percent};

/// Lines the summary takes.
pub const HEIGHT: u16 = 4;

fn item(label: &str, value: String, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!(" {label:<20}: "), HEADER),
        Span::styled(value, style),
    ])
}

/// Renders the summary of `state` into `area` ([`HEIGHT`] lines).
pub fn render(state: &State, area: Rect, buf: &mut Buffer) {
    let t = state.totals();
    let human = state.human;
    let plain = Style::new();

    let left_lines = vec![
        item(
            "Objects active/total",
            format!(
                "{} / {} ({})",
                t.obj_alloc,
                t.obj_total,
                percent(t.obj_alloc, t.obj_total)
            ),
            plain,
        ),
        item(
            "Slabs active/total",
            format!(
                "{} / {} ({})",
                t.slab_alloc,
                t.slab_total,
                percent(t.slab_alloc, t.slab_total)
            ),
            plain,
        ),
        item(
            "Caches active/total",
            format!(
                "{} / {} ({})",
                t.caches_active,
                t.caches,
                percent(t.caches_active, t.caches)
            ),
            plain,
        ),
        item(
            "Memory held/in use",
            format!(
                "{} / {} ({})",
                bytes(t.bytes_held, human),
                bytes(t.bytes_used, human),
                percent(t.bytes_used, t.bytes_held)
            ),
            plain,
        ),
    ];
    // The left column is as wide as its widest line, the right one gets the rest.
    let left_w = left_lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 2;
    let [left, right] =
        Layout::horizontal([Constraint::Length(left_w), Constraint::Fill(1)]).areas(area);
    Paragraph::new(left_lines).render(left, buf);

    let alarm_if = |bad: bool| if bad { ALARM } else { plain };
    let rate = match state.events_per_sec {
        Some(r) => format!("{r:.1}"),
        None => "-".into(),
    };
    let mut events_line = vec![
        Span::styled(format!(" {:<12}: ", "Events/s"), HEADER),
        Span::raw(format!("{rate}  ")),
        Span::styled("lost: ", HEADER),
        Span::styled(
            state.lost_events.to_string(),
            alarm_if(state.lost_events > 0),
        ),
    ];
    // Only when there are some: a target that passes bad snapshot pointers.
    if state.unreadable_snapshots > 0 {
        events_line.push(Span::styled("  bad snapshots: ", HEADER));
        events_line.push(Span::styled(state.unreadable_snapshots.to_string(), ALARM));
    }
    let right_lines = vec![
        short("In magazines", format!("{} objects", t.mag_objs), plain),
        short(
            "Emergency",
            format!("{} live objects", t.obj_emergency),
            alarm_if(t.obj_emergency > 0),
        ),
        short(
            "Deadlocks",
            format!("{} so far, {} DEADLOCKED", t.deadlocks, t.deadlocked_caches),
            alarm_if(t.deadlocked_caches > 0),
        ),
        Line::from(events_line),
    ];
    Paragraph::new(right_lines).render(right, buf);
}

fn short(label: &str, value: String, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!(" {label:<12}: "), HEADER),
        Span::styled(value, style),
    ])
}
