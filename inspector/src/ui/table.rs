//! The cache table: `/proc/spl/kmem/slab`'s columns plus the magazine ones,
//! sorted and filtered as [`State`] says, the selected row highlighted and the
//! rows of caches in trouble (DEADLOCKED, or holding emergency objects) in
//! red, destroyed caches and caches of exited processes greyed out.
//!
//! Columns that do not fit are dropped, least useful first ([`DROP_ORDER`]),
//! rather than squeezed into unreadable stubs.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, HighlightSpacing, Row, StatefulWidget, Table, TableState};

use super::{ALARM, GONE, HEADER};
use crate::app::{CacheEntry, State};
use crate::columns::{COLUMNS, Column};
use crate::format;
use slabscope_probes::flags::KMC_DEADLOCKED;
use slabscope_probes::stats::CacheStats;

/// Columns dropped, first to last, when the terminal is too narrow.
pub const DROP_ORDER: [Column; 12] = [
    Column::ObjPerSlab,
    Column::Util,
    Column::SlabMax,
    Column::ObjMax,
    Column::EmergMax,
    Column::MagSize,
    Column::SlabSize,
    Column::SlabAlloc,
    Column::Alloc,
    Column::Flags,
    Column::ObjTotal,
    Column::MagObjs,
];

/// Narrowest the name column gets.
pub const MIN_NAME: u16 = 14;
/// Columns are dropped until names this long (or the longest name, if
/// shorter) fit.
pub const WANT_NAME: u16 = 24;
const SPACING: u16 = 1;
const HIGHLIGHT: &str = "▶";

/// The columns shown in `width` cells and the width of the name column:
/// every column when names fit, else columns dropped in [`DROP_ORDER`] until
/// names of up to [`WANT_NAME`] cells fit.
pub fn layout(state: &State, width: u16) -> (Vec<Column>, u16) {
    let multi = multi_pid(state);
    let longest = state
        .caches
        .values()
        .map(|c| row_name(c, multi).chars().count() as u16)
        .max()
        .unwrap_or(0)
        .max(MIN_NAME);
    let mut cols: Vec<Column> = Column::all().collect();
    let mut drop = DROP_ORDER.iter();
    loop {
        let fixed: u16 = cols
            .iter()
            .filter(|c| **c != Column::Name)
            .map(|c| c.def().width + SPACING)
            .sum::<u16>()
            + HIGHLIGHT.len() as u16;
        let room = width.saturating_sub(fixed);
        if room >= longest.min(WANT_NAME) {
            return (cols, room.min(longest));
        }
        match drop.next() {
            Some(d) => cols.retain(|c| c != d),
            None => return (cols, room),
        }
    }
}

fn multi_pid(state: &State) -> bool {
    let mut pids = state.caches.keys().map(|k| k.pid);
    let first = pids.next();
    pids.any(|p| Some(p) != first)
}

/// The name shown for a cache: prefixed by its pid when several processes
/// are traced.
fn row_name(c: &CacheEntry, multi_pid: bool) -> String {
    if multi_pid {
        format!("{}:{}", c.key.pid, c.stats.name)
    } else {
        c.stats.name.clone()
    }
}

/// The style a cache's row gets, selection aside.
/// The flag letters of a cache whose grows keep failing: its `KMC_*`
/// letters, then `F` and the failed grows so far (`slab_fail`).
pub fn grows_failing_letters(s: &CacheStats) -> String {
    let letters = format::flag_letters(s.flags);
    let letters = if letters == "-" { "" } else { &letters };
    format!("{letters}F{}", s.slab_fail)
}

/// The style of `c`'s row: dimmed when the cache or its process is gone,
/// alarmed when it is DEADLOCKED, holds emergency objects or its grows
/// keep failing.
pub fn row_style(state: &State, c: &CacheEntry) -> Style {
    if c.destroyed || state.exited(c.key.pid) {
        GONE
    } else if c.stats.flags & KMC_DEADLOCKED != 0 || c.stats.obj_emergency > 0 || c.grows_failing {
        ALARM
    } else {
        Style::new()
    }
}

fn aligned(text: String, numeric: bool) -> Line<'static> {
    let line = Line::from(text);
    if numeric {
        line.alignment(Alignment::Right)
    } else {
        line
    }
}

/// The header group a column belongs to (`cache`, `slab`, ...).
fn group_of(c: Column) -> &'static str {
    COLUMNS[..=c as usize]
        .iter()
        .rev()
        .find(|d| !d.group.is_empty())
        .map_or("", |d| d.group)
}

/// `group` centred in a run of dashes `width` wide, as `/proc/spl/kmem/slab`
/// heads its column groups; shortened when it does not fit.
pub fn group_label(group: &str, width: u16) -> String {
    let w = width as usize;
    let short = match group {
        "emergency" => "emerg",
        "magazine" => "mag",
        "object" => "obj",
        g => g,
    };
    if group.is_empty() {
        return "-".repeat(w);
    }
    let label = [group, short]
        .into_iter()
        .find(|l| l.len() + 2 <= w)
        .map_or(String::new(), |l| format!(" {l} "));
    format!("{label:-^w$}")
}

