//! `cargo xtask fuzz`: coverage-guided fuzzing of the guest- and disk-facing parsers
//! and state machines with cargo-fuzz (libFuzzer), on a nightly toolchain used for
//! the fuzz build alone.
//!
//! - `cargo xtask fuzz list`: the targets (`fuzz/libfuzzer/fuzz_targets/*.rs`).
//! - `cargo xtask fuzz NAME [--time S] [--runs N] [-- LIBFUZZER_ARGS...]`: builds
//!   the target with `cargo fuzz` (ASan, optimised) and runs it for `S` seconds
//!   (`-max_total_time`, 60 by default) and/or `N` executions (`-runs`), starting
//!   from the seeds in `fuzz/corpus/NAME` and the crashers in `fuzz/regressions/NAME`.
//!   New inputs go to `target/fuzz-corpus/NAME` (not the repository), crashes to
//!   `fuzz/libfuzzer/artifacts/NAME/`. Ends with one line
//!   `fuzz NAME runs=… cov=… ft=… crashes=…` from libFuzzer's final statistics.
//!   `--sanitizer none` drops ASan (debug assertions and overflow checks stay): the
//!   targets are `forbid(unsafe_code)` crates, so ASan finds nothing their own
//!   checks miss there, and runs go about four times faster — the long runs use it.
//!
//! A missing nightly toolchain is installed with `rustup toolchain install nightly
//! --profile minimal`, a missing cargo-fuzz with `cargo install cargo-fuzz`; without
//! rustup the command stops with one line saying so. The target bodies live in
//! `fuzz/targets` (the `fuzz-targets` crate), which the stable `cargo test` replays
//! over the same corpus.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;
use crate::exec::{describe, run_step};
use crate::Layout;

/// The toolchain cargo-fuzz builds with (`-Zsanitizer` needs nightly).
pub const TOOLCHAIN: &str = "nightly";
/// Seconds a run lasts when neither `--time` nor `--runs` is given.
pub const DEFAULT_SECONDS: u64 = 60;

/// `cargo xtask fuzz` usage.
pub const USAGE: &str = "\
cargo xtask fuzz list
cargo xtask fuzz NAME [--time SECONDS] [--runs N] [--sanitizer address|none] [-- LIBFUZZER_ARGS...]";

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FuzzCommand {
    List,
    Run(RunOptions),
}

/// One fuzzing run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub target: String,
    /// `-max_total_time`.
    pub seconds: Option<u64>,
    /// `-runs`.
    pub runs: Option<u64>,
    /// cargo-fuzz's `--sanitizer`: `address` (the default) or `none`.
    pub sanitizer: Sanitizer,
    /// Passed to libFuzzer as they are.
    pub extra: Vec<String>,
}

/// The sanitizer a fuzz build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sanitizer {
    #[default]
    Address,
    None,
}

impl Sanitizer {
    /// cargo-fuzz's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }
}

/// Parses the arguments after `fuzz`.
pub fn parse_args(args: &[String]) -> Result<FuzzCommand, Error> {
    let usage = |why: &str| Error::Usage(format!("{why}\n{USAGE}"));
    let Some((first, rest)) = args.split_first() else {
        return Err(usage("fuzz needs a target name or `list`"));
    };
    if first == "list" {
        return match rest {
            [] => Ok(FuzzCommand::List),
            _ => Err(usage("fuzz list takes no arguments")),
        };
    }
    if first.starts_with('-') {
        return Err(usage(&format!("expected a target name, not `{first}`")));
    }
    let mut o = RunOptions {
        target: first.clone(),
        seconds: None,
        runs: None,
        sanitizer: Sanitizer::default(),
        extra: Vec::new(),
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<u64, Error> {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| usage(&format!("{flag} needs a positive number")))
        };
        match a.as_str() {
            "--time" => o.seconds = Some(number("--time")?),
            "--runs" => o.runs = Some(number("--runs")?),
            "--sanitizer" => {
                o.sanitizer = match it.next().map(String::as_str) {
                    Some("address") => Sanitizer::Address,
                    Some("none") => Sanitizer::None,
                    _ => return Err(usage("--sanitizer is `address` or `none`")),
                }
            }
            "--" => {
                o.extra = it.by_ref().cloned().collect();
            }
            other => return Err(usage(&format!("unknown option `{other}`"))),
        }
    }
    if o.seconds.is_none() && o.runs.is_none() {
        o.seconds = Some(DEFAULT_SECONDS);
    }
    Ok(FuzzCommand::Run(o))
}

/// The cargo-fuzz crate.
pub fn fuzz_dir(layout: &Layout) -> PathBuf {
    layout.root.join("fuzz/libfuzzer")
}

