//! virtio-input tests through the MMIO transport, read the way Linux's virtio_input
//! driver probes and uses the device.

use super::*;
use crate::defs::mmio;
use crate::testing::TestDriver;
use vdev::AccessSize;

fn driver(dev: Input) -> TestDriver<Input> {
    let mut d = TestDriver::new(dev, 1 << 20);
    d.start(0);
    d
}

/// What a driver sees after writing `select`/`subsel` with byte writes: `size` and the
/// union, read byte by byte.
fn query(d: &mut TestDriver<Input>, select: u8, subsel: u8) -> Vec<u8> {
    let base = mmio::CONFIG;
    d.try_write(
        base + d::CFG_SELECT as u64,
        AccessSize::Byte,
        u64::from(select),
    )
    .unwrap();
    d.try_write(
        base + d::CFG_SUBSEL as u64,
        AccessSize::Byte,
        u64::from(subsel),
    )
    .unwrap();
    let size = d
        .try_read(base + d::CFG_SIZE_FIELD as u64, AccessSize::Byte)
        .unwrap() as usize;
    (0..size)
        .map(|i| {
            d.try_read(base + (d::CFG_UNION + i) as u64, AccessSize::Byte)
                .unwrap() as u8
        })
        .collect()
}

/// The codes set in an EV_BITS bitmap.
fn codes(bitmap: &[u8]) -> Vec<u16> {
    (0..bitmap.len() * 8)
        .filter(|&c| bitmap[c / 8] & (1 << (c % 8)) != 0)
        .map(|c| c as u16)
        .collect()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn keyboard_config_reads_as_a_driver_probes_it() {
    let mut d = driver(Input::keyboard());
    assert_eq!(d.read_reg(mmio::DEVICE_ID), device_id::INPUT);
    assert_eq!(query(&mut d, d::CFG_ID_NAME, 0), b"RayOS virtio keyboard");
    assert_eq!(query(&mut d, d::CFG_ID_SERIAL, 0), b"rayos-kbd-0");
    let ids = query(&mut d, d::CFG_ID_DEVIDS, 0);
    assert_eq!(ids.len(), usize::from(d::DEVIDS_SIZE));
    assert_eq!(u16::from_le_bytes([ids[0], ids[1]]), d::BUS_VIRTUAL);
    assert_eq!(u16::from_le_bytes([ids[4], ids[5]]), 1);
    assert!(query(&mut d, d::CFG_PROP_BITS, 0).is_empty());
    let keys = codes(&query(&mut d, d::CFG_EV_BITS, d::EV_KEY as u8));
    assert_eq!(keys, (d::KEY_FIRST..=d::KEY_LAST).collect::<Vec<_>>());
    assert_eq!(
        codes(&query(&mut d, d::CFG_EV_BITS, d::EV_REP as u8)),
        [d::REP_DELAY, d::REP_PERIOD]
    );
    assert_eq!(
        codes(&query(&mut d, d::CFG_EV_BITS, d::EV_LED as u8)),
        (d::LED_NUML..=d::LED_KANA).collect::<Vec<_>>()
    );
    for ty in [d::EV_SYN, d::EV_REL, d::EV_ABS, 0x1f] {
        assert!(query(&mut d, d::CFG_EV_BITS, ty as u8).is_empty(), "{ty}");
    }
    assert!(query(&mut d, d::CFG_ABS_INFO, d::ABS_X as u8).is_empty());
    // Unknown selects and subsels the union does not have answer size 0.
    assert!(query(&mut d, 0x7f, 0).is_empty());
    assert!(query(&mut d, d::CFG_ID_NAME, 1).is_empty());
    assert!(query(&mut d, d::CFG_UNSET, 0).is_empty());
}

#[test]
fn tablet_config_has_axes_over_the_guest_screen_buttons_and_wheel() {
    let mut d = driver(Input::tablet(1280, 800));
    assert_eq!(query(&mut d, d::CFG_ID_NAME, 0), b"RayOS virtio tablet");
    assert_eq!(
        codes(&query(&mut d, d::CFG_EV_BITS, d::EV_ABS as u8)),
        [d::ABS_X, d::ABS_Y]
    );
    assert_eq!(
        codes(&query(&mut d, d::CFG_EV_BITS, d::EV_KEY as u8)),
        [
            d::BTN_LEFT,
            d::BTN_RIGHT,
            d::BTN_MIDDLE,
            d::BTN_SIDE,
            d::BTN_EXTRA
        ]
    );
    assert_eq!(
        codes(&query(&mut d, d::CFG_EV_BITS, d::EV_REL as u8)),
        [d::REL_HWHEEL, d::REL_WHEEL]
    );
    assert!(query(&mut d, d::CFG_EV_BITS, d::EV_LED as u8).is_empty());
    for (axis, max) in [(d::ABS_X, 1279), (d::ABS_Y, 799)] {
        let info = query(&mut d, d::CFG_ABS_INFO, axis as u8);
        assert_eq!(info.len(), usize::from(d::ABSINFO_SIZE));
        assert_eq!(le32(&info, 0), 0, "min");
        assert_eq!(le32(&info, 4), max, "max");
        assert_eq!(&info[8..], [0; 12], "fuzz, flat, res");
    }
    assert!(query(&mut d, d::CFG_ABS_INFO, 2).is_empty());
    // A 32-bit read of the header and a write to the read-only size field.
    d.try_write(
        mmio::CONFIG,
        AccessSize::Half,
        0x0011 | (d::EV_ABS as u64) << 8,
    )
    .unwrap();
    assert_eq!(
        d.try_read(mmio::CONFIG, AccessSize::Word).unwrap(),
        0x0001_0311
    );
    d.try_write(mmio::CONFIG + 2, AccessSize::Byte, 0x80)
        .unwrap();
    assert_eq!(d.try_read(mmio::CONFIG + 2, AccessSize::Byte).unwrap(), 1);
    // A word write over select, subsel, size and a reserved byte: the first two
    // take, the other two are counted.
    d.try_write(mmio::CONFIG, AccessSize::Word, 0x7777_0001)
        .unwrap();
    assert_eq!(
        d.try_read(mmio::CONFIG, AccessSize::Word).unwrap(),
        0x0013_0001
    );
    assert_eq!(d.transport.device().stats().config_writes_ignored, 3);
    // Past the config space reads zero.
    assert_eq!(d.try_read(mmio::CONFIG + 0xf8, AccessSize::Double), Ok(0));
}

/// Posts `n` one-event buffers on the eventq; returns their addresses.
fn post_event_buffers(d: &mut TestDriver<Input>, n: usize) -> Vec<(u16, u64)> {
    (0..n)
        .map(|_| {
            let a = d.alloc(d::EVENT_SIZE as u64, 8);
            (
                d.add_chain(d::EVENTQ, &[(a, d::EVENT_SIZE as u32, true)]),
                a,
            )
        })
        .collect()
}

/// Every event the device completed so far, in order.
fn received(d: &mut TestDriver<Input>, bufs: &[(u16, u64)]) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some((id, len)) = d.pop_used(d::EVENTQ) {
        assert_eq!(len, d::EVENT_SIZE as u32);
        let addr = bufs.iter().find(|b| u32::from(b.0) == id).unwrap().1;
        let raw = d.read_mem(addr, d::EVENT_SIZE);
        out.push(Event::decode(raw[..].try_into().unwrap()));
    }
    out
}

