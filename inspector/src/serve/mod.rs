//! `slabscope serve`: every slabscope process on the host, exported in the
//! OpenMetrics text format for Prometheus and the scrapers that speak it.
//!
//! ```text
//!  /proc scan ──► new process with probes ──► collector (uprobes on that pid)
//!  (discover)        (pid, start time)              │ Update::Sample
//!                                                   ▼
//!  GET /metrics ◄── Exporter (metrics) ◄──── Targets: last sample per process
//! ```
//!
//! Three kinds of threads: the tokio runtime serves HTTP (axum); one
//! discovery thread scans `/proc` every `--scan-interval`, attaches to new
//! processes and drops gone ones; and each target has its collector's
//! thread plus one that keeps its last sample ([`targets`]). A target that
//! misbehaves (exits mid-attach, fails a map read, names itself with control
//! characters) costs its own series only; the exporter goes on.

pub mod cli;
pub mod discover;
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

use crate::collector::{CollectorOptions, check_ring_bytes, target::FileId};

use cli::ServeArgs;
use discover::{Filter, ProbeCache};
use metrics::Exporter;
use targets::Targets;

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Runs the exporter until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = filter_of(&args)?;
    let ring = check_ring_bytes(args.ring_size).context("checking --ring-size")?;
    if args.max_series == 0 {
        bail!("--max-series 0 would export nothing: give a positive number");
    }
    let opts = targets::collector_options(args.sample_interval, ring);
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

async fn serve(args: ServeArgs, filter: Filter, opts: CollectorOptions) -> anyhow::Result<()> {
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

/// Scans, attaches and prunes until `stop`.
fn discover_loop(
    targets: &Arc<Targets>,
    filter: &Filter,
    opts: CollectorOptions,
    every: Duration,
    stop: &AtomicBool,
) {
    let own = std::process::id();
    let mut cache = ProbeCache::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        targets.prune();
        let found = discover::scan(filter, &mut cache, own, |k| targets.knows(k));
        for cand in found {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            targets::attach(targets, cand, opts);
        }
        // Sleep in slices so a stop is seen quickly.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < every {
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
    }
}
