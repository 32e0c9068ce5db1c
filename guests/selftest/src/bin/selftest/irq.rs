//! Checks of virtual interrupt delivery when the vCPU has more interrupts than the
//! GIC has list registers (QEMU's GICv3 has four): the hypervisor must refill the
//! list registers through maintenance interrupts without hanging a physical CPU or
//! livelocking the vCPU.
//!
//! The guest programs its distributor and redistributor (MMIO, emulated by the
//! hypervisor) and its GICv3 CPU interface (the ICC_* system registers, which the
//! hardware's virtual CPU interface answers; ICC_SGI1R_EL1 traps to the hypervisor).

use core::sync::atomic::{AtomicU64, Ordering};

use selftest_guest::defs::smccc::{SMCCC_VERSION, VERSION_1_1};
use selftest_guest::detail::Detail;
use selftest_guest::smccc::{call, ret, Conduit};
use selftest_guest::{probe, sysreg};

/// GICv3 register map and fields (GICv3 architecture specification), and the IPAs
/// the hypervisor gives its guests' distributor and redistributors.
mod gic {
    /// The distributor (GICD).
    pub const GICD_BASE: u64 = 0x0800_0000;
    /// GICD_CTLR.
    pub const GICD_CTLR: u64 = 0x0000;
    /// GICD_CTLR.EnableGrp1 (with a single Security state).
    pub const GICD_CTLR_ENABLE_GRP1: u32 = 1 << 1;
    /// vCPU 0's redistributor, RD_base frame.
    pub const GICR_BASE: u64 = 0x080A_0000;
    /// GICR_WAKER.
    pub const GICR_WAKER: u64 = 0x0014;
    /// The SGI_base frame, after RD_base.
    pub const SGI_BASE: u64 = GICR_BASE + 0x1_0000;
    /// GICR_IGROUPR0 (SGI_base).
    pub const GICR_IGROUPR0: u64 = 0x0080;
    /// GICR_ISENABLER0 (SGI_base).
    pub const GICR_ISENABLER0: u64 = 0x0100;
    /// GICR_ICENABLER0 (SGI_base).
    pub const GICR_ICENABLER0: u64 = 0x0180;
    /// GICR_ISPENDR0 (SGI_base).
    pub const GICR_ISPENDR0: u64 = 0x0200;
    /// GICR_ICPENDR0 (SGI_base).
    pub const GICR_ICPENDR0: u64 = 0x0280;
    /// GICR_ISACTIVER0 (SGI_base).
    pub const GICR_ISACTIVER0: u64 = 0x0300;
    /// GICR_ICACTIVER0 (SGI_base).
    pub const GICR_ICACTIVER0: u64 = 0x0380;
    /// GICR_IPRIORITYR0 (SGI_base): one byte per INTID.
    pub const GICR_IPRIORITYR0: u64 = 0x0400;
    /// ICC_IAR1_EL1: no interrupt to acknowledge.
    pub const INTID_SPURIOUS: u64 = 1023;
    /// ICC_IAR1_EL1.INTID \[23:0\].
    pub const IAR_INTID_MASK: u64 = 0xFF_FFFF;
    /// ICC_CTLR_EL1.EOImode.
    pub const ICC_CTLR_EOIMODE: u64 = 1 << 1;
    /// ICC_SGI1R_EL1: INTID \[27:24\], Aff1 \[23:16\], Aff2 \[39:32\], Aff3 \[55:48\].
    pub const SGI1R_INTID_SHIFT: u64 = 24;
    pub const SGI1R_AFF1_SHIFT: u64 = 16;
    pub const SGI1R_AFF2_SHIFT: u64 = 32;
    pub const SGI1R_AFF3_SHIFT: u64 = 48;
    /// MPIDR_EL1: one affinity field's mask; Aff0..Aff2 are 8 bits apart, Aff3 at 32.
    pub const MPIDR_AFF_MASK: u64 = 0xFF;
    pub const MPIDR_AFF_STRIDE: u64 = 8;
    pub const MPIDR_AFF3_SHIFT: u64 = 32;
    /// The lowest priority (ICC_PMR_EL1: let every priority through).
    pub const PRIORITY_LOWEST: u64 = 0xFF;
    /// `msr daifset/daifclr` immediate for I (IRQ).
    pub const DAIF_I: u64 = 0b0010;
    /// The SGIs the checks use.
    pub const SGIS: u32 = 0x7F;
}

