//! Save/restore of an [`MmioTransport`]: its registers, every queue's configuration
//! and indices, and the device's own state ([`VirtioDevice::save_state`]).
//!
//! Layout, version 2, little-endian: `"VMMI"`, version u32, device id u32, queue
//! count u32, queue_sel u32, device_features_sel u32, driver_features_sel u32,
//! driver_features u64, negotiated u64, status u32, interrupt_status u32,
//! config_generation u32, deferred u64; per queue: max_size u16, size u16, ready u8,
//! desc/avail/used u64, next_avail u16, next_used u16, signalled flag u8,
//! signalled_used u16; then the device state (length u32, bytes) and nothing after
//! it. Version 1 (still restored) ended with the device state unprefixed, as the rest
//! of the blob, so bytes appended to a blob could not be told from device state.
//!
//! Restore validates everything as if the guest had written it, and refuses a blob
//! for another device type or queue layout. Guest memory is not touched: call
//! [`MmioTransport::poll`] afterwards to re-drive the interrupt line.

use alloc::vec::Vec;

use vdev::{RestoreError, SaveRestore};

use super::MmioTransport;
use crate::defs::mmio;
use crate::device::VirtioDevice;
use crate::save::Reader;
use crate::shared::TransportCore;

impl<D: VirtioDevice> SaveRestore for MmioTransport<D> {
    const SAVE_ID: [u8; 4] = *b"VMMI";
    const SAVE_VERSION: u32 = 2;

