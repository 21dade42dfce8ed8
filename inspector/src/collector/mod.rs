//! PLACEHOLDER for the collector, which is being written on another branch.
//!
//! This file only declares the collector's public signatures (the contract the
//! views are written against) so the inspector builds; every function returns
//! [`CollectError::NotBuilt`]. It carries no data path. The real module
//! replaces this file when the branches are merged.

use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::sample::Update;

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A running process.
    Pid(u32),
    /// Every process running this executable, now or later.
    Exe(PathBuf),
}

/// How to collect.
#[derive(Clone, Debug)]
pub struct CollectorOptions {
    /// How often to sample the maps.
    pub interval: Duration,
    /// Size of the event ring buffer; 1 MiB when `None`.
    pub ring_bytes: Option<u32>,
}

/// A running collector; detaches when stopped or dropped.
#[derive(Debug)]
pub struct CollectorHandle {
    _private: (),
}

impl CollectorHandle {
    /// Detaches from the target.
    pub fn stop(self) {}
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// This build carries the placeholder, not the collector.
    #[error("collector not built: this slabscope was built without its eBPF collector")]
    NotBuilt,
}

/// Attaches to `target` and starts sending [`Update`]s.
pub fn spawn(
    _target: Target,
    _opts: CollectorOptions,
) -> Result<(Receiver<Update>, CollectorHandle), CollectError> {
    Err(CollectError::NotBuilt)
}

/// Running processes that carry slabscope probes, with the file the probes are in.
pub fn list_traceable() -> Result<Vec<(u32, PathBuf)>, CollectError> {
    Err(CollectError::NotBuilt)
}
