//! The suite's tests (`cargo xtask test`'s last step), several test executables
//! at a time. `cargo test` runs its executables one after another, and most of
//! the suite's time is QEMU emulating one machine on one host core while the
//! other cores idle. Here the executables `cargo test --no-run` builds (plus the
//! doc tests) run as jobs, as many at once as the host has cores (at most
//! [`MAX_JOBS`]), longest first by the last run's durations (`target/
//! test-durations.tsv`, else the committed hint `tests/durations.tsv`).
//!
//! Inside one executable nothing changes: its tests run as under `cargo test`,
//! and the QEMU tests of one file still take turns (`tests::boot_lock`), since
//! they share that file's system disks. Executables that run at the same time
//! share only what is safe to share: the build (behind xtask's build lock), the
//! fetched caches (filled once, before any job starts: [`warm_caches`]), and
//! files each run rewrites whole (bundles, ESPs, boot disks, variable stores:
//! written beside and renamed into place, so a machine already running keeps
//! the file it opened).
//!
//! Each job's output is printed in one piece when it ends, under a header that
//! names it; a job still running after [`JOB_LIMIT`] is killed with its whole
//! process group (its QEMU too), and its output so far is printed. The last line
//! sums up the `test result:` lines of every job.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::exec::cargo;
use crate::Layout;

/// At most this many jobs at once, whatever the host: every QEMU test wants
/// a core and up to a few GiB.
pub const MAX_JOBS: usize = 4;

/// A job running longer than this is killed and fails: a backstop for a test
/// that hangs outside QEMU (every boot has its own timeout). The longest
/// executable takes about ten minutes on a quiet two-core host and more than
/// thirty on a loaded one; CI allows ninety for the whole suite.
pub const JOB_LIMIT: Duration = Duration::from_secs(60 * 60);

/// How long a job's output is still read after it ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// Expected seconds of a job that neither durations file names: a new QEMU test
/// file is assumed long (started early), anything else short.
const UNKNOWN_QEMU_SECS: u64 = 120;
const UNKNOWN_SECS: u64 = 1;

/// The committed scheduling hint, relative to the workspace root.
pub const HINT_FILE: &str = "tests/durations.tsv";
/// The last run's measured durations, under `target/`.
pub const MEASURED_FILE: &str = "test-durations.tsv";

/// Environment variable the pool sets for its jobs: the file every captured
/// boot appends a line to ([`log_boot`]).
pub const BOOT_LOG_ENV: &str = "RAYOS_BOOT_LOG";
/// That file, under `target/`: one line per boot of the last run, `seconds`,
/// the test (its thread's name), the executable and how the boot ended.
pub const BOOT_LOG_FILE: &str = "test-boots.tsv";
/// The boot log of this run, once the pool has started it afresh.
static BOOT_LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
/// Slowest boots the pool lists when it ends.
const SLOWEST_BOOTS: usize = 12;

