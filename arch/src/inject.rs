//! Exception entry into a guest's EL1, computed rather than taken: what ELR_EL1,
//! SPSR_EL1, ESR_EL1, FAR_EL1 and the new PC/PSTATE must be when the hypervisor
//! injects a synchronous exception (Arm ARM D1.3 "Exception entry").

/// PSTATE.M values of AArch64 modes (SPSR_ELx.M[3:0]).
pub mod mode {
    pub const EL0T: u64 = 0b0000;
    pub const EL1T: u64 = 0b0100;
    pub const EL1H: u64 = 0b0101;
    pub const MASK: u64 = 0b1111;
    /// SPSR_ELx.M[4] (nRW): the exception was taken from AArch32. With HCR_EL2.RW set
    /// (EL1 is AArch64) that can only be AArch32 EL0.
    pub const AARCH32: u64 = 0b1_0000;
}

/// PSTATE.{D,A,I,F} bits in SPSR layout.
pub const DAIF_MASK: u64 = 0b1111 << 6;
/// PSTATE of a vCPU that starts at reset or by PSCI CPU_ON: EL1h, D, A, I and F
/// masked (PSCI 1.1, 6.4.3: the caller's entry point runs with interrupts masked).
pub const START_PSTATE: u64 = mode::EL1H | DAIF_MASK;
/// PSTATE.PAN in SPSR layout.
pub const PSTATE_PAN: u64 = 1 << 22;
/// SCTLR_EL1.SPAN: when 0, taking an exception to EL1 sets PSTATE.PAN.
pub const SCTLR_SPAN: u64 = 1 << 23;

/// Vector-table offsets of the synchronous entries.
pub mod vector {
    pub const CURRENT_SP0: u64 = 0x000;
    pub const CURRENT_SPX: u64 = 0x200;
    pub const LOWER_AARCH64: u64 = 0x400;
    pub const LOWER_AARCH32: u64 = 0x600;
}

/// Exception classes for ESR_EL1 of injected exceptions.
pub mod ec {
    pub const UNKNOWN: u64 = 0x00;
    pub const IABT_LOWER: u64 = 0x20;
    pub const IABT_CURRENT: u64 = 0x21;
    pub const DABT_LOWER: u64 = 0x24;
    pub const DABT_CURRENT: u64 = 0x25;
}
const ESR_EC_SHIFT: u64 = 26;
/// ESR_ELx.IL: the trapped instruction was 32 bits long (0: a 16-bit T32 instruction).
const ESR_IL: u64 = 1 << 25;
/// Length of an A64, A32 or 32-bit T32 instruction.
const INSN_32: u64 = 4;
/// Length of a 16-bit T32 instruction.
const INSN_16: u64 = 2;

/// The length of the instruction whose trap ESR_EL2 `esr` describes (from ESR.IL:
/// 2 for a 16-bit T32 instruction from AArch32 EL0, 4 otherwise).
#[inline]
pub fn trapped_instruction_len(esr: u64) -> u64 {
    if esr & ESR_IL != 0 {
        INSN_32
    } else {
        INSN_16
    }
}

/// The guest PC after the hypervisor has emulated (or completed) the trapped
/// instruction at `pc` whose syndrome is `esr`: every instruction skip goes through
/// here so a 16-bit T32 instruction advances by 2, not 4. An AArch32 PC stays
/// within 32 bits.
#[inline]
pub fn skip_instruction(pc: u64, pstate: u64, esr: u64) -> u64 {
    let next = pc.wrapping_add(trapped_instruction_len(esr));
    if pstate & mode::AARCH32 != 0 {
        next & u64::from(u32::MAX)
    } else {
        next
    }
}
const ISS_WNR: u64 = 1 << 6;
/// Fault status: synchronous external abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u64 = 0b01_0000;
/// Fault status: synchronous external abort on a translation table walk, level 0-3
/// (low two bits the level), and level -1 (FEAT_LPA2).
const FSC_SYNC_EXTERNAL_WALK: u8 = 0b01_0100;
const FSC_SYNC_EXTERNAL_WALK_LM1: u8 = 0b01_0011;
/// Fault status: synchronous parity or ECC error, not on / on a walk (level 0-3).
const FSC_SYNC_PARITY: u8 = 0b01_1000;
const FSC_SYNC_PARITY_WALK: u8 = 0b01_1100;
/// Masks the level out of a walk fault status.
const FSC_LEVEL_MASK: u8 = 0b11;

