//! The host bridge at 00:00.0: a configuration header saying "host bridge" and
//! nothing else (no BARs, no interrupts), as operating systems expect at the root
//! of a generic ECAM host.

use vdev::{AccessSize, MmioError};

use crate::defs::class;
use crate::function::{FunctionContext, FunctionSpec, Identity, PciFunction};

/// Vendor and device ID of the host bridge: the IDs QEMU's generic PCIe host
/// bridge (`gpex`) reports, which Linux and Windows already know for `virt`.
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x1b36;
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0008;

/// The host bridge function.
pub struct HostBridge;

impl PciFunction for HostBridge {
    fn spec(&self) -> FunctionSpec {
        FunctionSpec {
            identity: Identity {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                revision_id: 0,
                class: class::HOST_BRIDGE,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            },
            bars: [None; crate::defs::BAR_COUNT],
            msix: None,
            intx: None,
            pcie: false,
        }
    }
    fn bar_read(
        &mut self,
        _ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        _size: AccessSize,
    ) -> Result<u64, MmioError> {
        Err(MmioError::NoRegister { offset })
    }
    fn bar_write(
        &mut self,
        _ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        _size: AccessSize,
        _value: u64,
    ) -> Result<(), MmioError> {
        Err(MmioError::NoRegister { offset })
    }
    fn reset(&mut self) {}
    fn save(&self) -> alloc::vec::Vec<u8> {
        // No state of its own.
        alloc::vec::Vec::new()
    }
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        if blob.is_empty() {
            Ok(())
        } else {
            Err(vdev::RestoreError::Malformed)
        }
    }
}
