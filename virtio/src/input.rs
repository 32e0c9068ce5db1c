//! virtio-input (virtio 1.2 §5.8): a keyboard or a tablet whose events the host
//! injects (RayOS is the only source of a guest's input).
//!
//! - **Config**: the driver writes `select` and `subsel`; the device answers with
//!   `size` and the union — ID_NAME, ID_SERIAL, ID_DEVIDS, PROP_BITS, EV_BITS (one
//!   event type's code bitmap per `subsel`) and ABS_INFO (one axis per `subsel`).
//!   Anything it has nothing for reads `size` 0. The answer is built once per
//!   `select`/`subsel` write, so the driver's byte-wise reads cost nothing.
//! - **eventq**: host reports queued with [`Input::push_report`] (a group of events
//!   that the device ends with SYN_REPORT) fill the driver's buffers, one
//!   `virtio_input_event` per buffer, as soon as buffers are there or on
//!   [`crate::MmioTransport::poll`].
//! - **statusq**: the driver's events back to the device; a keyboard keeps the LED
//!   state ([`Input::leds`]) for the host to show.
//!
//! Personalities: [`Input::keyboard`] (EV_KEY codes 1..=255, EV_REP, EV_LED NUML..KANA)
//! and [`Input::tablet`] (EV_ABS X/Y over the guest's pixels, BTN_LEFT/RIGHT/MIDDLE/
//! SIDE/EXTRA, REL_WHEEL/REL_HWHEEL).
//!
//! Bounds: at most [`EVENT_CAPACITY`] events wait for the guest. A report that does not
//! fit is dropped whole (never half a report, so the guest never sees a key press
//! without its SYN), counted in [`InputStats`] and logged at the 1st, 2nd, 4th, 8th …
//! drop, so a flood costs neither memory nor log lines. Buffers shorter than one event
//! complete empty (counted); status chains are read in one-event pieces up to
//! [`MAX_STATUS_EVENTS_PER_CHAIN`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::RestoreError;

use crate::chain::DescChain;
use crate::defs::{device_id, input as d, limits};
use crate::device::{put_u16, put_u32, read_config_bytes, DeviceError, QueueContext, VirtioDevice};

/// Most events waiting for the guest (a hundred-odd full pointer reports: far more
/// than a guest that reads its queue ever lets pile up).
pub const EVENT_CAPACITY: usize = 512;
/// Most events in one report (before the SYN_REPORT the device adds).
pub const MAX_REPORT_EVENTS: usize = 32;
/// Most status events read from one statusq chain; the rest of it is ignored.
pub const MAX_STATUS_EVENTS_PER_CHAIN: u32 = 64;
/// Saved-state identifier and layout version.
const SAVE_ID: [u8; 4] = *b"VINP";
const SAVE_VERSION: u32 = 1;
/// Largest key value: 0 release, 1 press, 2 autorepeat.
const KEY_VALUE_MAX: i32 = 2;

/// One `virtio_input_event` (evdev type, code, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub ty: u16,
    pub code: u16,
    pub value: i32,
}

impl Event {
    pub const fn new(ty: u16, code: u16, value: i32) -> Self {
        Event { ty, code, value }
    }

    /// The SYN_REPORT ending a report.
    pub const SYN: Event = Event::new(d::EV_SYN, d::SYN_REPORT, 0);

