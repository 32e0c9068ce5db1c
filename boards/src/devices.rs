//! One description of a VM's devices (docs/architecture.md, "Describing a VM's
//! devices once"): [`device_list`] is where the MMIO windows, SPIs and models of
//! a profile's devices are chosen (from the constants of [`crate::guest`]). Its
//! consumers walk it: the device tree (`guest_dt::device_tree`), the ACPI tables
//! (`acpi_gen::profile::from_devices`) and el2's MMIO bus ([`bus_entries`], which
//! el2 inserts models at). Host tests check that the three agree for every profile.

use alloc::vec::Vec;

use crate::guest;

/// The guest platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A kernel booted with a device tree.
    LinuxDt,
    /// UEFI firmware in flash, ACPI tables through fw_cfg.
    UefiAcpi,
}

/// How an interrupt line signals (active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Level,
    Edge,
}

/// A device's interrupt: an SPI as a GIC INTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    pub intid: u32,
    pub trigger: Trigger,
}

/// What a device is (the models the hypervisor has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The PL011 console.
    Pl011,
    /// The PL031 real-time clock (the host's time plus the VM's offset).
    Pl031,
    /// The PL061 GPIO controller carrying the TPM's bit-banged SPI bus.
    Pl061Tpm,
    /// A virtio-mmio transport in `slot` (only the slots with a device) and the
    /// device behind it.
    VirtioMmio { slot: u64, device: VirtioDevice },
    /// QEMU's fw_cfg.
    FwCfg,
    /// CFI flash bank 0 (firmware code, read-only) or 1 (variable store).
    Flash { bank: u8 },
    /// The TPM's Command Response Buffer interface (five 4 KiB locality pages) on
    /// the platform bus: a `tcg,tpm-tis-mmio` node in the firmware's device tree
    /// (EDK2 finds the base there and tells CRB from TIS by the interface ID
    /// register), `MSFT0101` in the DSDT and the TPM2 table for the OS.
    TpmCrb,
    /// One window of the PCI Express root complex; the ECAM entry carries the
    /// first INTx SPI (INTA of device 0; INTB..INTD follow).
    Pcie { window: PcieWindow },
    /// The GICv2m MSI frame of the root complex; its entry's interrupt is the
    /// first of `spis` SPIs it raises.
    Gicv2m { spis: u32 },
    /// The GICv3 ITS of the root complex (control and translation frames): MSIs
    /// become LPIs, the DeviceID is the function's requester ID.
    GicIts,
    /// A `simple-framebuffer` in guest RAM (not MMIO): the entry's window is the
    /// RAM reserved for it, the pixels start at its base.
    SimpleFramebuffer {
        width: u32,
        height: u32,
        stride: u32,
    },
}

/// The windows of a PCI Express root complex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcieWindow {
    /// Configuration space (ECAM).
    Ecam,
    /// The 32-bit memory window.
    Mmio32,
    /// The I/O window.
    Io,
}

/// What is behind a virtio-mmio transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioDevice {
    /// The VM's disk number `disk` (virtio-blk).
    Blk {
        disk: u8,
    },
    Gpu,
    Rng,
    Console,
    /// virtio-input keyboard (Linux guests; Windows gets USB HID).
    Keyboard,
    /// virtio-input tablet: absolute pointer in guest pixels, buttons, wheel.
    Tablet,
}

/// The slots of a Linux VM's virtio-input keyboard and tablet, just before the
/// GPU's (disks take the slots before them).
pub const VIRTIO_KEYBOARD_SLOT: u64 = guest::VIRTIO_GPU_SLOT - 2;
pub const VIRTIO_TABLET_SLOT: u64 = guest::VIRTIO_GPU_SLOT - 1;

/// The device every VM has in virtio-mmio `slot`: disks fill the slots from the
/// first, the input devices take the two before the GPU's, the GPU, the entropy
/// device and the console the last three ([`guest::VIRTIO_GPU_SLOT`] …).
pub const fn virtio_device_in(slot: u64) -> VirtioDevice {
    match slot {
        guest::VIRTIO_GPU_SLOT => VirtioDevice::Gpu,
        guest::VIRTIO_RNG_SLOT => VirtioDevice::Rng,
        guest::VIRTIO_CONSOLE_SLOT => VirtioDevice::Console,
        VIRTIO_KEYBOARD_SLOT => VirtioDevice::Keyboard,
        VIRTIO_TABLET_SLOT => VirtioDevice::Tablet,
        // Below the keyboard's slot (27), so it fits.
        n => VirtioDevice::Blk { disk: n as u8 },
    }
}

/// The virtio-input slots of a VM of `profile`: a Linux VM's keyboard and tablet;
/// a firmware VM has none (Windows gets USB HID, and the firmware has no
/// virtio-input driver).
pub fn virtio_input_slots(profile: Profile) -> &'static [u64] {
    match profile {
        Profile::LinuxDt => &[VIRTIO_KEYBOARD_SLOT, VIRTIO_TABLET_SLOT],
        Profile::UefiAcpi => &[],
    }
}

