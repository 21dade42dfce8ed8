//! Helpers of `slabscope serve`'s tests: children that are always killed,
//! a plain HTTP GET, a real Prometheus in a temporary directory, and the
//! allocator's `serve_target` example.
#![allow(dead_code, reason = "each test crate uses a different subset")]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    time::{Duration, Instant},
};

/// The tests of one binary share the host's processes: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when running as root; otherwise says loudly why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let banner = format!(
        "\n==================================================================\n\
         SKIPPED {test}: slabscope serve attaches eBPF programs, which\n\
         needs root (CAP_BPF + CAP_PERFMON). Run it with sudo.\n\
         ==================================================================\n"
    );
    let _ = std::io::stderr().lock().write_all(banner.as_bytes());
    false
}

/// A child process killed and reaped when dropped, also when a test panics.
pub struct Guard {
    pub child: Child,
    pub what: String,
}

impl Guard {
    pub fn spawn(cmd: &mut Command, what: &str) -> Guard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Guard {
            child,
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free loopback port")
        .port()
}

/// `GET path` on 127.0.0.1:`port`; the status and the body.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "slabscope-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let dir = PathBuf::from(dir.to_string_lossy().replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '-',
            "_",
        ));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `slabscope serve` on a free loopback port, ready to answer.
pub struct Serve {
    pub guard: Guard,
    pub port: u16,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        Serve::start_as(&[], extra)
    }

    /// `slabscope serve` run through `wrapper` (a command and its
    /// arguments, e.g. `setpriv ...`), if any.
    pub fn start_as(wrapper: &[String], extra: &[&str]) -> Serve {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_slabscope"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_slabscope")),
        };
        cmd.args(["serve", "--listen", &listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let guard = Guard::spawn(&mut cmd, "slabscope serve");
        wait_for("slabscope serve answering", Duration::from_secs(20), || {
            http_get(port, "/", None).filter(|(s, _)| *s == 200)
        });
        Serve { guard, port }
    }

    /// The Prometheus-text page.
    pub fn metrics(&self) -> String {
        let (status, body) =
            http_get(self.port, "/metrics", None).expect("slabscope serve answers /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The value of the sample whose line starts with `prefix`.
pub fn sample(page: &str, prefix: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// Resident memory of `pid`, in KiB, open file descriptors and threads.
pub fn footprint(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing fds")
        .count();
    (field("VmRSS:"), fds, field("Threads:"))
}

/// The target directory of this test binary (`target`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test binary");
    // target/<profile>/deps/<test>-<hash>
    exe.ancestors()
        .nth(3)
        .expect("test binary is not in target/<profile>/deps")
        .to_path_buf()
}

/// The allocator's `serve_target` example, built on first use in a
/// separate target directory (the allocator's default features differ from
/// this build's, as for the collector's `workload`).
pub fn serve_target() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = target_dir().join("collector-workload");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "slabscope",
                "--example",
                "serve_target",
            ])
            .arg("--target-dir")
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("running cargo to build serve_target: {e}"));
        assert!(status.success(), "building the serve_target example failed");
        let path = dir.join("debug/examples/serve_target");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
    .clone()
}

/// A `serve_target` process waiting for its go line.
pub struct Target {
    pub guard: Guard,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Target {
    pub fn start() -> Target {
        Target::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Target {
        let mut cmd = Command::new(serve_target());
        cmd.env_clear()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut guard = Guard::spawn(&mut cmd, "serve_target");
        let stdin = guard.child.stdin.take();
        let mut stdout = BufReader::new(guard.child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading `ready`");
        assert!(line.starts_with("ready "), "serve_target said {line:?}");
        Target {
            guard,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Closes its stdin: it frees everything and exits.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Its next line of JSON.
    pub fn json_line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Lets it work; returns its caches' statistics as it published them.
    pub fn go(&mut self) -> serde_json::Value {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("releasing serve_target");
        stdin.flush().expect("releasing serve_target");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading the statistics");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

/// A real Prometheus (Debian's `prometheus` package) scraping `target_port`
/// every 500 ms, with its own storage in a temporary directory.
pub struct Prometheus {
    pub guard: Guard,
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(target_port: u16) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
                 scrape_configs:\n  - job_name: slabscope\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("creating the log");
        let mut cmd = Command::new(prometheus_binary());
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let guard = Guard::spawn(&mut cmd, "prometheus");
        wait_for("prometheus ready", Duration::from_secs(30), || {
            http_get(port, "/-/ready", None).filter(|(s, _)| *s == 200)
        });
        Prometheus {
            guard,
            port,
            _dir: dir,
        }
    }

    /// `/api/v1/query`'s result vector for `query`.
    pub fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", url_encode(query));
        let (status, body) = http_get(self.port, &path, None).expect("prometheus answers");
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus' JSON");
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Debian's prometheus, or a panic saying how to get it.
pub fn prometheus_binary() -> &'static Path {
    let p = Path::new("/usr/bin/prometheus");
    assert!(
        p.is_file(),
        "prometheus is not installed: run `cargo xtask setup` (Debian package `prometheus`)"
    );
    p
}

/// Runs `promtool check metrics` on `page`: its complaints, if any.
pub fn promtool_check(page: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian package `prometheus`; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(page.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && said.is_empty() {
        said = format!("promtool failed: {}", out.status);
    }
    said
}
