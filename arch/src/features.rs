//! The early-boot CPU diagnostic: the virtualization-relevant features decoded from
//! the ID registers `el2` reads, what the hypervisor cannot run without, and what a
//! Windows guest would need.
//!
//! Pure decoding: `el2` reads ID_AA64PFR0/ISAR0/ISAR1/ISAR2/MMFR0/MMFR1/MMFR2_EL1
//! (and ICH_VTR_EL2 only when the GICv3 system-register interface exists, since
//! reading it otherwise is UNDEFINED), passes the values in and prints
//! [`Features`]' `Display` line and every [`Missing`] reason.

use core::fmt;

use aarch64_cpu::registers::{
    ICH_VTR_EL2 as VTR, ID_AA64ISAR0_EL1 as ISAR0, ID_AA64ISAR1_EL1 as ISAR1,
    ID_AA64MMFR0_EL1 as MMFR0, ID_AA64MMFR1_EL1 as MMFR1, ID_AA64MMFR2_EL1 as MMFR2,
};
use tock_registers::fields::Field;
use tock_registers::{LocalRegisterCopy, RegisterLongName};

use crate::regs;
use crate::sysreg::parange_bits;

/// The raw ID-register values the diagnostic decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdRegisters {
    pub pfr0: u64,
    pub isar0: u64,
    pub isar1: u64,
    pub isar2: u64,
    pub mmfr0: u64,
    pub mmfr1: u64,
    pub mmfr2: u64,
    /// ICH_VTR_EL2, when [`IdRegisters::has_gic_sysregs`] said it may be read.
    pub ich_vtr: Option<u64>,
}

fn field<R: RegisterLongName>(v: u64, f: Field<u64, R>) -> u64 {
    LocalRegisterCopy::<u64, R>::new(v).read(f)
}

impl IdRegisters {
    /// Whether ID_AA64PFR0_EL1 announces the GIC system-register interface (so
    /// ICH_VTR_EL2 may be read).
    pub fn has_gic_sysregs(pfr0: u64) -> bool {
        field(pfr0, regs::ID_AA64PFR0_EL1::GIC) != 0
    }
}

/// Pointer authentication as the CPU implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerAuth {
    None,
    /// FEAT_PACQARMA5 (APA/GPA).
    Qarma5,
    /// FEAT_PACQARMA3 (APA3/GPA3).
    Qarma3,
    /// An IMPLEMENTATION DEFINED algorithm (API/GPI).
    ImplementationDefined,
}

/// The GIC CPU interface's system registers (ID_AA64PFR0_EL1.GIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicSysregs {
    None,
    /// GICv3 / GICv4.0 CPU interface.
    V3,
    /// GICv4.1 CPU interface.
    V4_1,
}

/// The virtualization-relevant features of this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// EL2 implemented in AArch64.
    pub el2: bool,
    /// FEAT_VHE (ID_AA64MMFR1_EL1.VH).
    pub vhe: bool,
    /// 16-bit VMIDs (ID_AA64MMFR1_EL1.VMIDBits = 0b0010), else 8.
    pub vmid16: bool,
    /// Physical address size in bits, `None` for a reserved PARange.
    pub pa_bits: Option<u32>,
    pub gic_sysregs: GicSysregs,
    /// ICH_VTR_EL2.ListRegs + 1, when readable.
    pub list_registers: Option<u8>,
    /// Virtual priority bits (ICH_VTR_EL2.PRIbits + 1), when readable.
    pub virtual_priority_bits: Option<u8>,
    /// GICv4 direct injection of virtual interrupts (ICH_VTR_EL2.nV4 = 0).
    pub gicv4_direct_injection: Option<bool>,
    /// FEAT_LSE atomics (ID_AA64ISAR0_EL1.Atomic ≥ 0b0010).
    pub lse: bool,
    /// FEAT_RNG: RNDR/RNDRRS (ID_AA64ISAR0_EL1.RNDR).
    pub rndr: bool,
    /// FEAT_S2FWB (ID_AA64MMFR2_EL1.FWB).
    pub fwb: bool,
    pub pointer_auth: PointerAuth,
}

/// ID_AA64ISAR0_EL1.Atomic value of FEAT_LSE.
const ATOMIC_LSE: u64 = 0b0010;
/// ID_AA64MMFR1_EL1.VMIDBits value of 16-bit VMIDs.
const VMID_BITS_16: u64 = 0b0010;
/// ID_AA64PFR0_EL1.GIC value of the GICv4.1 CPU interface.
const GIC_V4_1: u64 = 0b0011;