/// The virtio-mmio slots of a VM with `disks` disks (those beyond the slots
/// before the input devices' are left out), and an entropy device if `entropy`.
pub fn virtio_slots(disks: usize, entropy: bool) -> Vec<u64> {
    let disks = (disks as u64).min(VIRTIO_KEYBOARD_SLOT);
    let mut slots: Vec<u64> = (0..disks).collect();
    slots.push(guest::VIRTIO_GPU_SLOT);
    if entropy {
        slots.push(guest::VIRTIO_RNG_SLOT);
    }
    slots.push(guest::VIRTIO_CONSOLE_SLOT);
    slots
}

/// One device: what it is, its MMIO window and its interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub base: u64,
    pub size: u64,
    pub irq: Option<Irq>,
}

/// What varies between VMs of one profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmDevices<'a> {
    /// The virtio-mmio slots that hold a device.
    pub virtio_slots: &'a [u64],
    /// The TPM on the PL061's bit-banged SPI bus (`linux-dt` only).
    pub tpm_spi_gpio: bool,
    /// Size of the variable-store flash bank (`uefi-acpi`): QEMU `virt`'s 64 MiB
    /// window, whatever part of it the VM's store backs.
    pub vars_bank_size: u64,
    /// The TPM's CRB interface on the platform bus (`uefi-acpi` only: a VM whose
    /// machine has an entropy source).
    pub tpm_crb: bool,
    /// The PCI Express root complex with its MSI controller ([`pcie`]; either
    /// profile: `linux-dt-nvme`, and the `windows` model's `uefi-acpi` platform).
    pub pcie: bool,
    /// Which MSI controller the root complex's messages go to.
    pub msi: Msi,
    /// The simple framebuffer ([`simple_framebuffer`]; `linux-dt`).
    pub framebuffer: Option<FramebufferSpec>,
}

/// fw_cfg's register window (data, selector, DMA address).
pub const FW_CFG_SIZE: u64 = 0x18;

/// A linear framebuffer carved from the top of guest RAM: the DT `simple-framebuffer`
/// of a `linux-dt` VM run with [`SIMPLE_FB_OPTION`]. Its pixels are 32-bit
/// little-endian words `0xXXRRGGBB` (DT format `x8r8g8b8`: bytes B, G, R, X). The
/// device tree gets a `no-map` reserved-memory region of [`FramebufferSpec::reserved`]
/// bytes at `base` and the `simple-framebuffer` node; el2 write-protects its pages
/// and presents it (`vgpu::linear`). Nothing about it is MMIO: it is guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramebufferSpec {
    /// Guest-physical address of pixel (0, 0), 2 MiB-aligned.
    pub base: u64,
    /// Bytes of RAM reserved for it (a multiple of 2 MiB, at least `stride * height`).
    pub reserved: u64,
    pub width: u32,
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
}

/// The DT `format` string of [`FramebufferSpec`]'s pixels.
pub const SIMPLE_FB_FORMAT: &str = "x8r8g8b8";
/// Bytes per pixel of [`SIMPLE_FB_FORMAT`].
pub const SIMPLE_FB_BYTES_PER_PIXEL: u32 = 4;
/// The simple framebuffer's mode.
pub const SIMPLE_FB_MODE: (u32, u32) = (640, 480);
/// The run option (a word of the VM's command line, e.g. `cargo xtask run
/// --append '… rayos.fb=simple'`) that gives a `linux-dt` VM the simple
/// framebuffer, until the registry's VM record has a display field.
pub const SIMPLE_FB_OPTION: &str = "rayos.fb=simple";
/// The unit RAM is carved in (a stage-2 block, as the DTB's place).
const CARVE: u64 = 2 << 20;
/// RAM a VM keeps besides the framebuffer at least.
const MIN_RAM_LEFT: u64 = 32 << 20;

/// The simple framebuffer of a `linux-dt` VM with RAM `ram_base..+ram_size` whose
/// command line is `cmdline`: `None` unless the command line asks for it
/// ([`SIMPLE_FB_OPTION`]) and RAM has room (the top [`CARVE`]-aligned blocks).
pub fn simple_framebuffer(cmdline: &str, ram_base: u64, ram_size: u64) -> Option<FramebufferSpec> {
    if !cmdline
        .split_ascii_whitespace()
        .any(|w| w == SIMPLE_FB_OPTION)
    {
        return None;
    }
    let (width, height) = SIMPLE_FB_MODE;
    let stride = width * SIMPLE_FB_BYTES_PER_PIXEL;
    let reserved = (u64::from(stride) * u64::from(height)).next_multiple_of(CARVE);
    if ram_size < reserved + MIN_RAM_LEFT || !ram_base.is_multiple_of(CARVE) {
        return None;
    }
    let base = (ram_base.checked_add(ram_size)? - reserved) & !(CARVE - 1);
    Some(FramebufferSpec {
        base,
        reserved,
        width,
        height,
        stride,
    })
}

