//! System-register encodings and the ID-register sanitising policy: what a guest is
//! told about the CPU.
//!
//! The policy hides every feature whose state the hypervisor does not context-switch
//! or virtualize, so a guest never turns on something that would leak or break:
//! pointer authentication (keys not switched, and very slow under TCG), SVE, SME, MTE,
//! SPE, the trace buffer and BRBE, AMU, MPAM, RAS error records, NMI, GCS, nested
//! virtualization (EL2 and VHE are not offered to guests), and the PMU when the VM may
//! not have it (see [`crate::controls::guest_has_pmu`]) — and it reports the guest's
//! physical address size as the stage-2 IPA size.

/// A trapped MSR/MRS, as decoded from the ISS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// The general-purpose register transferred (31 = XZR).
    pub reg: u8,
    /// MRS (true) or MSR (false).
    pub read: bool,
}

impl SysRegAccess {
    /// The register's encoding, without the transfer details.
    pub const fn encoding(&self) -> SysReg {
        SysReg::new(self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// A system register named by its encoding `S<op0>_<op1>_C<n>_C<m>_<op2>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysReg {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        Self {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }

    /// In the feature-ID space trapped by HCR_EL2.TID3 (op0=3, op1=0, CRn=0, CRm=1..=7).
    pub const fn is_id_group3(&self) -> bool {
        self.op0 == 3 && self.op1 == 0 && self.crn == 0 && self.crm >= 1 && self.crm <= 7
    }

    /// In the IMPLEMENTATION DEFINED space trapped by HCR_EL2.TIDCP (op0=3, CRn=11 or 15).
    pub const fn is_impdef(&self) -> bool {
        self.op0 == 3 && (self.crn == 11 || self.crn == 15)
    }
}

impl core::fmt::Display for SysReg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "S{}_{}_C{}_C{}_{}",
            self.op0, self.op1, self.crn, self.crm, self.op2
        )
    }
}

/// The AArch64 feature-ID registers the sanitising policy edits.
pub mod id {
    use super::SysReg;
    pub const ID_AA64PFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 0);
    pub const ID_AA64PFR1_EL1: SysReg = SysReg::new(3, 0, 0, 4, 1);
    pub const ID_AA64ZFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 4);
    pub const ID_AA64SMFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 5);
    pub const ID_AA64DFR0_EL1: SysReg = SysReg::new(3, 0, 0, 5, 0);
    pub const ID_AA64ISAR1_EL1: SysReg = SysReg::new(3, 0, 0, 6, 1);
    pub const ID_AA64ISAR2_EL1: SysReg = SysReg::new(3, 0, 0, 6, 2);
    pub const ID_AA64MMFR0_EL1: SysReg = SysReg::new(3, 0, 0, 7, 0);
    pub const ID_AA64MMFR1_EL1: SysReg = SysReg::new(3, 0, 0, 7, 1);
    pub const ID_AA64MMFR2_EL1: SysReg = SysReg::new(3, 0, 0, 7, 2);
}

/// A 4-bit ID field: its bit offset.
#[derive(Debug, Clone, Copy)]
struct Field(u32);

impl Field {
    const fn clear(self, v: u64) -> u64 {
        v & !(0xf << self.0)
    }
    const fn get(self, v: u64) -> u64 {
        (v >> self.0) & 0xf
    }
    const fn set(self, v: u64, x: u64) -> u64 {
        self.clear(v) | ((x & 0xf) << self.0)
    }
}

