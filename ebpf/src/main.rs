//! eBPF programs on slabscope's USDT probes.
//!
//! One uprobe program per [`ProbeKind`] (`slabscope_<probe name>`). The
//! collector attaches the program of a kind at every site of that probe in the
//! traced files, at the site's file offset, with the site's index in
//! [`USDT_SPECS`] as the attach cookie. This is libbpf's USDT design
//! (`usdt.bpf.h`): the argument locations parsed out of `.note.stapsdt` live in
//! an array map filled by userspace, and [`usdt_arg`] reads argument `n` from
//! `struct pt_regs` (by register offset), from an immediate, or from user memory
//! at `disp(%base)` / `disp(%base,%index,scale)`.
//!
//! Every probe has the shape fixed by `slabscope-probes`: `arg0` cache id,
//! `arg1` name pointer, then [`ProbeDef::values`] scalars, then a pointer to a
//! [`CacheSnapshot`]. On every hit the program
//!
//! 1. copies the probe's registers out of the context once and decodes the
//!    arguments from that copy (no helper call per argument);
//! 2. copies the snapshot from user memory into [`SNAPSHOTS`] under
//!    (pid, cache id): in place into the cache's entry once it has one
//!    ([`store_snapshot`] says how concurrent copies are kept apart), else
//!    through a per-CPU scratch slot (it is larger than the 512-byte BPF
//!    stack allows) and a map update; a snapshot pointer that cannot be
//!    read ends the hit there, counted in [`LOST`] (`LOST_SNAPSHOTS`);
//! 3. bumps the transition counters of the kind in [`COUNTERS`] with atomic
//!    adds (grow workers hit the same cache from several CPUs at once);
//! 4. marks the cache in [`DESTROYED`] on `cache_destroy`; on `cache_create`
//!    unmarks it and restarts its counters from zero, because a new cache may
//!    reuse a destroyed cache's address (its id) and must not inherit the old
//!    cache's counts;
//! 5. times grows (`grow_start` → `grow_done`), DEADLOCKED spells
//!    (`deadlock` → the next successful `grow_done`) and emergency objects
//!    (`emergency_alloc` → `emergency_free` of the same address) with the
//!    hit's kernel timestamp, into per-CPU log2 [`HISTOGRAMS`]; a cache's
//!    grow and DEADLOCKED start times live in slots set and cleared in
//!    place, so a grow inserts and deletes nothing;
//! 6. reserves an [`Event`] in the [`EVENTS`] ring buffer, or, when the ring
//!    is full, counts the loss in [`LOST`] so nothing is lost silently.
//!
//! What a hit costs, and which of it is the uprobe's trap rather than this
//! program, is measured by `cargo xtask bench` (the exporter's section;
//! bench/ANALYSIS.md discusses it).
//!
//! [`ProbeDef::values`]: slabscope_probes::ProbeDef::values
#![no_std]
#![no_main]
// `core::sync::atomic` offers no read-modify-write operations on the BPF
// target; the intrinsic lowers to the BPF atomic add instruction.
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "atomic_xadd: see above")]
// aya's #[uprobe] wraps each program in an exported function that drops the
// program's doc comment, which the workspace's missing_docs lint then flags.
#![allow(
    missing_docs,
    reason = "aya's #[uprobe] drops the programs' doc comments from what it generates"
)]

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_NOEXIST, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{self, bpf_get_attach_cookie, bpf_ktime_get_ns},
    },
    macros::{map, uprobe},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProbeContext,
};
use slabscope_probes::{
    ARG_CONST, ARG_REG, ARG_REG_DEREF, ARG_SIB, CacheCounters, CacheKey, CacheSnapshot,
    EVENT_VALUES, Event, HistKey, HistKind, LOST_EVENTS, LOST_SLOTS, LOST_SNAPSHOTS, Log2Histogram,
    MAX_ARGS, ProbeKind, UsdtSpec, log2_bucket,
};

/// Default table size; the collector sets the real one (its number of sites)
/// through `EbpfLoader::set_max_entries` before loading.
const MAX_SITES: u32 = 1024;
/// (pid, cache) pairs tracked at once.
const MAX_CACHES: u32 = 16384;

