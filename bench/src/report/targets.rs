//! BENCHMARKS.md's two tables of targets, issue 7's (the cache API) and
//! issue 15's (`malloc`, the C path, the global allocator): each target
//! next to what the run measured and whether it is met.

use std::fmt::Write as _;

use super::*;

impl Results {
    pub(super) fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets of issue 7\n");
        let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
        for (size, live) in [(64, 1000), (4096, 1000), (64, 1), (4096, 1)] {
            if let Some((ratio, best, s, b)) = self.churn_ratio(size, live, false) {
                let _ = writeln!(
                    md,
                    "| churn {}, {live} live, LIFO: ≤ 0.8× best peer | {:.2}× ({} vs {} {}) | {} |",
                    size_name(size),
                    ratio,
                    num(s),
                    best.label(),
                    num(b),
                    verdict(ratio <= 0.8)
                );
            }
        }
        if let Some(n) = &self.native {
            let per_op = n.per_op();
            let _ = writeln!(
                md,
                "| magazine hit ≤ 20 instructions/op (64 B, 1 live) | {per_op:.1} on the native \
                 path ({} per turn of the alloc-write-free loop, less the harness's {}; counted \
                 in this binary's machine code, see section 6){} | {} |",
                n.hit.instructions,
                n.harness.instructions,
                self.instr
                    .iter()
                    .find(|r| r.size == 64 && r.live == 1)
                    .and_then(|r| r.cells.get(&Kind::Slabscope))
                    .map_or(String::new(), |v| format!(
                        "; {v:.1} under valgrind, which runs the locked magazines"
                    )),
                verdict(per_op <= 20.0)
            );
        }
        for r in &self.prodcons {
            if let (Some(s), Some(m)) =
                (r.cells.get(&Kind::Slabscope), r.cells.get(&Kind::Mimalloc))
            {
                let ratio = s.median / m.median;
                let _ = writeln!(
                    md,
                    "| producer/consumer {}: ≤ 1.5× mimalloc | {ratio:.2}× ({} vs {}) | {} |",
                    size_name(r.size),
                    num(s.median),
                    num(m.median),
                    verdict(ratio <= 1.5)
                );
            }
        }
        let find = |k: Kind| self.ramp.iter().find(|r| r.kind == k);
        if let (Some(s), Some(m)) = (find(Kind::Slabscope), find(Kind::Mimalloc)) {
            let ratio = s.ns_per_obj.median / m.ns_per_obj.median;
            let _ = writeln!(
                md,
                "| cold ramp to {} objects: ≤ 2× mimalloc's time | {ratio:.2}× | {} |",
                s.median_run.count,
                verdict(ratio <= 2.0)
            );
        }
        if let Some(s) = find(Kind::Slabscope) {
            let m = &s.median_run;
            let ratio = m.peak_growth as f64 / (m.count * m.size) as f64;
            let _ = writeln!(
                md,
                "| cold ramp: resident ≤ 1.25× payload | {ratio:.2}× | {} |",
                verdict(ratio <= 1.25)
            );
            let after = m.after_release_growth as f64 / m.peak_growth.max(1) as f64;
            let _ = writeln!(
                md,
                "| free all + reap: resident ≤ 10 % of peak | {:.1} % | {} |",
                100.0 * after,
                verdict(after <= 0.10)
            );
        }
        let row = |p: &str| self.obs.iter().find(|r| r.label.starts_with(p));
        let base = row("probes compiled out");
        // The noise of this run: the control against the first copy of the
        // same build.
        let noise = match (row(CONTROL), row("probes compiled in")) {
            (Some(c), Some(a)) => c.vs(a),
            _ => None,
        };
        if let Some(n) = noise {
            let _ = writeln!(
                md,
                "| noise: two files of the build with probes, untraced | {} | — |",
                paired(n)
            );
        }
        for (prefix, limit, what) in [
            (
                "probes compiled in",
                1.0,
                "untraced probes within noise of compiled out (1 %)",
            ),
            (
                "traced by the slabscope collector",
                2.0,
                "collector attached ≤ 2 % slower",
            ),
            (
                "traced by bpftrace",
                f64::INFINITY,
                "bpftrace one-liner attached (no target)",
            ),
        ] {
            let this = row(prefix);
            let base_err = base.and_then(|r| r.result.as_ref().err());
            let this_err = this.and_then(|r| r.result.as_ref().err());
            match (
                base.zip(this).and_then(|(b, t)| t.vs(b)),
                base_err,
                this_err,
            ) {
                (Some(p), _, _) => {
                    let met = if !limit.is_finite() {
                        "—"
                    } else if p.median <= limit {
                        "yes"
                    } else if p.low <= limit {
                        "within noise (the interval reaches the limit)"
                    } else {
                        "**no**"
                    };
                    let _ = writeln!(md, "| {what} | {} | {met} |", paired(p));
                }
                (None, _, Some(e)) | (None, Some(e), None) => {
                    let _ = writeln!(
                        md,
                        "| {what} | not measured: {} | — |",
                        e.replace('|', "\\|")
                    );
                }
                _ => {}
            }
        }
        let _ = writeln!(md);
    }

    /// Issue 15's targets next to sections 7 to 9's figures. Absent when
    /// none of those sections ran.
    pub(super) fn malloc_targets(&self, md: &mut String) {
        if self.cpath.is_none() && self.programs.is_none() && self.global.is_none() {
            return;
        }
        let _ = writeln!(md, "## Targets of issue 15\n");
        let _ = writeln!(
            md,
            "slabscope as a program's `malloc` and as the cache ABI called from C, from \
             sections 7 to 9 below; untraced probes and the collector are issue 7's rows \
             above. Where a target is missed, the analysis at the end of this file says \
             what stands in the way (\"Where issue 15's targets stand\"). A C path row also \
             gives the ratio of the per-CPU reference of its kind (section 7), the floor of \
             slabscope's design on that workload: for the cache API `rseq_stack` (one array \
             per CPU in a restartable sequence and nothing else), for `malloc` `rseq_classes` \
             (the same per size class, the class found from the size and from the \
             address).\n"
        );
        let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
        if let Some(p) = &self.programs {
            for row in &p.rows {
                for (metric, label, higher) in crate::programs::metrics(row) {
                    let Some(a) = row.against_target(metric, higher) else {
                        continue;
                    };
                    let (Some(mine), Some(ratio)) = (a.mine, a.ratio) else {
                        continue;
                    };
                    let target = match (metric, higher) {
                        ("peak_mib", _) => format!("≤ {:.1}× mimalloc's", a.limit),
                        (_, true) => {
                            "the fastest of jemalloc, mimalloc, tcmalloc ≤ 1.0× ours".into()
                        }
                        (_, false) => "≤ 1.0× the fastest of jemalloc, mimalloc, tcmalloc".into(),
                    };
                    let fig = |x| crate::programs::figure(x, higher);
                    let _ = writeln!(
                        md,
                        "| {}, {label}: {target} | {ratio:.2}× ({} vs {} {}) | {} |",
                        row.name,
                        fig(mine),
                        a.peer,
                        fig(a.theirs),
                        verdict(ratio <= a.limit)
                    );
                }
            }
        }
        if let Some(c) = &self.cpath {
            for (who, what, limit) in [
                (crate::cpath::CACHE, "cache API", 0.8),
                (crate::cpath::MALLOC, "`malloc`", 1.0),
            ] {
                for r in &c.rows {
                    let (Some((peer, best)), Some(mine), Some(ratio)) =
                        (r.best_peer(), r.cells.get(who), r.ratio(who))
                    else {
                        continue;
                    };
                    let floor = floor(who)
                        .and_then(|f| Some((f, r.ratio(f)?)))
                        .map_or(String::new(), |(f, x)| format!("; {f} {x:.2}×"));
                    let _ = writeln!(
                        md,
                        "| C path, {what}, {}: ≤ {limit:.1}× best peer | {ratio:.2}× ({} vs \
                         {peer} {}{floor}) | {} |",
                        r.label(),
                        num(mine.median),
                        num(best),
                        verdict(ratio <= limit)
                    );
                }
            }
        }
        if let Some(g) = &self.global {
            let ratio = g.ratio();
            let _ = writeln!(
                md,
                "| `SlabscopeAlloc`, random sizes: ≤ 1.0× the `mimalloc` crate | {ratio:.2}× \
                 ({} vs {}) | {} |",
                num(g.slabscope.median),
                num(g.mimalloc.median),
                verdict(ratio <= 1.0)
            );
        }
        let _ = writeln!(md);
    }
}

/// The per-CPU reference (section 7) whose ratio a C path target row
/// gives beside its own: the one that does what contender `who` must do.
fn floor(who: &str) -> Option<&'static str> {
    match who {
        crate::cpath::CACHE => Some(crate::cpath::RSEQ_STACK),
        crate::cpath::MALLOC => Some(crate::cpath::RSEQ_CLASSES),
        _ => None,
    }
}
