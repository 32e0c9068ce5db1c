//! Command-line argument helpers: sizes with binary suffixes and a small option
//! scanner (`--flag`, `--key VALUE`, positionals).

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

/// Parses a size: a number with an optional binary suffix `K`, `M`, `G` or `T`
/// (also `KiB`, `KB`, …; all powers of 1024). Plain numbers are bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("bad size suffix in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Formats a byte count with the largest exact binary suffix.
pub fn format_size(n: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// Scanned arguments: positionals in order, options as (name, value) pairs.
#[derive(Debug, Default)]
pub struct Args {
    /// Arguments that do not start with `--`.
    pub positional: Vec<String>,
    /// `--name VALUE` or `--flag` (value `None`), in order.
    pub options: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits `args`; `flags` names the options that take no value.
    pub fn parse(args: &[String], flags: &[&str]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if flags.contains(&name) {
                    out.options.push((name.to_string(), None));
                } else {
                    let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    out.options.push((name.to_string(), Some(v.clone())));
                }
            } else {
                out.positional.push(a.clone());
            }
        }
        Ok(out)
    }

    /// The last value of option `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of option `name`, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// Fails on any option not in `known` (values and flags alike).
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self
            .options
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((n, _)) => Err(format!("unknown option --{n}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size(1536 << 10), "1536K");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn scanning() {
        let a: Vec<String> = [
            "x.img",
            "--name",
            "n",
            "--autostart",
            "--disk-size",
            "1G",
            "--disk-size",
            "2G",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = Args::parse(&a, &["autostart"]).unwrap();
        assert_eq!(p.positional, vec!["x.img".to_string()]);
        assert_eq!(p.value("name"), Some("n"));
        assert!(p.options.contains(&("autostart".to_string(), None)));
        assert_eq!(p.values("disk-size"), vec!["1G", "2G"]);
        assert!(p.only(&["name", "autostart", "disk-size"]).is_ok());
        assert!(p.only(&["name"]).is_err());
        assert!(Args::parse(&["--name".to_string()], &[]).is_err());
    }
}
