//! Checks of CPU state the hypervisor virtualises: undefined system registers,
//! sanitised ID registers, FP/SIMD state across exits, and WFI blocking until
//! the virtual timer fires.

use selftest_guest::defs::map::PL011_BASE;
use selftest_guest::defs::pl011;
use selftest_guest::defs::smccc::PSCI_VERSION;
use selftest_guest::defs::sysreg::{CNTV_CTL_ENABLE, CNTV_CTL_IMASK, CNTV_CTL_ISTATUS};
use selftest_guest::detail::Detail;
use selftest_guest::esr::Esr;
use selftest_guest::idregs::{problems, IdValues};
use selftest_guest::{defs::esr::EC_UNKNOWN, sysreg, vectors};

/// HVCs between setting and checking the FP/SIMD registers.
const FP_HVCS: u64 = 100;
/// FPCR for the check: DN, FZ and RMode = round towards minus infinity.
const FP_TEST_FPCR: u64 = 1 << 25 | 1 << 24 | 0b10 << 22;
/// FPSR for the check: QC, IXC, OFC, IOC.
const FP_TEST_FPSR: u64 = 1 << 27 | 1 << 4 | 1 << 2 | 1 << 0;
/// The timer deadline is CNTFRQ_EL0 / this (10 ms).
const WFI_DEADLINE_DIVISOR: u64 = 100;

fn expect_undefined(what: &str, f: impl FnOnce(), p: &mut Detail) {
    let ((), caught) = vectors::expect(f);
    match caught.first {
        None => p.append(format_args!("{what}: no exception")),
        Some(t) if t.esr.ec() != EC_UNKNOWN || caught.count != 1 => {
            let esr: Esr = t.esr;
            p.append(format_args!(
                "{what}: esr {:#x} (ec {:#x}) x{}, expected ec 0x0",
                esr.0,
                esr.ec(),
                caught.count
            ));
        }
        Some(_) => {}
    }
}

/// `undefined-sysreg`: an IMPLEMENTATION DEFINED register read (trapped by
/// HCR_EL2.TIDCP) and a write to an ID register are undefined.
pub fn undefined_sysreg(p: &mut Detail) {
    expect_undefined(
        "mrs s3_7_c15_c0_0",
        || {
            // SAFETY: a read of an IMPLEMENTATION DEFINED register that the
            // hypervisor must make undefined; the vectors skip it.
            unsafe {
                core::arch::asm!("mrs {t}, s3_7_c15_c0_0", t = out(reg) _, options(nomem, nostack))
            };
        },
        p,
    );
    let pfr0 = sysreg::id_aa64pfr0_el1();
    expect_undefined(
        "msr s3_0_c0_c4_0",
        || {
            // SAFETY: writing ID_AA64PFR0_EL1 (read-only) is undefined; the value
            // written is the one just read, should the write ever take effect.
            unsafe {
                core::arch::asm!("msr s3_0_c0_c4_0, {v}", v = in(reg) pfr0, options(nomem, nostack))
            };
        },
        p,
    );
}

/// `id-sanitised`: SVE, SME, MTE, pointer authentication and EL2 are hidden and
/// PARange is at most 48 bits.
pub fn id_sanitised(p: &mut Detail) {
    let values = IdValues {
        pfr0: sysreg::id_aa64pfr0_el1(),
        pfr1: sysreg::id_aa64pfr1_el1(),
        isar1: sysreg::id_aa64isar1_el1(),
        isar2: sysreg::id_aa64isar2_el1(),
        mmfr0: sysreg::id_aa64mmfr0_el1(),
    };
    for problem in problems(&values) {
        p.append(format_args!("{problem}"));
    }
}