/// Appends `elapsed` and `ending` of a captured boot to [`BOOT_LOG_ENV`]'s file,
/// when set, naming the test (libtest names each test's thread after it): where
/// the suite's time goes, boot by boot. A line is one `write` in append mode,
/// so jobs running at once never interleave within a line.
pub fn log_boot(elapsed: Duration, ending: &crate::run::Ending) {
    let Some(path) = std::env::var_os(BOOT_LOG_ENV) else {
        return;
    };
    let exe = std::env::args()
        .next()
        .map(|a| {
            let name = Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            // `display-0123abcd` → `display`
            let name = name.unwrap_or(a);
            match name.rsplit_once('-') {
                Some((stem, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    stem.to_string()
                }
                _ => name,
            }
        })
        .unwrap_or_default();
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let ending = format!("{ending:?}").replace(['\t', '\n'], " ");
    let line = format!("{:.1}\t{test}\t{exe}\t{ending}\n", elapsed.as_secs_f64());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The [`SLOWEST_BOOTS`] slowest lines of a boot log, slowest first.
fn slowest_boots(log: &str) -> Vec<&str> {
    let mut lines: Vec<(f64, &str)> = log
        .lines()
        .filter_map(|l| Some((l.split('\t').next()?.parse().ok()?, l)))
        .collect();
    lines.sort_by(|a, b| b.0.total_cmp(&a.0));
    lines
        .into_iter()
        .take(SLOWEST_BOOTS)
        .map(|(_, l)| l)
        .collect()
}

/// The label of the doc-test job.
pub const DOCTESTS: &str = "doctests";

/// One test executable (or the doc tests) to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The test target's source file relative to the workspace root
    /// (`tests/tests/uefi.rs`, `vtpm/src/lib.rs`), or [`DOCTESTS`].
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Where it runs: its package's folder, as under `cargo test`.
    pub dir: PathBuf,
}

/// How one job ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

/// Sums the `test result: ok. 5 passed; 0 failed; 1 ignored; …` lines of `text`.
pub fn tally(text: &str) -> Tally {
    let mut t = Tally::default();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let (n, what) = match words.as_slice() {
                [_, n, what] | [n, what] => (*n, *what),
                _ => continue,
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => t.passed += n,
                "failed" => t.failed += n,
                "ignored" => t.ignored += n,
                _ => {}
            }
        }
    }
    t
}

/// The test executables of cargo's JSON messages (`--message-format=json`):
/// every artifact built for testing that has an executable, labelled by its
/// source file relative to `root`.
pub fn parse_artifacts(json_lines: &str, root: &Path) -> Result<Vec<Job>, String> {
    let mut jobs = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("cargo's message `{line}`: {e}"))?;
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let src = v["target"]["src_path"]
            .as_str()
            .ok_or_else(|| format!("artifact {exe} has no target.src_path"))?;
        let manifest = v["manifest_path"]
            .as_str()
            .ok_or_else(|| format!("artifact {exe} has no manifest_path"))?;
        let src = Path::new(src);
        let label = src.strip_prefix(root).unwrap_or(src).display().to_string();
        let dir = Path::new(manifest)
            .parent()
            .ok_or_else(|| format!("manifest path {manifest} has no folder"))?
            .to_path_buf();
        jobs.push(Job {
            label,
            program: PathBuf::from(exe),
            args: Vec::new(),
            dir,
        });
    }
    jobs.sort_by(|a, b| a.label.cmp(&b.label));
    jobs.dedup_by(|a, b| a.label == b.label && a.program == b.program);
    Ok(jobs)
}

/// `label<TAB>seconds` lines (the durations files); other lines are skipped.
pub fn parse_durations(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (label, secs) = l.split_once('\t')?;
            Some((label.trim().to_string(), secs.trim().parse().ok()?))
        })
        .collect()
}

/// What [`parse_durations`] reads.
pub fn render_durations(d: &BTreeMap<String, u64>) -> String {
    d.iter().map(|(l, s)| format!("{l}\t{s}\n")).collect()
}

/// The expected seconds of `label`.
fn expected(label: &str, known: &BTreeMap<String, u64>) -> u64 {
    known.get(label).copied().unwrap_or_else(|| {
        if label.starts_with("tests/tests/") {
            UNKNOWN_QEMU_SECS
        } else {
            UNKNOWN_SECS
        }
    })
}

/// `jobs` longest first (by `known`), ties by label.
pub fn order(mut jobs: Vec<Job>, known: &BTreeMap<String, u64>) -> Vec<Job> {
    jobs.sort_by(|a, b| {
        expected(&b.label, known)
            .cmp(&expected(&a.label, known))
            .then_with(|| a.label.cmp(&b.label))
    });
    jobs
}

/// How many jobs run at once on this host.
pub fn jobs_at_once() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_JOBS)
}

