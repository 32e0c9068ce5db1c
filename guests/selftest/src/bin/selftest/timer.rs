//! Checks of the virtual timer's interrupt as the guest's GIC shows it: the level of
//! INTID 27 must follow the timer's output (ENABLE && ISTATUS && !IMASK), as on
//! hardware, even while the interrupt is masked and nobody takes it.
//!
//! The GIC numbers here are the test VM's (the QEMU `virt` layout the hypervisor
//! mirrors) and the GICv3 architecture's; they are spelt out here rather than taken
//! from the hypervisor's crates so that a wrong number there fails this check.

use selftest_guest::defs::sysreg::{CNTV_CTL_ENABLE, CNTV_CTL_IMASK, CNTV_CTL_ISTATUS};
use selftest_guest::detail::Detail;
use selftest_guest::probe::{load32, store32};
use selftest_guest::sysreg;

/// The virtual timer's PPI.
const VTIMER_INTID: u32 = 27;
/// The guest's GIC distributor.
const GICD_BASE: u64 = 0x0800_0000;
/// GICD_CTLR and its EnableGrp1 bit (one Security state).
const GICD_CTLR: u64 = 0x0000;
const GICD_CTLR_ENABLE_GRP1: u32 = 1 << 1;
/// vCPU 0's redistributor: RD_base, then SGI_base 64 KiB above it.
const GICR_RD_BASE: u64 = 0x080A_0000;
const GICR_SGI_BASE: u64 = GICR_RD_BASE + 0x1_0000;
/// GICR_WAKER and its ProcessorSleep bit.
const GICR_WAKER: u64 = 0x0014;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// SGI_base registers.
const GICR_IGROUPR0: u64 = 0x0080;
const GICR_ISENABLER0: u64 = 0x0100;
const GICR_ICENABLER0: u64 = 0x0180;
const GICR_ISPENDR0: u64 = 0x0200;
const GICR_ICPENDR0: u64 = 0x0280;
/// INTIDs from 1020 up are special (1023: nothing pending).
const INTID_SPECIAL_FIRST: u64 = 1020;
/// ICC_PMR_EL1 value that masks no priority.
const PMR_ALLOW_ALL: u64 = 0xff;
/// ICC_SRE_EL1.SRE: the system-register interface.
const ICC_SRE_SRE: u64 = 1 << 0;
/// How many GICR_ISPENDR0 reads (each an exit) to wait for the fired timer's
/// interrupt to show pending.
const PENDING_POLL_LIMIT: u32 = 100_000;
/// How far ahead the "moved forward" CVAL goes (far beyond the check's run time).
const FAR_FUTURE_TICKS: u64 = 1 << 40;

/// Defines `fn $fn() -> u64` reading GIC CPU-interface register `$reg`.
macro_rules! icc_read {
    ($($fn:ident => $reg:literal;)*) => {$(
        fn $fn() -> u64 {
            let value: u64;
            // SAFETY: a read of the guest's own (virtual) GIC CPU interface; an
            // IAR read acknowledges an interrupt, which the caller ends.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            value
        }
    )*};
}

/// Defines `fn $fn(value: u64)` writing GIC CPU-interface register `$reg`.
macro_rules! icc_write {
    ($($fn:ident => $reg:literal;)*) => {$(
        fn $fn(value: u64) {
            // SAFETY: writes the guest's own (virtual) GIC CPU interface; PSTATE.I
            // stays masked, so no interrupt is taken as an exception.
            unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) value, options(nostack, preserves_flags)) };
        }
    )*};
}

icc_read! {
    icc_iar1_el1 => "s3_0_c12_c12_0";
    icc_sre_el1 => "s3_0_c12_c12_5";
}

icc_write! {
    set_icc_eoir1_el1 => "s3_0_c12_c12_1";
    set_icc_sre_el1 => "s3_0_c12_c12_5";
    set_icc_pmr_el1 => "s3_0_c4_c6_0";
    set_icc_igrpen1_el1 => "s3_0_c12_c12_7";
}

/// Where the timer's interrupt is masked while it fires.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// Disabled at the redistributor (GICR_ICENABLER0).
    Gicr,
    /// Enabled in the GIC, but PSTATE.I is set (the guest always runs so).
    Pstate,
}

/// How the guest stops the timer asserting its interrupt.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// CNTV_CTL_EL0.ENABLE = 0.
    Disable,
    /// CNTV_CTL_EL0.IMASK = 1.
    Imask,
    /// CNTV_CVAL_EL0 moved far into the future (ISTATUS drops).
    CvalForward,
}

fn bit() -> u32 {
    1 << VTIMER_INTID
}

fn ispendr_shows_timer() -> bool {
    load32(GICR_SGI_BASE + GICR_ISPENDR0) as u32 & bit() != 0
}

