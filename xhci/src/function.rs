//! The xHCI controller as a PCI function (class 0x0c0330: serial bus controller,
//! USB, xHCI): BAR0 (64-bit) holds the register file, then the MSI-X table and
//! PBA; interrupter 0 signals MSI-X vector 0; DMA goes through the function's Bus
//! Master Enable (with it clear every ring and buffer access fails, which the
//! controller answers as it answers memory outside RAM). No INTx pin: every xHCI
//! driver of Linux and Windows enables MSI-X (firmware drivers poll the event
//! ring).

use pci::defs::{msix_cap, BAR_COUNT};
use pci::function::{
    BarSpec, FunctionContext, FunctionIrq, FunctionSpec, Identity, MsixSpec, PciFunction,
};
use vdev::{AccessSize, AsyncBlock, MmioError};

use crate::controller::{Config, Controller, Interrupts};
use crate::defs::layout;
use crate::host::{HostLink, HostRequest};
use crate::storage::MassStorage;
use crate::usb::Device;

/// Serial bus controller, USB, xHCI.
pub const CLASS_XHCI: [u8; 3] = [0x0c, 0x03, 0x30];
/// Where the MSI-X table starts in BAR0 (after the register file).
pub const MSIX_TABLE_OFFSET: u64 = layout::SIZE;
/// Where the PBA starts in BAR0.
pub const MSIX_PBA_OFFSET: u64 = MSIX_TABLE_OFFSET + 0x800;
/// BAR0's size: registers, table, PBA, a power of two.
pub const XHCI_BAR0_SIZE: u64 = 0x4000;
/// Interrupters, and so MSI-X vectors.
pub const VECTORS: u16 = 1;

const _: () = assert!(MSIX_TABLE_OFFSET + VECTORS as u64 * msix_cap::ENTRY_SIZE <= MSIX_PBA_OFFSET);
const _: () = assert!(MSIX_PBA_OFFSET + 8 <= XHCI_BAR0_SIZE);

/// The xHCI controller behind a PCI function.
pub struct XhciFunction<B: AsyncBlock> {
    ctrl: Controller<B>,
    ids: Identity,
    /// The host's requests ([`Self::host_link`]), applied at `poll`.
    link: Option<HostLink>,
    /// Devices the host unplugged, by port, until it plugs them back.
    parked: alloc::vec::Vec<(u8, Device<B>)>,
}

/// Routes the interrupter's vector to MSI-X.
struct Msix<'a>(&'a mut dyn FunctionIrq);

impl Interrupts for Msix<'_> {
    fn signal(&mut self, vector: u16) {
        self.0.msix(vector);
    }
}

impl<B: AsyncBlock> XhciFunction<B> {
    /// A function with the PCI identity `vendor_id`/`device_id` (drivers bind by
    /// class code) around a controller of shape `cfg`.
    pub fn new(cfg: Config, vendor_id: u16, device_id: u16) -> Self {
        XhciFunction {
            ctrl: Controller::new(cfg),
            link: None,
            parked: alloc::vec::Vec::new(),
            ids: Identity {
                vendor_id,
                device_id,
                revision_id: 0,
                class: CLASS_XHCI,
                subsystem_vendor_id: vendor_id,
                subsystem_id: 0,
            },
        }
    }

    pub fn controller(&self) -> &Controller<B> {
        &self.ctrl
    }

    pub fn controller_mut(&mut self) -> &mut Controller<B> {
        &mut self.ctrl
    }

    /// Bit per 1-based port holding a device.
    fn present(&self) -> u32 {
        (1..=self.ctrl.port_count())
            .filter(|&p| self.ctrl.device(p).is_some())
            .fold(0, |acc, p| acc | 1 << p)
    }

    /// The host's handle for input and hot-plug (one per function; later calls
    /// return the same link). Attach the devices first: the link knows the ports
    /// that hold one now.
    pub fn host_link(&mut self) -> HostLink {
        if self.link.is_none() {
            self.link = Some(HostLink::new(self.present()));
        }
        self.link.clone().unwrap_or_default()
    }

    /// Devices the host unplugged and holds for re-plugging, by port.
    pub fn parked(&self) -> impl Iterator<Item = (u8, &Device<B>)> {
        self.parked.iter().map(|(p, d)| (*p, d))
    }

    fn parked_storage(&self) -> impl Iterator<Item = &MassStorage<B>> {
        self.parked.iter().filter_map(|(_, d)| match d {
            Device::Storage(s) => Some(s),
            _ => None,
        })
    }

