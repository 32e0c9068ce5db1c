//! The DSDT: the namespace of the guest's devices under `\_SB`, in AML encoded by
//! `acpi_tables::aml`. Hardware IDs: `ACPI0007` processor devices, PL011 `ARMH0011`
//! (the Arm SBSA/ServerReady ID of the PL011), PL031 `ARMH0031`, TPM 2.0 `MSFT0101`
//! with its CRB window, virtio-mmio `LNRO0005`, and the power button as a Generic
//! Event Device (`ACPI0013`) whose interrupt notifies a `PNP0C0C` power-button device.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use acpi_tables::aml::{
    Arg, Device, Equal, If, Interrupt, Memory32Fixed, Method, Name, Notify, Path, ResourceTemplate,
    Scope,
};
use acpi_tables::Aml;

use crate::config::{IrqDevice, MmioRegion, PlatformConfig, Trigger};
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
}

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