/// Spec id (the attach cookie) → argument locations of that probe site.
#[map]
static USDT_SPECS: Array<UsdtSpec> = Array::with_max_entries(MAX_SITES, 0);

/// (pid, cache id) → the snapshot carried by the last probe hit.
#[map]
static SNAPSHOTS: HashMap<CacheKey, CacheSnapshot> = HashMap::with_max_entries(MAX_CACHES, 0);

/// (pid, cache id) → transition counters.
#[map]
static COUNTERS: HashMap<CacheKey, CacheCounters> = HashMap::with_max_entries(MAX_CACHES, 0);

/// (pid, cache id) → time of `cache_destroy`, removed again by `cache_create`.
#[map]
static DESTROYED: HashMap<CacheKey, u64> = HashMap::with_max_entries(MAX_CACHES, 0);

/// Every probe hit. The collector resizes it (`ring_bytes`) before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// `LOST[LOST_EVENTS]`: hits whose event did not fit in [`EVENTS`];
/// `LOST[LOST_SNAPSHOTS]`: hits whose snapshot pointer could not be read.
/// Per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Adds one to `LOST[slot]` of this CPU.
#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(lost) = LOST.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not
        // migrate CPUs while running, so nothing races this update.
        unsafe { *lost += 1 };
    }
}

/// (pid, cache id) → time of the first `grow_start` of the grow in flight,
/// 0 when none is. An entry stays from the cache's first grow on and is
/// set and cleared in place with atomics, so a grow costs no map insert or
/// delete (each of which allocates or frees an element).
#[map]
static GROW_START: HashMap<CacheKey, u64> =
    HashMap::with_max_entries(MAX_CACHES, BPF_F_NO_PREALLOC);

/// (pid, cache id) → time of the `deadlock` that set DEADLOCKED, 0 when
/// the cache is not DEADLOCKED; kept like [`GROW_START`].
#[map]
static DEADLOCK_START: HashMap<CacheKey, u64> =
    HashMap::with_max_entries(MAX_CACHES, BPF_F_NO_PREALLOC);

/// (pid, emergency object address in `cache_id`) → time of its
/// `emergency_alloc`.
#[map]
static EMERGENCY_START: HashMap<CacheKey, u64> =
    HashMap::with_max_entries(MAX_CACHES, BPF_F_NO_PREALLOC);

/// (pid, kind, cache id) → log2 histogram of durations, per CPU. Not
/// preallocated: a value is 520 bytes per CPU.
#[map]
static HISTOGRAMS: PerCpuHashMap<HistKey, Log2Histogram> =
    PerCpuHashMap::with_max_entries(MAX_CACHES, BPF_F_NO_PREALLOC);

/// An all-zero histogram to insert from (too big for the BPF stack); never
/// written.
#[map]
static ZERO_HIST: PerCpuArray<Log2Histogram> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the snapshot being copied (too big for the BPF stack).
#[map]
static SCRATCH: PerCpuArray<CacheSnapshot> = PerCpuArray::with_max_entries(1, 0);

const ENOENT: i64 = 2;
const EINVAL: i64 = 22;

/// `struct pt_regs` as 8-byte words.
const REGS: usize = core::mem::size_of::<pt_regs>() / 8;

/// The probe's registers, copied out of the context once per hit: one load
/// per register at a fixed offset, instead of a `bpf_probe_read_kernel`
/// call per argument.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> [u64; REGS] {
    // SAFETY: the context of a uprobe program is the `struct pt_regs` of
    // the hit, readable whole at fixed offsets; the verifier checks each
    // load against its size.
    unsafe { ctx.as_ptr().cast::<[u64; REGS]>().read() }
}

/// The register at byte offset `off` of `struct pt_regs`.
#[inline(always)]
fn reg(regs: &[u64; REGS], off: u16) -> Result<u64, i64> {
    // `off` comes from the spec table, which userspace fills only with
    // pt_regs offsets; the bounds check tells the verifier too.
    regs.get(usize::from(off) / 8).copied().ok_or(-EINVAL)
}