// Field offsets, named as in the Arm ARM.
const PFR0_EL2: Field = Field(8);
const PFR0_RAS: Field = Field(28);
const PFR0_SVE: Field = Field(32);
const PFR0_SEL2: Field = Field(36);
const PFR0_MPAM: Field = Field(40);
const PFR0_AMU: Field = Field(44);
const PFR0_RME: Field = Field(52);
const PFR1_MTE: Field = Field(8);
const PFR1_RAS_FRAC: Field = Field(12);
const PFR1_MPAM_FRAC: Field = Field(16);
const PFR1_SME: Field = Field(24);
const PFR1_NMI: Field = Field(36);
const PFR1_GCS: Field = Field(44);
const PFR1_THE: Field = Field(48);
const PFR1_MTEX: Field = Field(52);
const DFR0_TRACEVER: Field = Field(4);
const DFR0_PMUVER: Field = Field(8);
const DFR0_PMSVER: Field = Field(32);
const DFR0_TRACEFILT: Field = Field(40);
const DFR0_TRACEBUFFER: Field = Field(44);
const DFR0_BRBE: Field = Field(52);
const ISAR1_APA: Field = Field(4);
const ISAR1_API: Field = Field(8);
const ISAR1_GPA: Field = Field(24);
const ISAR1_GPI: Field = Field(28);
const ISAR2_GPA3: Field = Field(8);
const ISAR2_APA3: Field = Field(12);
const MMFR0_PARANGE: Field = Field(0);
const MMFR1_VH: Field = Field(8);
const MMFR2_NV: Field = Field(24);

/// PARange encodings (ID_AA64MMFR0_EL1.PARange) and the address sizes they mean.
pub const PARANGE_BITS: [(u64, u32); 7] = [
    (0, 32),
    (1, 36),
    (2, 40),
    (3, 42),
    (4, 44),
    (5, 48),
    (6, 52),
];

/// The physical address size in bits a PARange value stands for (None if reserved).
pub fn parange_bits(parange: u64) -> Option<u32> {
    PARANGE_BITS
        .iter()
        .find(|(p, _)| *p == parange)
        .map(|(_, b)| *b)
}

/// The largest PARange encoding whose size does not exceed `bits`.
pub fn parange_for_bits(bits: u32) -> u64 {
    PARANGE_BITS
        .iter()
        .rev()
        .find(|(_, b)| *b <= bits)
        .map(|(p, _)| *p)
        .unwrap_or(0)
}

