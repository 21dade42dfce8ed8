//! The event log pane: one line per probe hit, newest at the bottom, `tail -f`
//! style: time since the first event, cache, probe, and the probe's own values
//! named after its arguments in [`slabscope_probes::PROBES`]. Deadlocks and
//! emergency allocations are shown in red, failed grows too.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget};

use super::{ALARM, HEADER};
use crate::app::State;
use crate::format;
use slabscope_probes::{Event, ProbeKind};

/// The style of an event's line.
pub fn event_style(ev: &Event) -> Style {
    match ProbeKind::from_u32(ev.kind) {
        Some(ProbeKind::Deadlock | ProbeKind::EmergencyAlloc) => ALARM,
        Some(ProbeKind::GrowDone) if (ev.values[0] as i64) < 0 => ALARM,
        _ => Style::new(),
    }
}

/// One event as a line; `with_cache` adds the cache name (and pid when several
/// processes are traced).
pub fn event_line(state: &State, ev: &Event, with_cache: bool, multi_pid: bool) -> Line<'static> {
    let mut spans = vec![
        Span::raw(format::seconds(state.event_offset_ns(ev))),
        Span::raw(" "),
    ];
    if multi_pid {
        spans.push(Span::raw(format!("{:>7} ", ev.pid)));
    }
    if with_cache {
        let name = format::fit(&State::event_cache_name(ev), 22);
        spans.push(Span::raw(format!("{name:<22} ")));
    }
    spans.push(Span::raw(format!("{:<16} ", format::kind_name(ev.kind))));
    spans.push(Span::raw(format::event_values(ev)));
    Line::from(spans).style(event_style(ev))
}

fn header(with_cache: bool, multi_pid: bool) -> Line<'static> {
    let mut s = format!("{:>10} ", "time (s)");
    if multi_pid {
        s.push_str(&format!("{:>7} ", "pid"));
    }
    if with_cache {
        s.push_str(&format!("{:<22} ", "cache"));
    }
    s.push_str(&format!("{:<16} values", "probe"));
    Line::from(Span::styled(s, HEADER))
}

/// Renders `events` (oldest first) in a block titled `title`, keeping the
/// newest that fit.
pub fn render<'a>(
    state: &State,
    title: String,
    events: impl DoubleEndedIterator<Item = &'a Event>,
    with_cache: bool,
    area: Rect,
    buf: &mut Buffer,
) {
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    block.render(area, buf);
    let multi_pid = {
        let mut pids = state.targets.keys();
        pids.next().is_some() && pids.next().is_some()
    };
    let room = (inner.height as usize).saturating_sub(1);
    let mut lines: Vec<Line> = events
        .rev()
        .take(room)
        .map(|e| event_line(state, e, with_cache, multi_pid))
        .collect();
    if lines.is_empty() {
        lines.push(Line::from(" no events yet"));
    }
    lines.push(header(with_cache, multi_pid));
    lines.reverse();
    Paragraph::new(lines).render(inner, buf);
}

/// The main view's pane: every event.
pub fn render_log(state: &State, area: Rect, buf: &mut Buffer) {
    let mut title = format!(
        " events: {} received, {} dropped from the log, {} lost",
        state.events_total.max(state.log.received()),
        state.log.dropped(),
        state.lost_events
    );
    // Hits ignored for a snapshot pointer that could not be read.
    if state.unreadable_snapshots > 0 {
        title.push_str(&format!(", {} bad snapshots", state.unreadable_snapshots));
    }
    title.push(' ');
    render(state, title, state.log.iter(), true, area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn alarm_events() {
        let ev = |k| testdata::event(1, 1, "a", k, 0);
        assert_eq!(event_style(&ev(ProbeKind::Deadlock)), ALARM);
        assert_eq!(event_style(&ev(ProbeKind::GrowDone)), Style::new());
        let mut failed = ev(ProbeKind::GrowDone);
        failed.values[0] = (-12i64) as u64;
        assert_eq!(event_style(&failed), ALARM);
    }

    #[test]
    fn line_has_time_cache_probe_and_named_values() {
        let st = testdata::state();
        let ev = st.log.iter().nth(3).unwrap();
        let text = event_line(&st, ev, true, false).to_string();
        assert_eq!(
            text,
            "     0.102 arc_buf_hdr_t_full     deadlock         obj_deadlock=1"
        );
    }
}
