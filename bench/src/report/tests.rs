//! Tests of the report: ratios, verdicts and the targets tables.

use std::collections::BTreeMap;

use super::*;

fn s(median: f64) -> Summary {
    Summary {
        min: median,
        median,
        n: 1,
    }
}

fn results(churn: Vec<Row>) -> Results {
    Results {
        machine: Machine::describe(),
        date: "today".into(),
        load_before: "0 0 0".into(),
        load_after: "0 0 0".into(),
        command: "cargo xtask bench".into(),
        quick: false,
        runs: 1,
        seconds: 1.0,
        kinds: Kind::ALL.to_vec(),
        versions: Vec::new(),
        notes: Vec::new(),
        churn,
        prodcons: Vec::new(),
        ramp: Vec::new(),
        instr: Vec::new(),
        obs: Vec::new(),
        fastpath: Vec::new(),
        profiles: Vec::new(),
        native: None,
        cpath: None,
        programs: None,
        global: None,
        analysis: None,
    }
}

#[test]
fn ratio_is_against_the_best_peer_and_verdicts_follow_the_targets() {
    let row = |slab: f64| Row {
        size: 64,
        live: 1000,
        random: false,
        cells: BTreeMap::from([
            (Kind::Slabscope, s(slab)),
            (Kind::Glibc, s(5.0)),
            (Kind::Mimalloc, s(4.0)),
        ]),
        internals: None,
    };
    let r = results(vec![row(2.0)]);
    let (ratio, best, _, _) = r.churn_ratio(64, 1000, false).expect("row present");
    assert_eq!(
        (ratio, best),
        (0.5, Kind::Mimalloc),
        "best peer is the fastest non-slabscope cell"
    );
    let md = r.markdown();
    assert!(
        md.contains("| churn 64 B, 1000 live, LIFO: ≤ 0.8× best peer | 0.50× (2.00 vs mimalloc 4.00) | yes |"),
        "met target rendered as yes:\n{md}"
    );
    let md = results(vec![row(8.0)]).markdown();
    assert!(
        md.contains("| 2.00× (8.00 vs mimalloc 4.00) | **no** |"),
        "missed target rendered as no:\n{md}"
    );
    assert!(
        md.contains("| — |"),
        "contenders without a figure show a dash:\n{md}"
    );
}

#[test]
fn issue_15_targets_follow_sections_7_to_9() {
    let cells = |pairs: &[(&str, &str, f64)]| {
        let mut m: BTreeMap<String, BTreeMap<String, Summary>> = BTreeMap::new();
        for (alloc, metric, v) in pairs {
            m.entry(alloc.to_string())
                .or_default()
                .insert(metric.to_string(), s(*v));
        }
        m
    };
    let row = |name, cells| crate::programs::ProgramRow {
        name,
        command: String::new(),
        cells,
        differs: Vec::new(),
        failed: BTreeMap::new(),
    };
    let mut r = results(Vec::new());
    assert!(
        !r.markdown().contains("Targets of issue 15"),
        "no section without sections 7 to 9"
    );
    r.programs = Some(crate::programs::Programs {
        runs: 1,
        rows: vec![
            row(
                "python",
                cells(&[
                    ("glibc", "time_s", 0.5),
                    ("mimalloc", "time_s", 2.0),
                    ("tcmalloc", "time_s", 2.5),
                    ("slabscope_malloc", "time_s", 2.2),
                    ("mimalloc", "peak_mib", 40.0),
                    ("slabscope_malloc", "peak_mib", 42.0),
                ]),
            ),
            row(
                "redis",
                cells(&[
                    ("jemalloc", "set_rps", 1.5e6),
                    ("slabscope_malloc", "set_rps", 1.6e6),
                    ("jemalloc", "get_rps", 2.0e6),
                    ("slabscope_malloc", "get_rps", 1.6e6),
                ]),
            ),
        ],
        no_slabscope: None,
        skipped: Vec::new(),
    });
    r.cpath = Some(crate::cpath::CPath {
        libs: crate::cpath::Libraries {
            slabscope: Err("test".into()),
            malloc: Err("test".into()),
            references: Vec::new(),
        },
        rows: vec![crate::cpath::CRow {
            size: 64,
            max_size: 64,
            live: 1000,
            cells: BTreeMap::from([
                ("tcmalloc".to_string(), s(2.0)),
                ("slabscope".to_string(), s(1.5)),
                ("slabscope_malloc".to_string(), s(1.9)),
                ("rseq_stack".to_string(), s(2.1)),
                ("rseq_classes".to_string(), s(2.4)),
            ]),
        }],
        missing: BTreeMap::new(),
        failed: None,
        abi: None,
        malloc_abi: None,
    });
    r.global = Some(crate::global::GlobalChurn {
        slabscope: s(5.0),
        mimalloc: s(10.0),
    });
    let md = r.markdown();
    for line in [
        "| python, time (s): ≤ 1.0× the fastest of jemalloc, mimalloc, tcmalloc | 1.10× \
         (2.20 vs mimalloc 2.00) | **no** |",
        "| python, peak RSS (MiB): ≤ 1.1× mimalloc's | 1.05× (42.0 vs mimalloc 40.0) | yes |",
        "| redis, SET requests/s: the fastest of jemalloc, mimalloc, tcmalloc ≤ 1.0× ours | 0.94× \
         (1.60 M vs jemalloc 1.50 M) | yes |",
        "| redis, GET requests/s: the fastest of jemalloc, mimalloc, tcmalloc ≤ 1.0× ours | 1.25× \
         (1.60 M vs jemalloc 2.00 M) | **no** |",
        "| C path, cache API, 64 B, 1000 live: ≤ 0.8× best peer | 0.75× (1.50 vs \
         tcmalloc 2.00; rseq_stack 1.05×) | yes |",
        "| C path, `malloc`, 64 B, 1000 live: ≤ 1.0× best peer | 0.95× (1.90 vs \
         tcmalloc 2.00; rseq_classes 1.20×) | yes |",
        "| `SlabscopeAlloc`, random sizes: ≤ 1.0× the `mimalloc` crate | 0.50× (5.00 vs \
         10.0) | yes |",
    ] {
        assert!(md.contains(line), "missing {line:?} in:\n{md}");
    }
    assert!(
        !md.contains("glibc 0.50"),
        "glibc is not one of the peers a program's time is held against:\n{md}"
    );
}
