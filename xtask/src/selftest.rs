//! The self-test guest's verdict, read from the console: `PASS <check>` and
//! `FAIL <check>: <why>` lines, closed by `selftest: N passed, M failed`.
//! Hypervisor log lines start with `[el2 ` and are ignored. The run passes
//! exactly when QEMU exited 0, the summary says N > 0 passed and 0 failed, and
//! no line starts with `FAIL`.

/// Marker of a passed check.
pub const PASS_PREFIX: &str = "PASS";
/// Marker of a failed check.
pub const FAIL_PREFIX: &str = "FAIL";
/// Prefix of the summary line.
pub const SUMMARY_PREFIX: &str = "selftest: ";

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The check's name (empty if the line had none).
    pub name: String,
    /// The rest of the line: why it failed.
    pub detail: String,
    /// The whole line, for messages.
    pub line: String,
}

/// Everything the self-test printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelftestReport {
    /// Names of passed checks, in order.
    pub passed: Vec<String>,
    /// Failed checks, in order.
    pub failed: Vec<Failure>,
    /// `(passed, failed)` from the summary line, if it was printed.
    pub summary: Option<(u32, u32)>,
}

impl SelftestReport {
    /// `Ok(N)` when the summary says N > 0 passed and 0 failed and no FAIL
    /// line appeared; otherwise the reason.
    pub fn verdict(&self) -> Result<u32, String> {
        if let Some(f) = self.failed.first() {
            let more = if self.failed.len() > 1 {
                format!(" (and {} more)", self.failed.len() - 1)
            } else {
                String::new()
            };
            return Err(format!("self-test check failed: {}{more}", f.line));
        }
        match self.summary {
            None => Err("no `selftest: N passed, M failed` summary on the console".into()),
            Some((_, failed)) if failed > 0 => {
                Err(format!("self-test summary reports {failed} failed"))
            }
            Some((0, _)) => Err("self-test summary reports 0 passed".into()),
            Some((passed, _)) => Ok(passed),
        }
    }

    /// Expected check names that neither passed nor failed.
    pub fn missing<'a>(&self, expected: &[&'a str]) -> Vec<&'a str> {
        expected
            .iter()
            .copied()
            .filter(|name| {
                !self.passed.iter().any(|p| p == name)
                    && !self.failed.iter().any(|f| f.name == *name)
            })
            .collect()
    }
}

/// Reads the self-test lines out of a console log.
pub fn parse_selftest(console: &str) -> SelftestReport {
    parse_checks(console, SUMMARY_PREFIX)
}

/// Reads PASS/FAIL lines and the `<summary_prefix>N passed, M failed` summary of any
/// check-running guest (the self-test, the hostile virtio driver).
pub fn parse_checks(console: &str, summary_prefix: &str) -> SelftestReport {
    let mut report = SelftestReport::default();
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(rest) = word_rest(line, PASS_PREFIX) {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(':');
            report.passed.push(name.to_string());
        } else if line.starts_with(FAIL_PREFIX) {
            let rest = word_rest(line, FAIL_PREFIX).unwrap_or("").trim();
            let (name, detail) = match rest.find(|c: char| c == ':' || c.is_whitespace()) {
                Some(at) => (&rest[..at], rest[at..].trim_start_matches(':').trim()),
                None => (rest, ""),
            };
            report.failed.push(Failure {
                name: name.to_string(),
                detail: detail.to_string(),
                line: line.to_string(),
            });
        } else if let Some(summary) = parse_summary(line, summary_prefix) {
            report.summary = Some(summary);
        }
    }
    report
}

/// The text after `word` when the line starts with `word` followed by a blank,
/// a colon or the end of the line.
fn word_rest<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(word)?;
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c == ':' || c.is_whitespace() => Some(&rest[1..]),
        Some(_) => None,
    }
}

/// `<prefix>N passed, M failed`.
fn parse_summary(line: &str, prefix: &str) -> Option<(u32, u32)> {
    let rest = line.trim().strip_prefix(prefix)?;
    let (passed, failed) = rest.split_once(',')?;
    let passed = passed.trim().strip_suffix("passed")?.trim().parse().ok()?;
    let failed = failed.trim().strip_suffix("failed")?.trim().parse().ok()?;
    Some((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "[el2 INFO] booting vm selftest\r\nPASS hvc-roundtrip\r\nPASS psci-version (1.1)\r\n\
[el2 WARN] guest read unmapped IPA 0x0\r\nPASS unmapped-ipa\r\nselftest: 3 passed, 0 failed\r\n";

    #[test]
    fn a_clean_run_passes() {
        let r = parse_selftest(GOOD);
        assert_eq!(r.passed, ["hvc-roundtrip", "psci-version", "unmapped-ipa"]);
        assert!(r.failed.is_empty());
        assert_eq!(r.summary, Some((3, 0)));
        assert_eq!(r.verdict(), Ok(3));
        assert_eq!(r.missing(&["hvc-roundtrip", "wfi-wakeup"]), ["wfi-wakeup"]);
    }

    #[test]
    fn failures_are_named_with_their_reason() {
        let log = "PASS hvc-roundtrip\nFAIL mmio-pl011-id: read 0x0, expected 0x11\nFAIL fp-preserved\nselftest: 1 passed, 2 failed\n";
        let r = parse_selftest(log);
        assert_eq!(r.failed.len(), 2);
        assert_eq!(r.failed[0].name, "mmio-pl011-id");
        assert_eq!(r.failed[0].detail, "read 0x0, expected 0x11");
        assert_eq!(r.failed[1].name, "fp-preserved");
        assert_eq!(r.failed[1].detail, "");
        let why = r.verdict().unwrap_err();
        assert!(
            why.contains("mmio-pl011-id") && why.contains("1 more"),
            "{why}"
        );
        assert!(
            r.missing(&["fp-preserved"]).is_empty(),
            "a failed check is reported, not missing"
        );
    }

    #[test]
    fn any_line_starting_with_fail_fails_the_run() {
        let r = parse_selftest("FAILED to start selftest\nselftest: 5 passed, 0 failed\n");
        assert!(r.verdict().is_err());
        let r = parse_selftest(
            GOOD.replace("PASS unmapped-ipa", "FAIL:unmapped-ipa boom")
                .as_str(),
        );
        assert_eq!(r.failed[0].name, "unmapped-ipa");
        assert!(r.verdict().is_err());
    }

    #[test]
    fn summary_must_exist_and_count_passes() {
        assert!(parse_selftest("PASS a\n")
            .verdict()
            .unwrap_err()
            .contains("no `selftest:"));
        assert!(parse_selftest("selftest: 0 passed, 0 failed\n")
            .verdict()
            .unwrap_err()
            .contains("0 passed"));
        assert!(parse_selftest("selftest: 4 passed, 1 failed\n")
            .verdict()
            .unwrap_err()
            .contains("1 failed"));
        assert_eq!(
            parse_selftest("selftest: lots passed, 0 failed\n").summary,
            None
        );
        // "PASSWORD" is not a PASS line; "[el2 " lines are not checks.
        let r = parse_selftest("PASSWORD: x\n[el2 INFO] PASS nothing\n");
        assert!(r.passed.is_empty());
    }
}
