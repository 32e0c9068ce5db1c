//! The seam between the architecture and the VMM: one trap of a lower EL, decoded from
//! ESR_EL2, FAR_EL2 and HPFAR_EL2 into an [`Exit`].

use aarch64_cpu::registers::ESR_EL2;
use tock_registers::LocalRegisterCopy;

use crate::iss::{fsc, HPFAR, ISS_CALL, ISS_DABT, ISS_IABT, ISS_SYSREG, ISS_WFX};
use crate::sysreg::SysRegAccess;

/// Width and destination of an MMIO access, from a data abort with a valid syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Access width in bytes: 1, 2, 4 or 8.
    pub bytes: u8,
    /// Loads sign-extend the value to the register width.
    pub sign_extend: bool,
    /// The general-purpose register transferred (31 = XZR).
    pub reg: u8,
    /// The register is 64-bit (X) rather than 32-bit (W).
    pub reg64: bool,
    /// Store (true) or load (false).
    pub write: bool,
}

impl MmioAccess {
    /// The value a load of `raw` (zero-extended device data) leaves in the register.
    #[inline(always)]
    pub fn load_result(&self, raw: u64) -> u64 {
        // Shift the access's bytes to the top of the register and back down, the
        // arithmetic shift extending the sign (`bytes` is 1, 2, 4 or 8; the mask
        // keeps a hand-built other value from overflowing the shift).
        let shift = 64u32.saturating_sub(u32::from(self.bytes) * 8) & 63;
        let top = raw << shift;
        let extended = if self.sign_extend {
            ((top as i64) >> shift) as u64
        } else {
            top >> shift
        };
        if self.reg64 {
            extended
        } else {
            extended & u64::from(u32::MAX)
        }
    }
}

/// What kind of stage-2 fault (or other abort) a guest access hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// No stage-2 mapping: MMIO emulation or a stray access.
    Translation,
    /// Mapped without the needed permission.
    Permission,
    /// Access flag not set.
    AccessFlag,
    /// Any other fault status code (external aborts, alignment, TLB conflict, …).
    Other(u8),
}

impl AbortKind {
    fn from_fsc(code: u64) -> Self {
        match code & fsc::GROUP_MASK {
            fsc::TRANSLATION => AbortKind::Translation,
            fsc::PERMISSION => AbortKind::Permission,
            fsc::ACCESS_FLAG => AbortKind::AccessFlag,
            _ => AbortKind::Other(code as u8),
        }
    }
}

/// One trap from the guest, decoded. `el2` dispatches on this in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// HVC #imm from AArch64 EL1; the return address already points past it.
    Hvc { imm: u16 },
    /// SMC #imm trapped by HCR_EL2.TSC; the return address points at the SMC.
    Smc { imm: u16 },
    /// A data abort routed to EL2 (stage-2 fault).
    DataAbort {
        /// Faulting intermediate physical address (valid for stage-2 faults).
        ipa: u64,
        /// Faulting virtual address (FAR_EL2), if the syndrome says it is valid.
        va: Option<u64>,
        kind: AbortKind,
        /// The access that faulted, when ISV=1 (a single load/store of one register).
        access: Option<MmioAccess>,
        /// Whether it was a write (WnR), valid even without ISV.
        write: bool,
        /// The fault happened walking the guest's own stage-1 tables.
        s1ptw: bool,
    },
    /// An instruction fetch faulted at stage 2.
    InstructionAbort {
        ipa: u64,
        va: Option<u64>,
        kind: AbortKind,
        s1ptw: bool,
    },
    /// A trapped MSR/MRS.
    SysReg(SysRegAccess),
    /// A trapped WFI (`wfe == false`) or WFE, or their FEAT_WFxT forms WFIT / WFET
    /// with a timeout: `timeout_reg` is then the general-purpose register (31 = XZR)
    /// holding the CNTVCT_EL0 value at which the wait ends even without an event.
    /// A WFxT syndrome without a valid register (ISS.RV = 0) is a plain WFI / WFE.
    Wfx { wfe: bool, timeout_reg: Option<u8> },
    /// Anything else: `el2` injects an undefined-instruction exception.
    Other { ec: u8, iss: u32 },
}

