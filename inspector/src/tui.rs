//! The run loop of the terminal UI: owns the terminal, applies the collector's
//! updates and the user's keys to [`State`], redraws every interval and after
//! every key.
//!
//! The terminal is restored on every way out: a normal quit (`q`, Ctrl-C,
//! which raw mode delivers as a key), SIGTERM/SIGHUP/SIGINT (a flag the loop
//! polls), an error (a guard's `Drop`) and a panic (ratatui's panic hook,
//! installed by [`ratatui::try_init`], restores before the message prints).
//! The target exiting is not a way out: its caches stay on screen, marked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossterm::event::{self, Event};
use ratatui::DefaultTerminal;

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

/// Runs the UI until the user quits or a termination signal arrives.
pub fn run(rx: Receiver<Update>, state: State, interval: Duration) -> anyhow::Result<()> {
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
    event_loop(&mut terminal, &rx, state, interval, &stop)
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    rx: &Receiver<Update>,
    mut state: State,
    interval: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
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
                .draw(|f| f.render_widget(Screen(&state), f.area()))
                .context("drawing the screen")?;
            dirty = false;
        }
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(POLL);
        if event::poll(wait).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(k) => {
                    if state.handle_key(k) == Action::Quit {
                        break;
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
    Ok(())
}
