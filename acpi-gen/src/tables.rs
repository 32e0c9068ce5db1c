//! The tables themselves. [`build`] lays them out as one blob, as if loaded at guest
//! address 0: every pointer between tables (RSDP → XSDT, XSDT → each table, FADT →
//! DSDT) holds the target's offset in the blob, and [`Tables::pointers`] lists where
//! those are so that a loader can add the blob's real address ([`Tables::relocate`]
//! here, or the firmware through the table-loader script of [`crate::loader`]).
//! Field offsets and values are those of ACPI 6.3 (FADT, MADT, GTDT, PPTT), the
//! Microsoft SPCR (rev 2) and DBG2 specifications, the TCG ACPI specification
//! (TPM2 rev 4) and the Arm IORT specification (DEN 0049 E.e).

use alloc::vec::Vec;

use crate::config::{ConfigError, IrqDevice, PlatformConfig, Redistributors};
use crate::dsdt;
use crate::table::{checksum, gas, Oem, TableWriter, CHECKSUM_OFFSET};

/// Signatures.
pub mod sig {
    pub const RSDP: &[u8; 8] = b"RSD PTR ";
    pub const XSDT: &[u8; 4] = b"XSDT";
    pub const FADT: &[u8; 4] = b"FACP";
    pub const MADT: &[u8; 4] = b"APIC";
    pub const GTDT: &[u8; 4] = b"GTDT";
    pub const DSDT: &[u8; 4] = b"DSDT";
    pub const SPCR: &[u8; 4] = b"SPCR";
    pub const DBG2: &[u8; 4] = b"DBG2";
    pub const PPTT: &[u8; 4] = b"PPTT";
    pub const TPM2: &[u8; 4] = b"TPM2";
    pub const MCFG: &[u8; 4] = b"MCFG";
    pub const IORT: &[u8; 4] = b"IORT";
}

/// RSDP (ACPI 6.3, 5.2.5.3).
pub mod rsdp {
    pub const REVISION: u8 = 2;
    pub const LEN: usize = 36;
    /// The ACPI 1.0 checksum covers the first 20 bytes.
    pub const V1_LEN: usize = 20;
    pub const CHECKSUM_OFFSET: usize = 8;
    pub const XSDT_ADDRESS_OFFSET: usize = 24;
    pub const EXTENDED_CHECKSUM_OFFSET: usize = 32;
}

/// FADT (ACPI 6.3, 5.2.9): revision 6, minor version 3.
pub mod fadt {
    pub const REVISION: u8 = 6;
    pub const MINOR_VERSION: u8 = 3;
    pub const LEN: usize = 276;
    pub const FLAGS_OFFSET: usize = 112;
    pub const ARM_BOOT_ARCH_OFFSET: usize = 129;
    pub const X_DSDT_OFFSET: usize = 140;
    /// Flags: HW_REDUCED_ACPI.
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
    /// ARM_BOOT_ARCH flags.
    pub const PSCI_COMPLIANT: u16 = 1 << 0;
    pub const PSCI_USE_HVC: u16 = 1 << 1;
}

/// MADT (ACPI 6.3, 5.2.12): revision 5, GICC of 80 bytes.
pub mod madt {
    pub const REVISION: u8 = 5;
    pub const GICC: u8 = 0x0b;
    pub const GICC_LEN: u8 = 80;
    pub const GICD: u8 = 0x0c;
    pub const GICD_LEN: u8 = 24;
    pub const GICR: u8 = 0x0e;
    pub const GICR_LEN: u8 = 16;
    /// GICC flags: Enabled.
    pub const GICC_ENABLED: u32 = 1 << 0;
    pub const GIC_VERSION_3: u8 = 3;
    /// GIC MSI Frame structure (5.2.12.16).
    pub const GIC_MSI_FRAME: u8 = 0x0d;
    pub const GIC_MSI_FRAME_LEN: u8 = 24;
    /// MSI frame flags: SPI Count and SPI Base come from this structure, not
    /// from the frame's MSI_TYPER register.
    pub const MSI_FRAME_SPI_SELECT: u32 = 1 << 0;
    /// GIC ITS structure (5.2.12.18).
    pub const GIC_ITS: u8 = 0x0f;
    pub const GIC_ITS_LEN: u8 = 20;
    /// The GIC ITS ID the IORT's ITS group names.
    pub const ITS_ID: u32 = 0;
}

