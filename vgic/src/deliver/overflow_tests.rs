//! More interrupts than list registers: a model of the GICv3 virtual CPU interface
//! (list registers, ICH_HCR_EL2 with EOIcount, the active priorities, acknowledge and
//! EOI with EOImode = 0, the maintenance-interrupt conditions of ICH_MISR_EL2) driven
//! through `flush` / `sync` the way `el2`'s run loop does. Every entry must leave the
//! maintenance interrupt deasserted (else the vCPU livelocks), every exit too (else
//! EL2's acknowledge loop never ends), and every interrupt must reach the guest.

use super::*;
use crate::config::VgicConfig;
use crate::hcr::IchHcr;
use crate::regs::{ctlr, gicd, gicr, Irouter};
use vdev::AccessSize::{Byte, Word};

/// The virtual CPU interface of one vCPU.
struct Vif {
    lrs: Vec<u64>,
    hcr: IchHcr,
    /// Priorities acknowledged and not yet dropped (ICH_AP1R<n>_EL2).
    active_priorities: Vec<u8>,
}

impl ListRegisters for Vif {
    fn count(&self) -> usize {
        self.lrs.len()
    }
    fn read(&self, i: usize) -> u64 {
        self.lrs[i]
    }
    fn write(&mut self, i: usize, v: u64) {
        self.lrs[i] = v;
    }
}

const EOICOUNT_SHIFT: u32 = 27;

impl Vif {
    fn new(n: usize) -> Self {
        Self {
            lrs: alloc::vec![0; n],
            hcr: IchHcr::EXIT,
            active_priorities: Vec::new(),
        }
    }

    fn lr(&self, i: usize) -> IchLr {
        IchLr(self.lrs[i])
    }

    fn set_state(&mut self, i: usize, s: LrState) {
        self.lrs[i] = (self.lrs[i] & !(3 << 62)) | (s as u64) << 62;
    }

    /// ICH_MISR_EL2 != 0: the maintenance interrupt is asserted.
    fn maintenance(&self) -> bool {
        let lrs = || (0..self.lrs.len()).map(|i| self.lr(i));
        let valid = lrs().filter(|l| l.state() != LrState::Invalid).count();
        let eoi = lrs().any(|l| l.state() == LrState::Invalid && l.eoi_maintenance());
        let u = self.hcr.0 & IchHcr::UIE != 0 && valid <= 1;
        let np = self.hcr.0 & IchHcr::NPIE != 0 && !lrs().any(|l| l.state().pending());
        let lrenp = self.hcr.0 & IchHcr::LRENPIE != 0 && self.hcr.eoi_count() != 0;
        eoi || u || np || lrenp
    }

    /// ICV_IAR1_EL1: the highest-priority pending LR above the running priority.
    fn ack(&mut self) -> Option<u32> {
        let running = self.active_priorities.iter().min().copied().unwrap_or(0xFF);
        let i = (0..self.lrs.len())
            .filter(|&i| self.lr(i).state().pending() && self.lr(i).priority() < running)
            .min_by_key(|&i| self.lr(i).priority())?;
        let lr = self.lr(i);
        self.set_state(i, LrState::from_parts(false, true));
        self.active_priorities.push(lr.priority());
        Some(lr.vintid())
    }

    /// ICV_EOIR1_EL1 with EOImode = 0: drop the running priority, deactivate `id`.
    fn eoi(&mut self, id: u32) {
        let running = *self.active_priorities.iter().min().expect("EOI while idle");
        let at = self.active_priorities.iter().position(|&p| p == running);
        self.active_priorities.remove(at.unwrap());
        let hit =
            (0..self.lrs.len()).find(|&i| self.lr(i).vintid() == id && self.lr(i).state().active());
        match hit {
            Some(i) => {
                let s = self.lr(i).state();
                self.set_state(i, LrState::from_parts(s.pending(), false));
            }
            None => {
                let count = (self.hcr.eoi_count() + 1).min(31);
                let mask = 0x1F << EOICOUNT_SHIFT;
                self.hcr = IchHcr((self.hcr.0 & !mask) | u64::from(count) << EOICOUNT_SHIFT);
            }
        }
    }
}

/// `el2`'s side: vCPU 0 of `g` with its interface, counting maintenance exits.
struct Hyp {
    g: Vgic,
    vif: Vif,
    maintenance_exits: usize,
}