    fn save(&self) -> Vec<u8> {
        let Self {
            core:
                TransportCore {
                    device,
                    queues,
                    queue_sel,
                    device_features_sel,
                    driver_features_sel,
                    driver_features,
                    negotiated,
                    status,
                    config_generation,
                    deferred,
                    // Host scheduling policy, the hypervisor's signal and a log
                    // name, not state (a restored `deferred` raises the signal of
                    // the restoring side).
                    budget: _,
                    work: _,
                    name: _,
                },
            // Wiring from the VM definition, not state.
            intid: _,
            interrupt_status,
        } = self;
        let mut out = Vec::new();
        out.extend_from_slice(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
        for v in [
            device.device_id(),
            queues.len() as u32,
            *queue_sel,
            *device_features_sel,
            *driver_features_sel,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&driver_features.to_le_bytes());
        out.extend_from_slice(&negotiated.to_le_bytes());
        for v in [status, interrupt_status, config_generation] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&deferred.to_le_bytes());
        for q in queues {
            q.save(&mut out);
        }
        let state = device.save_state();
        let len = u32::try_from(state.len()).expect("device state over 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&state);
        out
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (version, payload) = vdev::save::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut r = Reader::new(payload);
        if r.u32()? != self.core.device.device_id() {
            return Err(RestoreError::WrongDevice);
        }
        if r.u32()? as usize != self.core.queues.len() {
            return Err(RestoreError::Malformed);
        }
        let queue_sel = r.u32()?;
        let device_features_sel = r.u32()?;
        let driver_features_sel = r.u32()?;
        let driver_features = r.u64()?;
        let negotiated = r.u64()?;
        let status_reg = r.u32()?;
        let interrupt_status = r.u32()?;
        let config_generation = r.u32()?;
        let deferred = r.u64()?;

        let valid = interrupt_status & !(mmio::INT_USED_BUFFER | mmio::INT_CONFIG_CHANGE) == 0
            && self.core.restorable(status_reg, negotiated, deferred);
        if !valid {
            return Err(RestoreError::Malformed);
        }
        let mut queues = self.core.queues.clone();
        for q in &mut queues {
            q.restore(&mut r)?;
        }
        let state = if version == 1 {
            r.rest()
        } else {
            let len = r.u32()? as usize;
            let state = r.take(len)?;
            if !r.rest().is_empty() {
                return Err(RestoreError::Malformed);
            }
            state
        };
        let Self {
            core:
                TransportCore {
                    device,
                    queues: s_queues,
                    queue_sel: s_queue_sel,
                    device_features_sel: s_device_features_sel,
                    driver_features_sel: s_driver_features_sel,
                    driver_features: s_driver_features,
                    negotiated: s_negotiated,
                    status: s_status,
                    config_generation: s_config_generation,
                    deferred: s_deferred,
                    budget: _,
                    work,
                    name: _,
                },
            intid: _,
            interrupt_status: s_interrupt_status,
        } = self;
        // The device last, so a refused blob leaves the transport as it was.
        device.restore_state(state)?;
        *s_queues = queues;
        *s_queue_sel = queue_sel;
        *s_device_features_sel = device_features_sel;
        *s_driver_features_sel = driver_features_sel;
        *s_driver_features = driver_features;
        *s_negotiated = negotiated;
        *s_status = status_reg;
        *s_interrupt_status = interrupt_status;
        *s_config_generation = config_generation;
        *s_deferred = deferred;
        if deferred != 0 {
            if let Some(w) = work {
                w.raise();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::boxed::Box;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::console::Console;
    use crate::defs::{console, features, status};
    use crate::testing::{MemDisk, TestDriver, TEST_INTID};

    fn console_driver(out: Arc<Mutex<Vec<u8>>>) -> TestDriver<Console> {
        let dev = Console::new(Box::new(move |b: &[u8]| {
            out.lock().unwrap().extend_from_slice(b)
        }));
        TestDriver::new(dev, 1 << 20)
    }

    #[test]
    fn a_running_device_continues_after_restore() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut d = console_driver(out.clone());
        d.start(features::EVENT_IDX);
        let tx = d.alloc(3, 1);
        d.write_mem(tx, b"one");
        d.add_chain(console::TRANSMITQ, &[(tx, 3, false)]);
        d.notify(console::TRANSMITQ);
        d.transport.device_mut().push_input(b"pending");
        let blob = d.transport.save();

        // A fresh device in a copy of the guest's memory picks up where it stopped.
        let mut e = console_driver(out.clone());
        e.mem = d.mem.clone();
        e.queues = d.queues.clone();
        e.transport.restore(&blob).unwrap();
        assert_eq!(e.transport.save(), blob);
        assert_eq!(e.transport.device().pending_input(), 7);
        e.write_mem(tx, b"two");
        e.add_chain(console::TRANSMITQ, &[(tx, 3, false)]);
        e.notify(console::TRANSMITQ);
        assert_eq!(e.pop_used(console::TRANSMITQ), Some((0, 0)));
        assert_eq!(e.pop_used(console::TRANSMITQ), Some((1, 0)));
        assert_eq!(&out.lock().unwrap()[..], b"onetwo");
        let rx = e.alloc(16, 1);
        e.add_chain(console::RECEIVEQ, &[(rx, 16, true)]);
        e.notify(console::RECEIVEQ);
        assert_eq!(e.pop_used(console::RECEIVEQ), Some((0, 7)));
    }

    #[test]
    fn deferred_work_restored_raises_the_work_signal() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut d = console_driver(out.clone());
        d.transport.set_budget(crate::RunBudget {
            chains: 1,
            bytes: u64::MAX,
        });
        d.start(0);
        let tx = d.alloc(1, 1);
        for _ in 0..3 {
            d.add_chain(console::TRANSMITQ, &[(tx, 1, false)]);
        }
        d.notify(console::TRANSMITQ);
        assert!(vdev::MmioDevice::has_deferred_work(&d.transport));
        let blob = d.transport.save();

        let signal = vdev::WorkSignal::new();
        let dev = Console::new(Box::new(|_: &[u8]| {}));
        let mut e = TestDriver::new(dev, 1 << 20);
        e.transport =
            MmioTransport::new(Console::new(Box::new(|_: &[u8]| {})), e.transport.intid())
                .with_work_signal(signal.clone());
        e.transport.restore(&blob).unwrap();
        assert!(
            signal.is_raised(),
            "the hypervisor learns of the restored work"
        );
        assert!(vdev::MmioDevice::has_deferred_work(&e.transport));
    }

    #[test]
    fn bad_blobs_are_refused_and_change_nothing() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut d = console_driver(out.clone());
        d.start(0);
        let good = d.transport.save();
        let mut e = console_driver(out);
        let fresh = e.transport.save();
        let mut cases: Vec<(Vec<u8>, RestoreError)> = Vec::new();
        let mut wrong_id = good.clone();
        wrong_id[0] = b'X';
        cases.push((wrong_id, RestoreError::WrongDevice));
        let mut newer = good.clone();
        newer[4] = 3;
        cases.push((newer, RestoreError::UnsupportedVersion(3)));
        let mut other_device = good.clone();
        other_device[8] = 2;
        cases.push((other_device, RestoreError::WrongDevice));
        cases.push((good[..good.len() - 10].to_vec(), RestoreError::Malformed));
        // Status with reserved bits; NEEDS_RESET-free DRIVER_OK without FEATURES_OK.
        let status_at = 4 + 4 * 6 + 16;
        let mut bad_status = good.clone();
        bad_status[status_at] = 0x10;
        cases.push((bad_status, RestoreError::Malformed));
        let mut ok_without_features = good.clone();
        ok_without_features[status_at] = status::DRIVER_OK as u8;
        cases.push((ok_without_features, RestoreError::Malformed));
        // A ready queue with a size that is not a power of two.
        let queue0 = status_at + 12 + 8;
        let mut bad_size = good.clone();
        bad_size[queue0 + 2] = 3;
        bad_size[queue0 + 3] = 0;
        cases.push((bad_size, RestoreError::Malformed));
        // Too much saved console input (the blob ends with the empty state's length).
        let mut big = good[..good.len() - 4].to_vec();
        let too_much = crate::console::INPUT_CAPACITY + 1;
        big.extend((too_much as u32).to_le_bytes());
        big.extend(core::iter::repeat_n(b'x', too_much));
        cases.push((big, RestoreError::Malformed));
        for (i, (blob, want)) in cases.into_iter().enumerate() {
            assert_eq!(e.transport.restore(&blob), Err(want), "case {i}");
            assert_eq!(e.transport.save(), fresh, "case {i} changed state");
        }
    }

    #[test]
    fn version_1_blobs_still_restore() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut d = console_driver(out.clone());
        d.start(0);
        d.transport.device_mut().push_input(b"typed");
        let v2 = d.transport.save();
        // Version 1: the same fields, the device state unprefixed at the end.
        let state_at = v2.len() - 4 - b"typed".len();
        let mut v1 = v2[..state_at].to_vec();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"typed");
        let mut e = console_driver(out);
        e.transport.restore(&v1).unwrap();
        assert_eq!(e.transport.save(), v2, "a version-1 blob restores in full");
        // Version 1 cannot tell appended bytes from device state: they arrive as
        // console input, the reason for version 2.
        v1.push(b'!');
        e.transport.restore(&v1).unwrap();
        assert_eq!(e.transport.device().pending_input(), 6);
    }

    /// Every register and the first 64 bytes of configuration space as the driver
    /// reads them.
    fn probe_transport<D: VirtioDevice>(t: &mut MmioTransport<D>) -> Vec<u64> {
        let mut mem = vdev::VecMemory::new(0, 0);
        let mut irq = crate::testing::LevelIrq::default();
        let mut ctx = vdev::MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let regs = (0..mmio::CONFIG)
            .step_by(4)
            .map(|off| (off, vdev::AccessSize::Word));
        let config = (mmio::CONFIG..mmio::CONFIG + 64).map(|off| (off, vdev::AccessSize::Byte));
        regs.chain(config)
            .map(|(off, size)| vdev::MmioDevice::read(t, &mut ctx, off, size).unwrap_or(u64::MAX))
            .collect()
    }

    fn quiet_console() -> MmioTransport<Console> {
        MmioTransport::new(Console::new(Box::new(|_: &[u8]| {})), TEST_INTID)
    }

    /// A console started with EVENT_IDX, two transmits done, input waiting with no
    /// receive buffer, queue 0 selected.
    fn drive_console(t: &mut MmioTransport<Console>) {
        let mut d = TestDriver::new(Console::new(Box::new(|_: &[u8]| {})), 1 << 16);
        d.start(features::EVENT_IDX);
        let tx = d.alloc(3, 1);
        for _ in 0..2 {
            d.add_chain(console::TRANSMITQ, &[(tx, 3, false)]);
        }
        d.notify(console::TRANSMITQ);
        d.transport.device_mut().push_input(b"waiting");
        d.write_reg(mmio::QUEUE_SEL, 0);
        *t = d.transport;
    }

    vdev::save_restore_tests!(
        console_saved_state,
        make: quiet_console,
        drive: drive_console,
        probe: probe_transport,
    );

    /// Entropy for the tests: a counter.
    struct Counter(u8);
    impl crate::rng::EntropySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), crate::rng::EntropyError> {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    fn rng() -> MmioTransport<crate::rng::Rng> {
        MmioTransport::new(crate::rng::Rng::new(Box::new(Counter(0))), TEST_INTID)
    }

    /// An entropy device started, one request served.
    fn drive_rng(t: &mut MmioTransport<crate::rng::Rng>) {
        let mut d = TestDriver::new(crate::rng::Rng::new(Box::new(Counter(0))), 1 << 16);
        d.start(0);
        let buf = d.alloc(16, 1);
        d.add_chain(0, &[(buf, 16, true)]);
        d.notify(0);
        *t = d.transport;
    }

    vdev::save_restore_tests!(
        rng_saved_state,
        make: rng,
        drive: drive_rng,
        probe: probe_transport,
    );

    fn blk() -> MmioTransport<crate::blk::Blk<vdev::SyncBlock<MemDisk>>> {
        MmioTransport::new(
            crate::blk::Blk::new(vdev::SyncBlock(MemDisk::new(8, false))),
            TEST_INTID,
        )
    }

    /// A disk started with EVENT_IDX, one flush served, queue 0 selected.
    fn drive_blk(t: &mut MmioTransport<crate::blk::Blk<vdev::SyncBlock<MemDisk>>>) {
        let mut d = TestDriver::new(
            crate::blk::Blk::new(vdev::SyncBlock(MemDisk::new(8, false))),
            1 << 16,
        );
        d.start(features::EVENT_IDX);
        let hdr = d.alloc(16, 8);
        d.write_mem(hdr, &crate::defs::blk::T_FLUSH.to_le_bytes());
        let status = d.alloc(1, 1);
        d.add_chain(0, &[(hdr, 16, false), (status, 1, true)]);
        d.notify(0);
        d.write_reg(mmio::QUEUE_SEL, 0);
        *t = d.transport;
    }

    vdev::save_restore_tests!(
        blk_saved_state,
        make: blk,
        drive: drive_blk,
        probe: probe_transport,
    );
}
