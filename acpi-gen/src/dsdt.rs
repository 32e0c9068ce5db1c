//! The DSDT: the namespace of the guest's devices under `\_SB`, in AML encoded by
//! `acpi_tables::aml`. Hardware IDs: `ACPI0007` processor devices, PL011 `ARMH0011`
//! (the Arm SBSA/ServerReady ID of the PL011), PL031 `ARMH0031`, TPM 2.0 `MSFT0101`
//! with its CRB window, virtio-mmio `LNRO0005`, and the power button as a Generic
//! Event Device (`ACPI0013`) whose interrupt notifies a `PNP0C0C` power-button device.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, And, Arg, CreateDWordField, Device, EISAName, Else, Equal,
    If, Interrupt, Local, Memory32Fixed, Method, Name, NotEqual, Notify, Or, Package, Path,
    ResourceTemplate, Return, Scope, Store, Uuid,
};
use acpi_tables::Aml;

use crate::config::{IrqDevice, MmioRegion, PcieConfig, PlatformConfig, Trigger, INTX_PINS};
use crate::table::{Oem, TableWriter};
use crate::tables::sig;

/// DSDT revision 2: integers are 64 bits wide.
pub const REVISION: u8 = 2;

/// Hardware IDs.
pub mod hid {
    pub const PROCESSOR: &str = "ACPI0007";
    pub const PL011: &str = "ARMH0011";
    pub const PL031: &str = "ARMH0031";
    pub const TPM2: &str = "MSFT0101";
    pub const VIRTIO_MMIO: &str = "LNRO0005";
    pub const GED: &str = "ACPI0013";
    pub const POWER_BUTTON: &str = "PNP0C0C";
    /// PCI Express host bridge, compatible with a PCI host bridge (EISA IDs).
    pub const PCIE_HOST: &str = "PNP0A08";
    pub const PCI_HOST: &str = "PNP0A03";
    /// Motherboard resources (the ECAM window the MCFG points at).
    pub const MOTHERBOARD: &str = "PNP0C02";
}

/// `_OSC` for PCI host bridges (PCI Firmware Specification 3.2, 4.5).
pub mod osc {
    pub const PCI_HOST_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";
    /// Capabilities DWORD 1 (status) bits.
    pub const UNRECOGNIZED_UUID: u8 = 1 << 2;
    pub const UNRECOGNIZED_REVISION: u8 = 1 << 3;
    pub const CAPABILITIES_MASKED: u8 = 1 << 4;
    /// The revision of the PCI host bridge `_OSC`.
    pub const REVISION: u8 = 1;
    /// Control field bits the host bridge grants the OS: native PME, AER, the PCI
    /// Express Capability structure and LTR. Native hot plug (bit 0) and SHPC
    /// hot plug (bit 1) stay with the firmware: the root complex has no hot-plug
    /// slots.
    pub const GRANTED: u8 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5);
    /// Byte offsets of the capabilities buffer's DWORDs 1 and 3 (control).
    pub const CDW1: u8 = 0;
    pub const CDW3: u8 = 8;
}

/// `_PRT` entry address: device in bits 31:16, any function (0xFFFF).
const PRT_ANY_FUNCTION: u32 = 0xffff;
/// Devices on a bus.
const PCI_DEVICES: u32 = 32;

/// The namespace path of the console UART (DBG2 names it).
pub const UART_PATH: &str = "\\_SB.COM0";
/// The namespace path of the power button the GED notifies.
pub const POWER_BUTTON_PATH: &str = "\\_SB_.PWRB";
/// Notify value for a power button press (ACPI 6.3, 4.8.3.1.1).
pub const NOTIFY_BUTTON_PRESSED: u8 = 0x80;
/// `_STA`: present, enabled, shown in UI, functioning.
pub const STA_PRESENT: u8 = 0x0f;
/// `_CCA`: the device's DMA is cache coherent.
pub const CCA_COHERENT: u8 = 1;