    /// Its wire form, little-endian.
    pub fn encode(&self) -> [u8; d::EVENT_SIZE] {
        let mut b = [0u8; d::EVENT_SIZE];
        b[0..2].copy_from_slice(&self.ty.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// From its wire form.
    pub fn decode(b: &[u8; d::EVENT_SIZE]) -> Self {
        Event {
            ty: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Which device this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Keyboard,
    /// An absolute pointer over a `width × height` guest screen: ABS_X in
    /// `0..width`, ABS_Y in `0..height` (one unit per guest pixel).
    Tablet {
        width: u32,
        height: u32,
    },
}

/// Why [`Input::push_report`] refused a report (nothing of it was queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectError {
    /// Event `index` is not one this device advertises (type, code, or value out of
    /// range); a host bug, counted in [`InputStats::rejected_reports`].
    Unsupported { index: usize },
    /// More than [`MAX_REPORT_EVENTS`] events.
    TooLong,
    /// The queue for the guest is full; the report was dropped and counted.
    Full,
}

/// What the device counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Events written into guest buffers.
    pub delivered: u64,
    /// Reports (and the events in them, SYN included) dropped because the queue was
    /// full.
    pub dropped_reports: u64,
    pub dropped_events: u64,
    /// Reports refused as unsupported or too long.
    pub rejected_reports: u64,
    /// eventq buffers too short for one event (completed empty).
    pub short_buffers: u64,
    /// statusq events the device did not use (not an LED of a keyboard, a partial
    /// event, or past [`MAX_STATUS_EVENTS_PER_CHAIN`]).
    pub status_ignored: u64,
    /// Bytes the driver wrote to read-only config fields (ignored).
    pub config_writes_ignored: u64,
}

/// A virtio-input device.
pub struct Input {
    personality: Personality,
    select: u8,
    subsel: u8,
    /// The config answer to `select`/`subsel` (rebuilt on every write of either).
    config: [u8; d::CFG_SIZE],
    pending: VecDeque<Event>,
    /// EV_LED state set by the driver, bit per LED code.
    leds: u32,
    stats: InputStats,
    queue_sizes: [u16; 2],
    /// The eventq chain being filled, kept between chains so that popping one
    /// reuses its segment lists instead of allocating (one per event otherwise,
    /// on the path of every pointer move).
    chain: DescChain,
}

/// Segments of the eventq chain kept between pops at most ([`Input`]'s `chain`).
const KEPT_SEGMENTS: usize = 8;

/// Whether the `n`th occurrence of something deserves a log line (1, 2, 4, 8, …).
fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

impl Input {
    fn new(personality: Personality) -> Self {
        let mut dev = Input {
            personality,
            select: d::CFG_UNSET,
            subsel: 0,
            config: [0; d::CFG_SIZE],
            pending: VecDeque::new(),
            leds: 0,
            stats: InputStats::default(),
            queue_sizes: [limits::DEFAULT_QUEUE_SIZE; 2],
            chain: DescChain::default(),
        };
        dev.rebuild_config();
        dev
    }

    /// A keyboard.
    pub fn keyboard() -> Self {
        Self::new(Personality::Keyboard)
    }

    /// A tablet over a `width × height` guest screen (each at least 1; 0 is taken
    /// as 1).
    pub fn tablet(width: u32, height: u32) -> Self {
        Self::new(Personality::Tablet {
            width: width.max(1),
            height: height.max(1),
        })
    }

    pub fn personality(&self) -> Personality {
        self.personality
    }

    /// The LEDs the driver set (bit `LED_*`).
    pub fn leds(&self) -> u32 {
        self.leds
    }

    pub fn stats(&self) -> InputStats {
        self.stats
    }

    /// Events waiting for guest buffers.
    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }

    fn name(&self) -> &'static [u8] {
        match self.personality {
            Personality::Keyboard => b"RayOS virtio keyboard",
            Personality::Tablet { .. } => b"RayOS virtio tablet",
        }
    }

