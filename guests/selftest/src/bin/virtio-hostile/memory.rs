//! Hostile guest-physical addresses: data buffers and rings outside guest RAM
//! (in an unmapped hole, at 4 GiB, where the host keeps the hypervisor's data,
//! straddling the end of RAM). The device must refuse them without reading or
//! writing any of it: DEVICE_NEEDS_RESET, guest memory and the disk unchanged.

use selftest_guest::defs::{map, virtio as v};
use selftest_guest::detail::Detail;

use crate::basic::io;
use crate::dma;
use crate::driver::RingAddrs;
use crate::session::{
    data_desc, desc_off, describe, header_desc, status_desc, write_desc, write_header, Session,
    QUEUE_SIZE,
};

/// The sector the hostile writes aim at; it must keep its pattern.
const LEAK_SECTOR: u64 = 9;
/// Its data pattern.
const LEAK_SEED: u8 = 0x22;
/// A descriptor table of [`QUEUE_SIZE`] entries whose last 64 bytes are past guest RAM.
const STRADDLING_RING: u64 = map::GUEST_RAM_END - 0x40;

/// Data buffers outside guest RAM, each read into (IN) and written from (OUT).
const BUFFERS: [(&str, u32, u64); 6] = [
    ("read into 4 GiB", v::BLK_T_IN, v::HIGH_IPA),
    ("write from 4 GiB", v::BLK_T_OUT, v::HIGH_IPA),
    ("read into 0x7fff0000", v::BLK_T_IN, v::HOST_DATA_IPA),
    ("write from 0x7fff0000", v::BLK_T_OUT, v::HOST_DATA_IPA),
    ("read into the end of RAM", v::BLK_T_IN, v::STRADDLE_IPA),
    ("write from the end of RAM", v::BLK_T_OUT, v::STRADDLE_IPA),
];

fn check_ram_end_guard(what: &str, p: &mut Detail) {
    if let Some(c) = dma::ram_end_guard_damage() {
        p.append(format_args!(
            "{what}: RAM byte {:#x} changed {:#x} -> {:#x} ({} byte(s))",
            dma::ram_end_guard_start() + c.offset as u64,
            c.was,
            c.now,
            c.count
        ));
    }
}

/// `hostile-out-of-ram`: one-sector data buffers at 4 GiB, at 0x7fff_0000 and
/// straddling the end of guest RAM, for reads and writes.
pub fn out_of_ram(p: &mut Detail) {
    dma::fill_ram_end_guard();
    match Session::start(v::F_VERSION_1) {
        Ok(mut s) => {
            io(
                &mut s,
                "seed sector 9",
                v::BLK_T_OUT,
                LEAK_SECTOR,
                LEAK_SEED,
                p,
            );
            let _ = s.mmio.reset();
        }
        Err(e) => return p.append(format_args!("init: {e}")),
    }
    for (what, kind, addr) in BUFFERS {
        let mut s = match Session::start(v::F_VERSION_1) {
            Ok(s) => s,
            Err(e) => {
                p.append(format_args!("{what}: init: {e}"));
                continue;
            }
        };
        write_header(kind, LEAK_SECTOR);
        write_desc(desc_off(0), header_desc(1));
        let mut d = data_desc(kind, 2);
        d.addr = addr;
        write_desc(desc_off(1), d);
        write_desc(desc_off(2), status_desc());
        s.expect_refused(what, Some(0), p);
        check_ram_end_guard(what, p);
    }
    // Nothing from outside guest RAM reached the disk.
    match Session::start(v::F_VERSION_1) {
        Ok(mut s) => {
            io(
                &mut s,
                "sector 9 afterwards",
                v::BLK_T_IN,
                LEAK_SECTOR,
                LEAK_SEED,
                p,
            );
            let _ = s.mmio.reset();
        }
        Err(e) => p.append(format_args!("init afterwards: {e}")),
    }
}

/// `hostile-ring-outside-ram`: QueueDesc in an unmapped hole or straddling the
/// end of RAM, QueueDriver at 0x7fff_0000, QueueDevice at 4 GiB. QueueReady
/// must not stick, the device must need a reset, and a notify must do nothing.
pub fn ring_outside_ram(p: &mut Detail) {
    let good = Session::rings();
    let cases = [
        (
            "desc at 0x20000000",
            RingAddrs {
                desc: v::HOLE_IPA,
                ..good
            },
        ),
        (
            "desc straddling the end of RAM",
            RingAddrs {
                desc: STRADDLING_RING,
                ..good
            },
        ),
        (
            "avail at 0x7fff0000",
            RingAddrs {
                avail: v::HOST_DATA_IPA,
                ..good
            },
        ),
        (
            "used at 4 GiB",
            RingAddrs {
                used: v::HIGH_IPA,
                ..good
            },
        ),
    ];
    dma::fill_ram_end_guard();
    for (what, rings) in cases {
        let s = Session::fresh();
        dma::take_snapshot();
        if let Err(e) = s.mmio.negotiate(v::F_VERSION_1) {
            p.append(format_args!("{what}: {e}"));
            continue;
        }
        if let Err(e) = s.mmio.program_queue(QUEUE_SIZE, rings) {
            p.append(format_args!("{what}: {e}"));
            continue;
        }
        let ready = s.mmio.read(v::QUEUE_READY);
        let status = s.mmio.status();
        if ready != 0 {
            p.append(format_args!("{what}: QueueReady reads {ready}"));
        }
        if status & v::S_NEEDS_RESET == 0 {
            p.append(format_args!(
                "{what}: status {status:#x}, no DEVICE_NEEDS_RESET"
            ));
        }
        // Carry on as a careless driver would: nothing may happen.
        s.mmio.add_status(v::S_DRIVER_OK);
        s.mmio.notify();
        let status = s.mmio.status();
        if status & v::S_NEEDS_RESET == 0 {
            p.append(format_args!("{what}: status {status:#x} after DRIVER_OK"));
        }
        if let Some(c) = dma::changed_since_snapshot(&[]) {
            describe(p, what, c);
        }
        s.check_canaries(what, p);
        check_ram_end_guard(what, p);
        s.mmio.ack_interrupts();
        if let Err(e) = s.mmio.reset() {
            p.append(format_args!("{what}: {e}"));
        }
    }
}
