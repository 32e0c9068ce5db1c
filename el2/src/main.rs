//! RayOS EL2: the hypervisor binary. It owns EL2 of every physical CPU: boots from an
//! arm64 Image header, turns on its own MMU, discovers the platform from the device
//! tree, builds the VM the boot bundle defines (guest RAM behind stage-2 translation,
//! emulated devices on an MMIO bus) and runs it, handling every exit in
//! [`trap`]. Everything that can be a pure library lives in the workspace's library
//! crates; this crate holds what touches hardware, and all of the project's `unsafe`.
#![no_std]
#![no_main]

extern crate alloc;

mod accel;
mod authority;
mod boot;
mod console;
mod control;
mod diag;
mod display;
mod efi;
mod el1;
mod entropy;
mod fault;
mod firmware;
mod gic;
mod guestram;
mod guests;
mod heap;
mod input;
mod iostat;
mod irq;
mod latstat;
mod mmu;
mod power;
mod ramdisk;
mod scripts;
mod simd;
mod smp;
mod snapshot;
mod stacks;
mod storage;
mod suspend;
mod sysdisk;
mod timer;
mod tpm;
mod trap;
mod usb;
mod vectors;
mod vm;
mod wait;

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use aarch64_cpu::registers::{Readable, Writeable, ICH_HCR_EL2};
use arch::smccc::{CpuPower, PowerTopology};
use boards::{guest, Range};
use stage2::Layout;

use crate::trap::Flow;
use crate::vectors::ExitKind;
use crate::vm::{GuestRam, StartRequest, StopReason, Vcpu, Vm};

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
    if dtb == 0 || !dtb.is_multiple_of(8) {
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

/// Finds the console UART in the DTB without allocating (before the heap exists):
/// its address and kind.
fn early_uart(dtb: &[u8]) -> Option<(usize, boards::UartKind)> {
    let fdt = fdt::Fdt::new(dtb).ok()?;
    // `Fdt::chosen` panics when it cannot find /chosen (fdt 0.1.5 loses nodes
    // after FDT_NOP tokens, which libfdt-edited blobs carry): look it up first.
    // A console driver exists for a PL011 and a Qualcomm GENI UART; without a
    // stdout-path the first PL011.
    let node = fdt
        .find_node("/chosen")
        .and_then(|_| fdt.chosen().stdout())
        .filter(|n| boards::discover::uart_kind(n).is_some())
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))?;
    let kind = boards::discover::uart_kind(&node)?;
    Some((node.reg()?.next()?.starting_address as usize, kind))
}

fn fatal(msg: core::fmt::Arguments) -> ! {
    log::error!("{msg}");
    power::shutdown(fault::FATAL_STATUS)
}

/// Sets up power-off from the DTB alone (no allocation), so that a refusal before
/// discovery can still power the machine off with its status.
fn init_power_from_dtb(b: &[u8]) {
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

/// Entered from `boot` when the CPU did not start at EL2.
#[no_mangle]
extern "C" fn wrong_exception_level(dtb: usize) -> ! {
    if let Some(b) = dtb_slice(dtb) {
        if let Some((uart, kind)) = early_uart(b) {
            console::init(uart, kind);
        }
        init_power_from_dtb(b);
    }
    console::print_line(format_args!(
        "[el2 FATAL] RayOS EL2 was entered at EL1, not EL2: it must own EL2 (on QEMU use -M virt,virtualization=on). Powering off."
    ));
    power::shutdown(fault::FATAL_STATUS)
}

/// What a VM boots from; kept for resets.
#[derive(Clone)]
struct BootImage {
    kernel: &'static [u8],
    initrd: Option<&'static [u8]>,
    cmdline: alloc::string::String,
}

/// The guests' scheduling priority (the authority partition runs above them).
const GUEST_PRIORITY: u8 = 0;
/// What each guest boots from (keyed by its `Vm`'s address).
static BOOTS: spin::Mutex<Vec<(usize, BootImage)>> = spin::Mutex::new(Vec::new());

/// The primary guest (`guests`), set before any secondary CPU starts.
fn the_vm() -> &'static Vm {
    guests::primary().unwrap_or_else(|| fatal(format_args!("secondary CPU started with no VM")))
}

/// Clears guest RAM and loads the kernel, initrd and a generated device tree; returns
/// where vCPU 0 starts.
fn load_guest(vm: &Vm, boot: &BootImage) -> StartRequest {
    let mut ram = vm.ram;
    ram.reset();
    if vm.firmware.is_some() {
        return load_firmware_dt(vm);
    }
    let plan = plan_boot(vm, boot).unwrap_or_else(|e| fatal(format_args!("VM '{}': {e}", vm.name)));
    vdev::GuestMemory::write(&mut ram, plan.kernel.entry, boot.kernel)
        .unwrap_or_else(|e| fatal(format_args!("VM '{}': kernel: {e:?}", vm.name)));
    if let (Some((start, _)), Some(bytes)) = (plan.layout.initrd, boot.initrd) {
        vdev::GuestMemory::write(&mut ram, start, bytes)
            .unwrap_or_else(|e| fatal(format_args!("initrd: {e:?}")));
    }
    let dtb_ipa = plan.layout.dtb;
    vdev::GuestMemory::write(&mut ram, dtb_ipa, &plan.dt)
        .unwrap_or_else(|e| fatal(format_args!("device tree: {e:?}")));
    log::info!(
        "VM '{}': {} kernel ({} KiB) at {:#x}, initrd {} KiB, device tree at {dtb_ipa:#x}",
        vm.name,
        if plan.kernel.linux_image {
            "arm64 Image"
        } else {
            "raw"
        },
        boot.kernel.len() >> 10,
        plan.kernel.entry,
        boot.initrd.map_or(0, |i| i.len()) >> 10
    );
    StartRequest {
        entry: plan.kernel.entry,
        x0: dtb_ipa,
    }
}