#[test]
fn injected_reports_reach_the_guest_with_syn() {
    let mut d = driver(Input::tablet(640, 480));
    // Buffers first, event later: delivered on poll.
    let bufs = post_event_buffers(&mut d, 4);
    d.notify(d::EVENTQ);
    assert_eq!(d.pop_used(d::EVENTQ), None);
    d.transport
        .device_mut()
        .push_report(&[
            Event::new(d::EV_ABS, d::ABS_X, 639),
            Event::new(d::EV_ABS, d::ABS_Y, 0),
        ])
        .unwrap();
    assert!(d.transport.needs_poll());
    d.poll();
    assert!(d.irq_level());
    assert_eq!(
        received(&mut d, &bufs),
        [
            Event::new(d::EV_ABS, d::ABS_X, 639),
            Event::new(d::EV_ABS, d::ABS_Y, 0),
            Event::SYN
        ]
    );
    // Event first, buffers later: delivered on the notify.
    d.transport
        .device_mut()
        .push_report(&[Event::new(d::EV_REL, d::REL_WHEEL, -3)])
        .unwrap();
    d.poll();
    let more = post_event_buffers(&mut d, 2);
    d.notify(d::EVENTQ);
    let all: Vec<_> = bufs.iter().chain(&more).copied().collect();
    assert_eq!(
        received(&mut d, &all),
        [Event::new(d::EV_REL, d::REL_WHEEL, -3), Event::SYN]
    );
    assert_eq!(d.transport.device().stats().delivered, 5);
    assert_eq!(d.transport.device().pending_events(), 0);
}

