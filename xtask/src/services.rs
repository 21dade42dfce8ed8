//! Installing Debian packages that ship a service without starting it.
//!
//! Debian's `prometheus` (which `slabscope serve`'s tests run with their own
//! configuration and storage) enables and starts a system Prometheus on
//! install, listening on port 9090 and scraping localhost, and recommends
//! `prometheus-node-exporter`, which does the same on 9100. A development
//! machine or CI runner wants neither. So:
//!
//! - during `apt-get install`, a `policy-rc.d` that refuses every start
//!   (the Debian mechanism for exactly this: `invoke-rc.d` and
//!   `deb-systemd-invoke` ask it) is put in place, unless one exists
//!   already, and removed afterwards;
//! - after it, when systemd runs, the units are disabled and stopped, so
//!   they do not come up at the next boot either.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::run::note;

/// The file `invoke-rc.d` asks whether a service may start.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Exit status 101 means "action forbidden by policy".
const DENY_ALL: &str =
    "#!/bin/sh\n# cargo xtask setup: no service starts while packages install\nexit 101\n";

/// Units the packages `setup` installs would otherwise leave running.
pub const UNITS: &[&str] = &["prometheus.service", "prometheus-node-exporter.service"];

/// Keeps services from starting while it lives (if it created the policy).
#[derive(Debug)]
pub struct NoServiceStarts {
    created: bool,
}

impl NoServiceStarts {
    /// Puts the deny-all policy in place unless a policy exists already.
    pub fn new() -> NoServiceStarts {
        if Path::new(POLICY_RC_D).exists() {
            return NoServiceStarts { created: false };
        }
        let created = write_policy().is_ok();
        if !created {
            note("could not write /usr/sbin/policy-rc.d: services may start during install");
        }
        NoServiceStarts { created }
    }
}

fn write_policy() -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(POLICY_RC_D, DENY_ALL)?;
    std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Disables and stops [`UNITS`] when systemd runs (a no-op in containers
/// without it, where nothing started them).
pub fn disable_units() {
    if !Path::new("/run/systemd/system").is_dir() {
        return;
    }
    for unit in UNITS {
        let ok = Command::new("systemctl")
            .args(["disable", "--now", unit])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            note(format!(
                "disabled and stopped {unit} (the tests run their own)"
            ));
        }
    }
}
