//! Checks that guest state the hypervisor must keep to itself stays there: the
//! RAS error records (HCR_EL2.TERR) are undefined to the guest, which is told it
//! has no FEAT_RAS, instead of reaching the physical error records.

use selftest_guest::defs::esr::EC_UNKNOWN;
use selftest_guest::detail::Detail;
use selftest_guest::vectors;

/// Runs `f`, which must take exactly one undefined-instruction exception.
fn expect_undefined(what: &str, f: impl FnOnce(), p: &mut Detail) {
    let ((), caught) = vectors::expect(f);
    match caught.first {
        None => p.append(format_args!(
            "{what}: no exception (the access reached the hardware)"
        )),
        Some(t) if t.esr.ec() != EC_UNKNOWN || caught.count != 1 => p.append(format_args!(
            "{what}: esr {:#x} (ec {:#x}) x{}, expected one ec 0x0",
            t.esr.0,
            t.esr.ec(),
            caught.count
        )),
        Some(_) => {}
    }
}

/// `ras-trapped`: reading ERRIDR_EL1 and writing ERRSELR_EL1 are undefined. Without
/// HCR_EL2.TERR the read returned the hardware's record count (QEMU 7.2's `max` CPU
/// answers it, so this check fails there); QEMU's ERRSELR_EL1 write is undefined
/// even untrapped, but on hardware with error records it would select one.
pub fn ras_trapped(p: &mut Detail) {
    expect_undefined(
        "mrs ERRIDR_EL1",
        || {
            // SAFETY: reads ERRIDR_EL1 (S3_0_C5_C3_0), which the hypervisor must make
            // undefined; the vectors skip the instruction.
            unsafe {
                core::arch::asm!("mrs {t}, s3_0_c5_c3_0", t = out(reg) _, options(nomem, nostack))
            };
        },
        p,
    );
    expect_undefined(
        "msr ERRSELR_EL1",
        || {
            // SAFETY: writes ERRSELR_EL1 (S3_0_C5_C3_1), which the hypervisor must make
            // undefined; selecting record 0 would change nothing this guest relies on.
            unsafe {
                core::arch::asm!("msr s3_0_c5_c3_1, {v}", v = in(reg) 0u64, options(nomem, nostack))
            };
        },
        p,
    );
}
