//! The depot between the magazines and the slabs (the allocator's `depot`
//! module): a full magazine's flush lands there and an empty one's refill
//! comes from there, so churn with more live objects than a magazine holds
//! stops going through the slabs; reaps and destroy empty it; `depot_kb = 0`
//! turns it off (run in a child process: tunables are fixed per process).

mod support;

use slabscope::CacheBuilder;
use slabscope::flags::KM_SLEEP;
use support::{destroy_and_check_unmapped, free_all};

/// Rounds of "allocate `live`, free them all" with `live` four magazines'
/// worth; returns the stats after each round's frees.
fn churn(c: &slabscope::Cache, live: usize, rounds: usize) -> Vec<slabscope::stats::CacheStats> {
    (0..rounds)
        .map(|_| {
            let objs: Vec<_> = (0..live).map(|_| c.alloc(KM_SLEEP).unwrap()).collect();
            free_all(c, objs);
            c.validate().unwrap();
            c.stats()
        })
        .collect()
}

/// The tests compare the process's mapped bytes before and after: one at
/// a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn depot_off() -> bool {
    std::env::var("SLABSCOPE_DEPOT_KB").as_deref() == Ok("0")
}

#[test]
fn churn_beyond_a_magazine_keeps_its_objects_out_of_the_slabs() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = slabscope::os::mapped_bytes();
    let c = CacheBuilder::new("depot_churn", 64).build().unwrap();
    let live = 4 * c.stats().mag_size as usize;
    let rounds = churn(&c, live, 6);
    let ncpus = rounds[0].mag_fill.len() as u64;
    let mag_size = u64::from(rounds[0].mag_size);
    for s in &rounds {
        assert_eq!(s.obj_alloc, s.mag_objs, "everything freed: {s:?}");
        if depot_off() {
            assert_eq!(s.depot_objs, 0, "{s:?}");
            assert!(s.mag_objs <= ncpus * mag_size, "{s:?}");
        } else {
            // Every freed object stayed in a magazine or the depot.
            assert!(s.mag_objs >= live as u64, "{s:?}");
            assert!(s.depot_objs > 0, "{s:?}");
        }
    }
    if !depot_off() {
        // After the first round no object went back to a slab and none
        // came out of one: the slabs' counts stand still.
        let first = &rounds[1];
        for s in &rounds[2..] {
            assert_eq!(
                (s.obj_alloc, s.slab_alloc, s.slab_total),
                (first.obj_alloc, first.slab_alloc, first.slab_total),
                "the slabs moved: {s:?}"
            );
        }
    }
    // A reap empties the depot (and this CPU's magazine) into the slabs.
    c.reap_now();
    let s = c.stats();
    assert_eq!(s.depot_objs, 0, "{s:?}");
    c.validate().unwrap();
    destroy_and_check_unmapped(c, base);
}

/// Destroy with a full depot gives every slab back.
#[test]
fn destroy_empties_the_depot() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = slabscope::os::mapped_bytes();
    let c = CacheBuilder::new("depot_destroy", 4096).build().unwrap();
    let live = 8 * c.stats().mag_size as usize;
    let s = churn(&c, live, 2).pop().unwrap();
    assert_eq!(s.depot_objs > 0, !depot_off(), "{s:?}");
    destroy_and_check_unmapped(c, base);
}

/// Both tests again without a depot.
#[test]
fn without_a_depot_flushes_go_to_the_slabs() {
    if std::env::var_os("SLABSCOPE_DEPOT_KB").is_some() {
        return; // this is the child (or the user chose the depot size)
    }
    support::rerun_with_env(
        "SLABSCOPE_DEPOT_KB",
        "0",
        &[
            "churn_beyond_a_magazine_keeps_its_objects_out_of_the_slabs",
            "destroy_empties_the_depot",
        ],
    );
}
