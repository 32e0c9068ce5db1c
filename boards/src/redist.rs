//! Redistributors matched to CPUs by the affinity each one reports in
//! GICR_TYPER, not by position: firmware lists CPUs in any order (Ampere's MADT
//! does not follow MPIDR order) and a redistributor region's frames follow the
//! hardware's order.
//!
//! `el2` walks the frames (GICR_TYPER.Last ends a region) and passes each
//! frame's affinity (in MPIDR layout) here; this decides which frame belongs to which CPU.

use alloc::vec::Vec;

/// Why CPUs and redistributors do not pair up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchError {
    /// No redistributor reports this CPU's affinity.
    NoRedistributor { mpidr: u64 },
    /// Two redistributor frames report the same affinity.
    Duplicate { mpidr: u64 },
}

/// For each CPU (by its MPIDR affinity, in firmware order) the index of the
/// redistributor frame whose affinity (`frames`, MPIDR layout) matches.
pub fn match_redistributors(cpus: &[u64], frames: &[u64]) -> Result<Vec<usize>, MatchError> {
    for (i, f) in frames.iter().enumerate() {
        if frames[..i].contains(f) {
            return Err(MatchError::Duplicate { mpidr: *f });
        }
    }
    cpus.iter()
        .map(|&mpidr| {
            frames
                .iter()
                .position(|&f| f == mpidr)
                .ok_or(MatchError::NoRedistributor { mpidr })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn matched_by_affinity_not_index() {
        // Ampere's MADT order (Aff2 = core pair) against frames in hardware order.
        let cpus = [0x10_0000, 0x18_0000, 0x0, 0x8_0000];
        let frames = [0x0, 0x8_0000, 0x10_0000, 0x18_0000];
        assert_eq!(match_redistributors(&cpus, &frames), Ok(vec![2, 3, 0, 1]));
        // QEMU's identity order still works.
        assert_eq!(match_redistributors(&[0, 1], &[0, 1]), Ok(vec![0, 1]));
    }

    #[test]
    fn a_cpu_without_redistributor_or_a_duplicate_is_refused() {
        assert_eq!(
            match_redistributors(&[0, 0x100], &[0, 1]),
            Err(MatchError::NoRedistributor { mpidr: 0x100 })
        );
        assert_eq!(
            match_redistributors(&[0], &[0, 0]),
            Err(MatchError::Duplicate { mpidr: 0 })
        );
    }
}
