//! The one-line message `slabscope` prints for a failure: each cause of the
//! error chain once. Several errors quote their source in their own text
//! ("cannot read PATH: No such file or directory (os error 2); check the
//! path") and keep it as their `source()` too, so anyhow's `{:#}` printed
//! the OS message twice; [`message`] leaves out a cause whose text the
//! message already holds.

/// `err` and its causes, outermost first, joined by `: `, each cause once.
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;
    use std::io;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x: {source}; check the path")]
    struct Quoting {
        #[source]
        source: io::Error,
    }

    #[test]
    fn a_quoted_source_is_said_once() {
        let os = io::Error::from_raw_os_error(libc::ENOENT);
        let os_text = os.to_string();
        let err = anyhow::Error::new(Quoting { source: os }).context("attaching to /x");
        let msg = message(&err);
        assert_eq!(msg.matches(&os_text).count(), 1, "{msg}");
        assert_eq!(
            msg,
            format!("attaching to /x: cannot read /x: {os_text}; check the path")
        );
        // anyhow's own rendering repeats it: what this module is for.
        assert_eq!(format!("{err:#}").matches(&os_text).count(), 2);
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let err = Err::<(), _>(io::Error::other("disk on fire"))
            .context("reading the caches")
            .context("attaching to pid 4")
            .unwrap_err();
        assert_eq!(
            message(&err),
            "attaching to pid 4: reading the caches: disk on fire"
        );
    }
}