/// The value the check puts in half `i` (0..64) of q0..q31.
fn fp_pattern(i: usize) -> u64 {
    let i = i as u64;
    0x0123_4567_89ab_cdef_u64.rotate_left(i as u32) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `fp-preserved`: q0..q31, FPCR and FPSR survive 100 HVCs and an MMIO read.
pub fn fp_preserved(p: &mut Detail) {
    let mut input = [0u64; 64];
    for (i, slot) in input.iter_mut().enumerate() {
        *slot = fp_pattern(i);
    }
    let mut output = [0u64; 64];
    let (fpcr, fpsr): (u64, u64);
    // SAFETY: loads q0..q31 from `input` (512 bytes), sets FPCR/FPSR, performs
    // PSCI_VERSION HVCs and one 32-bit read of PL011 FR, then stores q0..q31 to
    // `output` (512 bytes) and restores FPCR. Loop state lives in x20..x23, which
    // SMCCC calls preserve; x0..x17, x30 and all vector registers are declared
    // clobbered.
    unsafe {
        core::arch::asm!(
            "mrs x24, fpcr",
            "msr fpcr, {fpcr_in}",
            "msr fpsr, {fpsr_in}",
            "ld1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [x20], #64",
            "ld1 {{v4.2d, v5.2d, v6.2d, v7.2d}}, [x20], #64",
            "ld1 {{v8.2d, v9.2d, v10.2d, v11.2d}}, [x20], #64",
            "ld1 {{v12.2d, v13.2d, v14.2d, v15.2d}}, [x20], #64",
            "ld1 {{v16.2d, v17.2d, v18.2d, v19.2d}}, [x20], #64",
            "ld1 {{v20.2d, v21.2d, v22.2d, v23.2d}}, [x20], #64",
            "ld1 {{v24.2d, v25.2d, v26.2d, v27.2d}}, [x20], #64",
            "ld1 {{v28.2d, v29.2d, v30.2d, v31.2d}}, [x20], #64",
            "2:  mov x0, #{psci_version}",
            "    hvc #0",
            "    subs x22, x22, #1",
            "    b.ne 2b",
            "ldr w0, [x23]",
            "st1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [x21], #64",
            "st1 {{v4.2d, v5.2d, v6.2d, v7.2d}}, [x21], #64",
            "st1 {{v8.2d, v9.2d, v10.2d, v11.2d}}, [x21], #64",
            "st1 {{v12.2d, v13.2d, v14.2d, v15.2d}}, [x21], #64",
            "st1 {{v16.2d, v17.2d, v18.2d, v19.2d}}, [x21], #64",
            "st1 {{v20.2d, v21.2d, v22.2d, v23.2d}}, [x21], #64",
            "st1 {{v24.2d, v25.2d, v26.2d, v27.2d}}, [x21], #64",
            "st1 {{v28.2d, v29.2d, v30.2d, v31.2d}}, [x21], #64",
            "mrs x25, fpcr",
            "mrs x26, fpsr",
            "msr fpcr, x24",
            "msr fpsr, xzr",
            fpcr_in = in(reg) FP_TEST_FPCR,
            fpsr_in = in(reg) FP_TEST_FPSR,
            psci_version = const PSCI_VERSION,
            inout("x20") input.as_ptr() => _,
            inout("x21") output.as_mut_ptr() => _,
            inout("x22") FP_HVCS => _,
            in("x23") PL011_BASE + pl011::FR,
            out("x24") _,
            out("x25") fpcr,
            out("x26") fpsr,
            clobber_abi("C"),
        );
    }
    if let Some(i) = (0..64).find(|&i| output[i] != input[i]) {
        p.append(format_args!(
            "q{} half {} changed from {:#x} to {:#x}",
            i / 2,
            i % 2,
            input[i],
            output[i]
        ));
    }
    if fpcr != FP_TEST_FPCR {
        p.append(format_args!(
            "FPCR changed from {FP_TEST_FPCR:#x} to {fpcr:#x}"
        ));
    }
    if fpsr != FP_TEST_FPSR {
        p.append(format_args!(
            "FPSR changed from {FP_TEST_FPSR:#x} to {fpsr:#x}"
        ));
    }
}

/// `wfi-wakeup`: with the virtual timer armed 10 ms ahead and its interrupt enabled
/// in the GIC but masked in PSTATE, `wfi` returns only once the timer condition is
/// met. A WFI wakes on an interrupt the GIC signals whatever PSTATE.I says; with the
/// interrupt disabled in the GIC nothing is signalled and a WFI may sleep for ever,
/// on hardware as under the hypervisor (an earlier version of this check relied on
/// that and hung whenever the timer fired before the WFI trapped). Only run when a
/// hypervisor answers SMCCC (`hypervisor`): without one, nothing routes the timer
/// to this CPU and the `wfi` could block forever.
pub fn wfi_wakeup(hypervisor: bool, p: &mut Detail) {
    if !hypervisor {
        p.append(format_args!(
            "not run: no hypervisor answered SMCCC_VERSION, and a bare WFI may never wake"
        ));
        return;
    }
    let frequency = sysreg::cntfrq_el0();
    if frequency == 0 {
        p.append(format_args!("CNTFRQ_EL0 is 0"));
        return;
    }
    crate::timer::gic_setup();
    crate::timer::enable_vtimer_irq();
    let deadline = sysreg::cntvct_el0().wrapping_add(frequency / WFI_DEADLINE_DIVISOR);
    sysreg::set_cntv_cval_el0(deadline);
    sysreg::set_cntv_ctl_el0(CNTV_CTL_ENABLE);
    sysreg::isb();
    // SAFETY: waits for an interrupt; PSTATE.I stays masked so none is taken.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags)) };
    let now = sysreg::cntvct_el0();
    let ctl = sysreg::cntv_ctl_el0();
    // Stops the timer (its interrupt, never taken, goes with it) and the GIC.
    crate::timer::gic_teardown();
    if now < deadline {
        p.append(format_args!(
            "wfi returned {} ticks before the deadline",
            deadline - now
        ));
    }
    if ctl & CNTV_CTL_ISTATUS == 0 {
        p.append(format_args!(
            "CNTV_CTL_EL0 = {ctl:#x} without ISTATUS after wfi"
        ));
    }
}

/// `ptimer-emulated`: the EL1 physical timer (which the hypervisor traps and
/// emulates) behaves architecturally: TVAL writes set CVAL = now + TVAL, TVAL reads
/// count down and go negative after the deadline, ISTATUS rises at the deadline
/// whether or not IMASK is set, and CVAL reads back what was written.
pub fn ptimer_emulated(p: &mut Detail) {
    let frequency = sysreg::cntfrq_el0();
    if frequency == 0 {
        p.append(format_args!("CNTFRQ_EL0 is 0"));
        return;
    }
    let ticks = frequency / WFI_DEADLINE_DIVISOR;
    sysreg::set_cntp_ctl_el0(CNTV_CTL_ENABLE | CNTV_CTL_IMASK);
    let before = sysreg::cntpct_el0();
    sysreg::set_cntp_tval_el0(ticks);
    let after = sysreg::cntpct_el0();
    let cval = sysreg::cntp_cval_el0();
    if cval < before + ticks || cval > after + ticks {
        p.append(format_args!(
            "TVAL write of {ticks} gave CVAL {cval}, outside [{}, {}]",
            before + ticks,
            after + ticks
        ));
    }
    // TVAL is CVAL minus the count when it is read, and ISTATUS is set exactly when
    // that count has reached CVAL: each is checked against the counter read just
    // before and just after it, so a host that stalls the guest between two
    // instructions (a loaded TCG host can, for longer than `ticks`) changes nothing.
    let (t0, tval, t1) = (
        sysreg::cntpct_el0(),
        sysreg::cntp_tval_el0() as u32 as i32,
        sysreg::cntpct_el0(),
    );
    let lowest = (cval.wrapping_sub(t1)) as u32 as i32;
    let highest = (cval.wrapping_sub(t0)) as u32 as i32;
    if tval < lowest || tval > highest {
        p.append(format_args!(
            "TVAL reads {tval}, not CVAL minus the count ({lowest}..={highest})"
        ));
    }
    let (ctl, t1) = (sysreg::cntp_ctl_el0(), sysreg::cntpct_el0());
    if ctl & CNTV_CTL_ISTATUS != 0 && t1 < cval {
        p.append(format_args!("ISTATUS set before the deadline"));
    }
    while sysreg::cntpct_el0() <= cval {}
    let ctl = sysreg::cntp_ctl_el0();
    if ctl & CNTV_CTL_ISTATUS == 0 {
        p.append(format_args!(
            "CNTP_CTL_EL0 = {ctl:#x} without ISTATUS after the deadline"
        ));
    }
    if (sysreg::cntp_tval_el0() as u32 as i32) >= 0 {
        p.append(format_args!("TVAL is not negative after the deadline"));
    }
    let far = cval + (1 << 40);
    sysreg::set_cntp_cval_el0(far);
    if sysreg::cntp_cval_el0() != far {
        p.append(format_args!(
            "CVAL reads {:#x} after writing {far:#x}",
            sysreg::cntp_cval_el0()
        ));
    }
    if sysreg::cntp_ctl_el0() & CNTV_CTL_ISTATUS != 0 {
        p.append(format_args!(
            "ISTATUS still set with the deadline moved far ahead"
        ));
    }
    sysreg::set_cntp_ctl_el0(0);
}
