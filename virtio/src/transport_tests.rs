//! Transport tests: a guest driver ([`crate::testing::TestDriver`]) programs the
//! virtio-mmio registers; hostile sequences end in the architected state.

use super::*;
use crate::defs::{device_id, features, ring, status};
use crate::rng::{EntropyError, EntropySource, Rng};
use crate::testing::{TestDriver, RAM_BASE};
use alloc::vec::Vec;

struct Counter(u8);
impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

fn driver() -> TestDriver<Rng> {
    TestDriver::new(Rng::new(alloc::boxed::Box::new(Counter(0))), 1 << 20)
}

fn started() -> TestDriver<Rng> {
    let mut d = driver();
    d.start(features::INDIRECT_DESC);
    d
}

#[test]
fn identity_registers() {
    let mut d = driver();
    assert_eq!(d.read_reg(mmio::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.read_reg(mmio::VERSION), 2);
    assert_eq!(d.read_reg(mmio::DEVICE_ID), device_id::ENTROPY);
    assert_eq!(d.read_reg(mmio::VENDOR_ID), mmio::VENDOR);
    assert_eq!(d.read_reg(mmio::QUEUE_NUM_MAX), 256);
    d.write_reg(mmio::QUEUE_SEL, 1);
    assert_eq!(d.read_reg(mmio::QUEUE_NUM_MAX), 0);
    assert_eq!(d.read_reg(mmio::SHM_LEN_LOW), u32::MAX);
    assert_eq!(d.read_reg(mmio::SHM_BASE_HIGH), u32::MAX);
    let f = d.device_features();
    assert_eq!(f & features::VERSION_1, features::VERSION_1);
    assert_eq!(f & features::RING_PACKED, 0);
    // Only 32-bit aligned register accesses.
    assert!(d.try_read(mmio::STATUS, AccessSize::Byte).is_err());
    assert!(d.try_read(mmio::STATUS, AccessSize::Double).is_err());
    assert!(d.try_write(mmio::STATUS + 2, AccessSize::Word, 1).is_err());
    assert_eq!(d.read_reg(mmio::STATUS), 0);
}

#[test]
fn full_init_sequence_and_interrupt_level() {
    let mut d = started();
    assert!(!d.irq_level());
    let buf = d.alloc(64, 16);
    let head = d.add_chain(0, &[(buf, 64, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((u32::from(head), 64)));
    assert_eq!(d.read_mem(buf, 3), [1, 2, 3]);
    assert!(d.irq_level());
    assert_eq!(d.ack_interrupts(), mmio::INT_USED_BUFFER);
    assert!(!d.irq_level());
    assert_eq!(d.read_reg(mmio::INTERRUPT_STATUS), 0);
}

#[test]
fn features_not_offered_or_without_version_1_are_refused() {
    let mut d = driver();
    assert!(!d.negotiate(features::VERSION_1 | features::RING_PACKED));
    assert_eq!(d.transport.negotiated_features(), 0);
    assert!(!d.negotiate(features::INDIRECT_DESC));
    assert!(!d.negotiate(features::VERSION_1 | 1 << 63));
    assert!(d.negotiate(features::VERSION_1));
    // DriverFeatures is frozen after FEATURES_OK.
    d.write_reg(mmio::DRIVER_FEATURES_SEL, 0);
    d.write_reg(mmio::DRIVER_FEATURES, features::EVENT_IDX as u32);
    assert_eq!(d.transport.negotiated_features(), features::VERSION_1);
}

#[test]
fn driver_ok_needs_features_ok_and_bits_cannot_be_cleared() {
    let mut d = driver();
    d.write_reg(mmio::STATUS, status::ACKNOWLEDGE);
    d.write_reg(
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_eq!(
        d.read_reg(mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    d.write_reg(mmio::STATUS, status::DRIVER);
    assert_eq!(
        d.read_reg(mmio::STATUS),
        status::ACKNOWLEDGE | status::DRIVER
    );
    // The driver cannot set DEVICE_NEEDS_RESET itself.
    d.write_reg(
        mmio::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DEVICE_NEEDS_RESET,
    );
    assert_eq!(d.read_reg(mmio::STATUS) & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn queue_size_not_power_of_two_needs_reset_then_reset_recovers() {
    let mut d = driver();
    assert!(d.negotiate(features::VERSION_1));
    assert!(!d.setup_queue(0, 100));
    assert_ne!(d.read_reg(mmio::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    // Not DRIVER_OK yet: no interrupt.
    assert!(!d.irq_level());
    // Too large for QueueNumMax.
    assert!(d.negotiate(features::VERSION_1));
    assert_eq!(d.read_reg(mmio::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert!(!d.setup_queue(0, 512));
    // A QueueNum that does not fit 16 bits is refused too.
    assert!(d.negotiate(features::VERSION_1));
    d.write_reg(mmio::QUEUE_NUM, 0x1_0010);
    d.write_reg(mmio::QUEUE_READY, 1);
    assert_eq!(d.read_reg(mmio::QUEUE_READY), 0);
    // After reset a good setup works.
    d.start(0);
    let buf = d.alloc(8, 8);
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert!(d.pop_used(0).is_some());
}

#[test]
fn misaligned_or_out_of_ram_rings_need_reset() {
    for (desc, avail, used) in [
        (RAM_BASE + 8, RAM_BASE + 0x1000, RAM_BASE + 0x2000),
        (RAM_BASE, RAM_BASE + 0x1001, RAM_BASE + 0x2000),
        (RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + 0x2002),
        (0x1000, RAM_BASE + 0x1000, RAM_BASE + 0x2000),
        (RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + (1 << 20) - 0x10),
    ] {
        let mut d = driver();
        assert!(d.negotiate(features::VERSION_1));
        assert!(!d.setup_queue_at(0, 16, desc, avail, used));
        assert!(d.transport.needs_reset());
    }
}

#[test]
fn queue_registers_are_frozen_while_ready() {
    let mut d = started();
    let q = d.queues[0];
    d.write_reg(mmio::QUEUE_SEL, 0);
    d.write_reg(mmio::QUEUE_NUM, 2);
    d.write_reg(mmio::QUEUE_DESC_LOW, 0);
    d.write_reg(mmio::QUEUE_DEVICE_LOW, 0x40);
    let tq = &d.transport.core.queues[0];
    assert_eq!(
        (tq.size, tq.desc_addr, tq.used_addr),
        (q.size, q.desc, q.used)
    );
}

#[test]
fn malformed_chain_after_driver_ok_needs_reset_with_config_interrupt() {
    let mut d = started();
    let before = d.mem.as_bytes().to_vec();
    // A descriptor loop.
    d.write_desc(
        0,
        0,
        RAM_BASE + 0x8000,
        16,
        ring::DESC_F_WRITE | ring::DESC_F_NEXT,
        1,
    );
    d.write_desc(
        0,
        1,
        RAM_BASE + 0x9000,
        16,
        ring::DESC_F_WRITE | ring::DESC_F_NEXT,
        0,
    );
    d.publish(0, 0);
    let published = d.mem.as_bytes().to_vec();
    assert_ne!(before, published);
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(
        d.read_reg(mmio::STATUS) & status::DEVICE_NEEDS_RESET,
        status::DEVICE_NEEDS_RESET
    );
    assert!(d.irq_level());
    assert_eq!(d.ack_interrupts(), mmio::INT_CONFIG_CHANGE);
    assert_eq!(
        d.mem.as_bytes(),
        &published[..],
        "device wrote guest memory"
    );
    // Stopped: a good chain is not processed until reset.
    let buf = d.alloc(8, 8);
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), None);
    d.write_reg(mmio::QUEUE_SEL, 0);
    d.write_reg(mmio::QUEUE_READY, 1);
    d.write_reg(mmio::STATUS, 0);
    assert_eq!(d.read_reg(mmio::STATUS), 0);
    assert!(!d.irq_level());
}

#[test]
fn notify_before_driver_ok_or_of_absent_queue_is_ignored() {
    let mut d = driver();
    assert!(d.negotiate(features::VERSION_1));
    assert!(d.setup_queue(0, 8));
    let buf = d.alloc(8, 8);
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), None);
    d.notify(7);
    d.write_reg(mmio::QUEUE_NOTIFY, u32::MAX);
    assert!(!d.transport.needs_reset());
    // DRIVER_OK serves what was made available before it.
    d.driver_ok();
    assert_eq!(d.pop_used(0), Some((0, 8)));
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((1, 8)));
}

#[test]
fn config_space_accesses() {
    let mut d = driver();
    // virtio-rng has no config: reads as zero, writes ignored, unaligned refused.
    assert_eq!(d.try_read(mmio::CONFIG, AccessSize::Byte), Ok(0));
    assert_eq!(d.try_read(mmio::CONFIG + 4, AccessSize::Word), Ok(0));
    assert!(d.try_write(mmio::CONFIG, AccessSize::Half, 1).is_ok());
    assert!(d.try_read(mmio::CONFIG + 1, AccessSize::Half).is_err());
    assert_eq!(d.read_reg(mmio::CONFIG_GENERATION), 0);
    d.transport.signal_config_change(&mut d.irq);
    assert_eq!(d.read_reg(mmio::CONFIG_GENERATION), 1);
}

#[test]
fn event_idx_suppresses_interrupts() {
    let mut d = driver();
    d.start(features::EVENT_IDX);
    let size = u64::from(d.queues[0].size);
    let used_event_at = d.queues[0].avail + 4 + 2 * size;
    let buf = d.alloc(8, 8);
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert!(d.irq_level());
    d.ack_interrupts();
    // The driver asks for an interrupt only after used index 10.
    d.mem.write_u16(used_event_at, 10).unwrap();
    d.add_chain(0, &[(buf, 8, true)]);
    d.notify(0);
    assert!(d.pop_used(0).is_some());
    assert!(d.pop_used(0).is_some());
    assert!(!d.irq_level());
    // avail_event tells the driver where the device is.
    let avail_event_at = d.queues[0].used + 4 + 8 * size;
    assert_eq!(d.mem.read_u16(avail_event_at).unwrap(), 2);
}

#[test]
fn work_beyond_the_budget_is_deferred_to_poll() {
    let mut d = started();
    d.transport.set_budget(RunBudget {
        chains: 2,
        bytes: u64::MAX,
    });
    let buf = d.alloc(8, 8);
    for _ in 0..5 {
        d.add_chain(0, &[(buf, 8, true)]);
    }
    d.notify(0);
    let drain = |d: &mut TestDriver<Rng>| core::iter::from_fn(|| d.pop_used(0)).count();
    assert_eq!(drain(&mut d), 2);
    assert!(d.transport.needs_poll());
    d.poll();
    assert_eq!(drain(&mut d), 2);
    d.poll();
    assert_eq!(drain(&mut d), 1);
    assert!(!d.transport.needs_poll());
    // The byte budget: a call always pops one chain, then stops once over budget.
    d.transport.set_budget(RunBudget {
        chains: 100,
        bytes: 10,
    });
    for _ in 0..3 {
        d.add_chain(0, &[(buf, 8, true)]);
    }
    d.notify(0);
    assert_eq!(drain(&mut d), 2);
    assert!(d.transport.needs_poll());
    assert!(!d.transport.needs_reset());
}

/// Every register a driver can read (QueueSel 0), by word.
fn register_file(d: &mut TestDriver<Rng>) -> Vec<u32> {
    (0..mmio::CONFIG)
        .step_by(4)
        .map(|off| d.read_reg(off))
        .collect()
}

#[test]
fn vm_reset_returns_a_live_transport_to_power_on_and_lowers_the_line() {
    use vdev::SaveRestore;
    let mut fresh = driver();
    let want_regs = register_file(&mut fresh);
    let want_state = fresh.transport.save();

    let mut d = started();
    d.transport.set_budget(RunBudget {
        chains: 1,
        bytes: u64::MAX,
    });
    let buf = d.alloc(8, 8);
    for _ in 0..3 {
        d.add_chain(0, &[(buf, 8, true)]);
    }
    d.notify(0);
    d.transport.signal_config_change(&mut d.irq);
    d.write_reg(mmio::DEVICE_FEATURES_SEL, 1);
    d.write_reg(mmio::DRIVER_FEATURES_SEL, 1);
    d.write_reg(mmio::QUEUE_SEL, 1);
    assert!(d.irq_level(), "interrupt raised");
    assert!(d.transport.has_deferred_work(), "work deferred");
    assert_ne!(d.transport.save(), want_state);

    MmioDevice::reset(&mut d.transport, &mut d.irq);
    assert!(!d.irq_level(), "reset lowers the line");
    assert!(!d.transport.has_deferred_work(), "deferred work dropped");
    assert_eq!(
        d.transport.save(),
        want_state,
        "registers, queues (addresses, indices) and device state as at power-on"
    );
    assert_eq!(register_file(&mut d), want_regs);
    // The old queue addresses are gone: a notify does nothing until the driver
    // sets the device up again.
    let used_idx_at = d.queues[0].used + ring::IDX_OFFSET;
    let used_before = d.mem.read_u16(used_idx_at).unwrap();
    d.notify(0);
    assert_eq!(d.mem.read_u16(used_idx_at).unwrap(), used_before);
    assert!(!d.irq_level());
}

#[test]
fn work_deferred_under_event_idx_is_resumed_without_a_notification() {
    let signal = vdev::WorkSignal::new();
    let mut d = driver();
    d.transport = MmioTransport::new(
        Rng::new(alloc::boxed::Box::new(Counter(0))),
        crate::testing::TEST_INTID,
    )
    .with_work_signal(signal.clone());
    d.transport.set_budget(RunBudget {
        chains: 4,
        bytes: u64::MAX,
    });
    d.start(features::EVENT_IDX);
    let size = u64::from(d.queues[0].size);
    let used_event_at = d.queues[0].avail + 4 + 2 * size;
    let buf = d.alloc(8, 8);
    for _ in 0..10 {
        d.add_chain(0, &[(buf, 8, true)]);
    }
    // One notification for ten chains; the driver never notifies again.
    d.notify(0);
    let drain = |d: &mut TestDriver<Rng>| core::iter::from_fn(|| d.pop_used(0)).count();
    assert_eq!(drain(&mut d), 4, "one budget's worth in the notify");
    assert!(d.irq_level());
    // As Linux does: consume, acknowledge, ask for an interrupt at the next entry.
    d.ack_interrupts();
    d.mem.write_u16(used_event_at, 4).unwrap();
    assert!(!d.irq_level());
    assert!(signal.is_raised(), "the transport says it left work");
    assert!(d.transport.has_deferred_work());

    // The hypervisor's hook: resume while the signal is raised, one bounded round
    // per call.
    let mut rounds = 0;
    let mut per_round = Vec::new();
    while signal.take() {
        rounds += 1;
        assert!(rounds <= 10, "resume makes no progress");
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut d.mem,
            irq: &mut d.irq,
        };
        MmioDevice::resume(&mut d.transport, &mut ctx);
        assert!(d.irq_level(), "round {rounds} raises the interrupt");
        per_round.push(drain(&mut d));
        d.ack_interrupts();
        let used = d.mem.read_u16(d.queues[0].used + ring::IDX_OFFSET).unwrap();
        d.mem.write_u16(used_event_at, used).unwrap();
    }
    assert_eq!(per_round, [4, 2], "bounded by the budget, then the rest");
    assert!(!d.transport.has_deferred_work());
    assert!(!d.transport.needs_reset());
}
