//! The real `slabscope` binary when things go wrong: the target exits or is
//! killed while traced, the ring buffer overflows, no privileges, a program
//! without probes, damaged `.note.stapsdt` notes. Every failure must exit
//! non-zero with one line that says what happened and what to do, with no
//! panic or backtrace text and no terminal escape sequence.
//!
//! Tests that attach need root and skip loudly without it; the others run as
//! any user.

mod collector_support;

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use collector_support::{Fixture, Report, root_or_skip};
use object::{Object as _, ObjectSection as _};
use serde_json::Value;
use slabscope_probes::stats::PROC_SLAB_HEADER;

const SLABSCOPE: &str = env!("CARGO_BIN_EXE_slabscope");
/// The exit status for "not permitted" (see `slabscope --help`).
const EXIT_NOT_PERMITTED: i32 = 77;
const DEADLINE: Duration = Duration::from_secs(20);

/// A running `slabscope`, killed if it outlives [`DEADLINE`].
struct Slabscope {
    child: Child,
    stderr: BufReader<ChildStderr>,
    seen: String,
    done: Arc<AtomicBool>,
}

impl Slabscope {
    fn start(args: &[&str]) -> Slabscope {
        Slabscope::start_as(&[], args)
    }

    /// Runs `prefix... slabscope args...` (a prefix such as `setpriv ...`).
    fn start_as(prefix: &[&str], args: &[&str]) -> Slabscope {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(SLABSCOPE);
                c
            }
            None => Command::new(SLABSCOPE),
        };
        let mut child = cmd
            .args(args)
            // A panic would print its backtrace: make sure we would see it.
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting slabscope");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let done = Arc::new(AtomicBool::new(false));
        let (flag, pid) = (Arc::clone(&done), child.id() as i32);
        thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if start.elapsed() > DEADLINE {
                    // SAFETY: kill has no memory preconditions; the child is
                    // not reaped before `done` is set, so the pid is ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Slabscope {
            child,
            stderr,
            seen: String::new(),
            done,
        }
    }

    /// Waits for the note that every probe is attached.
    fn wait_attached(&mut self) {
        loop {
            let mut line = String::new();
            let n = self.stderr.read_line(&mut line).expect("reading stderr");
            assert!(n > 0, "slabscope ended before attaching:\n{}", self.seen);
            self.seen.push_str(&line);
            if line.starts_with("slabscope: tracing ") {
                return;
            }
        }
    }

    /// Stdout, as lines, as they come.
    fn stdout(&mut self) -> BufReader<std::process::ChildStdout> {
        BufReader::new(self.child.stdout.take().expect("stdout taken twice"))
    }

    /// Waits for the exit; returns (status, rest of stdout, all of stderr).
    fn finish(mut self) -> (ExitStatus, String, String) {
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut out).expect("reading stdout");
        }
        let mut err = std::mem::take(&mut self.seen);
        self.stderr
            .read_to_string(&mut err)
            .expect("reading stderr");
        let status = self.child.wait().expect("waiting for slabscope");
        self.done.store(true, Ordering::Relaxed);
        assert!(
            status.code().is_some(),
            "slabscope was killed ({status}): it hung\n{err}"
        );
        (status, out, err)
    }
}

impl Slabscope {
    /// Reaps a slabscope the test killed.
    fn finish_killed(mut self) -> ExitStatus {
        let status = self.child.wait().expect("waiting for slabscope");
        self.done.store(true, Ordering::Relaxed);
        status
    }
}

/// No panic, no backtrace, no escape sequence: the terminal is untouched.
fn assert_clean(stdout: &str, stderr: &str) {
    for text in [stdout, stderr] {
        for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE", "\x1b"] {
            assert!(
                !text.contains(bad),
                "{bad:?} in slabscope's output:\n{text}"
            );
        }
    }
}

/// Asserts one error line on stderr, nothing on stdout, and the exit code.
fn assert_fails_with(status: ExitStatus, stdout: &str, stderr: &str, code: i32) -> String {
    assert_clean(stdout, stderr);
    assert_eq!(status.code(), Some(code), "exit status; stderr:\n{stderr}");
    assert_eq!(stdout, "", "nothing on stdout");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line:\n{stderr}");
    assert!(lines[0].starts_with("slabscope: "), "{stderr}");
    lines[0].to_owned()
}

