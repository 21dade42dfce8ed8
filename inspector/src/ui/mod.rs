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

/// Smallest terminal the views are laid out for.
pub const MIN_WIDTH: u16 = 80;
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
    use crate::testdata;

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
