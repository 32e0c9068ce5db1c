//! Calls into the platform's own firmware (PSCI over SMC or HVC as the device tree
//! says) and, on emulators, semihosting exit so the run's status reaches the host.

use core::sync::atomic::{AtomicU8, Ordering};

use arch::smccc::func;
use boards::board::PowerOff;
use boards::PsciConduit;

const CONDUIT_NONE: u8 = 0;
const CONDUIT_SMC: u8 = 1;
const CONDUIT_HVC: u8 = 2;
static CONDUIT: AtomicU8 = AtomicU8::new(CONDUIT_NONE);
static SEMIHOSTING: AtomicU8 = AtomicU8::new(0);

/// Semihosting operation SYS_EXIT_EXTENDED and the "application exit" reason.
const SYS_EXIT_EXTENDED: u64 = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Records how to reach firmware and how this board reports an exit status.
pub fn init(conduit: Option<PsciConduit>, power_off: Option<PowerOff>) {
    CONDUIT.store(
        match conduit {
            Some(PsciConduit::Smc) => CONDUIT_SMC,
            Some(PsciConduit::Hvc) => CONDUIT_HVC,
            None => CONDUIT_NONE,
        },
        Ordering::Relaxed,
    );
    SEMIHOSTING.store(
        u8::from(power_off == Some(PowerOff::SemihostingThenPsci)),
        Ordering::Relaxed,
    );
}

/// Makes an SMCCC call to the platform firmware; `None` if there is no conduit.
pub fn firmware_call(x0: u64, x1: u64, x2: u64, x3: u64) -> Option<u64> {
    let r: u64;
    match CONDUIT.load(Ordering::Relaxed) {
        // SAFETY: an SMCCC call to EL3 firmware (or the emulator's PSCI) clobbers at
        // most x0-x17 per SMCCC 1.1; we mark them all.
        CONDUIT_SMC => unsafe {
            core::arch::asm!("smc #0", inlateout("x0") x0 => r, inlateout("x1") x1 => _, inlateout("x2") x2 => _,
                inlateout("x3") x3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack))
        },
        // SAFETY: as above, for a hypervisor-call conduit.
        CONDUIT_HVC => unsafe {
            core::arch::asm!("hvc #0", inlateout("x0") x0 => r, inlateout("x1") x1 => _, inlateout("x2") x2 => _,
                inlateout("x3") x3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _,
                out("x17") _, options(nostack))
        },
        _ => return None,
    }
    Some(r)
}

/// Ends the machine's life with `status` (0 = success). Never returns.
pub fn shutdown(status: u32) -> ! {
    crate::console::flush_guest(true);
    if SEMIHOSTING.load(Ordering::Relaxed) == 1 {
        let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
        // SAFETY: the board description says semihosting is available (QEMU started
        // with -semihosting); SYS_EXIT_EXTENDED reads the two-word block and stops.
        unsafe {
            core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT_EXTENDED, in("x1") block.as_ptr(), options(nostack));
        }
    }
    firmware_call(u64::from(func::PSCI_SYSTEM_OFF), 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// The platform firmware's answers about CPU-vulnerability workarounds.
pub struct Firmware;

impl arch::smccc::HostFirmware for Firmware {
    fn arch_features(&self, id: u32) -> i64 {
        match firmware_call(u64::from(func::SMCCC_VERSION), 0, 0, 0) {
            Some(v) if (v as i64) >= 0x1_0001 => {
                firmware_call(u64::from(func::SMCCC_ARCH_FEATURES), u64::from(id), 0, 0)
                    .map_or(-1, |r| r as i32 as i64)
            }
            _ => arch::smccc::ret::NOT_SUPPORTED,
        }
    }
}
