//! Guest-physical memory as device models see it.

use alloc::vec;
use alloc::vec::Vec;

/// Why a guest-memory access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// Some byte of `[gpa, gpa + len)` is not guest RAM (unmapped, MMIO, or outside
    /// the guest's address space). Carries the first offending address.
    OutOfRange { gpa: u64 },
    /// `gpa + len` overflows the address space.
    Overflow,
}

/// Guest RAM, addressed by guest physical address (IPA).
///
/// Implementations must check every byte of the range against what is really guest
/// RAM: device models pass guest-controlled addresses straight through, and an
/// address inside hypervisor memory must come back as [`MemError::OutOfRange`].
pub trait GuestMemory {
    /// Copies `buf.len()` bytes starting at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to guest memory starting at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;

    /// Reads a little-endian `u16`.
    fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Reads a little-endian `u32`.
    fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads a little-endian `u64`.
    fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// The address a host device uses to reach `[gpa, gpa + len)` directly (DMA),
    /// when this memory allows it and the range is one contiguous run of guest RAM;
    /// the range is made ready for device access first (populated), so a device write
    /// is never overwritten by a later first touch. `Ok(None)`: this memory offers no
    /// direct access and data must be copied through [`Self::read`]/[`Self::write`].
    /// Like every access, refuses a range that is not all guest RAM.
    fn dma_address(&mut self, gpa: u64, len: usize) -> Result<Option<u64>, MemError> {
        let _ = (gpa, len);
        Ok(None)
    }

    /// Writes a little-endian `u16`.
    fn write_u16(&mut self, gpa: u64, v: u16) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, gpa: u64, v: u32) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
}

/// Checks that `[gpa, gpa+len)` lies inside `[base, base+size)` and returns the offset
/// of `gpa` from `base`.
pub fn range_offset(base: u64, size: u64, gpa: u64, len: usize) -> Result<usize, MemError> {
    let end = gpa.checked_add(len as u64).ok_or(MemError::Overflow)?;
    if gpa < base {
        return Err(MemError::OutOfRange { gpa });
    }
    if end > base.saturating_add(size) {
        let first_bad = core::cmp::max(gpa, base.saturating_add(size));
        return Err(MemError::OutOfRange { gpa: first_bad });
    }
    Ok((gpa - base) as usize)
}

/// One contiguous block of guest RAM held in a `Vec`: the guest memory of host tests
/// and fuzzers.
#[derive(Debug, Clone)]
pub struct VecMemory {
    base: u64,
    bytes: Vec<u8>,
    /// Whether [`GuestMemory::dma_address`] hands out addresses (the guest physical
    /// address itself), as guest RAM a host device can reach does.
    dma: bool,
}

impl VecMemory {
    /// `size` zeroed bytes of guest RAM starting at guest physical address `base`.
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            bytes: vec![0; size],
            dma: false,
        }
    }
    /// Lets devices reach this memory directly: [`GuestMemory::dma_address`] then
    /// returns the guest physical address of every range inside it (tests model the
    /// host device's accesses with [`GuestMemory::read`]/[`GuestMemory::write`]).
    pub fn allow_dma(&mut self, on: bool) {
        self.dma = on;
    }
    /// Guest physical address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// The whole of guest RAM as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = range_offset(self.base, self.bytes.len() as u64, gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = range_offset(self.base, self.bytes.len() as u64, gpa, data.len())?;
        self.bytes[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn dma_address(&mut self, gpa: u64, len: usize) -> Result<Option<u64>, MemError> {
        range_offset(self.base, self.bytes.len() as u64, gpa, len)?;
        Ok(self.dma.then_some(gpa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_addresses_only_when_allowed_and_only_inside_ram() {
        let mut m = VecMemory::new(0x4000_0000, 0x1000);
        assert_eq!(m.dma_address(0x4000_0000, 0x1000), Ok(None));
        m.allow_dma(true);
        assert_eq!(m.dma_address(0x4000_0800, 0x800), Ok(Some(0x4000_0800)));
        assert_eq!(
            m.dma_address(0x4000_0800, 0x801),
            Err(MemError::OutOfRange { gpa: 0x4000_1000 })
        );
        assert_eq!(
            m.dma_address(0x3fff_ffff, 1),
            Err(MemError::OutOfRange { gpa: 0x3fff_ffff })
        );
    }

    #[test]
    fn in_range_round_trips() {
        let mut m = VecMemory::new(0x4000_0000, 0x1000);
        m.write_u32(0x4000_0ffc, 0xdead_beef).unwrap();
        assert_eq!(m.read_u32(0x4000_0ffc).unwrap(), 0xdead_beef);
    }

    #[test]
    fn straddling_the_end_is_refused_with_first_bad_address() {
        let mut m = VecMemory::new(0x4000_0000, 0x1000);
        assert_eq!(
            m.write_u32(0x4000_0ffe, 1),
            Err(MemError::OutOfRange { gpa: 0x4000_1000 })
        );
        assert_eq!(
            m.read_u64(0x3fff_fffc),
            Err(MemError::OutOfRange { gpa: 0x3fff_fffc })
        );
        assert_eq!(m.read_u64(u64::MAX - 3), Err(MemError::Overflow));
    }
}