impl Hyp {
    fn enter(&mut self) {
        let out = self.g.flush(0, &mut self.vif).unwrap();
        self.vif.hcr = out.hcr();
        assert!(
            !self.vif.maintenance(),
            "maintenance interrupt asserted at entry: {out:?}, LRs {:x?}",
            self.vif.lrs
        );
    }

    fn exit(&mut self) {
        let eoi_count = self.vif.hcr.eoi_count();
        self.vif.hcr = IchHcr::EXIT;
        self.g.sync(0, &mut self.vif, eoi_count).unwrap();
        assert!(!self.vif.maintenance(), "maintenance interrupt after exit");
    }

    /// The guest did something that may raise the maintenance interrupt.
    fn step(&mut self) {
        if self.vif.maintenance() {
            self.maintenance_exits += 1;
            self.exit();
            self.enter();
        }
    }

    /// An exit for another reason (a hypercall, a trapped WFI, an SGI write).
    fn trap(&mut self, f: impl FnOnce(&mut Vgic)) {
        self.exit();
        f(&mut self.g);
        self.enter();
    }

    fn send_sgi(&mut self, id: u32) {
        self.trap(|g| {
            g.send_sgi(0, u64::from(id) << 24 | 1).unwrap();
        });
    }
}

/// One vCPU with `n` list registers, SGIs 0..=15 enabled in Group 1 at `priorities`.
fn hyp(n: usize, priorities: &[u8]) -> Hyp {
    let mut g = Vgic::new(VgicConfig::simple(1, 32)).unwrap();
    g.gicd_write(gicd::CTLR, Word, ctlr::ENABLE_GRP1 as u64)
        .unwrap();
    let sgi = gicr::SGI_BASE;
    g.gicr_write(sgi + gicr::IGROUPR0, Word, 0xFFFF).unwrap();
    g.gicr_write(sgi + gicr::ISENABLER0, Word, 0xFFFF).unwrap();
    for (id, &p) in priorities.iter().enumerate() {
        g.gicr_write(sgi + gicr::IPRIORITYR0 + id as u64, Byte, p.into())
            .unwrap();
    }
    let mut h = Hyp {
        g,
        vif: Vif::new(n),
        maintenance_exits: 0,
    };
    h.enter();
    h
}

