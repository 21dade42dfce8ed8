//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};

use crate::columns::Column;

const EXAMPLES: &str = "\
Examples:
  sudo slabscope                      list the processes carrying slabscope probes
  sudo slabscope --pid 4242           live view of process 4242's caches
  sudo slabscope --exe ./target/release/examples/demo
                                      every process running that program, now or later
                                      (the demo workload `cargo xtask demo` builds)
  sudo slabscope --pid 4242 --once    print its caches as /proc/spl/kmem/slab does
  sudo slabscope --pid 4242 -o -s a   the same (-o as slabtop's), by objects allocated
  sudo slabscope --pid 4242 --json    one JSON document (its fields: docs/JSON.md)
  sudo slabscope --pid 4242 --json -d 1
                                      one JSON line per second
  sudo slabscope --pid 4242 -s a      start sorted by objects allocated

Caches appear when they fire a probe. Every cache fires cache_stats each
SLABSCOPE_STATS_INTERVAL_MS milliseconds (an environment variable of the traced
program; default 1000, 0 turns it off), so idle caches show up within that time.
Attaching needs CAP_BPF and CAP_PERFMON: run slabscope with sudo.

Exit status: 0 when done (also when the target exits while traced: the output
shows its last state and stderr says so); 77 when not permitted (run with
sudo); 2 for a bad command line; 1 for any other failure (the message says
what happened and what to do). The live view also exits 0 on q, Ctrl-C, SIGINT
and SIGTERM, after restoring the terminal; --once and --json do not
catch signals, so a signal ends them as it ends any program (the shell shows
128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM).";

/// Live view of the slab caches of a program using slabscope, read through its
/// USDT probes with eBPF: a slabtop for slabscope.
#[derive(Debug, Parser)]
#[command(name = "slabscope", version, after_help = EXAMPLES)]
#[command(group(ArgGroup::new("target").args(["pid", "exe"])))]
#[command(group(ArgGroup::new("mode").args(["once", "json"])))]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// `slabscope serve` (see src/serve/); none for the inspector itself.
    #[command(subcommand)]
    pub command: Option<crate::serve::cli::Command>,

    /// Trace this process.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Trace every process running this executable, now and later, with the
    /// probes in it and in the shared objects it loads (libslabscope.so).
    #[arg(short, long, value_name = "PATH")]
    pub exe: Option<PathBuf>,

    /// Refresh interval, in seconds (`0.5`) or with a unit (`500ms`, `2s`).
    /// With --json: print one JSON line per interval.
    #[arg(short = 'd', long = "interval", value_name = "SECS", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Print the caches once, in /proc/spl/kmem/slab format, and exit.
    #[arg(short = 'o', long, requires = "target")]
    pub once: bool,

    /// Print the caches as JSON and exit (with --interval: JSON lines until the
    /// target exits). docs/JSON.md (installed as share/doc/slabscope/JSON.md)
    /// documents every field and its unit.
    #[arg(long, requires = "target")]
    pub json: bool,

    /// Sort column: a column id or its sort key letter (name n, size c,
    /// obj-alloc a, obj-total o, slab-total l, dlock d, ...), numbers largest
    /// first. Without it the live view starts by obj-total, and --once and
    /// --json print by name.
    #[arg(short, long, value_name = "COLUMN")]
    pub sort: Option<Column>,

    /// How long --once and --json wait for the caches to be reported.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_interval)]
    pub timeout: Duration,

    /// Size of the kernel's event ring buffer, in bytes: a power of two of at
    /// least the page size. Events that find it full are counted as lost
    /// (the counts and snapshots stay exact).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::collector::DEFAULT_RING_BYTES,
        value_parser = parse_ring_size
    )]
    pub ring_size: u32,

    /// Samples of history kept per cache for the detail view's charts.
    #[arg(long, value_name = "N", default_value_t = crate::app::DEFAULT_HISTORY)]
    pub history: usize,
}