/// Turns the guest's GIC on for Group 1 with INTID 27 in Group 1, disabled and not
/// pending; the virtual CPU interface takes every priority.
pub fn gic_setup() {
    store32(GICD_BASE + GICD_CTLR, GICD_CTLR_ENABLE_GRP1);
    let waker = load32(GICR_RD_BASE + GICR_WAKER) as u32;
    store32(
        GICR_RD_BASE + GICR_WAKER,
        waker & !GICR_WAKER_PROCESSOR_SLEEP,
    );
    let group = load32(GICR_SGI_BASE + GICR_IGROUPR0) as u32;
    store32(GICR_SGI_BASE + GICR_IGROUPR0, group | bit());
    store32(GICR_SGI_BASE + GICR_ICENABLER0, bit());
    store32(GICR_SGI_BASE + GICR_ICPENDR0, bit());
    set_icc_sre_el1(icc_sre_el1() | ICC_SRE_SRE);
    set_icc_pmr_el1(PMR_ALLOW_ALL);
    set_icc_igrpen1_el1(1);
}

/// Enables INTID 27 at the redistributor.
pub fn enable_vtimer_irq() {
    store32(GICR_SGI_BASE + GICR_ISENABLER0, bit());
}

/// Puts the GIC and the timer back as the other checks expect them.
pub fn gic_teardown() {
    sysreg::set_cntv_ctl_el0(0);
    sysreg::isb();
    store32(GICR_SGI_BASE + GICR_ICENABLER0, bit());
    store32(GICR_SGI_BASE + GICR_ICPENDR0, bit());
    set_icc_igrpen1_el1(0);
    store32(GICD_BASE + GICD_CTLR, 0);
}

/// One case: fire the timer with its interrupt masked per `mask`, stop it per
/// `stop`, then the interrupt must be neither pending nor delivered on unmasking.
fn case(mask: Mask, stop: Stop, p: &mut Detail) {
    store32(GICR_SGI_BASE + GICR_ICENABLER0, bit());
    store32(GICR_SGI_BASE + GICR_ICPENDR0, bit());
    if let Mask::Pstate = mask {
        store32(GICR_SGI_BASE + GICR_ISENABLER0, bit());
    }
    // Fire at once: CVAL = now.
    sysreg::set_cntv_cval_el0(sysreg::cntvct_el0());
    sysreg::set_cntv_ctl_el0(CNTV_CTL_ENABLE);
    sysreg::isb();
    while sysreg::cntv_ctl_el0() & CNTV_CTL_ISTATUS == 0 {}
    if !(0..PENDING_POLL_LIMIT).any(|_| ispendr_shows_timer()) {
        p.append(format_args!("{mask:?}/{stop:?}: fired timer never pending"));
    }
    match stop {
        Stop::Disable => sysreg::set_cntv_ctl_el0(0),
        Stop::Imask => sysreg::set_cntv_ctl_el0(CNTV_CTL_ENABLE | CNTV_CTL_IMASK),
        Stop::CvalForward => {
            sysreg::set_cntv_cval_el0(sysreg::cntvct_el0().wrapping_add(FAR_FUTURE_TICKS))
        }
    }
    sysreg::isb();
    if let Stop::CvalForward = stop {
        let ctl = sysreg::cntv_ctl_el0();
        if ctl & CNTV_CTL_ISTATUS != 0 {
            p.append(format_args!(
                "{mask:?}/{stop:?}: ISTATUS kept (ctl {ctl:#x})"
            ));
        }
    }
    let pending = ispendr_shows_timer();
    // Unmask at the redistributor and take whatever the CPU interface offers by
    // acknowledging it (PSTATE.I stays set, so nothing is taken as an exception).
    store32(GICR_SGI_BASE + GICR_ISENABLER0, bit());
    let iar = icc_iar1_el1();
    let delivered = iar < INTID_SPECIAL_FIRST;
    if delivered {
        set_icc_eoir1_el1(iar);
    }
    // Kept short: six cases must fit one detail line.
    match (pending, delivered) {
        (false, false) => {}
        (true, false) => p.append(format_args!("{mask:?}/{stop:?}: ISPENDR0 set")),
        (false, true) => p.append(format_args!("{mask:?}/{stop:?}: got {iar}")),
        (true, true) => p.append(format_args!("{mask:?}/{stop:?}: ISPENDR0 set, got {iar}")),
    }
    sysreg::set_cntv_ctl_el0(0);
    sysreg::isb();
}

/// `vtimer-level-follows`: with INTID 27 masked at the redistributor, and again with
/// it enabled but PSTATE.I set, the virtual timer fires (GICR_ISPENDR0 shows it),
/// then is disabled / masked with IMASK / given a CVAL in the future: GICR_ISPENDR0
/// must then show it not pending, and unmasking must deliver nothing.
pub fn vtimer_level_follows(p: &mut Detail) {
    gic_setup();
    for mask in [Mask::Gicr, Mask::Pstate] {
        for stop in [Stop::Disable, Stop::Imask, Stop::CvalForward] {
            case(mask, stop, p);
        }
    }
    gic_teardown();
}
