//! The slabscope inspector: a collector that reads slabscope's USDT probes out
//! of a running process through eBPF, and the views that show what it read.
//!
//! Data flows one way: [`collector`] attaches and produces [`sample::Update`]s
//! on a channel; [`app::State`] absorbs them; the views render the state:
//! the terminal UI ([`ui`], driven by [`tui::run`]) and the script-friendly
//! `--once` / `--json` output ([`output`]).

pub mod app;
pub mod cli;
pub mod collector;
pub mod columns;
pub mod escape;
pub mod format;
pub mod histogram;
pub mod keys;
pub mod manual;
pub mod order;
pub mod output;
pub mod report;
pub mod sample;
pub mod serve;
pub mod tui;
pub mod ui;

#[cfg(test)]
mod testdata;
