//! The slabscope inspector: a collector that reads slabscope's USDT probes out
//! of a running process through eBPF, and the views that show what it read.
//!
//! Data flows one way: [`collector`] attaches and produces [`sample::Update`]s
//! on a channel; the views consume them.

pub mod collector;
pub mod sample;