/// IORT (Arm DEN 0049, revision E.e: table revision 6) with an ITS group node
/// (revision 1) and a PCI root complex node (revision 4) mapping every requester
/// ID of segment 0 one to one onto the ITS's DeviceIDs.
pub mod iort {
    pub const REVISION: u8 = 6;
    /// Node count, offset of the node array, reserved.
    pub const NODE_COUNT_OFFSET: usize = 36;
    pub const NODE_ARRAY_OFFSET_OFFSET: usize = 40;
    /// The first node, right after the header.
    pub const FIRST_NODE: usize = 48;
    /// Node types.
    pub const NODE_ITS_GROUP: u8 = 0x00;
    pub const NODE_ROOT_COMPLEX: u8 = 0x02;
    pub const ITS_GROUP_REVISION: u8 = 1;
    pub const ROOT_COMPLEX_REVISION: u8 = 4;
    /// Every node starts with type, length, revision, identifier, number of ID
    /// mappings and the offset of its ID array.
    pub const NODE_HEADER_LEN: usize = 16;
    /// ITS group: the header, the ITS count, one ITS identifier.
    pub const ITS_GROUP_LEN: usize = NODE_HEADER_LEN + 4 + 4;
    /// Root complex: the header, memory access properties (8), ATS attribute (4),
    /// PCI segment (4), memory address size limit (1), PASID capabilities (2),
    /// reserved (1), flags (4).
    pub const ROOT_COMPLEX_FIXED_LEN: usize = NODE_HEADER_LEN + 24;
    /// One ID mapping: input base, number of IDs minus one, output base, output
    /// reference, flags.
    pub const ID_MAPPING_LEN: usize = 20;
    /// Memory access properties: Cache Coherency Attribute (fully coherent).
    pub const CCA_COHERENT: u32 = 1;
    /// Memory access flags: CPM (coherent path to memory) and DACS (device
    /// attributes are cacheable and inner shareable).
    pub const MAF_CPM_DACS: u8 = 0b11;
    /// Memory address size limit: the whole 64-bit space (no SMMU narrows it).
    pub const ADDRESS_LIMIT_BITS: u8 = 64;
    /// Requester IDs of one segment: 16 bits.
    pub const RID_COUNT: u32 = 0x1_0000;
}

/// MCFG (PCI Firmware Specification 3.2, 4.1.2): revision 1, one allocation
/// structure per ECAM window.
pub mod mcfg {
    pub const REVISION: u8 = 1;
    pub const RESERVED_LEN: usize = 8;
    pub const ALLOCATION_LEN: usize = 16;
}

/// GTDT (ACPI 6.3, 5.2.24): revision 2.
pub mod gtdt {
    pub const REVISION: u8 = 2;
    /// CntControlBase / CntReadBase when the memory-mapped counter is not provided.
    pub const NO_CNT_BASE: u64 = u64::MAX;
    /// Timer flags: interrupt mode (1 = edge), polarity (1 = active low), always-on.
    pub const FLAG_EDGE: u32 = 1 << 0;
    pub const FLAG_ALWAYS_ON: u32 = 1 << 2;
}

/// SPCR (Microsoft, revision 2).
pub mod spcr {
    pub const REVISION: u8 = 2;
    /// Interface type: ARM PL011 UART.
    pub const INTERFACE_PL011: u8 = 0x03;
    /// Interrupt type bit: ARMH GIC interrupt.
    pub const INTERRUPT_GIC: u8 = 1 << 3;
    /// Baud rate: "as is" (the firmware's setting; the PL011 model has no line).
    pub const BAUD_AS_IS: u8 = 0;
    pub const STOP_BITS_1: u8 = 1;
    pub const TERMINAL_VT100: u8 = 0;
    pub const NOT_PCI: u16 = 0xffff;
    pub const BASE_ADDRESS_OFFSET: usize = 40;
    pub const GSIV_OFFSET: usize = 54;
}

