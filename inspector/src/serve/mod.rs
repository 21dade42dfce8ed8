//! `slabscope serve`: every slabscope process on the host, exported in the
//! OpenMetrics text format for Prometheus and the scrapers that speak it.
//!
//! ```text
//!  /proc scan ──► process with probes ──► its probe files ──► one eBPF session
//!  (discover)     (pid, start time)       (exe, .so)          per file (files)
//!                        │                                        │ per-pid caches,
//!                        ▼                                        ▼ histograms
//!  GET /metrics ◄── Exporter (metrics) ◄──── Targets: exported processes + file samples
//! ```
//!
//! Threads: the tokio runtime serves HTTP (axum); one discovery thread scans
//! `/proc` every `--scan-interval`, lists the processes to export, attaches
//! to files not yet watched and closes sessions no process needs; each
//! watched file has one thread that reads its maps every
//! `--sample-interval` and deletes what exited processes left
//! ([`files`]). A target that misbehaves (exits mid-read, names itself with
//! control characters) costs its own series only; a file whose session
//! fails is dropped, logged, counted and retried later; the exporter goes
//! on.

pub mod cli;
pub mod discover;
pub mod families;
pub mod files;
pub mod labels;
pub mod metrics;
pub mod targets;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axum::{
    Router,
    http::{HeaderMap, header},
    response::IntoResponse,
    routing::get,
};

use crate::collector::{check_ring_bytes, target::FileId};

use cli::ServeArgs;
use discover::{Filter, ProbeCache};
use metrics::Exporter;
use targets::Targets;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Capability bits (`linux/capability.h`).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether the effective capabilities in a `/proc/self/status` text allow
/// loading eBPF programs and attaching uprobes.
fn may_trace(status: &str) -> bool {
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        // Unknown: let the kernel decide at attach time.
        return true;
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Runs the exporter until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Without the capabilities every attach fails and the exporter would
    // serve nothing but its own health: say so now instead.
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| may_trace(&s)) {
        return Err(crate::collector::CollectError::NotPermitted {
            what: "slabscope serve (loading eBPF programs, attaching uprobes)".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        }
        .into());
    }
    let filter = filter_of(&args)?;
    let ring = check_ring_bytes(args.ring_size).context("checking --ring-size")?;
    if args.max_series == 0 {
        bail!("--max-series 0 would export nothing: give a positive number");
    }
    let opts = Options {
        interval: args.sample_interval,
        ring_bytes: ring,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve-http")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(args, filter, opts))
}

/// The filters of the command line, with `--exe` paths resolved to files.
fn filter_of(args: &ServeArgs) -> anyhow::Result<Filter> {
    let files = args
        .exes
        .iter()
        .map(|p| {
            FileId::of(p).with_context(|| {
                format!(
                    "--exe {}: cannot read the file; check the path",
                    p.display()
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Filter {
        pids: args.pids.clone(),
        files,
        uids: args.uids.clone(),
        comms: args.comms.iter().map(|c| c.as_bytes().to_vec()).collect(),
    })
}

/// How each file's session reads.
#[derive(Clone, Copy, Debug)]
struct Options {
    /// Time between two reads of the maps.
    interval: Duration,
    /// Size of the event ring buffer.
    ring_bytes: u32,
}

async fn serve(args: ServeArgs, filter: Filter, opts: Options) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}: another program (another exporter?) may use the port, or \
                 the address is not this host's; choose another with --listen",
                args.listen
            )
        })?;
    let addr: SocketAddr = listener.local_addr().context("reading the bound address")?;
    let targets = Arc::new(Targets::default());
    let exporter = Arc::new(Exporter::new(Arc::clone(&targets), args.max_series));

    let stop = Arc::new(AtomicBool::new(false));
    let discovery = {
        let targets = Arc::clone(&targets);
        let stop = Arc::clone(&stop);
        let every = args.scan_interval;
        std::thread::Builder::new()
            .name("serve-discover".into())
            .spawn(move || discover_loop(&targets, &filter, opts, every, &stop))
            .context("starting the discovery thread")?
    };
    // Tests and scripts wait for this line.
    eprintln!("slabscope serve: listening on http://{addr}/metrics");

    let app = Router::new()
        .route(
            "/metrics",
            get({
                let exporter = Arc::clone(&exporter);
                move |headers: HeaderMap| metrics_page(Arc::clone(&exporter), headers)
            }),
        )
        .route("/", get(index_page));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP");

    stop.store(true, Ordering::Relaxed);
    let _ = discovery.join();
    targets.clear();
    eprintln!("slabscope serve: stopped");
    served
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the
/// Prometheus text format for the rest (`curl`, `promtool check metrics`).
async fn metrics_page(exporter: Arc<Exporter>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // Encoding reads in-memory state only, but can take a while with many
    // series: keep it off the reactor.
    let body = tokio::task::spawn_blocking(move || exporter.render())
        .await
        .unwrap_or_else(|e| format!("# rendering failed: {e}\n# EOF\n"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], body)
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            metrics::to_prometheus_text(&body),
        )
    }
}