/// Decodes the ID registers.
pub fn decode(r: &IdRegisters) -> Features {
    let gic = field(r.pfr0, regs::ID_AA64PFR0_EL1::GIC);
    let pointer_auth = if field(r.isar1, ISAR1::APA) != 0 || field(r.isar1, ISAR1::GPA) != 0 {
        PointerAuth::Qarma5
    } else if field(r.isar2, regs::ID_AA64ISAR2_EL1::APA3) != 0
        || field(r.isar2, regs::ID_AA64ISAR2_EL1::GPA3) != 0
    {
        PointerAuth::Qarma3
    } else if field(r.isar1, ISAR1::API) != 0 || field(r.isar1, ISAR1::GPI) != 0 {
        PointerAuth::ImplementationDefined
    } else {
        PointerAuth::None
    };
    Features {
        el2: field(r.pfr0, regs::ID_AA64PFR0_EL1::EL2) != 0,
        vhe: field(r.mmfr1, MMFR1::VH) != 0,
        vmid16: field(r.mmfr1, MMFR1::VMIDBits) == VMID_BITS_16,
        pa_bits: parange_bits(field(r.mmfr0, MMFR0::PARange)),
        gic_sysregs: match gic {
            0 => GicSysregs::None,
            GIC_V4_1 => GicSysregs::V4_1,
            _ => GicSysregs::V3,
        },
        list_registers: r.ich_vtr.map(|v| field(v, VTR::ListRegs) as u8 + 1),
        virtual_priority_bits: r.ich_vtr.map(|v| field(v, VTR::PRIbits) as u8 + 1),
        gicv4_direct_injection: r.ich_vtr.map(|v| field(v, regs::ICH_VTR_EL2::nV4) == 0),
        lse: field(r.isar0, regs::ID_AA64ISAR0_EL1::Atomic) >= ATOMIC_LSE,
        rndr: field(r.isar0, ISAR0::RNDR) != 0,
        fwb: field(r.mmfr2, MMFR2::FWB) != 0,
        pointer_auth,
    }
}

/// Something the hypervisor cannot run without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No EL2 in AArch64 (ID_AA64PFR0_EL1.EL2 = 0).
    El2,
    /// No GIC system-register interface: the virtual CPU interface (ICH_*_EL2)
    /// the hypervisor injects interrupts through does not exist.
    GicSysregs,
    /// ID_AA64MMFR0_EL1.PARange holds a reserved value: stage 2 cannot be laid out.
    PaRange,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Missing::El2 => "no AArch64 EL2 (ID_AA64PFR0_EL1.EL2 = 0)",
            Missing::GicSysregs => {
                "no GICv3 system-register CPU interface (ID_AA64PFR0_EL1.GIC = 0): guests' interrupts are injected through ICH_*_EL2, which a GICv2-only CPU lacks"
            }
            Missing::PaRange => "ID_AA64MMFR0_EL1.PARange is a reserved value",
        })
    }
}

/// What of the hypervisor's requirements `f` lacks (empty: it can run).
pub fn missing(f: &Features) -> impl Iterator<Item = Missing> {
    [
        (!f.el2).then_some(Missing::El2),
        (f.gic_sysregs == GicSysregs::None).then_some(Missing::GicSysregs),
        f.pa_bits.is_none().then_some(Missing::PaRange),
    ]
    .into_iter()
    .flatten()
}