/// Defines a function reading (`read`) or writing (`write`) a register of this
/// vCPU's GIC CPU interface.
macro_rules! icc {
    ($(#[$doc:meta])* read $f:ident => $reg:literal) => {
        $(#[$doc])*
        fn $f() -> u64 {
            let v: u64;
            // SAFETY: a register of this vCPU's own (virtual) GIC CPU interface;
            // reading ICC_IAR1_EL1 acknowledges an interrupt, which the checks
            // account for. No memory is touched.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
    ($(#[$doc:meta])* write $f:ident => $reg:literal) => {
        $(#[$doc])*
        fn $f(v: u64) {
            // SAFETY: programs this vCPU's own interrupt state (priority mask,
            // group enable, EOI, SGI generation); no memory is touched.
            unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) v, options(nomem, nostack, preserves_flags)) };
        }
    };
}

icc!(/// ICC_IAR1_EL1.
    read icc_iar1 => "s3_0_c12_c12_0");
icc!(/// ICC_EOIR1_EL1.
    write icc_eoir1 => "s3_0_c12_c12_1");
icc!(/// ICC_BPR1_EL1.
    write set_icc_bpr1 => "s3_0_c12_c12_3");
icc!(/// ICC_CTLR_EL1.
    read icc_ctlr => "s3_0_c12_c12_4");
icc!(/// ICC_CTLR_EL1.
    write set_icc_ctlr => "s3_0_c12_c12_4");
icc!(/// ICC_IGRPEN1_EL1.
    write set_icc_igrpen1 => "s3_0_c12_c12_7");
icc!(/// ICC_PMR_EL1.
    write set_icc_pmr => "s3_0_c4_c6_0");
icc!(/// ICC_SGI1R_EL1 (trapped to the hypervisor, which makes the SGI pending).
    write set_icc_sgi1r => "s3_0_c12_c11_5");

/// INTIDs taken by the IRQ handler (bit n = INTID n), and how many.
static IRQ_SEEN: AtomicU64 = AtomicU64::new(0);
static IRQ_COUNT: AtomicU64 = AtomicU64::new(0);

// A vector table for `irq-six-sgis`: IRQs from the current EL (SP_ELx) are
// acknowledged, recorded in IRQ_SEEN / IRQ_COUNT and ended (EOImode 0); every other
// entry goes on to the guest's normal vectors.
core::arch::global_asm!(
    ".pushsection .text.irq_check_vectors, \"ax\"",
    ".balign 2048",
    "irq_check_vectors:",
    ".irp index, 0, 1, 2, 3, 4",
    "    .balign 0x80",
    "    b guest_vectors + 0x80 * \\index",
    ".endr",
    "    .balign 0x80",
    "    b irq_check_irq",
    ".irp index, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    "    .balign 0x80",
    "    b guest_vectors + 0x80 * \\index",
    ".endr",
    "irq_check_irq:",
    "    stp x0, x1, [sp, #-32]!",
    "    stp x2, x3, [sp, #16]",
    "    mrs x0, s3_0_c12_c12_0", // ICC_IAR1_EL1
    "    and x0, x0, #{intid_mask}",
    "    cmp x0, #{spurious}",
    "    b.eq 1f",
    "    adrp x1, {seen}",
    "    add x1, x1, :lo12:{seen}",
    "    ldr x2, [x1]",
    "    mov x3, #1",
    "    lsl x3, x3, x0",
    "    orr x2, x2, x3",
    "    str x2, [x1]",
    "    adrp x1, {count}",
    "    add x1, x1, :lo12:{count}",
    "    ldr x2, [x1]",
    "    add x2, x2, #1",
    "    str x2, [x1]",
    "    msr s3_0_c12_c12_1, x0", // ICC_EOIR1_EL1
    "1:  ldp x2, x3, [sp, #16]",
    "    ldp x0, x1, [sp], #32",
    "    eret",
    ".popsection",
    intid_mask = const gic::IAR_INTID_MASK,
    spurious = const gic::INTID_SPURIOUS,
    seen = sym IRQ_SEEN,
    count = sym IRQ_COUNT,
);

extern "C" {
    static irq_check_vectors: [u8; 2048];
    static guest_vectors: [u8; 2048];
}

/// Polls of the IRQ tally after unmasking (each an `isb`, where pending interrupts
/// are taken): far more than the handful the interrupts need.
const UNMASKED_POLLS: u32 = 10_000;
/// Hypercalls and WFIs the guest makes while its list registers overflow.
const RUNNING_ROUNDS: u32 = 3;

fn gicr_sgi(offset: u64) -> u64 {
    gic::SGI_BASE + offset
}

/// Sets SGI `id`'s priority (byte access to GICR_IPRIORITYR<n>).
fn set_priority(id: u32, priority: u8) {
    let addr = gicr_sgi(gic::GICR_IPRIORITYR0) + u64::from(id);
    let word = addr & !3;
    let shift = 8 * (addr & 3);
    let v = probe::load32(word) as u32;
    let v = (v & !(u32::from(u8::MAX) << shift)) | u32::from(priority) << shift;
    probe::store32(word, v);
}

/// Brings up Group 1 delivery of SGIs 0..=6 to this vCPU, EOImode 0, every
/// priority unmasked, with PSTATE.I left masked.
fn setup(priorities: &[u8]) {
    let ctlr = probe::load32(gic::GICD_BASE + gic::GICD_CTLR) as u32;
    probe::store32(
        gic::GICD_BASE + gic::GICD_CTLR,
        ctlr | gic::GICD_CTLR_ENABLE_GRP1,
    );
    probe::store32(gic::GICR_BASE + gic::GICR_WAKER, 0);
    let groups = probe::load32(gicr_sgi(gic::GICR_IGROUPR0)) as u32;
    probe::store32(gicr_sgi(gic::GICR_IGROUPR0), groups | gic::SGIS);
    for (id, &p) in priorities.iter().enumerate() {
        set_priority(id as u32, p);
    }
    probe::store32(gicr_sgi(gic::GICR_ISENABLER0), gic::SGIS);
    set_icc_pmr(gic::PRIORITY_LOWEST);
    set_icc_bpr1(0);
    set_icc_ctlr(icc_ctlr() & !gic::ICC_CTLR_EOIMODE);
    set_icc_igrpen1(1);
}

/// Reports SGIs the redistributor still shows active or pending.
fn expect_idle(p: &mut Detail) {
    let active = probe::load32(gicr_sgi(gic::GICR_ISACTIVER0)) as u32 & gic::SGIS;
    let pending = probe::load32(gicr_sgi(gic::GICR_ISPENDR0)) as u32 & gic::SGIS;
    if active != 0 || pending != 0 {
        p.append(format_args!(
            "afterwards SGIs {active:#b} still active, {pending:#b} still pending"
        ));
    }
}

/// Leaves the SGIs disabled, inactive and not pending.
fn teardown() {
    probe::store32(gicr_sgi(gic::GICR_ICENABLER0), gic::SGIS);
    probe::store32(gicr_sgi(gic::GICR_ICPENDR0), gic::SGIS);
    probe::store32(gicr_sgi(gic::GICR_ICACTIVER0), gic::SGIS);
}

/// Sends SGI `id` to this vCPU.
fn send_sgi_to_self(id: u32) {
    let mpidr = sysreg::mpidr_el1();
    let aff = |n: u64| (mpidr >> (gic::MPIDR_AFF_STRIDE * n)) & gic::MPIDR_AFF_MASK;
    let aff3 = (mpidr >> gic::MPIDR_AFF3_SHIFT) & gic::MPIDR_AFF_MASK;
    set_icc_sgi1r(
        u64::from(id) << gic::SGI1R_INTID_SHIFT
            | aff(1) << gic::SGI1R_AFF1_SHIFT
            | aff(2) << gic::SGI1R_AFF2_SHIFT
            | aff3 << gic::SGI1R_AFF3_SHIFT
            | 1 << aff(0),
    );
}

fn wfi() {
    // SAFETY: waits for an interrupt; PSTATE.I stays as it is.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags)) };
}

fn acknowledge() -> u64 {
    icc_iar1() & gic::IAR_INTID_MASK
}

/// `irq-six-sgis`: six SGIs made pending with IRQs masked (two more than there are
/// list registers), a WFI, then IRQs unmasked: all six are taken.
pub fn six_sgis(p: &mut Detail) {
    const N: u32 = 6;
    setup(&[0x80; N as usize]);
    IRQ_SEEN.store(0, Ordering::Relaxed);
    IRQ_COUNT.store(0, Ordering::Relaxed);
    for id in 0..N {
        send_sgi_to_self(id);
    }
    wfi();
    sysreg::vbar_el1(core::ptr::addr_of!(irq_check_vectors) as u64);
    sysreg::isb();
    // SAFETY: unmasks IRQs with `irq_check_vectors` installed, whose IRQ entry
    // acknowledges, records and ends each interrupt and returns.
    unsafe {
        core::arch::asm!("msr daifclr, #{i}", i = const gic::DAIF_I, options(nomem, nostack))
    };
    for _ in 0..UNMASKED_POLLS {
        if IRQ_COUNT.load(Ordering::Relaxed) >= u64::from(N) {
            break;
        }
        sysreg::isb();
    }
    // SAFETY: masks IRQs again before the normal vectors come back.
    unsafe {
        core::arch::asm!("msr daifset, #{i}", i = const gic::DAIF_I, options(nomem, nostack))
    };
    sysreg::vbar_el1(core::ptr::addr_of!(guest_vectors) as u64);
    sysreg::isb();
    let seen = IRQ_SEEN.load(Ordering::Relaxed);
    let count = IRQ_COUNT.load(Ordering::Relaxed);
    if seen != (1 << N) - 1 || count != u64::from(N) {
        p.append(format_args!(
            "took {count} interrupt(s), INTIDs {seen:#b}; expected SGIs 0..{N} once each"
        ));
    }
    expect_idle(p);
    teardown();
}

/// Acknowledges with IRQs masked and expects `want`.
fn expect_ack(want: u64, p: &mut Detail) -> bool {
    let got = acknowledge();
    if got != want {
        p.append(format_args!("ICC_IAR1_EL1 gave {got}, expected {want}"));
    }
    got == want
}

/// `irq-active-overflow`: five SGIs acknowledged at rising priorities and not
/// ended (five active interrupts, one more than there are list registers) and a
/// sixth of lower priority pending. The guest keeps running (hypercalls, WFIs woken
/// by a higher-priority SGI it takes and ends), then ends the five in order and
/// finally takes the sixth.
pub fn active_overflow(p: &mut Detail) {
    const NESTED: u32 = 5;
    const LOW: u32 = 5;
    const WAKE: u32 = 6;
    setup(&[0xA0, 0x90, 0x80, 0x70, 0x60, 0xB0, 0x40]);
    for id in 0..NESTED {
        send_sgi_to_self(id);
        if !expect_ack(u64::from(id), p) {
            teardown();
            return;
        }
    }
    send_sgi_to_self(LOW);
    if !expect_ack(gic::INTID_SPURIOUS, p) {
        teardown();
        return;
    }
    for round in 0..RUNNING_ROUNDS {
        let v = ret(SMCCC_VERSION, call(Conduit::Hvc, SMCCC_VERSION, [0; 3])[0]);
        if v != VERSION_1_1 {
            p.append(format_args!("round {round}: SMCCC_VERSION gave {v:#x}"));
        }
        send_sgi_to_self(WAKE);
        wfi();
        if !expect_ack(u64::from(WAKE), p) {
            teardown();
            return;
        }
        icc_eoir1(u64::from(WAKE));
    }
    for id in (0..NESTED).rev() {
        icc_eoir1(u64::from(id));
    }
    if expect_ack(u64::from(LOW), p) {
        icc_eoir1(u64::from(LOW));
    }
    expect_ack(gic::INTID_SPURIOUS, p);
    expect_idle(p);
    teardown();
}