/// Argument `n` of the probe site, decoded like libbpf's `bpf_usdt_arg()`.
#[inline(always)]
fn usdt_arg(regs: &[u64; REGS], spec: &UsdtSpec, n: usize) -> Result<u64, i64> {
    if n >= MAX_ARGS || n >= spec.arg_cnt as usize {
        return Err(-ENOENT);
    }
    let a = &spec.args[n];
    let mut val = match a.arg_type {
        ARG_CONST => a.val_off,
        ARG_REG => reg(regs, a.reg_off)?,
        ARG_REG_DEREF => {
            let addr = reg(regs, a.reg_off)?.wrapping_add(a.val_off);
            // SAFETY: bpf_probe_read_user faults safely on a bad user address.
            unsafe { bpf_probe_read_user(addr as *const u64) }.map_err(|e| e as i64)?
        }
        ARG_SIB => {
            let base = reg(regs, a.reg_off)?;
            let idx = reg(regs, a.idx_reg_off)?;
            let addr = base
                .wrapping_add(idx.wrapping_shl((a.scale_bits & 3) as u32))
                .wrapping_add(a.val_off);
            // SAFETY: as above.
            unsafe { bpf_probe_read_user(addr as *const u64) }.map_err(|e| e as i64)?
        }
        _ => return Err(-EINVAL),
    };
    // Keep the declared size only, then sign- or zero-extend it (little endian).
    let sh = (a.arg_bitshift & 63) as u32;
    val = val.wrapping_shl(sh);
    Ok(if a.arg_signed != 0 {
        ((val as i64).wrapping_shr(sh)) as u64
    } else {
        val.wrapping_shr(sh)
    })
}

/// A value of [`COUNTERS`], by pointer.
///
/// Invariant: the pointer came from a lookup in [`COUNTERS`], so it points to
/// a live, 8-byte aligned `CacheCounters` for the whole program run (hash-map
/// values are not freed while a program that looked them up runs).
struct Counters(*mut CacheCounters);

macro_rules! field {
    ($field:ident) => {
        core::mem::offset_of!(CacheCounters, $field)
    };
}

impl Counters {
    /// The counters of `key`, created zeroed on first use.
    #[inline(always)]
    fn of(key: &CacheKey) -> Option<Counters> {
        if let Some(c) = COUNTERS.get_ptr_mut(key) {
            return Some(Counters(c));
        }
        // NOEXIST: another CPU may have inserted the key meanwhile; then the
        // insert fails and the lookup below finds its entry.
        let _ = COUNTERS.insert(key, CacheCounters::default(), BPF_NOEXIST as u64);
        COUNTERS.get_ptr_mut(key).map(Counters)
    }

    /// Adds `v` to the u64 field at byte offset `off` atomically: grow
    /// workers hit the same cache from several CPUs at once.
    #[inline(always)]
    fn add(&self, off: usize, v: u64) {
        let p = self.0.wrapping_byte_add(off).cast::<u64>();
        // SAFETY: by the type's invariant `p` is an aligned u64 field of a
        // live map value; every writer of the counters goes through atomics.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
    }

    #[inline(always)]
    fn set_last_ns(&self, now: u64) {
        let p = self.0.wrapping_byte_add(field!(last_ns)).cast::<u64>();
        // SAFETY: as in `add`; a racing store of another hit's time is fine.
        unsafe { p.write_volatile(now) };
    }
}