/// DBG2 (Microsoft, revision 0) with one device.
pub mod dbg2 {
    pub const REVISION: u8 = 0;
    /// Offset of the first Debug Device Information structure.
    pub const INFO_OFFSET: u32 = 44;
    /// Port type serial, subtype ARM PL011.
    pub const PORT_SERIAL: u16 = 0x8000;
    pub const SUBTYPE_PL011: u16 = 0x0003;
    /// Offsets inside the device information structure.
    pub const BAR_OFFSET: u16 = 22;
    pub const ADDRESS_SIZE_OFFSET: u16 = 34;
    pub const NAMESPACE_OFFSET: u16 = 38;
}

/// PPTT (ACPI 6.3, 5.2.29): revision 2.
pub mod pptt {
    pub const REVISION: u8 = 2;
    pub const PROCESSOR: u8 = 0;
    pub const PROCESSOR_LEN: u8 = 20;
    pub const PHYSICAL_PACKAGE: u32 = 1 << 0;
    pub const ID_VALID: u32 = 1 << 1;
    pub const THREAD: u32 = 1 << 2;
    pub const LEAF: u32 = 1 << 3;
    pub const IDENTICAL: u32 = 1 << 4;
}

/// TPM2 (TCG ACPI specification, revision 4).
pub mod tpm2 {
    pub const REVISION: u8 = 4;
    pub const PLATFORM_CLIENT: u16 = 0;
    /// Start method 7: Command Response Buffer interface.
    pub const START_METHOD_CRB: u32 = 7;
    /// Offset of the CRB control area (TPM_CRB_CTRL_REQ) in locality 0.
    pub const CRB_CONTROL_AREA: u64 = 0x40;
    pub const START_PARAMS_LEN: usize = 12;
    pub const CONTROL_ADDRESS_OFFSET: usize = 40;
    pub const START_METHOD_OFFSET: usize = 48;
}

/// Alignment of each table inside the blob.
pub const TABLE_ALIGN: usize = 8;

/// Which blob a pointer field lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// `etc/acpi/rsdp`.
    Rsdp,
    /// `etc/acpi/tables`.
    Tables,
}

/// A pointer field holding an offset into the tables blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// Where the field is.
    pub blob: Blob,
    pub offset: usize,
    /// Width in bytes (8 for every pointer written here).
    pub size: u8,
}

/// Where one table is in the tables blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    pub signature: [u8; 4],
    pub offset: usize,
    pub len: usize,
}

/// The tables of one VM, laid out as if the tables blob were at address 0.
#[derive(Debug, Clone)]
pub struct Tables {
    pub rsdp: Vec<u8>,
    pub blob: Vec<u8>,
    pub entries: Vec<TableEntry>,
    pub pointers: Vec<Pointer>,
}

impl Tables {
    /// The bytes of the table with `signature`.
    pub fn table(&self, signature: &[u8; 4]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| &e.signature == signature)
            .map(|e| &self.blob[e.offset..e.offset + e.len])
    }

    /// The RSDP and tables blob with every pointer moved to a tables blob at
    /// `base`, checksums recomputed: ready to copy into guest memory.
    pub fn relocate(&self, base: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rsdp = self.rsdp.clone();
        let mut blob = self.blob.clone();
        for p in &self.pointers {
            let bytes = match p.blob {
                Blob::Rsdp => &mut rsdp,
                Blob::Tables => &mut blob,
            };
            add_u64(bytes, p.offset, base);
        }
        for e in &self.entries {
            let t = &mut blob[e.offset..e.offset + e.len];
            t[CHECKSUM_OFFSET] = 0;
            t[CHECKSUM_OFFSET] = checksum(t);
        }
        finish_rsdp(&mut rsdp);
        (rsdp, blob)
    }
}

fn add_u64(bytes: &mut [u8], offset: usize, add: u64) {
    let field = &mut bytes[offset..offset + 8];
    let mut v = [0u8; 8];
    v.copy_from_slice(field);
    let v = u64::from_le_bytes(v).wrapping_add(add);
    field.copy_from_slice(&v.to_le_bytes());
}

