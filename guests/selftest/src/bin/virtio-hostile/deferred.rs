//! `virtio-deferred-resumed`: a driver with VIRTIO_F_EVENT_IDX makes more work
//! available in one notification than the device may do in one exit (its
//! per-call budget of chain bytes), then never notifies again and waits in WFI.
//! The hypervisor must finish the rest on its own and raise the used-buffer
//! interrupt the driver asked for with `used_event`: set before the
//! notification to the last request's entry, so the interrupt is owed whichever
//! exit finishes the work. (The rest may be finished by any later exit of the
//! vCPU — an interrupt the hypervisor takes right after the notification
//! returns included — so the guest cannot see how much the notification itself
//! did; the budget is the device model's, tested in the `virtio` crate. As first
//! written the check asked for an interrupt only after reading the used index
//! and acknowledging, and failed when such an exit had already finished the
//! work: about 1 run in 3 in this session's suite and reruns.)
//!
//! Each request is a write of [`BIG_LEN`] bytes from guest RAM at sector 0 of
//! the 1 MiB disk: far beyond its end, so the device answers IOERR without
//! reading the buffer, but the chain still counts its full length against the
//! budget (256 MiB a call in the device model: five such chains spend it).

use selftest_guest::defs::map::GUEST_RAM_BASE;
use selftest_guest::defs::sysreg::CNTV_CTL_ENABLE;
use selftest_guest::defs::virtio as v;
use selftest_guest::detail::Detail;
use selftest_guest::probe::{load32, store32};
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

/// The EL1 physical timer's PPI.
const PTIMER_INTID: u32 = 30;
/// The guest's GIC (the QEMU `virt` layout the hypervisor mirrors): distributor,
/// vCPU 0's redistributor (RD_base, then SGI_base 64 KiB above).
const GICD_BASE: u64 = 0x0800_0000;
const GICR_RD_BASE: u64 = 0x080A_0000;
const GICR_SGI_BASE: u64 = GICR_RD_BASE + 0x1_0000;
/// GICD_CTLR.EnableGrp1 (one Security state); GICR_WAKER.ProcessorSleep.
const GICD_CTLR_ENABLE_GRP1: u32 = 1 << 1;
const GICR_WAKER: u64 = 0x0014;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// SGI_base: GICR_IGROUPR0, GICR_ISENABLER0, GICR_ICENABLER0.
const GICR_IGROUPR0: u64 = 0x0080;
const GICR_ISENABLER0: u64 = 0x0100;
const GICR_ICENABLER0: u64 = 0x0180;

/// Writes a GIC CPU-interface register (`$reg` by its encoding).
macro_rules! icc_write {
    ($reg:literal, $value:expr) => {
        // SAFETY: writes the guest's own (virtual) GIC CPU interface; PSTATE.I
        // stays masked, so no interrupt is taken as an exception.
        unsafe {
            core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) $value, options(nostack, preserves_flags))
        }
    };
}

/// Makes the physical timer's interrupt able to wake a WFI: a WFI ends on an
/// interrupt the GIC signals to the CPU (enabled, in an enabled group), masked by
/// PSTATE.I or not; a timer whose PPI the GIC has disabled wakes nothing, on
/// hardware or under the hypervisor. (Without this the check passed only when the
/// hypervisor finished the work during the wait — its completion kick woke the
/// vCPU — and hung when the work was done before the WFI: seen on a loaded host.)
fn enable_timer_wakeup(on: bool) {
    let bit = 1u32 << PTIMER_INTID;
    if on {
        store32(GICD_BASE, GICD_CTLR_ENABLE_GRP1);
        let waker = load32(GICR_RD_BASE + GICR_WAKER) as u32;
        store32(
            GICR_RD_BASE + GICR_WAKER,
            waker & !GICR_WAKER_PROCESSOR_SLEEP,
        );
        let group = load32(GICR_SGI_BASE + GICR_IGROUPR0) as u32;
        store32(GICR_SGI_BASE + GICR_IGROUPR0, group | bit);
        icc_write!("s3_0_c12_c12_5", 1u64); // ICC_SRE_EL1.SRE
        icc_write!("s3_0_c4_c6_0", 0xffu64); // ICC_PMR_EL1: every priority
        icc_write!("s3_0_c12_c12_7", 1u64); // ICC_IGRPEN1_EL1
        store32(GICR_SGI_BASE + GICR_ISENABLER0, bit);
    } else {
        store32(GICR_SGI_BASE + GICR_ICENABLER0, bit);
        icc_write!("s3_0_c12_c12_7", 0u64);
        store32(GICD_BASE, 0);
    }
}

/// Sleeps in WFI until the EL1 physical timer fires, one wait of
/// 1/[`WAIT_DIVISOR`] s. The physical timer (emulated by the hypervisor, its line
/// lowered when the timer is disabled; its PPI enabled by [`enable_timer_wakeup`])
/// wakes every round; the virtual timer is hardware-linked and, never acknowledged
/// by this guest, would wake only once.
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
    // An interrupt when the last request's entry is used, and none before: the
    // notification alone cannot use it (the budget), a resumed call does.
    s.mmio.ack_interrupts();
    dma::w16(used_event_off(), REQUESTS - 1);
    barrier();
    s.kick();
    let after_notify = s.used_idx();
    let mut rounds = 0;
    enable_timer_wakeup(true);
    while s.used_idx() != REQUESTS && rounds < WAIT_ROUNDS {
        wait_a_while();
        rounds += 1;
    }
    enable_timer_wakeup(false);
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
