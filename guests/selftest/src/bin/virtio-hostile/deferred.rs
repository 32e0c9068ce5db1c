//! `virtio-deferred-resumed`: a driver with VIRTIO_F_EVENT_IDX makes more work
//! available in one notification than the device may do in one exit (its
//! per-call budget of chain bytes), then never notifies again and waits in WFI.
//! The hypervisor must finish the rest on its own and raise the used-buffer
//! interrupt the driver asked for with `used_event`.
//!
//! Each request is a write of [`BIG_LEN`] bytes from guest RAM at sector 0 of
//! the 1 MiB disk: far beyond its end, so the device answers IOERR without
//! reading the buffer, but the chain still counts its full length against the
//! budget (256 MiB a call in the device model: five such chains spend it).

use selftest_guest::defs::map::GUEST_RAM_BASE;
use selftest_guest::defs::sysreg::CNTV_CTL_ENABLE;
use selftest_guest::defs::virtio as v;
use selftest_guest::detail::Detail;
use selftest_guest::sysreg;

use crate::dma;
use crate::driver::barrier;
use crate::session::{
    desc_off, header_desc, status_desc, table_off, write_desc, write_header, Desc, Session, LAYOUT,
    QUEUE_SIZE,
};

/// Bytes of each request's data buffer: under the 64 MiB a chain may describe,
/// inside the 64 MiB of guest RAM.
const BIG_LEN: u32 = 60 << 20;
/// Requests made available in the one notification (the whole queue).
const REQUESTS: u16 = QUEUE_SIZE;
/// Entries of the indirect table every request shares.
const TABLE_ENTRIES: u16 = 3;
/// Timer waits (of [`WAIT_DIVISOR`] of a second each) before the rest counts as
/// never resumed: a hang guard, not a performance bound.
const WAIT_ROUNDS: u32 = 100;
/// Each wait lasts CNTFRQ_EL0 / this (10 ms).
const WAIT_DIVISOR: u64 = 100;

/// Region offset of the available ring's `used_event` (after `ring[size]`).
fn used_event_off() -> usize {
    dma::RING + (LAYOUT.avail + v::RING_HEADER + v::AVAIL_ELEM * u64::from(QUEUE_SIZE)) as usize
}

/// Sleeps in WFI until the EL1 physical timer fires, one wait of
/// 1/[`WAIT_DIVISOR`] s. The physical timer (emulated by the hypervisor, its line
/// lowered when the timer is disabled) wakes every round; the virtual timer is
/// hardware-linked and, never acknowledged by this guest, would wake only once.
fn wait_a_while() {
    sysreg::set_cntp_tval_el0(sysreg::cntfrq_el0() / WAIT_DIVISOR);
    sysreg::set_cntp_ctl_el0(CNTV_CTL_ENABLE);
    sysreg::isb();
    // SAFETY: waits for an interrupt; PSTATE.I stays masked so none is taken.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags)) };
    sysreg::set_cntp_ctl_el0(0);
    sysreg::isb();
}

/// `virtio-deferred-resumed`: see the module documentation.
pub fn deferred_resumed(p: &mut Detail) {
    let mut s = match Session::start(v::F_VERSION_1 | v::F_INDIRECT_DESC | v::F_EVENT_IDX) {
        Ok(s) => s,
        Err(e) => {
            p.append(format_args!("initialisation: {e}"));
            return;
        }
    };
    write_header(v::BLK_T_OUT, 0);
    write_desc(table_off(dma::TABLE, 0), header_desc(1));
    let data = Desc {
        addr: GUEST_RAM_BASE,
        len: BIG_LEN,
        flags: v::DESC_F_NEXT,
        next: 2,
    };
    write_desc(table_off(dma::TABLE, 1), data);
    write_desc(table_off(dma::TABLE, 2), status_desc());
    let indirect = Desc {
        addr: dma::addr(dma::TABLE),
        len: (v::DESC_SIZE * u64::from(TABLE_ENTRIES)) as u32,
        flags: v::DESC_F_INDIRECT,
        next: 0,
    };
    for head in 0..REQUESTS {
        write_desc(desc_off(head), indirect);
        s.make_available(head);
    }
    s.kick();
    let after_notify = s.used_idx();
    if after_notify >= REQUESTS {
        p.append(format_args!(
            "all {REQUESTS} requests completed in the notification: the budget was not reached"
        ));
        return;
    }
    // As Linux does after consuming: acknowledge, then ask for an interrupt at
    // the very next used entry. No further notification.
    s.mmio.ack_interrupts();
    dma::w16(used_event_off(), after_notify);
    barrier();
    let mut rounds = 0;
    while s.used_idx() != REQUESTS && rounds < WAIT_ROUNDS {
        wait_a_while();
        rounds += 1;
    }
    barrier();
    let done = s.used_idx();
    let isr = s.mmio.read(v::INTERRUPT_STATUS);
    let status = s.mmio.status();
    if done != REQUESTS {
        p.append(format_args!(
            "used idx {done} of {REQUESTS} ({after_notify} in the notification) after {rounds} waits; device status {status:#x}"
        ));
    }
    if isr & v::INT_USED_BUFFER == 0 {
        p.append(format_args!(
            "InterruptStatus {isr:#x}: no used-buffer interrupt for the resumed work"
        ));
    }
    if dma::r8(dma::STATUS) != v::BLK_S_IOERR {
        p.append(format_args!(
            "request status {:#x}, expected IOERR",
            dma::r8(dma::STATUS)
        ));
    }
    if status & v::S_NEEDS_RESET != 0 {
        p.append(format_args!("device status {status:#x}"));
    }
    s.check_canaries("deferred", p);
    s.mmio.ack_interrupts();
    if let Err(e) = s.mmio.reset() {
        p.append(format_args!("reset: {e}"));
    }
}
