//! Exception entry into a guest's EL1, computed rather than taken: what ELR_EL1,
//! SPSR_EL1, ESR_EL1, FAR_EL1 and the new PC/PSTATE must be when the hypervisor
//! injects a synchronous exception (Arm ARM D1.3 "Exception entry").

/// PSTATE.M values of AArch64 modes (SPSR_ELx.M[3:0]).
pub mod mode {
    pub const EL0T: u64 = 0b0000;
    pub const EL1T: u64 = 0b0100;
    pub const EL1H: u64 = 0b0101;
    pub const MASK: u64 = 0b1111;
}

/// PSTATE.{D,A,I,F} bits in SPSR layout.
pub const DAIF_MASK: u64 = 0b1111 << 6;
/// PSTATE.PAN in SPSR layout.
pub const PSTATE_PAN: u64 = 1 << 22;
/// SCTLR_EL1.SPAN: when 0, taking an exception to EL1 sets PSTATE.PAN.
pub const SCTLR_SPAN: u64 = 1 << 23;

/// Vector-table offsets of the synchronous entries.
pub mod vector {
    pub const CURRENT_SP0: u64 = 0x000;
    pub const CURRENT_SPX: u64 = 0x200;
    pub const LOWER_AARCH64: u64 = 0x400;
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
const ESR_IL: u64 = 1 << 25;
const ISS_WNR: u64 = 1 << 6;
/// Fault status: synchronous external abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u64 = 0b01_0000;

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
    let from_el0 = at.pstate & mode::MASK == mode::EL0T;
    let offset = match at.pstate & mode::MASK {
        mode::EL1T => vector::CURRENT_SP0,
        mode::EL1H => vector::CURRENT_SPX,
        _ => vector::LOWER_AARCH64,
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

    #[test]
    fn pan_set_on_entry_unless_span() {
        let e = inject(Injection::Undefined, GuestPoint { sctlr_el1: 0, ..AT });
        assert_eq!(e.pstate & PSTATE_PAN, PSTATE_PAN);
    }
}
