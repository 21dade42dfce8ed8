//! `slabscope serve` with real parts: real targets (the allocator's
//! `serve_target` example), the real exporter binary, and a real Prometheus
//! (Debian's package) scraping it, queried through its HTTP API.
//!
//! Needs root (eBPF); skipped loudly otherwise. Every wait is bounded, and
//! every child (targets, exporter, Prometheus) is killed when its guard
//! drops, also when an assertion fails.

mod serve_support;

use std::collections::BTreeSet;
use std::time::Duration;

use serve_support::*;
use slabscope_inspector::serve::labels;

/// How long a value may take to travel target → exporter → Prometheus.
const PATIENCE: Duration = Duration::from_secs(30);

/// The exporter only looks at the test's targets (the host may run other
/// slabscope programs).
const ONLY_TARGETS: [&str; 6] = [
    "--comm",
    "serve_target",
    "--scan-interval",
    "100ms",
    "--sample-interval",
    "100ms",
];

fn by_name(stats: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    stats
        .as_array()
        .expect("an array of caches")
        .iter()
        .map(|c| (c["name"].as_str().expect("a name").to_owned(), c.clone()))
        .collect()
}

/// Values Prometheus holds for `query`, keyed by their `cache` label
/// turned back into the cache's real name.
fn values_by_cache(prom: &Prometheus, query: &str) -> Vec<(String, f64)> {
    prom.query(query)
        .iter()
        .map(|r| {
            let stored = r["metric"]["cache"].as_str().expect("a cache label");
            let name = labels::recover(stored).expect("a recoverable cache label");
            let value = r["value"][1].as_str().expect("a value").parse().unwrap();
            (String::from_utf8(name).expect("UTF-8 names"), value)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_what_the_targets_count() {
    let _serial = serial();
    if !root_or_skip("prometheus_scrapes_what_the_targets_count") {
        return;
    }
    // One target before the exporter starts, one after: both are found.
    let mut early = Target::start();
    let serve = Serve::start(&ONLY_TARGETS);
    let mut late = Target::start();
    for t in [&early, &late] {
        let pid = t.pid();
        wait_for(
            &format!("the exporter attaching to pid {pid}"),
            PATIENCE,
            || {
                let page = serve.metrics();
                sample(
                    &page,
                    &format!("slabscope_process_start_time_seconds{{pid=\"{pid}\""),
                )
            },
        );
    }
    let expected = [(early.pid(), early.go()), (late.pid(), late.go())];

    // The exporter's own page passes promtool's lint.
    let page = wait_for("the caches in /metrics", PATIENCE, || {
        let page = serve.metrics();
        page.contains("st_small").then_some(page)
    });
    let lint = promtool_check(&page);
    assert!(lint.is_empty(), "promtool check metrics: {lint}\n{page}");

    let prom = Prometheus::start(serve.port);
    for (pid, stats) in &expected {
        for (field, family) in [
            ("obj_alloc", "slabscope_cache_objects_allocated"),
            ("obj_total", "slabscope_cache_objects"),
            ("slab_total", "slabscope_cache_slabs"),
            ("slab_create", "slabscope_cache_slabs_created_total"),
        ] {
            let want: BTreeSet<(String, u64)> = by_name(stats)
                .into_iter()
                .map(|(n, c)| (n, c[field].as_u64().expect("a count")))
                .collect();
            let query = format!("{family}{{pid=\"{pid}\"}}");
            wait_for(
                &format!("Prometheus to hold {want:?} for {query}"),
                PATIENCE,
                || {
                    let got: BTreeSet<(String, u64)> = values_by_cache(&prom, &query)
                        .into_iter()
                        .map(|(n, v)| (n, v as u64))
                        .collect();
                    (got == want).then_some(())
                },
            );
        }
        // Two reaps per cache, as the target did them.
        let query = format!("slabscope_cache_reaps_total{{pid=\"{pid}\"}}");
        let reaps = values_by_cache(&prom, &query);
        assert_eq!(reaps.len(), 2, "{reaps:?}");
        assert!(reaps.iter().all(|(_, v)| *v == 2.0), "{reaps:?}");
    }
    // The hostile name arrived whole, and the comm label with it.
    let names = values_by_cache(&prom, "slabscope_cache_objects_allocated");
    assert!(
        names.iter().any(|(n, _)| n == "st_\u{1b}[31m\"red\\"),
        "{names:?}"
    );
    let attached = prom.query("slabscope_exporter_attached_processes");
    assert_eq!(attached[0]["value"][1], "2", "{attached:?}");
    let files = prom.query("slabscope_exporter_watched_files");
    assert_eq!(files[0]["value"][1], "1", "one executable: {files:?}");

    // A killed target's series leave the exporter, then Prometheus.
    let gone = early.pid();
    early.guard.kill();
    wait_for(
        &format!("pid {gone}'s series to leave /metrics"),
        PATIENCE,
        || {
            let page = serve.metrics();
            (!page.contains(&format!("pid=\"{gone}\""))).then_some(())
        },
    );
    wait_for(
        &format!("pid {gone}'s series to go stale in Prometheus"),
        PATIENCE,
        || {
            prom.query(&format!("slabscope_cache_objects{{pid=\"{gone}\"}}"))
                .is_empty()
                .then_some(())
        },
    );
    let left = prom.query("count(slabscope_cache_objects)");
    assert_eq!(left[0]["value"][1], "2", "the late target's two caches");
    drop(late);
}

#[test]
fn short_lived_targets_leave_no_series_or_memory_behind() {
    let _serial = serial();
    if !root_or_skip("short_lived_targets_leave_no_series_or_memory_behind") {
        return;
    }
    // A thousand processes, 25 at a time, each living 100 ms: a few seconds
    // of churn. The exporter's session on their executable sees each from
    // its first probe, however short its life: the file's session is
    // attached once, not per process.
    const TOTAL: usize = 1000;
    const PARALLEL: usize = 25;
    let serve = Serve::start(&[
        "--comm",
        "serve_target",
        "--scan-interval",
        "50ms",
        "--sample-interval",
        "100ms",
    ]);
    let exporter = serve.guard.pid();
    let target = serve_target();
    let run_batch = |n: usize| {
        let mut live: Vec<Guard> = Vec::new();
        for _ in 0..n {
            if live.len() == PARALLEL {
                let mut first = live.remove(0);
                let status = first.child.wait().expect("waiting for a short target");
                assert!(status.success(), "a short target failed: {status}");
            }
            let mut cmd = std::process::Command::new(&target);
            cmd.env_clear()
                .args(["--short", "100"])
                .stdin(std::process::Stdio::null());
            live.push(Guard::spawn(&mut cmd, "serve_target --short"));
        }
        for mut g in live {
            let status = g.child.wait().expect("waiting for a short target");
            assert!(status.success(), "a short target failed: {status}");
        }
    };
    let settled = |what: &str, attached_now: f64| {
        wait_for(what, PATIENCE, || {
            let page = serve.metrics();
            let attached = sample(&page, "slabscope_exporter_attached_processes")?;
            let entries = sample(&page, "slabscope_exporter_kernel_map_entries")?;
            (attached == attached_now && entries == 0.0 && !page.contains("st_short"))
                .then_some(page)
        })
    };

    // Idle, the exporter holds a few fds and threads; a session on a file
    // adds a few dozen fds (maps, programs, perf links) and a thread, and
    // closes some scans after the last process mapping the file exits.
    let idle = footprint(exporter);
    let back_to_idle = |what: &str| {
        wait_for(what, Duration::from_mins(2), || {
            let now = footprint(exporter);
            (now.1 == idle.1 && now.2 == idle.2).then_some(now)
        })
    };

    // A target that lives throughout, and makes no cache (it is never
    // released): the session on the executable is attached before the first
    // short target starts, and stays until the end.
    let anchor = Target::start();
    let pid = anchor.pid();
    wait_for(&format!("the exporter to list pid {pid}"), PATIENCE, || {
        let page = serve.metrics();
        (sample(&page, "slabscope_exporter_watched_files") == Some(1.0)).then_some(())?;
        sample(
            &page,
            &format!("slabscope_process_start_time_seconds{{pid=\"{pid}\""),
        )
    });

    // Warm up: the first targets grow the allocator's arenas and the
    // runtime's buffers to their working size.
    run_batch(100);
    settled("the warm-up targets to be forgotten", 1.0);
    let warm = footprint(exporter);
    run_batch(TOTAL - 100);
    let page = settled("every short target to be forgotten", 1.0);
    let end = footprint(exporter);

    // Every short target fired probes (it creates a cache), so each was
    // seen, and forgotten when it exited.
    let exited = sample(&page, "slabscope_exporter_exited_processes_total").unwrap();
    assert!(
        exited >= (TOTAL * 95 / 100) as f64,
        "only {exited} of {TOTAL} short targets were seen and forgotten"
    );
    let failures = sample(&page, "slabscope_exporter_attach_failures_total").unwrap();
    assert_eq!(failures, 0.0, "{page}");
    assert_eq!(sample(&page, "slabscope_exporter_series"), Some(0.0));
    // Resident memory does not grow with the number of targets.
    assert!(
        end.0 < warm.0 + 32 * 1024,
        "resident memory grew from {} KiB to {} KiB over {} targets",
        warm.0,
        end.0,
        TOTAL - 100
    );
    // With the last target gone, the session closes: no fd (maps,
    // programs, perf links) and no thread is left behind.
    drop(anchor);
    let after = back_to_idle("the session's fds and threads to be released");
    eprintln!(
        "short targets: {TOTAL} run, {exited} seen and forgotten; exporter idle {idle:?}, after \
         warm-up {warm:?}, after all {end:?}, idle again {after:?} (RSS KiB, fds, threads)"
    );
}

#[test]
fn kernel_histograms_time_grows_deadlocks_and_emergency_objects() {
    let _serial = serial();
    if !root_or_skip("kernel_histograms_time_grows_deadlocks_and_emergency_objects") {
        return;
    }
    let serve = Serve::start(&ONLY_TARGETS);
    // Every grow is slowed to 60 ms, past the 20 ms grow timeout.
    let mut target = Target::start_with(&["--faults"]);
    let pid = target.pid();
    wait_for(&format!("the exporter to see pid {pid}"), PATIENCE, || {
        sample(
            &serve.metrics(),
            &format!("slabscope_process_start_time_seconds{{pid=\"{pid}\""),
        )
    });
    let stats = target.go();
    let emergency = target.json_line()["emergency_allocs"]
        .as_u64()
        .expect("a count of emergency allocations");
    assert!(emergency > 0, "the faults made no emergency object");

    let series = |page: &str, family: &str, id: u64, extra: &str| {
        let labels = format!("cache_id=\"{id:#x}\"");
        page.lines()
            .find(|l| l.starts_with(family) && l.contains(&labels) && l.contains(extra))
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.parse::<f64>().expect("a number"))
    };
    let caches = by_name(&stats);
    let page = wait_for("every timing in /metrics", PATIENCE, || {
        let page = serve.metrics();
        let lifetimes: f64 = caches
            .iter()
            .filter_map(|(_, c)| {
                series(
                    &page,
                    "slabscope_cache_emergency_object_lifetime_seconds_count",
                    c["id"].as_u64()?,
                    "",
                )
            })
            .sum();
        (lifetimes == emergency as f64).then_some(page)
    });
    for (name, c) in &caches {
        let id = c["id"].as_u64().unwrap();
        let grows = c["slab_create"].as_u64().unwrap() + c["slab_fail"].as_u64().unwrap();
        let count = series(&page, "slabscope_cache_grow_duration_seconds_count", id, "");
        assert_eq!(count, Some(grows as f64), "{name}: one duration per grow");
        // Each grow took at least the injected 60 ms: nothing below 33 ms.
        let fast = series(
            &page,
            "slabscope_cache_grow_duration_seconds_bucket",
            id,
            "le=\"0.033554432\"",
        );
        assert_eq!(
            fast,
            Some(0.0),
            "{name}: a grow faster than its injected delay"
        );
        let slow = series(
            &page,
            "slabscope_cache_grow_duration_seconds_bucket",
            id,
            "le=\"+Inf\"",
        );
        assert_eq!(slow, Some(grows as f64), "{name}");
        let spells = series(
            &page,
            "slabscope_cache_deadlocked_duration_seconds_count",
            id,
            "",
        )
        .unwrap_or(0.0);
        let deadlocks = c["obj_deadlock"].as_u64().unwrap() as f64;
        assert!(
            spells >= 1.0 && spells <= deadlocks,
            "{name}: {spells} DEADLOCKED spells timed, {deadlocks} deadlocks"
        );
    }
    let lint = promtool_check(&page);
    assert!(lint.is_empty(), "promtool check metrics: {lint}");
}

/// The capabilities the systemd unit grants, as `setpriv` names them.
fn unit_capabilities() -> Vec<String> {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/slabscope-serve.service"),
    )
    .expect("reading the unit");
    unit.lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect()
}

#[test]
fn the_units_capabilities_suffice_without_root() {
    let _serial = serial();
    if !root_or_skip("the_units_capabilities_suffice_without_root") {
        return;
    }
    // As the unit runs it: user nobody, only the unit's capabilities.
    let caps = unit_capabilities().join(",");
    let wrapper: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps=-all,{caps}"),
        &format!("--ambient-caps=-all,{caps}"),
        &format!("--bounding-set=-all,{caps}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serve = Serve::start_as(&wrapper, &ONLY_TARGETS);
    let mut target = Target::start();
    let pid = target.pid();
    wait_for(&format!("the exporter to see pid {pid}"), PATIENCE, || {
        let page = serve.metrics();
        assert_eq!(
            sample(&page, "slabscope_exporter_attach_failures_total"),
            Some(0.0),
            "attaching failed with the unit's capabilities"
        );
        sample(
            &page,
            &format!("slabscope_process_start_time_seconds{{pid=\"{pid}\""),
        )
    });
    let stats = target.go();
    let want = by_name(&stats)
        .into_iter()
        .find(|(n, _)| n == "st_small")
        .expect("st_small")
        .1["obj_alloc"]
        .as_f64()
        .unwrap();
    let got = wait_for("st_small's objects in /metrics", PATIENCE, || {
        let page = serve.metrics();
        assert_eq!(
            sample(&page, "slabscope_exporter_attach_failures_total"),
            Some(0.0),
            "attaching failed with the unit's capabilities"
        );
        sample(
            &page,
            &format!(
                "slabscope_cache_objects_allocated{{pid=\"{pid}\",comm=\"serve_target\",cache=\"st_small\""
            ),
        )
    });
    assert_eq!(got, want);
}

/// Every `slabscope_*` name in `expr`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("slabscope_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_what_the_exporter_serves() {
    let _serial = serial();
    if !root_or_skip("the_dashboard_queries_only_what_the_exporter_serves") {
        return;
    }
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana-dashboard.json"),
    )
    .expect("reading the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("its JSON");
    let mut exprs: Vec<String> = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("an expr").to_owned());
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        exprs.push(v["definition"].as_str().expect("a definition").to_owned());
    }

    // A target whose caches grow, deadlock and hand out emergency objects,
    // so every family, histograms included, has series.
    let serve = Serve::start(&ONLY_TARGETS);
    let mut target = Target::start_with(&["--faults"]);
    let pid = target.pid();
    wait_for(&format!("the exporter to see pid {pid}"), PATIENCE, || {
        sample(
            &serve.metrics(),
            &format!("slabscope_process_start_time_seconds{{pid=\"{pid}\""),
        )
    });
    target.go();
    let page = wait_for("the histograms in /metrics", PATIENCE, || {
        let page = serve.metrics();
        page.contains("slabscope_cache_emergency_object_lifetime_seconds_bucket{")
            .then_some(page)
    });
    let served: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query without a slabscope metric: {expr}"
        );
        for name in names {
            assert!(
                served.contains(name.as_str()),
                "the dashboard queries {name}, which /metrics does not serve: {expr}"
            );
        }
    }

    // A real Prometheus parses and runs every query.
    let prom = Prometheus::start(serve.port);
    wait_for("a first scrape", PATIENCE, || {
        (!prom
            .query("slabscope_exporter_attached_processes")
            .is_empty())
        .then_some(())
    });
    for expr in &exprs {
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$comm", ".*");
        let q = match q.strip_prefix("label_values(") {
            // A Grafana variable: label_values(metric, label).
            Some(rest) => rest.split(',').next().expect("a metric").to_owned(),
            None => q,
        };
        // Panics unless Prometheus answers "success".
        prom.query(&q);
    }
}
