//! Save/restore of the ITS through `vdev::SaveRestore` (`VITS`, version 1): its
//! registers and the translations it keeps in hypervisor memory (the mapped devices
//! with their events, the collections). The LPIs the translations made pending are
//! the vGIC's (its LPI section); commands the guest queued and the ITS has not run
//! are in guest memory, between GITS_CREADR and GITS_CWRITER, and run after a
//! restore when the guest next writes GITS_CWRITER or reads GITS_CREADR.
//!
//! Layout, little-endian: the header; vCPU count u32 (must match); GITS_CTLR.Enabled
//! u8, GITS_CREADR.Stalled u8; GITS_CBASER, GITS_CWRITER, GITS_CREADR (offset),
//! GITS_BASER0, GITS_BASER1, u64 each; the mapped collections: count u32, then
//! (ICID u32, vCPU u32) in ascending ICID order; the mapped devices: count u32, then
//! per device in ascending DeviceID order DeviceID u32, EventID bits u8, event
//! count u32 and per event in ascending EventID order EventID u32, pINTID u32,
//! ICID u32.
//!
//! Restore validates everything as if a guest had written it: register bits no
//! write could set, a GITS_CREADR outside its queue, DeviceIDs, EventIDs, ICIDs and
//! vCPUs out of range, pINTIDs that are no LPI, unsorted or repeated entries, and
//! more devices or events than [`limits`] allow are refused, and a refused blob
//! changes nothing.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;
use vdev::save::{Reader, Writer};
use vdev::{RestoreError, SaveRestore};

use super::{
    baser_writable, cbaser_writable, limits, Device, Ite, Its, GITS_BASER, GITS_CBASER, GITS_CQ,
};
use crate::lpi::is_lpi;

/// Why a blob was refused, for the log line.
fn refuse(why: &str) -> RestoreError {
    log::warn!("its: restore refused: {why}");
    RestoreError::Malformed
}

/// Checks that `id` comes after the previous entry's (`prev`), and records it.
fn ascending(prev: &mut Option<u32>, id: u32) -> Result<(), RestoreError> {
    if prev.is_some_and(|p| id <= p) {
        return Err(refuse("entries not in ascending order"));
    }
    *prev = Some(id);
    Ok(())
}

impl SaveRestore for Its {
    const SAVE_ID: [u8; 4] = *b"VITS";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            num_vcpus,
            // From the VM definition.
            ram: _,
            enabled,
            cbaser,
            cwriter,
            creadr,
            stalled,
            baser,
            devices,
            collections,
            // Derived from `devices`.
            events: _,
            // Statistics for the log and tests, not guest-visible state.
            errors: _,
            last_error: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u32(*num_vcpus as u32)
            .flag(*enabled)
            .flag(*stalled)
            .u64(*cbaser)
            .u64(*cwriter)
            .u64(*creadr)
            .u64(baser[0])
            .u64(baser[1]);
        let mapped: Vec<(usize, usize)> = collections
            .iter()
            .enumerate()
            .filter_map(|(icid, t)| t.map(|t| (icid, t)))
            .collect();
        w.u32(mapped.len() as u32);
        for (icid, vcpu) in mapped {
            w.u32(icid as u32).u32(vcpu as u32);
        }
        w.u32(devices.len() as u32);
        for (id, d) in devices {
            let Device { event_bits, events } = d;
            w.u32(*id).u8(*event_bits as u8).u32(events.len() as u32);
            for (ev, Ite { lpi, icid }) in events {
                w.u32(*ev).u32(*lpi).u32(*icid);
            }
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut new = Its::new(self.num_vcpus, &self.ram);
        if r.u32()? as usize != self.num_vcpus {
            return Err(refuse("saved for another vCPU count"));
        }
        new.enabled = r.flag()?;
        new.stalled = r.flag()?;
        new.cbaser = r.u64()?;
        new.cwriter = r.u64()?;
        new.creadr = r.u64()?;
        new.baser = [r.u64()?, r.u64()?];
        let offset_bits = GITS_CQ::Offset.mask << GITS_CQ::Offset.shift;
        let cb = LocalRegisterCopy::<u64, GITS_CBASER::Register>::new(new.cbaser);
        let queue = (cb.read(GITS_CBASER::Size) + 1) * limits::QUEUE_PAGE;
        if new.cbaser & !cbaser_writable() != 0
            || new.cwriter & !offset_bits != 0
            || new.creadr & !offset_bits != 0
            || new.creadr >= queue
        {
            return Err(refuse("command queue registers"));
        }
        for b in new.baser {
            let v = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(b);
            if b & !baser_writable() != 0
                || v.read_as_enum::<GITS_BASER::Page_Size::Value>(GITS_BASER::Page_Size)
                    .is_none()
            {
                return Err(refuse("GITS_BASER"));
            }
        }
        let n = r.u32()? as usize;
        if n > new.collections.len() {
            return Err(refuse("collection count"));
        }
        let mut prev = None;
        for _ in 0..n {
            let icid = r.u32()?;
            let vcpu = r.u32()? as usize;
            ascending(&mut prev, icid)?;
            if icid as usize >= new.collections.len() || vcpu >= self.num_vcpus {
                return Err(refuse("collection out of range"));
            }
            new.collections[icid as usize] = Some(vcpu);
        }
        let n = r.u32()? as usize;
        if n > limits::MAX_DEVICES {
            return Err(refuse("device count"));
        }
        let mut prev_dev = None;
        for _ in 0..n {
            let id = r.u32()?;
            ascending(&mut prev_dev, id)?;
            let event_bits = u32::from(r.u8()?);
            let count = r.u32()? as usize;
            if id >> limits::DEVICE_ID_BITS != 0
                || !(1..=limits::EVENT_ID_BITS).contains(&event_bits)
                || count > limits::MAX_EVENTS - new.events
            {
                return Err(refuse("device out of range"));
            }
            let mut events = BTreeMap::new();
            let mut prev_ev = None;
            for _ in 0..count {
                let ev = r.u32()?;
                let lpi = r.u32()?;
                let icid = r.u32()?;
                ascending(&mut prev_ev, ev)?;
                if ev >> event_bits != 0 || !is_lpi(lpi) || icid as usize >= new.collections.len() {
                    return Err(refuse("event out of range"));
                }
                events.insert(ev, Ite { lpi, icid });
            }
            new.events += count;
            new.devices.insert(id, Device { event_bits, events });
        }
        r.end()?;
        new.errors = self.errors;
        new.last_error = self.last_error;
        *self = new;
        Ok(())
    }
}
