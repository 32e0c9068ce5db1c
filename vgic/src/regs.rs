//! Register definitions: every GICv3 offset, field and encoding the model uses, named
//! after the GICv3 architecture specification (IHI 0069) so a reader can look them up.
//! Nothing outside this module spells a raw offset or bit position.

/// INTID ranges (GICv3 §2.2).
pub mod intid {
    /// First SGI.
    pub const SGI_FIRST: u32 = 0;
    /// Number of SGIs.
    pub const SGI_COUNT: u32 = 16;
    /// First PPI.
    pub const PPI_FIRST: u32 = 16;
    /// Number of private interrupts (SGIs + PPIs) per PE.
    pub const PRIVATE_COUNT: u32 = 32;
    /// First SPI.
    pub const SPI_FIRST: u32 = 32;
    /// First special INTID (1020..=1023); no SPI may reach it.
    pub const SPECIAL_FIRST: u32 = 1020;
    /// The largest number of SPIs a GICv3 without extended SPIs can have (32..=1019).
    pub const MAX_SPIS: u32 = SPECIAL_FIRST - SPI_FIRST;
    /// First LPI (GICv3 §2.2: LPIs are 8192 and up).
    pub const LPI_FIRST: u32 = 8192;
    /// INTID bits of a vGIC with LPIs: 14, so LPIs 8192..=16383.
    pub const LPI_ID_BITS: u32 = 14;
    /// Number of LPIs a vGIC with LPIs implements.
    pub const LPI_COUNT: u32 = (1 << LPI_ID_BITS) - LPI_FIRST;
}

/// Distributor (GICD) register offsets within its 64 KiB frame.
pub mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const TYPER2: u64 = 0x000C;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    /// Legacy target registers: RAZ/WI with affinity routing.
    pub const ITARGETSR: u64 = 0x0800;
    pub const ICFGR: u64 = 0x0C00;
    /// RAZ/WI with a single Security state (DS=1).
    pub const IGRPMODR: u64 = 0x0D00;
    /// RAZ/WI with a single Security state (DS=1).
    pub const NSACR: u64 = 0x0E00;
    /// Legacy SGI registers: RAZ/WI with affinity routing.
    pub const SGIR: u64 = 0x0F00;
    pub const CPENDSGIR: u64 = 0x0F10;
    pub const SPENDSGIR: u64 = 0x0F20;
    pub const IROUTER: u64 = 0x6000;
    /// First byte past the IROUTER array (INTID 1019 is the last).
    pub const IROUTER_END: u64 = 0x7FE0;
    /// Size of one bit-per-interrupt bank (IGROUPR … ICACTIVER): 1024 interrupts.
    pub const BITS_BANK_SIZE: u64 = 0x80;
    /// Size of the IPRIORITYR / ITARGETSR banks (one byte per interrupt).
    pub const BYTE_BANK_SIZE: u64 = 0x400;
    /// Size of the ICFGR bank (two bits per interrupt).
    pub const CFG_BANK_SIZE: u64 = 0x100;
    /// Size of the legacy SGI pending banks.
    pub const SGI_BANK_SIZE: u64 = 0x10;
    /// Size of the distributor frame.
    pub const FRAME_SIZE: u64 = 0x1_0000;
}

/// GICD_CTLR fields, single Security state view (GICD_CTLR.DS == 1).
pub mod ctlr {
    /// EnableGrp0 (named EnableGrp1NS in the Non-secure view of a two-state GIC).
    pub const ENABLE_GRP0: u32 = 1 << 0;
    /// EnableGrp1 (named EnableGrp1A in the Non-secure view of a two-state GIC).
    pub const ENABLE_GRP1: u32 = 1 << 1;
    /// ARE: affinity routing, RAO/WI here.
    pub const ARE: u32 = 1 << 4;
    /// DS: disable security, RAO/WI here (one Security state).
    pub const DS: u32 = 1 << 6;
    /// RWP: register write pending, always 0 (writes take effect at once).
    pub const RWP: u32 = 1 << 31;
    /// Bits the guest can change.
    pub const WRITABLE: u32 = ENABLE_GRP0 | ENABLE_GRP1;
}

