//! The run loop of the terminal UI: owns the terminal, applies the collector's
//! updates and the user's keys to [`State`], redraws every interval and after
//! every key.
//!
//! The terminal is restored on every way out: a normal quit (`q`, Ctrl-C,
//! which raw mode delivers as a key), SIGTERM/SIGHUP/SIGINT (a flag the loop
//! polls), an error (a guard's `Drop`) and a panic (ratatui's panic hook,
//! installed by [`ratatui::try_init`], restores before the message prints).
//! A terminal that goes away (window or tmux pane closed) ends the loop too.
//! The target exiting is not a way out: its caches stay on screen, marked.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossterm::event::{self, Event};
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::app::State;
use crate::keys::Action;
use crate::sample::Update;
use crate::ui::Screen;

/// Most updates applied between two looks at the keyboard, so a flood of
/// events cannot freeze the keys.
const DRAIN_BATCH: usize = 20_000;
/// Longest wait for a key before looking at the channel again.
const POLL: Duration = Duration::from_millis(50);

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the UI until the user quits, a termination signal arrives or the
/// terminal goes away.
pub fn run(rx: Receiver<Update>, mut state: State, interval: Duration) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .with_context(|| format!("installing the handler of signal {sig}"))?;
    }
    let mut terminal = ratatui::try_init().context(
        "setting up the terminal (is stdout a terminal? use --once or --json otherwise)",
    )?;
    let _restore = Restore;
    let done = Arc::new(AtomicBool::new(false));
    watchdog(Arc::clone(&stop), Arc::clone(&done));
    let result = event_loop(&mut terminal, &rx, &mut state, interval, &stop, read_input);
    done.store(true, Ordering::Relaxed);
    result
}

/// The next terminal event, waiting up to `wait`.
///
/// crossterm is asked only once the tty has input: on a tty that hung up its
/// reader spins forever (read returns EOF or EIO, which it retries), so the
/// hang-up is looked for first, with `poll(2)`.
fn read_input(wait: Duration) -> io::Result<Option<Event>> {
    // Events crossterm already parsed and queued.
    if event::poll(Duration::ZERO)? {
        return event::read().map(Some);
    }
    match wait_tty(wait) {
        TtyState::HungUp => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the terminal hung up",
        )),
        TtyState::Input if event::poll(Duration::ZERO)? => event::read().map(Some),
        _ => Ok(None),
    }
}