/// Fills the caches the QEMU tests read (the Linux guest, AAVMF, the signed
/// boot chain) before any job starts, so that jobs running at once only ever
/// read them (on a fresh machine each would otherwise fetch into the same
/// folder).
pub fn warm_caches(layout: &Layout) -> Result<(), Error> {
    crate::linux_guest::ensure_linux_guest(&layout.guest_cache())
        .map_err(|e| Error::step("linux guest", e))?;
    crate::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
        .map_err(|e| Error::step("fetch AAVMF", e))?;
    crate::boot_chain::ensure_signed_chain(layout).map_err(|e| Error::step("boot chain", e))?;
    Ok(())
}

/// Builds the test executables (`cargo test --no-run FEATURES`) and lists them.
fn build_jobs(layout: &Layout, features: &str) -> Result<Vec<Job>, Error> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--no-run",
        "--features",
        features,
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(&layout.root)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    eprintln!("xtask: tests: building the test executables (cargo test --no-run)");
    let out = cmd
        .output()
        .map_err(|e| Error::step("cargo test --no-run", format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(Error::step(
            "cargo test --no-run",
            format!("the build failed ({})", out.status),
        ));
    }
    let mut jobs = parse_artifacts(&String::from_utf8_lossy(&out.stdout), &layout.root)
        .map_err(|e| Error::step("cargo test --no-run", e))?;
    jobs.push(Job {
        label: DOCTESTS.into(),
        program: cargo().get_program().into(),
        args: ["test", "--doc", "--features", features]
            .map(String::from)
            .to_vec(),
        dir: layout.root.clone(),
    });
    Ok(jobs)
}

/// One finished job.
struct Done {
    label: String,
    secs: u64,
    ok: bool,
    tally: Tally,
}

/// Runs `job` with its stdout and stderr in one pipe; returns whether it
/// passed and everything it printed. Killed (with its process group) after
/// [`JOB_LIMIT`].
fn run_job(job: &Job) -> (bool, String) {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return (false, format!("xtask: cannot make a pipe: {e}\n")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return (false, format!("xtask: cannot clone a pipe: {e}\n")),
    };
    let mut cmd = Command::new(&job.program);
    cmd.args(&job.args)
        .env(crate::qemu::TCG_THREAD_ENV, "single")
        .current_dir(&job.dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2);
    if let Some(log) = BOOT_LOG.get() {
        cmd.env(BOOT_LOG_ENV, log);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                false,
                format!("xtask: cannot run {}: {e}\n", job.program.display()),
            )
        }
    };
    // The pipe's write ends now live only in the child (and its children).
    drop(cmd);
    let text = std::sync::Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let collector = std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = sink.lock() {
                t.push_str(&String::from_utf8_lossy(&buf));
            }
            buf.clear();
        }
    });
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > JOB_LIMIT && !killed => {
                // Its QEMU machines share its process group.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                killed = true;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => break None,
        }
    };
    // A process it left behind may hold the pipe open: its output is not
    // waited for beyond a grace period.
    let ended = Instant::now();
    while !collector.is_finished() && ended.elapsed() < OUTPUT_GRACE {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut text = text.lock().map(|t| t.clone()).unwrap_or_default();
    if !collector.is_finished() {
        text.push_str(&format!(
            "xtask: {} ended but a process it started still holds its output open (not waited for)\n",
            job.label
        ));
    }
    if killed {
        text.push_str(&format!(
            "xtask: {} was still running after {} s and was killed with its process group\n",
            job.label,
            JOB_LIMIT.as_secs()
        ));
    }
    let ok = !killed && status.is_some_and(|s| s.success());
    if let (false, Some(s)) = (ok, status) {
        text.push_str(&format!("xtask: {} ended with {s}\n", job.label));
    }
    (ok, text)
}

