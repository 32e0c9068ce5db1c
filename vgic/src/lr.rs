//! The list-register interface: the [`ListRegisters`] trait through which the vGIC
//! reads and writes `ICH_LR<n>_EL2` values, the typed [`IchLr`] bitfield, and the
//! [`FlushOutcome`] of a flush.
//! The policy that fills and drains the registers lives in `deliver`.

use tock_registers::register_bitfields;

/// The vCPU's list registers (`ICH_LR<n>_EL2`). In `el2` this is the live hardware (or
/// the vCPU's saved copy while it is switched out); in tests it is a plain array.
/// The vGIC owns every list register: it may overwrite any of them.
pub trait ListRegisters {
    /// Number of list registers (ICH_VTR_EL2.ListRegs + 1).
    fn count(&self) -> usize;
    /// Reads `ICH_LR<i>_EL2`.
    fn read(&self, i: usize) -> u64;
    /// Writes `ICH_LR<i>_EL2`.
    fn write(&mut self, i: usize, v: u64);
}

/// `ICH_LR<n>_EL2`.State \[63:62\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrState {
    Invalid,
    Pending,
    Active,
    PendingActive,
}

impl LrState {
    /// Builds the state from its pending and active parts.
    pub const fn from_parts(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => LrState::Invalid,
            (true, false) => LrState::Pending,
            (false, true) => LrState::Active,
            (true, true) => LrState::PendingActive,
        }
    }
    /// True in Pending and PendingActive.
    pub const fn pending(self) -> bool {
        matches!(self, LrState::Pending | LrState::PendingActive)
    }
    /// True in Active and PendingActive.
    pub const fn active(self) -> bool {
        matches!(self, LrState::Active | LrState::PendingActive)
    }
    fn bits(self) -> u64 {
        let v = match self {
            LrState::Invalid => ICH_LR::State::Value::Invalid,
            LrState::Pending => ICH_LR::State::Value::Pending,
            LrState::Active => ICH_LR::State::Value::Active,
            LrState::PendingActive => ICH_LR::State::Value::PendingActive,
        };
        v as u64
    }
    fn from_bits(b: u64) -> Self {
        match ICH_LR::State.read_as_enum(ICH_LR::State.val(b).value) {
            Some(ICH_LR::State::Value::Invalid) => LrState::Invalid,
            Some(ICH_LR::State::Value::Pending) => LrState::Pending,
            Some(ICH_LR::State::Value::Active) => LrState::Active,
            // The field is two bits wide: every value is one of the four.
            Some(ICH_LR::State::Value::PendingActive) | None => LrState::PendingActive,
        }
    }
}

register_bitfields![u64,
    /// `ICH_LR<n>_EL2`, the GICv3 list registers (Arm GIC architecture
    /// specification, ICH_LR<n>_EL2).
    pub ICH_LR [
        /// The virtual INTID.
        vINTID OFFSET(0) NUMBITS(32) [],
        /// The physical INTID, when HW = 1.
        pINTID OFFSET(32) NUMBITS(13) [],
        /// When HW = 0 (sharing bit 41 with pINTID): raise an EOI maintenance
        /// interrupt once the guest deactivates the interrupt.
        EOI OFFSET(41) NUMBITS(1) [],
        Priority OFFSET(48) NUMBITS(8) [],
        /// 1: Group 1.
        Group OFFSET(60) NUMBITS(1) [],
        /// The virtual interrupt is linked to a physical one.
        HW OFFSET(61) NUMBITS(1) [],
        State OFFSET(62) NUMBITS(2) [
            Invalid = 0,
            Pending = 1,
            Active = 2,
            PendingActive = 3
        ]
    ]
];

/// A typed `ICH_LR<n>_EL2` value; the layout is [`ICH_LR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IchLr(pub u64);

