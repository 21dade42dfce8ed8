//! The detail view's timing histograms: one bar chart per histogram the
//! cache has (grow latency, time DEADLOCKED, emergency object lifetime),
//! a bar per log2 bucket from the shortest to the longest duration seen,
//! with the 50th, 90th and 99th percentiles in the title.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Borders, Widget};
use slabscope_probes::{HistKind, Log2Histogram};

use crate::app::CacheEntry;
use crate::app::State;
use crate::histogram::{bucket_bound_ns, duration, of_cache, quantile_bound_ns, title};

/// Height of the histogram row of the detail view.
pub const HEIGHT: u16 = 10;

/// The histograms of `c`, if it has any.
pub fn of_entry(state: &State, c: &CacheEntry) -> Vec<(HistKind, Log2Histogram)> {
    of_cache(&state.histograms, c.key.pid, c.key.cache_id)
}

/// Renders `hists` side by side into `area`.
pub fn render(hists: &[(HistKind, Log2Histogram)], area: Rect, buf: &mut Buffer) {
    if hists.is_empty() {
        return;
    }
    let areas = Layout::horizontal(vec![Constraint::Fill(1); hists.len()]).split(area);
    for ((kind, h), area) in hists.iter().zip(areas.iter()) {
        chart(*kind, h, *area, buf);
    }
}

fn chart(kind: HistKind, h: &Log2Histogram, area: Rect, buf: &mut Buffer) {
    let q = |p: f64| quantile_bound_ns(h, p).map(duration).unwrap_or_default();
    let block = Block::new().borders(Borders::ALL).title(format!(
        " {}: {}  p50<{} p90<{} p99<{} ",
        title(kind),
        h.count(),
        q(0.5),
        q(0.9),
        q(0.99)
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let Some(first) = h.buckets.iter().position(|&n| n > 0) else {
        return;
    };
    let last = h.buckets.iter().rposition(|&n| n > 0).unwrap_or(first);
    // Each bar is labelled with its bucket's upper bound; as many buckets
    // as fit, the longest durations kept.
    const BAR: u16 = 6;
    let fit = usize::from((inner.width / (BAR + 1)).max(1));
    let first = first.max((last + 1).saturating_sub(fit));
    let bars: Vec<Bar> = (first..=last)
        .map(|i| {
            Bar::new(h.buckets[i])
                .label(Line::from(short(bucket_bound_ns(i))))
                .text_value(h.buckets[i].to_string())
        })
        .collect();
    BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(BAR)
        .bar_gap(1)
        .bar_style(Style::new().fg(Color::Cyan))
        .value_style(Style::new().fg(Color::Black).bg(Color::Cyan))
        .render(inner, buf);
}

/// A bucket bound in at most six characters: `<1ms`, `<16µs`.
fn short(ns: u64) -> String {
    let d = duration(ns).replace(' ', "");
    // Whole units are enough to tell log2 buckets apart.
    let d = match d.split_once('.') {
        Some((int, rest)) => {
            let unit: String = rest.chars().skip_while(char::is_ascii_digit).collect();
            format!("{int}{unit}")
        }
        None => d,
    };
    format!("<{d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_short() {
        assert_eq!(short(1 << 10), "<1µs");
        assert_eq!(short(1 << 20), "<1ms");
        assert_eq!(short(1 << 26), "<67ms");
        assert_eq!(short(1 << 33), "<8s");
        assert_eq!(short(512), "<512ns");
    }
}
