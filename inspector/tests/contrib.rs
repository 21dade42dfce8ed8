//! The files in `contrib/`: the systemd unit runs a command line this
//! binary accepts and passes `systemd-analyze verify`; the Grafana
//! dashboard is well formed. (That the unit's capabilities suffice, and that
//! the dashboard's queries use only metrics the exporter serves, is checked
//! as root against a real exporter in `serve_prometheus.rs`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use slabscope_inspector::cli::Cli;

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(name)
}

fn unit() -> String {
    std::fs::read_to_string(contrib("slabscope-serve.service")).expect("reading the unit")
}

fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_unit_runs_a_command_line_slabscope_accepts() {
    let args = exec_start(&unit());
    assert!(args[0].ends_with("/slabscope"), "{args:?}");
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Some(slabscope_inspector::serve::cli::Command::Serve(serve)) = cli.command else {
        panic!("the unit does not run `slabscope serve`: {args:?}");
    };
    assert!(
        serve.listen.ip().is_loopback(),
        "the unit must listen on loopback by default"
    );
}

#[test]
fn the_unit_grants_what_the_exporter_needs_and_no_more() {
    let unit = unit();
    let caps = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key}"));
        let mut v: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        v.sort();
        v
    };
    let want = [
        "CAP_BPF",
        "CAP_DAC_READ_SEARCH",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
    ];
    assert_eq!(caps("AmbientCapabilities="), want);
    assert_eq!(caps("CapabilityBoundingSet="), want);
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    // Finding every process is the exporter's job.
    assert!(!unit.contains("ProtectProc=invisible"));
    assert!(!unit.contains("ProcSubset=pid"));
}

#[test]
fn systemd_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // Straight to stderr: the harness captures eprintln of passing tests.
        use std::io::Write as _;
        let _ = std::io::stderr()
            .write_all(b"\nSKIPPED systemd_accepts_the_unit: systemd-analyze is not installed\n\n");
        return;
    }
    // The unit as installed, with this build's binary where it expects the
    // installed one, in a directory of its own.
    let dir = std::env::temp_dir().join(format!("slabscope-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a directory");
    let text = unit().replace("/usr/local/bin/slabscope", env!("CARGO_BIN_EXE_slabscope"));
    let path = dir.join("slabscope-serve.service");
    std::fs::write(&path, text).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_in_every_panel() {
    let text = std::fs::read_to_string(contrib("grafana-dashboard.json")).expect("reading it");
    let d: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let panels = d["panels"].as_array().expect("panels");
    let mut queries = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("an expr");
            assert!(expr.contains("slabscope_"), "{expr}");
            queries += 1;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
    }
    assert!(queries >= 10, "{queries} queries");
}
