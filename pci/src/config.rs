//! One function's type-0 configuration space: the header, the BARs with their size
//! masks, the capability list (PCI Express, MSI-X, MSI), and which bits software may
//! write or clear. Kept as bytes with a write mask and a write-1-to-clear mask, so an
//! access of any legal width at any legal offset behaves the same way.

use alloc::vec::Vec;
use tock_registers::LocalRegisterCopy;
use vdev::{AccessSize, MmioError};

use crate::defs::{
    cap_id, msi_cap, msix_cap, pcie_cap, reg, BAR, BAR_COUNT, COMMAND, CONFIG_HEADER_SIZE,
    CONFIG_SPACE_SIZE, DEVICE_CAPABILITIES, DEVICE_CONTROL, HEADER_TYPE_NORMAL, MSIX_CONTROL,
    MSIX_LOCATION, MSI_CONTROL, PCIE_CAPABILITIES, STATUS,
};
use crate::function::{BarSpec, BarWindow, FunctionSpec, MsiSpec, MIN_BAR_SIZE};

/// Where the capability list starts.
const FIRST_CAP: usize = 0x40;

/// Why a [`FunctionSpec`] cannot be a configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecError {
    /// A BAR size that is not a power of two, is below 4 KiB, or (32-bit BAR)
    /// above 2 GiB.
    BarSize { bar: usize },
    /// A 64-bit BAR in slot 5, or one whose upper slot also describes a BAR.
    Bar64Slot { bar: usize },
    /// MSI-X with no vectors or more than 2048.
    MsixVectors,
    /// The MSI-X table or PBA in a BAR that does not exist, unaligned, past the
    /// BAR's end, or overlapping each other.
    MsixPlacement,
    /// MSI asking for more than 32 vectors.
    MsiVectors,
    /// Vendor-specific capabilities that are malformed (shorter than 3 bytes, a
    /// length byte that disagrees) or do not fit in the configuration header.
    VendorCapability,
    /// A BAR window whose capability does not exist or whose fields lie outside
    /// it (or over its first three bytes).
    BarWindow,
}

/// What a configuration write changed that the root complex must act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Memory Space Enable or a BAR: recompute which BARs decode.
    pub decode: bool,
    /// Bus Master Enable went from 0 to 1.
    pub bus_master_on: bool,
    /// Interrupt Disable changed.
    pub intx: bool,
    /// MSI-X Enable or Function Mask changed.
    pub msix: bool,
    /// MSI Enable changed.
    pub msi: bool,
}

/// The message an enabled MSI capability sends for a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    /// Message Data as programmed.
    pub data: u16,
    /// Log2 of the vectors software allocated (Multiple Message Enable).
    pub vectors_log2: u8,
}

impl MsiMessage {
    /// The data of vector `vector`: the low Multiple Message Enable bits of the
    /// programmed data replaced by the vector number (modulo the allocation).
    pub fn data_of(&self, vector: u16) -> u32 {
        let low = (1u16 << self.vectors_log2) - 1;
        u32::from((self.data & !low) | (vector & low))
    }
}

/// A function's configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_HEADER_SIZE],
    reset: [u8; CONFIG_HEADER_SIZE],
    wmask: [u8; CONFIG_HEADER_SIZE],
    w1c: [u8; CONFIG_HEADER_SIZE],
    bars: [Option<BarSpec>; BAR_COUNT],
    msix_cap: Option<usize>,
    msi_cap: Option<usize>,
    /// The BAR window's fields, as absolute offsets.
    window: Option<BarWindow>,
}

/// A BAR window access the window's fields describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTarget {
    pub bar: u8,
    pub offset: u32,
    pub length: u32,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a spec's BARs and MSI-X layout.
