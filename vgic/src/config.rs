//! The shape of one VM's interrupt controller: its vCPUs (by MPIDR), its SPI count and
//! the priority bits of the virtual CPU interface, validated once at creation.

use alloc::vec::Vec;

use crate::regs::{intid, mpidr};

/// Most vCPUs one vGIC serves (kick masks are 64-bit).
pub const MAX_VCPUS: usize = 64;

/// Configuration of one vGIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgicConfig {
    /// MPIDR_EL1 of each vCPU, indexed by vCPU number; the affinity fields must be
    /// distinct. Redistributor `i` belongs to vCPU `i`.
    pub mpidrs: Vec<u64>,
    /// Number of SPIs (INTIDs 32..32+n): a multiple of 32 up to 960, or 988 (every SPI
    /// up to INTID 1019).
    pub num_spis: u32,
    /// Priority bits the virtual CPU interface implements (ICH_VTR_EL2.PRIbits + 1),
    /// 4..=8. IPRIORITYR keeps only that many upper bits, as hardware would.
    pub priority_bits: u8,
}

impl VgicConfig {
    /// `n` vCPUs with MPIDR Aff0 = 0..n (as QEMU `virt` numbers them), `num_spis`
    /// SPIs, 5 priority bits (the usual ICH_VTR_EL2.PRIbits).
    pub fn simple(n: usize, num_spis: u32) -> Self {
        Self {
            mpidrs: (0..n as u64).map(|i| mpidr::RES1 | i).collect(),
            num_spis,
            priority_bits: 5,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Zero vCPUs or more than [`MAX_VCPUS`].
    VcpuCount(usize),
    /// Two vCPUs share an affinity.
    DuplicateAffinity { first: usize, second: usize },
    /// The SPI count is not a multiple of 32 in 32..=960 nor 988.
    SpiCount(u32),
    /// Priority bits outside 4..=8.
    PriorityBits(u8),
}

impl VgicConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.mpidrs.len();
        if n == 0 || n > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(n));
        }
        for (i, a) in self.mpidrs.iter().enumerate() {
            if let Some(j) = self.mpidrs[..i]
                .iter()
                .position(|b| mpidr::packed(*a) == mpidr::packed(*b))
            {
                return Err(ConfigError::DuplicateAffinity {
                    first: j,
                    second: i,
                });
            }
        }
        let s = self.num_spis;
        let whole_lines =
            s.is_multiple_of(32) && s >= 32 && s + intid::SPI_FIRST <= intid::SPECIAL_FIRST;
        if !whole_lines && s != intid::MAX_SPIS {
            return Err(ConfigError::SpiCount(s));
        }
        if !(4..=8).contains(&self.priority_bits) {
            return Err(ConfigError::PriorityBits(self.priority_bits));
        }
        Ok(())
    }

    /// GICD_TYPER.ITLinesNumber for this configuration.
    pub fn it_lines_number(&self) -> u32 {
        (self.num_spis + intid::SPI_FIRST).div_ceil(32) - 1
    }

    /// The IPRIORITYR mask: implemented upper bits only.
    pub fn priority_mask(&self) -> u8 {
        0xFFu8 << (8 - self.priority_bits.clamp(4, 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_ranges() {
        for n in [1usize, 2, 8, 64] {
            assert_eq!(VgicConfig::simple(n, 64).validate(), Ok(()));
        }
        for s in [32u32, 64, 960, 988] {
            assert_eq!(VgicConfig::simple(1, s).validate(), Ok(()));
        }
        assert_eq!(VgicConfig::simple(1, 988).it_lines_number(), 31);
        assert_eq!(VgicConfig::simple(1, 960).it_lines_number(), 30);
        assert_eq!(VgicConfig::simple(1, 32).it_lines_number(), 1);
    }

    #[test]
    fn refuses_bad_shapes() {
        assert_eq!(
            VgicConfig::simple(0, 64).validate(),
            Err(ConfigError::VcpuCount(0))
        );
        assert_eq!(
            VgicConfig::simple(65, 64).validate(),
            Err(ConfigError::VcpuCount(65))
        );
        for s in [0u32, 33, 992, 1024] {
            assert_eq!(
                VgicConfig::simple(1, s).validate(),
                Err(ConfigError::SpiCount(s))
            );
        }
        let mut c = VgicConfig::simple(3, 64);
        c.mpidrs[2] = c.mpidrs[0] & 0xFF; // same affinity, different MT/U bits
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicateAffinity {
                first: 0,
                second: 2
            })
        );
        let mut c = VgicConfig::simple(1, 64);
        c.priority_bits = 3;
        assert_eq!(c.validate(), Err(ConfigError::PriorityBits(3)));
    }

    #[test]
    fn priority_mask_keeps_upper_bits() {
        let mut c = VgicConfig::simple(1, 32);
        assert_eq!(c.priority_mask(), 0xF8);
        c.priority_bits = 8;
        assert_eq!(c.priority_mask(), 0xFF);
    }
}
