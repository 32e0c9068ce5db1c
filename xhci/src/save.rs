//! The controller's saved state: registers, the event ring producer, ports, slots
//! with their contexts and rings, and the devices' protocol state (not their
//! backends: a storage device's medium is the host's). A restore checks every field
//! a later access relies on and changes nothing when it refuses.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{AsyncBlock, RestoreError, SaveRestore};

use crate::controller::{
    Controller, Endpoint, EventRing, Slot, ERST_MAX_LOG2, MAX_SEGMENT_TRBS, MIN_SEGMENT_TRBS,
};
use crate::defs::{portsc, usbcmd, usbsts};
use crate::hid::{TabletInput, MAX_QUEUED_REPORTS, TABLET_MAX};
use crate::storage::{Phase, MAX_BUFFERED};
use crate::trb::Ring;
use crate::usb::{Core, Device};

const M: RestoreError = RestoreError::Malformed;

fn check(ok: bool) -> Result<(), RestoreError> {
    if ok {
        Ok(())
    } else {
        Err(M)
    }
}

fn put_ring(w: &mut Writer, r: &Ring) {
    w.u64(r.dequeue).flag(r.cycle);
}

fn get_ring(r: &mut Reader) -> Result<Ring, RestoreError> {
    let dequeue = r.u64()?;
    check(dequeue & 0xf == 0)?;
    Ok(Ring {
        dequeue,
        cycle: r.flag()?,
    })
}

fn put_core(w: &mut Writer, c: &Core) {
    w.u8(c.address)
        .u8(c.configuration)
        .u32(c.halted)
        .flag(c.remote_wakeup);
}

fn get_core(r: &mut Reader, speed: u32) -> Result<Core, RestoreError> {
    let address = r.u8()?;
    let configuration = r.u8()?;
    check(address <= 127 && configuration <= 1)?;
    Ok(Core {
        address,
        configuration,
        halted: r.u32()?,
        remote_wakeup: r.flag()?,
        speed,
    })
}

/// A device's saved state, decoded before anything changes.
enum DeviceState {
    None,
    Keyboard {
        core: Core,
        idle: u8,
        protocol: u8,
        leds: u8,
        modifiers: u8,
        keys: Vec<u8>,
        queue: VecDeque<[u8; 8]>,
    },
    Tablet {
        core: Core,
        idle: u8,
        protocol: u8,
        last: TabletInput,
        queue: VecDeque<[u8; 6]>,
    },
    Storage {
        core: Core,
        phase: Phase,
        tag: u32,
        residue: u32,
        status: u8,
        sense: (u8, u8, u8),
        data_failed: Option<(u8, (u8, u8))>,
    },
}

const KIND_NONE: u8 = 0;
const KIND_KEYBOARD: u8 = 1;
const KIND_TABLET: u8 = 2;
const KIND_STORAGE: u8 = 3;

fn put_device<B: AsyncBlock>(w: &mut Writer, d: Option<&Device<B>>) {
    match d {
        None => {
            w.u8(KIND_NONE);
        }
        Some(Device::Keyboard(k)) => {
            w.u8(KIND_KEYBOARD);
            put_core(w, &k.core);
            w.u8(k.idle).u8(k.protocol).u8(k.leds).u8(k.modifiers);
            w.bytes(&k.keys);
            w.u32(k.queue.len() as u32);
            for q in &k.queue {
                w.u64(u64::from_le_bytes(*q));
            }
        }
        Some(Device::Tablet(t)) => {
            w.u8(KIND_TABLET);
            put_core(w, &t.core);
            w.u8(t.idle).u8(t.protocol);
            w.u16(t.last.x)
                .u16(t.last.y)
                .u8(t.last.buttons)
                .u8(t.last.wheel as u8);
            w.u32(t.queue.len() as u32);
            for q in &t.queue {
                w.bytes(q);
            }
        }
        Some(Device::Storage(s)) => {
            w.u8(KIND_STORAGE);
            put_core(w, &s.core);
            match &s.phase {
                Phase::Command => {
                    w.u8(0);
                }
                Phase::DataIn {
                    data,
                    disk_offset,
                    disk_left,
                } => {
                    w.u8(1).bytes(data).u64(*disk_offset).u64(*disk_left);
                }
                Phase::DataOut {
                    write,
                    disk_offset,
                    left,
                    partial,
                } => {
                    w.u8(2)
                        .flag(*write)
                        .u64(*disk_offset)
                        .u64(*left)
                        .bytes(partial);
                }
                Phase::Status => {
                    w.u8(3);
                }
                Phase::Flush { dir_in, host_len } => {
                    w.u8(5).flag(*dir_in).u64(*host_len);
                }
                Phase::ResetRecovery => {
                    w.u8(4);
                }
            }
            w.u32(s.tag).u32(s.residue).u8(s.status);
            w.u8(s.sense.0).u8(s.sense.1).u8(s.sense.2);
            let (failed, key, (asc, ascq)) = match s.data_failed {
                Some((k, a)) => (true, k, a),
                None => (false, 0, (0, 0)),
            };
            w.flag(failed).u8(key).u8(asc).u8(ascq);
        }
    }
}