/// Refresh interval when `-d` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Parses `0.5`, `2`, `500ms` or `2s` into a positive duration.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use seconds (0.5) or 500ms"))?;
    let secs = v * scale;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("`{s}` is out of range: use 10ms to 1 hour"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `--ring-size`: a number of bytes the kernel accepts for a ring
/// buffer, checked here so a bad value is a command-line error (exit status
/// 2) before anything is attached.
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let bytes: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes: use e.g. 262144"))?;
    crate::collector::check_ring_bytes(bytes).map_err(|e| match e {
        crate::collector::CollectError::BadOption(why) => why,
        other => other.to_string(),
    })
}

/// The live view's sort column when `-s` is not given.
pub const DEFAULT_SORT: Column = Column::ObjTotal;

impl Cli {
    /// The column the live view starts sorted by, given or default.
    pub fn live_sort(&self) -> Column {
        self.sort.unwrap_or(DEFAULT_SORT)
    }

    /// The refresh interval, given or default.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("slabscope").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.pid, c.exe.as_ref(), c.once, c.json),
            (None, None, false, false)
        );
        assert_eq!((c.sort, c.live_sort()), (None, Column::ObjTotal));
        assert_eq!(c.interval(), DEFAULT_INTERVAL);
        assert_eq!(c.ring_size, crate::collector::DEFAULT_RING_BYTES);
        assert_eq!(parse(&["--ring-size", "4096"]).unwrap().ring_size, 4096);
    }

    #[test]
    fn options() {
        let c = parse(&["--pid", "42", "-d", "500ms", "-s", "a", "--once"]).unwrap();
        assert_eq!(c.pid, Some(42));
        assert_eq!(c.interval, Some(Duration::from_millis(500)));
        assert_eq!(c.sort, Some(Column::ObjAlloc));
        assert_eq!(c.live_sort(), Column::ObjAlloc);
        assert!(c.once);
        let c = parse(&["-p", "42", "-o"]).unwrap();
        assert!(c.once, "-o is --once, as slabtop has it");
        assert!(parse(&["-o"]).is_err(), "-o needs a target, as --once does");
        let c = parse(&["--exe", "/bin/demo", "--json", "-d", "2", "--sort", "name"]).unwrap();
        assert_eq!(c.exe, Some(PathBuf::from("/bin/demo")));
        assert_eq!(c.interval(), Duration::from_secs(2));
        assert_eq!(c.sort, Some(Column::Name));
    }

    #[test]
    fn rejects_conflicts_and_nonsense() {
        assert!(parse(&["--pid", "1", "--exe", "/bin/x"]).is_err());
        assert!(parse(&["--pid", "1", "--once", "--json"]).is_err());
        assert!(parse(&["--once"]).is_err(), "--once needs a target");
        assert!(parse(&["--pid", "1", "-s", "bogus"]).is_err());
        assert!(parse(&["--pid", "1", "-d", "0"]).is_err());
        assert!(parse(&["--pid", "1", "-d", "fast"]).is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("-1").is_err());
    }

    #[test]
    fn help_has_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("sudo slabscope --pid 4242 --once"), "{help}");
        assert!(help.contains("SLABSCOPE_STATS_INTERVAL_MS"), "{help}");
        assert!(help.contains("77 when not permitted"), "{help}");
        assert!(help.contains("143 for SIGTERM"), "{help}");
        // Example paths are ones this repository builds.
        assert!(
            help.contains("--exe ./target/release/examples/demo"),
            "{help}"
        );
        let demo =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../allocator/examples/demo.rs");
        assert!(
            demo.is_file(),
            "the help's demo example moved: {}",
            demo.display()
        );
    }

    #[test]
    fn a_bad_ring_size_is_a_command_line_error() {
        let e = parse(&["--pid", "1", "--ring-size", "100"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let text = e.to_string();
        assert!(text.contains("must be a power of two"), "{text}");
        assert!(!text.contains("invalid collector option"), "{text}");
        let e = parse(&["--pid", "1", "--ring-size", "lots"]).unwrap_err();
        assert!(e.to_string().contains("not a number of bytes"), "{e}");
        let ok = parse(&["--pid", "1", "--ring-size", "65536"]).unwrap();
        assert_eq!(ok.ring_size, 65536);
        assert_eq!(
            parse(&["--pid", "1"]).unwrap().ring_size,
            crate::collector::DEFAULT_RING_BYTES
        );
    }
}