/// Runs `jobs` on `workers` threads, taking them in order; prints each job's
/// output in one piece when it ends.
fn run_all(jobs: Vec<Job>, workers: usize, known: &BTreeMap<String, u64>) -> Vec<Done> {
    let total = jobs.len();
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    let out = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while let Some(job) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) {
                if expected(&job.label, known) >= 10 {
                    eprintln!(
                        "xtask: tests: started {} (about {} s last time)",
                        job.label,
                        expected(&job.label, known)
                    );
                }
                let t = Instant::now();
                let (ok, text) = run_job(&job);
                let secs = t.elapsed().as_secs();
                let tally = tally(&text);
                {
                    let _o = out.lock();
                    let mut so = std::io::stdout().lock();
                    let _ = writeln!(so, "──── {} ({secs} s) ────", job.label);
                    let _ = so.write_all(text.as_bytes());
                    let n = done.lock().map(|d| d.len() + 1).unwrap_or(0);
                    let _ = writeln!(
                        so,
                        "──── {} {} in {secs} s: {} passed, {} failed, {} ignored [{n}/{total}] ────",
                        job.label,
                        if ok { "ok" } else { "FAILED" },
                        tally.passed,
                        tally.failed,
                        tally.ignored
                    );
                    let _ = so.flush();
                }
                if let Ok(mut d) = done.lock() {
                    d.push(Done {
                        label: job.label,
                        secs,
                        ok,
                        tally,
                    });
                }
                }
            });
        }
    });
    done.into_inner().unwrap_or_default()
}

/// The durations known before this run: the last run's, else the committed hint.
fn known_durations(layout: &Layout) -> BTreeMap<String, u64> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|t| parse_durations(&t));
    read(layout.out.join(MEASURED_FILE))
        .or_else(|| read(layout.root.join(HINT_FILE)))
        .unwrap_or_default()
}

