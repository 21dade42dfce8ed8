//! Loading the eBPF object and attaching it at every probe site.
//!
//! The object built from `ebpf/` by `build.rs` is embedded in the binary. Before
//! loading, the loader sizes two maps: `EVENTS` to the requested ring size and
//! `USDT_SPECS` to the number of sites. Then, for each site of each traced file,
//! site number `i` gets its parsed [`UsdtSpec`] at `USDT_SPECS[i]`, and the
//! program of the site's probe kind is attached at the site's file offset with
//! cookie `i` — libbpf's USDT scheme, which lets one program serve every site
//! whatever registers the compiler picked for its arguments.
//!
//! Dropping a [`Session`] drops the [`Ebpf`] object, which detaches every
//! uprobe and unloads the programs and maps.

use std::{fmt, num::NonZeroU32, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use slabscope_probes::{CacheCounters, CacheKey, CacheSnapshot, PROBES, ProbeKind, UsdtSpec};

use super::{
    argspec,
    error::{CollectError, denied, errno_in, is_permission},
    target::ProbeFile,
};

/// Where the kernel lists the uprobe PMU that aya attaches through.
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";

#[cfg(not(slabscope_no_ebpf))]
static EBPF_OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/slabscope"
)));
#[cfg(slabscope_no_ebpf)]
static EBPF_OBJECT: Option<&[u8]> = None;

/// Whom the uprobes fire for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One process (`--pid`).
    Process(NonZeroU32),
    /// Every process running the file (`--exe`).
    AllProcesses,
}

/// One probe site ready to attach.
#[derive(Clone, Debug)]
pub struct PlannedSite<'a> {
    pub file: &'a ProbeFile,
    pub kind: ProbeKind,
    pub file_offset: u64,
    pub spec: UsdtSpec,
}

/// Decodes every site of `files` whose probe this collector knows. Sites of
/// probes added by a newer slabscope are skipped; a known probe with another
/// argument count is an error.
pub fn plan(files: &[ProbeFile]) -> Result<Vec<PlannedSite<'_>>, CollectError> {
    let mut out = Vec::new();
    for file in files {
        for site in &file.sites {
            let Some(def) = PROBES.iter().find(|p| p.name == site.name) else {
                continue;
            };
            let spec = argspec::parse_args(&site.args).map_err(|source| CollectError::ArgSpec {
                path: file.path.clone(),
                probe: site.name.clone(),
                offset: site.file_offset,
                source,
            })?;
            if usize::from(spec.arg_cnt) != def.args.len() {
                return Err(CollectError::ArgCount {
                    path: file.path.clone(),
                    probe: site.name.clone(),
                    found: spec.arg_cnt.into(),
                    expected: def.args.len(),
                });
            }
            out.push(PlannedSite {
                file,
                kind: def.kind,
                file_offset: site.file_offset,
                spec,
            });
        }
    }
    if out.is_empty() {
        return Err(CollectError::NoProbes {
            searched: files.iter().map(|f| f.path.clone()).collect(),
        });
    }
    Ok(out)
}

/// Name of the eBPF program for `kind` (see `ebpf/src/main.rs`).
pub fn program_name(kind: ProbeKind) -> String {
    format!("slabscope_{}", kind.name())
}

/// Checks a ring size: the kernel wants a power of two multiple of the page.
pub fn check_ring_bytes(bytes: u32) -> Result<u32, CollectError> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if bytes < page || !bytes.is_power_of_two() {
        return Err(CollectError::BadOption(format!(
            "ring buffer size {bytes} must be a power of two of at least the page size \
             ({page} bytes), e.g. {}",
            bytes
                .max(page)
                .checked_next_power_of_two()
                .unwrap_or(1 << 30)
        )));
    }
    Ok(bytes)
}

/// The loaded programs and the maps the collector reads.
pub struct Session {
    /// Owns the programs and their links; dropping it detaches everything.
    ebpf: Ebpf,
    /// The ring buffer of probe hits (`EVENTS`).
    pub ring: RingBuf<MapData>,
    /// Each cache's last snapshot, as its last probe hit carried it.
    pub snapshots: HashMap<MapData, CacheKey, CacheSnapshot>,
    /// Each cache's probe hit counters.
    pub counters: HashMap<MapData, CacheKey, CacheCounters>,
    /// Caches that fired `cache_destroy`, with the time of it
    /// (`bpf_ktime_get_ns`).
    pub destroyed: HashMap<MapData, CacheKey, u64>,
    /// Per CPU, the probe hits that found the ring buffer full.
    pub lost: PerCpuArray<MapData, u64>,
    /// Uprobes attached.
    pub sites: usize,
}

