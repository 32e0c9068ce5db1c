//! Fixed-point per-iteration figures for the benchmark output (`12.34`), with
//! integer arithmetic only.

use core::fmt;

/// `total / iterations` with two decimals, truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerIter {
    /// Hundredths of a unit.
    pub hundredths: u64,
}

impl PerIter {
    /// `total / iterations`, truncated to hundredths; 0 when `iterations` is 0.
    pub fn new(total: u64, iterations: u64) -> Self {
        if iterations == 0 {
            return Self { hundredths: 0 };
        }
        let hundredths =
            (u128::from(total) * 100 / u128::from(iterations)).min(u128::from(u64::MAX)) as u64;
        Self { hundredths }
    }
}

impl fmt::Display for PerIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.hundredths / 100, self.hundredths % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_two_decimals() {
        assert_eq!(PerIter::new(30_000, 10_000).to_string(), "3.00");
        assert_eq!(PerIter::new(30_005, 10_000).to_string(), "3.00");
        assert_eq!(PerIter::new(30_100, 10_000).to_string(), "3.01");
        assert_eq!(PerIter::new(1_234_567, 10_000).to_string(), "123.45");
        assert_eq!(PerIter::new(7, 10_000).to_string(), "0.00");
        assert_eq!(PerIter::new(1, 3).to_string(), "0.33");
    }

    #[test]
    fn zero_iterations_and_huge_totals_do_not_panic() {
        assert_eq!(PerIter::new(5, 0).to_string(), "0.00");
        assert_eq!(PerIter::new(u64::MAX, 1).hundredths, u64::MAX);
    }
}
