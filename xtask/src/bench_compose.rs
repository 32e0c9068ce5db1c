//! `cargo xtask bench compose`: the compositor on the host, built `--release`
//! (the `compose-bench` example of the `compositor` crate). It composes a 1920×1080
//! guest surface into a 2560×1440 output with a cursor and a status-bar overlay —
//! full frame unscaled, full frame scaled bilinearly to fill the output, and
//! damage-only after a 64×64 change — each against a plain copy of the output frame
//! timed interleaved in the same run (medians of 15 rounds).
//!
//! Targets: full frame ≤ 2× the copy, bilinear ≤ 4×, damage-only proportional to the
//! damaged area (`… x proportional` near 1).
//!
//! Then the `bench-compose` guest composes the same scene shrunk to a 640×360
//! output under the hypervisor with `-icount shift=0` and counts aarch64
//! instructions with the PMU (the guest's copy of the frame is printed beside them
//! as the baseline). The guest is built here for the hypervisor's own target,
//! `aarch64-unknown-none-softfloat` (in its own target directory, so the
//! hypervisor's build is not disturbed), so its figures are the code EL2 runs:
//! `compose` as the soft-float target compiles it (byte loops a byte at a time,
//! `scalar_insns_per_pixel`) and `compose_with` el2's NEON kernels (`el2/src/simd.rs`),
//! what the render loop runs with FP/SIMD saved around it (`insns_per_pixel`, the
//! unscaled full frame, and `bilinear_insns_per_pixel`). The guest checks that both
//! produce identical frames and that the kernels pass `compositor::kernels::verify`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::build::flatten;
use crate::error::Error;
use crate::exec::{cargo, run_step};
use crate::layout::{GUEST_PACKAGE, HYP_TARGET};
use crate::run::{run_captured, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// Prefix of the guest's result line.
pub const GUEST_PREFIX: &str = "bench-compose: ";
/// The guest's binary in [`GUEST_PACKAGE`].
const GUEST_BIN: &str = "bench-compose";
/// Timeout of the guest run.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Prefix of the example's result line.
pub const PREFIX: &str = "compose-bench: ";

/// The figures `compose-bench` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComposeSample {
    pub memcpy_ns: f64,
    pub full_ns: f64,
    pub bilinear_ns: f64,
    pub damage_ns: f64,
    pub damage_pixels: f64,
    pub output_pixels: f64,
}

/// The figures the `bench-compose` guest prints (instruction counts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestSample {
    pub output_pixels: f64,
    pub memcpy_insns: f64,
    pub full_insns: f64,
    pub bilinear_insns: f64,
    pub damage_insns: f64,
    pub damage_pixels: f64,
    /// The same compositions with el2's NEON kernels.
    pub neon_full_insns: f64,
    pub neon_bilinear_insns: f64,
    pub neon_damage_insns: f64,
}

/// The last line starting with `prefix` that has `key=`, and a reader of its
/// positive numeric fields.
fn fields<'a>(
    output: &'a str,
    prefix: &str,
    key: &str,
) -> Result<impl Fn(&str) -> Result<f64, String> + 'a, String> {
    let line = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(prefix))
        .rfind(|rest| rest.split_whitespace().any(|kv| kv.starts_with(key)))
        .ok_or(format!("no `{prefix}{key}=…` line"))?;
    Ok(move |key: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or(format!("`{key}` missing in `{line}`"))?
            .parse::<f64>()
            .map_err(|e| format!("`{key}`: {e}"))
            .and_then(|v| {
                (v.is_finite() && v > 0.0)
                    .then_some(v)
                    .ok_or(format!("`{key}` is not a positive number"))
            })
    })
}

/// Reads the last `compose-bench: …` line of the example's output.
pub fn parse(output: &str) -> Result<ComposeSample, String> {
    let field = fields(output, PREFIX, "memcpy_ns")?;
    Ok(ComposeSample {
        memcpy_ns: field("memcpy_ns")?,
        full_ns: field("full_ns")?,
        bilinear_ns: field("bilinear_ns")?,
        damage_ns: field("damage_ns")?,
        damage_pixels: field("damage_pixels")?,
        output_pixels: field("output_pixels")?,
    })
}