async fn index_page() -> &'static str {
    "slabscope serve: the metrics are at /metrics\n"
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let ctrl_c = tokio::signal::ctrl_c();
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = ctrl_c => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Scans in a row without an exported process mapping a file before its
/// session is closed: a program restarted by its supervisor keeps its
/// session.
const LINGER_SCANS: u32 = 5;
/// How long a file whose attach failed waits before it is tried again.
const RETRY_REFUSED: Duration = Duration::from_secs(30);

/// Scans, attaches and prunes until `stop`.
fn discover_loop(
    targets: &Arc<Targets>,
    filter: &Filter,
    opts: Options,
    every: Duration,
    stop: &AtomicBool,
) {
    let own = std::process::id();
    let mut cache = ProbeCache::default();
    let mut refused_at: Vec<(FileId, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        refused_at.retain(|(id, at)| {
            let keep = at.elapsed() < RETRY_REFUSED;
            if !keep {
                targets.lock().refused.remove(id);
            }
            keep
        });
        let found = {
            // Processes that exited leave now; their caches leave their
            // file's maps at its next read.
            let mut inner = targets.lock();
            inner.procs.retain(|k, _| discover::is_alive(*k));
            let known: std::collections::HashSet<discover::ProcKey> =
                inner.procs.keys().copied().collect();
            drop(inner);
            discover::scan(filter, &mut cache, own, |k| known.contains(&k))
        };
        for cand in found {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut watched = Vec::new();
            for f in &cand.files {
                if ensure_watched(targets, f, opts) {
                    watched.push(f.id);
                } else if !refused_at.iter().any(|(id, _)| *id == f.id) {
                    refused_at.push((f.id, Instant::now()));
                }
            }
            if watched.is_empty() {
                continue;
            }
            let start_time = discover::start_time_seconds(cand.info.key.start_ticks).unwrap_or(0.0);
            targets.lock().procs.insert(
                cand.info.key,
                targets::Proc {
                    comm: cand.info.comm,
                    start_time,
                    files: watched,
                },
            );
        }
        close_unmapped(targets);
        // Sleep in slices so a stop is seen quickly.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < every {
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
    }
}

/// Makes sure `f` has a session; false when it cannot have one.
fn ensure_watched(targets: &Arc<Targets>, f: &discover::MappedProbeFile, opts: Options) -> bool {
    {
        let inner = targets.lock();
        if inner.files.contains_key(&f.id) {
            return true;
        }
        if inner.refused.contains(&f.id) {
            return false;
        }
    }
    let attached = f
        .probe_file()
        .and_then(|pf| files::watch(targets, f.id, &pf, opts.ring_bytes, opts.interval));
    let mut inner = targets.lock();
    match attached {
        Ok(watch) => {
            inner
                .files
                .insert(f.id, targets::Watched::new(f.path.clone(), Some(watch)));
            true
        }
        Err(e) => {
            inner.refused.insert(f.id);
            inner.totals.attach_failures += 1;
            drop(inner);
            use std::os::unix::ffi::OsStrExt as _;
            // The error quotes the target's file, probe and symbol names.
            eprintln!(
                "slabscope serve: not tracing {}: {}",
                crate::escape::escape_bytes(f.path.as_os_str().as_bytes()),
                crate::escape::escape(&e.to_string())
            );
            false
        }
    }
}

/// Closes the sessions of files no exported process has mapped for
/// [`LINGER_SCANS`] scans.
fn close_unmapped(targets: &Targets) {
    let closing: Vec<files::FileWatch> = {
        let mut inner = targets.lock();
        let mapped: std::collections::HashSet<FileId> = inner
            .procs
            .values()
            .flat_map(|p| p.files.iter().copied())
            .collect();
        let mut close = Vec::new();
        for (id, w) in &mut inner.files {
            if mapped.contains(id) {
                w.unmapped_scans = 0;
            } else {
                w.unmapped_scans += 1;
                if w.unmapped_scans >= LINGER_SCANS {
                    close.push(*id);
                }
            }
        }
        close
            .into_iter()
            .filter_map(|id| inner.remove_file(id))
            .collect()
    };
    drop(closing);
}

#[cfg(test)]
mod tests {
    use super::may_trace;

    #[test]
    fn capabilities_needed_to_trace() {
        let status = |eff: u64| format!("Name:\tx\nCapEff:\t{eff:016x}\n");
        assert!(may_trace(&status(0x000001ff_ffffffff)), "root");
        assert!(may_trace(&status(1 << 21)), "CAP_SYS_ADMIN");
        assert!(
            may_trace(&status((1 << 38) | (1 << 39))),
            "CAP_BPF + CAP_PERFMON"
        );
        assert!(!may_trace(&status(1 << 39)), "CAP_BPF alone");
        assert!(!may_trace(&status(0)), "nobody");
        assert!(may_trace("Name:\tx\n"), "unknown: the kernel decides");
    }
}