/// The CRB TPM's window: five 4 KiB locality pages (TCG PC Client Platform TPM
/// Profile), at the start of the platform bus where QEMU `virt` puts its first
/// dynamic sysbus device (its `tpm-tis-device`).
pub const TPM_CRB_BASE: u64 = guest::PLATFORM_BUS_BASE;
pub const TPM_CRB_SIZE: u64 = 0x5000;

/// The devices of a `profile` VM, in address order.
pub fn device_list(profile: Profile, vm: &VmDevices) -> Vec<DeviceSpec> {
    let mut list = device_entries(profile, vm);
    list.sort_by_key(|d| d.base);
    list
}

fn device_entries(profile: Profile, vm: &VmDevices) -> Vec<DeviceSpec> {
    let mut list = Vec::new();
    if profile == Profile::UefiAcpi {
        list.push(DeviceSpec {
            kind: DeviceKind::Flash { bank: 0 },
            base: guest::FLASH0_BASE,
            size: guest::FLASH_BANK_SIZE,
            irq: None,
        });
        list.push(DeviceSpec {
            kind: DeviceKind::Flash { bank: 1 },
            base: guest::FLASH1_BASE,
            size: vm.vars_bank_size,
            irq: None,
        });
    }
    list.push(DeviceSpec {
        kind: DeviceKind::Pl011,
        base: guest::PL011_BASE,
        size: guest::PL011_SIZE,
        irq: Some(Irq {
            intid: guest::SPI_BASE + guest::PL011_SPI,
            trigger: Trigger::Level,
        }),
    });
    if profile == Profile::UefiAcpi {
        list.push(DeviceSpec {
            kind: DeviceKind::Pl031,
            base: guest::PL031_BASE,
            size: guest::PL031_SIZE,
            irq: Some(Irq {
                intid: guest::SPI_BASE + guest::PL031_SPI,
                trigger: Trigger::Level,
            }),
        });
        list.push(DeviceSpec {
            kind: DeviceKind::FwCfg,
            base: guest::FW_CFG_BASE,
            size: FW_CFG_SIZE,
            irq: None,
        });
    }
    if profile == Profile::LinuxDt && vm.tpm_spi_gpio {
        list.push(DeviceSpec {
            kind: DeviceKind::Pl061Tpm,
            base: guest::PL061_BASE,
            size: guest::PL061_SIZE,
            irq: Some(Irq {
                intid: guest::SPI_BASE + guest::PL061_SPI,
                trigger: Trigger::Level,
            }),
        });
    }
    let mut slots: Vec<u64> = vm
        .virtio_slots
        .iter()
        .copied()
        .filter(|&s| s < guest::VIRTIO_MMIO_SLOTS)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        list.push(DeviceSpec {
            kind: DeviceKind::VirtioMmio {
                slot,
                device: virtio_device_in(slot),
            },
            base: guest::VIRTIO_MMIO_BASE + slot * guest::VIRTIO_MMIO_STRIDE,
            size: guest::VIRTIO_MMIO_STRIDE,
            irq: Some(Irq {
                intid: guest::virtio_mmio_intid(slot),
                trigger: Trigger::Edge,
            }),
        });
    }
    if profile == Profile::UefiAcpi && vm.tpm_crb {
        list.push(DeviceSpec {
            kind: DeviceKind::TpmCrb,
            base: TPM_CRB_BASE,
            size: TPM_CRB_SIZE,
            irq: None,
        });
    }
    if vm.pcie {
        list.extend(pcie_entries(&pcie_with(vm.msi)));
    }
    if let (Profile::LinuxDt, Some(fb)) = (profile, vm.framebuffer) {
        list.push(DeviceSpec {
            kind: DeviceKind::SimpleFramebuffer {
                width: fb.width,
                height: fb.height,
                stride: fb.stride,
            },
            base: fb.base,
            size: fb.reserved,
            irq: None,
        });
    }
    list
}

/// The entries of root complex `p`: its three windows and its MSI controller.
pub fn pcie_entries(p: &PcieSpec) -> [DeviceSpec; 4] {
    let window = |window, w: Window, irq| DeviceSpec {
        kind: DeviceKind::Pcie { window },
        base: w.base,
        size: w.size,
        irq,
    };
    let msi = match p.msi {
        MsiSpec::V2m(v2m) => DeviceSpec {
            kind: DeviceKind::Gicv2m { spis: v2m.count },
            base: v2m.frame.base,
            size: v2m.frame.size,
            irq: Some(Irq {
                intid: v2m.first_intid,
                trigger: Trigger::Edge,
            }),
        },
        MsiSpec::Its(its) => DeviceSpec {
            kind: DeviceKind::GicIts,
            base: its.base,
            size: its.size,
            irq: None,
        },
    };
    [
        msi,
        window(PcieWindow::Mmio32, p.mmio32, None),
        window(PcieWindow::Io, p.pio, None),
        window(
            PcieWindow::Ecam,
            p.ecam,
            Some(Irq {
                intid: p.intx_first_intid,
                trigger: Trigger::Level,
            }),
        ),
    ]
}