/// The DSDT for `cfg` (already validated).
pub fn dsdt(cfg: &PlatformConfig, oem: &Oem) -> Vec<u8> {
    let mut devices: Vec<Encoded> = Vec::new();
    for i in 0..cfg.mpidrs.len() {
        devices.push(Encoded(processor(i as u32)));
    }
    devices.push(Encoded(irq_device("COM0", hid::PL011, 0, &cfg.uart, None)));
    if let Some(rtc) = &cfg.rtc {
        devices.push(Encoded(irq_device("RTC0", hid::PL031, 0, rtc, None)));
    }
    if let Some(tpm) = cfg.tpm_crb {
        devices.push(Encoded(tpm_device(tpm)));
    }
    for (slot, d) in cfg.virtio_mmio.iter().enumerate() {
        let name = format!("V{slot:03X}");
        devices.push(Encoded(irq_device(
            &name,
            hid::VIRTIO_MMIO,
            slot as u32,
            d,
            Some(CCA_COHERENT),
        )));
    }
    if let Some(gsiv) = cfg.power_button_gsiv {
        devices.push(Encoded(ged(gsiv)));
        devices.push(Encoded(power_button()));
    }
    if let Some(p) = &cfg.pcie {
        devices.push(Encoded(pcie_host(p)));
        devices.push(Encoded(ecam_reservation(p)));
    }
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    let mut aml = Vec::new();
    Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut aml);
    let mut w = TableWriter::new(sig::DSDT, REVISION, oem);
    w.raw(&aml);
    w.finish()
}

/// Already-encoded AML is AML.
struct Encoded(Vec<u8>);

impl Aml for Encoded {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn encode(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

fn processor(uid: u32) -> Vec<u8> {
    let name = format!("C{uid:03X}");
    encode(&Device::new(
        Path::new(&name),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid::PROCESSOR),
            &Name::new(Path::new("_UID"), &uid),
        ],
    ))
}

fn memory(r: MmioRegion) -> Memory32Fixed {
    // PlatformConfig::validate guarantees both fit in 32 bits.
    Memory32Fixed::new(true, r.base as u32, r.size as u32)
}

fn interrupt(gsiv: u32, trigger: Trigger) -> Interrupt {
    Interrupt::new(true, trigger == Trigger::Edge, false, false, gsiv)
}

fn irq_device(name: &str, hid: &'static str, uid: u32, d: &IrqDevice, cca: Option<u8>) -> Vec<u8> {
    let mem = memory(d.region);
    let irq = interrupt(d.gsiv, d.trigger);
    let crs = ResourceTemplate::new(alloc::vec![&mem, &irq]);
    let hid_name = Name::new(Path::new("_HID"), &hid);
    let uid_name = Name::new(Path::new("_UID"), &uid);
    let crs_name = Name::new(Path::new("_CRS"), &crs);
    let cca_name = cca.map(|c| Name::new(Path::new("_CCA"), &c));
    let mut children: Vec<&dyn Aml> = alloc::vec![&hid_name, &uid_name];
    if let Some(c) = &cca_name {
        children.push(c);
    }
    children.push(&crs_name);
    encode(&Device::new(Path::new(name), children))
}

fn tpm_device(r: MmioRegion) -> Vec<u8> {
    let mem = memory(r);
    let crs = ResourceTemplate::new(alloc::vec![&mem]);
    let description: String = "TPM 2.0 Device".into();
    encode(&Device::new(
        Path::new("TPM0"),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid::TPM2),
            &Name::new(Path::new("_STR"), &description),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_STA"), &STA_PRESENT),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}

fn ged(gsiv: u32) -> Vec<u8> {
    let irq = interrupt(gsiv, Trigger::Level);
    let crs = ResourceTemplate::new(alloc::vec![&irq]);
    let button = Path::new(POWER_BUTTON_PATH);
    let notify = Notify::new(&button, &NOTIFY_BUTTON_PRESSED);
    let is_button = Equal::new(&Arg(0), &gsiv);
    let body = If::new(&is_button, alloc::vec![&notify]);
    // _EVT is called with the GSIV of the interrupt that fired.
    let evt = Method::new(Path::new("_EVT"), 1, true, alloc::vec![&body]);
    encode(&Device::new(
        Path::new("GED0"),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid::GED),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
            &evt,
        ],
    ))
}

fn power_button() -> Vec<u8> {
    encode(&Device::new(
        Path::new("PWRB"),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid::POWER_BUTTON),
            &Name::new(Path::new("_UID"), &0u8),
        ],
    ))
}