/// Bumps the counters of `kind` for `key`.
#[inline(always)]
fn count(key: &CacheKey, kind: ProbeKind, values: &[u64; EVENT_VALUES], now: u64) {
    let Some(c) = Counters::of(key) else {
        return;
    };
    match kind {
        ProbeKind::CacheCreate => c.add(field!(creates), 1),
        ProbeKind::CacheDestroy => c.add(field!(destroys), 1),
        ProbeKind::GrowStart => c.add(field!(grows), 1),
        ProbeKind::GrowDone if values[0] == 0 => c.add(field!(grows_done), 1),
        ProbeKind::GrowDone => c.add(field!(grow_failures), 1),
        ProbeKind::Deadlock => c.add(field!(deadlocks), 1),
        ProbeKind::EmergencyAlloc => c.add(field!(emergency_allocs), 1),
        ProbeKind::EmergencyFree => c.add(field!(emergency_frees), 1),
        ProbeKind::Reap => {
            c.add(field!(reaps), 1);
            c.add(field!(reap_slabs_released), values[0]);
            c.add(field!(reap_objs_released), values[1]);
        }
        ProbeKind::SlabReclaim => {
            c.add(field!(slab_reclaims), 1);
            c.add(field!(slabs_released), values[0]);
            c.add(field!(objs_released), values[1]);
        }
        ProbeKind::CacheStats => c.add(field!(stats), 1),
    }
    c.set_last_ns(now);
}

/// Adds a duration of `ns` to the histogram of `kind` for `key`'s cache.
#[inline(always)]
fn record(key: &CacheKey, cache_id: u64, kind: HistKind, ns: u64) {
    let hkey = HistKey {
        pid: key.pid,
        kind: kind as u32,
        cache_id,
    };
    let mut h = HISTOGRAMS.get_ptr_mut(hkey);
    if h.is_none() {
        let Some(zero) = ZERO_HIST.get_ptr(0) else {
            return;
        };
        // SAFETY: this CPU's slot of ZERO_HIST, which nothing writes.
        let zero: &Log2Histogram = unsafe { &*zero };
        let _ = HISTOGRAMS.insert(hkey, zero, BPF_NOEXIST as u64);
        h = HISTOGRAMS.get_ptr_mut(hkey);
    }
    let Some(h) = h else {
        return;
    };
    // SAFETY: `h` is this CPU's copy of a live per-CPU map value; programs
    // do not migrate CPUs while running, so nothing races these adds.
    let h = unsafe { &mut *h };
    // The mask tells the verifier the index is in bounds.
    h.buckets[log2_bucket(ns) & (slabscope_probes::HIST_BUCKETS - 1)] += 1;
    h.sum_ns += ns;
}

/// The start-time slot of `key` in `starts`, created (as 0) on first use.
///
/// The pointer is to a live, 8-byte aligned value of a hash map, which
/// stays valid for the program run.
#[inline(always)]
fn start_slot(starts: &HashMap<CacheKey, u64>, key: &CacheKey) -> Option<*mut u64> {
    if let Some(p) = starts.get_ptr_mut(key) {
        return Some(p);
    }
    // NOEXIST: another CPU may have created it meanwhile.
    let _ = starts.insert(key, 0, BPF_NOEXIST as u64);
    starts.get_ptr_mut(key)
}

/// Sets the slot to `now` unless a start is in it already.
#[inline(always)]
fn start(starts: &HashMap<CacheKey, u64>, key: &CacheKey, now: u64) {
    if let Some(p) = start_slot(starts, key) {
        // SAFETY: see `start_slot`; every writer of a slot uses atomics.
        let _ = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(p, 0, now)
        };
    }
}

/// Takes the start time out of `key`'s slot in `starts` (leaving 0), if
/// one is there.
#[inline(always)]
fn take_start(starts: &HashMap<CacheKey, u64>, key: &CacheKey) -> Option<u64> {
    let p = starts.get_ptr_mut(key)?;
    // SAFETY: a live value of the map, as in `start_slot`.
    let t = unsafe { atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(p, 0) };
    (t != 0).then_some(t)
}

