//! The reset-loop guest: on every boot it checks that the hypervisor answers a
//! hypercall, prints `reset-loop: alive (PSCI <version>)`, and resets the VM with
//! PSCI SYSTEM_RESET, for ever. A VM reset starts the guest from scratch (its RAM
//! is cleared), so the guest cannot count; the host test counts the lines and stops
//! QEMU once it has seen enough boots, each one proof that the hypervisor survived
//! every reset before it.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod guest {
    use selftest_guest::defs::smccc::{PSCI_SYSTEM_RESET, PSCI_VERSION, PSCI_VERSION_1_1};
    use selftest_guest::smccc::{call, Conduit};
    use selftest_guest::{outln, vectors};

    /// Unexpected exceptions after which the guest gives up and powers off.
    const UNEXPECTED_LIMIT: u32 = 10;

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(UNEXPECTED_LIMIT);
        let version = call(Conduit::Hvc, PSCI_VERSION, [0; 3])[0] as i64;
        if version == PSCI_VERSION_1_1 {
            outln!("reset-loop: alive (PSCI {:#x})", version);
        } else {
            outln!("reset-loop: FAIL PSCI_VERSION answered {version:#x}");
        }
        let r = call(Conduit::Hvc, PSCI_SYSTEM_RESET, [0; 3]);
        outln!("reset-loop: FAIL SYSTEM_RESET returned {:#x}", r[0]);
        selftest_guest::power::system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("reset-loop is a bare-metal guest: build it with --target aarch64-unknown-none");
}