/// Where a kernel boot puts what in guest RAM, decided before anything is
/// written.
struct BootPlan {
    kernel: boards::boot_image::Loaded,
    layout: boards::boot_image::BootLayout,
    dt: Vec<u8>,
}

/// The plan of `vm`'s kernel boot from `boot`, or why its files do not fit its
/// RAM (a VM record on the disk says what it boots: a hostile disk's must be
/// refused, not loaded).
fn plan_boot(vm: &Vm, boot: &BootImage) -> Result<BootPlan, alloc::string::String> {
    let kernel = boards::boot_image::place_kernel(vm.ram.ipa(), vm.ram.size(), boot.kernel)
        .map_err(|e| alloc::format!("kernel does not load: {e:?}"))?;
    let initrd_len = boot.initrd.map_or(0, |i| i.len() as u64);
    // The boot data goes below a framebuffer carved from the top of RAM.
    let below_fb = vm
        .framebuffer
        .map_or(vm.ram.size(), |f| f.base - vm.ram.ipa());
    let layout =
        boards::boot_image::place_boot_data(vm.ram.ipa(), below_fb, kernel.end, initrd_len)
            .map_err(alloc::string::String::from)?;
    let dt = boards::guest_dt::device_tree(
        &boards::guest_dt::Machine {
            vcpus: vm.vcpus(),
            ram_base: vm.ram.ipa(),
            ram_size: vm.ram.size(),
            bootargs: &boot.cmdline,
            initrd: layout.initrd,
            rng_seed: None,
        },
        &vm.devices,
    )
    .map_err(|e| alloc::format!("device tree: {e}"))?;
    Ok(BootPlan { kernel, layout, dt })
}

/// Whether `vm` can boot again: a kernel VM's files fit its RAM
/// ([`plan_boot`]); a firmware VM boots from its flash. For `vm start`, which
/// must refuse rather than stop the host.
fn can_boot(vm: &'static Vm) -> Result<(), alloc::string::String> {
    if vm.firmware.is_some() {
        return Ok(());
    }
    let found = BOOTS
        .lock()
        .iter()
        .find(|(p, _)| *p == vm as *const Vm as usize)
        .map(|(_, b)| b.clone());
    let boot = found.ok_or_else(|| alloc::string::String::from("no boot image"))?;
    plan_boot(vm, &boot).map(|_| ())
}

/// A firmware VM's boot: its device tree at the start of RAM (where QEMU puts it
/// for `-bios`, and ArmVirtQemu looks), vCPU 0 at the code bank's start.
fn load_firmware_dt(vm: &Vm) -> StartRequest {
    let mut ram = vm.ram;
    // The firmware is not shown the virtio-gpu: Debian's EDK2 VirtioGpuDxe never
    // sets QueueNum on a version-2 virtio-mmio transport (QEMU's are version 1 by
    // default), and then waits for ever on the queue the device refused. The ACPI
    // tables still list it for the OS.
    let mut devices = vm.devices.clone();
    devices.retain(|d| {
        !matches!(
            d.kind,
            boards::devices::DeviceKind::VirtioMmio {
                device: boards::devices::VirtioDevice::Gpu,
                ..
            }
        )
    });
    let dt = boards::guest_dt::device_tree(
        &boards::guest_dt::Machine {
            vcpus: vm.vcpus(),
            ram_base: vm.ram.ipa(),
            ram_size: vm.ram.size(),
            bootargs: "",
            initrd: None,
            rng_seed: None,
        },
        &devices,
    )
    .unwrap_or_else(|e| fatal(format_args!("VM '{}': device tree: {e}", vm.name)));
    let dtb_ipa = vm.ram.ipa();
    vdev::GuestMemory::write(&mut ram, dtb_ipa, &dt)
        .unwrap_or_else(|e| fatal(format_args!("device tree: {e:?}")));
    log::info!(
        "VM '{}': UEFI firmware from flash at {:#x}, device tree at {dtb_ipa:#x}",
        vm.name,
        guest::FLASH0_BASE
    );
    StartRequest {
        entry: guest::FLASH0_BASE,
        x0: dtb_ipa,
    }
}

/// Resets the VM to power-on, with vCPU 0 ready to start at the guest's entry; the
/// caller (on vCPU 0's physical CPU) runs it.
fn prepare_boot(vm: &'static Vm) {
    let found = BOOTS
        .lock()
        .iter()
        .find(|(p, _)| *p == vm as *const Vm as usize)
        .map(|(_, b)| b.clone());
    let Some(boot) = found else {
        fatal(format_args!("VM '{}': no boot image", vm.name))
    };
    if let Some(tpm) = &vm.tpm {
        tpm.reset();
    }
    // Devices before RAM: a disk's reset waits for the host device to finish with
    // guest RAM (its requests move data by DMA) before the RAM is cleared and reloaded.
    vm.reset_devices();
    let start = load_guest(vm, &boot);
    for i in 0..vm.vcpus() {
        if i != 0 {
            vm.set_power(i, CpuPower::Off);
        }
        vm.kick[i].store(false, Ordering::Relaxed);
    }
    vm.stop.store(0, Ordering::Release);
    vm.reset_owner.store(usize::MAX, Ordering::Release);
    *vm.start[0].lock() = Some(start);
    vm.set_power(0, CpuPower::On);
    let (used, total) = heap::usage();
    log::info!(
        "hypervisor heap: {} KiB of {} KiB in use",
        used >> 10,
        total >> 10
    );
}