/// Times the grows, DEADLOCKED spells and emergency objects of a cache.
#[inline(always)]
fn time(key: &CacheKey, kind: ProbeKind, values: &[u64; EVENT_VALUES], now: u64) {
    match kind {
        // The first grow_start of a grow counts: a failed attempt handed
        // to a worker fires a second one.
        ProbeKind::GrowStart => start(&GROW_START, key, now),
        ProbeKind::GrowDone => {
            if let Some(t) = take_start(&GROW_START, key) {
                record(key, key.cache_id, HistKind::Grow, now.wrapping_sub(t));
            }
            // A grow that lands ends the DEADLOCKED spell.
            if values[0] == 0
                && let Some(t) = take_start(&DEADLOCK_START, key)
            {
                record(key, key.cache_id, HistKind::Deadlocked, now.wrapping_sub(t));
            }
        }
        ProbeKind::Deadlock => start(&DEADLOCK_START, key, now),
        ProbeKind::EmergencyAlloc => {
            let obj = CacheKey {
                pid: key.pid,
                _pad: 0,
                cache_id: values[0],
            };
            let _ = EMERGENCY_START.insert(obj, now, BPF_ANY as u64);
        }
        ProbeKind::EmergencyFree => {
            let obj = CacheKey {
                pid: key.pid,
                _pad: 0,
                cache_id: values[0],
            };
            // SAFETY: the value is copied out before the entry is removed.
            if let Some(t) = unsafe { EMERGENCY_START.get(obj) }.copied() {
                let _ = EMERGENCY_START.remove(obj);
                record(key, key.cache_id, HistKind::Emergency, now.wrapping_sub(t));
            }
        }
        // A cache at a destroyed one's address starts with nothing in flight.
        ProbeKind::CacheCreate | ProbeKind::CacheDestroy => {
            let _ = take_start(&GROW_START, key);
            let _ = take_start(&DEADLOCK_START, key);
        }
        _ => {}
    }
}

/// Copies the snapshot at `snap_ptr` (user memory) into [`SNAPSHOTS`] as
/// the last one of `key`'s cache, and returns where its copy can be read
/// (for the name); `Err` when the pointer cannot be read.
///
/// A map update allocates an element, copies the value into it and swaps
/// it in under the bucket's lock: the largest cost of a hit after the trap
/// when it ran on every hit. So an existing entry is rewritten in place,
/// straight from user memory, claimed for the copy by swapping its
/// `cache_id` (never 0 for a real cache) to 0 and released by writing the
/// id back:
///
/// - two CPUs hitting probes of one cache at once do not interleave their
///   copies: the one that finds the claim taken keeps the other's
///   snapshot, taken at the same moment (with a map update, one of the two
///   would win the same way);
/// - a reader that finds `cache_id` 0 reads while a copy is under way, and
///   reads again (`collector::settled_snapshot`);
/// - a pointer that cannot be read leaves the entry zero-filled by the
///   helper, so the entry is deleted: a cache whose program passes bad
///   pointers has no last snapshot to show until its next good one.
///
/// A cache's first hit, and a cache id of 0, go through a map update from
/// this CPU's scratch slot. The id stored is always `key`'s: what the
/// target wrote in the field is not trusted.
#[inline(always)]
fn store_snapshot(key: &CacheKey, snap_ptr: u64) -> Result<*const CacheSnapshot, ()> {
    const ID: usize = core::mem::offset_of!(CacheSnapshot, cache_id);
    const SIZE: usize = core::mem::size_of::<CacheSnapshot>();
    const REST: usize = SIZE - ID - 8;
    if key.cache_id != 0
        && let Some(v) = SNAPSHOTS.get_ptr_mut(key)
    {
        let id = v.cast::<u8>().wrapping_add(ID).cast::<u64>();
        // SAFETY: `id` is the aligned cache_id field of a live map value
        // (values are not freed while a program that looked them up
        // runs); every writer of the field uses atomics.
        let (_, claimed) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                id,
                key.cache_id,
                0,
            )
        };
        if !claimed {
            return Ok(v);
        }
        // SAFETY: the destination is the rest of the map value after
        // cache_id, REST bytes; the helper faults safely on a bad user
        // address (and zero-fills the destination then).
        let rc = unsafe {
            generated::bpf_probe_read_user(
                v.cast::<u8>().wrapping_add(ID + 8).cast(),
                REST as u32,
                snap_ptr.wrapping_add((ID + 8) as u64) as *const _,
            )
        };
        // SAFETY: as for the claim.
        unsafe { atomic_xchg::<u64, { AtomicOrdering::Release }>(id, key.cache_id) };
        if rc != 0 {
            let _ = SNAPSHOTS.remove(key);
            return Err(());
        }
        return Ok(v);
    }
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: `scratch` is this CPU's slot, exactly one CacheSnapshot long;
    // the helper faults safely on a bad user pointer (and zero-fills then).
    let rc = unsafe {
        generated::bpf_probe_read_user(scratch.cast(), SIZE as u32, snap_ptr as *const _)
    };
    if rc != 0 {
        return Err(());
    }
    // SAFETY: `scratch` is valid, initialised by the read above, and this
    // CPU's alone while the program runs.
    let snapshot = unsafe { &mut *scratch };
    snapshot.cache_id = key.cache_id;
    // By reference: a copy would put 500 bytes on the 512-byte stack.
    #[allow(clippy::needless_borrows_for_generic_args, reason = "see above")]
    let _ = SNAPSHOTS.insert(key, &*snapshot, BPF_ANY as u64);
    Ok(scratch)
}