/// The ESR_EL2 bits that identify `HVC #0` from AArch64: the exception class and the
/// call's immediate (ISS\[15:0\]).
const HVC0_MASK: u64 =
    (ESR_EL2::EC.mask << ESR_EL2::EC.shift) | (ISS_CALL::IMM16.mask << ISS_CALL::IMM16.shift);
const HVC0_VALUE: u64 = (ESR_EL2::EC::Value::HVC64 as u64) << ESR_EL2::EC.shift;
/// ESR_EL2.EC of a data abort from a lower exception level, in place.
const EC_MASK: u64 = ESR_EL2::EC.mask << ESR_EL2::EC.shift;
const DABT_LOWER_VALUE: u64 = (ESR_EL2::EC::Value::DataAbortLowerEL as u64) << ESR_EL2::EC.shift;

/// Whether `esr` is an `HVC #0` from AArch64 — the exit path's first test, one AND
/// and one compare.
#[inline(always)]
pub const fn is_hvc0(esr: u64) -> bool {
    esr & HVC0_MASK == HVC0_VALUE
}

/// Whether `esr` is a data abort from a lower exception level (the MMIO exits).
#[inline(always)]
pub const fn is_data_abort_lower(esr: u64) -> bool {
    esr & EC_MASK == DABT_LOWER_VALUE
}

/// The exception class of an ESR_EL2 value.
pub fn exception_class(esr: u64) -> u8 {
    LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr).read(ESR_EL2::EC) as u8
}

/// Whether the trapped instruction was 32 bits long (ESR_EL2.IL).
pub fn instruction_is_32bit(esr: u64) -> bool {
    LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr).is_set(ESR_EL2::IL)
}

/// ISS_WFX.TI bit 0: the instruction waited for an event (WFE, WFET), not an
/// interrupt.
const TI_WFE: u64 = 0b01;
/// ISS_WFX.TI bit 1: the instruction had a timeout (WFIT, WFET).
const TI_TIMEOUT: u64 = 0b10;

fn ipa_from(hpfar: u64, far: u64) -> u64 {
    let h = LocalRegisterCopy::<u64, HPFAR::Register>::new(hpfar);
    (h.read(HPFAR::FIPA) << 12) | (far & 0xfff)
}

impl MmioAccess {
    #[inline(always)]
    fn from_iss(d: LocalRegisterCopy<u64, ISS_DABT::Register>) -> Self {
        MmioAccess {
            bytes: 1 << d.read(ISS_DABT::SAS),
            sign_extend: d.is_set(ISS_DABT::SSE),
            reg: d.read(ISS_DABT::SRT) as u8,
            reg64: d.is_set(ISS_DABT::SF),
            write: d.is_set(ISS_DABT::WNR),
        }
    }
}

/// The common case of a data abort, decoded alone for the exit fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioFault {
    /// Faulting intermediate physical address.
    pub ipa: u64,
    /// Faulting virtual address (FAR_EL2), if the syndrome says it is valid.
    pub va: Option<u64>,
    pub access: MmioAccess,
}

/// The exit when it is a stage-2 translation fault of a single-register load or
/// store with a valid syndrome (ISV = 1) that is not part of the guest's own
/// table walk: what [`decode`] reports as a [`Exit::DataAbort`] of
/// [`AbortKind::Translation`] with an `access` and no `s1ptw`. `None` for anything
/// else (call [`decode`]). Whether the IPA is guest RAM or MMIO is the caller's.
#[inline]
pub fn decode_mmio(esr: u64, far: u64, hpfar: u64) -> Option<MmioFault> {
    let reg = LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr);
    if reg.read(ESR_EL2::EC) != ESR_EL2::EC::Value::DataAbortLowerEL as u64 {
        return None;
    }
    let d = LocalRegisterCopy::<u64, ISS_DABT::Register>::new(reg.read(ESR_EL2::ISS));
    if !d.is_set(ISS_DABT::ISV)
        || d.is_set(ISS_DABT::S1PTW)
        || d.read(ISS_DABT::DFSC) & fsc::GROUP_MASK != fsc::TRANSLATION
    {
        return None;
    }
    Some(MmioFault {
        ipa: ipa_from(hpfar, far),
        va: (!d.is_set(ISS_DABT::FNV)).then_some(far),
        access: MmioAccess::from_iss(d),
    })
}