#[no_mangle]
extern "C" fn rust_main(dtb: usize, efi_handoff: usize) -> ! {
    let Some(dtb_bytes) = dtb_slice(dtb) else {
        // No console is known without a DTB; nothing can be reported.
        power::shutdown(fault::FATAL_STATUS)
    };
    if let Some((uart, kind)) = early_uart(dtb_bytes) {
        console::init(uart, kind);
    }
    console::init_log(
        fdt::Fdt::new(dtb_bytes)
            .ok()
            .and_then(|f| f.find_node("/chosen")?.property("bootargs")?.as_str())
            .is_some_and(boards::devices::debug_log),
    );
    init_power_from_dtb(dtb_bytes);
    log::info!(
        "RayOS EL2 {} starting at EL2, image at {:#x}, DTB at {dtb:#x}",
        env!("CARGO_PKG_VERSION"),
        image_range().base
    );

    // Identity map: RAM from the DTB as normal memory; console, GIC and virtio-mmio
    // transports as devices.
    {
        let fdt = fdt::Fdt::new(dtb_bytes)
            .unwrap_or_else(|_| fatal(format_args!("malformed device tree")));
        let mut ram = [(0u64, 0u64); 8];
        let nram = fdt.memory().regions().take(8).fold(0, |n, r| {
            ram[n] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
            n + 1
        });
        let mut devices = [(0u64, 0u64); 48];
        let mut ndev = 0;
        // Every UART the console could drive (`early_uart`), the GIC, virtio-mmio.
        let nodes = fdt.all_nodes().filter(|n| {
            boards::discover::uart_kind(n).is_some()
                || n.compatible().is_some_and(|c| {
                    c.all()
                        .any(|s| matches!(s, "arm,gic-v3" | "virtio,mmio" | "arm,pl031"))
                })
        });
        for node in nodes {
            let rtc = node
                .compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,pl031"));
            for r in node.reg().into_iter().flatten() {
                if ndev < devices.len() {
                    devices[ndev] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
                    ndev += 1;
                    if rtc {
                        firmware::set_host_rtc(r.starting_address as u64);
                    }
                }
            }
        }
        if let Err(e) = stacks::check_layout() {
            fatal(format_args!("hypervisor image: {e}"));
        }
        if let Err(e) = mmu::enable(&ram[..nram], &devices[..ndev], stacks::guard_pages()) {
            fatal(format_args!("cannot build the EL2 identity map: {e:?}"));
        }
    }
    heap::init();
    let cpu = diag::cpu_features();
    if let Err(why) = diag::report_cpu(&cpu) {
        fatal(format_args!("this CPU cannot run RayOS EL2: {why}"));
    }
    let (l1, l2, l3) = mmu::usage();
    log::info!(
        "EL2 identity map built ({l1} level-1, {l2} level-2 and {l3} level-3 tables, stack guard pages unmapped); MMU and caches on"
    );

    let mut platform =
        boards::discover(dtb_bytes).unwrap_or_else(|e| fatal(format_args!("device tree: {e:?}")));
    power::init(platform.psci, platform.board.map(|b| b.power_off));
    entropy::init(&mut platform.seed);
    let me = el1::read_sysreg!("MPIDR_EL1") & arch::smccc::MPIDR_AFFINITY_MASK;
    let boot_cpu = platform.cpus.iter().position(|c| *c == me).unwrap_or(0);
    log::info!(
        "platform: {} ({}), {} CPU(s) (boot CPU {me:#x}), RAM {} MiB",
        platform.model,
        platform.board.map_or("unknown board", |b| b.name),
        platform.cpus.len(),
        platform.memory.iter().map(|r| r.size >> 20).sum::<u64>()
    );
    diag::report_platform(&platform, &cpu);
    for what in &platform.fallbacks {
        log::warn!("the firmware does not describe the {what}: using the board description's");
    }
    if let Some(board) = platform.board {
        for m in boards::crosscheck(&platform, board) {
            log::warn!("board {}: {m}", board.name);
        }
    }
    let maintenance = platform.gic.maintenance_intid.unwrap_or_else(|| {
        log::warn!(
            "the device tree names no GIC maintenance interrupt; assuming INTID {}",
            guest::MAINTENANCE_INTID
        );
        guest::MAINTENANCE_INTID
    });
    irq::set_hyp_irqs(irq::HypIrqs {
        htimer: platform.timer.hyp,
        vtimer: platform.timer.virt,
        maintenance,
    });
    if let Err(e) = gic::init(&platform.gic, &platform.cpus, boot_cpu) {
        fatal(format_args!("GIC initialisation failed: {e:?}"));
    }
    // The console's receive interrupt (PL011 or GENI: both console drivers take it).
    if let Some(boards::Uart {
        intid: Some(intid), ..
    }) = platform.uart
    {
        gic::enable_spi(intid);
        wait::set_uart_intid(intid);
        console::set_rx_interrupt(true);
    }

    let mut used: Vec<Range> = alloc::vec![
        image_range(),
        Range {
            base: dtb as u64,
            size: dtb_bytes.len() as u64
        }
    ];
    // Started as a UEFI application: the boot bundle it read from the ESP, and
    // what the firmware's memory map keeps.
    platform.initrd = platform.initrd.or(efi::bundle(efi_handoff));
    used.extend(platform.initrd);
    used.extend(efi::reserved(efi_handoff));
    used.extend(platform.reserved.iter().copied());
    // The authority partition's image, where QEMU's loader put it
    // (`rayos.authority=BASE,SIZE`): kept out of every allocation.
    let authority_image = fdt::Fdt::new(dtb_bytes)
        .ok()
        .and_then(|f| f.find_node("/chosen")?.property("bootargs")?.as_str())
        .and_then(boards::devices::authority_image)
        .map(|(base, size)| Range { base, size })
        .filter(|r| {
            let inside = platform
                .memory
                .iter()
                .any(|m| m.contains(r.base) && r.end() <= m.end());
            if !inside {
                log::error!(
                    "the authority partition's image {:#x}+{:#x} is not in RAM: not started",
                    r.base,
                    r.size
                );
            }
            inside
        });
    used.extend(authority_image);
    let mut pmem = boards::memmap::PhysMem::new(&platform.memory, &used);

    // What to boot: a boot bundle passed as the initrd (direct boot) wins; otherwise
    // the system disk's autostart VM.
    let storage = storage::open(&platform.virtio_mmio);
    let from_disk = platform.initrd.is_none() && storage.is_some();
    let mut specs: Vec<storage::VmDefinition> = match (platform.initrd, storage) {
        (Some(bundle_range), storage) => {
            if storage.is_some() {
                log::info!("a boot bundle was given: booting it; system-disk VMs are not started");
            }
            // SAFETY: the loader placed the initrd at this physical range, which lies in
            // RAM (identity-mapped), is excluded from every allocation, and is never written.
            let bundle: &'static [u8] =
                unsafe { core::slice::from_raw_parts(bundle_range.base as *const u8, bundle_range.size as usize) };
            alloc::vec![from_bundle(bundle, &mut pmem)]
        }
        (None, Some(mut st)) => {
            // `cargo xtask run --vm NAME[,NAME…]` passes `rayos.vm=…` as QEMU's -append.
            let bootargs = fdt::Fdt::new(dtb_bytes)
                .ok()
                .and_then(|f| f.find_node("/chosen")?.property("bootargs")?.as_str());
            let chosen = bootargs.and_then(registry::choice::vm_from_bootargs);
            let defs = storage::autostart(&mut st, &mut pmem, chosen)
                .unwrap_or_else(|e| fatal(format_args!("{e}")));
            storage::keep(st);
            defs
        }
        (None, None) => fatal(format_args!(
            "nothing to boot: no boot bundle (initrd) and no system disk with an autostart VM (cargo xtask run sets one up)"
        )),
    };
    if specs.len() > guests::MAX {
        fatal(format_args!(
            "{} VMs chosen, but the hypervisor runs at most {} at once",
            specs.len(),
            guests::MAX
        ));
    }

    // Every guest's RAM (and flash) first: the snapshot pool takes what is left.
    let mut placed: Vec<(u64, Option<firmware::Reserved>)> = Vec::new();
    for spec in &specs {
        let mem = spec.mem.next_multiple_of(GUEST_RAM_ALIGN);
        let Some(ram_pa) = pmem.alloc(mem, GUEST_RAM_ALIGN) else {
            fatal(format_args!(
                "VM '{}' wants {} MiB of RAM but only {} MiB are free{}",
                spec.name,
                mem >> 20,
                pmem.free_bytes() >> 20,
                if placed.is_empty() {
                    ""
                } else {
                    " (after the VMs before it)"
                }
            ))
        };
        let flash = spec.firmware.as_ref().map(|fw| {
            firmware::reserve(&mut pmem, fw)
                .unwrap_or_else(|e| fatal(format_args!("VM '{}': {e}", spec.name)))
        });
        placed.push((ram_pa, flash));
    }
    let authority_pa = authority_image.map(|_| {
        pmem.alloc(authority::RAM_BYTES, GUEST_RAM_ALIGN)
            .unwrap_or_else(|| {
                fatal(format_args!(
                    "the authority partition needs {} MiB of RAM; {} MiB are free",
                    authority::RAM_BYTES >> 20,
                    pmem.free_bytes() >> 20
                ))
            })
    });
    // Scheduler tasks: every guest's vCPUs in turn, then the authority
    // partition's one.
    let authority_tasks = usize::from(authority_image.is_some());
    // The registry's other VMs are built too, off until `vm start`, as far as
    // guest slots, vCPU tasks and memory go (after the partition's RAM; the
    // snapshot pool takes what is left).
    let started = specs.len();
    if from_disk {
        let ids: Vec<registry::Uuid> = specs.iter().filter_map(|s| s.identity).collect();
        let mut vcpus_taken: usize = specs.iter().map(|s| s.vcpus as usize).sum();
        for spec in storage::held(&mut pmem, &ids) {
            let vcpus = spec.vcpus as usize;
            let mem = spec.mem.next_multiple_of(GUEST_RAM_ALIGN);
            let why = if specs.len() >= guests::MAX {
                Some(alloc::format!(
                    "the hypervisor holds at most {} VMs",
                    guests::MAX
                ))
            } else if vcpus_taken + vcpus + authority_tasks > stacks::MAX_VCPUS {
                Some(alloc::format!(
                    "its {vcpus} vCPU(s) do not fit beside the {vcpus_taken} the hypervisor runs already (at most {})",
                    stacks::MAX_VCPUS - authority_tasks
                ))
            } else {
                None
            };
            let placed_one = match why {
                Some(why) => Err(why),
                None => match pmem.alloc(mem, GUEST_RAM_ALIGN) {
                    None => Err(alloc::format!(
                        "it wants {} MiB of RAM, {} MiB are free",
                        mem >> 20,
                        pmem.free_bytes() >> 20
                    )),
                    Some(ram_pa) => match spec.firmware.as_ref() {
                        Some(fw) => firmware::reserve(&mut pmem, fw)
                            .map(|f| (ram_pa, Some(f)))
                            .map_err(|e| alloc::string::ToString::to_string(&e)),
                        None => Ok((ram_pa, None)),
                    },
                },
            };
            match placed_one {
                Ok(p) => {
                    log::info!(
                        "VM '{}' is not started at this host boot: it is off until `vm start {}`",
                        spec.name,
                        spec.name
                    );
                    vcpus_taken += vcpus;
                    placed.push(p);
                    specs.push(spec);
                }
                Err(why) => log::warn!(
                    "VM '{}' is not built at this host boot, so `vm start` cannot start it until the next: {why}",
                    spec.name
                ),
            }
        }
    }
    let mmfr0 = el1::read_sysreg!("ID_AA64MMFR0_EL1");
    let layout = Layout::from_mmfr0(mmfr0, GUEST_IPA_BITS)
        .unwrap_or_else(|e| fatal(format_args!("stage-2 layout: {e:?}")));
    // The physical CPUs the vCPUs time-share, the boot CPU first: (MPIDR, DT index).
    let mut pcpus: Vec<(u64, usize)> = alloc::vec![(platform.cpus[boot_cpu], boot_cpu)];
    pcpus.extend(
        platform
            .cpus
            .iter()
            .copied()
            .enumerate()
            .filter(|&(i, _)| i != boot_cpu)
            .map(|(i, m)| (m, i)),
    );
    if pcpus.len() > stacks::MAX_CPUS {
        log::warn!(
            "{} physical CPUs; scheduling on the first {}",
            pcpus.len(),
            stacks::MAX_CPUS
        );
        pcpus.truncate(stacks::MAX_CPUS);
    }
    // The last guest started may be cut down to the tasks left; a guest with
    // no task left is refused.
    let mut task_bases = Vec::new();
    let mut tasks = 0;
    for spec in &specs {
        let left = stacks::MAX_VCPUS - authority_tasks - tasks;
        let vcpus = (spec.vcpus as usize).min(left);
        if vcpus == 0 {
            fatal(format_args!(
                "VM '{}' gets no vCPU: the VMs before it take all {} the hypervisor runs",
                spec.name,
                stacks::MAX_VCPUS - authority_tasks
            ));
        }
        if vcpus < spec.vcpus as usize {
            log::warn!(
                "VM '{}' asks for {} vCPUs but the hypervisor runs at most {vcpus} more",
                spec.name,
                spec.vcpus,
            );
        }
        task_bases.push((tasks, vcpus));
        tasks += vcpus;
    }
    smp::init(pcpus, tasks + authority_tasks);
    snapshot::give_pool(&mut pmem);

    let mut guests: Vec<&'static Vm> = Vec::new();
    let mut resumes = Vec::new();
    for (i, (spec, ((ram_pa, flash), (task_base, vcpus)))) in specs
        .into_iter()
        .zip(placed.into_iter().zip(task_bases))
        .enumerate()
    {
        // `None`: held off (as if powered off) until `vm start`.
        resumes.push((i < started).then_some(spec.resume));
        let vm = build_guest(spec, i, ram_pa, flash, layout, task_base, vcpus);
        if i >= started {
            vm.stop
                .store(vm::StopReason::PoweredOff as u8, Ordering::Release);
        }
        smp::register(vm, GUEST_PRIORITY);
        guests.push(vm);
    }
    guests::set(guests);
    for &vm in &guests::all()[..started] {
        guests::mark_started(vm);
    }
    let primary = the_vm();
    display::start(&platform.virtio_mmio);
    for &vm in guests::all() {
        display::register(vm);
    }
    // A VM held off shows nothing until it is started and presented.
    for &vm in &guests::all()[started..] {
        if let Err(e) = display::change(vm, 0, monitor::command::DisplayChange::Hide) {
            log::warn!("display: VM '{}' stays on the desk while off: {e}", vm.name);
        }
    }
    if guests::several() {
        log::info!(
            "{} guests run side by side: the console's input goes to '{}' (console lines of the others start with their name); physical input goes to the VM under the pointer, the keyboard to the one last clicked",
            started,
            primary.name
        );
    }
    if let (Some(img), Some(pa)) = (authority_image, authority_pa) {
        // SAFETY: the range lies in RAM (checked above), identity-mapped, and was
        // kept out of every allocation; QEMU's loader wrote the image there and
        // nothing else writes it.
        let bytes: &[u8] =
            unsafe { core::slice::from_raw_parts(img.base as *const u8, img.size as usize) };
        let vm = authority::build(bytes, pa, layout, tasks)
            .unwrap_or_else(|e| fatal(format_args!("authority partition: {e}")));
        authority::start(vm, primary);
    }
    input::start(guests::all(), &platform.virtio_mmio);
    let (used, total) = heap::usage();
    log::info!(
        "hypervisor heap: {} KiB of {} KiB in use",
        used >> 10,
        total >> 10
    );
    let up = smp::start_secondaries();
    log::info!("{up} physical CPU(s) scheduling vCPUs");
    for (&vm, resume) in guests::all().iter().zip(resumes) {
        let Some(resume) = resume else {
            continue;
        };
        let resumed = resume.is_some_and(|blob| resume_or_cold_boot(vm, blob));
        if !resumed {
            if let Err(e) = smp::start_vcpu(vm, 0, true) {
                fatal(format_args!(
                    "VM '{}': cannot start vCPU 0 (PSCI {e})",
                    vm.name
                ));
            }
        }
    }
    smp::pcpu_loop(primary, 0)
}

