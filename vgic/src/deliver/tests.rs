use super::*;
use crate::config::VgicConfig;
use crate::hcr::IchHcr;
use crate::regs::{ctlr, gicd, gicr, Irouter};
use vdev::AccessSize::Word;

/// A fake vCPU interface: `n` list registers the "guest" can act on.
struct FakeLrs(Vec<u64>);

impl ListRegisters for FakeLrs {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn read(&self, i: usize) -> u64 {
        self.0[i]
    }
    fn write(&mut self, i: usize, v: u64) {
        self.0[i] = v;
    }
}

impl FakeLrs {
    fn new(n: usize) -> Self {
        Self(alloc::vec![0; n])
    }
    fn find(&self, vintid: u32) -> Option<usize> {
        self.0
            .iter()
            .position(|v| IchLr(*v).state() != LrState::Invalid && IchLr(*v).vintid() == vintid)
    }
    fn lr(&self, vintid: u32) -> IchLr {
        IchLr(self.0[self.find(vintid).expect("interrupt not in an LR")])
    }
    fn set_state(&mut self, vintid: u32, s: LrState) {
        let i = self.find(vintid).expect("interrupt not in an LR");
        self.0[i] = (self.0[i] & !(3 << 62)) | (s as u64) << 62;
    }
    /// Guest acknowledges `vintid` (ICV_IAR1_EL1).
    fn ack(&mut self, vintid: u32) {
        let s = self.lr(vintid).state();
        assert!(s.pending(), "ack of a non-pending LR");
        self.set_state(vintid, LrState::from_parts(false, true));
    }
    /// Guest deactivates `vintid` (ICV_EOIR1_EL1 with EOImode 0).
    fn eoi(&mut self, vintid: u32) {
        let s = self.lr(vintid).state();
        self.set_state(vintid, LrState::from_parts(s.pending(), false));
    }
    fn loaded(&self) -> Vec<u32> {
        self.0
            .iter()
            .map(|v| IchLr(*v))
            .filter(|l| l.state() != LrState::Invalid)
            .map(|l| l.vintid())
            .collect()
    }
}

/// A VM with Group 1 enabled and every SPI in `spis` enabled, Group 1, priority 0x80,
/// configured edge when `edge`.
fn setup(n: usize, spis: &[u32], edge: bool) -> Vgic {
    let mut g = Vgic::new(VgicConfig::simple(n, 64)).unwrap();
    g.gicd_write(gicd::CTLR, Word, ctlr::ENABLE_GRP1 as u64)
        .unwrap();
    for &id in spis {
        let irq = g.irq_mut(0, id).unwrap();
        irq.enabled = true;
        irq.group1 = true;
        irq.priority = 0x80;
        irq.edge = edge;
    }
    g
}

#[test]
fn edge_spi_round_trip() {
    let mut g = setup(1, &[40], true);
    let mut lrs = FakeLrs::new(4);
    g.set_level(40, true).unwrap();
    g.set_level(40, false).unwrap();
    assert!(g.has_pending(0));
    let out = g.flush(0, &mut lrs).unwrap();
    assert_eq!(
        out,
        FlushOutcome {
            loaded: 1,
            loaded_pending: 1,
            ..FlushOutcome::default()
        }
    );
    let lr = lrs.lr(40);
    assert_eq!(
        (lr.state(), lr.priority(), lr.group1(), lr.hw()),
        (LrState::Pending, 0x80, true, false)
    );
    lrs.ack(40);
    g.sync(0, &mut lrs, 0).unwrap();
    assert_eq!(lrs.loaded(), Vec::<u32>::new(), "sync frees every LR");
    let irq = g.irq(0, 40).unwrap();
    assert!(irq.active && !irq.pending());
    assert!(!g.has_pending(0));
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(
        lrs.lr(40).state(),
        LrState::Active,
        "active interrupts go back"
    );
    lrs.eoi(40);
    g.sync(0, &mut lrs, 0).unwrap();
    let irq = g.irq(0, 40).unwrap();
    assert!(!irq.active && !irq.pending());
    assert_eq!(g.flush(0, &mut lrs).unwrap().loaded, 0);
}

