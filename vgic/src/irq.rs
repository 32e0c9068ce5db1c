//! The state of one interrupt (SGI, PPI or SPI) and its edge/level input semantics.
//!
//! Pending is split into a `latch` (a rising edge, a GICx_ISPENDR write, an SGI) and
//! the `line` (the input level). A level-sensitive interrupt is pending while the
//! latch is set or the line is high; an edge-triggered one only while latched.

use crate::regs::Irouter;

/// Where an interrupt sits while a vCPU's list register holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LrHold {
    /// vCPU whose list registers hold it.
    pub vcpu: usize,
    /// The list register index.
    pub slot: usize,
    /// The LR was written with its pending bit set.
    pub wrote_pending: bool,
    /// The latch was moved into the LR (and must come back if the guest did not take it).
    pub latch_taken: bool,
}

/// One interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Irq {
    /// GICx_ISENABLER.
    pub enabled: bool,
    /// GICx_IGROUPR: Group 1 when set.
    pub group1: bool,
    /// GICx_ICFGR Int_config: edge-triggered when set.
    pub edge: bool,
    /// GICx_IPRIORITYR (masked to the implemented bits).
    pub priority: u8,
    /// Latched pending state.
    pub latch: bool,
    /// Input line level.
    pub line: bool,
    /// Active state.
    pub active: bool,
    /// Physical INTID when hardware-linked.
    pub hw: Option<u32>,
    /// GICD_IROUTER (SPIs only).
    pub route: Irouter,
    /// Set while a list register holds the interrupt.
    pub lr: Option<LrHold>,
    /// The vCPU the interrupt is active on: set when a list register of that vCPU
    /// comes back active (the guest acknowledged it there), cleared on deactivation.
    /// An active interrupt stays with this vCPU whatever its route says until it is
    /// deactivated; a route change only takes effect for its next activation.
    /// `None` while inactive, or when made active by a GICx_ISACTIVER write before any
    /// vCPU held it (then its route decides where it is loaded).
    pub owner: Option<usize>,
}

impl Irq {
    /// A private interrupt at reset: SGIs are edge-triggered, PPIs level.
    pub fn private(intid: u32) -> Self {
        Self {
            edge: intid < crate::regs::intid::SGI_COUNT,
            ..Self::default()
        }
    }

    /// The model's own pending state (latch or level line).
    pub fn pending(&self) -> bool {
        self.latch || (!self.edge && self.line)
    }

    /// The pending state a guest reads from GICx_ISPENDR: including a pending bit
    /// currently parked in a list register.
    pub fn visible_pending(&self) -> bool {
        self.pending() || self.lr.is_some_and(|h| h.latch_taken)
    }

    /// Drives the input line. Returns true if the interrupt became pending.
    pub fn set_line(&mut self, level: bool) -> bool {
        let was = self.pending();
        if self.edge && level && !self.line {
            self.latch = true;
        }
        self.line = level;
        !was && self.pending()
    }

    /// GICx_ISPENDR bit write / SGI generation. Returns true if it became pending.
    pub fn set_pending(&mut self) -> bool {
        let was = self.pending();
        self.latch = true;
        !was
    }

    /// GICx_ICPENDR bit write: clears the latch; a high level line stays pending.
    pub fn clear_pending(&mut self) {
        self.latch = false;
        if let Some(h) = self.lr.as_mut() {
            h.latch_taken = false;
        }
    }

    /// Ends the active state (a deactivation by the guest or a GICx_ICACTIVER write).
    pub fn deactivate(&mut self) {
        self.active = false;
        self.owner = None;
    }

    /// True if `vcpu` may load this SPI into its list registers given `routed` (its
    /// route names `vcpu`): not held by another vCPU's list registers, and — while
    /// active on some vCPU — only on that one, whatever the route says.
    pub fn loadable_on(&self, vcpu: usize, routed: bool) -> bool {
        if self.lr.is_some_and(|h| h.vcpu != vcpu) {
            return false;
        }
        match self.owner {
            Some(o) if self.active => o == vcpu,
            _ => routed,
        }
    }

    /// Could be delivered now: pending, enabled, not active, and its group enabled.
    pub fn deliverable(&self, grp0: bool, grp1: bool) -> bool {
        let group_on = if self.group1 { grp1 } else { grp0 };
        self.pending() && self.enabled && group_on && !self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irq(edge: bool) -> Irq {
        Irq {
            edge,
            ..Irq::default()
        }
    }

    #[test]
    fn edge_latches_rising_edges_only() {
        let mut i = irq(true);
        assert!(i.set_line(true));
        i.latch = false; // acknowledged
        assert!(!i.set_line(true), "a held line is no new edge");
        assert!(!i.pending());
        i.set_line(false);
        assert!(i.set_line(true));
    }

    #[test]
    fn level_follows_line_and_latch() {
        let mut i = irq(false);
        assert!(i.set_line(true));
        i.set_line(false);
        assert!(!i.pending());
        i.set_pending();
        i.set_line(true);
        i.set_line(false);
        assert!(i.pending(), "an ISPENDR latch outlives the line");
        i.clear_pending();
        assert!(!i.pending());
        i.set_line(true);
        i.clear_pending();
        assert!(i.pending(), "ICPENDR cannot clear a high level line");
    }

    #[test]
    fn deliverable_needs_enable_group_and_inactive() {
        let mut i = irq(true);
        i.set_pending();
        assert!(!i.deliverable(true, true));
        i.enabled = true;
        assert!(i.deliverable(true, false));
        assert!(!i.deliverable(false, true));
        i.group1 = true;
        assert!(i.deliverable(false, true));
        i.active = true;
        assert!(!i.deliverable(true, true));
    }
}
