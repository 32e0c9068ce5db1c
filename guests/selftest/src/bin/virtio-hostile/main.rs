//! The hostile virtio guest: drives the test VM's virtio-blk disk (virtio-mmio
//! slot 0, a 1 MiB RAM disk from the boot bundle's `disk = 1M`) first as a
//! correct driver, then as a malicious one — looping and out-of-range
//! descriptor chains, buffers and rings outside guest RAM, huge lengths, nested
//! indirect tables, refused features, sectors beyond the disk — and checks that
//! every such request is refused the architected way (DEVICE_NEEDS_RESET or a
//! request status) while no byte of guest memory outside the buffers the device
//! may write changes. Prints one `PASS <name>` / `FAIL <name>: <detail>` line
//! per check, then `virtio-hostile: N passed, M failed`, and powers the VM off.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod basic;
#[cfg(target_os = "none")]
mod chains;
#[cfg(target_os = "none")]
mod deferred;
#[cfg(target_os = "none")]
mod dma;
#[cfg(target_os = "none")]
mod driver;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod session;

#[cfg(target_os = "none")]
mod guest {
    use selftest_guest::harness::Harness;
    use selftest_guest::{outln, power, vectors};

    use crate::{basic, chains, deferred, memory};

    /// Unexpected exceptions after which the guest gives up and powers off.
    const UNEXPECTED_LIMIT: u32 = 1000;

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(UNEXPECTED_LIMIT);
        outln!("virtio-hostile: starting");
        let mut h = Harness::default();

        h.check("virtio-probe", basic::probe);
        h.check("virtio-good-io", basic::good_io);
        h.check("hostile-desc-loop", chains::desc_loop);
        h.check("hostile-index-out-of-range", chains::index_out_of_range);
        h.check("hostile-out-of-ram", memory::out_of_ram);
        h.check("hostile-huge-length", chains::huge_length);
        h.check("hostile-ring-outside-ram", memory::ring_outside_ram);
        h.check("hostile-indirect-nested", chains::indirect_nested);
        h.check("hostile-bad-features", basic::bad_features);
        h.check("hostile-out-of-range-sector", basic::out_of_range_sector);
        h.check("virtio-deferred-resumed", deferred::deferred_resumed);
        h.check("hypervisor-alive", basic::hypervisor_alive);

        let (passed, failed) = h.totals(vectors::unexpected_count());
        outln!("virtio-hostile: {passed} passed, {failed} failed");
        power::system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("virtio-hostile is a bare-metal guest: build it with --target aarch64-unknown-none");
}