impl IchLr {
    /// An LR for virtual interrupt `vintid` with the given priority, group and state.
    pub fn new(vintid: u32, priority: u8, group1: bool, state: LrState) -> Self {
        Self(
            (ICH_LR::vINTID.val(u64::from(vintid))
                + ICH_LR::Priority.val(u64::from(priority))
                + ICH_LR::Group.val(u64::from(group1))
                + ICH_LR::State.val(state.bits()))
            .value,
        )
    }
    /// Links the virtual interrupt to physical interrupt `pintid` (HW = 1): the
    /// guest's deactivation deactivates the physical interrupt too.
    pub fn with_hw(self, pintid: u32) -> Self {
        Self((ICH_LR::HW::SET + ICH_LR::pINTID.val(u64::from(pintid))).modify(self.0))
    }
    /// Requests an EOI maintenance interrupt on deactivation (only when HW = 0).
    pub fn with_eoi_maintenance(self) -> Self {
        if self.hw() {
            self
        } else {
            Self(ICH_LR::EOI::SET.modify(self.0))
        }
    }
    pub fn vintid(self) -> u32 {
        ICH_LR::vINTID.read(self.0) as u32
    }
    /// pINTID, meaningful only when [`Self::hw`] is set.
    pub fn pintid(self) -> u32 {
        ICH_LR::pINTID.read(self.0) as u32
    }
    pub fn eoi_maintenance(self) -> bool {
        !self.hw() && ICH_LR::EOI.is_set(self.0)
    }
    pub fn priority(self) -> u8 {
        ICH_LR::Priority.read(self.0) as u8
    }
    pub fn group1(self) -> bool {
        ICH_LR::Group.is_set(self.0)
    }
    pub fn hw(self) -> bool {
        ICH_LR::HW.is_set(self.0)
    }
    pub fn state(self) -> LrState {
        LrState::from_bits(ICH_LR::State.read(self.0))
    }
}

/// What a flush did; [`crate::IchHcr::for_entry`] turns it into the ICH_HCR_EL2 value
/// (maintenance interrupts) `el2` programs before entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushOutcome {
    /// List registers now holding an interrupt.
    pub loaded: usize,
    /// List registers written with their pending bit set.
    pub loaded_pending: usize,
    /// Interrupts that did not fit (`left_over_pending + left_over_active`).
    pub left_over: usize,
    /// Deliverable pending interrupts that did not fit.
    pub left_over_pending: usize,
    /// Active interrupts left out of the list registers to make room for a pending
    /// one; the guest's deactivation of one of them shows only in EOIcount.
    pub left_over_active: usize,
    /// Some loaded interrupt asks for an EOI maintenance interrupt (level-sensitive,
    /// not hardware-linked).
    pub eoi_maintenance: bool,
}

impl FlushOutcome {
    /// The ICH_HCR_EL2 value to program before entry.
    pub const fn hcr(&self) -> crate::IchHcr {
        crate::IchHcr::for_entry(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ich_lr_fields_round_trip() {
        let lr = IchLr::new(27, 0xA0, true, LrState::Pending).with_hw(27);
        assert_eq!(lr.vintid(), 27);
        assert_eq!(lr.pintid(), 27);
        assert_eq!(lr.priority(), 0xA0);
        assert!(lr.group1() && lr.hw());
        assert_eq!(lr.state(), LrState::Pending);
        assert_eq!(
            lr.0,
            1 << 62 | 1 << 61 | 1 << 60 | 0xA0 << 48 | 27 << 32 | 27
        );
        // EOI shares bit 41 with pINTID, so it is refused on HW interrupts.
        assert_eq!(lr.with_eoi_maintenance(), lr);
        let sw = IchLr::new(40, 0, false, LrState::PendingActive).with_eoi_maintenance();
        assert!(sw.eoi_maintenance() && !sw.hw() && !sw.group1());
        assert_eq!(sw.state(), LrState::PendingActive);
        assert_eq!(sw.0, 3 << 62 | 1 << 41 | 40);
    }

    #[test]
    fn lr_state_parts() {
        for (p, a) in [(false, false), (true, false), (false, true), (true, true)] {
            let s = LrState::from_parts(p, a);
            assert_eq!((s.pending(), s.active()), (p, a));
            assert_eq!(LrState::from_bits(s.bits()), s);
        }
    }
}
