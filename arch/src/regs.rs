//! Register layouts `aarch64-cpu` 11 lacks, declared once as `tock-registers`
//! bitfields (Arm ARM DDI 0487 and the GICv3 architecture specification IHI 0069).
//! `aarch64-cpu` is the first choice: HCR_EL2, MDCR_EL2, CNTHCTL_EL2, CNTHP_CTL_EL2,
//! ICH_HCR_EL2, ICH_VTR_EL2 and the ICH_LR<n>_EL2 accessors come from it. What is
//! here is either absent there (ICC_DIR_EL1, PMCR_EL0, CTR_EL0, DCZID_EL0, the
//! EL2 stage-1 translation descriptors) or declared without the fields the
//! hypervisor uses (its ICC_CTLR_EL1 has only ExtRange and no write access, its
//! CPTR_EL2 only TAM, its ID_AA64ISAR0_EL1 only RNDR, its SCTLR_EL1 not the
//! RES1-at-reset bits).
//!
//! Only layouts live here (host-testable, no `unsafe`); the accessors that read and
//! write the registers are in `el2`.

use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// ICC_CTLR_EL1, the physical CPU interface's control register (IHI 0069
    /// 12.2.6).
    pub ICC_CTLR_EL1 [
        /// Extended INTID range implemented (read-only).
        ExtRange OFFSET(19) NUMBITS(1) [],
        /// Range selector support: ICC_SGI1R_EL1.RS is honoured (read-only).
        RSS OFFSET(18) NUMBITS(1) [],
        /// Affinity 3 valid (read-only).
        A3V OFFSET(15) NUMBITS(1) [],
        /// SEI support (read-only).
        SEIS OFFSET(14) NUMBITS(1) [],
        /// INTID bits implemented (read-only): 0b000 = 16, 0b001 = 24.
        IDbits OFFSET(11) NUMBITS(3) [],
        /// Priority bits implemented, minus one (read-only).
        PRIbits OFFSET(8) NUMBITS(3) [],
        /// Priority-mask hint enable.
        PMHE OFFSET(6) NUMBITS(1) [],
        /// EOI mode: 1 = a write to ICC_EOIR1_EL1 only drops the running priority,
        /// ICC_DIR_EL1 deactivates.
        EOImode OFFSET(1) NUMBITS(1) [
            DropAndDeactivate = 0,
            DropOnly = 1
        ],
        /// Common binary point register.
        CBPR OFFSET(0) NUMBITS(1) []
    ],

    /// ICC_DIR_EL1, deactivate interrupt (write-only; IHI 0069 12.2.10).
    pub ICC_DIR_EL1 [
        /// The INTID to deactivate.
        INTID OFFSET(0) NUMBITS(24) []
    ],

    /// CPTR_EL2 with HCR_EL2.E2H = 0 (Arm ARM D24.2.33): which EL1/EL0 (and EL2)
    /// accesses trap to EL2.
    pub CPTR_EL2 [
        /// Trap EL1 accesses to CPACR_EL1.
        TCPAC OFFSET(31) NUMBITS(1) [],
        /// Trap activity-monitor (AMU) register accesses.
        TAM OFFSET(30) NUMBITS(1) [],
        /// Trap trace register accesses.
        TTA OFFSET(20) NUMBITS(1) [],
        /// RES1.
        RES1_13 OFFSET(13) NUMBITS(1) [],
        /// Trap SME (FEAT_SME) instructions and registers.
        TSM OFFSET(12) NUMBITS(1) [],
        /// Trap FP/SIMD instructions and registers.
        TFP OFFSET(10) NUMBITS(1) [],
        /// RES1.
        RES1_9 OFFSET(9) NUMBITS(1) [],
        /// Trap SVE instructions and registers.
        TZ OFFSET(8) NUMBITS(1) [],
        /// RES1.
        RES1_7_0 OFFSET(0) NUMBITS(8) []
    ],

    /// PMCR_EL0, the PMU control register (Arm ARM D24.5.7); only the field the
    /// hypervisor reads.
    pub PMCR_EL0 [
        /// Number of event counters implemented.
        N OFFSET(11) NUMBITS(5) []
    ],

    /// CTR_EL0, the cache type register (Arm ARM D24.2.38).
    pub CTR_EL0 [
        /// log2 of the words in the smallest data or unified cache line.
        DminLine OFFSET(16) NUMBITS(4) [],
        /// log2 of the words in the smallest instruction cache line.
        IminLine OFFSET(0) NUMBITS(4) []
    ],

    /// DCZID_EL0, data cache zero ID (Arm ARM D24.2.42).
    pub DCZID_EL0 [
        /// DC ZVA is prohibited.
        DZP OFFSET(4) NUMBITS(1) [],
        /// log2 of the words DC ZVA zeroes.
        BS OFFSET(0) NUMBITS(4) []
    ],

    /// ID_AA64ISAR0_EL1, the fields `aarch64-cpu`'s declaration (only RNDR) lacks
    /// (Arm ARM D24.2.63).
    pub ID_AA64ISAR0_EL1 [
        /// Atomic instructions: 0b0010 = FEAT_LSE, 0b0011 = FEAT_LSE128.
        Atomic OFFSET(20) NUMBITS(4) [],
        /// CRC32 instructions: 0b0001 = implemented.
        CRC32 OFFSET(16) NUMBITS(4) []
    ],

    /// ID_AA64PFR0_EL1 fields `aarch64-cpu` (only AMU, SVE) lacks (Arm ARM D24.2.79).
    pub ID_AA64PFR0_EL1 [
        /// System-register GIC CPU interface: 0b0001 = GICv3/v4.0, 0b0011 = v4.1.
        GIC OFFSET(24) NUMBITS(4) [],
        /// EL2: 0b0000 = not implemented, 0b0001 = AArch64 only, 0b0010 = also AArch32.
        EL2 OFFSET(8) NUMBITS(4) []
    ],

    /// ID_AA64ISAR2_EL1's pointer-authentication fields (QARMA3, FEAT_PACQARMA3).
    pub ID_AA64ISAR2_EL1 [
        APA3 OFFSET(12) NUMBITS(4) [],
        GPA3 OFFSET(8) NUMBITS(4) []
    ],

    /// ICH_VTR_EL2 bits `aarch64-cpu` does not name (GICv3 spec 12.4.10).
    pub ICH_VTR_EL2 [
        /// SEI support.
        SEIS OFFSET(22) NUMBITS(1) [],
        /// Nonzero Aff3 supported.
        A3V OFFSET(21) NUMBITS(1) [],
        /// Direct injection of virtual interrupts NOT supported (GICv4).
        nV4 OFFSET(20) NUMBITS(1) [],
        /// Separate trapping of EL1 writes to ICC_DIR_EL1.
        TDS OFFSET(19) NUMBITS(1) []
    ],

    /// The SCTLR_EL1 bits that are RES1 when their feature is absent and reset to
    /// 1 otherwise (Arm ARM D24.2.158), which `aarch64-cpu`'s SCTLR_EL1 does not
    /// name.
    pub SCTLR_EL1 [
        /// Load/store multiple atomicity (AArch32 EL0).
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// No trap of load/store multiple to device memory (AArch32 EL0).
        nTLSMD OFFSET(28) NUMBITS(1) [],
        /// Set privileged access never on exception entry: 1 = PSTATE.PAN unchanged.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// Exception entry is context synchronizing.
        EIS OFFSET(22) NUMBITS(1) [],
        /// Trap EL0 access to SCXTNUM_EL0: 1 = not trapped (FEAT_CSV2_2 absent: RES1).
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// Exception return is context synchronizing.
        EOS OFFSET(11) NUMBITS(1) []
    ],

    /// A VMSAv8-64 stage-1 block, page or table descriptor of the EL2 translation
    /// regime with HCR_EL2.E2H = 0 and a 4 KiB granule (Arm ARM D8.3.1, D8.3.2).
    pub STAGE1_DESCRIPTOR [
        /// Execute-never (the EL2 regime has one privilege level: bit 54 is XN).
        XN OFFSET(54) NUMBITS(1) [],
        /// Output address (or next-level table address) bits [47:12].
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// Access flag: 0 would fault on first access.
        AF OFFSET(10) NUMBITS(1) [],
        /// Shareability.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// AP[2]: 1 = read-only.
        AP_RO OFFSET(7) NUMBITS(1) [],
        /// AP[1]: RES1 in the single-privilege EL2 regime.
        AP_RES1 OFFSET(6) NUMBITS(1) [],
        /// Index of the memory attributes in MAIR_EL2.
        AttrIndx OFFSET(2) NUMBITS(3) [],
        /// Descriptor type at levels 0..=2: a block, or a table of the next level.
        /// At level 3 a valid descriptor must say `Table` (it means "page").
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            Table = 1
        ],
        /// The descriptor is valid.
        VALID OFFSET(0) NUMBITS(1) []
    ]
}