/// The root complex: `PNP0A08` on segment 0 from bus 0, its bus range and
/// windows in `_CRS` (the I/O window as ports 0.. translated to its CPU
/// address), INTx routing in `_PRT`, and `_OSC`.
fn pcie_host(p: &PcieConfig) -> Vec<u8> {
    let bus = AddressSpace::<u16>::new_bus_number(0, u16::from(p.bus_end()));
    // validate() checked that both windows fit 32 bits.
    let (m, io) = (p.mmio32, p.pio);
    let mem = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        m.base as u32,
        (m.base + m.size - 1) as u32,
        None,
    );
    let ports = AddressSpace::<u32>::new_io(0, (io.size - 1) as u32, Some(io.base as u32));
    let crs = ResourceTemplate::new(alloc::vec![&bus, &mem, &ports]);

    let entries: Vec<[u32; 4]> = (0..PCI_DEVICES)
        .flat_map(|dev| {
            (0..INTX_PINS).map(move |pin| {
                [
                    (dev << 16) | PRT_ANY_FUNCTION,
                    pin,
                    0,
                    p.intx_gsiv(dev, pin),
                ]
            })
        })
        .collect();
    let packages: Vec<Package> = entries
        .iter()
        .map(|[addr, pin, source, gsiv]| Package::new(alloc::vec![addr, pin, source, gsiv]))
        .collect();
    let prt = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());

    let hid = EISAName::new(hid::PCIE_HOST);
    let cid = EISAName::new(hid::PCI_HOST);
    let osc = Encoded(osc_method());
    encode(&Device::new(
        Path::new("PCI0"),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid),
            &Name::new(Path::new("_CID"), &cid),
            &Name::new(Path::new("_SEG"), &0u8),
            &Name::new(Path::new("_BBN"), &0u8),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CCA"), &CCA_COHERENT),
            &Name::new(Path::new("_CRS"), &crs),
            &Name::new(Path::new("_PRT"), &prt),
            &osc,
        ],
    ))
}

/// `_OSC (UUID, Revision, Count, Capabilities)`: grants the requested controls
/// within [`osc::GRANTED`], flags what it masked, and refuses other UUIDs and
/// revisions.
fn osc_method() -> Vec<u8> {
    let cdw1 = Path::new("CDW1");
    let cdw3 = Path::new("CDW3");
    let uuid = Uuid::new(osc::PCI_HOST_UUID);
    let granted = osc::GRANTED;
    let make_cdw1 = CreateDWordField::new(&cdw1, &Arg(3), &osc::CDW1);
    let make_cdw3 = CreateDWordField::new(&cdw3, &Arg(3), &osc::CDW3);
    let grant = And::new(&Local(0), &cdw3, &granted);
    let bad_rev = NotEqual::new(&Arg(1), &osc::REVISION);
    let set_rev = Or::new(&cdw1, &cdw1, &osc::UNRECOGNIZED_REVISION);
    let if_rev = If::new(&bad_rev, alloc::vec![&set_rev]);
    let masked = NotEqual::new(&cdw3, &Local(0));
    let set_masked = Or::new(&cdw1, &cdw1, &osc::CAPABILITIES_MASKED);
    let if_masked = If::new(&masked, alloc::vec![&set_masked]);
    let store = Store::new(&cdw3, &Local(0));
    let is_pci = Equal::new(&Arg(0), &uuid);
    let if_pci = If::new(
        &is_pci,
        alloc::vec![&make_cdw3, &grant, &if_rev, &if_masked, &store],
    );
    let set_uuid = Or::new(&cdw1, &cdw1, &osc::UNRECOGNIZED_UUID);
    let else_other = Else::new(alloc::vec![&set_uuid]);
    let ret = Return::new(&Arg(3));
    encode(&Method::new(
        Path::new("_OSC"),
        4,
        false,
        alloc::vec![&make_cdw1, &if_pci, &else_other, &ret],
    ))
}

/// The ECAM window as motherboard resources (consumed), so that the OS knows the
/// MCFG's window is taken.
fn ecam_reservation(p: &PcieConfig) -> Vec<u8> {
    let mem = memory(p.ecam);
    let crs = ResourceTemplate::new(alloc::vec![&mem]);
    let hid = EISAName::new(hid::MOTHERBOARD);
    encode(&Device::new(
        Path::new("RES0"),
        alloc::vec![
            &Name::new(Path::new("_HID"), &hid),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    ))
}