/// Builds guest `index` from `spec`: its RAM at `ram_pa` behind stage 2 (VMID
/// [`guests::vmid`]), its devices, firmware and framebuffer; its `vcpus` vCPUs
/// are scheduler tasks from `task_base`. The VM lives for the hypervisor's life.
fn build_guest(
    spec: storage::VmDefinition,
    index: usize,
    ram_pa: u64,
    flash: Option<firmware::Reserved>,
    layout: Layout,
    task_base: usize,
    vcpus: usize,
) -> &'static Vm {
    let mem = spec.mem.next_multiple_of(GUEST_RAM_ALIGN);
    let vmid = guests::vmid(index);
    let ram = GuestRam::new(guest::RAM_BASE, ram_pa, mem, layout, vmid)
        .unwrap_or_else(|e| fatal(format_args!("stage-2 tables: {e:?}")));
    // The VM's device list: its profile and what the boot asks for.
    let shape = vm::DeviceShape {
        profile: match spec.firmware {
            Some(_) => boards::devices::Profile::UefiAcpi,
            None => boards::devices::Profile::LinuxDt,
        },
        pcie: spec.nvme.is_some() || spec.virtio_pci.is_some() || spec.usb.is_some(),
        msi: spec.msi,
        framebuffer: spec
            .firmware
            .is_none()
            .then(|| boards::devices::simple_framebuffer(&spec.cmdline, ram.ipa(), ram.size()))
            .flatten(),
        vars_bank_size: firmware::VARS_BANK_SIZE,
        tpm: true,
        console: index,
    };
    let mut vm = Vm::new(&spec.name, ram, vcpus, spec.disks, spec.tpm_nv, shape)
        .unwrap_or_else(|e| fatal(format_args!("VM setup: {e:?}")));
    if let (Some(fw), Some(flash)) = (&spec.firmware, flash) {
        let store = match spec.vars_place {
            Some((disk, store)) => firmware::VarStore::Disk { disk, store },
            None => firmware::VarStore::Memory,
        };
        let clock = firmware::HostClock::new(spec.identity, spec.rtc_offset);
        let fw = firmware::build(ram, flash, fw, store, clock, vcpus as u32, &vm.devices)
            .unwrap_or_else(|e| fatal(format_args!("VM '{}': {e}", spec.name)));
        vm.attach_firmware(fw)
            .unwrap_or_else(|e| fatal(format_args!("VM setup: {e:?}")));
    }
    if spec.nvme.is_some() || spec.virtio_pci.is_some() || spec.usb.is_some() {
        vm.attach_pcie(spec.nvme, spec.virtio_pci, spec.usb)
            .unwrap_or_else(|e| fatal(format_args!("VM setup: {e:?}")));
    }
    vm.identity = spec.identity;
    if vm.firmware.is_none() {
        if let Some(fb) = boards::devices::framebuffer_of(&vm.devices) {
            match vm.attach_framebuffer(fb) {
                Ok(()) => log::info!(
                    "VM '{}': simple framebuffer {}x{} at {:#x}",
                    vm.name,
                    fb.width,
                    fb.height,
                    fb.base
                ),
                Err(e) => log::warn!("VM '{}': no simple framebuffer: {e}", vm.name),
            }
        }
    }
    log::info!("VM '{}': MMIO bus: {}", vm.name, vm.bus_map());
    vm.run
        .set_suspend_on_host_shutdown(spec.policy.is_some_and(|p| p.suspend_on_host_shutdown));
    log::info!(
        "VM '{}': {} vCPU(s), {} MiB RAM at IPA {:#x} (PA {:#x}), stage 2 {}-bit IPA, start level {}",
        vm.name,
        vm.vcpus(),
        mem >> 20,
        guest::RAM_BASE,
        ram_pa,
        layout.ipa_bits,
        layout.start_level
    );
    if let Some(id) = spec.identity {
        log::info!("VM '{}' identity {id}", vm.name);
    }
    vm.task_base = task_base;
    let vm: &'static Vm = alloc::boxed::Box::leak(alloc::boxed::Box::new(vm));
    BOOTS.lock().push((
        vm as *const Vm as usize,
        BootImage {
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
        },
    ));
    vm
}

