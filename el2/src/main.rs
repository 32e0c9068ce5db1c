//! RayOS EL2: the hypervisor binary. It owns EL2 of every physical CPU: boots from an
//! arm64 Image header, turns on its own MMU, discovers the platform from the device
//! tree, builds the VM the boot bundle defines (guest RAM behind stage-2 translation,
//! emulated devices on an MMIO bus) and runs it, handling every exit in
//! [`trap`]. Everything that can be a pure library lives in the workspace's library
//! crates; this crate holds what touches hardware, and all of the project's `unsafe`.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod console;
mod el1;
mod fault;
mod gic;
mod heap;
mod loader;
mod mmu;
mod pmem;
mod power;
mod timer;
mod trap;
mod vectors;
mod vm;

use alloc::vec::Vec;

use boards::{guest, Range};
use stage2::Layout;

use crate::trap::Flow;
use crate::vm::{GuestRam, StopReason, Vm};

/// Largest DTB the hypervisor will look at.
const MAX_DTB: usize = 2 << 20;
/// IPA size given to guests (bits); capped by the hardware's PARange.
const GUEST_IPA_BITS: u32 = 40;
/// Guest RAM is allocated in 2 MiB-aligned pieces so stage 2 can use block mappings.
const GUEST_RAM_ALIGN: u64 = 2 << 20;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

fn image_range() -> Range {
    let (s, e) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    Range {
        base: s,
        size: e - s,
    }
}

/// The device tree blob at `dtb`, bounded by its own header's size.
fn dtb_slice(dtb: usize) -> Option<&'static [u8]> {
    if dtb == 0 || dtb % 8 != 0 {
        return None;
    }
    // SAFETY: the boot protocol hands the DTB's physical address in x0; the header's
    // first two words (magic, totalsize) are read before trusting any length.
    let (magic, size) = unsafe {
        (
            u32::from_be(*(dtb as *const u32)),
            u32::from_be(*((dtb + 4) as *const u32)),
        )
    };
    if magic != 0xd00d_feed || size as usize > MAX_DTB {
        return None;
    }
    // SAFETY: `size` bytes at `dtb` are the DTB the loader placed in RAM.
    Some(unsafe { core::slice::from_raw_parts(dtb as *const u8, size as usize) })
}

/// Finds the console UART in the DTB without allocating (before the heap exists).
fn early_uart(dtb: &[u8]) -> Option<usize> {
    let fdt = fdt::Fdt::new(dtb).ok()?;
    let node = fdt
        .chosen()
        .stdout()
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    Some(node.reg()?.next()?.starting_address as usize)
}

fn fatal(msg: core::fmt::Arguments) -> ! {
    log::error!("{msg}");
    power::shutdown(fault::FATAL_STATUS)
}

/// Entered from `boot` when the CPU did not start at EL2.
#[no_mangle]
extern "C" fn wrong_exception_level(dtb: usize) -> ! {
    if let Some(b) = dtb_slice(dtb) {
        if let Some(uart) = early_uart(b) {
            console::init(uart);
        }
        if let Ok(fdt) = fdt::Fdt::new(b) {
            let conduit = fdt
                .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
                .and_then(|n| n.property("method"))
                .and_then(|p| p.as_str())
                .map(|m| {
                    if m == "hvc" {
                        boards::PsciConduit::Hvc
                    } else {
                        boards::PsciConduit::Smc
                    }
                });
            let board = boards::Board::identify(fdt.root().compatible().all());
            power::init(conduit, board.map(|b| b.power_off));
        }
    }
    console::print_line(format_args!(
        "[el2 FATAL] RayOS EL2 was entered at EL1, not EL2: it must own EL2 (on QEMU use -M virt,virtualization=on). Powering off."
    ));
    power::shutdown(fault::FATAL_STATUS)
}