fn validate(spec: &FunctionSpec) -> Result<(), SpecError> {
    for (i, b) in spec.bars.iter().enumerate() {
        let Some(b) = b else { continue };
        let max = if b.is_64bit { 1 << 62 } else { 1 << 31 };
        if !b.size.is_power_of_two() || b.size < MIN_BAR_SIZE || b.size > max {
            return Err(SpecError::BarSize { bar: i });
        }
        if b.is_64bit && (i + 1 >= BAR_COUNT || spec.bars[i + 1].is_some()) {
            return Err(SpecError::Bar64Slot { bar: i });
        }
        if i > 0 && spec.bars[i - 1].is_some_and(|p| p.is_64bit) {
            return Err(SpecError::Bar64Slot { bar: i - 1 });
        }
    }
    if let Some(m) = spec.msix {
        if m.vectors == 0 || m.vectors > msix_cap::MAX_VECTORS {
            return Err(SpecError::MsixVectors);
        }
        let table = m.table_offset..m.table_offset + u64::from(m.vectors) * msix_cap::ENTRY_SIZE;
        let pba = m.pba_offset..m.pba_offset + u64::from(m.vectors).div_ceil(64) * 8;
        let fits = |bar: u8, r: &core::ops::Range<u64>| {
            r.start.is_multiple_of(8)
                && spec
                    .bars
                    .get(usize::from(bar))
                    .copied()
                    .flatten()
                    .is_some_and(|b| r.end <= b.size)
        };
        let overlap = m.table_bar == m.pba_bar && table.start < pba.end && pba.start < table.end;
        if !fits(m.table_bar, &table) || !fits(m.pba_bar, &pba) || overlap {
            return Err(SpecError::MsixPlacement);
        }
    }
    Ok(())
}

impl ConfigSpace {
    /// The configuration space of a function described by `spec`.
    pub fn new(spec: &FunctionSpec) -> Result<Self, SpecError> {
        Self::with_vendor_caps(spec, &[])
    }

    /// The configuration space of `spec` with the read-only vendor-specific
    /// capabilities `vendor` after PCI Express and MSI-X. Each is the whole
    /// structure: byte 0 is overwritten with the Vendor-Specific ID, byte 1 with
    /// the next pointer, byte 2 must be its length.
    pub fn with_vendor_caps(spec: &FunctionSpec, vendor: &[Vec<u8>]) -> Result<Self, SpecError> {
        Self::build(spec, None, vendor, None)
    }