/// What the guest is told: the value a read of ID register `reg` returns, given the
/// hardware's value, the guest's IPA size in bits and whether the guest is given the
/// PMU (`pmu`, from [`crate::controls::guest_has_pmu`]). Registers in the ID space
/// that the policy does not mention pass through unchanged.
pub fn sanitise_id(reg: SysReg, hw: u64, ipa_bits: u32, pmu: bool) -> u64 {
    let clear = |v: u64, fields: &[Field]| fields.iter().fold(v, |v, f| f.clear(v));
    match reg {
        id::ID_AA64PFR0_EL1 => clear(
            hw,
            &[
                PFR0_EL2, PFR0_RAS, PFR0_SVE, PFR0_SEL2, PFR0_MPAM, PFR0_AMU, PFR0_RME,
            ],
        ),
        id::ID_AA64PFR1_EL1 => clear(
            hw,
            &[
                PFR1_MTE,
                PFR1_RAS_FRAC,
                PFR1_MPAM_FRAC,
                PFR1_SME,
                PFR1_NMI,
                PFR1_GCS,
                PFR1_THE,
                PFR1_MTEX,
            ],
        ),
        id::ID_AA64ZFR0_EL1 | id::ID_AA64SMFR0_EL1 => 0,
        id::ID_AA64DFR0_EL1 => {
            let v = clear(
                hw,
                &[
                    DFR0_TRACEVER,
                    DFR0_PMSVER,
                    DFR0_TRACEFILT,
                    DFR0_TRACEBUFFER,
                    DFR0_BRBE,
                ],
            );
            if pmu {
                v
            } else {
                DFR0_PMUVER.clear(v)
            }
        }
        id::ID_AA64ISAR1_EL1 => clear(hw, &[ISAR1_APA, ISAR1_API, ISAR1_GPA, ISAR1_GPI]),
        id::ID_AA64ISAR2_EL1 => clear(hw, &[ISAR2_GPA3, ISAR2_APA3]),
        id::ID_AA64MMFR0_EL1 => {
            let guest = parange_for_bits(ipa_bits).min(MMFR0_PARANGE.get(hw));
            MMFR0_PARANGE.set(hw, guest)
        }
        id::ID_AA64MMFR1_EL1 => clear(hw, &[MMFR1_VH]),
        id::ID_AA64MMFR2_EL1 => clear(hw, &[MMFR2_NV]),
        _ => hw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauth_is_hidden_and_other_isar1_fields_kept() {
        // APA=1, API=1, GPA=1, GPI=1, plus LRCPC (bits 23:20) = 2 and JSCVT (15:12) = 1.
        let hw = 1 << 4 | 1 << 8 | 1 << 24 | 1 << 28 | 2 << 20 | 1 << 12;
        assert_eq!(
            sanitise_id(id::ID_AA64ISAR1_EL1, hw, 40, true),
            2 << 20 | 1 << 12
        );
    }

    #[test]
    fn sve_sme_mte_spe_amu_el2_hidden() {
        let all = u64::MAX;
        let pfr0 = sanitise_id(id::ID_AA64PFR0_EL1, all, 40, true);
        for f in [PFR0_SVE, PFR0_AMU, PFR0_EL2, PFR0_RAS, PFR0_MPAM] {
            assert_eq!(f.get(pfr0), 0);
        }
        // EL0/EL1/FP/AdvSIMD/GIC fields survive.
        assert_eq!(pfr0 & 0xff, 0xff);
        assert_eq!(Field(24).get(pfr0), 0xf);
        let pfr1 = sanitise_id(id::ID_AA64PFR1_EL1, all, 40, true);
        assert_eq!(PFR1_SME.get(pfr1), 0);
        assert_eq!(PFR1_MTE.get(pfr1), 0);
        assert_eq!(Field(0).get(pfr1), 0xf, "BT survives");
        assert_eq!(
            PFR0_SVE.get(sanitise_id(id::ID_AA64PFR0_EL1, 1 << 32, 40, true)),
            0
        );
        assert_eq!(
            DFR0_PMSVER.get(sanitise_id(id::ID_AA64DFR0_EL1, all, 40, true)),
            0
        );
        assert_eq!(sanitise_id(id::ID_AA64ZFR0_EL1, all, 40, true), 0);
    }

    #[test]
    fn pmu_hidden_only_when_the_guest_may_not_have_it() {
        // PMUVer 5 (PMUv3p4), DebugVer 6.
        let hw = 5 << 8 | 6;
        assert_eq!(sanitise_id(id::ID_AA64DFR0_EL1, hw, 40, true), hw);
        assert_eq!(sanitise_id(id::ID_AA64DFR0_EL1, hw, 40, false), 6);
    }

    #[test]
    fn parange_reports_the_ipa_size_never_more_than_hardware() {
        assert_eq!(sanitise_id(id::ID_AA64MMFR0_EL1, 0x6, 40, true) & 0xf, 2);
        assert_eq!(sanitise_id(id::ID_AA64MMFR0_EL1, 0x1, 40, true) & 0xf, 1);
        assert_eq!(parange_bits(5), Some(48));
        assert_eq!(parange_bits(9), None);
        assert_eq!(parange_for_bits(41), 2);
    }

    #[test]
    fn id_space_classification() {
        assert!(id::ID_AA64PFR0_EL1.is_id_group3());
        assert!(
            !SysReg::new(3, 0, 0, 0, 5).is_id_group3(),
            "MPIDR_EL1 is not group 3"
        );
        assert!(SysReg::new(3, 7, 15, 0, 0).is_impdef());
        extern crate std;
        assert_eq!(std::format!("{}", id::ID_AA64PFR0_EL1), "S3_0_C0_C4_0");
    }
}