/// The root complex of a device list: `None` unless it has all three windows,
/// the MSI frame and the INTx SPIs.
pub fn pcie_of(list: &[DeviceSpec]) -> Option<PcieSpec> {
    let window = |w| {
        list.iter()
            .find(|d| d.kind == DeviceKind::Pcie { window: w })
            .map(|d| {
                (
                    Window {
                        base: d.base,
                        size: d.size,
                    },
                    d.irq,
                )
            })
    };
    let (ecam, intx) = window(PcieWindow::Ecam)?;
    let msi = list.iter().find_map(|d| match d.kind {
        DeviceKind::Gicv2m { spis } => Some(MsiSpec::V2m(V2mSpec {
            frame: Window {
                base: d.base,
                size: d.size,
            },
            first_intid: d.irq?.intid,
            count: spis,
        })),
        DeviceKind::GicIts => Some(MsiSpec::Its(Window {
            base: d.base,
            size: d.size,
        })),
        _ => None,
    })?;
    Some(PcieSpec {
        ecam,
        mmio32: window(PcieWindow::Mmio32)?.0,
        pio: window(PcieWindow::Io)?.0,
        intx_first_intid: intx?.intid,
        msi,
    })
}

/// The simple framebuffer of a device list.
pub fn framebuffer_of(list: &[DeviceSpec]) -> Option<FramebufferSpec> {
    list.iter().find_map(|d| match d.kind {
        DeviceKind::SimpleFramebuffer {
            width,
            height,
            stride,
        } => Some(FramebufferSpec {
            base: d.base,
            reserved: d.size,
            width,
            height,
            stride,
        }),
        _ => None,
    })
}

/// What el2 puts on a VM's MMIO bus at one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusModel {
    /// The model of a device-list entry.
    Device(DeviceKind),
    /// A virtio-mmio slot without a device: a transport with device ID 0, as on
    /// QEMU `virt` (not in the device tree or the ACPI tables).
    EmptyVirtioSlot { slot: u64 },
}

/// One window of a VM's MMIO bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusEntry {
    /// The bus entry's (and its saved state's) name.
    pub name: &'static str,
    pub base: u64,
    pub size: u64,
    pub model: BusModel,
    /// The interrupt the model raises (the entry's).
    pub irq: Option<Irq>,
}

/// The bus name of an empty virtio-mmio slot.
pub const EMPTY_VIRTIO_SLOT: &str = "virtio-empty";

/// The bus name of a device kind.
fn bus_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Pl011 => "pl011",
        DeviceKind::Pl031 => "pl031",
        DeviceKind::Pl061Tpm => "pl061-tpm",
        DeviceKind::VirtioMmio { device, .. } => match device {
            VirtioDevice::Blk { .. } => "virtio-blk",
            VirtioDevice::Gpu => "virtio-gpu",
            VirtioDevice::Rng => "virtio-rng",
            VirtioDevice::Console => "virtio-console",
            VirtioDevice::Keyboard => "virtio-keyboard",
            VirtioDevice::Tablet => "virtio-tablet",
        },
        DeviceKind::FwCfg => "fw_cfg",
        DeviceKind::Flash { .. } => "pflash-vars",
        DeviceKind::TpmCrb => "tpm-crb",
        DeviceKind::Pcie { .. } => "pcie",
        DeviceKind::Gicv2m { .. } => "gicv2m",
        DeviceKind::GicIts => "gic-its",
        DeviceKind::SimpleFramebuffer { .. } => "simple-framebuffer",
    }
}

/// The MMIO bus of a VM whose devices are `list`, in address order: every entry
/// the hypervisor traps (all but the framebuffer, which is RAM, and the code
/// bank, which is mapped at stage 2) at its window, and an empty transport in
/// each virtio-mmio slot the list leaves free. The GIC's distributor and
/// redistributors come from the vGIC's configuration, not from here.
pub fn bus_entries(list: &[DeviceSpec]) -> Vec<BusEntry> {
    let mut bus: Vec<BusEntry> = list
        .iter()
        .filter(|d| {
            !matches!(
                d.kind,
                DeviceKind::SimpleFramebuffer { .. } | DeviceKind::Flash { bank: 0 }
            )
        })
        .map(|d| BusEntry {
            name: bus_name(d.kind),
            base: d.base,
            size: d.size,
            model: BusModel::Device(d.kind),
            irq: d.irq,
        })
        .collect();
    for slot in 0..guest::VIRTIO_MMIO_SLOTS {
        let taken = list
            .iter()
            .any(|d| matches!(d.kind, DeviceKind::VirtioMmio { slot: s, .. } if s == slot));
        if !taken {
            bus.push(BusEntry {
                name: EMPTY_VIRTIO_SLOT,
                base: guest::VIRTIO_MMIO_BASE + slot * guest::VIRTIO_MMIO_STRIDE,
                size: guest::VIRTIO_MMIO_STRIDE,
                model: BusModel::EmptyVirtioSlot { slot },
                irq: None,
            });
        }
    }
    bus.sort_by_key(|e| e.base);
    bus
}