    /// [`Self::with_vendor_caps`] with an MSI capability `msi` after MSI-X (before
    /// the vendor-specific ones).
    /// `window`, if any, makes the BAR window fields of one of `vendor` writable.
    pub fn build(
        spec: &FunctionSpec,
        msi: Option<MsiSpec>,
        vendor: &[Vec<u8>],
        window: Option<BarWindow>,
    ) -> Result<Self, SpecError> {
        validate(spec)?;
        if msi.is_some_and(|m| m.vectors_log2 > msi_cap::MAX_LOG2_VECTORS) {
            return Err(SpecError::MsiVectors);
        }
        let mut b = [0u8; CONFIG_HEADER_SIZE];
        let mut w = [0u8; CONFIG_HEADER_SIZE];
        let mut c = [0u8; CONFIG_HEADER_SIZE];
        let id = spec.identity;
        put16(&mut b, reg::VENDOR_ID, id.vendor_id);
        put16(&mut b, reg::DEVICE_ID, id.device_id);
        b[reg::REVISION_ID] = id.revision_id;
        b[reg::CLASS_PROG_IF] = id.class[2];
        b[reg::CLASS_PROG_IF + 1] = id.class[1];
        b[reg::CLASS_PROG_IF + 2] = id.class[0];
        b[reg::HEADER_TYPE] = HEADER_TYPE_NORMAL;
        put16(&mut b, reg::SUBSYSTEM_VENDOR_ID, id.subsystem_vendor_id);
        put16(&mut b, reg::SUBSYSTEM_ID, id.subsystem_id);

        let mut cmd = COMMAND::MEMORY_SPACE_ENABLE::SET
            + COMMAND::BUS_MASTER_ENABLE::SET
            + COMMAND::PARITY_ERROR_RESPONSE::SET
            + COMMAND::SERR_ENABLE::SET;
        if spec.intx.is_some() {
            cmd += COMMAND::INTERRUPT_DISABLE::SET;
        }
        put16(&mut w, reg::COMMAND, cmd.value);
        let status_w1c = STATUS::DETECTED_PARITY_ERROR::SET
            + STATUS::SIGNALED_SYSTEM_ERROR::SET
            + STATUS::RECEIVED_MASTER_ABORT::SET
            + STATUS::RECEIVED_TARGET_ABORT::SET
            + STATUS::SIGNALED_TARGET_ABORT::SET
            + STATUS::MASTER_DATA_PARITY_ERROR::SET;
        put16(&mut c, reg::STATUS, status_w1c.value);
        w[reg::CACHE_LINE_SIZE] = 0xff;
        w[reg::INTERRUPT_LINE] = 0xff;
        b[reg::INTERRUPT_PIN] = spec.intx.map_or(0, |p| p as u8);

        for (i, bar) in spec.bars.iter().enumerate() {
            let Some(bar) = bar else { continue };
            let at = reg::BAR0 + 4 * i;
            let mut v = LocalRegisterCopy::<u32, BAR::Register>::new(0);
            v.modify(BAR::PREFETCHABLE.val(u32::from(bar.prefetchable)));
            if bar.is_64bit {
                v.modify(BAR::TYPE::Bits64);
            }
            put32(&mut b, at, v.get());
            let mask = !(bar.size - 1);
            put32(
                &mut w,
                at,
                (mask as u32) & BAR::ADDRESS.mask << BAR::ADDRESS.shift,
            );
            if bar.is_64bit {
                put32(&mut w, at + 4, (mask >> 32) as u32);
            }
        }

        // The capability list: PCI Express, then MSI-X, then vendor-specific ones.
        let mut caps: Vec<(u8, usize)> = Vec::new();
        let mut at = FIRST_CAP;
        if spec.pcie {
            caps.push((cap_id::PCI_EXPRESS, at));
            at += pcie_cap::SIZE.next_multiple_of(4);
        }
        let mut msix_at = None;
        if spec.msix.is_some() {
            caps.push((cap_id::MSIX, at));
            msix_at = Some(at);
            at += msix_cap::SIZE;
        }
        let mut msi_at = None;
        if msi.is_some() {
            caps.push((cap_id::MSI, at));
            msi_at = Some(at);
            at += msi_cap::SIZE.next_multiple_of(4);
        }
        let mut window_at = None;
        for (i, v) in vendor.iter().enumerate() {
            let len = v.len();
            if len < 3 || usize::from(v[2]) != len || at + len > CONFIG_HEADER_SIZE {
                return Err(SpecError::VendorCapability);
            }
            b[at..at + len].copy_from_slice(v);
            if let Some(win) = window.filter(|win| win.cap == i) {
                let fields = [
                    (win.bar, 1),
                    (win.offset, 4),
                    (win.length, 4),
                    (win.data, 4),
                ];
                if fields.iter().any(|&(f, n)| f < 3 || f + n > len) {
                    return Err(SpecError::BarWindow);
                }
                for (f, n) in fields {
                    w[at + f..at + f + n].fill(0xff);
                }
                window_at = Some(BarWindow {
                    cap: i,
                    bar: at + win.bar,
                    offset: at + win.offset,
                    length: at + win.length,
                    data: at + win.data,
                });
            }
            caps.push((cap_id::VENDOR_SPECIFIC, at));
            at += len.next_multiple_of(4);
        }
        let n = caps.len();
        if n > 0 {
            let st = LocalRegisterCopy::<u16, STATUS::Register>::new(0);
            let mut st = st;
            st.modify(STATUS::CAPABILITIES_LIST::SET);
            put16(&mut b, reg::STATUS, st.get());
            b[reg::CAPABILITIES_POINTER] = caps[0].1 as u8;
        }
        for k in 0..n {
            let (id, at) = caps[k];
            b[at] = id;
            b[at + 1] = if k + 1 < n { caps[k + 1].1 as u8 } else { 0 };
        }
        if spec.pcie {
            let at = FIRST_CAP;
            let caps_reg = PCIE_CAPABILITIES::VERSION.val(pcie_cap::VERSION)
                + PCIE_CAPABILITIES::DEVICE_PORT_TYPE::RootComplexIntegratedEndpoint;
            put16(&mut b, at + pcie_cap::CAPABILITIES, caps_reg.value);
            let devcap = DEVICE_CAPABILITIES::ROLE_BASED_ERROR_REPORTING::SET
                + DEVICE_CAPABILITIES::MAX_PAYLOAD_SIZE_SUPPORTED.val(0);
            put32(&mut b, at + pcie_cap::DEVICE_CAPABILITIES, devcap.value);
            // Reset values (§7.5.3.4): relaxed ordering and no snoop enabled,
            // 128-byte payload, 512-byte read requests.
            let devctl = DEVICE_CONTROL::ENABLE_RELAXED_ORDERING::SET
                + DEVICE_CONTROL::ENABLE_NO_SNOOP::SET
                + DEVICE_CONTROL::MAX_READ_REQUEST_SIZE.val(2);
            put16(&mut b, at + pcie_cap::DEVICE_CONTROL, devctl.value);
            let writable = DEVICE_CONTROL::CORRECTABLE_ERROR_REPORTING::SET
                + DEVICE_CONTROL::NON_FATAL_ERROR_REPORTING::SET
                + DEVICE_CONTROL::FATAL_ERROR_REPORTING::SET
                + DEVICE_CONTROL::UNSUPPORTED_REQUEST_REPORTING::SET
                + DEVICE_CONTROL::ENABLE_RELAXED_ORDERING::SET
                + DEVICE_CONTROL::MAX_PAYLOAD_SIZE::SET
                + DEVICE_CONTROL::ENABLE_NO_SNOOP::SET
                + DEVICE_CONTROL::MAX_READ_REQUEST_SIZE::SET;
            put16(&mut w, at + pcie_cap::DEVICE_CONTROL, writable.value);
            put16(
                &mut c,
                at + pcie_cap::DEVICE_STATUS,
                pcie_cap::DEVICE_STATUS_RW1C,
            );
            put16(
                &mut w,
                at + pcie_cap::DEVICE_CONTROL_2,
                pcie_cap::DEVICE_CONTROL_2_WRITABLE,
            );
        }
        if let (Some(at), Some(m)) = (msix_at, spec.msix) {
            let ctl = MSIX_CONTROL::TABLE_SIZE.val(m.vectors - 1);
            put16(&mut b, at + msix_cap::MESSAGE_CONTROL, ctl.value);
            let ctl_w = MSIX_CONTROL::MSIX_ENABLE::SET + MSIX_CONTROL::FUNCTION_MASK::SET;
            put16(&mut w, at + msix_cap::MESSAGE_CONTROL, ctl_w.value);
            let loc = |bar: u8, off: u64| {
                (MSIX_LOCATION::BIR.val(u32::from(bar))
                    + MSIX_LOCATION::OFFSET.val((off >> 3) as u32))
                .value
            };
            put32(
                &mut b,
                at + msix_cap::TABLE,
                loc(m.table_bar, m.table_offset),
            );
            put32(&mut b, at + msix_cap::PBA, loc(m.pba_bar, m.pba_offset));
        }
        if let (Some(at), Some(m)) = (msi_at, msi) {
            let ctl = MSI_CONTROL::ADDRESS_64BIT_CAPABLE::SET
                + MSI_CONTROL::MULTIPLE_MESSAGE_CAPABLE.val(u16::from(m.vectors_log2));
            put16(&mut b, at + msi_cap::MESSAGE_CONTROL, ctl.value);
            let ctl_w = MSI_CONTROL::MSI_ENABLE::SET + MSI_CONTROL::MULTIPLE_MESSAGE_ENABLE::SET;
            put16(&mut w, at + msi_cap::MESSAGE_CONTROL, ctl_w.value);
            put32(&mut w, at + msi_cap::ADDRESS, !msi_cap::ADDRESS_RESERVED);
            put32(&mut w, at + msi_cap::UPPER_ADDRESS, u32::MAX);
            put16(&mut w, at + msi_cap::DATA, u16::MAX);
        }
        Ok(ConfigSpace {
            bytes: b,
            reset: b,
            wmask: w,
            w1c: c,
            bars: spec.bars,
            msix_cap: msix_at,
            msi_cap: msi_at,
            window: match (window, window_at) {
                (Some(_), None) => return Err(SpecError::BarWindow),
                (_, w) => w,
            },
        })
    }

