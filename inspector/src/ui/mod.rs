//! Rendering: pure functions of [`State`] into a ratatui [`Buffer`].
//!
//! [`Screen`] is the whole terminal: the main view ([`main_view`]: summary,
//! cache table, event log) or the detail view ([`detail`]), with the help or
//! column-picker overlay ([`overlay`]) on top. Nothing here reads a clock or
//! the terminal, so every view is snapshot-tested with `TestBackend`.

pub mod detail;
pub mod events;
pub mod histograms;
pub mod main_view;
pub mod overlay;
pub mod summary;
pub mod table;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::app::{State, View};

/// Smallest terminal width the views are laid out for (columns).
pub const MIN_WIDTH: u16 = 80;
/// Smallest terminal height the views are laid out for (rows).
pub const MIN_HEIGHT: u16 = 20;

/// Style of the title and footer bars.
pub const BAR: Style = Style::new().fg(Color::Black).bg(Color::Cyan);
/// Style of a cache that is DEADLOCKED or holds emergency objects.
pub const ALARM: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
/// Style of a cache that is destroyed or whose process exited.
pub const GONE: Style = Style::new().fg(Color::DarkGray);
/// Style of column headers and labels.
pub const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

/// The whole screen for one state.
#[derive(Debug, Clone, Copy)]
pub struct Screen<'a>(pub &'a State);

impl Widget for Screen<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        render(self.0, area, buf);
    }
}

/// Renders `state` into `area`.
pub fn render(state: &State, area: Rect, buf: &mut Buffer) {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(area, buf);
        return;
    }
    match state.view {
        View::Main => main_view::render(state, area, buf),
        View::Detail => detail::render(state, area, buf),
    }
    if let Some(cursor) = state.picker {
        overlay::picker(state, cursor, area, buf);
    }
    if state.show_help {
        overlay::help(area, buf);
    }
}

fn too_small(area: Rect, buf: &mut Buffer) {
    let text = format!(
        "Terminal too small: {}x{}, slabscope needs at least {MIN_WIDTH}x{MIN_HEIGHT}. \
         Enlarge the window, or press q to quit.",
        area.width, area.height
    );
    Paragraph::new(text)
        .wrap(Wrap { trim: true })
        .render(area, buf);
}

/// The top bar: `left` (what is traced and how it is doing), then the sample
/// time and the help hint at the right edge; `left` is cut to fit.
pub fn title_bar(state: &State, left: String, area: Rect, buf: &mut Buffer) {
    let at = match state.sample_at {
        Some(at) => format!("t+{:.1}s", at.as_secs_f64()),
        None => "no sample yet".into(),
    };
    let right = format!(" {at}  ? help ");
    let right_w = right.chars().count();
    let width = area.width as usize;
    let room = width.saturating_sub(right_w);
    let mut left: String = format!(" slabscope  {left}").chars().take(room).collect();
    let pad = room - left.chars().count();
    left.push_str(&" ".repeat(pad));
    left.push_str(&right);
    Line::from(left).style(BAR).render(area, buf);
}

/// The bottom bar: the filter prompt while typing, else key hints.
pub fn footer(state: &State, hints: &str, area: Rect, buf: &mut Buffer) {
    let text = if state.filter_editing {
        format!(" filter: {}█  (Enter accept, Esc clear)", state.filter)
    } else {
        format!(" {hints}")
    };
    Line::from(text).style(BAR).render(area, buf);
    // Fill the rest of the bar.
    for x in area.x..area.right() {
        buf[(x, area.y)].set_style(BAR);
    }
}

#[cfg(test)]
pub(crate) mod snapshot {
    //! Rendering helpers for the snapshot tests.
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::Screen;
    use crate::app::State;

    /// `state` rendered on a `w`x`h` test terminal.
    pub fn terminal(state: &State, w: u16, h: u16) -> Terminal<TestBackend> {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        term.draw(|f| f.render_widget(Screen(state), f.area()))
            .expect("drawing on a test backend cannot fail");
        term
    }

    /// The text of `state` rendered at `w`x`h`.
    pub fn text(state: &State, w: u16, h: u16) -> String {
        terminal(state, w, h).backend().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot;
    use crate::app::{CacheKey, State, View};
    use crate::sample::Update;
    use crate::testdata::{self, HOSTILE_NAMES, cache, event, sample};
    use slabscope_probes::ProbeKind;

    /// Whether `c` may be drawn: no control, no bidi or other format control.
    fn drawable(c: char) -> bool {
        !c.is_control()
            && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }

    /// A target whose cache names are escape sequences, controls and bidi
    /// overrides, with one event each.
    fn hostile_state() -> State {
        let mut st = State::new("pid 7");
        let id = |i: usize| 0x1000 * (i as u64 + 1);
        let caches = HOSTILE_NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| cache(7, id(i), n, 10))
            .collect();
        st.apply(Update::Sample(sample(1000, 0, caches)));
        for (i, n) in HOSTILE_NAMES.iter().enumerate() {
            let ev = event(7, id(i), n, ProbeKind::GrowStart, 1000 * i as u64);
            st.apply(Update::Event(ev));
        }
        st
    }

    #[test]
    fn unreadable_snapshots_are_shown_next_to_lost_events() {
        let mut st = testdata::state();
        let quiet = snapshot::text(&st, 80, 24);
        assert!(!quiet.contains("bad snapshots"), "{quiet}");
        let mut s = sample(9000, 300, testdata::caches(9));
        s.unreadable_snapshots = 3;
        st.apply(Update::Sample(s));
        let wide = snapshot::text(&st, 140, 32);
        assert!(wide.contains("lost: 0  bad snapshots: 3"), "{wide}");
        let narrow = snapshot::text(&st, 80, 24);
        assert!(narrow.contains("0 lost, 3 bad snapshots "), "{narrow}");
    }