fn get_device(r: &mut Reader, speed: u32) -> Result<DeviceState, RestoreError> {
    Ok(match r.u8()? {
        KIND_NONE => DeviceState::None,
        KIND_KEYBOARD => {
            let core = get_core(r, speed)?;
            let (idle, protocol, leds, modifiers) = (r.u8()?, r.u8()?, r.u8()?, r.u8()?);
            check(protocol <= 1 && leds <= 0x1f)?;
            let keys = r.bytes(256)?.to_vec();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            sorted.dedup();
            check(
                sorted.len() == keys.len()
                    && keys.iter().all(|&k| k > 3 && !(0xe0..=0xe7).contains(&k)),
            )?;
            let n = r.u32()? as usize;
            check(n <= MAX_QUEUED_REPORTS)?;
            let mut queue = VecDeque::new();
            for _ in 0..n {
                queue.push_back(r.u64()?.to_le_bytes());
            }
            DeviceState::Keyboard {
                core,
                idle,
                protocol,
                leds,
                modifiers,
                keys,
                queue,
            }
        }
        KIND_TABLET => {
            let core = get_core(r, speed)?;
            let (idle, protocol) = (r.u8()?, r.u8()?);
            let last = TabletInput {
                x: r.u16()?,
                y: r.u16()?,
                buttons: r.u8()?,
                wheel: r.u8()? as i8,
            };
            check(
                protocol <= 1
                    && last.x <= TABLET_MAX
                    && last.y <= TABLET_MAX
                    && last.buttons <= 7
                    && last.wheel == 0,
            )?;
            let n = r.u32()? as usize;
            check(n <= MAX_QUEUED_REPORTS)?;
            let mut queue = VecDeque::new();
            for _ in 0..n {
                let b = r.bytes(6)?;
                check(b.len() == 6)?;
                let mut q = [0u8; 6];
                q.copy_from_slice(b);
                queue.push_back(q);
            }
            DeviceState::Tablet {
                core,
                idle,
                protocol,
                last,
                queue,
            }
        }
        KIND_STORAGE => {
            let core = get_core(r, speed)?;
            let phase = match r.u8()? {
                0 => Phase::Command,
                1 => {
                    let data = r.bytes(MAX_BUFFERED)?.to_vec();
                    let disk_offset = r.u64()?;
                    let disk_left = r.u64()?;
                    check(
                        disk_offset % 512 == 0
                            && disk_left % 512 == 0
                            && disk_offset.checked_add(disk_left).is_some(),
                    )?;
                    Phase::DataIn {
                        data,
                        disk_offset,
                        disk_left,
                    }
                }
                2 => {
                    let write = r.flag()?;
                    let disk_offset = r.u64()?;
                    let left = r.u64()?;
                    let partial = r.bytes(MAX_BUFFERED)?.to_vec();
                    check(disk_offset % 512 == 0 && disk_offset.checked_add(left).is_some())?;
                    Phase::DataOut {
                        write,
                        disk_offset,
                        left,
                        partial,
                    }
                }
                3 => Phase::Status,
                4 => Phase::ResetRecovery,
                5 => {
                    let dir_in = r.flag()?;
                    let host_len = r.u64()?;
                    check(host_len <= u64::from(u32::MAX))?;
                    Phase::Flush { dir_in, host_len }
                }
                _ => return Err(M),
            };
            let (tag, residue, status) = (r.u32()?, r.u32()?, r.u8()?);
            check(status <= 2)?;
            let sense = (r.u8()?, r.u8()?, r.u8()?);
            let failed = r.flag()?;
            let f = (r.u8()?, (r.u8()?, r.u8()?));
            check(failed || f == (0, (0, 0)))?;
            let data_failed = failed.then_some(f);
            DeviceState::Storage {
                data_failed,
                core,
                phase,
                tag,
                residue,
                status,
                sense,
            }
        }
        _ => return Err(M),
    })
}