#[no_mangle]
extern "C" fn rust_main(dtb: usize) -> ! {
    let Some(dtb_bytes) = dtb_slice(dtb) else {
        // No console is known without a DTB; nothing can be reported.
        power::shutdown(fault::FATAL_STATUS)
    };
    if let Some(uart) = early_uart(dtb_bytes) {
        console::init(uart);
    }
    console::init_log(false);
    log::info!(
        "RayOS EL2 {} starting at EL2, DTB at {dtb:#x}",
        env!("CARGO_PKG_VERSION")
    );

    // Identity map: RAM from the DTB as normal memory, the console and GIC as devices.
    let (ram, devices) = {
        let fdt = fdt::Fdt::new(dtb_bytes)
            .unwrap_or_else(|_| fatal(format_args!("malformed device tree")));
        let mut ram = [(0u64, 0u64); 8];
        let mut n = 0;
        for r in fdt.memory().regions().take(8) {
            ram[n] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
            n += 1;
        }
        let mut devices = [(0u64, 0u64); 8];
        let mut d = 0;
        for node in [
            fdt.find_compatible(&["arm,pl011"]),
            fdt.find_compatible(&["arm,gic-v3"]),
        ]
        .into_iter()
        .flatten()
        {
            for r in node.reg().into_iter().flatten().take(8 - d) {
                devices[d] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
                d += 1;
            }
        }
        (ram, (devices, d, n))
    };
    let (devices, ndev, nram) = devices;
    if let Err(e) = mmu::enable(&ram[..nram], &devices[..ndev]) {
        fatal(format_args!("cannot build the EL2 identity map: {e:?}"));
    }
    heap::init();

    let platform =
        boards::discover(dtb_bytes).unwrap_or_else(|e| fatal(format_args!("device tree: {e:?}")));
    power::init(platform.psci, platform.board.map(|b| b.power_off));
    log::info!(
        "platform: {} ({}), {} CPU(s), RAM {}",
        platform.model,
        platform.board.map_or("unknown board", |b| b.name),
        platform.cpus.len(),
        platform.memory.iter().map(|r| r.size >> 20).sum::<u64>()
    );
    if let Err(e) = gic::init(&platform.gic, platform.cpus.len()) {
        fatal(format_args!("GIC initialisation failed: {e:?}"));
    }
    gic::enable_ppi(platform.timer.hyp, 0);

    // The boot bundle (the VM definition) is the initrd the loader handed us.
    let Some(bundle_range) = platform.initrd else {
        fatal(format_args!(
            "no boot bundle: pass a VM bundle as the initrd (cargo xtask run builds one)"
        ))
    };
    // SAFETY: the loader placed the initrd at this physical range, which lies in RAM
    // (identity-mapped) and is excluded from every allocation below.
    let bundle = unsafe {
        core::slice::from_raw_parts(bundle_range.base as *const u8, bundle_range.size as usize)
    };
    let spec = vmspec::parse_bundle(bundle)
        .unwrap_or_else(|e| fatal(format_args!("boot bundle refused: {e:?}")));

    let mut used: Vec<Range> = alloc::vec![
        image_range(),
        Range {
            base: dtb as u64,
            size: dtb_bytes.len() as u64
        },
        bundle_range
    ];
    used.extend(platform.reserved.iter().copied());
    let mut pmem = pmem::PhysMem::new(&platform.memory, &used);
    let mem = spec.mem.next_multiple_of(GUEST_RAM_ALIGN);
    let Some(ram_pa) = pmem.alloc(mem, GUEST_RAM_ALIGN) else {
        fatal(format_args!(
            "VM '{}' wants {} MiB of RAM but only {} MiB are free",
            spec.name,
            mem >> 20,
            pmem.free_bytes() >> 20
        ))
    };
    let mmfr0 = el1::read_sysreg!("ID_AA64MMFR0_EL1");
    let layout = Layout::from_mmfr0(mmfr0, GUEST_IPA_BITS)
        .unwrap_or_else(|e| fatal(format_args!("stage-2 layout: {e:?}")));
    if spec.vcpus > 1 {
        log::warn!(
            "VM '{}' asks for {} vCPUs; this build runs one vCPU per VM (SMP comes with the vGIC)",
            spec.name,
            spec.vcpus
        );
    }
    let ram = GuestRam {
        ipa: guest::RAM_BASE,
        pa: ram_pa,
        size: mem,
    };
    let mut vm = Vm::new(&spec.name, ram, 1, layout, 1)
        .unwrap_or_else(|e| fatal(format_args!("VM setup: {e:?}")));
    log::info!(
        "VM '{}': {} vCPU, {} MiB RAM at IPA {:#x} (PA {:#x}), stage 2 {}-bit IPA, start level {}",
        vm.name,
        vm.vcpus.len(),
        mem >> 20,
        guest::RAM_BASE,
        ram_pa,
        layout.ipa_bits,
        layout.start_level
    );

    loop {
        vm.ram.clear();
        let loaded = loader::load_kernel(&mut vm.ram, spec.kernel).unwrap_or_else(|e| {
            fatal(format_args!(
                "VM '{}': kernel does not load: {e:?}",
                spec.name
            ))
        });
        log::info!(
            "VM '{}': {} kernel ({} KiB) at {:#x}, entering",
            vm.name,
            if loaded.linux_image {
                "arm64 Image"
            } else {
                "raw"
            },
            spec.kernel.len() >> 10,
            loaded.entry
        );
        trap::reset_vcpu(&mut vm, 0, loaded.entry, 0);
        match run(&mut vm, 0) {
            StopReason::PoweredOff => break,
            StopReason::Reset => log::info!("VM '{}': resetting", vm.name),
        }
    }
    let s = vm.stats;
    log::info!(
        "VM '{}' powered off (exits: {} hvc, {} smc, {} mmio, {} sysreg, {} wfi, {} irq; {} exceptions injected)",
        vm.name,
        s.hvc,
        s.smc,
        s.mmio,
        s.sysreg,
        s.wfi,
        s.irq,
        s.injected
    );
    log::info!("no VM left to run; powering off");
    power::shutdown(0)
}

/// Runs vCPU `idx` of `vm` on this CPU until the VM stops.
fn run(vm: &mut Vm, idx: usize) -> StopReason {
    vm::activate(vm);
    vm::load_vcpu(&vm.vcpus[idx]);
    loop {
        // SAFETY: `regs` is this vCPU's register block, alive for the whole call; the
        // EL2 controls for this VM were programmed by `activate`.
        let kind = unsafe { vectors::__guest_enter(&mut vm.vcpus[idx].regs) };
        let flow = match kind {
            vectors::kind::SYNC => trap::handle_sync(vm, idx),
            vectors::kind::IRQ | vectors::kind::FIQ => trap::handle_irq(vm),
            _ => trap::handle_serror(vm, idx),
        };
        if let Flow::Stop(reason) = flow {
            vm.vcpus[idx].el1.save();
            return reason;
        }
    }
}