    #[test]
    fn a_cache_whose_grows_keep_failing_is_flagged_with_its_count() {
        let mut st = State::new("pid 7");
        let mut c = cache(7, 1, "failing", 10);
        let ok = cache(7, 2, "fine", 10);
        st.apply(Update::Sample(sample(1000, 0, vec![c, ok])));
        let quiet = snapshot::text(&st, 140, 32);
        assert!(!quiet.contains("KF"), "{quiet}");
        // Two samples of failures with no slab created: flagged.
        for (i, fails) in [(2, 8), (3, 16)] {
            c.snapshot.slab_fail = fails;
            st.apply(Update::Sample(sample(1000 * i, 0, vec![c, ok])));
        }
        let t = snapshot::text(&st, 140, 32);
        let row = t.lines().find(|l| l.contains("failing")).expect("its row");
        assert!(row.contains(" KF16 "), "{row}");
        let fine = t.lines().find(|l| l.contains("fine")).expect("its row");
        assert!(!fine.contains('F'), "{fine}");
        assert!(t.contains("Fn failing, n failed"), "the legend: {t}");
        st.selected = Some(CacheKey::new(7, 1));
        st.view = View::Detail;
        let d = snapshot::text(&st, 120, 36);
        assert!(d.contains("16 failed (failing)"), "{d}");
        // A grow that succeeds clears it.
        c.snapshot.slab_create += 1;
        st.view = View::Main;
        st.apply(Update::Sample(sample(4000, 0, vec![c, ok])));
        let t = snapshot::text(&st, 140, 32);
        let row = t.lines().find(|l| l.contains("failing")).expect("its row");
        assert!(!row.contains("KF"), "{row}");
    }

    #[test]
    fn absurd_counters_render_without_panicking() {
        // A hostile target's snapshot: every number at its largest.
        let mut st = State::new("pid 7");
        let absurd = |id| {
            let mut c = cache(7, id, "absurd", u64::MAX);
            let s = &mut c.snapshot;
            let k = &mut s.counters;
            for f in [
                &mut k.slab_total,
                &mut k.slab_alloc,
                &mut k.slab_max,
                &mut k.obj_total,
                &mut k.obj_max,
                &mut k.obj_emergency,
                &mut k.obj_deadlock,
                &mut k.slab_fail,
                &mut k.obj_alloc,
                &mut k.obj_emergency_max,
                &mut k.slab_create,
                &mut k.slab_destroy,
            ] {
                *f = u64::MAX;
            }
            for f in [
                &mut s.flags,
                &mut s.obj_size,
                &mut s.obj_size_full,
                &mut s.slab_size,
                &mut s.slab_objs,
                &mut s.mag_objs,
            ] {
                *f = u64::MAX;
            }
            s.mag_size = u32::MAX;
            s.mag_refill = u32::MAX;
            s.ncpus = u32::MAX;
            s.depot_objs = u32::MAX;
            s.mag_fill = [u32::MAX; slabscope_probes::MAX_CPUS];
            c.counters.deadlocks = u64::MAX;
            c
        };
        for i in 0..3 {
            st.apply(Update::Sample(sample(
                1000 * (i + 1),
                u64::MAX,
                vec![absurd(1), absurd(2)],
            )));
        }
        st.apply(Update::Event(event(
            7,
            1,
            "absurd",
            ProbeKind::GrowDone,
            u64::MAX,
        )));
        let _ = snapshot::text(&st, 140, 40);
        st.selected = Some(CacheKey::new(7, 1));
        st.view = View::Detail;
        let _ = snapshot::text(&st, 120, 36);
        let s = sample(0, u64::MAX, vec![absurd(1), absurd(2)]);
        let _ = crate::output::once_text(&s);
        let _ = crate::output::json_line(&s);
    }

    #[test]
    fn hostile_names_are_drawn_escaped() {
        let mut st = hostile_state();
        let main = snapshot::text(&st, 140, 40);
        let bidi = HOSTILE_NAMES
            .iter()
            .position(|n| n.contains('\u{202e}'))
            .expect("a bidi name");
        st.selected = Some(CacheKey::new(7, 0x1000 * (bidi as u64 + 1)));
        st.view = View::Detail;
        let detail = snapshot::text(&st, 120, 36);
        st.view = View::Main;
        st.apply(Update::Failed("map \x1b[2J\u{202e} gone".into()));
        let failed = snapshot::text(&st, 140, 40);
        for t in [&main, &detail, &failed] {
            let bad: Vec<char> = t.chars().filter(|&c| c != '\n' && !drawable(c)).collect();
            assert!(bad.is_empty(), "{bad:?} drawn raw:\n{t}");
        }
        assert!(main.contains("\\x1b]0;pwned\\x07"), "{main}");
        assert!(detail.contains("\\u{202e}"), "{detail}");
        assert!(failed.contains("map \\x1b[2J\\u{202e} gone"), "{failed}");
        insta::assert_snapshot!("hostile_main", main);
        insta::assert_snapshot!("hostile_detail", detail);
    }

    #[test]
    fn too_small_says_so() {
        let st = testdata::state();
        let text = snapshot::text(&st, 60, 10);
        insta::assert_snapshot!(text);
        assert!(text.contains("Terminal too small: 60x10"), "{text}");
    }

    #[test]
    fn help_overlay() {
        let mut st = testdata::state();
        st.show_help = true;
        insta::assert_snapshot!(snapshot::text(&st, 100, 34));
    }

    #[test]
    fn column_picker_overlay() {
        let mut st = testdata::state();
        st.picker = Some(crate::columns::Column::ObjAlloc);
        insta::assert_snapshot!(snapshot::text(&st, 100, 30));
    }
}