/// Whether a Windows guest could run on this CPU: Windows 11 on Arm (24H2 on)
/// uses the Armv8.1 LSE atomics unconditionally, so a CPU without them
/// (Cortex-A57/A72 class, Armv8.0) cannot boot it.
pub fn windows_guests(f: &Features) -> Result<(), &'static str> {
    if f.lse {
        Ok(())
    } else {
        Err("refused: the CPU has no LSE atomics (FEAT_LSE, ID_AA64ISAR0_EL1.Atomic < 2), which Windows 11 on Arm requires")
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Features {
    /// One line, `key=value` pairs: `VHE=yes VMID=16 PA=48 GIC-sysregs=v3 LRs=4 …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EL2={} VHE={} VMID={} PA=",
            yes(self.el2),
            yes(self.vhe),
            if self.vmid16 { 16 } else { 8 }
        )?;
        match self.pa_bits {
            Some(b) => write!(f, "{b}")?,
            None => f.write_str("reserved")?,
        }
        let gic = match self.gic_sysregs {
            GicSysregs::None => "none",
            GicSysregs::V3 => "v3",
            GicSysregs::V4_1 => "v4.1",
        };
        write!(f, " GIC-sysregs={gic}")?;
        if let Some(n) = self.list_registers {
            write!(f, " LRs={n}")?;
        }
        if let Some(n) = self.virtual_priority_bits {
            write!(f, " vPRIbits={n}")?;
        }
        if let Some(v4) = self.gicv4_direct_injection {
            write!(f, " GICv4-direct={}", yes(v4))?;
        }
        let pauth = match self.pointer_auth {
            PointerAuth::None => "no",
            PointerAuth::Qarma5 => "qarma5",
            PointerAuth::Qarma3 => "qarma3",
            PointerAuth::ImplementationDefined => "impdef",
        };
        write!(
            f,
            " LSE={} RNDR={} FWB={} PAuth={pauth}",
            yes(self.lse),
            yes(self.rndr),
            yes(self.fwb)
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// QEMU 7.2's `cortex-a57` (Armv8.0): PFR0 EL0-EL3 AArch64+32 (0x2222) with the
    /// GICv3 interface QEMU adds for gic-version=3, ISAR0 0x11120 (AES, SHA1/2, CRC32;
    /// Atomic = 0), ISAR1 0, MMFR0 0x1124 (PARange 44-bit), MMFR1 0, MMFR2 0.
    const A57: IdRegisters = IdRegisters {
        pfr0: 0x0100_2222,
        isar0: 0x0001_1120,
        isar1: 0,
        isar2: 0,
        mmfr0: 0x1124,
        mmfr1: 0,
        mmfr2: 0,
        // QEMU's GICv3 CPU interface: 5 priority bits, no GICv4 (nV4), 4 LRs.
        ich_vtr: Some(0x9030_0003),
    };

    /// An Armv8.2 CPU like Neoverse N1: LSE (Atomic 2), VHE, VMID16, no RNDR,
    /// no FWB, no PAuth.
    const N1: IdRegisters = IdRegisters {
        pfr0: 0x1100_0000_0100_1111,
        isar0: 0x0000_1000_1021_1120,
        isar1: 0x0010_0001,
        isar2: 0,
        mmfr0: 0x0010_1125,
        mmfr1: 0x1012_2122,
        mmfr2: 0x0000_1011,
        ich_vtr: Some(0x9000_0003),
    };

    #[test]
    fn armv8_0_cpu_runs_the_hypervisor_but_not_windows() {
        let f = decode(&A57);
        assert!(f.el2 && !f.vhe && !f.vmid16 && !f.lse && !f.rndr && !f.fwb);
        assert_eq!(f.pa_bits, Some(44));
        assert_eq!(f.gic_sysregs, GicSysregs::V3);
        assert_eq!(f.list_registers, Some(4));
        assert_eq!(f.virtual_priority_bits, Some(5));
        assert_eq!(f.pointer_auth, PointerAuth::None);
        assert_eq!(missing(&f).count(), 0);
        let why = windows_guests(&f).unwrap_err();
        assert!(why.contains("LSE"), "{why}");
        assert_eq!(
            f.to_string(),
            "EL2=yes VHE=no VMID=8 PA=44 GIC-sysregs=v3 LRs=4 vPRIbits=5 GICv4-direct=no LSE=no RNDR=no FWB=no PAuth=no"
        );
    }

    #[test]
    fn armv8_2_cpu_has_lse_vhe_vmid16_and_no_rndr() {
        let f = decode(&N1);
        assert!(f.vhe && f.vmid16 && f.lse && !f.rndr && !f.fwb);
        assert_eq!(f.pa_bits, Some(48));
        assert_eq!(windows_guests(&f), Ok(()));
    }

    #[test]
    fn each_feature_is_its_own_field() {
        let base = decode(&IdRegisters::default());
        assert_eq!(
            missing(&base).collect::<std::vec::Vec<_>>(),
            [Missing::El2, Missing::GicSysregs]
        );
        let with = |r: IdRegisters| decode(&r);
        assert!(
            with(IdRegisters {
                isar0: 1 << 60,
                ..Default::default()
            })
            .rndr
        );
        assert!(
            !with(IdRegisters {
                isar0: 1 << 20,
                ..Default::default()
            })
            .lse
        );
        assert!(
            with(IdRegisters {
                isar0: 2 << 20,
                ..Default::default()
            })
            .lse
        );
        assert!(
            with(IdRegisters {
                mmfr2: 1 << 40,
                ..Default::default()
            })
            .fwb
        );
        assert!(
            with(IdRegisters {
                mmfr1: 1 << 8,
                ..Default::default()
            })
            .vhe
        );
        assert!(
            with(IdRegisters {
                mmfr1: 2 << 4,
                ..Default::default()
            })
            .vmid16
        );
        assert_eq!(
            with(IdRegisters {
                isar1: 1 << 4,
                ..Default::default()
            })
            .pointer_auth,
            PointerAuth::Qarma5
        );
        assert_eq!(
            with(IdRegisters {
                isar2: 1 << 12,
                ..Default::default()
            })
            .pointer_auth,
            PointerAuth::Qarma3
        );
        assert_eq!(
            with(IdRegisters {
                isar1: 1 << 8,
                ..Default::default()
            })
            .pointer_auth,
            PointerAuth::ImplementationDefined
        );
        assert_eq!(
            with(IdRegisters {
                pfr0: 3 << 24,
                ..Default::default()
            })
            .gic_sysregs,
            GicSysregs::V4_1
        );
        assert!(IdRegisters::has_gic_sysregs(1 << 24));
        assert!(!IdRegisters::has_gic_sysregs(0x2222));
        // A reserved PARange is refused with its reason.
        let f = with(IdRegisters {
            pfr0: 0x0100_1100,
            mmfr0: 0xf,
            ..Default::default()
        });
        assert_eq!(
            missing(&f).collect::<std::vec::Vec<_>>(),
            [Missing::PaRange]
        );
        assert!(Missing::GicSysregs
            .to_string()
            .contains("ID_AA64PFR0_EL1.GIC = 0"));
        // ICH_VTR_EL2.ListRegs = 0 means one list register.
        let f = with(IdRegisters {
            pfr0: 0x0100_1100,
            ich_vtr: Some(0),
            ..Default::default()
        });
        assert_eq!(f.list_registers, Some(1));
        assert_eq!(missing(&f).count(), 0);
    }
}
