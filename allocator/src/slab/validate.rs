//! `SlabState::validate`: walks both slab lists and every free list and
//! checks the equations of [`SlabCounters`](slabscope_probes::SlabCounters)
//! and of each [`Slab`]. Kept apart from the slab operations it checks; a
//! child module, so it reads the headers' private fields directly.
//!
//! It never reads an unbuilt object: their pages may never have been
//! touched, and a check must not fault them in. The free check of a
//! pointer into one finds a zero header, which is no object's state.
//! (Headerless slabs have no unbuilt objects: see `super::headerless`.)

use std::ptr;

use super::{
    OBJ_FREE, Slab, SlabState, hl_is_free, next_free, obj_at, slab_of, state_bits, word_of,
};
use crate::flags::SKS_MAGIC;
use crate::sizing::Geometry;

impl SlabState {
    /// Checks the invariants of [`SlabCounters`](slabscope_probes::SlabCounters)
    /// and of every [`Slab`] (`objs == refs + len(free) + unbuilt`) by
    /// walking every list, with every magic and free object's state word.
    /// Returns the set of free objects (addresses) so callers can check
    /// magazines against it.
    pub(crate) fn validate(
        &self,
        g: &Geometry,
        id: u64,
    ) -> Result<std::collections::HashSet<usize>, String> {
        let mut free = std::collections::HashSet::new();
        let (mut objs, mut refs, mut used_slabs) = (0u64, 0u64, 0u64);
        let mut seen_empty = false;
        let objs_per_slab = g.slab_objs as u32;
        for (list, complete) in [(&self.partial, false), (&self.complete, true)] {
            let mut n = 0;
            let mut prev: *mut Slab = ptr::null_mut();
            for s in list.iter() {
                n += 1;
                // SAFETY: s is a live slab of this list; we hold the lock
                // (the caller borrows the state).
                let sl = unsafe { &*s };
                if sl.prev != prev {
                    return Err(format!("slab {s:p}: broken prev link"));
                }
                prev = s;
                if sl.magic != SKS_MAGIC || sl.cache != id {
                    return Err(format!("slab {s:p}: bad magic {:#x} or cache", sl.magic));
                }
                if u64::from(sl.color) != g.color(s as u64) {
                    return Err(format!(
                        "slab {s:p}: color {}, geometry says {}",
                        sl.color,
                        g.color(s as u64)
                    ));
                }
                if sl.refs > sl.built || sl.built > objs_per_slab {
                    return Err(format!(
                        "slab {s:p}: refs {}, built {}, objs {}: not refs <= built <= objs",
                        sl.refs, sl.built, objs_per_slab
                    ));
                }
                if sl.unlisted > sl.built - sl.refs {
                    return Err(format!(
                        "slab {s:p}: unlisted {}, refs {}, built {}: not unlisted <= built - refs",
                        sl.unlisted, sl.refs, sl.built
                    ));
                }
                let below = format!("is below unlisted {}", sl.unlisted);
                for i in 0..sl.unlisted {
                    let o = obj_at(s, g, sl.color, i);
                    // SAFETY: object i < built of this live slab: its header
                    // lies in the slab.
                    unsafe { check_free_header(g, s, o, &below) }?;
                    free.insert(o as usize);
                }
                if complete != (sl.refs == objs_per_slab) {
                    return Err(format!(
                        "slab {s:p}: refs {} of {} on the {} list",
                        sl.refs,
                        objs_per_slab,
                        if complete { "complete" } else { "partial" }
                    ));
                }
                if !complete {
                    if sl.refs == 0 {
                        seen_empty = true;
                    } else if seen_empty {
                        return Err(format!(
                            "slab {s:p}: non-empty slab after an empty one on the partial list"
                        ));
                    }
                }
                let mut nfree = 0u32;
                let mut o = sl.free;
                while !o.is_null() {
                    let base = s as usize;
                    let a = o as usize;
                    let first = base + (g.first_obj + u64::from(sl.color)) as usize;
                    let in_slab = a >= first
                        && a < base + g.slab_size as usize
                        && (a - first).is_multiple_of(g.obj_size_full as usize);
                    if !in_slab {
                        return Err(format!("slab {s:p}: free list reaches {o:p}, outside it"));
                    }
                    if (a - first) / g.obj_size_full as usize >= sl.built as usize {
                        return Err(format!(
                            "slab {s:p}: free list reaches {o:p}, an object never built \
                             (built {})",
                            sl.built
                        ));
                    }
                    // SAFETY: o is an object of this live slab, so its
                    // header is mapped.
                    unsafe { check_free_header(g, s, o, "is on the free list") }?;
                    if !free.insert(a) {
                        return Err(format!("object {a:#x} twice on free lists"));
                    }
                    nfree += 1;
                    if nfree > sl.built {
                        return Err(format!(
                            "slab {s:p}: free list longer than the slab's {} built objects",
                            sl.built
                        ));
                    }
                    // SAFETY: a free object of this slab: its first word is the link.
                    o = unsafe { next_free(o) };
                }
                // objs == refs + len(free) + unlisted + unbuilt, unbuilt =
                // objs - built.
                if nfree + sl.unlisted != sl.built - sl.refs {
                    return Err(format!(
                        "slab {s:p}: {nfree} listed and {} unlisted free objects but refs {}, \
                         built {} of {}",
                        sl.unlisted, sl.refs, sl.built, objs_per_slab
                    ));
                }
                objs += u64::from(objs_per_slab);
                refs += u64::from(sl.refs);
                used_slabs += u64::from(sl.refs > 0);
            }
            if n != list.len || prev != list.tail {
                return Err(format!(
                    "slab list length {} but {n} linked, or tail wrong",
                    list.len
                ));
            }
        }
        let c = &self.c;
        let eq = |what: &str, a: u64, b: u64| {
            if a == b {
                Ok(())
            } else {
                Err(format!("{what}: {a} != {b}"))
            }
        };
        eq(
            "slab_total == partial + complete",
            c.slab_total,
            self.partial.len + self.complete.len,
        )?;
        eq(
            "obj_total == Σ slab objs + obj_emergency",
            c.obj_total,
            objs + c.obj_emergency,
        )?;
        eq("obj_alloc == Σ slab refs", c.obj_alloc, refs)?;
        eq("slab_alloc == slabs in use", c.slab_alloc, used_slabs)?;
        eq(
            "obj_emergency == emergency tree size",
            c.obj_emergency,
            self.emergency.len() as u64,
        )?;
        if c.obj_max < c.obj_alloc
            || c.slab_max < c.slab_alloc
            || c.obj_emergency_max < c.obj_emergency
        {
            return Err(format!("a max counter is below its current value: {c:?}"));
        }
        if c.slab_create - c.slab_destroy != c.slab_total {
            return Err(format!("slab_create - slab_destroy != slab_total: {c:?}"));
        }
        Ok(free)
    }
}

/// Checks that free object `o` of slab `s` (free because it `is`: on the
/// free list, or below `unlisted`) has a header naming `s` and saying
/// free, or, in a headerless slab, its free mark.
///
/// # Safety
/// `o` is an object of the live slab `s`, so its header is mapped.
unsafe fn check_free_header(
    g: &Geometry,
    s: *mut Slab,
    o: *mut u8,
    is: &str,
) -> Result<(), String> {
    if g.headerless() {
        // SAFETY: forwarded caller guarantee.
        if !unsafe { hl_is_free(o) } {
            return Err(format!(
                "slab {s:p}: object {:#x} {is} but has no free mark (a caller holds it)",
                o as usize
            ));
        }
        return Ok(());
    }
    // SAFETY: forwarded caller guarantee.
    let word = unsafe { word_of(o) }.load(std::sync::atomic::Ordering::Relaxed);
    if slab_of(word) != s {
        return Err(format!(
            "slab {s:p}: free object {o:p}'s header names another slab"
        ));
    }
    if state_bits(word) != OBJ_FREE {
        return Err(format!(
            "slab {s:p}: object {:#x} {is} but its header says a caller holds it",
            o as usize
        ));
    }
    Ok(())
}