impl Session {
    /// Takes one more map out of the loaded object (`slabscope serve` reads
    /// the histogram maps this way); `None` if the name is unknown or the
    /// map was taken already.
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("programs", &self.ebpf.programs().count())
            .field("sites", &self.sites)
            .finish_non_exhaustive()
    }
}

fn permission_or<E>(what: &str, err: E, other: impl FnOnce(E) -> CollectError) -> CollectError
where
    E: std::error::Error + 'static,
{
    let errno = errno_in(&err);
    if is_permission(errno) {
        denied(
            what.to_owned(),
            std::io::Error::from_raw_os_error(errno.unwrap_or(libc::EPERM)),
        )
    } else if errno == Some(libc::ENOENT) && !Path::new(UPROBE_PMU).exists() {
        CollectError::NoUprobeSupport
    } else {
        other(err)
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CollectError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| CollectError::Map {
        map: name,
        source: Box::new(aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        }),
    })?;
    T::try_from(map).map_err(|e| CollectError::Map {
        map: name,
        source: Box::new(e),
    })
}

/// Loads the eBPF object and attaches it at every planned site. `what` says
/// what is being traced, for messages ("tracing pid 4242").
pub fn attach(
    sites: &[PlannedSite<'_>],
    scope: Scope,
    ring_bytes: u32,
    what: &str,
) -> Result<Session, CollectError> {
    let object = EBPF_OBJECT.ok_or(CollectError::NotBuilt)?;
    if !Path::new(UPROBE_PMU).exists() {
        return Err(CollectError::NoUprobeSupport);
    }
    let ring_bytes = check_ring_bytes(ring_bytes)?;
    let n_sites = u32::try_from(sites.len())
        .map_err(|_| CollectError::BadOption(format!("{} probe sites is too many", sites.len())))?;

    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_bytes)
        .map_max_entries("USDT_SPECS", n_sites.max(1))
        .load(object)
        .map_err(|e| {
            permission_or(what, e, |e| CollectError::Load {
                source: Box::new(e),
            })
        })?;

    {
        let mut specs: Array<&mut MapData, UsdtSpec> = ebpf
            .map_mut("USDT_SPECS")
            .ok_or(CollectError::Map {
                map: "USDT_SPECS",
                source: Box::new(aya::maps::MapError::InvalidName {
                    name: "USDT_SPECS".into(),
                }),
            })?
            .try_into()
            .map_err(|e| CollectError::Map {
                map: "USDT_SPECS",
                source: Box::new(e),
            })?;
        for (i, site) in sites.iter().enumerate() {
            specs
                .set(i as u32, site.spec, 0)
                .map_err(|e| CollectError::Map {
                    map: "USDT_SPECS",
                    source: Box::new(e),
                })?;
        }
    }

    let perf_scope = match scope {
        Scope::Process(pid) => UProbeScope::OneProcess(pid),
        Scope::AllProcesses => UProbeScope::AllProcesses,
    };
    for kind in ProbeKind::ALL {
        let name = program_name(kind);
        let prog: &mut UProbe = ebpf
            .program_mut(&name)
            .ok_or_else(|| CollectError::Attach {
                what: format!("finding eBPF program {name}"),
                source: Box::new(aya::programs::ProgramError::NotLoaded),
            })?
            .try_into()
            .map_err(|e| CollectError::Attach {
                what: format!("eBPF program {name}"),
                source: Box::new(e),
            })?;
        prog.load().map_err(|e| {
            permission_or(what, e, |e| CollectError::Attach {
                what: format!("loading eBPF program {name}"),
                source: Box::new(e),
            })
        })?;
        for (i, site) in sites.iter().enumerate().filter(|(_, s)| s.kind == kind) {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(site.file_offset),
                cookie: Some(i as u64),
            };
            prog.attach(point, &site.file.attach_path, perf_scope)
                .map_err(|e| {
                    permission_or(what, e, |e| CollectError::Attach {
                        what: format!(
                            "attaching slabscope:{} at {}+{:#x}",
                            kind.name(),
                            site.file.path.display(),
                            site.file_offset
                        ),
                        source: Box::new(e),
                    })
                })?;
        }
    }

    Ok(Session {
        ring: take_map(&mut ebpf, "EVENTS")?,
        snapshots: take_map(&mut ebpf, "SNAPSHOTS")?,
        counters: take_map(&mut ebpf, "COUNTERS")?,
        destroyed: take_map(&mut ebpf, "DESTROYED")?,
        lost: take_map(&mut ebpf, "LOST")?,
        sites: sites.len(),
        ebpf,
    })
}
