//! Calls into the platform's own firmware (PSCI over SMC or HVC as the device tree
//! says) and, on emulators, semihosting exit so the run's status reaches the host.

use core::sync::atomic::{AtomicU8, Ordering};

use arch::smccc::func;
use boards::board::PowerOff;
use boards::PsciConduit;
use smccc::Call;

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
    firmware_call_regs(x0, x1, x2, x3).map(|r| r[0])
}

/// Makes an SMCCC call to the platform firmware and returns x0..x3 (the calls that
/// answer in more than one register, such as TRNG_RND64); `None` if there is no
/// conduit. The `smccc` crate makes the SMC64/HVC64 call (x1..x17 in, x0..x17 out).
pub fn firmware_call_regs(x0: u64, x1: u64, x2: u64, x3: u64) -> Option<[u64; 4]> {
    let mut args = [0; 17];
    args[..3].copy_from_slice(&[x1, x2, x3]);
    // SMCCC function identifiers are 32 bits wide (w0).
    let id = x0 as u32;
    let r = match CONDUIT.load(Ordering::Relaxed) {
        CONDUIT_SMC => smccc::Smc::call64(id, args),
        CONDUIT_HVC => smccc::Hvc::call64(id, args),
        _ => return None,
    };
    Some([r[0], r[1], r[2], r[3]])
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

/// Makes sure the Spectre-v4 (speculative store bypass) mitigation is enabled on this
/// physical CPU, where the firmware offers SMCCC_ARCH_WORKAROUND_2: EL2 — and the
/// vTPM's secrets — must never run with it off. Guests cannot turn it off
/// (`arch::smccc::host_workaround_x1`); this covers firmware whose default is off.
pub fn keep_ssb_mitigation_on() {
    use arch::smccc::HostFirmware;
    if Firmware.arch_features(func::SMCCC_ARCH_WORKAROUND_2) == arch::smccc::ret::SUCCESS {
        firmware_call(
            u64::from(func::SMCCC_ARCH_WORKAROUND_2),
            arch::smccc::WORKAROUND_2_ENABLE,
            0,
            0,
        );
    }
}

/// The platform firmware's answers about CPU-vulnerability workarounds.
pub struct Firmware;

impl arch::smccc::HostFirmware for Firmware {
    fn arch_features(&self, id: u32) -> i64 {
        match firmware_call(u64::from(func::SMCCC_VERSION), 0, 0, 0) {
            Some(v) if (v as i64) >= arch::smccc::SMCCC_VERSION_1_1 as i64 => {
                firmware_call(u64::from(func::SMCCC_ARCH_FEATURES), u64::from(id), 0, 0)
                    .map_or(-1, |r| r as i32 as i64)
            }
            _ => arch::smccc::ret::NOT_SUPPORTED,
        }
    }
}
