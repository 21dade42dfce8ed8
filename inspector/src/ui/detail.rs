//! The detail view of one cache: its geometry and counters, history charts of
//! objects allocated, slabs and emergency objects over the last samples,
//! per-CPU magazine fill, and the cache's own recent events.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline, Widget};

use super::{ALARM, GONE, HEADER, events, footer, histograms, title_bar};
use crate::app::{CacheEntry, HistPoint, State};
use crate::format::{bytes, flag_names};
use slabscope_probes::flags::KMC_DEADLOCKED;

/// Key hints of the detail view.
pub const HINTS: &str = "Esc back  ↑↓ previous/next cache  Space pause  h sizes  ? help  q quit";

/// Width of one CPU's magazine gauge.
const MAG_CELL: u16 = 26;
const MAG_BAR: usize = 10;

/// Renders the detail view of the selected cache into `area`.
pub fn render(state: &State, area: Rect, buf: &mut Buffer) {
    let Some(c) = state.selected_entry() else {
        title_bar(state, "no cache selected".into(), area, buf);
        return;
    };
    let mag_lines = magazine_lines(c, area.width.saturating_sub(2));
    let mag_h = mag_lines.len() as u16 + 2;
    // The eBPF program's timings, when the cache has any (histograms.rs).
    let hists = histograms::of_entry(state, c);
    let hist_h = if hists.is_empty() {
        0
    } else {
        histograms::HEIGHT
    };
    let [title, top, mags, hist_area, evs, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(15),
        Constraint::Length(mag_h.min(area.height / 4).max(3)),
        Constraint::Length(hist_h),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    histograms::render(&hists, hist_area, buf);

    let mut words = vec![if state.exited(c.key.pid) {
        "process exited".to_string()
    } else {
        "running".to_string()
    }];
    if c.destroyed {
        words.push("cache destroyed".into());
    }
    if state.paused {
        words.push(format!("PAUSED, {} updates waiting", state.pending()));
    }
    if let Some(e) = &state.failed {
        words.push(format!("collector failed: {e}"));
    } else if state.collector_gone {
        words.push("collector stopped".into());
    }
    let left = format!(
        "{}  pid {}  cache 0x{:x}  [{}]",
        c.stats.name,
        c.key.pid,
        c.key.cache_id,
        words.join(", ")
    );
    title_bar(state, left, title, buf);

    let [geo, charts] = Layout::horizontal([
        Constraint::Length(if area.width >= 120 { 60 } else { 52 }),
        Constraint::Min(20),
    ])
    .areas(top);
    geometry(state, c, geo, buf);
    history(c, charts, buf);

    let mag_block = Block::new().borders(Borders::ALL).title(format!(
        " magazines: {} objects in {} CPUs' magazines of {}, {} in the depot ",
        c.stats.mag_objs.saturating_sub(c.stats.depot_objs),
        c.stats.mag_fill.len(),
        c.stats.mag_size,
        c.stats.depot_objs
    ));
    let inner = mag_block.inner(mags);
    mag_block.render(mags, buf);
    Paragraph::new(mag_lines).render(inner, buf);

    let title = format!(" recent events of {} ", c.stats.name);
    events::render(state, title, state.events_of(c.key), false, evs, buf);
    footer(state, HINTS, foot, buf);
}

fn kv(label: &str, value: String, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<14}"), HEADER),
        Span::styled(value, style),
    ])
}