#[test]
fn edge_relatched_while_active_loads_pending_active() {
    let mut g = setup(1, &[40], true);
    let mut lrs = FakeLrs::new(4);
    g.set_level(40, true).unwrap();
    g.flush(0, &mut lrs).unwrap();
    lrs.ack(40);
    g.sync(0, &mut lrs, 0).unwrap();
    g.set_level(40, false).unwrap();
    g.set_level(40, true).unwrap();
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(lrs.lr(40).state(), LrState::PendingActive);
    // The guest deactivates without taking the new edge: it stays pending.
    lrs.eoi(40);
    g.sync(0, &mut lrs, 0).unwrap();
    let irq = g.irq(0, 40).unwrap();
    assert!(!irq.active && irq.pending());
}

#[test]
fn level_repends_after_deactivation_while_high() {
    let mut g = setup(1, &[41], false);
    let mut lrs = FakeLrs::new(4);
    g.set_level(41, true).unwrap();
    let out = g.flush(0, &mut lrs).unwrap();
    assert!(out.eoi_maintenance);
    assert!(lrs.lr(41).eoi_maintenance());
    lrs.ack(41);
    g.sync(0, &mut lrs, 0).unwrap();
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(
        lrs.lr(41).state(),
        LrState::Active,
        "no pending bit while active"
    );
    lrs.eoi(41);
    g.sync(0, &mut lrs, 0).unwrap();
    assert!(
        g.irq(0, 41).unwrap().pending(),
        "line still high: pending again"
    );
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(lrs.lr(41).state(), LrState::Pending);
    // Now the device lowers the line during the handler.
    lrs.ack(41);
    g.sync(0, &mut lrs, 0).unwrap();
    g.set_level(41, false).unwrap();
    g.flush(0, &mut lrs).unwrap();
    lrs.eoi(41);
    g.sync(0, &mut lrs, 0).unwrap();
    assert!(!g.irq(0, 41).unwrap().pending());
    assert_eq!(g.flush(0, &mut lrs).unwrap().loaded, 0);
}

#[test]
fn level_dropped_before_ack_is_withdrawn_but_latch_survives() {
    let mut g = setup(1, &[41, 42], false);
    let mut lrs = FakeLrs::new(4);
    g.set_level(41, true).unwrap();
    g.gicd_write(gicd::ISPENDR + 4, Word, 1 << 10).unwrap(); // INTID 42 by software
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(lrs.loaded(), [41, 42]);
    assert!(g.has_pending(0));
    g.set_level(41, false).unwrap();
    g.sync(0, &mut lrs, 0).unwrap();
    assert!(!g.irq(0, 41).unwrap().pending());
    assert!(g.irq(0, 42).unwrap().pending(), "ISPENDR latch given back");
    g.flush(0, &mut lrs).unwrap();
    assert_eq!(lrs.loaded(), [42]);
}

#[test]
fn overflow_keeps_highest_priority_and_reports_left_over() {
    let spis = [32, 33, 34, 35, 36, 37];
    let mut g = setup(1, &spis, true);
    for (id, p) in spis.iter().zip([0xF0, 0x10, 0x80, 0x10, 0x00, 0x80]) {
        g.irq_mut(0, *id).unwrap().priority = p;
        g.set_level(*id, true).unwrap();
    }
    let mut lrs = FakeLrs::new(4);
    lrs.0 = alloc::vec![u64::MAX; 4]; // stale garbage is overwritten
    let out = g.flush(0, &mut lrs).unwrap();
    assert_eq!(out.loaded, 4);
    assert_eq!(out.left_over, 2);
    assert_eq!((out.left_over_pending, out.left_over_active), (2, 0));
    assert_eq!(out.hcr(), IchHcr(IchHcr::EN | IchHcr::UIE | IchHcr::NPIE));
    assert_eq!(
        lrs.loaded(),
        [36, 33, 35, 34],
        "priority order, ties by INTID"
    );
    // The guest handles two of them; the refill brings the rest.
    for id in [36, 33] {
        lrs.ack(id);
        lrs.eoi(id);
    }
    let out = g.flush(0, &mut lrs).unwrap();
    assert_eq!((out.loaded, out.left_over), (4, 0));
    assert_eq!(out.hcr(), IchHcr::EXIT);
    assert_eq!(lrs.loaded(), [35, 34, 37, 32]);
}