/// A guest-physical window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

/// A GICv2m MSI frame: its window and the SPIs it raises (GIC INTIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2mSpec {
    pub frame: Window,
    pub first_intid: u32,
    pub count: u32,
}

/// Which MSI controller a VM's root complex sends its messages to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Msi {
    /// The GICv2m frame (SPIs; a distributor without LPIs).
    #[default]
    V2m,
    /// The GICv3 ITS (LPIs).
    Its,
}

/// A root complex's MSI controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiSpec {
    V2m(V2mSpec),
    /// The ITS's two 64 KiB frames (control, then translation).
    Its(Window),
}

/// The PCI Express root complex of a VM that has one (issue 15), with the MSI frame
/// its functions' MSI-X messages go to. Addresses are QEMU `virt`'s
/// (`hw/arm/virt.c`, `base_memmap`: VIRT_PCIE_ECAM with `highmem=off`,
/// VIRT_PCIE_MMIO, VIRT_PCIE_PIO, VIRT_GIC_V2M; irqmap VIRT_PCIE = SPIs 3..6,
/// VIRT_GIC_V2M from SPI 48). The 64-bit window (VIRT_HIGH_PCIE_MMIO) is left out:
/// it needs a 40-bit IPA space, and 64-bit BARs fit the 32-bit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieSpec {
    /// ECAM: 16 buses.
    pub ecam: Window,
    /// The 32-bit memory window.
    pub mmio32: Window,
    /// The I/O window (no function has an I/O BAR).
    pub pio: Window,
    /// INTID of INTA at device 0; INTB..INTD follow, swizzled by device number.
    pub intx_first_intid: u32,
    pub msi: MsiSpec,
}

impl PcieSpec {
    /// The GICv2m frame, when that is the MSI controller.
    pub fn v2m(&self) -> Option<&V2mSpec> {
        match &self.msi {
            MsiSpec::V2m(v) => Some(v),
            MsiSpec::Its(_) => None,
        }
    }
    /// The ITS frames, when that is the MSI controller.
    pub fn its(&self) -> Option<Window> {
        match self.msi {
            MsiSpec::Its(w) => Some(w),
            MsiSpec::V2m(_) => None,
        }
    }
}

/// Base and size of `virt`'s low ECAM window (16 buses).
pub const PCIE_ECAM_SIZE: u64 = 0x100_0000;
pub const PCIE_MMIO_BASE: u64 = 0x1000_0000;
pub const PCIE_MMIO_SIZE: u64 = 0x2eff_0000;
pub const PCIE_PIO_BASE: u64 = 0x3eff_0000;
pub const PCIE_PIO_SIZE: u64 = 0x1_0000;
/// First of the four INTx SPIs.
pub const PCIE_INTX_FIRST_SPI: u32 = 3;
pub const GICV2M_BASE: u64 = 0x0802_0000;
pub const GICV2M_SIZE: u64 = 0x1000;
/// First SPI of the v2m frame (as `virt`), and how many it raises: 32, so that the
/// range (INTIDs 80..=111) stays inside the vGIC's SPIs ([`guest::VGIC_SPIS`]).
pub const GICV2M_FIRST_SPI: u32 = 48;
pub const GICV2M_SPIS: u32 = 32;
/// QEMU `virt`'s ITS (VIRT_GIC_ITS): the control frame, then GITS_TRANSLATER's
/// frame, 64 KiB each.
pub const GIC_ITS_BASE: u64 = 0x0808_0000;
pub const GIC_ITS_SIZE: u64 = 0x2_0000;

/// Device number (bus 0, function 0) of a VM's NVMe controller.
pub const NVME_PCI_DEVICE: u8 = 1;
/// PCI IDs of the NVMe controller. The project owns no PCI-SIG vendor ID; drivers
/// bind by class code (01/08/02). This is an unassigned device ID in the ID space
/// QEMU uses for its virtual devices (vendor 1b36), not QEMU's own NVMe ID
/// (1b36:0010), which would bring Linux's quirks for QEMU's controller with it.
pub const NVME_PCI_VENDOR_ID: u16 = 0x1b36;
pub const NVME_PCI_DEVICE_ID: u16 = 0x00f0;
/// Device number of a VM's virtio-blk over virtio-PCI (IDs from the virtio spec).
pub const VIRTIO_PCI_BLK_DEVICE: u8 = 2;
/// Device number of a VM's xHCI controller, and its PCI IDs (drivers bind by class
/// code 0c/03/30; an unassigned device ID next to the NVMe controller's, not
/// QEMU's `qemu-xhci` 1b36:000d).
pub const XHCI_PCI_DEVICE: u8 = 3;
pub const XHCI_PCI_VENDOR_ID: u16 = 0x1b36;
pub const XHCI_PCI_DEVICE_ID: u16 = 0x00f1;