/// GICD_TYPER fields.
pub mod typer {
    /// ITLinesNumber \[4:0\]: 32 * (N + 1) INTIDs are implemented.
    pub const IT_LINES_SHIFT: u32 = 0;
    /// CPUNumber \[7:5\]: PEs reachable without affinity routing, minus one (capped at 8).
    pub const CPU_NUMBER_SHIFT: u32 = 5;
    /// Largest value of CPUNumber + 1.
    pub const CPU_NUMBER_MAX: u32 = 8;
    /// IDbits \[23:19\]: INTID bits minus one.
    pub const ID_BITS_SHIFT: u32 = 19;
    /// INTID bits without LPIs: 10 (INTIDs 0..=1023).
    pub const ID_BITS_NO_LPI: u32 = 10;
    /// A3V \[24\]: Aff3 values other than 0 supported.
    pub const A3V: u32 = 1 << 24;
    /// RSS \[26\]: SGI targets with Aff0 in 16..=255 supported (ICC_SGI1R_EL1.RS).
    pub const RSS: u32 = 1 << 26;
    /// Largest Aff0 reachable without RSS.
    pub const AFF0_MAX_WITHOUT_RSS: u32 = 15;
    /// LPIS \[17\]: LPIs supported (only when the VM has an ITS).
    pub const LPIS: u32 = 1 << 17;
    // MBIS [16] stays 0: no message-based SPIs.
}

/// GICD_IIDR / GICR_IIDR value fields.
pub mod iidr {
    /// Implementer \[11:0\]: JEP106 code of Arm (0x43B), as KVM and QEMU report.
    pub const IMPLEMENTER_ARM: u32 = 0x43B;
    /// ProductID \[31:24\]: 'R' for RayOS, so no host errata workaround matches.
    pub const PRODUCT_RAYOS: u32 = 0x52;
    pub const PRODUCT_SHIFT: u32 = 24;
    /// The value both frames report.
    pub const VALUE: u32 = (PRODUCT_RAYOS << PRODUCT_SHIFT) | IMPLEMENTER_ARM;
}

/// Identification registers at the top of each 64 KiB frame.
pub mod id {
    /// PIDR2 offset in a GICD or GICR RD_base frame.
    pub const PIDR2: u64 = 0xFFE8;
    /// PIDR2: ArchRev \[7:4\] = 3 (GICv3), JEDEC \[3\] = 1, JEP106 ID \[2:0\] = 0b011 (Arm).
    pub const PIDR2_GICV3: u32 = (3 << 4) | (1 << 3) | 0b011;
    /// CIDR0..3 offsets and their fixed component-ID values.
    pub const CIDR: [(u64, u32); 4] = [
        (0xFFF0, 0x0D),
        (0xFFF4, 0xF0),
        (0xFFF8, 0x05),
        (0xFFFC, 0xB1),
    ];
}

/// Redistributor (GICR) layout and register offsets.
pub mod gicr {
    /// Each redistributor is two 64 KiB frames: RD_base then SGI_base.
    pub const STRIDE: u64 = 0x2_0000;
    /// Offset of SGI_base within one redistributor.
    pub const SGI_BASE: u64 = 0x1_0000;
    // RD_base frame.
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PROPBASER: u64 = 0x0070;
    pub const PENDBASER: u64 = 0x0078;
    // SGI_base frame (offsets relative to SGI_base).
    pub const IGROUPR0: u64 = 0x0080;
    pub const ISENABLER0: u64 = 0x0100;
    pub const ICENABLER0: u64 = 0x0180;
    pub const ISPENDR0: u64 = 0x0200;
    pub const ICPENDR0: u64 = 0x0280;
    pub const ISACTIVER0: u64 = 0x0300;
    pub const ICACTIVER0: u64 = 0x0380;
    pub const IPRIORITYR0: u64 = 0x0400;
    /// First byte past IPRIORITYR7.
    pub const IPRIORITYR_END: u64 = 0x0420;
    pub const ICFGR0: u64 = 0x0C00;
    pub const ICFGR1: u64 = 0x0C04;
    /// RAZ/WI with a single Security state.
    pub const IGRPMODR0: u64 = 0x0D00;
    /// RAZ/WI with a single Security state.
    pub const NSACR: u64 = 0x0E00;
}