/// A directory everyone may read and enter, removed on drop.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(name: &str) -> OpenDir {
        let dir = std::env::temp_dir().join(format!("slabscope-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a temporary directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        OpenDir(dir)
    }

    /// A copy of `file` everyone may run.
    fn copy(&self, file: &Path, name: &str) -> PathBuf {
        let to = self.0.join(name);
        fs::copy(file, &to).expect("copying");
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
        to
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn once_prints_the_last_state_of_a_target_that_exits() {
    if !root_or_skip("once_prints_the_last_state_of_a_target_that_exits") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid().to_string();
    // The first sample is due after 1 s; the fixture is done long before.
    let mut s = Slabscope::start(&["--pid", &pid, "--once"]);
    s.wait_attached();
    let report = fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    assert!(
        err.contains(&format!(
            "pid {pid} exited while traced; the output shows its last state"
        )),
        "no exit note:\n{err}"
    );
    assert!(out.starts_with(PROC_SLAB_HEADER), "{out}");
    let rows: Vec<&str> = out[PROC_SLAB_HEADER.len()..].lines().collect();
    let live = report.destroyed.values().filter(|d| !**d).count();
    assert_eq!(rows.len(), live, "one row per live cache:\n{out}");
    assert!(rows.iter().all(|r| r.starts_with("fixture_")), "{out}");
}

#[test]
fn json_lines_end_cleanly_when_the_target_is_killed() {
    if !root_or_skip("json_lines_end_cleanly_when_the_target_is_killed") {
        return;
    }
    let mut fixture = Fixture::start(&["burst", "50000000"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&["--pid", &pid, "--json", "-d", "100ms"]);
    s.wait_attached();
    fixture.release();
    let mut stdout = s.stdout();
    // Kill it once a line shows it firing.
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("stdout") > 0,
            "no output"
        );
        text.push_str(&line);
        let doc: Value = serde_json::from_str(&line).expect("a JSON line");
        if doc["caches"][0]["counters"]["stats"].as_u64().unwrap_or(0) > 0 {
            break;
        }
    }
    thread::sleep(Duration::from_millis(200));
    fixture.kill();
    stdout.read_to_string(&mut text).expect("stdout");
    let (status, _, err) = s.finish();
    assert_clean(&text, &err);
    assert!(status.success(), "{status}:\n{err}");
    assert!(
        err.contains(&format!("pid {pid} exited while traced")),
        "{err}"
    );
    let docs = json_lines(&text);
    let last = &docs.last().expect("JSON lines")["caches"][0];
    let stats = last["counters"]["stats"].as_u64().unwrap();
    // The final line is the final state: the last snapshot agrees with the
    // number of hits counted (burst sets obj_alloc = i before hit i).
    assert_eq!(last["obj_alloc"].as_u64().unwrap() + 1, stats, "{last}");
    assert!(docs.len() >= 2, "a final line comes after the kill");
    assert!(stats >= doc_stats(&docs[0]), "counts only grow");
}

fn doc_stats(doc: &Value) -> u64 {
    doc["caches"][0]["counters"]["stats"].as_u64().unwrap_or(0)
}

#[test]
fn lost_events_are_shown_in_the_json_output() {
    if !root_or_skip("lost_events_are_shown_in_the_json_output") {
        return;
    }
    let fixture = Fixture::start(&["burst", "20000"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&[
        "--pid",
        &pid,
        "--json",
        "-d",
        "100ms",
        "--ring-size",
        "4096",
    ]);
    s.wait_attached();
    let report = fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    let docs = json_lines(&out);
    let last = docs.last().expect("JSON lines");
    let lost = last["lost_events"].as_u64().expect("lost_events");
    let delivered = last["events_total"].as_u64().expect("events_total");
    assert!(lost > 0, "a 4 KiB ring cannot hold {} events", report.fired);
    assert_eq!(lost + delivered, report.fired, "lost + delivered = fired");
    assert_eq!(last["caches"][0]["counters"]["stats"], 20000);
    assert!(
        err.contains(&format!(
            "{lost} events were lost because the ring buffer was full"
        )),
        "{err}"
    );
}

#[test]
fn without_privileges_it_says_run_with_sudo() {
    if !root_or_skip("without_privileges_it_says_run_with_sudo") {
        return;
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    // A target of another user: its memory map is already off limits.
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid().to_string();
    let (status, out, err) = Slabscope::start_as(&nobody, &["--pid", &pid, "--once"]).finish();
    let line = assert_fails_with(status, &out, &err, EXIT_NOT_PERMITTED);
    assert!(line.contains(&format!("pid {pid}")), "{line}");
    assert!(line.contains("run with sudo"), "{line}");
    fixture.go();

    // The user's own target: the kernel refuses the eBPF programs. The live
    // view is asked for; nothing may reach the terminal before the error.
    let dir = OpenDir::new("unprivileged");
    let copy = dir.copy(&collector_support::fixture(), "probe_fixture");
    let mut args: Vec<&str> = nobody.to_vec();
    let copy_str = copy.to_str().expect("UTF-8 path");
    args.extend([copy_str, "script"]);
    let own = Fixture::start_program(PathBuf::from(args[0]), &args[1..]);
    let pid = own.pid().to_string();
    let (status, out, err) = Slabscope::start_as(&nobody, &["--pid", &pid]).finish();
    let line = assert_fails_with(status, &out, &err, EXIT_NOT_PERMITTED);
    assert!(
        line.contains(&format!(
            "tracing pid {pid} needs CAP_BPF and CAP_PERFMON: run with sudo"
        )),
        "{line}"
    );
    own.go();
}

#[test]
fn a_program_without_probes_names_the_files_searched() {
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("starting sleep");
    let pid = sleeper.id().to_string();
    // Right after exec only the dynamic loader is mapped: wait for libc, so
    // the shared objects the message must name are there to be searched.
    collector_support::wait_for_code_of(sleeper.id(), "libc.so", Duration::from_secs(10));
    let (status, out, err) = Slabscope::start(&["--pid", &pid, "--once"]).finish();
    sleeper.kill().ok();
    sleeper.wait().ok();
    let line = assert_fails_with(status, &out, &err, 1);
    assert!(line.contains("no slabscope probes found in "), "{line}");
    assert!(line.contains("/sleep"), "the executable is named: {line}");
    assert!(line.contains("libc.so"), "shared objects are named: {line}");
    assert!(line.contains("probes` feature"), "the next step: {line}");

    let exe = fs::canonicalize(which("sleep")).expect("sleep's path");
    let (status, out, err) = Slabscope::start(&["--exe", exe.to_str().unwrap()]).finish();
    let line = assert_fails_with(status, &out, &err, 1);
    assert!(
        line.contains(&format!("no slabscope probes found in {}", exe.display())),
        "{line}"
    );
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// File offset of the first stapsdt note's descriptor, and its size.
fn first_desc(data: &[u8]) -> (usize, usize) {
    let elf = object::File::parse(data).expect("an ELF file");
    let (off, _) = elf
        .section_by_name(".note.stapsdt")
        .expect("the fixture has notes")
        .file_range()
        .expect("notes are in the file");
    let off = off as usize;
    let descsz = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap()) as usize;
    // header (12) + "stapsdt\0" (8)
    (off + 20, descsz)
}

#[test]
fn damaged_notes_are_refused_before_anything_is_attached() {
    let dir = OpenDir::new("damaged");
    let original = fs::read(collector_support::fixture()).expect("reading the fixture");
    let sites = slabscope_inspector::collector::stapsdt::parse(&original[..]).expect("notes");

    // A string without its NUL, and a site address moved off its nop.
    let mut no_nul = original.clone();
    let (desc, descsz) = first_desc(&no_nul);
    no_nul[desc + descsz - 1] = b'x';
    let mut off_nop = original.clone();
    let pc = u64::from_le_bytes(off_nop[desc..desc + 8].try_into().unwrap());
    let at = sites[0].file_offset as usize;
    let k = (1..64).find(|k| original[at + k] != 0x90).expect("code") as u64;
    off_nop[desc..desc + 8].copy_from_slice(&(pc + k).to_le_bytes());
    // A site on a 0x90 byte inside an instruction's immediate.
    let mut in_immediate = original.clone();
    let decoy = {
        use object::ObjectSymbol as _;
        object::File::parse(&original[..])
            .expect("an ELF file")
            .symbols()
            .find(|s| s.name() == Ok("slabscope_fixture_decoy"))
            .expect("the fixture's decoy")
            .address()
    };
    in_immediate[desc..desc + 8].copy_from_slice(&(decoy + 2).to_le_bytes());
    let probe = format!("(slabscope:{}) at file offset 0x", sites[0].name);

    for (name, data, says) in [
        ("no_nul", no_nul, "is truncated"),
        ("off_nop", off_nop, "is no place for a breakpoint"),
        (
            "in_immediate",
            in_immediate,
            "byte 2 of the 10-byte instruction mov",
        ),
    ] {
        let path = dir.0.join(name);
        fs::write(&path, data).expect("writing the damaged copy");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        // The program runs: notes are never loaded.
        let fixture = Fixture::start_program(path.clone(), &["script"]);
        let pid = fixture.pid();
        let (status, out, err) = Slabscope::start(&["--pid", &pid.to_string(), "--once"]).finish();
        let line = assert_fails_with(status, &out, &err, 1);
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains("stapsdt note #0"), "{line}");
        assert!(line.contains(says), "{line}");
        if name != "no_nul" {
            assert!(line.contains(&probe), "names the probe and offset: {line}");
        }
        assert!(
            line.contains("the file may be corrupt, rebuild it"),
            "{line}"
        );
        // The error comes from reading the notes, before any eBPF program
        // is loaded: the library says the same without attaching.
        let e = slabscope_inspector::collector::spawn(
            slabscope_inspector::collector::Target::Pid(pid),
            Default::default(),
        )
        .expect_err("attaching to a damaged file");
        assert!(
            matches!(
                e,
                slabscope_inspector::collector::CollectError::Stapsdt { .. }
            ),
            "{e}"
        );
        assert!(fixture.go().fired > 0);
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_listen() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .to_string()
}

/// The body of `slabscope serve`'s /metrics at `listen` (empty while it
/// does not answer yet).
fn metrics_page(listen: &str) -> String {
    use std::io::Write as _;
    let Ok(mut s) = std::net::TcpStream::connect(listen) else {
        return String::new();
    };
    let mut page = String::new();
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.read_to_string(&mut page);
    page
}

/// The value of the sample `name` (no labels) on a metrics page.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn serve_names_a_refused_hostile_file_escaped() {
    if !root_or_skip("serve_names_a_refused_hostile_file_escaped") {
        return;
    }
    // A copy of the fixture whose file name is escape sequences and a bidi
    // override, with its first site moved into an instruction's immediate:
    // `slabscope serve` refuses it, and its log line quotes the file.
    let dir = OpenDir::new("serve-hostile");
    let mut data = fs::read(collector_support::fixture()).expect("reading the fixture");
    let (desc, _) = first_desc(&data);
    let decoy = {
        use object::ObjectSymbol as _;
        object::File::parse(&data[..])
            .expect("an ELF file")
            .symbols()
            .find(|s| s.name() == Ok("slabscope_fixture_decoy"))
            .expect("the fixture's decoy")
            .address()
    };
    data[desc..desc + 8].copy_from_slice(&(decoy + 2).to_le_bytes());
    let path = dir.0.join("h\x1b]0;pwned\x07\u{202e}evil");
    fs::write(&path, data).expect("writing the hostile copy");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    let fixture = Fixture::start_program(path, &["script"]);
    let pid = fixture.pid().to_string();

    let listen = free_listen();
    let mut serve = Slabscope::start(&["serve", "--listen", &listen, "--pid", &pid]);
    let line = loop {
        let mut line = String::new();
        let n = serve.stderr.read_line(&mut line).expect("reading stderr");
        assert!(n > 0, "slabscope serve ended:\n{}", serve.seen);
        serve.seen.push_str(&line);
        if line.contains("not tracing") {
            break line;
        }
    };
    // Counted with the other files it could not attach to.
    let metrics = metrics_page(&listen);
    serve.child.kill().expect("stopping slabscope serve");
    let _ = serve.finish_killed();
    fixture.kill();
    assert_eq!(
        metric(&metrics, "slabscope_exporter_attach_failures_total"),
        Some(1),
        "{metrics}"
    );

    let bad: Vec<char> = line
        .chars()
        .filter(|&c| c != '\n' && !terminal_safe(c))
        .collect();
    assert!(bad.is_empty(), "raw {bad:?} in: {line:?}");
    assert!(
        line.contains("h\\x1b]0;pwned\\x07\\u{202e}evil"),
        "the file is named with visible escapes: {line}"
    );
    assert!(
        line.contains("byte 2 of the 10-byte instruction mov"),
        "why it was refused: {line}"
    );
}

/// The caches of a JSON sample without the eBPF timestamps (each collector
/// takes its own), and so of its timing histograms only how many durations
/// of each kind were timed.
fn caches_without_time(doc: &Value) -> Value {
    let mut caches = doc["caches"].clone();
    for c in caches.as_array_mut().expect("caches array") {
        c["counters"]
            .as_object_mut()
            .expect("counters")
            .remove("last_ns");
        if let Some(hs) = c.get_mut("histograms").and_then(Value::as_array_mut) {
            for h in hs {
                *h = serde_json::json!({"kind": h["kind"], "count": h["count"]});
            }
        }
    }
    caches
}

#[test]
fn two_inspectors_on_one_target_agree_and_a_killed_one_disturbs_nothing() {
    if !root_or_skip("two_inspectors_on_one_target_agree_and_a_killed_one_disturbs_nothing") {
        return;
    }
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid().to_string();
    let args = ["--pid", &pid, "--json", "-d", "100ms"];
    let (mut a, mut b) = (Slabscope::start(&args), Slabscope::start(&args));
    a.wait_attached();
    b.wait_attached();
    let report = fixture.go();
    let (sa, oa, ea) = a.finish();
    let (sb, ob, eb) = b.finish();
    assert!(sa.success() && sb.success(), "{ea}\n{eb}");
    assert_clean(&oa, &ea);
    assert_clean(&ob, &eb);
    let (la, lb) = (json_lines(&oa), json_lines(&ob));
    let (la, lb) = (la.last().expect("lines"), lb.last().expect("lines"));
    assert_eq!(la["events_total"], report.fired);
    assert_eq!(lb["events_total"], report.fired);
    assert_eq!(caches_without_time(la), caches_without_time(lb));
    assert_counters_match(la, &report);

    // One inspector killed outright while attached: the other, and the
    // target, go on as if it had never been there.
    let fixture = Fixture::start(&["script"]);
    let pid = fixture.pid().to_string();
    let args = ["--pid", &pid, "--json", "-d", "100ms"];
    let (mut a, mut b) = (Slabscope::start(&args), Slabscope::start(&args));
    a.wait_attached();
    b.wait_attached();
    a.child.kill().expect("killing one inspector");
    let _ = a.finish_killed();
    let report = fixture.go();
    let (sb, ob, eb) = b.finish();
    assert!(sb.success(), "{eb}");
    let lines = json_lines(&ob);
    let last = lines.last().expect("lines");
    assert_eq!(last["events_total"], report.fired);
    assert_eq!(last["lost_events"], 0);
    assert_counters_match(last, &report);
}

/// The JSON `counters` object as `CacheCounters` (with `last_ns` 0, as the
/// fixture reports them).
/// Every cache of a `--json` document has exactly the counters the fixture
/// reported for it, and there are no others.
fn assert_counters_match(doc: &Value, report: &Report) {
    let caches = doc["caches"].as_array().expect("a caches array");
    assert_eq!(caches.len(), report.counters.len());
    for c in caches {
        let id = c["id"].as_u64().expect("cache id");
        assert_eq!(
            format!("{:?}", counters_of(&c["counters"])),
            report.counters[&id],
            "counters of cache {id:#x}"
        );
    }
}

fn counters_of(v: &Value) -> slabscope_probes::CacheCounters {
    let f = |name: &str| {
        v[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {v}"))
    };
    slabscope_probes::CacheCounters {
        creates: f("creates"),
        destroys: f("destroys"),
        grows: f("grows"),
        grows_done: f("grows_done"),
        grow_failures: f("grow_failures"),
        deadlocks: f("deadlocks"),
        emergency_allocs: f("emergency_allocs"),
        emergency_frees: f("emergency_frees"),
        reaps: f("reaps"),
        reap_slabs_released: f("reap_slabs_released"),
        reap_objs_released: f("reap_objs_released"),
        slab_reclaims: f("slab_reclaims"),
        slabs_released: f("slabs_released"),
        objs_released: f("objs_released"),
        stats: f("stats"),
        last_ns: 0,
    }
}

#[path = "../examples/fixture_data/hostile_names.rs"]
mod hostile_names;
use hostile_names::HOSTILE_NAMES;

/// Whether `c` may reach a terminal: printable ASCII, or a non-ASCII
/// character that is no control and no bidi or other format control.
fn terminal_safe(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    !c.is_control()
        && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[test]
fn hostile_cache_names_reach_the_terminal_escaped() {
    if !root_or_skip("hostile_cache_names_reach_the_terminal_escaped") {
        return;
    }
    // --once: one row per cache, each row one line, every column in place.
    let fixture = Fixture::start(&["hostile"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&["--pid", &pid, "--once"]);
    s.wait_attached();
    fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    for text in [&out, &err] {
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && !terminal_safe(c))
            .collect();
        assert!(bad.is_empty(), "raw {bad:?} in:\n{text}");
    }
    assert!(out.starts_with(PROC_SLAB_HEADER), "{out}");
    let rows: Vec<&str> = out[PROC_SLAB_HEADER.len()..].lines().collect();
    assert_eq!(rows.len(), HOSTILE_NAMES.len(), "one row per cache:\n{out}");
    for row in &rows {
        // `{name:<36}  0x...`: the flags column starts at column 38.
        let flags: String = row.chars().skip(38).take(2).collect();
        assert_eq!(flags, "0x", "a name moved the columns of {row:?}");
    }
    assert!(
        rows.iter().any(|r| r.starts_with("\\x1b]0;pwned\\x07 ")),
        "names are shown with visible escapes:\n{out}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("h_bidi\\u{202e}lave ")),
        "{out}"
    );

    // --json: pure ASCII, and the real names come back out of the parser.
    let fixture = Fixture::start(&["hostile"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&["--pid", &pid, "--json"]);
    s.wait_attached();
    fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    assert!(
        out.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "the JSON is not printable ASCII:\n{out}"
    );
    let doc: Value = serde_json::from_str(&out).expect("one JSON document");
    let mut names: Vec<&str> = doc["caches"]
        .as_array()
        .expect("caches")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    let mut expected = HOSTILE_NAMES.to_vec();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected, "JSON names are the real names");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn an_unreadable_snapshot_makes_up_no_cache_and_is_counted() {
    if !root_or_skip("an_unreadable_snapshot_makes_up_no_cache_and_is_counted") {
        return;
    }
    let fixture = Fixture::start(&["bad_snapshot"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&["--pid", &pid, "--json"]);
    s.wait_attached();
    let report = fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    assert_eq!(report.unreadable, 3);
    let doc: Value = serde_json::from_str(&out).expect("one JSON document");
    let caches = doc["caches"].as_array().expect("caches");
    let names: Vec<&Value> = caches.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, ["fixture_good"], "no made-up cache:\n{out}");
    assert_eq!(doc["unreadable_snapshots"], report.unreadable, "{out}");
    assert!(
        err.contains(
            "3 probe hits were ignored because the snapshot they point to could not be read"
        ),
        "{err}"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn serve_counts_unreadable_snapshots() {
    if !root_or_skip("serve_counts_unreadable_snapshots") {
        return;
    }
    let fixture = Fixture::start(&["bad_snapshot"]);
    let pid = fixture.pid().to_string();
    let listen = free_listen();
    let mut serve = Slabscope::start(&[
        "serve",
        "--listen",
        &listen,
        "--pid",
        &pid,
        "--sample-interval",
        "0.1",
    ]);
    let until = |what: &str, ok: &dyn Fn(&str) -> bool| -> String {
        let start = Instant::now();
        loop {
            let page = metrics_page(&listen);
            if ok(&page) {
                return page;
            }
            assert!(start.elapsed() < DEADLINE, "{what}:\n{page}");
            thread::sleep(Duration::from_millis(100));
        }
    };
    until("the fixture is never attached", &|p| {
        metric(p, "slabscope_exporter_attached_processes") == Some(1)
    });
    let report = fixture.go();
    assert_eq!(report.unreadable, 3);
    // The fixture has exited by now: the count outlives its series.
    until("the unreadable snapshots are never counted", &|p| {
        metric(p, "slabscope_exporter_unreadable_snapshots_total") == Some(report.unreadable)
    });
    serve.child.kill().expect("stopping slabscope serve");
    let _ = serve.finish_killed();
}

#[test]
fn a_target_that_execs_is_reported_as_such_not_as_exited() {
    if !root_or_skip("a_target_that_execs_is_reported_as_such_not_as_exited") {
        return;
    }
    let sleep = which("sleep");
    let fixture = Fixture::start(&["exec", &sleep.display().to_string(), "3"]);
    let pid = fixture.pid().to_string();
    let mut s = Slabscope::start(&["--pid", &pid, "--json", "-d", "100ms"]);
    s.wait_attached();
    let report = fixture.go();
    let (status, out, err) = s.finish();
    assert_clean(&out, &err);
    assert!(status.success(), "{status}:\n{err}");
    assert!(
        err.contains(&format!("pid {pid} exec'd ")) && err.contains("sleep while traced"),
        "the exec is reported:\n{err}"
    );
    assert!(
        !err.contains("exited while traced"),
        "not as an exit:\n{err}"
    );
    let docs = json_lines(&out);
    assert_counters_match(docs.last().expect("JSON lines"), &report);
}