    /// The register bytes (saved state; the masks and BAR layout are the spec's).
    pub fn state(&self) -> &[u8; CONFIG_HEADER_SIZE] {
        &self.bytes
    }

    /// Checks register bytes from a saved state: only bits software can write may
    /// differ from the reset values, write-1-to-clear bits may only be clear (this
    /// model never sets them), and Status.Interrupt Status must be `intx_level`.
    /// `None` when software could not have reached them.
    pub fn check_state(&self, bytes: &[u8], intx_level: bool) -> Option<[u8; CONFIG_HEADER_SIZE]> {
        let bytes: [u8; CONFIG_HEADER_SIZE] = bytes.try_into().ok()?;
        let mut derived = [0u8; CONFIG_HEADER_SIZE];
        put16(
            &mut derived,
            reg::STATUS,
            STATUS::INTERRUPT_STATUS::SET.value,
        );
        let reachable = (0..CONFIG_HEADER_SIZE).all(|j| {
            let fixed = !(self.wmask[j] | self.w1c[j] | derived[j]);
            (bytes[j] ^ self.reset[j]) & fixed == 0 && bytes[j] & self.w1c[j] & !self.reset[j] == 0
        });
        let status = LocalRegisterCopy::<u16, STATUS::Register>::new(get16(&bytes, reg::STATUS));
        let msi_ok = self.msi_cap.is_none_or(|at| {
            msi_enable_within_capable(LocalRegisterCopy::new(get16(
                &bytes,
                at + msi_cap::MESSAGE_CONTROL,
            )))
        });
        (reachable && msi_ok && status.is_set(STATUS::INTERRUPT_STATUS) == intx_level)
            .then_some(bytes)
    }