#[test]
fn events_the_device_does_not_advertise_are_refused() {
    let mut kbd = Input::keyboard();
    let mut tab = Input::tablet(100, 50);
    let cases: [(bool, Event); 7] = [
        (true, Event::new(d::EV_KEY, d::BTN_LEFT, 1)),
        (true, Event::new(d::EV_KEY, 0, 1)),
        (true, Event::new(d::EV_KEY, 30, 3)),
        (true, Event::new(d::EV_LED, d::LED_CAPSL, 1)),
        (false, Event::new(d::EV_ABS, d::ABS_X, 100)),
        (false, Event::new(d::EV_ABS, d::ABS_Y, -1)),
        (false, Event::new(d::EV_KEY, 30, 1)),
    ];
    for (on_keyboard, e) in cases {
        let dev = if on_keyboard { &mut kbd } else { &mut tab };
        assert_eq!(
            dev.push_report(&[Event::new(d::EV_SYN, 0, 0), e]).err(),
            Some(InjectError::Unsupported { index: 0 }),
            "EV_SYN is the device's own"
        );
        assert_eq!(
            dev.push_report(&[e]),
            Err(InjectError::Unsupported { index: 0 }),
            "{e:?}"
        );
        assert_eq!(dev.pending_events(), 0);
    }
    assert_eq!(
        kbd.push_report(&[Event::new(d::EV_KEY, 30, 1); MAX_REPORT_EVENTS + 1]),
        Err(InjectError::TooLong)
    );
    assert_eq!(kbd.stats().rejected_reports, 9);
    kbd.push_report(&[Event::new(d::EV_KEY, 30, 2)]).unwrap();
    tab.push_report(&[Event::new(d::EV_ABS, d::ABS_X, 99)])
        .unwrap();
}

#[test]
fn a_flood_is_bounded_and_dropped_whole_reports_are_counted() {
    let mut d = driver(Input::keyboard());
    let press = [Event::new(d::EV_KEY, 30, 1), Event::new(d::EV_KEY, 31, 1)];
    let per_report = press.len() + 1;
    let fits = EVENT_CAPACITY / per_report;
    let mut refused = 0u64;
    for _ in 0..100_000 {
        if d.transport.device_mut().push_report(&press) == Err(InjectError::Full) {
            refused += 1;
        }
        assert!(d.transport.device().pending_events() <= EVENT_CAPACITY);
    }
    let stats = d.transport.device().stats();
    assert_eq!(refused, 100_000 - fits as u64);
    assert_eq!(stats.dropped_reports, refused);
    assert_eq!(stats.dropped_events, refused * per_report as u64);
    // The guest drains the queue: whole reports only, every one ending in SYN.
    let mut got = Vec::new();
    while d.transport.device().pending_events() > 0 {
        let bufs = post_event_buffers(&mut d, 64);
        d.notify(d::EVENTQ);
        got.extend(received(&mut d, &bufs));
    }
    assert_eq!(got.len(), fits * per_report);
    for report in got.chunks(per_report) {
        assert_eq!(report, [press[0], press[1], Event::SYN]);
    }
    // Room again.
    d.transport.device_mut().push_report(&press).unwrap();
}