/// Fills in both RSDP checksums.
fn finish_rsdp(rsdp: &mut [u8]) {
    rsdp[rsdp::CHECKSUM_OFFSET] = 0;
    rsdp[rsdp::EXTENDED_CHECKSUM_OFFSET] = 0;
    rsdp[rsdp::CHECKSUM_OFFSET] = checksum(&rsdp[..rsdp::V1_LEN]);
    rsdp[rsdp::EXTENDED_CHECKSUM_OFFSET] = checksum(rsdp);
}

struct Layout {
    blob: Vec<u8>,
    entries: Vec<TableEntry>,
    pointers: Vec<Pointer>,
}

impl Layout {
    fn push(&mut self, table: Vec<u8>) -> usize {
        let offset = self.blob.len().next_multiple_of(TABLE_ALIGN);
        self.blob.resize(offset, 0);
        let mut signature = [0u8; 4];
        signature.copy_from_slice(&table[..4]);
        self.entries.push(TableEntry {
            signature,
            offset,
            len: table.len(),
        });
        self.blob.extend_from_slice(&table);
        offset
    }
}

/// Generates every table for `cfg`.
pub fn build(cfg: &PlatformConfig) -> Result<Tables, ConfigError> {
    cfg.validate()?;
    let oem = Oem {
        id: cfg.oem_id,
        table_id: cfg.oem_table_id,
        revision: cfg.oem_revision,
    };
    let mut l = Layout {
        blob: Vec::new(),
        entries: Vec::new(),
        pointers: Vec::new(),
    };
    let dsdt = l.push(dsdt::dsdt(cfg, &oem));
    let fadt = l.push(fadt(&oem, dsdt as u64));
    l.pointers.push(Pointer {
        blob: Blob::Tables,
        offset: fadt + fadt::X_DSDT_OFFSET,
        size: 8,
    });
    let mut listed = Vec::from([fadt]);
    listed.push(l.push(madt(cfg, &oem)));
    listed.push(l.push(gtdt(cfg, &oem)));
    listed.push(l.push(spcr(&cfg.uart, &oem)));
    listed.push(l.push(dbg2(&cfg.uart, &oem)));
    listed.push(l.push(pptt(cfg, &oem)));
    if let Some(tpm) = cfg.tpm_crb {
        listed.push(l.push(tpm2(tpm.base, &oem)));
    }
    if let Some(p) = &cfg.pcie {
        listed.push(l.push(mcfg(p, &oem)));
        if p.its_base.is_some() {
            listed.push(l.push(iort(&oem)));
        }
    }
    let mut x = TableWriter::new(sig::XSDT, 1, &oem);
    let first_entry = x.len();
    for &t in &listed {
        x.u64(t as u64);
    }
    let xsdt = l.push(x.finish());
    for i in 0..listed.len() {
        l.pointers.push(Pointer {
            blob: Blob::Tables,
            offset: xsdt + first_entry + 8 * i,
            size: 8,
        });
    }
    let rsdp = rsdp(&oem, xsdt as u64);
    l.pointers.push(Pointer {
        blob: Blob::Rsdp,
        offset: rsdp::XSDT_ADDRESS_OFFSET,
        size: 8,
    });
    Ok(Tables {
        rsdp,
        blob: l.blob,
        entries: l.entries,
        pointers: l.pointers,
    })
}

