//! Physical Region Page entries and lists (NVMe 1.4 §4.3): turning a command's PRP1,
//! PRP2 and transfer length into the runs of guest memory the data occupies.
//!
//! The walk is bounded by the transfer length (which the controller caps at MDTS
//! before calling): a list is only read for as many entries as the data needs, and a
//! list that continues on another page must continue at a page-aligned address, so
//! every list page read yields at least `page / 8 - 1` data entries and a list that
//! points back at itself still ends when the data does.

use alloc::vec::Vec;

use vdev::GuestMemory;

use crate::defs::Status;

/// One contiguous run of guest memory holding `len` bytes of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub gpa: u64,
    pub len: u64,
}

/// Bytes in one PRP entry.
const ENTRY_BYTES: u64 = 8;
/// PRP1 as a data pointer must be dword aligned (bits 1:0 clear).
const DWORD_MASK: u64 = 0b11;

fn push(out: &mut Vec<Segment>, gpa: u64, len: u64) {
    if let Some(last) = out.last_mut() {
        if last.gpa.checked_add(last.len) == Some(gpa) {
            last.len += len;
            return;
        }
    }
    out.push(Segment { gpa, len });
}

/// Fills `out` with the guest memory of a `len`-byte transfer described by `prp1` and
/// `prp2` with memory page size `page` (a power of two, at least 4 KiB). Refuses a
/// misaligned entry with PRP Offset Invalid, and a list that cannot be read from
/// guest RAM with Data Transfer Error.
pub fn resolve(
    mem: &dyn GuestMemory,
    prp1: u64,
    prp2: u64,
    len: u64,
    page: u64,
    out: &mut Vec<Segment>,
) -> Result<(), Status> {
    out.clear();
    if len == 0 {
        return Ok(());
    }
    let page_mask = page - 1;
    if prp1 & DWORD_MASK != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let first = len.min(page - (prp1 & page_mask));
    push(out, prp1, first);
    let mut left = len - first;
    if left == 0 {
        return Ok(());
    }
    if left <= page {
        // PRP2 is the second (and last) data page.
        if prp2 & page_mask != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        push(out, prp2, left);
        return Ok(());
    }
    // PRP2 points at a PRP list (qword aligned, possibly inside a page).
    if prp2 & (ENTRY_BYTES - 1) != 0 {
        return Err(Status::PRP_OFFSET_INVALID);
    }
    let mut at = prp2;
    while left > 0 {
        // Entries left on this list page, counting the one at `at`.
        let slots = (page - (at & page_mask)) / ENTRY_BYTES;
        let entry = mem.read_u64(at).map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        if slots == 1 && left > page {
            // The last entry of a list page with more data to come: the next list page.
            if entry & page_mask != 0 {
                return Err(Status::PRP_OFFSET_INVALID);
            }
            at = entry;
            continue;
        }
        if entry & page_mask != 0 {
            return Err(Status::PRP_OFFSET_INVALID);
        }
        let n = left.min(page);
        push(out, entry, n);
        left -= n;
        at = at
            .checked_add(ENTRY_BYTES)
            .ok_or(Status::DATA_TRANSFER_ERROR)?;
    }
    Ok(())
}

