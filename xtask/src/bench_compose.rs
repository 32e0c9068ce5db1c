//! `cargo xtask bench compose`: the compositor on the host, built `--release`
//! (the `compose-bench` example of the `compositor` crate). It composes a 1920×1080
//! guest surface into a 2560×1440 output with a cursor and a status-bar overlay —
//! full frame unscaled, full frame scaled bilinearly to fill the output, and
//! damage-only after a 64×64 change — each against a plain copy of the output frame
//! timed interleaved in the same run (medians of 15 rounds).
//!
//! Targets: full frame ≤ 2× the copy, bilinear ≤ 4×, damage-only proportional to the
//! damaged area (`damage_vs_area` near 1). Instructions per output pixel under QEMU
//! `-icount` need a bare-metal harness that does not exist yet: reported as
//! `insns_per_pixel=not-measured`.

use std::process::Command;

use crate::error::Error;
use crate::Layout;

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

/// Reads the last `compose-bench: …` line of the example's output.
pub fn parse(output: &str) -> Result<ComposeSample, String> {
    let line = output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(PREFIX))
        .next_back()
        .ok_or("no `compose-bench:` line")?;
    let field = |key: &str| -> Result<f64, String> {
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
    };
    Ok(ComposeSample {
        memcpy_ns: field("memcpy_ns")?,
        full_ns: field("full_ns")?,
        bilinear_ns: field("bilinear_ns")?,
        damage_ns: field("damage_ns")?,
        damage_pixels: field("damage_pixels")?,
        output_pixels: field("output_pixels")?,
    })
}

/// The report lines, the last one the headline.
pub fn report(s: &ComposeSample) -> Vec<String> {
    let area = s.damage_pixels / s.output_pixels;
    let damage = s.damage_ns / s.memcpy_ns;
    vec![
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
        format!(
            "compose full_vs_memcpy={:.2} bilinear_vs_memcpy={:.2} damage_vs_memcpy={:.5} insns_per_pixel=not-measured",
            s.full_ns / s.memcpy_ns,
            s.bilinear_ns / s.memcpy_ns,
            damage
        ),
    ]
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
    let mut lines = report(&sample);
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
        let lines = report(&s);
        assert_eq!(
            lines.last().unwrap(),
            "compose full_vs_memcpy=1.50 bilinear_vs_memcpy=4.00 damage_vs_memcpy=0.00200 insns_per_pixel=not-measured"
        );
        assert!(lines[3].contains("2.00x proportional"), "{}", lines[3]);
        assert!(parse("compose-bench: memcpy_ns=0 full_ns=1").is_err());
        assert!(parse("nothing").is_err());
    }
}