/// Ends the process if the loop does not stop within [`STOP_GRACE`] of a
/// stop request (a signal, or the terminal hanging up), whatever it is stuck
/// in; restores the terminal first.
fn watchdog(stop: Arc<AtomicBool>, done: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("slabscope-watchdog".into())
        .spawn(move || {
            let mut stopping_since: Option<Instant> = None;
            while !done.load(Ordering::Relaxed) {
                if matches!(wait_tty(Duration::ZERO), TtyState::HungUp) {
                    stop.store(true, Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > STOP_GRACE {
                        ratatui::restore();
                        eprintln!("slabscope: the display did not stop in time; exiting");
                        std::process::exit(1);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    // Without the watchdog the UI still works; only a stuck loop goes unguarded.
    drop(spawned);
}

/// How long the loop may take to stop before the watchdog ends the process.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The loop proper, over any backend and any source of terminal events:
/// `input(wait)` returns the next event, or `None` after waiting up to `wait`.
pub fn event_loop<B>(
    terminal: &mut Terminal<B>,
    rx: &Receiver<Update>,
    state: &mut State,
    interval: Duration,
    stop: &AtomicBool,
    mut input: impl FnMut(Duration) -> io::Result<Option<Event>>,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
{
    let mut next_tick = Instant::now();
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..DRAIN_BATCH {
            match rx.try_recv() {
                Ok(u) => state.apply(u),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if !state.collector_gone {
                        state.disconnected();
                        dirty = true;
                    }
                    break;
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            dirty = true;
            next_tick = now + interval;
        }
        if dirty {
            terminal
                .draw(|f| f.render_widget(Screen(state), f.area()))
                .context("drawing the screen")?;
            dirty = false;
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(POLL);
        match input(wait).context("reading the terminal")? {
            Some(Event::Key(k)) => {
                if state.handle_key(k) == Action::Quit {
                    break;
                }
                dirty = true;
            }
            Some(Event::Resize(..)) => dirty = true,
            _ => {}
        }
    }
    Ok(())
}

/// What `poll(2)` says of the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TtyState {
    Input,
    Quiet,
    /// The window or tmux pane was closed. Nothing else tells: no SIGHUP
    /// reaches a process that is not the session leader, and ratatui writes
    /// nothing while the screen does not change.
    HungUp,
}

/// Waits up to `wait` for input on the terminal (stdin when it is one, else
/// stdout, the terminal drawn on).
fn wait_tty(wait: Duration) -> TtyState {
    // SAFETY: isatty only inspects the descriptor.
    let fd = if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        libc::STDIN_FILENO
    } else {
        libc::STDOUT_FILENO
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid, writable pollfd and the count is 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n <= 0 {
        TtyState::Quiet
    } else if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        TtyState::HungUp
    } else if pfd.revents & libc::POLLIN != 0 {
        TtyState::Input
    } else {
        TtyState::Quiet
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the probes' event times
/// (`bpf_ktime_get_ns`), so event times can be shown relative to attach.
pub fn monotonic_now_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call,
    // and CLOCK_MONOTONIC is a clock every Linux kernel has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;
    use std::collections::VecDeque;
    use std::sync::mpsc;

    fn key(c: char) -> Option<Event> {
        Some(Event::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )))
    }

    fn terminal() -> Terminal<TestBackend> {
        Terminal::new(TestBackend::new(120, 30)).expect("test backend")
    }

    #[test]
    fn applies_updates_and_keys_until_q() {
        let (tx, rx) = mpsc::channel();
        for i in 0..3 {
            tx.send(Update::Sample(testdata::sample(
                1000 * i,
                0,
                testdata::caches(i),
            )))
            .unwrap();
        }
        let mut script: VecDeque<Option<Event>> =
            [None, key('n'), key('j'), key('q'), key('x')].into();
        let mut term = terminal();
        let mut st = State::new("pid 4242");
        let stop = AtomicBool::new(false);
        event_loop(
            &mut term,
            &rx,
            &mut st,
            Duration::from_mins(1),
            &stop,
            |_| {
                Ok(script
                    .pop_front()
                    .expect("the loop asked for a key after q"))
            },
        )
        .expect("loop");
        assert_eq!(script.len(), 1, "the loop stops at q");
        assert_eq!(st.samples, 3);
        assert_eq!(st.selected_entry().unwrap().stats.name, "dnode_t");
        let shown = term.backend().to_string();
        assert!(
            shown.contains("▶dnode_t"),
            "the last key is drawn:\n{shown}"
        );
        assert!(!st.collector_gone);
        drop(tx);
    }

    #[test]
    fn a_signal_stops_it_and_a_hang_up_is_shown() {
        let (tx, rx) = mpsc::channel::<Update>();
        drop(tx);
        let stop = AtomicBool::new(false);
        let mut calls = 0;
        let mut st = State::new("pid 1");
        let mut term = terminal();
        event_loop(
            &mut term,
            &rx,
            &mut st,
            Duration::from_millis(10),
            &stop,
            |_| {
                calls += 1;
                if calls == 3 {
                    // What the SIGTERM handler does.
                    stop.store(true, Ordering::Relaxed);
                }
                Ok(None)
            },
        )
        .expect("loop");
        assert_eq!(calls, 3);
        assert!(st.collector_gone);
        assert!(term.backend().to_string().contains("collector stopped"));
    }

    #[test]
    fn input_errors_end_the_loop_with_context() {
        let (_tx, rx) = mpsc::channel::<Update>();
        let stop = AtomicBool::new(false);
        let mut st = State::new("pid 1");
        let err = event_loop(
            &mut terminal(),
            &rx,
            &mut st,
            Duration::from_secs(1),
            &stop,
            |_| Err(io::Error::other("tty gone")),
        )
        .unwrap_err();
        assert_eq!(format!("{err:#}"), "reading the terminal: tty gone");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_now_ns().expect("CLOCK_MONOTONIC");
        let b = monotonic_now_ns().expect("CLOCK_MONOTONIC");
        assert!(b >= a && a > 0);
    }
}