/// The hypervisor option `rayos.authority=BASE,SIZE` (`cargo xtask run
/// --authority` passes it, with QEMU's loader device putting the image there): the
/// authority partition's flat image lies at host physical `BASE`, `SIZE` bytes.
pub const AUTHORITY_OPTION: &str = "rayos.authority=";

/// The authority partition's image `(base, size)` named by the host's command
/// line, if any; `None` also for a malformed option (hex or decimal numbers, a
/// non-zero size, no wrap).
pub fn authority_image(bootargs: &str) -> Option<(u64, u64)> {
    let v = bootargs
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(AUTHORITY_OPTION))?;
    let (b, s) = v.split_once(',')?;
    let num = |t: &str| match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    };
    let (base, size) = (num(b)?, num(s)?);
    (size > 0 && base.checked_add(size).is_some()).then_some((base, size))
}

/// The hypervisor option (`cargo xtask run --verbose` passes it) that turns on the
/// hypervisor's debug log lines (scheduling decisions, device detail).
pub const DEBUG_LOG_OPTION: &str = "rayos.log=debug";

/// Whether the host's command line `bootargs` asks for [`DEBUG_LOG_OPTION`].
pub fn debug_log(bootargs: &str) -> bool {
    bootargs
        .split_ascii_whitespace()
        .any(|w| w == DEBUG_LOG_OPTION)
}

/// The kernel command-line option (`cargo xtask run --nvme SIZE --msi its`, or
/// `--append '… rayos.msi=its'`) that gives a boot bundle's `linux-dt` VM the ITS
/// instead of the GICv2m frame (a system-disk VM's record says which it has).
pub const MSI_ITS_OPTION: &str = "rayos.msi=its";

/// The MSI controller a `linux-dt` VM with command line `cmdline` gets.
pub fn msi_of(cmdline: &str) -> Msi {
    if cmdline
        .split_ascii_whitespace()
        .any(|w| w == MSI_ITS_OPTION)
    {
        Msi::Its
    } else {
        Msi::V2m
    }
}

/// The root complex and MSI frame of a VM with PCI Express (GICv2m).
pub const fn pcie() -> PcieSpec {
    pcie_with(Msi::V2m)
}

