//! A bad `SLABSCOPE_*` variable fails cache creation with a message naming
//! it, instead of silently falling back to a default.

use slabscope::{CacheBuilder, Error};

#[test]
fn a_bad_environment_variable_is_reported_by_name() {
    // SAFETY: this test binary has a single test and no other threads yet.
    unsafe { std::env::set_var("SLABSCOPE_KMEM_THREADS", "four") };
    let e = CacheBuilder::new("env_bad", 64)
        .build()
        .expect_err("bad env must fail");
    assert!(matches!(e, Error::Tunable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("SLABSCOPE_KMEM_THREADS") && msg.contains("four"),
        "{msg}"
    );
    // The failure sticks: tunables were fixed (badly) on first use.
    assert!(CacheBuilder::new("env_bad2", 64).build().is_err());
    assert!(matches!(
        slabscope::tunables::set(Default::default()),
        Err(Error::TunablesFrozen)
    ));
}