/// Copies `data` into the guest memory `segs` describe, starting `skip` bytes into
/// the transfer. `Err` if some byte is not guest RAM.
pub fn scatter(
    mem: &mut dyn GuestMemory,
    segs: &[Segment],
    mut skip: u64,
    mut data: &[u8],
) -> Result<(), vdev::MemError> {
    for s in segs {
        if data.is_empty() {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let n = ((s.len - skip) as usize).min(data.len());
        mem.write(s.gpa + skip, &data[..n])?;
        data = &data[n..];
        skip = 0;
    }
    Ok(())
}

/// Copies guest memory `segs` describe, starting `skip` bytes into the transfer, into
/// `buf`. `Err` if some byte is not guest RAM.
pub fn gather(
    mem: &dyn GuestMemory,
    segs: &[Segment],
    mut skip: u64,
    mut buf: &mut [u8],
) -> Result<(), vdev::MemError> {
    for s in segs {
        if buf.is_empty() {
            break;
        }
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let n = ((s.len - skip) as usize).min(buf.len());
        let (head, rest) = buf.split_at_mut(n);
        mem.read(s.gpa + skip, head)?;
        buf = rest;
        skip = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::VecMemory;

    const RAM: u64 = 0x4000_0000;
    const PAGE: u64 = 4096;

    fn mem() -> VecMemory {
        VecMemory::new(RAM, 64 * PAGE as usize)
    }

    fn page(n: u64) -> u64 {
        RAM + n * PAGE
    }

    #[test]
    fn one_and_two_page_transfers_use_prp1_and_prp2_directly() {
        let m = mem();
        let mut out = Vec::new();
        resolve(&m, page(1) + 0x200, 0, 0x200, PAGE, &mut out).unwrap();
        assert_eq!(
            out,
            [Segment {
                gpa: page(1) + 0x200,
                len: 0x200
            }]
        );
        resolve(&m, page(1) + 0x800, page(7), PAGE, PAGE, &mut out).unwrap();
        assert_eq!(
            out,
            [
                Segment {
                    gpa: page(1) + 0x800,
                    len: 0x800
                },
                Segment {
                    gpa: page(7),
                    len: 0x800
                }
            ]
        );
        assert_eq!(
            resolve(&m, page(1) + 2, 0, 8, PAGE, &mut out),
            Err(Status::PRP_OFFSET_INVALID)
        );
        assert_eq!(
            resolve(&m, page(1), page(7) + 8, 2 * PAGE, PAGE, &mut out),
            Err(Status::PRP_OFFSET_INVALID)
        );
    }

    #[test]
    fn lists_chain_across_pages_and_merge_contiguous_runs() {
        let mut m = mem();
        // A list starting in the last two slots of page 2: one data entry, then a
        // pointer to page 3, which holds the rest.
        let list = page(3) - 16;
        m.write_u64(list, page(10)).unwrap();
        m.write_u64(list + 8, page(3)).unwrap();
        m.write_u64(page(3), page(11)).unwrap();
        m.write_u64(page(3) + 8, page(20)).unwrap();
        let mut out = Vec::new();
        resolve(&m, page(9), list, 4 * PAGE, PAGE, &mut out).unwrap();
        assert_eq!(
            out,
            [
                Segment {
                    gpa: page(9),
                    len: 3 * PAGE
                },
                Segment {
                    gpa: page(20),
                    len: PAGE
                }
            ]
        );
        // A chain pointer that is not page aligned.
        m.write_u64(list + 8, page(3) + 8).unwrap();
        assert_eq!(
            resolve(&m, page(9), list, 4 * PAGE, PAGE, &mut out),
            Err(Status::PRP_OFFSET_INVALID)
        );
    }

    #[test]
    fn a_list_that_points_at_itself_ends_with_the_data() {
        let mut m = mem();
        // Every slot of page 5 points at page 5: data entries and chain pointer alike.
        for i in 0..PAGE / 8 {
            m.write_u64(page(5) + i * 8, page(5)).unwrap();
        }
        let mut out = Vec::new();
        let len = 2000 * PAGE;
        resolve(&m, page(1), page(5), len, PAGE, &mut out).unwrap();
        assert_eq!(out.iter().map(|s| s.len).sum::<u64>(), len);
    }

    #[test]
    fn a_list_outside_ram_is_a_data_transfer_error() {
        let m = mem();
        let mut out = Vec::new();
        assert_eq!(
            resolve(&m, page(1), 0x1000, 3 * PAGE, PAGE, &mut out),
            Err(Status::DATA_TRANSFER_ERROR)
        );
    }

    #[test]
    fn scatter_and_gather_follow_the_segments() {
        let mut m = mem();
        let segs = [
            Segment {
                gpa: page(1) + 0xff0,
                len: 0x10,
            },
            Segment {
                gpa: page(4),
                len: 0x20,
            },
        ];
        let data: Vec<u8> = (0..0x30).collect();
        scatter(&mut m, &segs, 0, &data).unwrap();
        let mut back = [0u8; 0x28];
        gather(&m, &segs, 8, &mut back).unwrap();
        assert_eq!(&back[..], &data[8..]);
        let bad = [Segment { gpa: 0x10, len: 4 }];
        assert!(scatter(&mut m, &bad, 0, &[1; 4]).is_err());
    }
}