/// The root complex of a VM with PCI Express, with MSI controller `msi`.
pub const fn pcie_with(msi: Msi) -> PcieSpec {
    let v2m = V2mSpec {
        frame: Window {
            base: GICV2M_BASE,
            size: GICV2M_SIZE,
        },
        first_intid: guest::SPI_BASE + GICV2M_FIRST_SPI,
        count: GICV2M_SPIS,
    };
    PcieSpec {
        ecam: Window {
            base: guest::PCIE_ECAM_BASE,
            size: PCIE_ECAM_SIZE,
        },
        mmio32: Window {
            base: PCIE_MMIO_BASE,
            size: PCIE_MMIO_SIZE,
        },
        pio: Window {
            base: PCIE_PIO_BASE,
            size: PCIE_PIO_SIZE,
        },
        intx_first_intid: guest::SPI_BASE + PCIE_INTX_FIRST_SPI,
        msi: match msi {
            Msi::V2m => MsiSpec::V2m(v2m),
            Msi::Its => MsiSpec::Its(Window {
                base: GIC_ITS_BASE,
                size: GIC_ITS_SIZE,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(slots: &[u64]) -> VmDevices<'_> {
        VmDevices {
            virtio_slots: slots,
            tpm_spi_gpio: true,
            vars_bank_size: guest::FLASH_BANK_SIZE,
            tpm_crb: true,
            ..Default::default()
        }
    }

    #[test]
    fn windows_do_not_overlap_and_interrupts_are_distinct() {
        for profile in [Profile::LinuxDt, Profile::UefiAcpi] {
            let list = device_list(profile, &vm(&[0, 3, 31, 29, 3, 40]));
            for (i, a) in list.iter().enumerate() {
                for b in &list[i + 1..] {
                    assert!(a.base + a.size <= b.base, "{a:?} overlaps {b:?}");
                    if let (Some(x), Some(y)) = (a.irq, b.irq) {
                        assert_ne!(x.intid, y.intid, "{a:?} and {b:?} share an SPI");
                    }
                }
            }
            let virtio: Vec<_> = list
                .iter()
                .filter_map(|d| match d.kind {
                    DeviceKind::VirtioMmio { slot, .. } => Some(slot),
                    _ => None,
                })
                .collect();
            assert_eq!(
                virtio,
                [0, 3, 29, 31],
                "slots sorted, deduplicated, in range"
            );
        }
    }

    #[test]
    fn a_linux_vm_has_a_virtio_keyboard_and_tablet_below_the_gpu_and_disks_stop_before_them() {
        let mut slots = virtio_slots(100, true);
        assert_eq!(
            slots.iter().filter(|&&s| s < VIRTIO_KEYBOARD_SLOT).count(),
            27
        );
        slots.extend_from_slice(virtio_input_slots(Profile::LinuxDt));
        let list = device_list(Profile::LinuxDt, &vm(&slots));
        let at = |want: VirtioDevice| {
            list.iter()
                .filter(
                    |d| matches!(d.kind, DeviceKind::VirtioMmio { device, .. } if device == want),
                )
                .map(|d| (d.base, d.irq.map(|i| i.intid)))
                .collect::<Vec<_>>()
        };
        let slot = |n: u64| {
            (
                guest::VIRTIO_MMIO_BASE + n * guest::VIRTIO_MMIO_STRIDE,
                Some(guest::virtio_mmio_intid(n)),
            )
        };
        assert_eq!(at(VirtioDevice::Keyboard), [slot(VIRTIO_KEYBOARD_SLOT)]);
        assert_eq!(at(VirtioDevice::Tablet), [slot(VIRTIO_TABLET_SLOT)]);
        let names: Vec<&str> = bus_entries(&list).iter().map(|e| e.name).collect();
        assert!(names.contains(&"virtio-keyboard") && names.contains(&"virtio-tablet"));
        assert!(virtio_input_slots(Profile::UefiAcpi).is_empty());
    }

    #[test]
    fn the_simple_framebuffer_is_the_top_of_ram_on_request_only() {
        let base = guest::RAM_BASE;
        assert_eq!(simple_framebuffer("console=ttyAMA0", base, 1 << 30), None);
        assert_eq!(simple_framebuffer("rayos.fb=simplex", base, 1 << 30), None);
        let fb = simple_framebuffer("console=ttyAMA0 rayos.fb=simple", base, 1 << 30).unwrap();
        assert_eq!((fb.width, fb.height, fb.stride), (640, 480, 2560));
        assert!(u64::from(fb.stride) * u64::from(fb.height) <= fb.reserved);
        assert_eq!(fb.base + fb.reserved, base + (1 << 30), "the top of RAM");
        assert_eq!(fb.base % CARVE, 0);
        // Too little RAM: none.
        assert_eq!(simple_framebuffer(SIMPLE_FB_OPTION, base, 16 << 20), None);
        assert_eq!(
            simple_framebuffer(SIMPLE_FB_OPTION, u64::MAX - (1 << 20), 1 << 30),
            None
        );
    }

    #[test]
    fn each_profile_has_its_own_devices() {
        let has = |p, k| device_list(p, &vm(&[])).iter().any(|d| d.kind == k);
        assert!(has(Profile::UefiAcpi, DeviceKind::FwCfg));
        assert!(has(Profile::UefiAcpi, DeviceKind::Flash { bank: 1 }));
        assert!(has(Profile::UefiAcpi, DeviceKind::Pl031));
        assert!(!has(Profile::LinuxDt, DeviceKind::Pl031));
        assert!(!has(Profile::UefiAcpi, DeviceKind::Pl061Tpm));
        assert!(!has(Profile::LinuxDt, DeviceKind::FwCfg));
        assert!(has(Profile::LinuxDt, DeviceKind::Pl061Tpm));
        assert!(has(Profile::LinuxDt, DeviceKind::Pl011));
        assert!(has(Profile::UefiAcpi, DeviceKind::TpmCrb));
        assert!(!has(Profile::LinuxDt, DeviceKind::TpmCrb));
        let no_tpm = VmDevices {
            tpm_crb: false,
            ..vm(&[])
        };
        let list = device_list(Profile::UefiAcpi, &no_tpm);
        assert!(list.iter().all(|d| d.kind != DeviceKind::TpmCrb));
    }

    #[test]
    fn the_crb_tpm_is_on_the_platform_bus() {
        let list = device_list(Profile::UefiAcpi, &vm(&[0]));
        let tpm = list.iter().find(|d| d.kind == DeviceKind::TpmCrb).unwrap();
        assert_eq!(tpm.base, guest::PLATFORM_BUS_BASE);
        assert!(tpm.base + tpm.size <= guest::PLATFORM_BUS_BASE + guest::PLATFORM_BUS_SIZE);
        assert_eq!(tpm.irq, None, "polled, as EDK2 and tpm_crb drive it");
    }

    #[test]
    fn the_authority_option_names_a_range_or_nothing() {
        assert_eq!(
            authority_image("rayos.vm=x rayos.authority=0x7c000000,4096"),
            Some((0x7c00_0000, 4096))
        );
        assert_eq!(authority_image("rayos.authority=100,20"), Some((100, 20)));
        assert_eq!(authority_image("rayos.authority=0x10,0"), None);
        assert_eq!(
            authority_image("rayos.authority=0xffffffffffffffff,2"),
            None
        );
        assert_eq!(authority_image("rayos.authority=zz,2"), None);
        assert_eq!(authority_image("rayos.authority=5"), None);
        assert_eq!(authority_image("rayos.vm=x"), None);
        assert!(debug_log("a rayos.log=debug"));
        assert!(!debug_log("rayos.log=debugx"));
    }

    #[test]
    fn a_firmware_vm_with_pcie_has_the_root_complex_beside_its_firmware_devices() {
        // The `windows` model: the uefi-acpi platform plus the root complex.
        let with = VmDevices {
            pcie: true,
            ..vm(&[1])
        };
        let list = device_list(Profile::UefiAcpi, &with);
        assert_eq!(pcie_of(&list), Some(pcie()));
        for k in [
            DeviceKind::FwCfg,
            DeviceKind::Flash { bank: 1 },
            DeviceKind::TpmCrb,
            DeviceKind::Gicv2m {
                spis: pcie().v2m().expect("v2m frame").count,
            },
        ] {
            assert!(list.iter().any(|d| d.kind == k), "{k:?} missing");
        }
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                assert!(a.base + a.size <= b.base, "{a:?} overlaps {b:?}");
            }
        }
        // Without it, none of its entries.
        let list = device_list(Profile::UefiAcpi, &vm(&[1]));
        assert_eq!(pcie_of(&list), None);
        assert!(!list
            .iter()
            .any(|d| matches!(d.kind, DeviceKind::Pcie { .. } | DeviceKind::Gicv2m { .. })));
    }

    #[test]
    fn pcie_stays_clear_of_the_other_devices_and_inside_the_vgic() {
        let p = pcie();
        let v2m = *p.v2m().unwrap();
        let its = pcie_with(Msi::Its).its().unwrap();
        let vgic_end = guest::SPI_BASE + guest::VGIC_SPIS;
        assert!(v2m.first_intid + v2m.count <= vgic_end);
        assert!(p.intx_first_intid + 4 <= vgic_end);
        let windows = [p.ecam, p.mmio32, p.pio, v2m.frame, its];
        for profile in [Profile::LinuxDt, Profile::UefiAcpi] {
            for d in device_list(profile, &vm(&[0, 1, 29, 30, 31])) {
                for w in windows {
                    assert!(
                        d.base + d.size <= w.base || w.base + w.size <= d.base,
                        "{d:?} overlaps {w:?}"
                    );
                }
                let Some(irq) = d.irq else { continue };
                let intx = p.intx_first_intid..p.intx_first_intid + 4;
                let msi = v2m.first_intid..v2m.first_intid + v2m.count;
                assert!(
                    !intx.contains(&irq.intid) && !msi.contains(&irq.intid),
                    "{d:?}"
                );
            }
        }
        // The MSI frames sit between the distributor and the redistributors.
        for f in [v2m.frame, its] {
            assert!(guest::GICD_BASE + guest::GICD_SIZE <= f.base);
            assert!(f.base + f.size <= guest::GICR_BASE);
        }
        assert!(v2m.frame.base + v2m.frame.size <= its.base);
        // Below RAM.
        assert!(p.ecam.base + p.ecam.size <= guest::RAM_BASE);
    }

    /// A VM's MSI controller is one or the other, and the list gives it back.
    #[test]
    fn the_root_complex_has_either_the_v2m_frame_or_the_its() {
        for msi in [Msi::V2m, Msi::Its] {
            let devices = VmDevices {
                pcie: true,
                msi,
                ..vm(&[0])
            };
            let list = device_list(Profile::LinuxDt, &devices);
            let has = |k: fn(&DeviceKind) -> bool| list.iter().any(|d| k(&d.kind));
            assert_eq!(
                has(|k| matches!(k, DeviceKind::Gicv2m { .. })),
                msi == Msi::V2m
            );
            assert_eq!(has(|k| *k == DeviceKind::GicIts), msi == Msi::Its);
            assert_eq!(pcie_of(&list), Some(pcie_with(msi)));
        }
        assert_eq!(msi_of("console=ttyAMA0 rayos.msi=its quiet"), Msi::Its);
        assert_eq!(msi_of("console=ttyAMA0 rayos.msi=itsy"), Msi::V2m);
        assert_eq!(msi_of(""), Msi::V2m);
        let its = list_its();
        assert_eq!(its.base, 0x0808_0000, "QEMU virt's VIRT_GIC_ITS");
        assert_eq!(its.size, 0x2_0000);
    }

    fn list_its() -> DeviceSpec {
        let devices = VmDevices {
            pcie: true,
            msi: Msi::Its,
            ..vm(&[])
        };
        device_list(Profile::LinuxDt, &devices)
            .into_iter()
            .find(|d| d.kind == DeviceKind::GicIts)
            .unwrap()
    }
}