fn rsdp(oem: &Oem, xsdt: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(rsdp::LEN);
    r.extend_from_slice(sig::RSDP);
    r.push(0); // Checksum
    r.extend_from_slice(&oem.id);
    r.push(rsdp::REVISION);
    r.extend_from_slice(&0u32.to_le_bytes()); // RsdtAddress: no RSDT
    r.extend_from_slice(&(rsdp::LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt.to_le_bytes());
    r.extend_from_slice(&[0; 4]); // Extended Checksum, Reserved
    debug_assert_eq!(r.len(), rsdp::LEN);
    finish_rsdp(&mut r);
    r
}

fn fadt(oem: &Oem, dsdt: u64) -> Vec<u8> {
    let mut w = TableWriter::new(sig::FADT, fadt::REVISION, oem);
    // FIRMWARE_CTRL, DSDT (32-bit) and everything up to Flags: unused on a
    // hardware-reduced platform (no FACS, no SCI, no PM blocks).
    w.zeros(fadt::FLAGS_OFFSET - w.len());
    w.u32(fadt::HW_REDUCED_ACPI);
    w.gas_none(); // RESET_REG: reset is PSCI SYSTEM_RESET
    w.u8(0); // RESET_VALUE
    debug_assert_eq!(w.len(), fadt::ARM_BOOT_ARCH_OFFSET);
    w.u16(fadt::PSCI_COMPLIANT | fadt::PSCI_USE_HVC);
    w.u8(fadt::MINOR_VERSION);
    w.u64(0); // X_FIRMWARE_CTRL
    debug_assert_eq!(w.len(), fadt::X_DSDT_OFFSET);
    w.u64(dsdt);
    // X_PM1a_EVT_BLK .. X_GPE1_BLK, SLEEP_CONTROL_REG, SLEEP_STATUS_REG: absent.
    for _ in 0..10 {
        w.gas_none();
    }
    w.u64(0); // Hypervisor Vendor Identity
    debug_assert_eq!(w.len(), fadt::LEN);
    w.finish()
}

fn madt(cfg: &PlatformConfig, oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::MADT, madt::REVISION, oem);
    w.u32(0); // Local Interrupt Controller Address: none on Arm
    w.u32(0); // Flags: no PC-AT 8259s
    for (i, &mpidr) in cfg.mpidrs.iter().enumerate() {
        let start = w.len();
        w.u8(madt::GICC).u8(madt::GICC_LEN).u16(0);
        w.u32(0); // CPU Interface Number: GICv3 uses system registers
        w.u32(i as u32); // ACPI Processor UID
        w.u32(madt::GICC_ENABLED);
        w.u32(0); // Parking Protocol Version: PSCI instead
        w.u32(0); // Performance Interrupt GSIV: no PMU
        w.u64(0); // Parked Address
        w.u64(0); // Physical Base Address (GICv2 CPU interface)
        w.u64(0); // GICV
        w.u64(0); // GICH
        w.u32(0); // VGIC Maintenance Interrupt: no virtualization in the guest
                  // GICR Base Address: zero when the GICR structure describes them.
        w.u64(match cfg.redistributors {
            Redistributors::Region => 0,
            Redistributors::PerGicc => cfg.gicr_base + i as u64 * cfg.gicr_stride,
        });
        w.u64(mpidr);
        w.u8(0); // Processor Power Efficiency Class
        w.u8(0);
        w.u16(0); // SPE overflow interrupt
        debug_assert_eq!(w.len() - start, usize::from(madt::GICC_LEN));
    }
    w.u8(madt::GICD).u8(madt::GICD_LEN).u16(0);
    w.u32(0); // GIC ID
    w.u64(cfg.gicd_base);
    w.u32(0); // System Vector Base
    w.u8(madt::GIC_VERSION_3).zeros(3);
    if cfg.redistributors == Redistributors::Region {
        // validate() checked that the length fits the 32-bit field.
        let gicr_len = cfg.gicr_stride * cfg.mpidrs.len() as u64;
        w.u8(madt::GICR).u8(madt::GICR_LEN).u16(0);
        w.u64(cfg.gicr_base);
        w.u32(gicr_len as u32);
    }
    if let Some(f) = cfg.pcie.and_then(|p| p.msi_frame) {
        // validate() checked that the SPI base and count fit 16 bits.
        w.u8(madt::GIC_MSI_FRAME).u8(madt::GIC_MSI_FRAME_LEN).u16(0);
        w.u32(0); // GIC MSI Frame ID
        w.u64(f.base);
        w.u32(madt::MSI_FRAME_SPI_SELECT);
        w.u16(f.spi_count as u16).u16(f.first_spi as u16);
    }
    if let Some(base) = cfg.pcie.and_then(|p| p.its_base) {
        let start = w.len();
        w.u8(madt::GIC_ITS).u8(madt::GIC_ITS_LEN).u16(0);
        w.u32(madt::ITS_ID);
        w.u64(base);
        w.u32(0); // Reserved
        debug_assert_eq!(w.len() - start, usize::from(madt::GIC_ITS_LEN));
    }
    w.finish()
}