/// Renders the table into `area`: a line of column groups, then the table.
pub fn render(state: &State, area: Rect, buf: &mut Buffer) {
    let (cols, name_w) = layout(state, area.width);
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| match c {
            Column::Name => Constraint::Length(name_w),
            _ => Constraint::Length(c.def().width),
        })
        .collect();
    let [groups_area, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);

    // The same column layout the table computes, for the group line.
    let [_, columns_area] = Layout::horizontal([
        Constraint::Length(HIGHLIGHT.chars().count() as u16),
        Constraint::Fill(1),
    ])
    .areas(groups_area);
    let rects = Layout::horizontal(widths.clone())
        .flex(Flex::Start)
        .spacing(SPACING)
        .split(columns_area);
    let mut i = 0;
    while i < cols.len() {
        let g = group_of(cols[i]);
        let mut j = i;
        while j + 1 < cols.len() && group_of(cols[j + 1]) == g {
            j += 1;
        }
        let x = rects[i].x;
        let w = rects[j].right() - x;
        buf.set_string(
            x,
            groups_area.y,
            group_label(g, w),
            HEADER.add_modifier(Modifier::DIM),
        );
        i = j + 1;
    }

    let header = Row::new(cols.iter().map(|c| {
        let d = c.def();
        let mut style = HEADER;
        if *c == state.sort {
            style = style.add_modifier(Modifier::REVERSED);
        }
        Cell::from(aligned(d.header.to_string(), d.numeric).style(style))
    }));

    let multi = multi_pid(state);
    let rows = state.rows();
    let body: Vec<Row> = rows
        .iter()
        .map(|c| {
            Row::new(cols.iter().map(|col| {
                let text = match col {
                    Column::Name => row_name(c, multi),
                    Column::Flags if c.grows_failing && !state.hex_flags => {
                        grows_failing_letters(&c.stats)
                    }
                    _ => col.cell(&c.stats, state.human, state.hex_flags),
                };
                Cell::from(aligned(text, col.def().numeric))
            }))
            .style(row_style(state, c))
        })
        .collect();

    let table = Table::new(body, widths)
        .header(header)
        .flex(Flex::Start)
        .column_spacing(SPACING)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always);
    let mut ts = TableState::default().with_selected(state.selected_index(&rows));
    StatefulWidget::render(table, table_area, buf, &mut ts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    #[test]
    fn every_column_fits_at_154() {
        let st = testdata::state();
        let (cols, name_w) = layout(&st, 154);
        assert_eq!(cols.len(), COLUMNS.len());
        assert_eq!(name_w, "zfs_btree_leaf_cache".len() as u16);
    }

    #[test]
    fn narrow_terminals_drop_columns_in_order() {
        let st = testdata::state();
        let (cols, name_w) = layout(&st, 80);
        assert_eq!(
            name_w,
            "zfs_btree_leaf_cache".len() as u16,
            "names are not cut"
        );
        let dropped: Vec<Column> = Column::all().filter(|c| !cols.contains(c)).collect();
        assert!(!dropped.is_empty());
        assert_eq!(
            dropped.len(),
            DROP_ORDER
                .iter()
                .take_while(|c| dropped.contains(c))
                .count()
        );
        for keep in [
            Column::Name,
            Column::ObjAlloc,
            Column::EmergAlloc,
            Column::EmergDlock,
        ] {
            assert!(cols.contains(&keep), "{keep:?} dropped at 80 columns");
        }
    }

    #[test]
    fn several_processes_prefix_names_with_the_pid() {
        let mut st = testdata::state();
        let mut other = testdata::cache(77, 0x9000, "zio_cache", 3);
        other.snapshot.flags |= slabscope_probes::flags::KMC_NODEBUG;
        st.apply(crate::sample::Update::Sample(testdata::sample(
            9000,
            0,
            vec![other],
        )));
        st.sort_by(Column::Name);
        let t = crate::ui::snapshot::text(&st, 140, 30);
        assert!(t.contains("77:zio_cache"), "{t}");
        assert!(t.contains("4242:zio_cache"), "{t}");
        assert!(t.contains(" KN "), "{t}");
    }

    #[test]
    fn group_labels_fit_their_columns() {
        // As /proc/spl/kmem/slab heads its slab columns.
        assert_eq!(group_label("slab", 17), "----- slab ------");
        assert_eq!(group_label("emergency", 11), " emergency ");
        assert_eq!(group_label("emergency", 10), "- emerg --");
        assert_eq!(group_label("magazine", 6), " mag -");
        assert_eq!(group_label("object", 3), "---");
        assert_eq!(group_label("", 4), "----");
    }

    #[test]
    fn troubled_caches_stand_out() {
        let mut st = testdata::state();
        st.sort_by(Column::Name);
        let rows = st.rows();
        let style =
            |name: &str| row_style(&st, rows.iter().find(|c| c.stats.name == name).unwrap());
        assert_eq!(style("arc_buf_hdr_t_full"), ALARM);
        assert_eq!(style("zio_cache"), Style::new());
        assert_eq!(style("scratch"), GONE);
        // The rendered buffer carries it too.
        let term = crate::ui::snapshot::terminal(&st, 140, 30);
        let buf = term.backend().buffer();
        let y = (0..30)
            .find(|&y| {
                (0..140)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    .contains("arc_buf_hdr_t_full")
            })
            .expect("the deadlocked cache is on screen");
        let x = (0..140).find(|&x| buf[(x, y)].symbol() == "a").unwrap();
        assert_eq!(buf[(x + 4, y)].fg, ratatui::style::Color::Red);
    }
}