/// Whether a data or instruction fault status code (DFSC/IFSC) reports a
/// synchronous external abort (or parity/ECC error), on a walk or not: what
/// HCR_EL2.TEA routes to EL2 from a guest.
#[inline]
pub fn is_external_abort(fsc: u8) -> bool {
    fsc == FSC_SYNC_EXTERNAL as u8
        || fsc == FSC_SYNC_EXTERNAL_WALK_LM1
        || fsc == FSC_SYNC_PARITY
        || fsc & !FSC_LEVEL_MASK == FSC_SYNC_EXTERNAL_WALK
        || fsc & !FSC_LEVEL_MASK == FSC_SYNC_PARITY_WALK
}

/// The kind of synchronous exception to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Undefined instruction (ESR EC 0).
    Undefined,
    /// Synchronous external abort on a data access at virtual address `far`.
    DataAbort { far: u64, write: bool },
    /// Synchronous external abort on an instruction fetch at `far`.
    InstructionAbort { far: u64 },
}

/// The guest state an injection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPoint {
    /// Address of the faulting instruction (the exception's preferred return address).
    pub pc: u64,
    /// The guest's PSTATE at the fault (SPSR_EL2 as saved on the trap).
    pub pstate: u64,
    pub vbar_el1: u64,
    pub sctlr_el1: u64,
}

/// The guest state after the injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub pc: u64,
    pub pstate: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    /// New FAR_EL1, for aborts.
    pub far_el1: Option<u64>,
}