#[test]
fn active_interrupts_take_precedence() {
    let spis = [32, 33, 34, 35, 36];
    let mut g = setup(1, &spis, true);
    g.irq_mut(0, 36).unwrap().priority = 0xF0;
    g.irq_mut(0, 36).unwrap().active = true;
    for id in &spis[..4] {
        g.irq_mut(0, *id).unwrap().priority = 0x00;
        g.set_level(*id, true).unwrap();
    }
    let mut lrs = FakeLrs::new(4);
    let out = g.flush(0, &mut lrs).unwrap();
    assert_eq!(out.left_over, 1);
    assert_eq!(lrs.loaded(), [36, 32, 33, 34]);
    assert_eq!(lrs.lr(36).state(), LrState::Active);
}

#[test]
fn enables_and_groups_gate_delivery() {
    let mut g = setup(1, &[40], true);
    let mut lrs = FakeLrs::new(4);
    g.set_level(40, true).unwrap();
    g.gicd_write(gicd::ICENABLER + 4, Word, 1 << 8).unwrap();
    assert!(!g.has_pending(0));
    assert_eq!(g.flush(0, &mut lrs).unwrap().loaded, 0);
    g.gicd_write(gicd::ISENABLER + 4, Word, 1 << 8).unwrap();
    g.gicd_write(gicd::IGROUPR + 4, Word, 0).unwrap(); // now Group 0, which is off
    assert!(!g.has_pending(0));
    assert_eq!(g.flush(0, &mut lrs).unwrap().loaded, 0);
    g.gicd_write(gicd::CTLR, Word, ctlr::ENABLE_GRP0 as u64)
        .unwrap();
    assert!(g.has_pending(0));
    g.flush(0, &mut lrs).unwrap();
    assert!(!lrs.lr(40).group1(), "Group 0 LR");
}

#[test]
fn spis_follow_their_route() {
    let mut g = setup(3, &[40], true);
    let (mut l0, mut l1, mut l2) = (FakeLrs::new(4), FakeLrs::new(4), FakeLrs::new(4));
    let router = gicd::IROUTER + 8 * 40;
    g.take_kicks();
    g.gicd_write(router, Word, 1).unwrap();
    g.set_level(40, true).unwrap();
    assert_eq!(g.take_kicks(), 0b010);
    assert!(!g.has_pending(0) && g.has_pending(1));
    assert_eq!(g.flush(0, &mut l0).unwrap().loaded, 0);
    assert_eq!(g.flush(1, &mut l1).unwrap().loaded, 1);
    g.sync(1, &mut l1, 0).unwrap();
    // A route naming no vCPU: delivered nowhere.
    g.gicd_write(router, Word, 9).unwrap();
    for (v, lrs) in [(0, &mut l0), (1, &mut l1), (2, &mut l2)] {
        assert!(!g.has_pending(v));
        assert_eq!(g.flush(v, lrs).unwrap().loaded, 0);
    }
    // 1 of N: any vCPU takes it, but only one at a time.
    g.gicd_write(router, Word, Irouter::IRM).unwrap();
    assert_eq!(g.take_kicks(), 0b111);
    assert_eq!(g.flush(2, &mut l2).unwrap().loaded, 1);
    assert_eq!(g.flush(0, &mut l0).unwrap().loaded, 0, "held by vCPU 2");
    l2.ack(40);
    l2.eoi(40);
    g.sync(2, &mut l2, 0).unwrap();
    assert_eq!(g.flush(0, &mut l0).unwrap().loaded, 0, "consumed");
}