    /// Applies the host's waiting requests, in order.
    fn apply_host_requests(&mut self) {
        let Some(link) = self.link.clone() else {
            return;
        };
        while let Some(r) = link.pop() {
            match r {
                HostRequest::Key { usage, down } => {
                    self.ctrl.keyboard_key(usage, down);
                }
                HostRequest::Tablet(input) => {
                    self.ctrl.tablet_inject(input);
                }
                HostRequest::Detach { port } => {
                    if let Some(d) = self.ctrl.detach(port) {
                        self.parked.push((port, d));
                    }
                }
                HostRequest::Attach { port } => {
                    let Some(i) = self.parked.iter().position(|(p, _)| *p == port) else {
                        continue;
                    };
                    let (_, d) = self.parked.swap_remove(i);
                    // The link lets only the host plug this port, and it is empty.
                    if let Err(e) = self.ctrl.attach(port, d) {
                        log::warn!("xhci: the host's device for port {port} was refused: {e:?}");
                    }
                }
            }
        }
    }
}

impl<B: AsyncBlock> PciFunction for XhciFunction<B> {
    fn spec(&self) -> FunctionSpec {
        let mut bars = [None; BAR_COUNT];
        bars[0] = Some(BarSpec {
            size: XHCI_BAR0_SIZE,
            is_64bit: true,
            prefetchable: false,
        });
        FunctionSpec {
            identity: self.ids,
            bars,
            msix: Some(MsixSpec {
                vectors: VECTORS,
                table_bar: 0,
                table_offset: MSIX_TABLE_OFFSET,
                pba_bar: 0,
                pba_offset: MSIX_PBA_OFFSET,
            }),
            intx: None,
            pcie: true,
        }
    }

    fn bar_read(
        &mut self,
        _ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        if offset < layout::SIZE {
            return self.ctrl.read(offset, size);
        }
        Ok(0)
    }

    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if offset < layout::SIZE {
            return self
                .ctrl
                .write(ctx.mem, &mut Msix(ctx.irq), offset, size, value);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.ctrl.reset();
    }

    /// The controller's own state (`vdev::SaveRestore`); the root complex holds
    /// the configuration space and the MSI-X table.
    fn save(&self) -> alloc::vec::Vec<u8> {
        vdev::SaveRestore::save(&self.ctrl)
    }