/// Computes the architectural entry of `what` into EL1 from the guest at `at`.
pub fn inject(what: Injection, at: GuestPoint) -> Entry {
    let aarch32 = at.pstate & mode::AARCH32 != 0;
    let from_el0 = aarch32 || at.pstate & mode::MASK == mode::EL0T;
    let offset = if aarch32 {
        vector::LOWER_AARCH32
    } else {
        match at.pstate & mode::MASK {
            mode::EL1T => vector::CURRENT_SP0,
            mode::EL1H => vector::CURRENT_SPX,
            _ => vector::LOWER_AARCH64,
        }
    };
    let (class, iss, far) = match what {
        Injection::Undefined => (ec::UNKNOWN, 0, None),
        Injection::DataAbort { far, write } => (
            if from_el0 {
                ec::DABT_LOWER
            } else {
                ec::DABT_CURRENT
            },
            FSC_SYNC_EXTERNAL | if write { ISS_WNR } else { 0 },
            Some(far),
        ),
        Injection::InstructionAbort { far } => (
            if from_el0 {
                ec::IABT_LOWER
            } else {
                ec::IABT_CURRENT
            },
            FSC_SYNC_EXTERNAL,
            Some(far),
        ),
    };
    let pan = if at.sctlr_el1 & SCTLR_SPAN == 0 {
        PSTATE_PAN
    } else {
        at.pstate & PSTATE_PAN
    };
    Entry {
        pc: at.vbar_el1 + offset,
        pstate: mode::EL1H | DAIF_MASK | pan,
        elr_el1: at.pc,
        spsr_el1: at.pstate,
        esr_el1: class << ESR_EC_SHIFT | ESR_IL | iss,
        far_el1: far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: GuestPoint = GuestPoint {
        pc: 0x4008_1234,
        pstate: mode::EL1H,
        vbar_el1: 0x4010_0000,
        sctlr_el1: SCTLR_SPAN,
    };

    #[test]
    fn data_abort_from_el1h_goes_to_current_spx_vector() {
        let e = inject(
            Injection::DataAbort {
                far: 0x1000_0000,
                write: true,
            },
            AT,
        );
        assert_eq!(e.pc, 0x4010_0200);
        assert_eq!(e.elr_el1, 0x4008_1234);
        assert_eq!(e.spsr_el1, mode::EL1H);
        assert_eq!(e.esr_el1, 0x25 << 26 | 1 << 25 | 1 << 6 | 0x10);
        assert_eq!(e.far_el1, Some(0x1000_0000));
        assert_eq!(e.pstate, 0x3c5);
    }

    #[test]
    fn from_el0_uses_lower_vector_and_lower_classes() {
        let at = GuestPoint {
            pstate: mode::EL0T,
            ..AT
        };
        let e = inject(Injection::InstructionAbort { far: 0x8000 }, at);
        assert_eq!(e.pc, 0x4010_0400);
        assert_eq!(e.esr_el1 >> 26, 0x20);
        let u = inject(
            Injection::Undefined,
            GuestPoint {
                pstate: mode::EL1T,
                ..AT
            },
        );
        assert_eq!(u.pc, 0x4010_0000);
        assert_eq!(u.esr_el1, 1 << 25);
        assert_eq!(u.far_el1, None);
    }

    /// SPSR of AArch32 User mode with the T bit (T32 state).
    const AARCH32_USR_T32: u64 = 0b1_0000 | 1 << 5;

    #[test]
    fn from_aarch32_el0_uses_the_lower_aarch32_vector() {
        let at = GuestPoint {
            pc: 0x8002,
            pstate: AARCH32_USR_T32,
            ..AT
        };
        for what in [
            Injection::Undefined,
            Injection::DataAbort {
                far: 0x9000,
                write: false,
            },
            Injection::InstructionAbort { far: 0x8002 },
        ] {
            let e = inject(what, at);
            assert_eq!(e.pc, 0x4010_0600, "{what:?}");
            assert_eq!(e.elr_el1, 0x8002);
            assert_eq!(e.spsr_el1, AARCH32_USR_T32);
            assert_eq!(e.pstate & mode::MASK, mode::EL1H);
        }
        let d = inject(
            Injection::DataAbort {
                far: 0x9000,
                write: false,
            },
            at,
        );
        assert_eq!(d.esr_el1 >> 26, ec::DABT_LOWER, "an abort from EL0");
    }

    #[test]
    fn skips_follow_esr_il() {
        let il = 1 << 25;
        // A 16-bit T32 instruction (IL = 0) from AArch32 EL0.
        assert_eq!(
            skip_instruction(0x8002, AARCH32_USR_T32, 0x24 << 26),
            0x8004
        );
        assert_eq!(
            skip_instruction(0x8002, AARCH32_USR_T32, 0x24 << 26 | il),
            0x8006
        );
        assert_eq!(skip_instruction(0xffff_fffe, AARCH32_USR_T32, 0), 0);
        // A64: always 4 (IL is always 1 for A64 traps).
        assert_eq!(
            skip_instruction(0x4008_0000, mode::EL1H, 0x17 << 26 | il),
            0x4008_0004
        );
        assert_eq!(trapped_instruction_len(0x18 << 26 | il), 4);
        assert_eq!(trapped_instruction_len(0x18 << 26), 2);
    }

    #[test]
    fn external_abort_codes() {
        for fsc in [0x10, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x1c, 0x1f] {
            assert!(is_external_abort(fsc), "{fsc:#x}");
        }
        // Translation, access flag, permission, alignment, TLB conflict.
        for fsc in [0x04, 0x07, 0x0b, 0x0f, 0x21, 0x30, 0x11, 0x12] {
            assert!(!is_external_abort(fsc), "{fsc:#x}");
        }
    }

    #[test]
    fn pan_set_on_entry_unless_span() {
        let e = inject(Injection::Undefined, GuestPoint { sctlr_el1: 0, ..AT });
        assert_eq!(e.pstate & PSTATE_PAN, PSTATE_PAN);
    }
}