/// The fuzz targets: the `.rs` files of `fuzz_targets/` under `dir`, sorted.
pub fn targets_in(dir: &Path) -> Result<Vec<String>, Error> {
    let src = dir.join("fuzz_targets");
    let rd = std::fs::read_dir(&src).map_err(|e| Error::io(src.display().to_string(), e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The corpus folders of a run, the one new inputs go to first.
pub fn corpus_dirs(layout: &Layout, target: &str) -> Vec<PathBuf> {
    let mut dirs = vec![
        layout.out.join("fuzz-corpus").join(target),
        layout.root.join("fuzz/corpus").join(target),
    ];
    let regressions = layout.root.join("fuzz/regressions").join(target);
    if regressions.is_dir() {
        dirs.push(regressions);
    }
    dirs
}

/// libFuzzer's options for a run.
pub fn libfuzzer_args(o: &RunOptions) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(s) = o.seconds {
        v.push(format!("-max_total_time={s}"));
    }
    if let Some(n) = o.runs {
        v.push(format!("-runs={n}"));
    }
    // Print the final statistics the summary line reads.
    v.push("-print_final_stats=1".into());
    v.extend(o.extra.iter().cloned());
    v
}

/// What libFuzzer's output says about a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Executions (`Done N runs` or `stat::number_of_executed_units`).
    pub runs: Option<u64>,
    /// Coverage (`cov:`) and features (`ft:`) of the last status line.
    pub cov: Option<u64>,
    pub ft: Option<u64>,
    /// Inputs written because they broke the target (`Test unit written to …`).
    pub crashes: Vec<String>,
}

impl Stats {
    /// Folds one line of libFuzzer's output in.
    pub fn line(&mut self, l: &str) {
        let field = |key: &str| -> Option<u64> {
            let at = l.find(key)? + key.len();
            l[at..].split_whitespace().next()?.parse().ok()
        };
        if l.starts_with('#') {
            if let (Some(c), Some(f)) = (field("cov: "), field("ft: ")) {
                self.cov = Some(c);
                self.ft = Some(f);
            }
        }
        if let Some(n) = l.strip_prefix("Done ").and_then(|r| r.split(' ').next()) {
            self.runs = n.parse().ok().or(self.runs);
        }
        if l.starts_with("stat::number_of_executed_units:") {
            self.runs = field("units: ").or(self.runs);
        }
        if let Some(at) = l.find("Test unit written to ") {
            self.crashes
                .push(l[at + "Test unit written to ".len()..].trim().to_string());
        }
    }

    /// The closing `fuzz NAME key=value …` line.
    pub fn summary(&self, target: &str) -> String {
        let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        format!(
            "fuzz {target} runs={} cov={} ft={} crashes={}",
            n(self.runs),
            n(self.cov),
            n(self.ft),
            self.crashes.len()
        )
    }
}

/// `rustup run nightly ARGS…`, with the environment `cargo xtask` runs in (the
/// workspace toolchain, its cargo and target directory) removed.
fn nightly(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", TOOLCHAIN]).args(args);
    for v in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(v);
    }
    c
}

fn succeeds(mut c: Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure rustup's nightly toolchain and cargo-fuzz are there, installing what
/// is missing.
pub fn ensure_fuzz_tools(layout: &Layout) -> Result<(), Error> {
    let mut probe = Command::new("rustup");
    probe.arg("--version");
    if !succeeds(probe) {
        return Err(Error::step(
            "fuzz",
            "cargo xtask fuzz needs rustup (for a nightly toolchain next to the pinned one): see https://rustup.rs",
        ));
    }
    if !succeeds(nightly(&["rustc", "--version"])) {
        let mut c = Command::new("rustup");
        c.args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]);
        run_step("nightly toolchain", c, &layout.root, false)?;
    }
    if !succeeds(nightly(&["cargo", "fuzz", "--version"])) {
        run_step(
            "cargo-fuzz",
            nightly(&["cargo", "install", "cargo-fuzz", "--locked"]),
            &layout.root,
            false,
        )?;
    }
    Ok(())
}

