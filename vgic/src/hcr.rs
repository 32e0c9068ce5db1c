//! The maintenance-interrupt policy: which `ICH_HCR_EL2` value `el2` programs before
//! entering a vCPU ([`IchHcr::for_entry`]) and after every exit ([`IchHcr::EXIT`]).
//!
//! The GICv3 maintenance interrupt is level-sensitive: it stays asserted for as long as
//! one of the conditions enabled in ICH_HCR_EL2 holds (ICH_MISR_EL2):
//! - **U** (UIE): zero or one list register is valid;
//! - **NP** (NPIE): no list register is in the pending state;
//! - **LRENP** (LRENPIE): ICH_HCR_EL2.EOIcount is not 0 — the guest ended
//!   (deactivated) an interrupt no list register holds;
//! - **EOI**: a list register with HW = 0 and EOI = 1 went invalid (requested per LR
//!   by [`crate::IchLr::with_eoi_maintenance`], not here).
//!
//! The rules, which together guarantee that every maintenance interrupt is caused by
//! something the guest did since the entry (so it can never fire at once and livelock
//! the vCPU) and that every interrupt left out of the list registers gets in:
//! - **En** is always set (the virtual CPU interface is on).
//! - **UIE** only when interrupts are left over *and* at least two list registers are
//!   loaded: then U cannot hold at entry, and fires once the guest has deactivated all
//!   but one, so the refill brings the rest.
//! - **NPIE** only when pending interrupts are left over *and* at least one list
//!   register was written pending: NP then fires once the guest has acknowledged every
//!   one of them. When every list register holds an active-only interrupt, NP would
//!   hold at entry, so it is not requested (the flush keeps one register for a pending
//!   interrupt whenever any is left, see `deliver`).
//! - **LRENPIE** only when active interrupts are left out of the list registers: the
//!   guest's deactivation of one of them finds no list register and only counts in
//!   EOIcount, which [`crate::Vgic::sync`] turns back into a deactivation. Entry always
//!   writes EOIcount = 0, so LRENP cannot hold at entry.
//! - On every exit `el2` writes [`IchHcr::EXIT`] (En only, EOIcount 0) before it
//!   services physical interrupts, after reading EOIcount: the list registers are
//!   emptied by `sync`, so an armed U or NP would otherwise stay asserted at EL2 and
//!   the interrupt-acknowledge loop would never end.

use aarch64_cpu::registers::ICH_HCR_EL2;

use crate::lr::FlushOutcome;

/// A typed `ICH_HCR_EL2` value (the fields this vGIC uses; the layout is
/// `aarch64-cpu`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IchHcr(pub u64);

impl IchHcr {
    /// En: the virtual CPU interface is enabled.
    pub const EN: u64 = ICH_HCR_EL2::En::SET.value;
    /// UIE: underflow maintenance interrupt enable.
    pub const UIE: u64 = ICH_HCR_EL2::UIE::SET.value;
    /// LRENPIE: list register entry not present maintenance interrupt enable.
    pub const LRENPIE: u64 = ICH_HCR_EL2::LRENPIE::SET.value;
    /// NPIE: no pending maintenance interrupt enable.
    pub const NPIE: u64 = ICH_HCR_EL2::NPIE::SET.value;

    /// The value for every exit: the interface stays enabled, no maintenance
    /// interrupt is requested, EOIcount restarts from 0.
    pub const EXIT: IchHcr = IchHcr(Self::EN);

    /// The value to program before entering the vCPU whose list registers `flush`
    /// just filled as `out` describes (see the module documentation for the rules).
    pub const fn for_entry(out: &FlushOutcome) -> IchHcr {
        let left_over = out.left_over_pending + out.left_over_active;
        let mut v = Self::EN;
        if left_over > 0 && out.loaded >= 2 {
            v |= Self::UIE;
        }
        if out.left_over_pending > 0 && out.loaded_pending > 0 {
            v |= Self::NPIE;
        }
        if out.left_over_active > 0 {
            v |= Self::LRENPIE;
        }
        IchHcr(v)
    }

    /// EOIcount: deactivations by the guest that found no list register.
    pub fn eoi_count(self) -> u32 {
        ICH_HCR_EL2::EOIcount.read(self.0) as u32
    }

    /// True if any maintenance interrupt is requested (UIE, LRENPIE or NPIE).
    pub const fn wants_maintenance(self) -> bool {
        self.0 & (Self::UIE | Self::LRENPIE | Self::NPIE) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(loaded: usize, loaded_pending: usize, pend: usize, act: usize) -> FlushOutcome {
        FlushOutcome {
            loaded,
            loaded_pending,
            left_over: pend + act,
            left_over_pending: pend,
            left_over_active: act,
            eoi_maintenance: false,
        }
    }

    #[test]
    fn entry_policy_table() {
        use IchHcr as H;
        let rows = [
            // Nothing left over: never a maintenance request.
            (out(0, 0, 0, 0), H::EN),
            (out(4, 4, 0, 0), H::EN),
            (out(4, 0, 0, 0), H::EN),
            // Overflow with pending LRs: underflow and no-pending both make progress.
            (out(4, 4, 2, 0), H::EN | H::UIE | H::NPIE),
            (out(4, 1, 2, 0), H::EN | H::UIE | H::NPIE),
            // Every LR active-only with pending left over: NP would hold at entry.
            (out(4, 0, 1, 0), H::EN | H::UIE),
            // Actives left out: their deactivation only shows in EOIcount.
            (out(4, 1, 0, 2), H::EN | H::UIE | H::LRENPIE),
            (out(4, 1, 1, 1), H::EN | H::UIE | H::NPIE | H::LRENPIE),
            // A single LR: U would hold at entry.
            (out(1, 1, 3, 0), H::EN | H::NPIE),
            (out(1, 1, 0, 1), H::EN | H::LRENPIE),
        ];
        for (o, want) in rows {
            assert_eq!(IchHcr::for_entry(&o), IchHcr(want), "{o:?}");
        }
        assert!(!IchHcr::EXIT.wants_maintenance());
        assert_eq!(IchHcr::EXIT.eoi_count(), 0);
    }

    #[test]
    fn eoi_count_field() {
        // EOIcount is bits [31:27] (GICv3 specification, ICH_HCR_EL2).
        assert_eq!(IchHcr(IchHcr::EN | 3 << 27).eoi_count(), 3);
        assert_eq!(
            IchHcr::EN | IchHcr::UIE | IchHcr::LRENPIE | IchHcr::NPIE,
            0b1111
        );
        assert_eq!(IchHcr(u64::MAX).eoi_count(), 31);
    }
}
