//! The main view, top to bottom: title bar, summary ([`super::summary`]),
//! cache table ([`super::table`]), flag legend, event log
//! ([`super::events`]), key hints.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::{events, footer, summary, table, title_bar};
use crate::app::State;
use crate::format::{FLAG_LEGEND, flag_hex};

/// Key hints of the main view.
pub const HINTS: &str = "q quit  ? help  ↑↓ select  Enter detail  / filter  <> sort column  r reverse  Space pause  h sizes  x hex";

/// Renders the main view of `state` into `area`.
pub fn render(state: &State, area: Rect, buf: &mut Buffer) {
    let events_h = (area.height / 3).max(6);
    let [title, summary_area, table_area, legend, events_area, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(summary::HEIGHT),
        Constraint::Min(5),
        Constraint::Length(1),
        Constraint::Length(events_h),
        Constraint::Length(1),
    ])
    .areas(area);

    let dir = if state.descending { "▼" } else { "▲" };
    let mut left = format!("{}  sort {} {dir}", state.status(), state.sort);
    if !state.filter.is_empty() && !state.filter_editing {
        left.push_str(&format!("  filter \"{}\"", state.filter));
    }
    title_bar(state, left, title, buf);
    summary::render(state, summary_area, buf);
    if state.caches.is_empty() {
        let msg = if state.failed.is_some() || state.collector_gone {
            "no cache was reported before the collector stopped"
        } else {
            "no cache reported yet: caches appear when they fire a probe. Every cache fires \
             cache_stats each SLABSCOPE_STATS_INTERVAL_MS (default 1000 ms); a program that \
             has never started a thread fires it only while it allocates."
        };
        // One column in, as the table's rows are.
        let area = Rect {
            x: table_area.x + 1,
            width: table_area.width.saturating_sub(1),
            ..table_area
        };
        Paragraph::new(msg)
            .wrap(Wrap { trim: true })
            .render(area, buf);
    } else {
        table::render(state, table_area, buf);
    }
    let legend_text = if state.hex_flags {
        format!(
            " flags in hex as /proc/spl/kmem/slab prints them (e.g. kvmem = {})",
            flag_hex(slabscope_probes::flags::KMC_KVMEM)
        )
    } else {
        format!(" flags: {FLAG_LEGEND}")
    };
    Line::from(legend_text)
        .style(Style::new().add_modifier(Modifier::DIM))
        .render(legend, buf);
    events::render_log(state, events_area, buf);
    footer(state, HINTS, foot, buf);
}

#[cfg(test)]
mod tests {
    use crate::app::State;
    use crate::sample::Update;
    use crate::testdata;
    use crate::ui::snapshot::text;

    #[test]
    fn main_view_wide() {
        let st = testdata::state();
        insta::assert_snapshot!(text(&st, 140, 32));
    }

    #[test]
    fn main_view_80x24_drops_columns() {
        let st = testdata::state();
        let t = text(&st, 80, 24);
        insta::assert_snapshot!(t);
        assert!(t.contains("arc_buf_hdr_t_full"), "{t}");
    }

    #[test]
    fn main_view_human_hex_sorted_filtered() {
        let mut st = testdata::state();
        st.human = true;
        st.hex_flags = true;
        st.sort_by(crate::columns::Column::Name);
        st.filter = "z".into();
        insta::assert_snapshot!(text(&st, 140, 30));
    }

    #[test]
    fn main_view_filter_prompt_and_pause() {
        let mut st = testdata::state();
        st.filter_editing = true;
        st.filter = "dno".into();
        st.toggle_pause();
        st.apply(Update::Sample(testdata::sample(
            9000,
            999,
            testdata::caches(9),
        )));
        insta::assert_snapshot!(text(&st, 120, 26));
    }

    #[test]
    fn main_view_exited_target() {
        let mut st = testdata::state();
        st.apply(Update::TargetExited { pid: 4242 });
        st.disconnected();
        let t = text(&st, 120, 26);
        assert!(t.contains("pid 4242: exited (collector stopped)"), "{t}");
        assert!(t.contains("zio_cache"), "caches stay on screen: {t}");
        insta::assert_snapshot!(t);
    }

    #[test]
    fn main_view_waiting() {
        let st = State::new("/usr/bin/demo");
        insta::assert_snapshot!(text(&st, 100, 22));
    }
}
