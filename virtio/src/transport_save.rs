//! Save/restore of an [`MmioTransport`]: its registers, every queue's configuration
//! and indices, and the device's own state ([`VirtioDevice::save_state`]).
//!
//! Layout, version 1, little-endian: `"VMMI"`, version u32, device id u32, queue
//! count u32, queue_sel u32, device_features_sel u32, driver_features_sel u32,
//! driver_features u64, negotiated u64, status u32, interrupt_status u32,
//! config_generation u32, deferred u64; per queue: max_size u16, size u16, ready u8,
//! desc/avail/used u64, next_avail u16, next_used u16, signalled flag u8,
//! signalled_used u16; then the device state (the rest of the blob).
//!
//! Restore validates everything as if the guest had written it, and refuses a blob
//! for another device type or queue layout. Guest memory is not touched: call
//! [`MmioTransport::poll`] afterwards to re-drive the interrupt line.

use alloc::vec::Vec;

use vdev::{RestoreError, SaveRestore};

use super::MmioTransport;
use crate::defs::{features, mmio, status};
use crate::device::VirtioDevice;
use crate::save::Reader;

impl<D: VirtioDevice> SaveRestore for MmioTransport<D> {
    const SAVE_ID: [u8; 4] = *b"VMMI";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
        for v in [
            self.device.device_id(),
            self.queues.len() as u32,
            self.queue_sel,
            self.device_features_sel,
            self.driver_features_sel,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.driver_features.to_le_bytes());
        out.extend_from_slice(&self.negotiated.to_le_bytes());
        for v in [self.status, self.interrupt_status, self.config_generation] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.deferred.to_le_bytes());
        for q in &self.queues {
            q.save(&mut out);
        }
        out.extend_from_slice(&self.device.save_state());
        out
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, payload) = vdev::save::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut r = Reader::new(payload);
        if r.u32()? != self.device.device_id() {
            return Err(RestoreError::WrongDevice);
        }
        if r.u32()? as usize != self.queues.len() {
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

        let offered = self.offered_features();
        let features_ok = status_reg & status::FEATURES_OK != 0;
        let valid = status_reg & !(status::DRIVER_BITS | status::DEVICE_NEEDS_RESET) == 0
            && interrupt_status & !(mmio::INT_USED_BUFFER | mmio::INT_CONFIG_CHANGE) == 0
            && (!features_ok
                || (negotiated & !offered == 0 && negotiated & features::VERSION_1 != 0))
            && (status_reg & status::DRIVER_OK == 0 || features_ok)
            && deferred.checked_shr(self.queues.len() as u32).unwrap_or(0) == 0;
        if !valid {
            return Err(RestoreError::Malformed);
        }
        let mut queues = self.queues.clone();
        for q in &mut queues {
            q.restore(&mut r)?;
        }
        // The device last, so a refused blob leaves the transport as it was.
        self.device.restore_state(r.rest())?;
        self.queues = queues;
        self.queue_sel = queue_sel;
        self.device_features_sel = device_features_sel;
        self.driver_features_sel = driver_features_sel;
        self.driver_features = driver_features;
        self.negotiated = negotiated;
        self.status = status_reg;
        self.interrupt_status = interrupt_status;
        self.config_generation = config_generation;
        self.deferred = deferred;
        if deferred != 0 {
            if let Some(w) = &self.work {
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
    use crate::defs::console;
    use crate::testing::TestDriver;

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
        newer[4] = 2;
        cases.push((newer, RestoreError::UnsupportedVersion(2)));
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
        // Too much saved console input.
        let mut big = good.clone();
        big.extend(core::iter::repeat_n(
            b'x',
            crate::console::INPUT_CAPACITY + 1,
        ));
        cases.push((big, RestoreError::Malformed));
        for (i, (blob, want)) in cases.into_iter().enumerate() {
            assert_eq!(e.transport.restore(&blob), Err(want), "case {i}");
            assert_eq!(e.transport.save(), fresh, "case {i} changed state");
        }
    }
}