    /// Puts back bytes [`Self::check_state`] accepted.
    pub fn set_state(&mut self, bytes: [u8; CONFIG_HEADER_SIZE]) {
        self.bytes = bytes;
    }

    /// Back to the reset values (conventional reset).
    pub fn reset(&mut self) {
        self.bytes = self.reset;
    }

    /// Checks a configuration access: 1, 2 or 4 bytes, naturally aligned, inside
    /// the 4 KiB space (PCIe §7.2.2: ECAM accesses never cross a DWORD).
    pub fn check_access(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        if size == AccessSize::Double {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if !offset.is_multiple_of(size.bytes()) {
            return Err(MmioError::Unaligned { offset });
        }
        if offset
            .checked_add(size.bytes())
            .is_none_or(|end| end > CONFIG_SPACE_SIZE)
        {
            return Err(MmioError::NoRegister { offset });
        }
        Ok(())
    }

    /// A configuration read. The extended space (0x100..0x1000) holds no
    /// capability and reads as zero.
    pub fn read(&self, offset: u64, size: AccessSize) -> Result<u32, MmioError> {
        Self::check_access(offset, size)?;
        let at = offset as usize;
        let mut v = 0u32;
        for i in 0..size.bytes() as usize {
            let byte = self.bytes.get(at + i).copied().unwrap_or(0);
            v |= u32::from(byte) << (8 * i);
        }
        Ok(v)
    }

    /// A configuration write: writable bits take the value, write-1-to-clear bits
    /// clear where the value has ones, everything else is kept.
    pub fn write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u32,
    ) -> Result<Changes, MmioError> {
        Self::check_access(offset, size)?;
        let before = self.clone();
        let at = offset as usize;
        for i in 0..size.bytes() as usize {
            let j = at + i;
            if j >= CONFIG_HEADER_SIZE {
                break;
            }
            let v = (value >> (8 * i)) as u8;
            let b = &mut self.bytes[j];
            *b = (*b & !self.wmask[j]) | (v & self.wmask[j]);
            *b &= !(v & self.w1c[j]);
        }
        if let Some(c) = self.msi_control() {
            // Multiple Message Enable above Multiple Message Capable is a software
            // error (§6.8.1.3); the function takes no more than it asked for.
            if !msi_enable_within_capable(c) {
                let mut c = c;
                c.modify(
                    MSI_CONTROL::MULTIPLE_MESSAGE_ENABLE
                        .val(c.read(MSI_CONTROL::MULTIPLE_MESSAGE_CAPABLE)),
                );
                let at = self.msi_cap.expect("MSI control implies the capability");
                put16(&mut self.bytes, at + msi_cap::MESSAGE_CONTROL, c.get());
            }
        }
        let cmd_before = before.command();
        let cmd = self.command();
        let bars_changed = self.bytes[reg::BAR0..reg::BAR0 + 4 * BAR_COUNT]
            != before.bytes[reg::BAR0..reg::BAR0 + 4 * BAR_COUNT];
        Ok(Changes {
            decode: bars_changed
                || cmd.read(COMMAND::MEMORY_SPACE_ENABLE)
                    != cmd_before.read(COMMAND::MEMORY_SPACE_ENABLE),
            bus_master_on: cmd.is_set(COMMAND::BUS_MASTER_ENABLE)
                && !cmd_before.is_set(COMMAND::BUS_MASTER_ENABLE),
            intx: cmd.read(COMMAND::INTERRUPT_DISABLE)
                != cmd_before.read(COMMAND::INTERRUPT_DISABLE),
            msix: self.msix_control().map(|c| c.get()) != before.msix_control().map(|c| c.get()),
            msi: self.msi_enabled() != before.msi_enabled(),
        })
    }

