//! The guest-physical address map of a VM: QEMU `virt`'s layout, so that firmware
//! and operating systems written for that machine find devices where they expect.

/// Start of guest RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// GICv3 distributor.
pub const GICD_BASE: u64 = 0x0800_0000;
pub const GICD_SIZE: u64 = 0x1_0000;
/// GICv3 redistributors: one 128 KiB (RD + SGI frames) region per vCPU.
pub const GICR_BASE: u64 = 0x080a_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Largest redistributor region (room for 123 vCPUs, as on QEMU `virt`).
pub const GICR_REGION_SIZE: u64 = 0xf6_0000;
/// PL011 UART (guest console) and its SPI.
pub const PL011_BASE: u64 = 0x0900_0000;
pub const PL011_SIZE: u64 = 0x1000;
pub const PL011_SPI: u32 = 1;
/// PL031 real-time clock and its SPI (as on QEMU `virt`).
pub const PL031_BASE: u64 = 0x0901_0000;
pub const PL031_SIZE: u64 = 0x1000;
pub const PL031_SPI: u32 = 2;
/// QEMU fw_cfg interface (UEFI profile).
pub const FW_CFG_BASE: u64 = 0x0902_0000;
/// PL061 GPIO controller and its SPI (as on QEMU `virt`). Its pins carry the
/// bit-banged SPI bus of the TPM for guests without a TIS MMIO driver.
pub const PL061_BASE: u64 = 0x0903_0000;
pub const PL061_SIZE: u64 = 0x1000;
pub const PL061_SPI: u32 = 7;
/// PL061 pins of the TPM's bit-banged SPI bus (mode 0, chip select active low).
pub const TPM_SPI_SCK_PIN: u8 = 0;
pub const TPM_SPI_MOSI_PIN: u8 = 1;
pub const TPM_SPI_MISO_PIN: u8 = 2;
pub const TPM_SPI_CS_PIN: u8 = 3;
/// virtio-mmio transports: slot `n` at `VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_STRIDE`,
/// interrupt SPI `VIRTIO_MMIO_SPI_BASE + n`.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x200;
pub const VIRTIO_MMIO_SLOTS: u64 = 32;
pub const VIRTIO_MMIO_SPI_BASE: u32 = 16;
/// virtio-mmio slots of the GPU, the entropy device and the virtio console every VM
/// gets; disks take the slots before them.
pub const VIRTIO_GPU_SLOT: u64 = VIRTIO_MMIO_SLOTS - 3;
pub const VIRTIO_RNG_SLOT: u64 = VIRTIO_MMIO_SLOTS - 2;
pub const VIRTIO_CONSOLE_SLOT: u64 = VIRTIO_MMIO_SLOTS - 1;
/// SPIs the virtual GIC implements (INTIDs 32..128: the PL011, PL061 and every
/// virtio-mmio slot fit).
pub const VGIC_SPIS: u32 = 96;
/// Platform bus (TPM): a 32 MiB window of dynamically placed sysbus devices.
pub const PLATFORM_BUS_BASE: u64 = 0x0c00_0000;
pub const PLATFORM_BUS_SIZE: u64 = 0x0200_0000;
/// The two flash banks (UEFI profile).
pub const FLASH0_BASE: u64 = 0x0;
pub const FLASH1_BASE: u64 = 0x0400_0000;
pub const FLASH_BANK_SIZE: u64 = 0x0400_0000;
/// PCIe ECAM (UEFI profile).
pub const PCIE_ECAM_BASE: u64 = 0x3f00_0000;

/// Where a kernel without an arm64 Image header is loaded: RAM base + 512 KiB, as
/// QEMU's `-kernel` does for raw images.
pub const RAW_IMAGE_OFFSET: u64 = 0x8_0000;

/// GIC interrupt-ID bases.
pub const SPI_BASE: u32 = 32;
pub const PPI_BASE: u32 = 16;
/// Generic timer PPIs as INTIDs (EL1 virtual, EL1 physical, EL2 physical, secure
/// physical).
pub const VTIMER_INTID: u32 = 27;
pub const PTIMER_INTID: u32 = 30;
pub const HTIMER_INTID: u32 = 26;
pub const STIMER_INTID: u32 = 29;
/// GIC maintenance interrupt INTID.
pub const MAINTENANCE_INTID: u32 = 25;

/// The INTID of virtio-mmio slot `n`.
pub const fn virtio_mmio_intid(n: u64) -> u32 {
    SPI_BASE + VIRTIO_MMIO_SPI_BASE + n as u32
}

// Every guest device's interrupt is an SPI the vGIC implements, and the rng and
// console slots are the last two (checked when the crate compiles).
const _: () = {
    let limit = SPI_BASE + VGIC_SPIS;
    assert!(virtio_mmio_intid(VIRTIO_MMIO_SLOTS - 1) < limit);
    assert!(SPI_BASE + PL011_SPI < limit);
    assert!(SPI_BASE + PL061_SPI < limit);
    assert!(VIRTIO_GPU_SLOT < VIRTIO_RNG_SLOT);
    assert!(VIRTIO_RNG_SLOT < VIRTIO_CONSOLE_SLOT && VIRTIO_CONSOLE_SLOT < VIRTIO_MMIO_SLOTS);
};