    fn serial(&self) -> &'static [u8] {
        match self.personality {
            Personality::Keyboard => b"rayos-kbd-0",
            Personality::Tablet { .. } => b"rayos-tablet-0",
        }
    }

    /// ID_DEVIDS: bus, vendor ("RA"), product, version.
    fn devids(&self) -> [u16; 4] {
        let product = match self.personality {
            Personality::Keyboard => 1,
            Personality::Tablet { .. } => 2,
        };
        [d::BUS_VIRTUAL, u16::from_le_bytes(*b"RA"), product, 1]
    }

    /// The largest ABS value of `axis`, if this device has the axis.
    fn abs_max(&self, axis: u16) -> Option<i32> {
        let Personality::Tablet { width, height } = self.personality else {
            return None;
        };
        let len = match axis {
            d::ABS_X => width,
            d::ABS_Y => height,
            _ => return None,
        };
        Some(i32::try_from(len - 1).unwrap_or(i32::MAX))
    }

    /// Whether this device advertises `code` of event type `ty`.
    pub fn supports(&self, ty: u16, code: u16) -> bool {
        match (self.personality, ty) {
            (Personality::Keyboard, d::EV_KEY) => (d::KEY_FIRST..=d::KEY_LAST).contains(&code),
            (Personality::Keyboard, d::EV_REP) => matches!(code, d::REP_DELAY | d::REP_PERIOD),
            (Personality::Keyboard, d::EV_LED) => (d::LED_NUML..=d::LED_KANA).contains(&code),
            (Personality::Tablet { .. }, d::EV_KEY) => (d::BTN_LEFT..=d::BTN_EXTRA).contains(&code),
            (Personality::Tablet { .. }, d::EV_REL) => matches!(code, d::REL_WHEEL | d::REL_HWHEEL),
            (Personality::Tablet { .. }, d::EV_ABS) => self.abs_max(code).is_some(),
            _ => false,
        }
    }

    /// Whether the host may inject `e` (EV_SYN is the device's own, EV_LED and EV_REP
    /// only travel on the statusq).
    fn injectable(&self, e: &Event) -> bool {
        if !self.supports(e.ty, e.code) {
            return false;
        }
        match e.ty {
            d::EV_KEY => (0..=KEY_VALUE_MAX).contains(&e.value),
            d::EV_ABS => self
                .abs_max(e.code)
                .is_some_and(|max| (0..=max).contains(&e.value)),
            d::EV_REL => true,
            _ => false,
        }
    }

    /// Queues one report for the guest: `events` then SYN_REPORT, all or nothing.
    pub fn push_report(&mut self, events: &[Event]) -> Result<(), InjectError> {
        if events.len() > MAX_REPORT_EVENTS {
            self.stats.rejected_reports += 1;
            return Err(InjectError::TooLong);
        }
        if let Some(index) = events.iter().position(|e| !self.injectable(e)) {
            self.stats.rejected_reports += 1;
            if worth_logging(self.stats.rejected_reports) {
                log::warn!(
                    "virtio-input: unsupported event {:?} refused ({} reports so far)",
                    events[index],
                    self.stats.rejected_reports
                );
            }
            return Err(InjectError::Unsupported { index });
        }
        if self.pending.len() + events.len() + 1 > EVENT_CAPACITY {
            self.stats.dropped_reports += 1;
            self.stats.dropped_events += events.len() as u64 + 1;
            if worth_logging(self.stats.dropped_reports) {
                log::warn!(
                    "virtio-input: guest not reading events, {} reports ({} events) dropped so far",
                    self.stats.dropped_reports,
                    self.stats.dropped_events
                );
            }
            return Err(InjectError::Full);
        }
        self.pending.extend(events.iter().copied());
        self.pending.push_back(Event::SYN);
        Ok(())
    }

    fn rebuild_config(&mut self) {
        let mut c = [0u8; d::CFG_SIZE];
        c[d::CFG_SELECT] = self.select;
        c[d::CFG_SUBSEL] = self.subsel;
        let u = d::CFG_UNION;
        let size: usize = match self.select {
            d::CFG_ID_NAME | d::CFG_ID_SERIAL if self.subsel == 0 => {
                let s = if self.select == d::CFG_ID_NAME {
                    self.name()
                } else {
                    self.serial()
                };
                c[u..u + s.len()].copy_from_slice(s);
                s.len()
            }
            d::CFG_ID_DEVIDS if self.subsel == 0 => {
                for (i, v) in self.devids().into_iter().enumerate() {
                    put_u16(&mut c, u + 2 * i, v);
                }
                usize::from(d::DEVIDS_SIZE)
            }
            // No input properties on either personality: size 0.
            d::CFG_PROP_BITS => 0,
            d::CFG_EV_BITS => {
                let ty = u16::from(self.subsel);
                let mut last = 0;
                for code in 0..(d::CFG_UNION_SIZE * 8) as u16 {
                    if ty != d::EV_SYN && self.supports(ty, code) {
                        let byte = usize::from(code / 8);
                        c[u + byte] |= 1 << (code % 8);
                        last = byte + 1;
                    }
                }
                last
            }
            d::CFG_ABS_INFO => match self.abs_max(u16::from(self.subsel)) {
                Some(max) => {
                    // min 0, max, fuzz 0, flat 0, res 0.
                    put_u32(&mut c, u + 4, max as u32);
                    usize::from(d::ABSINFO_SIZE)
                }
                None => 0,
            },
            _ => 0,
        };
        c[d::CFG_SIZE_FIELD] = size as u8;
        self.config = c;
    }

    fn fill_eventq(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        let mut chain = core::mem::take(&mut self.chain);
        let r = self.fill_eventq_with(qc, &mut chain);
        // An event takes one segment; a driver's longer chain is not kept.
        if chain.readable.capacity() + chain.writable.capacity() <= KEPT_SEGMENTS {
            self.chain = chain;
        }
        r
    }

    /// [`Self::fill_eventq`] popping into `chain`.
    fn fill_eventq_with(
        &mut self,
        qc: &mut QueueContext,
        chain: &mut DescChain,
    ) -> Result<(), DeviceError> {
        while let Some(ev) = self.pending.front().copied() {
            if !qc.pop_into(d::EVENTQ, chain)? {
                break;
            }
            if chain.writable_len() < d::EVENT_SIZE as u64 {
                self.stats.short_buffers += 1;
                if worth_logging(self.stats.short_buffers) {
                    log::warn!(
                        "virtio-input: eventq buffer of {} bytes is shorter than an event ({} so far)",
                        chain.writable_len(),
                        self.stats.short_buffers
                    );
                }
                qc.push_used(d::EVENTQ, chain.head, 0)?;
                continue;
            }
            let mut w = chain.writer();
            w.write(qc.mem(), &ev.encode())?;
            self.pending.pop_front();
            self.stats.delivered += 1;
            qc.push_used(d::EVENTQ, chain.head, d::EVENT_SIZE as u32)?;
        }
        Ok(())
    }

    fn drain_statusq(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = qc.pop(d::STATUSQ)? {
            let mut r = chain.reader();
            let mut seen = 0;
            let mut ignored = 0u64;
            let mut b = [0u8; d::EVENT_SIZE];
            loop {
                if seen == MAX_STATUS_EVENTS_PER_CHAIN {
                    ignored += u64::from(r.remaining() > 0);
                    break;
                }
                let n = r.read(qc.mem(), &mut b)?;
                if n < d::EVENT_SIZE {
                    ignored += u64::from(n > 0);
                    break;
                }
                seen += 1;
                let e = Event::decode(&b);
                match e.ty {
                    d::EV_LED if self.supports(d::EV_LED, e.code) => {
                        let bit = 1u32 << e.code;
                        if e.value != 0 {
                            self.leds |= bit;
                        } else {
                            self.leds &= !bit;
                        }
                    }
                    d::EV_SYN => {}
                    _ => ignored += 1,
                }
            }
            if ignored > 0 {
                let before = self.stats.status_ignored;
                self.stats.status_ignored += ignored;
                if before.leading_zeros() != self.stats.status_ignored.leading_zeros() {
                    log::warn!(
                        "virtio-input: {} status events ignored so far",
                        self.stats.status_ignored
                    );
                }
            }
            qc.push_used(d::STATUSQ, chain.head, 0)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Input {
    fn device_id(&self) -> u32 {
        device_id::INPUT
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let mut wrote = false;
        for (i, &b) in data.iter().enumerate() {
            match offset.checked_add(i) {
                Some(d::CFG_SELECT) => self.select = b,
                Some(d::CFG_SUBSEL) => self.subsel = b,
                _ => {
                    self.stats.config_writes_ignored += 1;
                    if worth_logging(self.stats.config_writes_ignored) {
                        log::warn!(
                            "virtio-input: config write at {:#x} ignored ({} so far)",
                            offset.saturating_add(i),
                            self.stats.config_writes_ignored
                        );
                    }
                    continue;
                }
            }
            wrote = true;
        }
        if wrote {
            self.rebuild_config();
        }
    }

    fn process(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        match queue {
            d::EVENTQ => self.fill_eventq(qc),
            d::STATUSQ => self.drain_statusq(qc),
            _ => Ok(()),
        }
    }

    fn poll(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        self.fill_eventq(qc)
    }

    fn wants_poll(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The driver starts over: `select`/`subsel` and the LEDs go back to zero; events
    /// not yet delivered are kept.
    fn reset(&mut self) {
        self.select = d::CFG_UNSET;
        self.subsel = 0;
        self.leds = 0;
        self.rebuild_config();
    }

    /// Input queued for the previous guest is not delivered to the next one.
    fn power_on_reset(&mut self) {
        self.pending.clear();
    }

    fn save_state(&self) -> Vec<u8> {
        let Self {
            // Configuration chosen by the hypervisor, not device state.
            personality: _,
            queue_sizes: _,
            // Scratch memory, holding nothing between calls.
            chain: _,
            select,
            subsel,
            // Derived from personality, select and subsel.
            config: _,
            pending,
            leds,
            stats,
        } = self;
        let InputStats {
            delivered,
            dropped_reports,
            dropped_events,
            rejected_reports,
            short_buffers,
            status_ignored,
            config_writes_ignored,
        } = *stats;
        let mut w = Writer::new(SAVE_ID, SAVE_VERSION);
        w.u8(*select).u8(*subsel).u32(*leds);
        for v in [
            delivered,
            dropped_reports,
            dropped_events,
            rejected_reports,
            short_buffers,
            status_ignored,
            config_writes_ignored,
        ] {
            w.u64(v);
        }
        w.u32(pending.len() as u32);
        for e in pending {
            w.u16(e.ty).u16(e.code).u32(e.value as u32);
        }
        w.finish()
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_, mut r) = Reader::open(blob, SAVE_ID, SAVE_VERSION)?;
        let select = r.u8()?;
        let subsel = r.u8()?;
        let leds = r.u32()?;
        let led_mask = (1u32 << (d::LED_KANA + 1)) - 1;
        if leds & !led_mask != 0 || (leds != 0 && self.personality != Personality::Keyboard) {
            return Err(RestoreError::Malformed);
        }
        let stats = InputStats {
            delivered: r.u64()?,
            dropped_reports: r.u64()?,
            dropped_events: r.u64()?,
            rejected_reports: r.u64()?,
            short_buffers: r.u64()?,
            status_ignored: r.u64()?,
            config_writes_ignored: r.u64()?,
        };
        let count = r.u32()? as usize;
        if count > EVENT_CAPACITY {
            return Err(RestoreError::Malformed);
        }
        let mut pending = VecDeque::with_capacity(count);
        for _ in 0..count {
            let e = Event::new(r.u16()?, r.u16()?, r.u32()? as i32);
            if e != Event::SYN && !self.injectable(&e) {
                return Err(RestoreError::Malformed);
            }
            pending.push_back(e);
        }
        r.end()?;
        self.select = select;
        self.subsel = subsel;
        self.leds = leds;
        self.stats = stats;
        self.pending = pending;
        self.rebuild_config();
        Ok(())
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