    /// The Command register.
    pub fn command(&self) -> LocalRegisterCopy<u16, COMMAND::Register> {
        LocalRegisterCopy::new(get16(&self.bytes, reg::COMMAND))
    }

    /// The MSI-X Message Control register, if the function has MSI-X.
    pub fn msix_control(&self) -> Option<LocalRegisterCopy<u16, MSIX_CONTROL::Register>> {
        let at = self.msix_cap?;
        Some(LocalRegisterCopy::new(get16(
            &self.bytes,
            at + msix_cap::MESSAGE_CONTROL,
        )))
    }

    /// MSI-X enabled and not function-masked.
    pub fn msix_unmasked(&self) -> bool {
        self.msix_control().is_some_and(|c| {
            c.is_set(MSIX_CONTROL::MSIX_ENABLE) && !c.is_set(MSIX_CONTROL::FUNCTION_MASK)
        })
    }

    pub fn msix_enabled(&self) -> bool {
        self.msix_control()
            .is_some_and(|c| c.is_set(MSIX_CONTROL::MSIX_ENABLE))
    }

    /// The MSI Message Control register, if the function has MSI.
    pub fn msi_control(&self) -> Option<LocalRegisterCopy<u16, MSI_CONTROL::Register>> {
        let at = self.msi_cap?;
        Some(LocalRegisterCopy::new(get16(
            &self.bytes,
            at + msi_cap::MESSAGE_CONTROL,
        )))
    }