fn geometry(state: &State, c: &CacheEntry, area: Rect, buf: &mut Buffer) {
    let s = &c.stats;
    let n = &c.counters;
    let h = state.human;
    let plain = Style::new();
    let flag_style = if s.flags & KMC_DEADLOCKED != 0 {
        ALARM
    } else {
        plain
    };
    let emerg_style = if s.obj_emergency > 0 { ALARM } else { plain };
    let lines = vec![
        kv(
            "flags",
            format!("{} (0x{:05x})", flag_names(s.flags), s.flags),
            flag_style,
        ),
        kv(
            "object size",
            format!(
                "{} B, {} with header, align {}",
                s.obj_size, s.obj_size_full, s.obj_align
            ),
            plain,
        ),
        kv(
            "slab",
            format!(
                "{} B, {} objects per slab",
                bytes(s.slab_size, h),
                s.slab_objs
            ),
            plain,
        ),
        kv(
            "magazine",
            format!("{} objects, refill {}", s.mag_size, s.mag_refill),
            plain,
        ),
        kv(
            "slabs",
            format!(
                "{} held, {} in use, max {}",
                s.slab_total, s.slab_alloc, s.slab_max
            ),
            plain,
        ),
        kv(
            "slab lifetime",
            format!(
                "{} created, {} destroyed, {} failed{}",
                s.slab_create,
                s.slab_destroy,
                s.slab_fail,
                if c.grows_failing { " (failing)" } else { "" }
            ),
            if c.grows_failing { ALARM } else { plain },
        ),
        kv(
            "objects",
            format!(
                "{} alloc / {} total, max {}",
                s.obj_alloc, s.obj_total, s.obj_max
            ),
            plain,
        ),
        kv(
            "in magazines",
            format!("{} ({} in the depot)", s.mag_objs, s.depot_objs),
            plain,
        ),
        kv(
            "emergency",
            format!(
                "{} live, max {}, {} deadlocks",
                s.obj_emergency, s.obj_emergency_max, s.obj_deadlock
            ),
            emerg_style,
        ),
        kv(
            "grows*",
            format!(
                "{} started, {} done, {} failed",
                n.grows, n.grows_done, n.grow_failures
            ),
            plain,
        ),
        kv(
            "emergency*",
            format!(
                "{} allocs, {} frees, {} deadlocks",
                n.emergency_allocs, n.emergency_frees, n.deadlocks
            ),
            plain,
        ),
        kv(
            "reaps*",
            format!("{}, releasing {} slabs", n.reaps, n.reap_slabs_released),
            plain,
        ),
        kv(
            "reclaims*",
            format!("{}, releasing {} slabs", n.slab_reclaims, n.slabs_released),
            plain,
        ),
    ];
    let style = if c.destroyed || state.exited(c.key.pid) {
        GONE
    } else {
        plain
    };
    Paragraph::new(lines)
        .style(style)
        .block(
            Block::new()
                .borders(Borders::ALL)
                .title(" geometry and counters (* since attach) "),
        )
        .render(area, buf);
}

fn history(c: &CacheEntry, area: Rect, buf: &mut Buffer) {
    let rows = Layout::vertical([Constraint::Ratio(1, 3); 3]).split(area);
    type Field = fn(&HistPoint) -> u64;
    let charts: [(&str, Field, Color); 3] = [
        ("objects allocated", |p| p.obj_alloc, Color::Green),
        ("slabs", |p| p.slab_total, Color::Blue),
        ("emergency objects", |p| p.obj_emergency, Color::Red),
    ];
    for ((label, f, color), row) in charts.into_iter().zip(rows.iter()) {
        let data = c.history.series(f);
        let now = data.last().copied().unwrap_or(0);
        let min = data.iter().copied().min().unwrap_or(0);
        let max = data.iter().copied().max().unwrap_or(0);
        // The longest title that fits the border.
        let title = [
            format!(
                " {label}: {now} (min {min}, max {max}, {} samples) ",
                data.len()
            ),
            format!(" {label}: {now} ({min}..{max}) "),
            format!(" {label}: {now} "),
        ]
        .into_iter()
        .find(|t| t.chars().count() + 2 <= row.width as usize)
        .unwrap_or_default();
        // Keep the newest samples that fit.
        let width = row.width.saturating_sub(2) as usize;
        let shown = &data[data.len().saturating_sub(width)..];
        Sparkline::default()
            .block(Block::new().borders(Borders::ALL).title(title))
            .data(shown.iter().copied())
            .max(max.max(1))
            .style(Style::new().fg(color))
            .render(*row, buf);
    }
}