/// Starts guest `vm` again after it powered off or was suspended (the
/// partition's VM_START): its registry record chooses between its saved state
/// and a cold boot, as at host boot, and counts the start. Every vCPU of `vm`
/// is off.
fn restart_guest(vm: &'static Vm) -> Result<(), alloc::string::String> {
    // Checked first: a resume that fails cold boots.
    can_boot(vm)?;
    let blob = match vm.identity {
        Some(uuid) => storage::restart_decision(uuid)?,
        None => None,
    };
    log::info!("VM '{}': starting again", vm.name);
    guests::mark_started(vm);
    // A suspend left it paused; a stop request is what ended it.
    vm.run.clear_pause();
    vm.stop.store(0, Ordering::Release);
    if blob.is_some_and(|b| resume_or_cold_boot(vm, b)) {
        return Ok(());
    }
    smp::start_vcpu(vm, 0, true).map_err(|e| alloc::format!("vCPU 0 did not start (PSCI {e})"))
}

/// Resumes `vm` from its saved image `blob`: on success its vCPUs that were on are
/// made runnable from their saved state (`true`); otherwise the reason is logged
/// and the caller cold boots the same VM.
fn resume_or_cold_boot(vm: &'static Vm, blob: registry::Blob) -> bool {
    match suspend::resume_vm(vm, blob) {
        Ok(()) => {
            for i in 0..vm.vcpus() {
                if vm.resume_slots[i].lock().is_some() {
                    vm.set_power(i, CpuPower::On);
                    if let Err(e) = smp::start_vcpu(vm, i, false) {
                        fatal(format_args!(
                            "cannot start vCPU {i} to resume it (PSCI {e})"
                        ));
                    }
                }
            }
            true
        }
        Err(why) => {
            log::warn!("VM '{}': cold boot instead of resuming: {why}", vm.name);
            // The failed attempt may have restored part of the image: drop the slots;
            // `prepare_boot` resets RAM and every device.
            for s in &vm.resume_slots {
                *s.lock() = None;
            }
            vm.set_cntvoff(0);
            if let Some(u) = vm.identity {
                storage::discard_after_failed_resume(u);
            }
            false
        }
    }
}