/// The IORT of a root complex whose MSIs go to the ITS: requester ID r of
/// segment 0 is DeviceID r.
fn iort(oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::IORT, iort::REVISION, oem);
    debug_assert_eq!(w.len(), iort::NODE_COUNT_OFFSET);
    w.u32(2); // ITS group, root complex
    w.u32(iort::FIRST_NODE as u32);
    w.u32(0); // Reserved
    debug_assert_eq!(w.len(), iort::FIRST_NODE);
    let its_group = w.len();
    w.u8(iort::NODE_ITS_GROUP)
        .u16(iort::ITS_GROUP_LEN as u16)
        .u8(iort::ITS_GROUP_REVISION);
    w.u32(0); // Identifier
    w.u32(0).u32(0); // no ID mappings
    w.u32(1); // Number of ITSs
    w.u32(madt::ITS_ID);
    debug_assert_eq!(w.len() - its_group, iort::ITS_GROUP_LEN);
    let rc = w.len();
    w.u8(iort::NODE_ROOT_COMPLEX)
        .u16((iort::ROOT_COMPLEX_FIXED_LEN + iort::ID_MAPPING_LEN) as u16)
        .u8(iort::ROOT_COMPLEX_REVISION);
    w.u32(1); // Identifier
    w.u32(1); // Number of ID mappings
    w.u32(iort::ROOT_COMPLEX_FIXED_LEN as u32); // Reference to the ID array
    w.u32(iort::CCA_COHERENT);
    w.u8(0); // Allocation hints
    w.u16(0); // Reserved
    w.u8(iort::MAF_CPM_DACS);
    w.u32(0); // ATS Attribute: no ATS
    w.u32(0); // PCI Segment number (MCFG's)
    w.u8(iort::ADDRESS_LIMIT_BITS);
    w.u16(0); // PASID capabilities: none
    w.u8(0); // Reserved
    w.u32(0); // Flags
    debug_assert_eq!(w.len() - rc, iort::ROOT_COMPLEX_FIXED_LEN);
    w.u32(0); // Input base
    w.u32(iort::RID_COUNT - 1); // Number of IDs (minus one)
    w.u32(0); // Output base
    w.u32(its_group as u32); // Output reference: the ITS group
    w.u32(0); // Flags: a range, not a single mapping
    w.finish()
}

fn mcfg(p: &crate::config::PcieConfig, oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::MCFG, mcfg::REVISION, oem);
    w.zeros(mcfg::RESERVED_LEN);
    let start = w.len();
    w.u64(p.ecam.base);
    w.u16(0); // PCI Segment Group
    w.u8(0).u8(p.bus_end()); // Start and End Bus Number
    w.u32(0);
    debug_assert_eq!(w.len() - start, mcfg::ALLOCATION_LEN);
    w.finish()
}

fn gtdt(cfg: &PlatformConfig, oem: &Oem) -> Vec<u8> {
    let t = cfg.timers;
    // Level-sensitive, active high; the virtual timer keeps counting in every
    // power state the guest can enter, so all four are always-on.
    let flags = gtdt::FLAG_ALWAYS_ON;
    let mut w = TableWriter::new(sig::GTDT, gtdt::REVISION, oem);
    w.u64(gtdt::NO_CNT_BASE); // CntControlBase
    w.u32(0);
    for gsiv in [
        t.secure_el1,
        t.nonsecure_el1,
        t.virtual_el1,
        t.nonsecure_el2,
    ] {
        w.u32(gsiv).u32(flags);
    }
    w.u64(gtdt::NO_CNT_BASE); // CntReadBase
    w.u32(0); // Platform Timer Count
    w.u32(0); // Platform Timer Offset
    w.finish()
}

