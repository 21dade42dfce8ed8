//! Key handling: one pure transition of [`State`] per key press.
//!
//! Modes nest the way `htop`'s do: the help overlay takes every key first
//! (any key closes it), then the column picker, then the filter prompt, then
//! the view's own keys. Ctrl-C quits from anywhere.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::{State, View};
use crate::columns::Column;

/// What the run loop should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep running and redraw.
    Continue,
    /// Restore the terminal and exit.
    Quit,
}

/// Rows PageUp/PageDown move.
pub const PAGE: isize = 10;

impl State {
    /// Applies one key press.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.show_help {
            self.show_help = false;
            return Action::Continue;
        }
        if let Some(cursor) = self.picker {
            self.picker_key(cursor, key.code);
            return Action::Continue;
        }
        if self.filter_editing {
            self.filter_key(key.code, ctrl);
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('h') => self.human = !self.human,
            KeyCode::Char('x') => self.hex_flags = !self.hex_flags,
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            _ => match self.view {
                View::Main => self.main_key(key.code),
                View::Detail => self.detail_key(key.code),
            },
        }
        Action::Continue
    }

    fn main_key(&mut self, code: KeyCode) {
        match code {
            KeyCode::PageUp => self.move_selection(-PAGE),
            KeyCode::PageDown => self.move_selection(PAGE),
            KeyCode::Home | KeyCode::Char('g') => self.select_end(false),
            KeyCode::End | KeyCode::Char('G') => self.select_end(true),
            KeyCode::Enter if !self.rows().is_empty() => {
                if self.selected.is_none() {
                    self.select_end(false);
                }
                self.view = View::Detail;
            }
            KeyCode::Char('/') => self.filter_editing = true,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('r' | 'I') => self.descending = !self.descending,
            KeyCode::Char('<' | '>') | KeyCode::F(6) => self.picker = Some(self.sort),
            KeyCode::Char(c) => {
                if let Some(col) = Column::by_key(c) {
                    if col == self.sort {
                        self.descending = !self.descending;
                    } else {
                        self.sort_by(col);
                    }
                }
            }
            _ => {}
        }
    }

    fn detail_key(&mut self, code: KeyCode) {
        if matches!(
            code,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Enter | KeyCode::Left
        ) {
            self.view = View::Main;
        }
    }

    fn picker_key(&mut self, cursor: Column, code: KeyCode) {
        match code {
            KeyCode::Up | KeyCode::Char('k') => self.picker = Some(cursor.offset(-1)),
            KeyCode::Down | KeyCode::Char('j') => self.picker = Some(cursor.offset(1)),
            KeyCode::Enter => {
                if cursor == self.sort {
                    self.descending = !self.descending;
                } else {
                    self.sort_by(cursor);
                }
                self.picker = None;
            }
            KeyCode::Esc | KeyCode::Char('q' | '<' | '>') | KeyCode::F(6) => self.picker = None,
            _ => {}
        }
    }

    fn filter_key(&mut self, code: KeyCode, ctrl: bool) {
        match code {
            KeyCode::Char('u') if ctrl => self.filter.clear(),
            KeyCode::Char(c) if !ctrl => self.filter.push(c),
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Enter => self.filter_editing = false,
            KeyCode::Esc => {
                self.filter.clear();
                self.filter_editing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn press(st: &mut State, code: KeyCode) -> Action {
        st.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(st: &mut State, s: &str) {
        for c in s.chars() {
            press(st, KeyCode::Char(c));
        }
    }

    fn selected_name(st: &State) -> String {
        st.selected_entry()
            .expect("a selected cache")
            .stats
            .name
            .clone()
    }

    #[test]
    fn quit_keys() {
        let mut st = testdata::state();
        assert_eq!(press(&mut st, KeyCode::Char('q')), Action::Quit);
        st.filter_editing = true;
        assert_eq!(
            press(&mut st, KeyCode::Char('q')),
            Action::Continue,
            "q is typed into the filter"
        );
        assert_eq!(st.filter, "q");
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            st.handle_key(ctrl_c),
            Action::Quit,
            "Ctrl-C quits from the filter prompt"
        );
        st.show_help = true;
        assert_eq!(
            st.handle_key(ctrl_c),
            Action::Quit,
            "Ctrl-C quits from help"
        );
    }

    #[test]
    fn releases_are_ignored() {
        let mut st = testdata::state();
        let mut k = KeyEvent::new(KeyCode::Char('h'), KeyModifiers::NONE);
        k.kind = KeyEventKind::Release;
        st.handle_key(k);
        assert!(!st.human);
    }

    #[test]
    fn arrows_and_vi_keys_move_the_selection() {
        let mut st = testdata::state();
        st.sort_by(Column::Name);
        assert_eq!(selected_name(&st), "arc_buf_hdr_t_full");
        press(&mut st, KeyCode::Char('j'));
        assert_eq!(selected_name(&st), "dnode_t");
        press(&mut st, KeyCode::Down);
        press(&mut st, KeyCode::Up);
        press(&mut st, KeyCode::Char('k'));
        assert_eq!(selected_name(&st), "arc_buf_hdr_t_full");
        press(&mut st, KeyCode::End);
        assert_eq!(selected_name(&st), "zio_cache");
        press(&mut st, KeyCode::Char('g'));
        assert_eq!(selected_name(&st), "arc_buf_hdr_t_full");
        press(&mut st, KeyCode::PageDown);
        assert_eq!(selected_name(&st), "zio_cache");
    }

    #[test]
    fn sort_keys_pick_then_reverse() {
        let mut st = testdata::state();
        press(&mut st, KeyCode::Char('n'));
        assert_eq!((st.sort, st.descending), (Column::Name, false));
        press(&mut st, KeyCode::Char('n'));
        assert_eq!((st.sort, st.descending), (Column::Name, true));
        press(&mut st, KeyCode::Char('a'));
        assert_eq!((st.sort, st.descending), (Column::ObjAlloc, true));
        assert_eq!(st.rows()[0].stats.name, "arc_buf_hdr_t_full");
        press(&mut st, KeyCode::Char('r'));
        assert!(!st.descending);
        press(&mut st, KeyCode::Char('e'));
        assert_eq!(st.sort, Column::EmergAlloc);
    }

    #[test]
    fn column_picker() {
        let mut st = testdata::state();
        st.sort_by(Column::Name);
        press(&mut st, KeyCode::Char('>'));
        assert_eq!(st.picker, Some(Column::Name));
        press(&mut st, KeyCode::Down);
        press(&mut st, KeyCode::Down);
        assert_eq!(st.picker, Some(Column::Size));
        press(&mut st, KeyCode::Char('a'));
        assert_eq!(st.sort, Column::Name, "sort keys are inert in the picker");
        press(&mut st, KeyCode::Enter);
        assert_eq!(
            (st.sort, st.descending, st.picker),
            (Column::Size, true, None)
        );
        press(&mut st, KeyCode::F(6));
        press(&mut st, KeyCode::Up);
        press(&mut st, KeyCode::Esc);
        assert_eq!((st.sort, st.picker), (Column::Size, None), "Esc cancels");
    }

    #[test]
    fn filter_prompt() {
        let mut st = testdata::state();
        press(&mut st, KeyCode::Char('/'));
        typed(&mut st, "zioo");
        press(&mut st, KeyCode::Backspace);
        assert!(st.filter_editing);
        assert_eq!(st.filter, "zio");
        press(&mut st, KeyCode::Enter);
        assert!(!st.filter_editing);
        let names: Vec<String> = st.rows().iter().map(|c| c.stats.name.clone()).collect();
        assert_eq!(names, ["zio_cache"]);
        press(&mut st, KeyCode::Char('h'));
        assert!(st.human, "keys act again once the filter is accepted");
        press(&mut st, KeyCode::Esc);
        assert_eq!(st.filter, "", "Esc in the main view clears the filter");
        press(&mut st, KeyCode::Char('/'));
        typed(&mut st, "dn");
        press(&mut st, KeyCode::Esc);
        assert_eq!((st.filter.as_str(), st.filter_editing), ("", false));
    }

    #[test]
    fn detail_view_enter_and_back() {
        let mut st = testdata::state();
        st.sort_by(Column::Name);
        press(&mut st, KeyCode::Char('j'));
        press(&mut st, KeyCode::Enter);
        assert_eq!(st.view, View::Detail);
        assert_eq!(selected_name(&st), "dnode_t");
        press(&mut st, KeyCode::Char('j'));
        assert_eq!(
            selected_name(&st),
            "scratch",
            "j walks the table from the detail view"
        );
        press(&mut st, KeyCode::Char('/'));
        assert!(!st.filter_editing, "no filter prompt in the detail view");
        press(&mut st, KeyCode::Esc);
        assert_eq!(st.view, View::Main);
        let mut empty = State::new("t");
        press(&mut empty, KeyCode::Enter);
        assert_eq!(empty.view, View::Main, "no detail view without caches");
    }

    #[test]
    fn toggles_and_help() {
        let mut st = testdata::state();
        press(&mut st, KeyCode::Char('x'));
        press(&mut st, KeyCode::Char('h'));
        press(&mut st, KeyCode::Char(' '));
        assert!(st.hex_flags && st.human && st.paused);
        press(&mut st, KeyCode::Char('?'));
        assert!(st.show_help);
        press(&mut st, KeyCode::Char('q'));
        assert!(!st.show_help, "q closes help");
        press(&mut st, KeyCode::Char(' '));
        assert!(!st.paused);
    }
}
