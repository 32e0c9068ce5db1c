//! Platform Configuration Registers: 24 PCRs in SHA-1, SHA-256, SHA-384 and SHA-512 banks,
//! the PC Client attribute table (which PCRs are saved by Shutdown(STATE), which
//! localities may extend or reset them), and the bank allocation.

use crate::defs::limits::PCR_COUNT;
use crate::hash::{Digest, HashAlg};

/// Per-PCR attributes from the PC Client platform profile.
#[derive(Debug, Clone, Copy)]
pub struct PcrAttr {
    /// Preserved across Shutdown(STATE)/Startup(STATE).
    pub state_save: bool,
    /// Localities (bit n = locality n) that may reset the PCR.
    pub reset_locality: u8,
    /// Localities that may extend the PCR.
    pub extend_locality: u8,
}

const fn a(state_save: bool, reset_locality: u8, extend_locality: u8) -> PcrAttr {
    PcrAttr {
        state_save,
        reset_locality,
        extend_locality,
    }
}

/// The PC Client PCR attribute table.
pub const PCR_ATTRS: [PcrAttr; PCR_COUNT] = [
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(true, 0, 0x1F),
    a(false, 0x0F, 0x1F), // 16: debug
    a(false, 0x10, 0x1C), // 17: locality 4 (DRTM)
    a(false, 0x10, 0x1C), // 18: locality 3
    a(false, 0x10, 0x0C), // 19: locality 2
    a(false, 0x14, 0x0E), // 20: locality 1
    a(false, 0x14, 0x04), // 21: dynamic OS
    a(false, 0x14, 0x04), // 22: dynamic OS
    a(false, 0x0F, 0x1F), // 23: application
];

/// PCRs whose changes do not move the PCR update counter
/// (TPM_PT_PCR_NO_INCREMENT: the PC Client debug, dynamic-OS and application
/// PCRs 16, 21, 22 and 23).
pub const NO_INCREMENT: u32 = 1 << 16 | 1 << 21 | 1 << 22 | 1 << 23;

/// The PCRs of the (one) authorization group, whose authValue
/// TPM2_PCR_SetAuthValue sets, and of the (one) policy group, whose
/// authPolicy TPM2_PCR_SetAuthPolicy sets: the dynamic-OS PCRs 20–22
/// (TPM_PT_PCR_AUTH, TPM_PT_PCR_POLICY).
pub const AUTH_GROUP: u32 = 1 << 20 | 1 << 21 | 1 << 22;
pub const POLICY_GROUP: u32 = AUTH_GROUP;

/// The PCRs a dynamic-RTM event resets (TPM_PT_PCR_DRTM_RESET): 17–22.
pub const DRTM_RESET: u32 = 0x3F << 17;

/// Is PCR `index` in `group`?
pub fn in_group(group: u32, index: usize) -> bool {
    index < PCR_COUNT && group & (1 << index) != 0
}

/// Does a change of PCR `index` move the PCR update counter?
pub fn counts_change(index: usize) -> bool {
    NO_INCREMENT & (1 << index) == 0
}

/// Mask of all implemented PCRs.
pub const ALL_PCRS: u32 = (1 << PCR_COUNT) - 1;

/// Bit of `locality` in a locality mask (localities above 4 map to no bit).
pub fn locality_bit(locality: u8) -> u8 {
    if locality <= 4 {
        1 << locality
    } else {
        0
    }
}

/// May `locality` extend PCR `index`?
pub fn extend_allowed(index: usize, locality: u8) -> bool {
    PCR_ATTRS[index].extend_locality & locality_bit(locality) != 0
}

/// May `locality` reset PCR `index`?
pub fn reset_allowed(index: usize, locality: u8) -> bool {
    PCR_ATTRS[index].reset_locality & locality_bit(locality) != 0
}

/// Value of PCR `index` after TPM Reset: PCRs resettable only from locality 4
/// (the DRTM PCRs 17–22) start at all ones, the rest at zero.
pub fn initial_value(alg: HashAlg, index: usize) -> Digest {
    let fill = if PCR_ATTRS[index].reset_locality & 0x10 != 0 {
        0xFF
    } else {
        0
    };
    Digest::filled(alg.digest_size(), fill)
}

/// Number of PCR banks (one per implemented hash).
pub const BANKS: usize = HashAlg::ALL.len();

/// Which PCRs are allocated in each bank, as bit masks indexed by [`HashAlg::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation(pub [u32; BANKS]);

impl Default for Allocation {
    fn default() -> Self {
        Allocation([ALL_PCRS; BANKS])
    }
}

impl Allocation {
    pub fn mask(&self, alg: HashAlg) -> u32 {
        self.0[alg.index()]
    }
    pub fn is_allocated(&self, alg: HashAlg, index: usize) -> bool {
        self.mask(alg) & (1 << index) != 0
    }
}

/// The PCR values of all banks.
#[derive(Debug, Clone)]
pub struct PcrBanks {
    pub values: [[Digest; PCR_COUNT]; BANKS],
}

impl PcrBanks {
    /// Banks at their TPM Reset values.
    pub fn new() -> Self {
        Self {
            values: HashAlg::ALL.map(|h| core::array::from_fn(|i| initial_value(h, i))),
        }
    }
    pub fn get(&self, alg: HashAlg, index: usize) -> &Digest {
        &self.values[alg.index()][index]
    }
    /// PCR := H(PCR || digest).
    pub fn extend(&mut self, alg: HashAlg, index: usize, digest: &[u8]) {
        let slot = &mut self.values[alg.index()][index];
        *slot = alg.digest(&[slot.as_bytes(), digest]);
    }
    /// Resets PCR `index` in every bank to zero.
    pub fn reset(&mut self, index: usize) {
        for h in HashAlg::ALL {
            self.values[h.index()][index] = Digest::filled(h.digest_size(), 0);
        }
    }
}

impl Default for PcrBanks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_client_reset_rules_at_locality_0() {
        let resettable: alloc::vec::Vec<usize> =
            (0..PCR_COUNT).filter(|&i| reset_allowed(i, 0)).collect();
        assert_eq!(resettable, [16, 23]);
        assert!(!extend_allowed(17, 0) && extend_allowed(17, 4) && extend_allowed(0, 3));
        assert!(!reset_allowed(16, 5));
    }

    #[test]
    fn initial_values_and_extend() {
        let mut b = PcrBanks::new();
        assert!(b.get(HashAlg::Sha256, 0).as_bytes().iter().all(|&x| x == 0));
        assert!(b
            .get(HashAlg::Sha1, 17)
            .as_bytes()
            .iter()
            .all(|&x| x == 0xFF));
        assert_eq!(b.get(HashAlg::Sha384, 22).as_bytes().len(), 48);
        let d = [7u8; 32];
        b.extend(HashAlg::Sha256, 3, &d);
        let expect = HashAlg::Sha256.digest(&[&[0u8; 32], &d]);
        assert_eq!(b.get(HashAlg::Sha256, 3), &expect);
        b.reset(3);
        assert!(b.get(HashAlg::Sha256, 3).as_bytes().iter().all(|&x| x == 0));
    }
}