/// Runs `cargo xtask fuzz ARGS`.
pub fn fuzz_cli(layout: &Layout, args: &[String]) -> Result<(), Error> {
    let dir = fuzz_dir(layout);
    let targets = targets_in(&dir)?;
    let o = match parse_args(args)? {
        FuzzCommand::List => {
            for t in &targets {
                println!("{t}");
            }
            return Ok(());
        }
        FuzzCommand::Run(o) => o,
    };
    if !targets.contains(&o.target) {
        return Err(Error::Usage(format!(
            "no fuzz target `{}`; known: {}",
            o.target,
            targets.join(", ")
        )));
    }
    ensure_fuzz_tools(layout)?;
    let corpora = corpus_dirs(layout, &o.target);
    std::fs::create_dir_all(&corpora[0])
        .map_err(|e| Error::io(corpora[0].display().to_string(), e))?;
    let mut c = nightly(&["cargo", "fuzz", "run", "--sanitizer", o.sanitizer.name()]);
    c.arg("--fuzz-dir")
        .arg(&dir)
        .arg(&o.target)
        .args(&corpora)
        .arg("--");
    c.args(libfuzzer_args(&o));
    c.current_dir(&layout.root).stderr(Stdio::piped());
    let command = describe(&c);
    eprintln!("xtask: fuzz: {command}");
    let mut child = c
        .spawn()
        .map_err(|e| Error::step("fuzz", format!("cannot run `{command}`: {e}")))?;
    let mut stats = Stats::default();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{l}");
            stats.line(&l);
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::step("fuzz", format!("`{command}`: {e}")))?;
    println!("{}", stats.summary(&o.target));
    if !stats.crashes.is_empty() {
        return Err(Error::step(
            "fuzz",
            format!(
                "{} broke an invariant; reproduce with `cargo fuzz run --fuzz-dir {} {} {}`, fix it, then keep the input in fuzz/regressions/{}",
                o.target,
                dir.display(),
                o.target,
                stats.crashes[0],
                o.target
            ),
        ));
    }
    if !status.success() {
        return Err(Error::Command {
            step: "fuzz".into(),
            command,
            code: status.code(),
            tail: String::new(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_list_and_runs() {
        assert_eq!(parse_args(&args("list")).unwrap(), FuzzCommand::List);
        assert_eq!(
            parse_args(&args("vgic_mmio --time 30")).unwrap(),
            FuzzCommand::Run(RunOptions {
                target: "vgic_mmio".into(),
                seconds: Some(30),
                runs: None,
                sanitizer: Sanitizer::Address,
                extra: vec![],
            })
        );
        assert_eq!(
            parse_args(&args(
                "tis --runs 10000000 --sanitizer none -- -jobs=1 -seed=7"
            ))
            .unwrap(),
            FuzzCommand::Run(RunOptions {
                target: "tis".into(),
                seconds: None,
                runs: Some(10_000_000),
                sanitizer: Sanitizer::None,
                extra: args("-jobs=1 -seed=7"),
            })
        );
        // Neither bound: the default time.
        let FuzzCommand::Run(o) = parse_args(&args("crb")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.seconds, Some(DEFAULT_SECONDS));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            "",
            "list x",
            "--time 5",
            "tis --time",
            "tis --time 0",
            "tis --time x",
            "tis --jobs 2",
            "tis --sanitizer",
            "tis --sanitizer memory",
        ] {
            assert!(
                matches!(parse_args(&args(bad)), Err(Error::Usage(_))),
                "accepted `{bad}`"
            );
        }
    }

    #[test]
    fn libfuzzer_options_follow_the_arguments() {
        let FuzzCommand::Run(o) =
            parse_args(&args("nv_image --time 9 --runs 5 -- -jobs=1")).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(
            libfuzzer_args(&o),
            args("-max_total_time=9 -runs=5 -print_final_stats=1 -jobs=1")
        );
    }

    #[test]
    fn reads_final_statistics_and_crashes() {
        let mut s = Stats::default();
        for l in [
            "INFO: Seed: 1234",
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#4096\tpulse  cov: 812 ft: 2304 corp: 77/3Kb lim: 43 exec/s: 2048 rss: 40Mb",
            "#10000000\tDONE   cov: 845 ft: 2511 corp: 90/4Kb lim: 4096 exec/s: 9000 rss: 60Mb",
            "Done 10000000 runs in 1111 second(s)",
            "stat::number_of_executed_units: 10000000",
        ] {
            s.line(l);
        }
        assert_eq!(
            s.summary("tis"),
            "fuzz tis runs=10000000 cov=845 ft=2511 crashes=0"
        );
        s.line("artifact_prefix='fuzz/libfuzzer/artifacts/tis/'; Test unit written to fuzz/libfuzzer/artifacts/tis/crash-abc");
        assert_eq!(
            s.crashes,
            vec!["fuzz/libfuzzer/artifacts/tis/crash-abc".to_string()]
        );
        assert!(s.summary("tis").ends_with("crashes=1"));
        assert_eq!(
            Stats::default().summary("x"),
            "fuzz x runs=? cov=? ft=? crashes=0"
        );
    }

    #[test]
    fn lists_the_repository_targets_with_their_corpora() {
        let layout = Layout::detect();
        let targets = targets_in(&fuzz_dir(&layout)).unwrap();
        assert!(targets.len() >= 8, "{targets:?}");
        for t in [
            "virtio_mmio",
            "vgic_mmio",
            "tpm_dispatch",
            "tis",
            "crb",
            "nv_image",
            "registry",
            "boot_bundle",
            "nvme",
        ] {
            assert!(
                targets.iter().any(|x| x == t),
                "{t} missing from {targets:?}"
            );
        }
        for t in &targets {
            let dirs = corpus_dirs(&layout, t);
            assert!(
                dirs[0].starts_with(&layout.out),
                "new inputs stay out of the repository"
            );
            assert!(dirs[1].is_dir(), "no seed corpus for {t}");
        }
    }
}
