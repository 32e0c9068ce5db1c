//! The list-register policy: [`Vgic::flush`] before entering a vCPU (load its active
//! interrupts and its highest-priority deliverable ones into the list registers),
//! [`Vgic::sync`] after an exit (take every list register back into the model), and
//! [`Vgic::has_pending`] for WFI.
//!
//! Policy details:
//! - The model is authoritative whenever the vCPU is not running: `sync` empties every
//!   list register it filled, `flush` starts from empty. `el2` calls `sync` on every
//!   exit before handling it and `flush` right before every entry.
//! - Active interrupts go back into a list register (the guest still has to
//!   deactivate them), ahead of pending ones, hardware-linked ones first, then by
//!   priority and INTID — but when they would fill every register while a pending
//!   interrupt waits, one register is kept for the best pending one, as a real CPU
//!   interface would still let the guest acknowledge it. The active interrupts left
//!   out (lowest priority first to go, never a hardware-linked one) are remembered:
//!   the guest's deactivation of one finds no list register and only counts in
//!   ICH_HCR_EL2.EOIcount, which [`Vgic::sync`] turns into deactivations of those
//!   interrupts, highest priority first (the order a guest ending its interrupts by
//!   priority uses).
//! - Pending ones are ordered by priority, then INTID; what does not fit is counted
//!   in [`FlushOutcome`], from which [`crate::IchHcr::for_entry`] picks the maintenance
//!   interrupts that bring it in on a later exit.
//! - An active SPI stays with the vCPU it is active on until deactivated, whatever its
//!   route says; a route change takes effect for its next activation.
//! - A level-sensitive interrupt is loaded once; while it is active its pending state
//!   is not added to the LR. Its LR asks for an EOI maintenance interrupt, and on
//!   `sync` after deactivation it is pending again if its line is still high.
//! - An edge-triggered interrupt that is active and latched again is loaded as
//!   pending-and-active.
//! - A hardware-linked interrupt (HW = 1) is never loaded pending-and-active; its
//!   line counts as consumed once the guest acknowledges it.

use alloc::vec::Vec;

use crate::irq::{Irq, LrHold};
use crate::lr::{FlushOutcome, IchLr, ListRegisters, LrState};
use crate::regs::intid;
use crate::vgic::{InputError, Route, Vgic};

impl Vgic {
    fn check_vcpu(&self, vcpu: usize) -> Result<(), InputError> {
        if vcpu < self.vcpus.len() {
            Ok(())
        } else {
            Err(InputError::NoSuchVcpu(vcpu))
        }
    }

    /// True if SPI `irq` may be loaded into `vcpu`'s list registers.
    fn spi_routed_to(&self, irq: &Irq, vcpu: usize) -> bool {
        match self.route_of(irq.route) {
            Route::One(t) => t == vcpu,
            Route::Any => true,
            Route::Nowhere => false,
        }
    }