#[test]
fn buffers_too_short_for_an_event_complete_empty_and_the_event_waits() {
    let mut d = driver(Input::keyboard());
    d.transport
        .device_mut()
        .push_report(&[Event::new(d::EV_KEY, 30, 1)])
        .unwrap();
    let short = d.alloc(7, 1);
    let readable = d.alloc(8, 8);
    let h1 = d.add_chain(d::EVENTQ, &[(short, 7, true)]);
    let h2 = d.add_chain(d::EVENTQ, &[(readable, 8, false)]);
    // An event split over two segments is fine.
    let (a, b) = (d.alloc(3, 1), d.alloc(5, 1));
    let h3 = d.add_chain(d::EVENTQ, &[(a, 3, true), (b, 5, true)]);
    d.notify(d::EVENTQ);
    assert_eq!(d.pop_used(d::EVENTQ), Some((u32::from(h1), 0)));
    assert_eq!(d.pop_used(d::EVENTQ), Some((u32::from(h2), 0)));
    assert_eq!(d.pop_used(d::EVENTQ), Some((u32::from(h3), 8)));
    let mut raw = d.read_mem(a, 3);
    raw.extend(d.read_mem(b, 5));
    assert_eq!(
        Event::decode(raw[..].try_into().unwrap()),
        Event::new(d::EV_KEY, 30, 1)
    );
    assert_eq!(d.read_mem(short, 7), [0; 7]);
    let stats = d.transport.device().stats();
    assert_eq!((stats.short_buffers, stats.delivered), (2, 1));
    assert_eq!(d.transport.device().pending_events(), 1, "SYN still waits");
    assert!(!d.transport.needs_reset());
}

fn post_status(d: &mut TestDriver<Input>, events: &[Event], extra: &[u8]) -> u16 {
    let mut bytes: Vec<u8> = events.iter().flat_map(|e| e.encode()).collect();
    bytes.extend_from_slice(extra);
    let a = d.alloc(bytes.len() as u64, 8);
    d.write_mem(a, &bytes);
    let head = d.add_chain(d::STATUSQ, &[(a, bytes.len() as u32, false)]);
    d.notify(d::STATUSQ);
    head
}

#[test]
fn statusq_sets_keyboard_leds_and_ignores_garbage() {
    let mut d = driver(Input::keyboard());
    let h = post_status(
        &mut d,
        &[
            Event::new(d::EV_LED, d::LED_CAPSL, 1),
            Event::new(d::EV_LED, d::LED_NUML, 1),
            Event::SYN,
        ],
        &[],
    );
    assert_eq!(d.pop_used(d::STATUSQ), Some((u32::from(h), 0)));
    assert_eq!(d.transport.device().leds(), 0b011);
    // Caps off, an LED code past KANA, another type, and half an event.
    post_status(
        &mut d,
        &[
            Event::new(d::EV_LED, d::LED_CAPSL, 0),
            Event::new(d::EV_LED, 31, 1),
            Event::new(0x7777, 1, 1),
        ],
        &[1, 2, 3],
    );
    assert!(d.pop_used(d::STATUSQ).is_some());
    assert_eq!(d.transport.device().leds(), 0b001);
    assert_eq!(d.transport.device().stats().status_ignored, 3);
    // A 1 MiB-long chain of zeros is read only up to its bound.
    let big = d.alloc(512 << 10, 8);
    d.add_chain(d::STATUSQ, &[(big, 512 << 10, false)]);
    d.notify(d::STATUSQ);
    assert!(d.pop_used(d::STATUSQ).is_some());
    assert_eq!(d.transport.device().stats().status_ignored, 4);
    // A tablet has no LEDs.
    let mut t = driver(Input::tablet(10, 10));
    post_status(&mut t, &[Event::new(d::EV_LED, d::LED_CAPSL, 1)], &[]);
    assert!(t.pop_used(d::STATUSQ).is_some());
    assert_eq!(t.transport.device().leds(), 0);
    assert!(!d.transport.needs_reset() && !t.transport.needs_reset());
}

