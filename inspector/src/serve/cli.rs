//! `slabscope serve`'s command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::parse_interval;

/// Default address: loopback only (the metrics name every user's processes).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

const EXAMPLES: &str = "\
Examples:
  sudo slabscope serve                        every slabscope process, on 127.0.0.1:9464
  sudo slabscope serve --uid 1000             only processes of uid 1000
  sudo slabscope serve --comm demo --listen 0.0.0.0:9464
  curl -s http://127.0.0.1:9464/metrics

The metrics carry the process and cache names of every traced process:
listen on loopback (the default) or restrict with --uid/--comm/--exe/--pid
before exposing them to other hosts.";

/// Subcommands of `slabscope`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export every process on this host that carries slabscope probes, in
    /// the OpenMetrics text format, for Prometheus and its kin.
    #[command(after_help = EXAMPLES)]
    Serve(ServeArgs),
}

/// Options of `slabscope serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve /metrics on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only processes that map this file, as executable or shared object
    /// (repeatable).
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<PathBuf>,

    /// Only processes whose real user id is this (repeatable; numeric).
    #[arg(long = "uid", value_name = "UID")]
    pub uids: Vec<u32>,

    /// Only processes whose command name (`/proc/PID/comm`) is exactly this
    /// (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// How often /proc is scanned for new processes.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub scan_interval: Duration,

    /// How often each target's eBPF maps are read.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub sample_interval: Duration,

    /// Most per-cache series one scrape carries; the rest are left out and
    /// counted in slabscope_exporter_dropped_series_total.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_series: usize,

    /// Size of each target's eBPF event ring buffer, in bytes (a power of
    /// two of at least the page size). The exporter reads counts, not
    /// events, so a small ring costs nothing in accuracy.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub ring_size: u32,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["slabscope", "serve"].iter().chain(args))?;
        match cli.command {
            Some(Command::Serve(a)) => Ok(a),
            None => panic!("`serve` parsed as no subcommand"),
        }
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(a.listen.ip().is_loopback());
        assert!(a.pids.is_empty() && a.exes.is_empty() && a.uids.is_empty());
        assert_eq!(a.scan_interval, Duration::from_secs(1));
    }

    #[test]
    fn filters_repeat() {
        let a = serve(&[
            "--pid",
            "1",
            "--pid",
            "2",
            "--uid",
            "1000",
            "--comm",
            "demo",
            "--exe",
            "/bin/x",
            "--listen",
            "[::1]:9999",
            "--scan-interval",
            "250ms",
        ])
        .unwrap();
        assert_eq!(a.pids, vec![1, 2]);
        assert_eq!(a.uids, vec![1000]);
        assert_eq!(a.comms, vec!["demo".to_owned()]);
        assert_eq!(a.exes, vec![PathBuf::from("/bin/x")]);
        assert_eq!(a.listen.port(), 9999);
        assert_eq!(a.scan_interval, Duration::from_millis(250));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(serve(&["--listen", "localhost"]).is_err(), "no port");
        assert!(serve(&["--uid", "root"]).is_err(), "numeric uids only");
        assert!(serve(&["--scan-interval", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["slabscope", "--pid", "1", "serve"]).is_err(),
            "inspector options do not mix with serve"
        );
    }
}