fn spcr(uart: &IrqDevice, oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::SPCR, spcr::REVISION, oem);
    w.u8(spcr::INTERFACE_PL011).zeros(3);
    debug_assert_eq!(w.len(), spcr::BASE_ADDRESS_OFFSET);
    w.gas_memory(32, gas::ACCESS_DWORD, uart.region.base);
    w.u8(spcr::INTERRUPT_GIC);
    w.u8(0); // PC-AT IRQ
    debug_assert_eq!(w.len(), spcr::GSIV_OFFSET);
    w.u32(uart.gsiv);
    w.u8(spcr::BAUD_AS_IS);
    w.u8(0); // Parity: none
    w.u8(spcr::STOP_BITS_1);
    w.u8(0); // Flow control: none
    w.u8(spcr::TERMINAL_VT100);
    w.u8(0); // Language
    w.u16(spcr::NOT_PCI).u16(spcr::NOT_PCI);
    w.u8(0).u8(0).u8(0); // PCI bus, device, function
    w.u32(0); // PCI flags
    w.u8(0); // PCI segment
    w.u32(0); // Reserved
    w.finish()
}

fn dbg2(uart: &IrqDevice, oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::DBG2, dbg2::REVISION, oem);
    w.u32(dbg2::INFO_OFFSET);
    w.u32(1); // NumberDbgDeviceInfo
    let start = w.len();
    debug_assert_eq!(start, dbg2::INFO_OFFSET as usize);
    let name = dsdt::UART_PATH.as_bytes();
    let name_len = name.len() as u16 + 1;
    let len = dbg2::NAMESPACE_OFFSET + name_len;
    w.u8(0); // Revision
    w.u16(len);
    w.u8(1); // NumberofGenericAddressRegisters
    w.u16(name_len);
    w.u16(dbg2::NAMESPACE_OFFSET);
    w.u16(0).u16(0); // OEM data length, offset
    w.u16(dbg2::PORT_SERIAL).u16(dbg2::SUBTYPE_PL011);
    w.u16(0);
    w.u16(dbg2::BAR_OFFSET).u16(dbg2::ADDRESS_SIZE_OFFSET);
    debug_assert_eq!(w.len() - start, usize::from(dbg2::BAR_OFFSET));
    w.gas_memory(32, gas::ACCESS_DWORD, uart.region.base);
    w.u32(uart.region.size as u32);
    debug_assert_eq!(w.len() - start, usize::from(dbg2::NAMESPACE_OFFSET));
    w.raw(name).u8(0);
    w.finish()
}

fn pptt(cfg: &PlatformConfig, oem: &Oem) -> Vec<u8> {
    let t = cfg.topology;
    let mut w = TableWriter::new(sig::PPTT, pptt::REVISION, oem);
    let node = |w: &mut TableWriter, flags: u32, parent: u32, id: u32| -> u32 {
        let offset = w.len() as u32;
        w.u8(pptt::PROCESSOR).u8(pptt::PROCESSOR_LEN).u16(0);
        w.u32(flags).u32(parent).u32(id).u32(0);
        offset
    };
    let mut uid = 0u32;
    for s in 0..t.sockets {
        let socket = node(&mut w, pptt::PHYSICAL_PACKAGE | pptt::ID_VALID, 0, s);
        for c in 0..t.clusters {
            let cluster = node(&mut w, pptt::ID_VALID, socket, c);
            for k in 0..t.cores {
                if t.threads == 1 {
                    node(&mut w, pptt::ID_VALID | pptt::LEAF, cluster, uid);
                    uid += 1;
                    continue;
                }
                let core = node(&mut w, pptt::ID_VALID, cluster, k);
                for _ in 0..t.threads {
                    let leaf = pptt::ID_VALID | pptt::LEAF | pptt::THREAD | pptt::IDENTICAL;
                    node(&mut w, leaf, core, uid);
                    uid += 1;
                }
            }
        }
    }
    w.finish()
}

fn tpm2(base: u64, oem: &Oem) -> Vec<u8> {
    let mut w = TableWriter::new(sig::TPM2, tpm2::REVISION, oem);
    w.u16(tpm2::PLATFORM_CLIENT).u16(0);
    debug_assert_eq!(w.len(), tpm2::CONTROL_ADDRESS_OFFSET);
    w.u64(base + tpm2::CRB_CONTROL_AREA);
    debug_assert_eq!(w.len(), tpm2::START_METHOD_OFFSET);
    w.u32(tpm2::START_METHOD_CRB);
    w.zeros(tpm2::START_PARAMS_LEN);
    // LAML, LASA: the firmware hands the OS its event log through the EFI
    // configuration table, not through ACPI.
    w.u32(0).u64(0);
    w.finish()
}