/// Handles one hit of a probe of kind `kind`.
#[inline(always)]
fn handle(ctx: &ProbeContext, kind: ProbeKind) -> Result<(), i64> {
    // SAFETY: the helper only reads the cookie of the program's own link.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let spec = USDT_SPECS.get(cookie as u32).ok_or(-ENOENT)?;

    let nargs = kind.def().args.len();
    let nvalues = kind.def().values();
    let regs = regs(ctx);
    let cache_id = usdt_arg(&regs, spec, 0)?;
    let mut values = [0u64; EVENT_VALUES];
    let mut i = 0;
    while i < EVENT_VALUES {
        if i < nvalues {
            values[i] = usdt_arg(&regs, spec, 2 + i)?;
        }
        i += 1;
    }
    let snap_ptr = usdt_arg(&regs, spec, nargs - 1)?;

    let pid_tgid = bpf_get_current_pid_tgid();
    let key = CacheKey {
        pid: (pid_tgid >> 32) as u32,
        _pad: 0,
        cache_id,
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    let Ok(stored) = store_snapshot(&key, snap_ptr) else {
        // A pointer the target made up, or memory it unmapped: there is no
        // cache to speak of. Counting the hit under the cache id would make
        // up a cache with no name and zero counters.
        count_lost(LOST_SNAPSHOTS);
        return Ok(());
    };

    if kind == ProbeKind::CacheCreate {
        // A new cache at the address of a destroyed one starts from zero:
        // the old cache's counters must not be added to the new one's.
        let _ = COUNTERS.remove(key);
    }
    count(&key, kind, &values, now);
    time(&key, kind, &values, now);
    match kind {
        ProbeKind::CacheDestroy => {
            let _ = DESTROYED.insert(key, now, BPF_ANY as u64);
        }
        ProbeKind::CacheCreate => {
            let _ = DESTROYED.remove(key);
        }
        _ => {}
    }

    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            // SAFETY: `stored` points to the snapshot just stored (a map
            // value or this CPU's scratch slot), live for the program run.
            let name = unsafe { (*stored).name };
            entry.write(Event {
                ts_ns: now,
                pid: key.pid,
                tid: pid_tgid as u32,
                cache_id,
                kind: kind as u32,
                _pad: 0,
                values,
                name,
            });
            entry.submit(0);
        }
        None => count_lost(LOST_EVENTS),
    }
    Ok(())
}

macro_rules! programs {
    ($($fn:ident => $kind:ident),* $(,)?) => {$(
        #[doc = concat!("Attached at every `", stringify!($kind), "` site.")]
        #[uprobe]
        pub fn $fn(ctx: ProbeContext) -> u32 {
            let _ = handle(&ctx, ProbeKind::$kind);
            0
        }
    )*};
}

programs! {
    slabscope_cache_create => CacheCreate,
    slabscope_cache_destroy => CacheDestroy,
    slabscope_grow_start => GrowStart,
    slabscope_grow_done => GrowDone,
    slabscope_deadlock => Deadlock,
    slabscope_emergency_alloc => EmergencyAlloc,
    slabscope_emergency_free => EmergencyFree,
    slabscope_reap => Reap,
    slabscope_slab_reclaim => SlabReclaim,
    slabscope_cache_stats => CacheStats,
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