fn apply_device<B: AsyncBlock>(d: &mut Option<Device<B>>, s: DeviceState) {
    match (d, s) {
        (_, DeviceState::None) => {}
        (
            Some(Device::Keyboard(k)),
            DeviceState::Keyboard {
                core,
                idle,
                protocol,
                leds,
                modifiers,
                keys,
                queue,
            },
        ) => {
            k.core = core;
            k.idle = idle;
            k.protocol = protocol;
            k.leds = leds;
            k.modifiers = modifiers;
            k.keys = keys;
            k.queue = queue;
        }
        (
            Some(Device::Tablet(t)),
            DeviceState::Tablet {
                core,
                idle,
                protocol,
                last,
                queue,
            },
        ) => {
            t.core = core;
            t.idle = idle;
            t.protocol = protocol;
            t.last = last;
            t.queue = queue;
        }
        (
            Some(Device::Storage(m)),
            DeviceState::Storage {
                core,
                phase,
                tag,
                residue,
                status,
                sense,
                data_failed,
            },
        ) => {
            m.data_failed = data_failed;
            m.core = core;
            m.phase = phase;
            m.tag = tag;
            m.residue = residue;
            m.status = status;
            m.sense = sense;
            m.restored();
        }
        // Checked before: kinds match.
        _ => {}
    }
}

fn kind_of<B: AsyncBlock>(d: Option<&Device<B>>) -> u8 {
    match d {
        None => KIND_NONE,
        Some(Device::Keyboard(_)) => KIND_KEYBOARD,
        Some(Device::Tablet(_)) => KIND_TABLET,
        Some(Device::Storage(_)) => KIND_STORAGE,
    }
}

fn state_kind(s: &DeviceState) -> u8 {
    match s {
        DeviceState::None => KIND_NONE,
        DeviceState::Keyboard { .. } => KIND_KEYBOARD,
        DeviceState::Tablet { .. } => KIND_TABLET,
        DeviceState::Storage { .. } => KIND_STORAGE,
    }
}

/// Port state bits a saved PORTSC may hold.
const PORT_BITS: u32 =
    portsc::PED | portsc::PLS_MASK | portsc::PIC_MASK | portsc::WAKE_MASK | portsc::CHANGE;

