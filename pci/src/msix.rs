//! A function's MSI-X table and Pending Bit Array (PCIe §7.7.2, §6.1.4): the
//! entries software programs, the per-vector mask, the pending bits, and the
//! decision whether a signalled vector is sent now or left pending.

use alloc::vec;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{AccessSize, MmioError, RestoreError};

use crate::defs::msix_cap::{
    ADDRESS_RESERVED, ENTRY_ADDRESS, ENTRY_DATA, ENTRY_SIZE, ENTRY_UPPER_ADDRESS,
    ENTRY_VECTOR_CONTROL, VECTOR_MASKED,
};

/// One table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub address: u64,
    pub data: u32,
    pub masked: bool,
}

impl Entry {
    /// The reset value: every vector masked (§7.7.2.5).
    const RESET: Entry = Entry {
        address: 0,
        data: 0,
        masked: true,
    };
}

/// A message to send: the memory write an unmasked vector becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub vector: u16,
    pub address: u64,
    pub data: u32,
}

/// The MSI-X state of one function.
#[derive(Debug, Clone)]
pub struct Msix {
    table: Vec<Entry>,
    /// Pending bits, 64 vectors per word (the PBA's layout).
    pending: Vec<u64>,
}

impl Msix {
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors);
        Msix {
            table: vec![Entry::RESET; n],
            pending: vec![0; n.div_ceil(64)],
        }
    }

    pub fn vectors(&self) -> u16 {
        self.table.len() as u16
    }

    /// Bytes of the table in its BAR.
    pub fn table_size(&self) -> u64 {
        self.table.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the PBA in its BAR (whole QWORDs).
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    pub fn entry(&self, vector: u16) -> Option<Entry> {
        self.table.get(usize::from(vector)).copied()
    }

    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pending
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, vector: u16, on: bool) {
        let v = usize::from(vector);
        if let Some(w) = self.pending.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    /// Writes the table and the pending bits (saved state).
    pub fn save(&self, w: &mut Writer) {
        let Msix { table, pending } = self;
        for e in table {
            let Entry {
                address,
                data,
                masked,
            } = *e;
            w.u64(address).u32(data).flag(masked);
        }
        for p in pending {
            w.u64(*p);
        }
    }

    /// Reads what [`Self::save`] wrote for a function with this many vectors,
    /// refusing addresses with reserved bits and pending bits past the last vector.
    pub fn load(&self, r: &mut Reader) -> Result<Msix, RestoreError> {
        let mut table = Vec::with_capacity(self.table.len());
        for _ in 0..self.table.len() {
            let address = r.u64()?;
            let data = r.u32()?;
            let masked = r.flag()?;
            if address as u32 & ADDRESS_RESERVED != 0 {
                return Err(RestoreError::Malformed);
            }
            table.push(Entry {
                address,
                data,
                masked,
            });
        }
        let mut pending = Vec::with_capacity(self.pending.len());
        for i in 0..self.pending.len() {
            let word = r.u64()?;
            let first = i * 64;
            let valid = self.table.len().saturating_sub(first).min(64);
            let mask = if valid == 64 {
                u64::MAX
            } else {
                (1 << valid) - 1
            };
            if word & !mask != 0 {
                return Err(RestoreError::Malformed);
            }
            pending.push(word);
        }
        Ok(Msix { table, pending })
    }

    pub fn reset(&mut self) {
        self.table.fill(Entry::RESET);
        self.pending.fill(0);
    }

    /// Signals `vector` while the function may send (`deliverable`: MSI-X enabled,
    /// function not masked, bus mastering on): the message to send, or `None` with
    /// the pending bit set (masked, or not deliverable). A vector past the table is
    /// dropped.
    pub fn signal(&mut self, vector: u16, deliverable: bool) -> Option<Message> {
        let e = self.entry(vector)?;
        if e.masked || !deliverable {
            self.set_pending(vector, true);
            return None;
        }
        Some(Message {
            vector,
            address: e.address,
            data: e.data,
        })
    }

    /// The messages of pending vectors that are no longer masked, their pending
    /// bits cleared; call when the function becomes able to send.
    pub fn take_unmasked_pending(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for v in 0..self.vectors() {
            if self.is_pending(v) && !self.table[usize::from(v)].masked {
                self.set_pending(v, false);
                let e = self.table[usize::from(v)];
                out.push(Message {
                    vector: v,
                    address: e.address,
                    data: e.data,
                });
            }
        }
        out
    }

    /// Checks an access to the table or PBA: aligned DWORD or QWORD (§7.7.2: any
    /// other access is undefined; this model refuses it).
    fn check(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        match size {
            AccessSize::Word | AccessSize::Double => {}
            _ => return Err(MmioError::UnsupportedSize { offset, size }),
        }
        if !offset.is_multiple_of(size.bytes()) {
            return Err(MmioError::Unaligned { offset });
        }
        Ok(())
    }

    fn table_dword(&self, offset: u64) -> u32 {
        let Some(e) = self.table.get((offset / ENTRY_SIZE) as usize) else {
            return 0;
        };
        match offset % ENTRY_SIZE {
            ENTRY_ADDRESS => e.address as u32,
            ENTRY_UPPER_ADDRESS => (e.address >> 32) as u32,
            ENTRY_DATA => e.data,
            _ => u32::from(e.masked) * VECTOR_MASKED,
        }
    }

    /// Writes one DWORD of the table; returns the vector whose mask bit went from
    /// set to clear.
    fn write_table_dword(&mut self, offset: u64, value: u32) -> Option<u16> {
        let i = (offset / ENTRY_SIZE) as usize;
        let e = self.table.get_mut(i)?;
        match offset % ENTRY_SIZE {
            ENTRY_ADDRESS => {
                e.address = (e.address & !0xffff_ffff) | u64::from(value & !ADDRESS_RESERVED)
            }
            ENTRY_UPPER_ADDRESS => e.address = (e.address & 0xffff_ffff) | (u64::from(value) << 32),
            ENTRY_DATA => e.data = value,
            ENTRY_VECTOR_CONTROL => {
                let was = e.masked;
                e.masked = value & VECTOR_MASKED != 0;
                if was && !e.masked {
                    return Some(i as u16);
                }
            }
            _ => {}
        }
        None
    }

    /// A read of the table at `offset` (inside [`Self::table_size`]).
    pub fn read_table(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        Self::check(offset, size)?;
        let lo = u64::from(self.table_dword(offset));
        Ok(match size {
            AccessSize::Double => lo | u64::from(self.table_dword(offset + 4)) << 32,
            _ => lo,
        })
    }

    /// A write of the table; returns the vectors it unmasked.
    pub fn write_table(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<Vec<u16>, MmioError> {
        Self::check(offset, size)?;
        let mut unmasked = Vec::new();
        unmasked.extend(self.write_table_dword(offset, value as u32));
        if size == AccessSize::Double {
            unmasked.extend(self.write_table_dword(offset + 4, (value >> 32) as u32));
        }
        Ok(unmasked)
    }

    /// A read of the PBA at `offset` (inside [`Self::pba_size`]).
    pub fn read_pba(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        Self::check(offset, size)?;
        let word = self
            .pending
            .get((offset / 8) as usize)
            .copied()
            .unwrap_or(0);
        Ok(match size {
            AccessSize::Double => word,
            _ => (word >> ((offset % 8) * 8)) & 0xffff_ffff,
        })
    }
}