    /// MSI Enable set.
    pub fn msi_enabled(&self) -> bool {
        self.msi_control()
            .is_some_and(|c| c.is_set(MSI_CONTROL::MSI_ENABLE))
    }

    /// The programmed MSI message, while MSI is enabled.
    pub fn msi_message(&self) -> Option<MsiMessage> {
        let at = self.msi_cap?;
        let c = self.msi_control()?;
        if !c.is_set(MSI_CONTROL::MSI_ENABLE) {
            return None;
        }
        let lo = get32(&self.bytes, at + msi_cap::ADDRESS);
        let hi = get32(&self.bytes, at + msi_cap::UPPER_ADDRESS);
        let granted = c
            .read(MSI_CONTROL::MULTIPLE_MESSAGE_ENABLE)
            .min(c.read(MSI_CONTROL::MULTIPLE_MESSAGE_CAPABLE));
        Some(MsiMessage {
            address: u64::from(hi) << 32 | u64::from(lo),
            data: get16(&self.bytes, at + msi_cap::DATA),
            vectors_log2: granted as u8,
        })
    }

    /// Where the BAR window's data field is (absolute offsets), if there is one.
    pub fn window_data(&self) -> Option<core::ops::Range<u64>> {
        let w = self.window?;
        Some(w.data as u64..w.data as u64 + 4)
    }

    /// The access the BAR window's fields describe now.
    pub fn window_target(&self) -> Option<WindowTarget> {
        let w = self.window?;
        Some(WindowTarget {
            bar: self.bytes[w.bar],
            offset: get32(&self.bytes, w.offset),
            length: get32(&self.bytes, w.length),
        })
    }

    /// The BAR window's data field.
    pub fn window_value(&self) -> Option<u32> {
        Some(get32(&self.bytes, self.window?.data))
    }

    /// Puts `value` in the first `length` bytes of the window's data field (what
    /// a window read of the BAR returned).
    pub fn set_window_value(&mut self, value: u32, length: u32) {
        let Some(w) = self.window else { return };
        let bytes = value.to_le_bytes();
        let n = (length as usize).min(4);
        self.bytes[w.data..w.data + n].copy_from_slice(&bytes[..n]);
    }

    /// Reflects the function's INTx level in Status.Interrupt Status.
    pub fn set_interrupt_status(&mut self, level: bool) {
        let mut st =
            LocalRegisterCopy::<u16, STATUS::Register>::new(get16(&self.bytes, reg::STATUS));
        st.modify(STATUS::INTERRUPT_STATUS.val(u16::from(level)));
        put16(&mut self.bytes, reg::STATUS, st.get());
    }

    /// The programmed base address and size of implemented BAR `i` (a 64-bit BAR
    /// at its lower index; `None` for the upper half and for missing BARs).
    pub fn bar(&self, i: usize) -> Option<(u64, BarSpec)> {
        let spec = (*self.bars.get(i)?)?;
        let at = reg::BAR0 + 4 * i;
        let lo = LocalRegisterCopy::<u32, BAR::Register>::new(get32(&self.bytes, at));
        let mut base = u64::from(lo.read(BAR::ADDRESS)) << BAR::ADDRESS.shift;
        if spec.is_64bit {
            base |= u64::from(get32(&self.bytes, at + 4)) << 32;
        }
        Some((base, spec))
    }
}

/// Multiple Message Enable is at most Multiple Message Capable.
fn msi_enable_within_capable(c: LocalRegisterCopy<u16, MSI_CONTROL::Register>) -> bool {
    c.read(MSI_CONTROL::MULTIPLE_MESSAGE_ENABLE) <= c.read(MSI_CONTROL::MULTIPLE_MESSAGE_CAPABLE)
}