#[test]
fn six_pending_sgis_with_four_lrs_all_arrive() {
    let mut h = hyp(4, &[0x80; 6]);
    for id in 0..6 {
        h.send_sgi(id); // IRQs masked in the guest: nothing taken yet
    }
    h.trap(|_| {}); // the guest's WFI
    let mut seen = Vec::new();
    for _ in 0..64 {
        let Some(id) = h.vif.ack() else { break };
        seen.push(id);
        h.step();
        h.vif.eoi(id);
        h.step();
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    assert!(
        h.maintenance_exits > 0,
        "the refill came from a maintenance exit"
    );
    h.trap(|_| {});
    assert!(!h.g.has_pending(0));
    assert_eq!(h.vif.hcr, IchHcr::EXIT, "nothing left over, nothing armed");
}

/// Five nested interrupts active (each acknowledged at a higher priority than the
/// last, never ended) and a sixth of lower priority pending: the guest keeps running
/// without maintenance storms, then ends the five in order and gets the sixth.
fn five_active_one_pending(late_exits: bool) {
    let mut h = hyp(4, &[0xA0, 0x90, 0x80, 0x70, 0x60, 0xB0]);
    for id in 0..5 {
        h.send_sgi(id);
        assert_eq!(h.vif.ack(), Some(id), "SGI {id} can preempt");
        h.step();
    }
    h.send_sgi(5);
    assert_eq!(h.vif.ack(), None, "SGI 5 is below the running priority");
    for _ in 0..3 {
        h.trap(|_| {}); // hypercalls and WFI exits: the vCPU still runs
        assert!((0..5).all(|id| h.g.irq(0, id).unwrap().active));
    }
    let before = h.maintenance_exits;
    for id in (0..5).rev() {
        h.vif.eoi(id);
        if !late_exits || id % 2 == 0 {
            h.step();
        }
    }
    h.step();
    assert!(h.maintenance_exits > before);
    h.trap(|_| {});
    assert!(
        (0..5).all(|id| !h.g.irq(0, id).unwrap().active),
        "every deactivation counted"
    );
    assert_eq!(h.vif.ack(), Some(5));
    h.vif.eoi(5);
    h.step();
    h.trap(|_| {});
    assert!((0..6).all(|id| !h.g.irq(0, id).unwrap().active));
    assert!(!h.g.has_pending(0));
}

#[test]
fn five_active_and_one_pending_still_runs() {
    five_active_one_pending(false);
}

#[test]
fn deactivations_outside_the_lrs_are_counted() {
    // The maintenance exit comes late: the guest ends interrupts no LR holds.
    five_active_one_pending(true);
}

#[test]
fn no_entry_asserts_maintenance_and_pending_always_gets_an_lr() {
    for n in 1..=4 {
        for actives in 0..=6u32 {
            for pendings in 0..=6u32 {
                let prios: Vec<u8> = (0..16).map(|i| 0x10 * (i as u8 % 8)).collect();
                let mut h = hyp(n, &prios);
                h.exit();
                for id in 0..actives {
                    h.g.irq_mut(0, id).unwrap().active = true;
                }
                for id in actives..actives + pendings {
                    h.g.send_sgi(0, u64::from(id) << 24 | 1).unwrap();
                }
                h.enter();
                let loaded = |h: &Hyp, pending: bool| {
                    (0..n)
                        .filter(|&i| h.vif.lr(i).state() != LrState::Invalid)
                        .filter(|&i| !pending || h.vif.lr(i).state().pending())
                        .count()
                };
                let all = (actives + pendings) as usize;
                assert_eq!(
                    loaded(&h, false),
                    all.min(n),
                    "n={n} a={actives} p={pendings}"
                );
                if pendings > 0 {
                    assert!(loaded(&h, true) > 0, "n={n} a={actives} p={pendings}");
                }
                if actives as usize > n || (pendings > 0 && actives as usize >= n) {
                    assert!(h.vif.hcr.0 & IchHcr::LRENPIE != 0);
                }
            }
        }
    }
}

/// SPI 40, edge, Group 1, on a two-vCPU VM, made active on vCPU 0.
fn spi_active_on_vcpu0(router: u64) -> (Vgic, Vif, Vif) {
    let mut g = Vgic::new(VgicConfig::simple(2, 32)).unwrap();
    g.gicd_write(gicd::CTLR, Word, ctlr::ENABLE_GRP1 as u64)
        .unwrap();
    g.gicd_write(gicd::IGROUPR + 4, Word, 1 << 8).unwrap();
    g.gicd_write(gicd::ISENABLER + 4, Word, 1 << 8).unwrap();
    g.gicd_write(gicd::ICFGR + 8, Word, 2 << 16).unwrap();
    g.gicd_write(gicd::IROUTER + 8 * 40, Word, router).unwrap();
    let (mut l0, l1) = (Vif::new(4), Vif::new(4));
    g.set_level(40, true).unwrap();
    g.set_level(40, false).unwrap();
    g.flush(0, &mut l0).unwrap();
    assert_eq!(l0.ack(), Some(40));
    g.sync(0, &mut l0, 0).unwrap();
    assert!(g.irq(0, 40).unwrap().active);
    (g, l0, l1)
}

/// The active SPI is ended on vCPU 0; its next edge goes where `router` now says.
fn ends_on_vcpu0_then_follows_route(mut g: Vgic, mut l0: Vif, mut l1: Vif, next: usize) {
    assert_eq!(
        g.flush(1, &mut l1).unwrap().loaded,
        0,
        "not vCPU 1's to end"
    );
    assert!(!g.has_pending(1));
    assert_eq!(g.flush(0, &mut l0).unwrap().loaded, 1, "stays on vCPU 0");
    l0.eoi(40);
    assert_eq!(l0.hcr.eoi_count(), 0, "the guest's EOI found its LR");
    g.sync(0, &mut l0, 0).unwrap();
    assert!(!g.irq(0, 40).unwrap().active, "deactivated on vCPU 0");
    g.take_kicks();
    g.set_level(40, true).unwrap();
    assert_ne!(g.take_kicks() & 1 << next, 0);
    let lrs = [&mut l0, &mut l1];
    assert_eq!(g.flush(next, lrs[next]).unwrap().loaded, 1);
    assert_eq!(lrs[next].ack(), Some(40));
}

#[test]
fn route_change_while_active_keeps_deactivation_on_its_vcpu() {
    let (mut g, l0, l1) = spi_active_on_vcpu0(0);
    g.gicd_write(gicd::IROUTER + 8 * 40, Word, 1).unwrap();
    ends_on_vcpu0_then_follows_route(g, l0, l1, 1);
}

#[test]
fn one_of_n_while_active_keeps_deactivation_on_its_vcpu() {
    let (g, l0, l1) = spi_active_on_vcpu0(Irouter::IRM);
    ends_on_vcpu0_then_follows_route(g, l0, l1, 1);
}