impl<B: AsyncBlock> SaveRestore for Controller<B> {
    const SAVE_ID: [u8; 4] = *b"XHCI";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u32(self.usbcmd).u32(self.usbsts).u32(self.dnctrl);
        put_ring(&mut w, &self.cmd_ring);
        w.flag(self.crr)
            .flag(self.cmd_deferred)
            .u64(self.dcbaap)
            .u8(self.max_slots_en);
        w.u32(self.iman)
            .u32(self.imod)
            .u32(self.erstsz)
            .u64(self.erstba)
            .u64(self.erdp);
        w.flag(self.ehb).flag(self.kick);
        let er = &self.er;
        w.u32(er.segments.len() as u32);
        for &(base, size) in &er.segments {
            w.u64(base).u32(size);
        }
        w.u32(er.seg as u32)
            .u32(er.index)
            .flag(er.cycle)
            .flag(er.loaded)
            .flag(er.full)
            .u64(er.dropped);
        w.u8(self.ports.len() as u8);
        for p in &self.ports {
            w.u32(p.sc).flag(p.event_pending);
            put_device(&mut w, p.device.as_ref());
        }
        w.u8((self.slots.len() - 1) as u8);
        for s in &self.slots[1..] {
            w.flag(s.enabled);
            if !s.enabled {
                continue;
            }
            w.u64(s.output);
            for v in s.ctx {
                w.u32(v);
            }
            for e in &s.eps {
                for v in e.ctx {
                    w.u32(v);
                }
                put_ring(&mut w, &e.ring);
                w.flag(e.waiting).flag(e.deferred);
            }
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let usbcmd = r.masked_u32(usbcmd::WRITABLE)?;
        let usbsts = r.masked_u32(usbsts::RW1C | usbsts::HCE)?;
        let dnctrl = r.masked_u32(0xffff)?;
        let cmd_ring = get_ring(&mut r)?;
        let crr = r.flag()?;
        let cmd_deferred = r.flag()?;
        let dcbaap = r.u64()?;
        check(dcbaap & 0x3f == 0)?;
        let max_slots_en = r.u8()?;
        check(max_slots_en <= self.cfg.max_slots)?;
        let iman = r.masked_u32(0b11)?;
        let imod = r.u32()?;
        let erstsz = r.masked_u32(0xffff)?;
        let erstba = r.u64()?;
        let erdp = r.u64()?;
        check(erstba & 0x3f == 0 && erdp & 0xf == 0)?;
        let ehb = r.flag()?;
        let kick = r.flag()?;
        let nseg = r.u32()? as usize;
        check(nseg <= 1 << ERST_MAX_LOG2)?;
        let mut segments = Vec::new();
        for _ in 0..nseg {
            let base = r.u64()?;
            let size = r.u32()?;
            check(
                base & 0x3f == 0
                    && (MIN_SEGMENT_TRBS..=MAX_SEGMENT_TRBS).contains(&size)
                    && base.checked_add(u64::from(size) * 16).is_some(),
            )?;
            segments.push((base, size));
        }
        let seg = r.u32()? as usize;
        let index = r.u32()?;
        let (cycle, loaded, full, dropped) = (r.flag()?, r.flag()?, r.flag()?, r.u64()?);
        if segments.is_empty() {
            check(seg == 0 && index == 0 && !full)?;
        } else {
            check(seg < segments.len() && index < segments[seg].1)?;
        }
        let er = EventRing {
            segments,
            seg,
            index,
            cycle,
            loaded,
            full,
            dropped,
        };
        check(usize::from(r.u8()?) == self.ports.len())?;
        let mut ports = Vec::new();
        for p in &self.ports {
            let sc = r.u32()?;
            check(sc & !PORT_BITS == 0)?;
            let pending = r.flag()?;
            let speed = p.device.as_ref().map_or(0, |d| d.core().speed);
            let dev = get_device(&mut r, speed)?;
            check(state_kind(&dev) == kind_of(p.device.as_ref()))?;
            ports.push((sc, pending, dev));
        }
        check(usize::from(r.u8()?) + 1 == self.slots.len())?;
        let mut slots = alloc::vec![Slot::default()];
        for _ in 1..self.slots.len() {
            if !r.flag()? {
                slots.push(Slot::default());
                continue;
            }
            let mut s = Slot {
                enabled: true,
                output: r.u64()?,
                ..Slot::default()
            };
            check(s.output & 0x3f == 0)?;
            for v in s.ctx.iter_mut() {
                *v = r.u32()?;
            }
            for e in s.eps.iter_mut() {
                let mut ep = Endpoint::default();
                for v in ep.ctx.iter_mut() {
                    *v = r.u32()?;
                }
                ep.ring = get_ring(&mut r)?;
                ep.waiting = r.flag()?;
                ep.deferred = r.flag()?;
                *e = ep;
            }
            slots.push(s);
        }
        r.end()?;
        self.usbcmd = usbcmd;
        self.usbsts = usbsts;
        self.dnctrl = dnctrl;
        self.cmd_ring = cmd_ring;
        self.crr = crr;
        self.cmd_deferred = cmd_deferred;
        self.dcbaap = dcbaap;
        self.max_slots_en = max_slots_en;
        self.iman = iman;
        self.imod = imod;
        self.erstsz = erstsz;
        self.erstba = erstba;
        self.erdp = erdp;
        self.ehb = ehb;
        self.kick = kick;
        self.er = er;
        for (p, (sc, pending, dev)) in self.ports.iter_mut().zip(ports) {
            p.sc = sc;
            p.event_pending = pending;
            apply_device(&mut p.device, dev);
        }
        self.slots = slots;
        Ok(())
    }
}