#[test]
fn hw_linked_timer_ppi() {
    let mut g = setup(2, &[], false);
    let mut lrs = FakeLrs::new(4);
    let r1 = gicr::STRIDE + gicr::SGI_BASE;
    g.gicr_write(r1 + gicr::IGROUPR0, Word, 1 << 27).unwrap();
    g.gicr_write(r1 + gicr::ISENABLER0, Word, 1 << 27).unwrap();
    g.set_hw_mapping(1, 27, 27).unwrap();
    g.set_ppi_level(1, 27, true).unwrap();
    assert!(!g.has_pending(0) && g.has_pending(1));
    let out = g.flush(1, &mut lrs).unwrap();
    assert!(!out.eoi_maintenance);
    let lr = lrs.lr(27);
    assert!(lr.hw() && lr.pintid() == 27 && lr.state() == LrState::Pending);
    lrs.ack(27);
    g.sync(1, &mut lrs, 0).unwrap();
    g.flush(1, &mut lrs).unwrap();
    assert_eq!(
        lrs.lr(27).state(),
        LrState::Active,
        "HW: never pending+active"
    );
    lrs.eoi(27);
    g.sync(1, &mut lrs, 0).unwrap();
    assert!(!g.has_pending(1), "line consumed by the acknowledge");
    // The physical interrupt fires again.
    g.set_ppi_level(1, 27, true).unwrap();
    assert!(g.has_pending(1));
    g.clear_hw_mapping(1, 27).unwrap();
    g.flush(1, &mut lrs).unwrap();
    assert!(!lrs.lr(27).hw());
}

#[test]
fn sgis_are_delivered_to_targets() {
    let mut g = setup(2, &[], true);
    let mut lrs = FakeLrs::new(4);
    let r1 = gicr::STRIDE + gicr::SGI_BASE;
    g.gicr_write(r1 + gicr::IGROUPR0, Word, 0xFFFF).unwrap();
    g.gicr_write(r1 + gicr::ISENABLER0, Word, 0xFFFF).unwrap();
    g.send_sgi(0, 3 << 24 | 0b10).unwrap();
    g.flush(1, &mut lrs).unwrap();
    assert_eq!(lrs.loaded(), [3]);
    assert!(!g.has_pending(0));
}

#[test]
fn bad_vcpu_is_refused() {
    let mut g = setup(1, &[], true);
    let mut lrs = FakeLrs::new(4);
    assert_eq!(g.flush(1, &mut lrs), Err(InputError::NoSuchVcpu(1)));
    assert_eq!(g.sync(9, &mut lrs, 0), Err(InputError::NoSuchVcpu(9)));
    assert!(!g.has_pending(1));
}

#[test]
fn shrinking_lr_count_is_survived() {
    let mut g = setup(1, &[40, 41], true);
    let mut lrs = FakeLrs::new(4);
    g.set_level(40, true).unwrap();
    g.set_level(41, true).unwrap();
    g.flush(0, &mut lrs).unwrap();
    let mut fewer = FakeLrs(lrs.0[..1].to_vec());
    g.sync(0, &mut fewer, 0).unwrap();
    assert!(g.irq(0, 41).unwrap().lr.is_none());
    let out = g.flush(0, &mut fewer).unwrap();
    assert_eq!((out.loaded, out.left_over), (1, 1));
}

#[test]
fn changes_to_a_held_interrupt_kick_its_holder() {
    let mut g = setup(2, &[40], false);
    let mut l1 = FakeLrs::new(4);
    g.gicd_write(gicd::IROUTER + 8 * 40, Word, 1).unwrap();
    g.set_level(40, true).unwrap();
    g.flush(1, &mut l1).unwrap();
    g.take_kicks();
    g.gicd_write(gicd::ICENABLER + 4, Word, 1 << 8).unwrap();
    assert_eq!(g.take_kicks(), 0b10, "disable must reach vCPU 1's LR");
    g.gicd_write(gicd::IPRIORITYR + 40, vdev::AccessSize::Byte, 0x20)
        .unwrap();
    assert_eq!(g.take_kicks(), 0b10);
    g.set_level(40, false).unwrap();
    assert_eq!(g.take_kicks(), 0b10, "a withdrawn level reaches the holder");
    g.sync(1, &mut l1, 0).unwrap();
    g.gicd_write(gicd::ICENABLER + 4, Word, 1 << 8).unwrap();
    assert_eq!(g.take_kicks(), 0, "nothing held, nobody to kick");
}