/// Decodes one synchronous trap from a lower EL.
pub fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
    use ESR_EL2::EC::Value as Ec;
    let reg = LocalRegisterCopy::<u64, ESR_EL2::Register>::new(esr);
    let iss = reg.read(ESR_EL2::ISS);
    let ec = reg.read_as_enum::<Ec>(ESR_EL2::EC);
    match ec {
        Some(Ec::HVC64) => Exit::Hvc {
            imm: LocalRegisterCopy::<u64, ISS_CALL::Register>::new(iss).read(ISS_CALL::IMM16)
                as u16,
        },
        Some(Ec::SMC64) => Exit::Smc {
            imm: LocalRegisterCopy::<u64, ISS_CALL::Register>::new(iss).read(ISS_CALL::IMM16)
                as u16,
        },
        Some(Ec::DataAbortLowerEL) => {
            let d = LocalRegisterCopy::<u64, ISS_DABT::Register>::new(iss);
            let access = d.is_set(ISS_DABT::ISV).then(|| MmioAccess::from_iss(d));
            Exit::DataAbort {
                ipa: ipa_from(hpfar, far),
                va: (!d.is_set(ISS_DABT::FNV)).then_some(far),
                kind: AbortKind::from_fsc(d.read(ISS_DABT::DFSC)),
                access,
                write: d.is_set(ISS_DABT::WNR),
                s1ptw: d.is_set(ISS_DABT::S1PTW),
            }
        }
        Some(Ec::InstrAbortLowerEL) => {
            let i = LocalRegisterCopy::<u64, ISS_IABT::Register>::new(iss);
            Exit::InstructionAbort {
                ipa: ipa_from(hpfar, far),
                va: (!i.is_set(ISS_IABT::FNV)).then_some(far),
                kind: AbortKind::from_fsc(i.read(ISS_IABT::IFSC)),
                s1ptw: i.is_set(ISS_IABT::S1PTW),
            }
        }
        Some(Ec::TrappedMsrMrs) => {
            let s = LocalRegisterCopy::<u64, ISS_SYSREG::Register>::new(iss);
            Exit::SysReg(SysRegAccess {
                op0: s.read(ISS_SYSREG::OP0) as u8,
                op1: s.read(ISS_SYSREG::OP1) as u8,
                crn: s.read(ISS_SYSREG::CRN) as u8,
                crm: s.read(ISS_SYSREG::CRM) as u8,
                op2: s.read(ISS_SYSREG::OP2) as u8,
                reg: s.read(ISS_SYSREG::RT) as u8,
                read: s.is_set(ISS_SYSREG::DIRECTION),
            })
        }
        Some(Ec::TrappedWFIorWFE) => {
            let w = LocalRegisterCopy::<u64, ISS_WFX::Register>::new(iss);
            let ti = w.read(ISS_WFX::TI);
            Exit::Wfx {
                wfe: ti & TI_WFE != 0,
                timeout_reg: (ti & TI_TIMEOUT != 0 && w.is_set(ISS_WFX::RV))
                    .then(|| w.read(ISS_WFX::RN) as u8),
            }
        }
        _ => Exit::Other {
            ec: reg.read(ESR_EL2::EC) as u8,
            iss: iss as u32,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EC_SHIFT: u64 = 26;
    const IL: u64 = 1 << 25;

    fn esr(ec: u64, iss: u64) -> u64 {
        ec << EC_SHIFT | IL | iss
    }

    #[test]
    fn fast_path_tests_agree_with_the_decoder() {
        assert!(is_hvc0(esr(0x16, 0)));
        assert!(!is_hvc0(esr(0x16, 1)), "HVC #1 is not HVC #0");
        assert!(!is_hvc0(esr(0x17, 0)), "SMC is not HVC");
        assert!(!is_hvc0(esr(0x12, 0)), "AArch32 HVC");
        assert!(is_data_abort_lower(esr(0x24, 0x1234)));
        assert!(!is_data_abort_lower(esr(0x25, 0)), "EL2's own data abort");
        for ec in 0..64u64 {
            let e = esr(ec, 0);
            assert_eq!(is_data_abort_lower(e), exception_class(e) == 0x24);
            assert_eq!(is_hvc0(e), decode(e, 0, 0) == Exit::Hvc { imm: 0 });
        }
    }

    #[test]
    fn hvc_and_smc_carry_their_immediate() {
        assert_eq!(decode(esr(0x16, 0x1234), 0, 0), Exit::Hvc { imm: 0x1234 });
        assert_eq!(decode(esr(0x17, 0), 0, 0), Exit::Smc { imm: 0 });
    }

    #[test]
    fn data_abort_with_syndrome_decodes_the_access() {
        // ldrsh w3, [x?] at a translation fault level 3: ISV, SAS=1, SSE, SRT=3, SF=0, DFSC=0b000111
        let iss = 1 << 24 | 1 << 22 | 1 << 21 | 3 << 16 | 0b000111;
        let e = decode(esr(0x24, iss), 0xffff_0000_0900_0018, 0x0900_0000 >> 8);
        assert_eq!(
            e,
            Exit::DataAbort {
                ipa: 0x0900_0018,
                va: Some(0xffff_0000_0900_0018),
                kind: AbortKind::Translation,
                access: Some(MmioAccess {
                    bytes: 2,
                    sign_extend: true,
                    reg: 3,
                    reg64: false,
                    write: false
                }),
                write: false,
                s1ptw: false,
            }
        );
    }

    #[test]
    fn decode_mmio_agrees_with_decode_and_takes_only_the_fast_case() {
        let far = 0xffff_0000_0900_0018;
        let hpfar = 0x0900_0000 >> 8;
        // str x7 (SF, WnR), translation fault level 2: the fast case.
        let fast = 1 << 24 | 3 << 22 | 7 << 16 | 1 << 15 | 1 << 6 | 0b000110;
        let m = decode_mmio(esr(0x24, fast), far, hpfar).expect("fast case");
        let Exit::DataAbort {
            ipa, va, access, ..
        } = decode(esr(0x24, fast), far, hpfar)
        else {
            panic!("not a data abort");
        };
        assert_eq!((m.ipa, m.va, Some(m.access)), (ipa, va, access));
        assert!(m.access.write && m.access.reg64 && m.access.bytes == 8 && m.access.reg == 7);
        // Each of: no ISV, S1PTW, a permission fault, an instruction abort, an HVC.
        for (ec, iss) in [
            (0x24, fast & !(1 << 24)),
            (0x24, fast | 1 << 7),
            (0x24, (fast & !0x3f) | 0b001111),
            (0x20, fast),
            (0x16, 0),
        ] {
            assert_eq!(
                decode_mmio(esr(ec, iss), far, hpfar),
                None,
                "{ec:#x} {iss:#x}"
            );
        }
    }

    #[test]
    fn data_abort_without_syndrome_has_no_access() {
        // A store pair: ISV=0, WnR=1, permission fault level 3, FnV set.
        let iss = 1 << 10 | 1 << 6 | 0b001111;
        match decode(esr(0x24, iss), 0, 0x1234_5670) {
            Exit::DataAbort {
                access: None,
                write: true,
                kind: AbortKind::Permission,
                va: None,
                ipa,
                ..
            } => {
                assert_eq!(ipa, 0x12_3456_7000)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sysreg_trap_decodes_encoding() {
        // mrs x5, ID_AA64PFR0_EL1 = op0 3, op1 0, CRn 0, CRm 4, op2 0, read
        let iss = (3 << 20) | 5 << 5 | 4 << 1 | 1;
        assert_eq!(
            decode(esr(0x18, iss), 0, 0),
            Exit::SysReg(SysRegAccess {
                op0: 3,
                op1: 0,
                crn: 0,
                crm: 4,
                op2: 0,
                reg: 5,
                read: true
            })
        );
    }

    #[test]
    fn wfi_and_wfe() {
        let plain = |wfe| Exit::Wfx {
            wfe,
            timeout_reg: None,
        };
        assert_eq!(decode(esr(0x01, 0), 0, 0), plain(false));
        assert_eq!(decode(esr(0x01, 1), 0, 0), plain(true));
    }

    /// ISS of a trapped WFIT/WFET: RN = `rn`, RV = `rv`, TI = `ti`.
    fn wfxt_iss(rn: u64, rv: bool, ti: u64) -> u64 {
        rn << 5 | u64::from(rv) << 2 | ti
    }

    #[test]
    fn wfit_and_wfet_carry_their_timeout_register() {
        for rn in [0, 7, 30, 31] {
            assert_eq!(
                decode(esr(0x01, wfxt_iss(rn, true, 0b10)), 0, 0),
                Exit::Wfx {
                    wfe: false,
                    timeout_reg: Some(rn as u8)
                },
                "WFIT x{rn}"
            );
            assert_eq!(
                decode(esr(0x01, wfxt_iss(rn, true, 0b11)), 0, 0),
                Exit::Wfx {
                    wfe: true,
                    timeout_reg: Some(rn as u8)
                },
                "WFET x{rn}"
            );
        }
    }

    #[test]
    fn wfxt_without_a_valid_register_is_untimed() {
        assert_eq!(
            decode(esr(0x01, wfxt_iss(5, false, 0b10)), 0, 0),
            Exit::Wfx {
                wfe: false,
                timeout_reg: None
            }
        );
        assert_eq!(
            decode(esr(0x01, wfxt_iss(5, false, 0b11)), 0, 0),
            Exit::Wfx {
                wfe: true,
                timeout_reg: None
            }
        );
        // RV on a plain WFI (TI = 0) names no timeout either.
        assert_eq!(
            decode(esr(0x01, wfxt_iss(5, true, 0b00)), 0, 0),
            Exit::Wfx {
                wfe: false,
                timeout_reg: None
            }
        );
    }

    #[test]
    fn load_result_extension_rules() {
        let a = |bytes, sign_extend, reg64| MmioAccess {
            bytes,
            sign_extend,
            reg: 0,
            reg64,
            write: false,
        };
        assert_eq!(a(1, true, true).load_result(0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(a(1, true, false).load_result(0x80), 0xffff_ff80);
        assert_eq!(a(2, false, true).load_result(0x1_8000), 0x8000);
        assert_eq!(
            a(4, true, true).load_result(0x8000_0000),
            0xffff_ffff_8000_0000
        );
        assert_eq!(a(8, false, true).load_result(u64::MAX), u64::MAX);
        assert_eq!(a(4, false, false).load_result(u64::MAX), 0xffff_ffff);
    }

    proptest! {
        /// The shift-based extension equals masking to the access width, then
        /// sign-extending from its top bit, then truncating to the register width.
        #[test]
        fn load_result_matches_the_masking_model(
            raw in any::<u64>(), log2 in 0u32..4, sign_extend in any::<bool>(), reg64 in any::<bool>()
        ) {
            let bits = 8u32 << log2;
            let a = MmioAccess { bytes: (bits / 8) as u8, sign_extend, reg: 0, reg64, write: false };
            let masked = if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) };
            let top_bit = bits < 64 && masked >> (bits - 1) & 1 == 1;
            let extended = if sign_extend && top_bit { masked | !((1u64 << bits) - 1) } else { masked };
            let want = if reg64 { extended } else { extended & 0xffff_ffff };
            prop_assert_eq!(a.load_result(raw), want);
        }

        /// Every ESR value decodes without panicking, and classes we do not handle
        /// come back as `Other` with the class intact.
        #[test]
        fn any_syndrome_decodes(e in any::<u64>(), far in any::<u64>(), hpfar in any::<u64>()) {
            let ec = exception_class(e);
            match decode(e, far, hpfar) {
                Exit::Other { ec: got, .. } => prop_assert_eq!(got, ec),
                Exit::Hvc { .. } => prop_assert_eq!(ec, 0x16),
                Exit::Smc { .. } => prop_assert_eq!(ec, 0x17),
                Exit::DataAbort { access, .. } => {
                    prop_assert_eq!(ec, 0x24);
                    if let Some(a) = access { prop_assert!(matches!(a.bytes, 1 | 2 | 4 | 8)); }
                }
                Exit::InstructionAbort { .. } => prop_assert_eq!(ec, 0x20),
                Exit::SysReg(_) => prop_assert_eq!(ec, 0x18),
                Exit::Wfx { timeout_reg, .. } => {
                    prop_assert_eq!(ec, 0x01);
                    prop_assert!(timeout_reg.is_none_or(|r| r < 32));
                }
            }
        }
    }
}