    /// Every INTID `vcpu` could see that is active, pending or in a list register,
    /// with its state: its private interrupts, the SPIs active on it, and the
    /// inactive SPIs routed to it that no other vCPU's list registers hold. (Both
    /// users look only at those three states, and an idle SPI is skipped before its
    /// route is worked out: that lookup for each of the 96 SPIs, on every flush and
    /// WFI check, was about a third of el2's instructions under a Linux guest.)
    fn visible_to(&self, vcpu: usize) -> impl Iterator<Item = (u32, &Irq)> + '_ {
        let private = self.vcpus[vcpu]
            .private
            .iter()
            .enumerate()
            .map(|(i, irq)| (i as u32, irq));
        let shared = move |irq: &Irq| {
            (irq.active || irq.pending() || irq.lr.is_some())
                && irq.loadable_on(vcpu, self.spi_routed_to(irq, vcpu))
        };
        let spis = self
            .spis
            .iter()
            .enumerate()
            .map(|(i, irq)| (i as u32 + intid::SPI_FIRST, irq))
            .filter(move |(_, irq)| shared(irq));
        let lpis = self
            .lpis
            .iter()
            .flat_map(|l| l.live.iter().filter_map(|&id| Some((id, l.get(id)?))))
            .filter(move |(_, irq)| shared(irq));
        private.chain(spis).chain(lpis)
    }

    /// Takes `vcpu`'s list registers back after an exit: an LR that went invalid was
    /// deactivated by the guest (active cleared; a level interrupt whose line is
    /// still high is pending again), a pending bit the guest consumed was
    /// acknowledged, anything else is copied back. Every LR the vGIC filled is freed.
    ///
    /// `eoi_count` is ICH_HCR_EL2.EOIcount read at the exit (0 when nothing is known):
    /// that many of the active interrupts the last flush left out of the list
    /// registers were deactivated by the guest.
    pub fn sync(
        &mut self,
        vcpu: usize,
        lrs: &mut dyn ListRegisters,
        eoi_count: u32,
    ) -> Result<(), InputError> {
        self.check_vcpu(vcpu)?;
        let left_out = core::mem::take(&mut self.vcpus[vcpu].left_out);
        self.end_left_out(vcpu, &left_out, eoi_count);
        let slots = core::mem::take(&mut self.vcpus[vcpu].slots);
        for (i, id) in slots.iter().enumerate() {
            let Some(id) = *id else { continue };
            if i >= lrs.count() {
                log::warn!("vgic: vCPU {vcpu} LR{i} vanished (count {})", lrs.count());
                if let Some(irq) = self.irq_mut(vcpu, id) {
                    // Treat it as untouched by the guest.
                    let wrote = irq.lr.is_some_and(|h| h.wrote_pending);
                    Self::unload(irq, LrState::from_parts(wrote, irq.active));
                }
                continue;
            }
            let lr = IchLr(lrs.read(i));
            lrs.write(i, 0);
            if lr.vintid() != id {
                log::warn!("vgic: vCPU {vcpu} LR{i} holds {} not {id}", lr.vintid());
            }
            let Some(irq) = self.irq_mut(vcpu, id) else {
                continue;
            };
            if irq.lr.is_some_and(|h| h.vcpu != vcpu || h.slot != i) {
                log::warn!("vgic: vCPU {vcpu} LR{i}: INTID {id} is held elsewhere");
                continue;
            }
            let deactivated = Self::unload(irq, lr.state());
            if deactivated && id >= intid::SPI_FIRST && irq.pending() {
                self.kick_for(vcpu, id);
            }
        }
        Ok(())
    }

    /// Deactivates the first `count` of `left_out` (active interrupts of `vcpu` that
    /// no list register held) that are still active there: the guest's deactivations
    /// counted in EOIcount.
    fn end_left_out(&mut self, vcpu: usize, left_out: &[u32], count: u32) {
        let mut count = count as usize;
        for &id in left_out {
            if count == 0 {
                break;
            }
            let Some(irq) = self.irq_mut(vcpu, id) else {
                continue;
            };
            if !irq.active || irq.lr.is_some() || irq.owner.is_some_and(|o| o != vcpu) {
                continue; // Changed since the flush (e.g. a GICx_ICACTIVER write).
            }
            irq.deactivate();
            count -= 1;
            if irq.pending() {
                self.kick_for(vcpu, id);
            }
        }
        if count > 0 {
            log::debug!("vgic: vCPU {vcpu} ended {count} interrupt(s) that were not active");
        }
    }

    /// Folds LR state `st` back into `irq`. Returns true if the guest deactivated it.
    fn unload(irq: &mut Irq, st: LrState) -> bool {
        let Some(hold) = irq.lr.take() else {
            return false;
        };
        let acked = hold.wrote_pending && !st.pending();
        if hold.wrote_pending && !acked && hold.latch_taken {
            irq.latch = true;
        }
        if acked && irq.hw.is_some() {
            irq.line = false;
        }
        let was_active = irq.active || acked;
        irq.active = st.active();
        irq.owner = irq.active.then_some(hold.vcpu);
        was_active && !irq.active
    }

    /// Loads `vcpu`'s list registers before entry (after taking back whatever they
    /// held, as [`Self::sync`] does). Unused list registers are written invalid.
    /// Program [`FlushOutcome::hcr`] into ICH_HCR_EL2 before entering.
    pub fn flush(
        &mut self,
        vcpu: usize,
        lrs: &mut dyn ListRegisters,
    ) -> Result<FlushOutcome, InputError> {
        self.sync(vcpu, lrs, 0)?;
        if let Some(l) = self.lpis.as_mut() {
            l.prune();
        }
        let (g0, g1) = self.group_enables();
        // Sort key: active first (hardware-linked ones first among them), then
        // priority, then INTID.
        let mut wanted: Vec<(bool, bool, u8, u32)> = self
            .visible_to(vcpu)
            .filter(|(_, irq)| irq.active || irq.deliverable(g0, g1))
            .map(|(id, irq)| {
                (
                    !irq.active,
                    !irq.active || irq.hw.is_none(),
                    irq.priority,
                    id,
                )
            })
            .collect();
        wanted.sort_unstable();
        let n = lrs.count();
        let actives = wanted.iter().take_while(|w| !w.0).count();
        let pendings = wanted.len() - actives;
        let hw_actives = wanted[..actives].iter().filter(|w| !w.1).count();
        let keep_active = if pendings > 0 && actives >= n {
            n.saturating_sub(1).max(hw_actives.min(n))
        } else {
            actives.min(n)
        };
        let take_pending = pendings.min(n - keep_active);
        let chosen = wanted[..keep_active]
            .iter()
            .chain(&wanted[actives..actives + take_pending]);
        let mut out = FlushOutcome {
            loaded: keep_active + take_pending,
            left_over_pending: pendings - take_pending,
            left_over_active: actives - keep_active,
            ..FlushOutcome::default()
        };
        out.left_over = out.left_over_pending + out.left_over_active;
        let mut slots = alloc::vec![None; n];
        for (slot, &(_, _, _, id)) in chosen.enumerate() {
            let Some(irq) = self.irq_mut(vcpu, id) else {
                continue;
            };
            let lr = Self::load(irq, id, vcpu, slot, g0, g1);
            out.eoi_maintenance |= lr.eoi_maintenance();
            out.loaded_pending += usize::from(lr.state().pending());
            lrs.write(slot, lr.0);
            slots[slot] = Some(id);
        }
        for slot in out.loaded..n {
            lrs.write(slot, 0);
        }
        self.vcpus[vcpu].slots = slots;
        self.vcpus[vcpu].left_out = wanted[keep_active..actives].iter().map(|w| w.3).collect();
        Ok(out)
    }

    /// Builds the LR for `irq` and records that LR `slot` of `vcpu` holds it.
    fn load(irq: &mut Irq, id: u32, vcpu: usize, slot: usize, g0: bool, g1: bool) -> IchLr {
        let pending = if irq.active {
            irq.edge
                && irq.hw.is_none()
                && irq.latch
                && irq.enabled
                && (if irq.group1 { g1 } else { g0 })
        } else {
            true
        };
        let mut lr = IchLr::new(
            id,
            irq.priority,
            irq.group1,
            LrState::from_parts(pending, irq.active),
        );
        lr = match irq.hw {
            Some(p) => lr.with_hw(p),
            None if !irq.edge => lr.with_eoi_maintenance(),
            None => lr,
        };
        let latch_taken = pending && irq.latch;
        if latch_taken {
            irq.latch = false;
        }
        irq.lr = Some(LrHold {
            vcpu,
            slot,
            wrote_pending: pending,
            latch_taken,
        });
        lr
    }

    /// True if `vcpu` has an interrupt the guest could take now: deliverable in the
    /// model or pending in one of its list registers. `el2` combines this with the
    /// virtual CPU interface's own masks (ICH_VMCR_EL2) when deciding to leave WFI.
    pub fn has_pending(&self, vcpu: usize) -> bool {
        if vcpu >= self.vcpus.len() {
            return false;
        }
        let (g0, g1) = self.group_enables();
        self.visible_to(vcpu).any(|(_, irq)| {
            irq.deliverable(g0, g1) || irq.lr.is_some_and(|h| h.vcpu == vcpu && h.wrote_pending)
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod overflow_tests;