/// Reads the last `bench-compose: …` line of the guest's console.
pub fn parse_guest(console: &str) -> Result<GuestSample, String> {
    let field = fields(console, GUEST_PREFIX, "output_pixels")?;
    Ok(GuestSample {
        output_pixels: field("output_pixels")?,
        memcpy_insns: field("memcpy_insns")?,
        full_insns: field("full_insns")?,
        bilinear_insns: field("bilinear_insns")?,
        damage_insns: field("damage_insns")?,
        damage_pixels: field("damage_pixels")?,
        neon_full_insns: field("neon_full_insns")?,
        neon_bilinear_insns: field("neon_bilinear_insns")?,
        neon_damage_insns: field("neon_damage_insns")?,
    })
}

/// Reads the guest line's `same=` (the two composers' frames identical),
/// `kernels_ok=` (the NEON kernels verified) and `target=` (what the guest was
/// built for); an error unless both are 1 and the build was soft-float, so that the
/// figures are EL2's.
pub fn check_guest(console: &str) -> Result<(), String> {
    let line = console
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(GUEST_PREFIX))
        .rfind(|rest| rest.contains("output_pixels="))
        .ok_or("no guest result line")?;
    let value = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    };
    if value("same") != Some("1") {
        return Err(format!(
            "the portable and the NEON kernels composed different frames: `{line}`"
        ));
    }
    if value("kernels_ok") != Some("1") {
        return Err(format!(
            "the NEON kernels failed compositor::kernels::verify: `{line}`"
        ));
    }
    if value("target") != Some("softfloat") {
        return Err(format!("the guest was not built soft-float: `{line}`"));
    }
    Ok(())
}

/// The report lines, the last one the headline; without a guest sample the
/// instruction figure is `not-measured`.
pub fn report(s: &ComposeSample, g: Option<&GuestSample>) -> Vec<String> {
    let area = s.damage_pixels / s.output_pixels;
    let damage = s.damage_ns / s.memcpy_ns;
    let mut lines = vec![
        format!(
            "memcpy of the 2560x1440 output: {:.2} ms ({:.0} fps)",
            s.memcpy_ns / 1e6,
            1e9 / s.memcpy_ns
        ),
        format!(
            "full frame, scale 1: {:.2} ms ({:.0} fps)",
            s.full_ns / 1e6,
            1e9 / s.full_ns
        ),
        format!(
            "full frame, bilinear 1920x1080 -> 2560x1440: {:.2} ms ({:.0} fps)",
            s.bilinear_ns / 1e6,
            1e9 / s.bilinear_ns
        ),
        format!(
            "damage-only (64x64 change, {} px recomposed = {:.4} of the frame): {:.1} us ({:.0} fps), {:.2}x proportional",
            s.damage_pixels,
            area,
            s.damage_ns / 1e3,
            1e9 / s.damage_ns,
            damage / area
        ),
    ];
    let insns = match g {
        Some(g) => {
            let per = |insns: f64| insns / g.output_pixels;
            lines.push(format!(
                "aarch64 under -icount, soft-float EL2 code ({} px output): copy {:.2} insns/px; portable: full frame {:.2}, bilinear {:.2}, damage-only {:.2} per recomposed px; NEON kernels (the render loop's): full frame {:.2}, bilinear {:.2}, damage-only {:.2}",
                g.output_pixels,
                per(g.memcpy_insns),
                per(g.full_insns),
                per(g.bilinear_insns),
                g.damage_insns / g.damage_pixels,
                per(g.neon_full_insns),
                per(g.neon_bilinear_insns),
                g.neon_damage_insns / g.damage_pixels
            ));
            format!(
                "{:.2} bilinear_insns_per_pixel={:.2} scalar_insns_per_pixel={:.2} scalar_bilinear_insns_per_pixel={:.2}",
                per(g.neon_full_insns),
                per(g.neon_bilinear_insns),
                per(g.full_insns),
                per(g.bilinear_insns)
            )
        }
        None => "not-measured".to_string(),
    };
    lines.push(format!(
        "compose full_vs_memcpy={:.2} bilinear_vs_memcpy={:.2} damage_vs_memcpy={:.5} insns_per_pixel={insns}",
        s.full_ns / s.memcpy_ns,
        s.bilinear_ns / s.memcpy_ns,
        damage
    ));
    lines
}