/// The VM a boot bundle defines, with its RAM disk if it asks for one.
fn from_bundle(bundle: &'static [u8], pmem: &mut boards::memmap::PhysMem) -> storage::VmDefinition {
    let spec = vmspec::parse_bundle(bundle)
        .unwrap_or_else(|e| fatal(format_args!("boot bundle refused: {e:?}")));
    if let Some(f) = spec.fault {
        fault::deliberate(f);
    }
    vm::set_pmu_policy(arch::controls::PmuPolicy {
        el2_counting: spec.pmu_el2_counting,
    });
    let mut disks: Vec<alloc::boxed::Box<dyn vdev::AsyncBlock + Send>> = Vec::new();
    if let Some(size) = spec.disk {
        let Some(pa) = pmem.alloc(size, 4096) else {
            fatal(format_args!(
                "VM '{}' wants a {} MiB RAM disk but memory is short",
                spec.name,
                size >> 20
            ))
        };
        disks.push(alloc::boxed::Box::new(snapshot::Unlogged(vdev::SyncBlock(
            ramdisk::RamDisk::new(pa, size),
        ))));
        log::info!(
            "VM '{}': {} KiB RAM disk as virtio-blk 0",
            spec.name,
            size >> 10
        );
    }
    let nvme = spec.nvme.map(|size| {
        let Some(pa) = pmem.alloc(size, 4096) else {
            fatal(format_args!(
                "VM '{}' wants a {} MiB NVMe RAM disk but memory is short",
                spec.name,
                size >> 20
            ))
        };
        log::info!(
            "VM '{}': {} KiB RAM disk as NVMe namespace 1 (PCIe 00:{:02x}.0)",
            spec.name,
            size >> 10,
            boards::devices::NVME_PCI_DEVICE
        );
        let disk: alloc::boxed::Box<dyn vdev::AsyncBlock + Send> = alloc::boxed::Box::new(
            snapshot::Unlogged(vdev::SyncBlock(ramdisk::RamDisk::new(pa, size))),
        );
        disk
    });
    let virtio_pci = spec.virtio_pci.map(|size| {
        let Some(pa) = pmem.alloc(size, 4096) else {
            fatal(format_args!(
                "VM '{}' wants a {} MiB virtio-PCI RAM disk but memory is short",
                spec.name,
                size >> 20
            ))
        };
        log::info!(
            "VM '{}': {} KiB RAM disk as virtio-blk over virtio-PCI (00:{:02x}.0)",
            spec.name,
            size >> 10,
            boards::devices::VIRTIO_PCI_BLK_DEVICE
        );
        let disk: alloc::boxed::Box<dyn vdev::AsyncBlock + Send> =
            alloc::boxed::Box::new(vdev::SyncBlock(ramdisk::RamDisk::new(pa, size)));
        disk
    });
    let usb = spec.usb.then(|| {
        let storage = spec.usb_storage.and_then(|image| {
            log::info!(
                "VM '{}': {} KiB read-only image as USB mass storage (xHCI at PCIe 00:{:02x}.0)",
                spec.name,
                image.len() >> 10,
                boards::devices::XHCI_PCI_DEVICE
            );
            let medium: usb::Medium =
                alloc::boxed::Box::new(xhci::host::ReadOnlyImage::new(image)?);
            Some(medium)
        });
        usb::Usb { storage }
    });
    // A bundle has no record: its MSI controller is a word of its command line.
    let msi = boards::devices::msi_of(&spec.cmdline);
    storage::VmDefinition {
        name: spec.name,
        identity: None,
        vcpus: spec.vcpus,
        mem: spec.mem,
        kernel: spec.kernel,
        initrd: spec.initrd,
        cmdline: spec.cmdline,
        disks,
        nvme,
        virtio_pci,
        usb,
        tpm_nv: None,
        resume: None,
        policy: None,
        firmware: spec.firmware,
        vars_place: None,
        rtc_offset: 0,
        msi,
    }
}

