//! Platform discovery from ACPI tables (ACPI 6.5): the RSDP and XSDT to find the
//! tables, then MADT (CPUs, GIC distributor, redistributors, ITSes, maintenance
//! interrupt), GTDT (timer interrupts), SPCR (console UART), MCFG (PCIe ECAM) and
//! FADT (PSCI conduit) — what an Arm UEFI firmware such as Ampere's hands over
//! instead of a device tree.
//!
//! Every table is checked (signature, length within the bytes given, checksum)
//! and every structure bounds-checked: firmware tables are input, a malformed one
//! is an error, never a panic. The `acpi` crate was considered; it walks tables
//! through an `unsafe` physical-memory mapping handler and this crate forbids
//! `unsafe`, so the few fixed layouts needed are read here from byte slices.
//! The caller (the UEFI entry) copies the tables out of firmware memory.

use alloc::string::String;
use alloc::vec::Vec;

use crate::board::{Board, Ecam, Uart, UartKind};
use crate::discover::{Gic, Platform, PsciConduit, Range, Seed, TimerIrqs};

/// Why the ACPI tables do not describe a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// The RSDP is malformed (signature, checksum, revision < 2).
    BadRsdp,
    /// A table's header is malformed: signature, length or checksum.
    BadTable([u8; 4]),
    /// A table the hypervisor cannot run without is absent.
    Missing(&'static str),
    /// A structure inside a table is truncated or inconsistent.
    Malformed(&'static str),
}

/// Length of the common System Description Table header.
pub const HEADER_LEN: usize = 36;

fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// The RSDP (ACPI 2.0+): returns the XSDT's physical address.
pub fn rsdp_xsdt(rsdp: &[u8]) -> Result<u64, AcpiError> {
    const RSDP_V2_LEN: usize = 36;
    if rsdp.get(0..8) != Some(b"RSD PTR ".as_slice())
        || u8_at(rsdp, 15).ok_or(AcpiError::BadRsdp)? < 2
        || rsdp.len() < RSDP_V2_LEN
        || !checksum_ok(&rsdp[..20])
        || !checksum_ok(&rsdp[..RSDP_V2_LEN])
    {
        return Err(AcpiError::BadRsdp);
    }
    u64_at(rsdp, 24).ok_or(AcpiError::BadRsdp)
}

/// A checked System Description Table.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Table<'a> {
    /// Checks the header of the table at the start of `bytes` (which may run on
    /// past it) and returns it cut to its length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AcpiError> {
        let sig: [u8; 4] = bytes
            .get(0..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(AcpiError::BadTable(*b"????"))?;
        let len = u32_at(bytes, 4).ok_or(AcpiError::BadTable(sig))? as usize;
        if len < HEADER_LEN || len > bytes.len() || !checksum_ok(&bytes[..len]) {
            return Err(AcpiError::BadTable(sig));
        }
        Ok(Self {
            bytes: &bytes[..len],
        })
    }
    pub fn signature(&self) -> &'a [u8] {
        &self.bytes[0..4]
    }
    pub fn oem_id(&self) -> String {
        String::from_utf8_lossy(&self.bytes[10..16]).into_owned()
    }
    pub fn oem_table_id(&self) -> String {
        String::from_utf8_lossy(&self.bytes[16..24]).into_owned()
    }
    fn body(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// The physical addresses of the tables an XSDT lists.
pub fn xsdt_entries(xsdt: &[u8]) -> Result<Vec<u64>, AcpiError> {
    let t = Table::parse(xsdt)?;
    if t.signature() != b"XSDT" {
        return Err(AcpiError::BadTable(*b"XSDT"));
    }
    Ok(t.body()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// MADT interrupt-controller structure types (ACPI 6.5 table 5.21).
mod madt_type {
    pub const GICC: u8 = 0x0b;
    pub const GICD: u8 = 0x0c;
    pub const GICR: u8 = 0x0e;
    pub const ITS: u8 = 0x0f;
}
/// GICC flags: Enabled, Online Capable (ACPI 6.5 table 5.37).
const GICC_ENABLED: u32 = 1 << 0;
const GICC_ONLINE_CAPABLE: u32 = 1 << 3;
/// Offset of the MADT's first interrupt-controller structure.
const MADT_ENTRIES: usize = 44;

/// What the MADT says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Madt {
    /// MPIDR affinity of every enabled (or online-capable) CPU, in table order.
    pub cpus: Vec<u64>,
    pub gicd: Option<u64>,
    /// GIC version from the GICD structure (0: "not specified").
    pub gic_version: u8,
    pub gicr: Vec<Range>,
    pub its: Vec<u64>,
    /// VGIC maintenance GSIV of the first enabled GICC.
    pub maintenance_intid: Option<u32>,
}

pub fn parse_madt(t: Table) -> Result<Madt, AcpiError> {
    const BAD: AcpiError = AcpiError::Malformed("MADT interrupt-controller structure");
    let b = t.bytes;
    let mut m = Madt::default();
    let mut off = MADT_ENTRIES;
    while off < b.len() {
        let kind = u8_at(b, off).ok_or(BAD)?;
        let len = u8_at(b, off + 1).ok_or(BAD)? as usize;
        if len < 2 || off + len > b.len() {
            return Err(BAD);
        }
        let e = &b[off..off + len];
        match kind {
            madt_type::GICC => {
                let flags = u32_at(e, 12).ok_or(BAD)?;
                let mpidr = u64_at(e, 68).ok_or(BAD)?;
                if flags & (GICC_ENABLED | GICC_ONLINE_CAPABLE) != 0 {
                    m.cpus.push(mpidr & AFFINITY_MASK);
                    let maint = u32_at(e, 56).ok_or(BAD)?;
                    if m.maintenance_intid.is_none() && maint != 0 {
                        m.maintenance_intid = Some(maint);
                    }
                }
            }
            madt_type::GICD => {
                m.gicd = Some(u64_at(e, 8).ok_or(BAD)?);
                m.gic_version = u8_at(e, 20).ok_or(BAD)?;
            }
            madt_type::GICR => m.gicr.push(Range {
                base: u64_at(e, 4).ok_or(BAD)?,
                size: u64::from(u32_at(e, 12).ok_or(BAD)?),
            }),
            madt_type::ITS => m.its.push(u64_at(e, 8).ok_or(BAD)?),
            _ => {}
        }
        off += len;
    }
    Ok(m)
}

/// MPIDR_EL1's affinity fields (Aff3 at 39:32, Aff2..Aff0 at 23:0).
const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// GTDT: the generic-timer GSIVs (ACPI 6.5 table 5.128).
pub fn parse_gtdt(t: Table) -> Result<TimerIrqs, AcpiError> {
    let b = t.bytes;
    let bad = AcpiError::Malformed("GTDT");
    Ok(TimerIrqs {
        phys_secure: u32_at(b, 48).ok_or(bad.clone())?,
        phys_nonsecure: u32_at(b, 56).ok_or(bad.clone())?,
        virt: u32_at(b, 64).ok_or(bad.clone())?,
        hyp: u32_at(b, 72).ok_or(bad)?,
    })
}

/// SPCR interface types (Microsoft DBG2 serial port subtypes).
mod spcr_type {
    pub const PL011: u8 = 0x03;
    pub const SBSA_32BIT: u8 = 0x0d;
    pub const SBSA_GENERIC: u8 = 0x0e;
    /// Qualcomm GENI UART ("SDM845" 1.8432 MHz and 7.372 MHz).
    pub const QCOM_GENI_1843: u8 = 0x11;
    pub const QCOM_GENI_7372: u8 = 0x13;
}
/// SPCR interrupt type bit: ARMH GIC interrupt (GSIV valid).
const SPCR_IRQ_GIC: u8 = 1 << 3;
/// GAS address space: system memory.
const GAS_SYSTEM_MEMORY: u8 = 0;

/// SPCR: the console UART; `None` for a kind the hypervisor has no model of.
pub fn parse_spcr(t: Table) -> Result<Option<Uart>, AcpiError> {
    let b = t.bytes;
    let bad = AcpiError::Malformed("SPCR");
    let kind = match u8_at(b, 36).ok_or(bad.clone())? {
        spcr_type::PL011 | spcr_type::SBSA_32BIT | spcr_type::SBSA_GENERIC => UartKind::Pl011,
        spcr_type::QCOM_GENI_1843 | spcr_type::QCOM_GENI_7372 => UartKind::QcomGeni,
        _ => return Ok(None),
    };
    if u8_at(b, 40).ok_or(bad.clone())? != GAS_SYSTEM_MEMORY {
        return Ok(None);
    }
    let base = u64_at(b, 44).ok_or(bad.clone())?;
    let irq_type = u8_at(b, 52).ok_or(bad.clone())?;
    let gsiv = u32_at(b, 54).ok_or(bad)?;
    let size = match kind {
        UartKind::Pl011 => 0x1000,
        UartKind::QcomGeni => 0x4000,
    };
    Ok(Some(Uart {
        kind,
        regs: Range { base, size },
        intid: (irq_type & SPCR_IRQ_GIC != 0).then_some(gsiv),
    }))
}

/// MCFG: the ECAM windows (PCI Firmware spec 3.3, table 4-3).
pub fn parse_mcfg(t: Table) -> Result<Vec<Ecam>, AcpiError> {
    const FIRST: usize = 44;
    const ENTRY: usize = 16;
    let b = t.bytes;
    if b.len() < FIRST || !(b.len() - FIRST).is_multiple_of(ENTRY) {
        return Err(AcpiError::Malformed("MCFG"));
    }
    Ok(b[FIRST..]
        .chunks_exact(ENTRY)
        .map(|e| Ecam {
            base: u64::from_le_bytes(e[0..8].try_into().unwrap_or_default()),
            segment: u16::from_le_bytes([e[8], e[9]]),
            bus_start: e[10],
            bus_end: e[11],
        })
        .collect())
}

/// FADT ARM boot architecture flags (ACPI 6.5 table 5.11).
const FADT_ARM_BOOT_FLAGS: usize = 129;
const PSCI_COMPLIANT: u16 = 1 << 0;
const PSCI_USE_HVC: u16 = 1 << 1;

/// FADT: the PSCI conduit, `None` if the firmware is not PSCI compliant.
pub fn parse_fadt(t: Table) -> Result<Option<PsciConduit>, AcpiError> {
    let flags = u16_at(t.bytes, FADT_ARM_BOOT_FLAGS).ok_or(AcpiError::Malformed("FADT"))?;
    Ok(
        (flags & PSCI_COMPLIANT != 0).then_some(if flags & PSCI_USE_HVC != 0 {
            PsciConduit::Hvc
        } else {
            PsciConduit::Smc
        }),
    )
}

/// The platform from ACPI tables (each a checked table's bytes, in any order)
/// and the memory the UEFI memory map reports as usable. A board description
/// matching the MADT's OEM IDs fills what the tables leave out.
pub fn discover_acpi(tables: &[&[u8]], memory: &[Range]) -> Result<Platform, AcpiError> {
    let mut parsed = Vec::new();
    for bytes in tables {
        parsed.push(Table::parse(bytes)?);
    }
    let find = |sig: &[u8; 4]| parsed.iter().copied().find(|t| t.signature() == sig);
    let madt_t = find(b"APIC").ok_or(AcpiError::Missing("MADT"))?;
    let board = Board::identify_acpi(&madt_t.oem_id(), &madt_t.oem_table_id());
    let madt = parse_madt(madt_t)?;
    let mut fallbacks = Vec::new();

    if madt.cpus.is_empty() {
        return Err(AcpiError::Missing("enabled GICC structures"));
    }
    let gicd = madt.gicd.ok_or(AcpiError::Missing("MADT GICD"))?;
    if madt.gicr.is_empty() {
        // GICR base addresses per GICC (no GICR structure) are not supported.
        return Err(AcpiError::Missing("MADT GICR"));
    }
    let gic = Gic {
        gicd: Range {
            base: gicd,
            size: 0x1_0000,
        },
        gicr: madt.gicr,
        maintenance_intid: madt.maintenance_intid,
        redistributor_stride: None,
        its: madt
            .its
            .iter()
            .map(|&base| Range {
                base,
                size: 0x2_0000,
            })
            .collect(),
    };
    let timer = match find(b"GTDT") {
        Some(t) => parse_gtdt(t)?,
        None => {
            let b = board.ok_or(AcpiError::Missing("GTDT"))?;
            fallbacks.push("timer");
            b.timer
        }
    };
    let uart = match find(b"SPCR") {
        Some(t) => parse_spcr(t)?,
        None => None,
    };
    let pci_ecam = match find(b"MCFG") {
        Some(t) => parse_mcfg(t)?,
        None => Vec::new(),
    };
    let mut psci = match find(b"FACP") {
        Some(t) => parse_fadt(t)?,
        None => None,
    };
    if psci.is_none() {
        if let Some(b) = board {
            fallbacks.push("psci");
            psci = Some(b.psci);
        }
    }
    let mut memory = memory.to_vec();
    if memory.is_empty() {
        let b = board.ok_or(AcpiError::Missing("memory map"))?;
        fallbacks.push("memory");
        memory = b.memory.to_vec();
    }
    let model = alloc::format!(
        "{} {}",
        madt_t.oem_id().trim_end(),
        madt_t.oem_table_id().trim_end()
    );
    Ok(Platform {
        board,
        model,
        memory,
        reserved: Vec::new(),
        uart,
        gic,
        timer,
        cpus: madt.cpus,
        psci,
        initrd: None,
        bootargs: None,
        virtio_mmio: Vec::new(),
        seed: Seed::default(),
        pci_ecam,
        fallbacks,
    })
}