/// Builds the `bench-compose` guest for the hypervisor's target into
/// `target/softfloat-guest` and flattens it; returns the image's path.
fn build_softfloat_guest(layout: &Layout) -> Result<PathBuf, Error> {
    let dir = layout.root.join("target").join("softfloat-guest");
    let mut cmd = cargo();
    cmd.args([
        "build",
        "-p",
        GUEST_PACKAGE,
        "--bin",
        GUEST_BIN,
        "--release",
        "--target",
        HYP_TARGET,
    ])
    .env("CARGO_TARGET_DIR", &dir)
    // The workspace's flags for this target are the hypervisor's (position
    // independent); the guest is linked at a fixed address.
    .env("RUSTFLAGS", "-C force-frame-pointers=yes");
    run_step(
        "build the soft-float compose guest",
        cmd,
        &layout.root,
        true,
    )?;
    let elf = dir.join(HYP_TARGET).join("release").join(GUEST_BIN);
    let out = layout.guest_image("bench-compose-softfloat");
    flatten(&elf, &out, false)?;
    Ok(out)
}

/// Runs the `bench-compose` guest under the hypervisor with `-icount`.
fn run_guest(layout: &Layout) -> Result<GuestSample, Error> {
    let mut o = RunOptions::headless(Guest::BenchCompose, GUEST_TIMEOUT);
    o.kernel = Some(build_softfloat_guest(layout)?);
    o.icount = true;
    o.quiet = false;
    let outcome = run_captured(layout, &o)?;
    outcome
        .verdict()
        .and_then(|()| check_guest(&outcome.console))
        .and_then(|()| parse_guest(&outcome.console))
        .map_err(|reason| {
            eprintln!(
                "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
                outcome.console_tail(CONSOLE_TAIL_LINES)
            );
            Error::step("compose bench (guest)", reason)
        })
}

/// `cargo xtask bench compose`.
pub fn run_compose(layout: &Layout) -> Result<String, Error> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&layout.root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "compositor",
            "--example",
            "compose-bench",
        ])
        .output()
        .map_err(|e| Error::io("cargo run compose-bench", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::step(
            "compose bench",
            format!(
                "compose-bench failed: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let sample = parse(&stdout).map_err(|e| Error::step("compose bench", e))?;
    let guest = run_guest(layout)?;
    let mut lines = report(&sample, Some(&guest));
    let headline = lines.pop().unwrap_or_default();
    for l in lines {
        println!("{l}");
    }
    Ok(headline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example_line_and_forms_ratios() {
        let out = "noise\ncompose-bench: memcpy_ns=1000 full_ns=1500 bilinear_ns=4000 damage_ns=2 damage_pixels=10 output_pixels=10000\n";
        let s = parse(out).unwrap();
        assert_eq!(s.full_ns, 1500.0);
        let lines = report(&s, None);
        assert_eq!(
            lines.last().unwrap(),
            "compose full_vs_memcpy=1.50 bilinear_vs_memcpy=4.00 damage_vs_memcpy=0.00200 insns_per_pixel=not-measured"
        );
        assert!(lines[3].contains("2.00x proportional"), "{}", lines[3]);
        assert!(parse("compose-bench: memcpy_ns=0 full_ns=1").is_err());
        assert!(parse("nothing").is_err());
        let console = "[el2 vm0] bench-compose: up\nbench-compose: output_pixels=100 memcpy_insns=200 full_insns=1250 bilinear_insns=9000 damage_insns=300 damage_pixels=10 neon_full_insns=500 neon_bilinear_insns=2000 neon_damage_insns=100 same=1 kernels_ok=1 target=softfloat\n";
        let g = parse_guest(console).unwrap();
        assert_eq!(check_guest(console), Ok(()));
        let lines = report(&s, Some(&g));
        assert!(
            lines.last().unwrap().ends_with(
                " insns_per_pixel=5.00 bilinear_insns_per_pixel=20.00 scalar_insns_per_pixel=12.50 scalar_bilinear_insns_per_pixel=90.00"
            ),
            "{lines:?}"
        );
        assert!(
            lines[4].contains(
                "copy 2.00 insns/px; portable: full frame 12.50, bilinear 90.00, damage-only 30.00 per recomposed px; NEON kernels (the render loop's): full frame 5.00, bilinear 20.00, damage-only 10.00"
            ),
            "{}",
            lines[4]
        );
        assert!(check_guest(&console.replace("same=1", "same=0")).is_err());
        assert!(check_guest(&console.replace("=softfloat", "=neon")).is_err());
        assert!(check_guest(&console.replace("kernels_ok=1", "kernels_ok=0")).is_err());
        assert!(parse_guest("bench-compose: error: no PMUv3").is_err());
    }
}