/// GICR_TYPER fields (64-bit).
pub mod gicr_typer {
    /// Last \[4\]: this is the final redistributor of the region.
    pub const LAST: u64 = 1 << 4;
    /// Processor_Number \[23:8\].
    pub const PROCESSOR_NUMBER_SHIFT: u32 = 8;
    /// Affinity_Value \[63:32\]: Aff3.Aff2.Aff1.Aff0.
    pub const AFFINITY_SHIFT: u32 = 32;
    /// PLPIS \[0\]: physical LPIs supported (only when the VM has an ITS).
    pub const PLPIS: u64 = 1 << 0;
    // VLPIS [1] and DirectLPI [3] stay 0: LPIs only through the ITS.
}

/// GICR_CTLR fields.
pub mod gicr_ctlr {
    /// EnableLPIs \[0\].
    pub const ENABLE_LPIS: u32 = 1 << 0;
    /// CES \[1\]: EnableLPIs can be cleared once set (read-only, 1 with LPIs).
    pub const CES: u32 = 1 << 1;
}

/// GICR_PROPBASER / GICR_PENDBASER fields.
pub mod lpi_tables {
    /// PROPBASER.IDbits \[4:0\]: INTID bits the configuration table covers, minus one.
    pub const PROP_ID_BITS_MASK: u64 = 0x1F;
    /// PROPBASER.Physical_Address \[51:12\].
    pub const PROP_PA_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    /// PENDBASER.Physical_Address \[51:16\].
    pub const PEND_PA_MASK: u64 = 0x000F_FFFF_FFFF_0000;
    /// PENDBASER.PTZ \[62\]: the pending table is zero (write-only, reads 0).
    pub const PEND_PTZ: u64 = 1 << 62;
    /// InnerCache \[9:7\], Shareability \[11:10\], OuterCache \[58:56\]: kept as written.
    pub const ATTR_MASK: u64 = (0x7 << 7) | (0x3 << 10) | (0x7 << 56);
    /// An LPI configuration byte: Enable \[0\].
    pub const CFG_ENABLE: u8 = 1 << 0;
    /// An LPI configuration byte: Priority \[7:2\].
    pub const CFG_PRIORITY_MASK: u8 = 0xFC;
}

/// GICR_WAKER fields.
pub mod waker {
    /// ProcessorSleep \[1\].
    pub const PROCESSOR_SLEEP: u32 = 1 << 1;
    /// ChildrenAsleep \[2\], read-only: follows ProcessorSleep at once.
    pub const CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// ICFGR: two bits per interrupt, Int_config in the upper bit (1 = edge-triggered).
pub mod icfgr {
    /// Interrupts per ICFGR register.
    pub const PER_REG: u32 = 16;
    /// Int_config bit within an interrupt's two-bit field.
    pub const EDGE: u32 = 0b10;
}

/// The 32-bit affinity of an MPIDR_EL1 value, packed as Aff3.Aff2.Aff1.Aff0.
pub mod mpidr {
    /// MPIDR_EL1 bit 31 is RES1.
    pub const RES1: u64 = 1 << 31;
    pub const AFF0_MASK: u64 = 0xFF;
    pub const AFF1_SHIFT: u32 = 8;
    pub const AFF2_SHIFT: u32 = 16;
    pub const AFF3_SHIFT: u32 = 32;
    /// Aff2:Aff1:Aff0 bits of MPIDR_EL1.
    pub const AFF_LOW_MASK: u64 = 0x00FF_FFFF;

    /// Aff0 of a packed affinity.
    pub const fn packed_aff0(p: u32) -> u32 {
        p & 0xFF
    }

    /// Aff3 of a packed affinity.
    pub const fn packed_aff3(p: u32) -> u32 {
        p >> 24
    }