/// Entered (from `boot`) on a secondary physical CPU started by `smp` with its
/// number as the context id: its scheduler loop.
#[no_mangle]
extern "C" fn secondary_main(ctx: u64) -> ! {
    mmu::enable_secondary();
    let vm = the_vm();
    let k = smp::decode_start(ctx).unwrap_or_else(|| {
        fatal(format_args!(
            "physical CPU started with bad context {ctx:#x}"
        ))
    });
    gic::init_secondary(smp::redist_of(k));
    smp::pcpu_loop(vm, k)
}

/// The start of vCPU `idx`'s run, on its own stack (`smp`): boots the VM first if
/// it is the boot vCPU of a (re)boot, then runs the vCPU until it stops. A reset
/// coordinated by vCPU 0 loops here, so every boot starts from this frame and
/// resets never deepen the stack; one coordinated by another vCPU ends that vCPU
/// and starts vCPU 0 on a fresh stack.
#[no_mangle]
extern "C" fn vcpu_main(task: usize) -> ! {
    let (vm, idx, mut boot) = smp::fresh_start(task);
    loop {
        if boot {
            prepare_boot(vm);
        } else {
            vm.set_power(idx, CpuPower::On);
        }
        match run_vcpu_here(vm, idx) {
            Flow::CpuOff | Flow::Continue => smp::exit_vcpu(vm, idx, false),
            Flow::Stop(StopReason::PoweredOff) => powered_off(vm, idx),
            Flow::Stop(StopReason::Reset) => {
                if !reset_coordinator(vm, idx) {
                    smp::exit_vcpu(vm, idx, false)
                }
                log::info!("VM '{}': resetting", vm.name);
                // Every other vCPU ends itself on seeing the reset (a blocked one is
                // woken by `request_stop`); they need this CPU if it is the only one.
                while (0..vm.vcpus()).any(|i| i != idx && vm.power(i) != CpuPower::Off) {
                    smp::yield_ended(vm, idx);
                }
                if idx != 0 {
                    // vCPU 0 boots the VM again, on a fresh stack.
                    smp::exit_vcpu(vm, idx, true)
                }
                boot = true;
            }
        }
    }
}

/// Runs vCPU `idx` of `vm` on this physical CPU until it stops; returns why.
fn run_vcpu_here(vm: &'static Vm, idx: usize) -> Flow {
    let mut vcpu = Vcpu::new(idx);
    let resumed = vm.resume_slots[idx].lock().take();
    if let Some(state) = resumed {
        suspend::apply(&mut vcpu, &state);
    } else {
        let Some(start) = vm.start[idx].lock().take() else {
            fatal(format_args!("vCPU {idx} started without a start address"))
        };
        trap::reset_vcpu(&mut vcpu, start);
    }
    let flow = run(vm, &mut vcpu);
    vm.stats.lock().add(&vcpu.stats);
    flow
}