/// One gauge per CPU, as many per line as fit in `width`:
/// `cpu  3 [███████···]  11/16`.
pub fn magazine_lines(c: &CacheEntry, width: u16) -> Vec<Line<'static>> {
    let s = &c.stats;
    if s.mag_size == 0 {
        return vec![Line::from(
            " no magazines (a KMC_SLAB cache, or magazines are off)",
        )];
    }
    if s.mag_fill.is_empty() {
        return vec![Line::from(" no CPU has a magazine yet")];
    }
    let per_line = (width / MAG_CELL).max(1) as usize;
    s.mag_fill
        .chunks(per_line)
        .enumerate()
        .map(|(row, fills)| {
            let spans: Vec<Span> = fills
                .iter()
                .enumerate()
                .map(|(i, &fill)| {
                    let cpu = row * per_line + i;
                    let full = (fill as usize * MAG_BAR)
                        .div_ceil(s.mag_size as usize)
                        .min(MAG_BAR);
                    let bar = format!("{}{}", "█".repeat(full), "·".repeat(MAG_BAR - full));
                    let style = if fill >= s.mag_size {
                        Style::new().fg(Color::Yellow)
                    } else {
                        Style::new()
                    };
                    Span::styled(
                        format!(" cpu{cpu:>3} [{bar}] {fill:>3}/{:<3}", s.mag_size),
                        style,
                    )
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{CacheKey, View};
    use crate::testdata;
    use crate::ui::snapshot::text;

    fn detail_of(id: u64) -> State {
        let mut st = testdata::state();
        st.selected = Some(CacheKey::new(4242, id));
        st.view = View::Detail;
        st
    }

    #[test]
    fn detail_of_a_deadlocked_cache() {
        let st = detail_of(0x5555_0000_3000);
        let t = text(&st, 120, 36);
        assert!(
            t.contains("kvmem|DEADLOCKED|growing") || t.contains("kvmem|growing|DEADLOCKED"),
            "{t}"
        );
        insta::assert_snapshot!(t);
    }

    #[test]
    fn detail_of_a_cache_with_timings_shows_a_chart_per_histogram() {
        use slabscope_probes::{HistKey, HistKind, Log2Histogram};
        let mut st = detail_of(0x5555_0000_3000);
        let mut grow = Log2Histogram::ZERO;
        grow.buckets[20] = 3;
        grow.buckets[21] = 9;
        grow.buckets[26] = 1;
        let mut dead = Log2Histogram::ZERO;
        dead.buckets[25] = 4;
        for (kind, h) in [(HistKind::Grow, grow), (HistKind::Deadlocked, dead)] {
            let key = HistKey {
                pid: 4242,
                kind: kind as u32,
                cache_id: 0x5555_0000_3000,
            };
            st.histograms.insert(key, h);
        }
        let t = text(&st, 120, 44);
        assert!(
            t.contains("grow latency: 13  p50<2.1 ms p90<2.1 ms p99<67 ms"),
            "{t}"
        );
        assert!(t.contains("time DEADLOCKED: 4"), "{t}");
        assert!(!t.contains("emergency object lifetime"), "{t}");
        insta::assert_snapshot!(t);
    }

    #[test]
    fn detail_of_a_busy_cache_80x24() {
        insta::assert_snapshot!(text(&detail_of(0x5555_0000_1000), 80, 24));
    }

    #[test]
    fn detail_title_says_what_became_of_the_cache() {
        let mut st = detail_of(0x5555_0000_5000);
        st.apply(crate::sample::Update::TargetExited { pid: 4242 });
        st.toggle_pause();
        let t = text(&st, 140, 30);
        let title = t.lines().next().unwrap();
        assert!(
            title.contains("scratch  pid 4242  cache 0x555500005000  [process exited, cache destroyed, PAUSED, 0 updates waiting]"),
            "{title}"
        );
    }

    #[test]
    fn detail_of_a_slab_backed_cache() {
        let t = text(&detail_of(0x5555_0000_4000), 100, 30);
        assert!(t.contains("no magazines"), "{t}");
        insta::assert_snapshot!(t);
    }

    #[test]
    fn magazine_gauges_wrap_and_scale() {
        let st = testdata::state();
        let c = &st.caches[&CacheKey::new(4242, 0x5555_0000_3000)];
        let lines = magazine_lines(c, 2 * MAG_CELL + 5);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].to_string(),
            " cpu  0 [██████████]  16/16  cpu  1 [··········]   0/16 "
        );
        assert_eq!(
            lines[1].to_string(),
            " cpu  2 [█████·····]   7/16  cpu  3 [██████████]  16/16 "
        );
    }
}