    /// Packs MPIDR_EL1's four affinity fields into 32 bits (Aff3 in \[31:24\]).
    pub const fn packed(mpidr: u64) -> u32 {
        ((mpidr & AFF_LOW_MASK) | (((mpidr >> AFF3_SHIFT) & 0xFF) << 24)) as u32
    }
}

/// `GICD_IROUTER<n>`: where an SPI goes when affinity routing is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Irouter(pub u64);

impl Irouter {
    /// Interrupt_Routing_Mode \[31\]: 1 = any participating PE (1 of N).
    pub const IRM: u64 = 1 << 31;
    /// Bits the register implements: Aff0..Aff2 \[23:0\], IRM \[31\], Aff3 \[39:32\].
    pub const WRITABLE: u64 = 0x0000_00FF_80FF_FFFF;

    /// Builds a value from raw guest bits, dropping RES0 bits.
    pub const fn from_guest(v: u64) -> Self {
        Self(v & Self::WRITABLE)
    }
    /// True for 1-of-N routing.
    pub const fn any_pe(self) -> bool {
        self.0 & Self::IRM != 0
    }
    /// The target affinity packed like [`mpidr::packed`].
    pub const fn affinity(self) -> u32 {
        mpidr::packed(self.0)
    }
    /// The value for a target with MPIDR `mpidr`.
    pub const fn for_mpidr(mpidr: u64) -> Self {
        Self::from_guest(mpidr & (mpidr::AFF_LOW_MASK | (0xFF << mpidr::AFF3_SHIFT)))
    }
}

/// ICC_SGI1R_EL1 as written by a guest to raise SGIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgi1r(pub u64);

impl Sgi1r {
    /// TargetList \[15:0\].
    pub const fn target_list(self) -> u16 {
        self.0 as u16
    }
    /// Aff1 \[23:16\].
    pub const fn aff1(self) -> u8 {
        (self.0 >> 16) as u8
    }
    /// INTID \[27:24\].
    pub const fn intid(self) -> u32 {
        ((self.0 >> 24) & 0xF) as u32
    }
    /// Aff2 \[39:32\].
    pub const fn aff2(self) -> u8 {
        (self.0 >> 32) as u8
    }
    /// IRM \[40\]: 1 = every PE except the sender.
    pub const fn broadcast(self) -> bool {
        self.0 & (1 << 40) != 0
    }
    /// RS \[47:44\]: Aff0 = RS * 16 + TargetList bit.
    pub const fn range_selector(self) -> u8 {
        ((self.0 >> 44) & 0xF) as u8
    }
    /// Aff3 \[55:48\].
    pub const fn aff3(self) -> u8 {
        (self.0 >> 48) as u8
    }
    /// The packed affinity of TargetList bit `bit`.
    pub const fn target_affinity(self, bit: u32) -> u32 {
        let aff0 = self.range_selector() as u32 * 16 + bit;
        (self.aff3() as u32) << 24 | (self.aff2() as u32) << 16 | (self.aff1() as u32) << 8 | aff0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgi1r_fields_decode() {
        // Aff3=0x12 RS=3 IRM=0 Aff2=0x34 INTID=0xB Aff1=0x56 TargetList=0x8001.
        let v = Sgi1r(0x12 << 48 | 3 << 44 | 0x34 << 32 | 0xB << 24 | 0x56 << 16 | 0x8001);
        assert_eq!(v.target_list(), 0x8001);
        assert_eq!(v.intid(), 0xB);
        assert!(!v.broadcast());
        assert_eq!(v.target_affinity(15), 0x1234_563F);
        assert!(Sgi1r(1 << 40).broadcast());
    }

    #[test]
    fn irouter_masks_res0_and_packs_affinity() {
        let r = Irouter::from_guest(u64::MAX);
        assert_eq!(r.0, Irouter::WRITABLE);
        assert!(r.any_pe());
        let r = Irouter::for_mpidr(0x8000_0000 | 0x07 << 32 | 0x01_0203);
        assert_eq!(r.affinity(), 0x0701_0203);
        assert!(!r.any_pe());
    }

    #[test]
    fn pidr2_reports_gicv3() {
        assert_eq!(id::PIDR2_GICV3 >> 4 & 0xF, 3);
    }
}