/// `cargo xtask test-pool --features F` (the suite runs it in the fresh-host
/// namespace): builds, warms the caches, runs every job, sums up.
pub fn test_pool_cli(layout: &Layout, features: &str) -> Result<(), Error> {
    let start = Instant::now();
    let jobs = build_jobs(layout, features)?;
    warm_caches(layout)?;
    let known = known_durations(layout);
    let workers = jobs_at_once();
    let boot_log = layout.out.join(BOOT_LOG_FILE);
    let _ = std::fs::remove_file(&boot_log);
    let _ = BOOT_LOG.set(boot_log.clone());
    let n = jobs.len();
    eprintln!("xtask: tests: {n} jobs, {workers} at a time, longest first");
    let done = run_all(order(jobs, &known), workers, &known);

    let mut measured = known;
    for d in &done {
        measured.insert(d.label.clone(), d.secs);
    }
    let _ = crate::build::write_atomic(
        &layout.out.join(MEASURED_FILE),
        render_durations(&measured).as_bytes(),
    );
    if let Ok(log) = std::fs::read_to_string(&boot_log) {
        let n = log.lines().count();
        println!(
            "xtask: tests: {n} QEMU boots (all in {}); the slowest:",
            boot_log.display()
        );
        for l in slowest_boots(&log) {
            println!("  {}", l.replace('\t', "  "));
        }
    }
    let mut sum = Tally::default();
    for d in &done {
        sum.passed += d.tally.passed;
        sum.failed += d.tally.failed;
        sum.ignored += d.tally.ignored;
    }
    let failed: Vec<&str> = done
        .iter()
        .filter(|d| !d.ok)
        .map(|d| d.label.as_str())
        .collect();
    let missing = n - done.len();
    println!(
        "xtask: tests: {} passed, {} failed, {} ignored in {} jobs ({workers} at a time) in {} s{}",
        sum.passed,
        sum.failed,
        sum.ignored,
        done.len(),
        start.elapsed().as_secs(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; FAILED: {}", failed.join(", "))
        }
    );
    if failed.is_empty() && missing == 0 {
        Ok(())
    } else if missing != 0 {
        Err(Error::step("tests", format!("{missing} job(s) never ran")))
    } else {
        Err(Error::step(
            "tests",
            format!("failed: {}", failed.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_boots_come_first_and_bad_lines_are_skipped() {
        let log = "12.5\ta\tuefi\tScriptDone\nnot a line\n300.0\tb\tuefi\tExited(Some(0))\n\n7\tc\tlinux\tScriptDone\n";
        assert_eq!(
            slowest_boots(log),
            [
                "300.0\tb\tuefi\tExited(Some(0))",
                "12.5\ta\tuefi\tScriptDone",
                "7\tc\tlinux\tScriptDone"
            ]
        );
        let many: String = (0..40).map(|i| format!("{i}\tt{i}\tx\tok\n")).collect();
        let top = slowest_boots(&many);
        assert_eq!(top.len(), SLOWEST_BOOTS);
        assert!(top[0].starts_with("39\t"));
    }

    #[test]
    fn tally_sums_every_result_line() {
        let text = "running 3 tests\n\
test a ... ok\n\
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
\n\
test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3s\n\
test result: nonsense\n";
        assert_eq!(
            tally(text),
            Tally {
                passed: 6,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(tally("no results"), Tally::default());
    }

    #[test]
    fn artifacts_become_jobs_labelled_by_source() {
        let root = Path::new("/ws");
        let msgs = r#"{"reason":"compiler-artifact","package_id":"path+file:///ws/vtpm#0.1.0","manifest_path":"/ws/vtpm/Cargo.toml","target":{"kind":["lib"],"name":"vtpm","src_path":"/ws/vtpm/src/lib.rs"},"profile":{"test":true},"executable":"/ws/target/debug/deps/vtpm-1"}
{"reason":"compiler-artifact","manifest_path":"/ws/vtpm/Cargo.toml","target":{"kind":["lib"],"name":"vtpm","src_path":"/ws/vtpm/src/lib.rs"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","manifest_path":"/ws/tests/Cargo.toml","target":{"kind":["test"],"name":"uefi","src_path":"/ws/tests/tests/uefi.rs"},"profile":{"test":true},"executable":"/ws/target/debug/deps/uefi-2"}
{"reason":"build-finished","success":true}
"#;
        let jobs = parse_artifacts(msgs, root).unwrap();
        assert_eq!(
            jobs,
            vec![
                Job {
                    label: "tests/tests/uefi.rs".into(),
                    program: "/ws/target/debug/deps/uefi-2".into(),
                    args: vec![],
                    dir: "/ws/tests".into(),
                },
                Job {
                    label: "vtpm/src/lib.rs".into(),
                    program: "/ws/target/debug/deps/vtpm-1".into(),
                    args: vec![],
                    dir: "/ws/vtpm".into(),
                },
            ]
        );
        assert!(parse_artifacts("{not json", root).is_err());
    }

    #[test]
    fn longest_first_with_unknown_qemu_files_early() {
        let job = |l: &str| Job {
            label: l.into(),
            program: PathBuf::new(),
            args: vec![],
            dir: PathBuf::new(),
        };
        let known =
            parse_durations("tests/tests/uefi.rs\t580\nvtpm/src/lib.rs\t12\ngarbage\nx\tnan\n");
        assert_eq!(known.len(), 2);
        let ordered = order(
            vec![
                job("a/src/lib.rs"),
                job("vtpm/src/lib.rs"),
                job("tests/tests/new.rs"),
                job("tests/tests/uefi.rs"),
            ],
            &known,
        );
        let labels: Vec<&str> = ordered.iter().map(|j| j.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "tests/tests/uefi.rs",
                "tests/tests/new.rs",
                "vtpm/src/lib.rs",
                "a/src/lib.rs"
            ]
        );
        assert_eq!(parse_durations(&render_durations(&known)), known);
    }

    #[test]
    fn a_job_output_and_status_are_collected() {
        let job = |script: &str| Job {
            label: "sh".into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            dir: std::env::temp_dir(),
        };
        let (ok, text) = run_job(&job("echo out; echo err >&2"));
        assert!(ok);
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        let (ok, text) = run_job(&job("echo partial; exit 3"));
        assert!(!ok);
        assert!(
            text.contains("partial") && text.contains("ended with"),
            "{text}"
        );
        // A child that keeps the pipe open past its parent does not lose output.
        let (ok, text) = run_job(&job("(sleep 0.2; echo late) & echo early"));
        assert!(
            ok && text.contains("late") && text.contains("early"),
            "{text}"
        );
    }
}