#[test]
fn queue_garbage_needs_reset_without_losing_host_events() {
    let mut d = driver(Input::keyboard());
    d.transport
        .device_mut()
        .push_report(&[Event::new(d::EV_KEY, 30, 1)])
        .unwrap();
    // A buffer outside guest RAM.
    d.add_chain(d::EVENTQ, &[(0x10, 8, true)]);
    d.notify(d::EVENTQ);
    assert!(d.transport.needs_reset());
    assert_eq!(d.transport.device().pending_events(), 2);
    // A descriptor index beyond the queue on the statusq of another device.
    let mut t = driver(Input::tablet(10, 10));
    let h = d::STATUSQ;
    let size = t.queues[usize::from(h)].size;
    t.publish(h, size + 5);
    t.notify(h);
    assert!(t.transport.needs_reset());
}

#[test]
fn state_survives_save_and_restore_and_bad_blobs_are_refused() {
    let mut d = driver(Input::keyboard());
    post_status(&mut d, &[Event::new(d::EV_LED, d::LED_SCROLLL, 1)], &[]);
    d.transport
        .device_mut()
        .push_report(&[Event::new(d::EV_KEY, 44, 1)])
        .unwrap();
    query(&mut d, d::CFG_EV_BITS, d::EV_KEY as u8);
    let blob = d.transport.device().save_state();
    let mut fresh = Input::keyboard();
    fresh.restore_state(&blob).unwrap();
    assert_eq!(fresh.leds(), 1 << d::LED_SCROLLL);
    assert_eq!(fresh.pending_events(), 2);
    assert_eq!(fresh.stats(), d.transport.device().stats());
    assert_eq!(fresh.config, d.transport.device().config);
    // LEDs on a tablet, an event the device does not have, truncation, more events
    // than the capacity: all refused, nothing changed.
    let mut tablet = Input::tablet(10, 10);
    assert_eq!(tablet.restore_state(&blob), Err(RestoreError::Malformed));
    let mut kbd = Input::keyboard();
    for bad in [
        blob[..blob.len() - 1].to_vec(),
        {
            let mut b = blob.clone();
            let n = b.len();
            b[n - 8..n - 6].copy_from_slice(&d::EV_ABS.to_le_bytes());
            b
        },
        {
            let mut b = blob.clone();
            let n = b.len();
            b[n - 20..n - 16].copy_from_slice(&(EVENT_CAPACITY as u32 + 1).to_le_bytes());
            b
        },
    ] {
        assert!(kbd.restore_state(&bad).is_err());
        assert_eq!(kbd.pending_events(), 0);
    }
}

#[test]
fn vm_reset_drops_events_queued_for_the_old_guest() {
    use vdev::MmioDevice;
    let mut d = driver(Input::keyboard());
    d.transport
        .device_mut()
        .push_report(&[Event::new(d::EV_KEY, 30, 1)])
        .unwrap();
    post_status(&mut d, &[Event::new(d::EV_LED, d::LED_NUML, 1)], &[]);
    // A driver reset keeps host events but forgets the LEDs and the selector.
    query(&mut d, d::CFG_ID_NAME, 0);
    d.write_reg(mmio::STATUS, 0);
    assert_eq!(d.transport.device().pending_events(), 2);
    assert_eq!(d.transport.device().leds(), 0);
    assert_eq!(d.try_read(mmio::CONFIG, AccessSize::Byte), Ok(0));
    MmioDevice::reset(&mut d.transport, &mut d.irq);
    assert_eq!(d.transport.device().pending_events(), 0);
}