/// The VM powered off (from vCPU `idx`): report, and power the machine off if no
/// other guest still runs.
fn powered_off(vm: &Vm, idx: usize) -> ! {
    vm.request_stop(StopReason::PoweredOff, idx);
    let s = *vm.stats.lock();
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
    log::info!(
        "VM '{}' touched {} MiB of its {} MiB of RAM",
        vm.name,
        vm.ram.populated_bytes() >> 20,
        vm.ram.size() >> 20
    );
    // Every guest marks itself stopped before it counts the others: of two
    // powering off at once, at least one sees the other stopped.
    core::sync::atomic::fence(Ordering::SeqCst);
    match guests::still_on() {
        0 if authority::get().is_some_and(|a| !core::ptr::eq(a, vm)) => {
            log::info!(
                "no VM left to run; the host stays up for the authority partition (its `host shutdown` powers it off)"
            );
            smp::exit_vcpu(vm, idx, false)
        }
        0 => {
            iostat::report("power-off");
            latstat::report();
            log::info!("no VM left to run; powering off");
            power::shutdown(0)
        }
        n => {
            log::info!("{n} VM(s) still run; the host stays up");
            smp::exit_vcpu(vm, idx, false)
        }
    }
}

fn reset_coordinator(vm: &Vm, idx: usize) -> bool {
    if vm
        .reset_owner
        .compare_exchange(usize::MAX, idx, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        vm.request_stop(StopReason::Reset, idx);
        return true;
    }
    false
}

/// The run loop of one vCPU on this physical CPU: enter the guest, handle the exit,
/// keep the list registers in step with the vGIC, until the vCPU stops.
fn run(vm: &Vm, vcpu: &mut Vcpu) -> Flow {
    let idx = vcpu.idx;
    vm::activate(vm);
    vm::load_vcpu(vcpu);
    smp::started_here(vm, idx);
    let vtimer = irq::hyp_irqs().vtimer;
    gic::deactivate_private(vtimer, smp::this_redist());
    if let Err(e) = vm
        .vgic
        .lock()
        .set_hw_mapping(idx, guest::VTIMER_INTID, vtimer)
    {
        log::warn!(
            "{}: virtual timer of vCPU {idx} not hardware-linked: {e:?}",
            vm.name
        );
    }
    wait::update_ptimer(vm, vcpu);
    let mut lrs = irq::HwListRegisters::new();
    let kick = &vm.kick[idx];
    loop {
        if let Some(r) = vm.stopping() {
            vcpu.el1.save();
            return if r == StopReason::Reset {
                Flow::Stop(r)
            } else {
                Flow::CpuOff
            };
        }
        if vcpu.lrs.any() || (kick.load(Ordering::Acquire) && kick.swap(false, Ordering::AcqRel)) {
            match vm.vgic.lock().flush(idx, &mut lrs) {
                Ok(out) => {
                    // The vGIC requests maintenance interrupts only for left-over
                    // interrupts (`vgic::IchHcr::for_entry`).
                    vcpu.lrs = vm::LrState::new(out.loaded > 0, out.left_over > 0);
                    ICH_HCR_EL2.set(out.hcr().0);
                }
                Err(e) => log::warn!("{}: vGIC flush for vCPU {idx}: {e:?}", vm.name),
            }
        }
        iostat::entering(vm.task_base + idx);
        latstat::entering(vm.task_base + idx);
        // SAFETY: `regs` is this vCPU's register block, alive for the whole call; the
        // EL2 controls for this VM were programmed by `activate`.
        let kind = unsafe { vectors::guest_enter(&mut vcpu.regs) };
        iostat::exit(idx, kind == ExitKind::Sync as u64);
        latstat::exit(vm.task_base + idx, kind == ExitKind::Sync as u64);
        // The maintenance interrupt is level-sensitive and `sync` empties the list
        // registers, so an armed underflow / no-pending request would keep it asserted
        // at EL2 for ever: take back every request (keeping EOIcount, the guest's
        // deactivations that found no list register) before anything else runs.
        if vcpu.lrs.any() {
            let mut eoi_count = 0;
            if vcpu.lrs.overflow() {
                eoi_count = vgic::IchHcr(ICH_HCR_EL2.get()).eoi_count();
                ICH_HCR_EL2.set(vgic::IchHcr::EXIT.0);
            }
            if vcpu.lrs.loaded() {
                if let Err(e) = vm.vgic.lock().sync(idx, &mut lrs, eoi_count) {
                    log::warn!("{}: vGIC sync for vCPU {idx}: {e:?}", vm.name);
                }
            }
        }
        wait::sync_vtimer(vm, vcpu);
        // Synchronous exits (hypercalls, MMIO), the most frequent, are tested first
        // and go straight back to the guest when handled.
        let flow = if kind == ExitKind::Sync as u64 {
            trap::handle_sync(vm, vcpu)
        } else {
            other_exit(vm, vcpu, kind)
        };
        if flow != Flow::Continue {
            vcpu.el1.save();
            if let Flow::Stop(r) = flow {
                vm.request_stop(r, idx);
            }
            return flow;
        }
    }
}

/// The exits other than synchronous ones: interrupts and SErrors.
#[inline(never)]
fn other_exit(vm: &Vm, vcpu: &mut Vcpu, kind: u64) -> Flow {
    match ExitKind::from_raw(kind) {
        Some(ExitKind::Sync) => trap::handle_sync(vm, vcpu),
        Some(ExitKind::Irq | ExitKind::Fiq) => {
            vcpu.stats.irq += 1;
            wait::service_irqs(vm, vcpu);
            display::tick(false);
            smp::preempt_check(vm, vcpu);
            Flow::Continue
        }
        Some(ExitKind::SError) => trap::handle_serror(vm, vcpu),
        None => fatal(format_args!(
            "world switch returned unknown exception kind {kind}"
        )),
    }
}