/// The system registers whose read is not a plain read: reading an ICC_IAR*/NMIAR
/// register acknowledges the highest-priority pending interrupt (it becomes
/// active), and RNDR/RNDRRS return a new random number on each read and report
/// failure in NZCV. `el2`'s by-name `read_sysreg!` refuses them at compile time;
/// each has a path of its own there.
pub const SIDE_EFFECT_READS: [&str; 7] = [
    "ICC_IAR0_EL1",
    "ICC_IAR1_EL1",
    "ICC_NMIAR1_EL1",
    "RNDR",
    "RNDRRS",
    "S3_3_C2_C4_0",
    "S3_3_C2_C4_1",
];

/// Whether the register named `r` (as the assembler takes it: ASCII
/// case-insensitive) is in [`SIDE_EFFECT_READS`]; usable in a constant context.
pub const fn has_read_side_effect(r: &str) -> bool {
    let r = r.as_bytes();
    let mut i = 0;
    while i < SIDE_EFFECT_READS.len() {
        let a = SIDE_EFFECT_READS[i].as_bytes();
        if a.len() == r.len() {
            let mut j = 0;
            while j < a.len() && a[j] == r[j].to_ascii_uppercase() {
                j += 1;
            }
            if j == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// The ICC_SGI1R_EL1 layout, with the function that builds it, lives in
/// [`crate::sgi`].
pub use crate::sgi::ICC_SGI1R;

#[cfg(test)]
mod tests {
    use super::*;
    use tock_registers::fields::Field;
    use tock_registers::RegisterLongName;

    /// The bits a field covers in its register.
    fn bits<R: RegisterLongName>(f: Field<u64, R>) -> u64 {
        f.mask << f.shift
    }

    #[test]
    fn reads_with_side_effects_are_named() {
        for r in [
            "ICC_IAR1_EL1",
            "icc_iar1_el1",
            "ICC_IAR0_EL1",
            "ICC_NMIAR1_EL1",
            "RNDR",
            "rndrrs",
            "s3_3_c2_c4_1",
        ] {
            assert!(has_read_side_effect(r), "{r}");
        }
        // Plain reads, including the look-alikes (HPPIR peeks without acknowledging).
        for r in [
            "ICC_HPPIR1_EL1",
            "ICC_IAR1",
            "ICC_IAR1_EL1X",
            "ICH_VTR_EL2",
            "CNTPCT_EL0",
            "RND",
            "",
        ] {
            assert!(!has_read_side_effect(r), "{r}");
        }
        const _: () = assert!(has_read_side_effect("ICC_IAR1_EL1"));
    }

    #[test]
    fn icc_ctlr_el1_fields() {
        // IHI 0069 12.2.6: EOImode is bit 1, CBPR bit 0, PRIbits [10:8],
        // IDbits [13:11], SEIS 14, A3V 15, RSS 18, ExtRange 19.
        assert_eq!(bits(ICC_CTLR_EL1::EOImode), 0x2);
        assert_eq!(ICC_CTLR_EL1::EOImode::DropOnly.value, 0x2);
        assert_eq!(bits(ICC_CTLR_EL1::CBPR), 0x1);
        assert_eq!(bits(ICC_CTLR_EL1::PMHE), 0x40);
        assert_eq!(bits(ICC_CTLR_EL1::PRIbits), 0x700);
        assert_eq!(bits(ICC_CTLR_EL1::IDbits), 0x3800);
        assert_eq!(bits(ICC_CTLR_EL1::SEIS), 1 << 14);
        assert_eq!(bits(ICC_CTLR_EL1::A3V), 1 << 15);
        assert_eq!(bits(ICC_CTLR_EL1::RSS), 1 << 18);
        assert_eq!(bits(ICC_CTLR_EL1::ExtRange), 1 << 19);
    }

    #[test]
    fn icc_dir_el1_takes_a_24_bit_intid() {
        assert_eq!(bits(ICC_DIR_EL1::INTID), 0x00ff_ffff);
        assert_eq!(ICC_DIR_EL1::INTID.val(27).value, 27);
    }

    #[test]
    fn cptr_el2_fields() {
        // D24.2.33 (E2H = 0): TCPAC 31, TAM 30, TTA 20, TSM 12, TFP 10, TZ 8;
        // RES1 at 13, 9 and 7:0.
        assert_eq!(bits(CPTR_EL2::TCPAC), 0x8000_0000);
        assert_eq!(bits(CPTR_EL2::TAM), 0x4000_0000);
        assert_eq!(bits(CPTR_EL2::TTA), 0x0010_0000);
        assert_eq!(bits(CPTR_EL2::TSM), 0x1000);
        assert_eq!(bits(CPTR_EL2::TFP), 0x400);
        assert_eq!(bits(CPTR_EL2::TZ), 0x100);
        let res1 = bits(CPTR_EL2::RES1_13) | bits(CPTR_EL2::RES1_9) | bits(CPTR_EL2::RES1_7_0);
        assert_eq!(res1, 0x22ff);
    }

    #[test]
    fn diagnostic_id_fields() {
        // D24.2.79 ID_AA64PFR0_EL1: GIC [27:24], EL2 [11:8]; D24.2.63 ISAR0: Atomic
        // [23:20]; ISAR2: APA3 [15:12], GPA3 [11:8]; IHI 0069 ICH_VTR_EL2: SEIS 22,
        // A3V 21, nV4 20, TDS 19.
        assert_eq!(bits(ID_AA64PFR0_EL1::GIC), 0x0f00_0000);
        assert_eq!(bits(ID_AA64PFR0_EL1::EL2), 0xf00);
        assert_eq!(bits(ID_AA64ISAR0_EL1::Atomic), 0x00f0_0000);
        assert_eq!(bits(ID_AA64ISAR2_EL1::APA3), 0xf000);
        assert_eq!(bits(ID_AA64ISAR2_EL1::GPA3), 0xf00);
        assert_eq!(bits(ICH_VTR_EL2::SEIS), 1 << 22);
        assert_eq!(bits(ICH_VTR_EL2::A3V), 1 << 21);
        assert_eq!(bits(ICH_VTR_EL2::nV4), 1 << 20);
        assert_eq!(bits(ICH_VTR_EL2::TDS), 1 << 19);
    }

    #[test]
    fn id_style_fields() {
        assert_eq!(bits(PMCR_EL0::N), 0xf800);
        assert_eq!(bits(CTR_EL0::DminLine), 0x000f_0000);
        assert_eq!(bits(CTR_EL0::IminLine), 0xf);
        assert_eq!(bits(DCZID_EL0::BS), 0xf);
        assert_eq!(bits(DCZID_EL0::DZP), 0x10);
        assert_eq!(bits(ID_AA64ISAR0_EL1::CRC32), 0x000f_0000);
    }

    #[test]
    fn sctlr_el1_res1_bits() {
        // The documented reset value with every optional feature absent: 0x30d0_0800.
        let v = SCTLR_EL1::LSMAOE::SET
            + SCTLR_EL1::nTLSMD::SET
            + SCTLR_EL1::SPAN::SET
            + SCTLR_EL1::EIS::SET
            + SCTLR_EL1::TSCXT::SET
            + SCTLR_EL1::EOS::SET;
        assert_eq!(v.value, 0x30d0_0800);
    }

    #[test]
    fn stage1_descriptor_fields() {
        use STAGE1_DESCRIPTOR as D;
        // D8.3: valid bit 0, table/page bit 1, AttrIndx [4:2], AP [7:6], SH [9:8],
        // AF 10, output address [47:12], XN 54 (EL2, E2H = 0).
        assert_eq!(bits(D::VALID), 1);
        assert_eq!(D::TYPE::Table.value, 2);
        assert_eq!(bits(D::AttrIndx), 0x1c);
        assert_eq!(bits(D::AP_RES1), 0x40);
        assert_eq!(bits(D::AP_RO), 0x80);
        assert_eq!(D::SH::InnerShareable.value, 0x300);
        assert_eq!(bits(D::AF), 0x400);
        assert_eq!(bits(D::OUTPUT_ADDR), 0x0000_ffff_ffff_f000);
        assert_eq!(bits(D::XN), 1 << 54);
    }
}