    /// A blob saved with a hot-plugged port in the other state (device
    /// detached or attached since) is refused: the ports' devices must match.
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        vdev::SaveRestore::restore(&mut self.ctrl, blob)?;
        if let Some(link) = &self.link {
            link.set_present(self.present());
        }
        Ok(())
    }

    /// The storage devices' backend requests not completed (parked ones too).
    fn in_flight(&self) -> usize {
        self.ctrl.in_flight()
            + self
                .parked_storage()
                .map(MassStorage::in_flight)
                .sum::<usize>()
    }

    fn has_work(&self) -> bool {
        self.ctrl.has_work()
            || self.link.as_ref().is_some_and(HostLink::has_requests)
            || self.parked_storage().any(MassStorage::has_work)
    }

    fn poll(&mut self, ctx: &mut FunctionContext) {
        self.apply_host_requests();
        // An unplugged device's abandoned request completes into nothing.
        for (_, d) in self.parked.iter_mut() {
            if let Device::Storage(s) = d {
                s.poll_backend();
            }
        }
        self.ctrl.poll(ctx.mem, &mut Msix(ctx.irq));
    }

    fn connect_work_signal(&mut self, signal: &vdev::WorkSignal) {
        self.host_link().connect(signal);
        self.ctrl.set_waker(signal);
        for (_, d) in self.parked.iter_mut() {
            if let Device::Storage(s) = d {
                s.backend_mut().set_waker(signal.clone());
            }
        }
    }

    fn defers_work(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::boxed::Box;
    use alloc::vec::Vec;

    use pci::defs::{cap_id, reg, virt};
    use pci::root::{Layout, MsiController, RootComplex, Window};
    use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, NullInterrupts};

    use super::*;
    use crate::defs::{intr, op, trb, trb_type, usbcmd};
    use crate::testing::{RamDisk, CMD_RING, DCBAA, ERST, EVENT_RING, RAM_BASE, RAM_SIZE};
    use crate::trb::Trb;

    const BAR0: u64 = virt::MMIO_BASE + 0x10_0000;
    const DOORBELL_ADDR: u64 = 0x0802_0040;
    const W: AccessSize = AccessSize::Word;
    const H: AccessSize = AccessSize::Half;

    /// Records MSI messages.
    struct Recorder(std::sync::Arc<spin::Mutex<Vec<(u64, u32)>>>);

    impl MsiController for Recorder {
        fn deliver(&mut self, address: u64, data: u32, _irq: &mut dyn InterruptSink) -> bool {
            self.0.lock().push((address, data));
            true
        }
    }

    fn cfg(r: u64) -> u64 {
        virt::ECAM_BASE + (2 << 15) + r
    }

    #[test]
    fn found_by_class_code_and_interrupts_through_msix() {
        let ram = Window {
            base: RAM_BASE,
            size: RAM_SIZE as u64,
        };
        let mut rc = RootComplex::new(Layout::virt(false), &[ram]).unwrap();
        let f: XhciFunction<RamDisk> = XhciFunction::new(Config::default(), 0x1b36, 0x000d);
        rc.attach(2, Box::new(f)).unwrap();
        let log = std::sync::Arc::new(spin::Mutex::new(Vec::new()));
        rc.set_msi_controller(Box::new(Recorder(log.clone())));
        let mut mem = vdev::VecMemory::new(RAM_BASE, RAM_SIZE);
        let mut go = |mem: &mut vdev::VecMemory, gpa: u64, size, write: Option<u64>| {
            let mut ctx = MmioContext {
                vcpu: 0,
                mem,
                irq: &mut NullInterrupts,
            };
            rc.access(&mut ctx, gpa, size, write).unwrap()
        };
        // Class 0x0c0330, a 64-bit BAR0 of 16 KiB.
        assert_eq!(
            go(&mut mem, cfg(reg::REVISION_ID as u64), W, None) >> 8,
            0x0c_03_30
        );
        go(&mut mem, cfg(reg::BAR0 as u64), W, Some(0xffff_ffff));
        go(&mut mem, cfg(reg::BAR0 as u64 + 4), W, Some(0xffff_ffff));
        assert_eq!(
            go(&mut mem, cfg(reg::BAR0 as u64), W, None),
            !(XHCI_BAR0_SIZE - 1) & 0xffff_fff0 | 0x4
        );
        go(&mut mem, cfg(reg::BAR0 as u64), W, Some(BAR0));
        go(&mut mem, cfg(reg::BAR0 as u64 + 4), W, Some(0));
        go(&mut mem, cfg(reg::COMMAND as u64), H, Some(0x6));
        assert_eq!(go(&mut mem, BAR0 + 2, H, None), 0x0110, "HCIVERSION");
        // MSI-X vector 0 at a doorbell address.
        let mut at = go(
            &mut mem,
            cfg(reg::CAPABILITIES_POINTER as u64),
            AccessSize::Byte,
            None,
        );
        while go(&mut mem, cfg(at), AccessSize::Byte, None) != u64::from(cap_id::MSIX) {
            at = go(&mut mem, cfg(at + 1), AccessSize::Byte, None);
        }
        go(&mut mem, cfg(at + 2), H, Some(1 << 15));
        let entry = BAR0 + MSIX_TABLE_OFFSET;
        go(&mut mem, entry, AccessSize::Double, Some(DOORBELL_ADDR));
        go(&mut mem, entry + 8, W, Some(77));
        go(&mut mem, entry + 12, W, Some(0));
        // Bring-up through BAR0 and a No Op command.
        let oper = BAR0 + layout::OPER;
        go(&mut mem, oper + op::CONFIG, W, Some(8));
        go(&mut mem, oper + op::DCBAAP, AccessSize::Double, Some(DCBAA));
        go(
            &mut mem,
            oper + op::CRCR,
            AccessSize::Double,
            Some(CMD_RING | 1),
        );
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&EVENT_RING.to_le_bytes());
        e[8..12].copy_from_slice(&64u32.to_le_bytes());
        mem.write(ERST, &e).unwrap();
        let ir = BAR0 + layout::INTERRUPTERS;
        go(&mut mem, ir + intr::ERSTSZ, W, Some(1));
        go(
            &mut mem,
            ir + intr::ERDP,
            AccessSize::Double,
            Some(EVENT_RING),
        );
        go(&mut mem, ir + intr::ERSTBA, AccessSize::Double, Some(ERST));
        go(&mut mem, ir + intr::IMAN, W, Some(u64::from(intr::IMAN_IE)));
        go(
            &mut mem,
            oper + op::USBCMD,
            W,
            Some(u64::from(usbcmd::RS | usbcmd::INTE)),
        );
        let noop = Trb::new(trb_type::NO_OP_COMMAND, 0, 0, trb::CYCLE);
        mem.write(CMD_RING, &noop.to_bytes()).unwrap();
        log.lock().clear();
        go(&mut mem, BAR0 + layout::DOORBELLS, W, Some(0));
        let ev = Trb::read(&mem, EVENT_RING).unwrap();
        assert_eq!(ev.kind(), trb_type::COMMAND_COMPLETION);
        assert_eq!(ev.param, CMD_RING);
        assert_eq!(log.lock().as_slice(), &[(DOORBELL_ADDR, 77)]);

        // Bus mastering off: the next command cannot even be fetched, and the
        // controller reports a Host Controller Error instead of touching memory.
        go(&mut mem, cfg(reg::COMMAND as u64), H, Some(0x2));
        mem.write(CMD_RING + 16, &noop.to_bytes()).unwrap();
        go(&mut mem, BAR0 + layout::DOORBELLS, W, Some(0));
        assert_eq!(Trb::read(&mem, EVENT_RING + 16).unwrap(), Trb::default());
        let sts = go(&mut mem, oper + op::USBSTS, W, None);
        assert_ne!(sts & u64::from(crate::defs::usbsts::HCE), 0);
    }
}
