//! `slabscope`: the inspector's command line. Parses the options, starts the
//! collector, and hands its updates to the terminal UI, `--once` or `--json`.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::mpsc::Receiver;

use anyhow::{Context as _, bail};
use clap::Parser;

use slabscope_inspector::app::State;
use slabscope_inspector::cli::Cli;
use slabscope_inspector::collector::{
    self, CollectError, CollectorHandle, CollectorOptions, Target,
};
use slabscope_inspector::escape::escape;
use slabscope_inspector::output;
use slabscope_inspector::sample::Update;
use slabscope_inspector::tui;

/// Exit status when the kernel or /proc refused us (sysexits' EX_NOPERM).
const EXIT_NOT_PERMITTED: u8 = 77;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote the target's file and probe names.
            eprintln!(
                "slabscope: {}",
                escape(&slabscope_inspector::report::message(&e))
            );
            match e.downcast_ref::<CollectError>() {
                Some(CollectError::NotPermitted { .. } | CollectError::RootDenied { .. }) => {
                    ExitCode::from(EXIT_NOT_PERMITTED)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Tells the user, on stderr, what the script-friendly output cannot.
fn note_ending(ending: &output::Ending) {
    for note in ending.notes() {
        eprintln!("slabscope: {}", escape(&note));
    }
}

fn label(target: &Target) -> String {
    match target {
        Target::Pid(pid) => format!("pid {pid}"),
        Target::Exe(path) => path.display().to_string(),
    }
}

/// The one place the collector is started.
fn start_collector(
    target: Target,
    opts: CollectorOptions,
) -> anyhow::Result<(Receiver<Update>, CollectorHandle)> {
    let what = label(&target);
    collector::spawn(target, opts).with_context(|| format!("attaching to {what}"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(slabscope_inspector::serve::cli::Command::Serve(args)) = cli.command {
        return slabscope_inspector::serve::run(args);
    }
    let target = match (cli.pid, cli.exe.clone()) {
        (Some(pid), _) => Target::Pid(pid),
        (None, Some(exe)) => Target::Exe(exe),
        (None, None) => return list_traceable(),
    };
    let stop_on_exit = matches!(target, Target::Pid(_));
    let what = label(&target);
    let opts = CollectorOptions {
        interval: cli.interval(),
        ring_bytes: Some(cli.ring_size),
    };
    let attached_ns = tui::monotonic_now_ns();
    let (rx, handle) = start_collector(target, opts)?;
    if cli.once || cli.json {
        // The terminal UI shows this itself; scripts (and tests) learn from
        // it that every probe is attached.
        let line = format!(
            "tracing {what}: {} probe sites in {}",
            handle.sites(),
            handle
                .files()
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The files are the ones the target maps, named as it chose.
        eprintln!("slabscope: {}", escape(&line));
    }
    let result = if cli.once {
        let (sample, ending) = output::wait_for_caches_ending(&rx, cli.timeout)
            .with_context(|| format!("reading the caches of {what}"))?;
        note_ending(&ending);
        write_out(output::once_text_sorted(&sample, cli.sort))
    } else if cli.json && cli.interval.is_none() {
        let (sample, ending) = output::wait_for_caches_ending(&rx, cli.timeout)
            .with_context(|| format!("reading the caches of {what}"))?;
        note_ending(&ending);
        write_out(output::json_pretty_sorted(&sample, cli.sort) + "\n")
    } else if cli.json {
        match output::json_lines_sorted(&rx, io::stdout().lock(), stop_on_exit, cli.sort) {
            Err(output::OutputError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r
                .map(|(_, ending)| note_ending(&ending))
                .with_context(|| format!("following the caches of {what}")),
        }
    } else {
        let mut state = State::new(what).with_history(cli.history);
        state.sort_by(cli.live_sort());
        // Event times count from about when the collector attached.
        state.time_origin_ns = attached_ns;
        tui::run(rx, state, cli.interval())
    };
    handle.stop();
    result
}

/// Prints `text` to stdout; a closed pipe (`| head`) is not an error.
fn write_out(text: String) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// `slabscope` without a target: what could be traced, and how.
fn list_traceable() -> anyhow::Result<()> {
    let procs =
        collector::list_traceable().context("listing the processes that carry slabscope probes")?;
    if procs.is_empty() {
        bail!(
            "no running process carries slabscope probes. Start a program that uses the \
             slabscope allocator (built with its default `probes` feature), then run \
             `sudo slabscope --pid PID`, or `sudo slabscope --exe PATH` to catch it when it starts"
        );
    }
    let mut out = String::from("Processes carrying slabscope probes:\n\n    PID  PROBES IN\n");
    for (pid, file) in &procs {
        out.push_str(&format!(
            "{pid:>7}  {}\n",
            escape(&file.display().to_string())
        ));
    }
    out.push_str(&format!(
        "\nAttach with: sudo slabscope --pid {}    (--once or --json for one-shot output; --help for more)\n",
        procs[0].0
    ));
    write_out(out)
}
