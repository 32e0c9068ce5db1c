//! The list-register interface: the [`ListRegisters`] trait through which the vGIC
//! reads and writes `ICH_LR<n>_EL2` values, the typed [`IchLr`] bitfield, and the
//! [`FlushOutcome`] of a flush.
//! The policy that fills and drains the registers lives in `deliver`.

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
    const fn bits(self) -> u64 {
        match self {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        }
    }
    const fn from_bits(b: u64) -> Self {
        match b & 3 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
}

/// A typed `ICH_LR<n>_EL2` value.
///
/// Fields: vINTID \[31:0\], pINTID \[44:32\] (when HW = 1), EOI \[41\] (when HW = 0: raise
/// an EOI maintenance interrupt once the guest deactivates it), Priority \[55:48\],
/// Group \[60\], HW \[61\], State \[63:62\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IchLr(pub u64);

impl IchLr {
    const VINTID_MASK: u64 = 0xFFFF_FFFF;
    const PINTID_SHIFT: u32 = 32;
    const PINTID_MASK: u64 = 0x1FFF;
    const EOI: u64 = 1 << 41;
    const PRIORITY_SHIFT: u32 = 48;
    const GROUP: u64 = 1 << 60;
    const HW: u64 = 1 << 61;
    const STATE_SHIFT: u32 = 62;

    /// An LR for virtual interrupt `vintid` with the given priority, group and state.
    pub const fn new(vintid: u32, priority: u8, group1: bool, state: LrState) -> Self {
        let mut v = vintid as u64 & Self::VINTID_MASK;
        v |= (priority as u64) << Self::PRIORITY_SHIFT;
        if group1 {
            v |= Self::GROUP;
        }
        v |= state.bits() << Self::STATE_SHIFT;
        Self(v)
    }
    /// Links the virtual interrupt to physical interrupt `pintid` (HW = 1): the
    /// guest's deactivation deactivates the physical interrupt too.
    pub const fn with_hw(self, pintid: u32) -> Self {
        let v = self.0 & !(Self::PINTID_MASK << Self::PINTID_SHIFT);
        Self(v | Self::HW | ((pintid as u64 & Self::PINTID_MASK) << Self::PINTID_SHIFT))
    }
    /// Requests an EOI maintenance interrupt on deactivation (only when HW = 0).
    pub const fn with_eoi_maintenance(self) -> Self {
        if self.hw() {
            self
        } else {
            Self(self.0 | Self::EOI)
        }
    }
    pub const fn vintid(self) -> u32 {
        (self.0 & Self::VINTID_MASK) as u32
    }
    /// pINTID, meaningful only when [`Self::hw`] is set.
    pub const fn pintid(self) -> u32 {
        ((self.0 >> Self::PINTID_SHIFT) & Self::PINTID_MASK) as u32
    }
    pub const fn eoi_maintenance(self) -> bool {
        !self.hw() && self.0 & Self::EOI != 0
    }
    pub const fn priority(self) -> u8 {
        (self.0 >> Self::PRIORITY_SHIFT) as u8
    }
    pub const fn group1(self) -> bool {
        self.0 & Self::GROUP != 0
    }
    pub const fn hw(self) -> bool {
        self.0 & Self::HW != 0
    }
    pub const fn state(self) -> LrState {
        LrState::from_bits(self.0 >> Self::STATE_SHIFT)
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
