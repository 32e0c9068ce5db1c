//! Hostile descriptor chains: loops, indices outside the queue, lengths no
//! buffer can have, and indirect tables used wrongly. Each case starts from a
//! fresh reset and initialisation and must end in DEVICE_NEEDS_RESET with the
//! used ring untouched and no byte of guest memory changed.

use selftest_guest::defs::virtio as v;
use selftest_guest::detail::Detail;

use crate::basic::{io, GOOD_SECTOR, GOOD_SEED};
use crate::dma;
use crate::session::{
    data_desc, data_mismatch, desc_off, fill_data, header_desc, request_writes, status_desc,
    table_off, write_desc, write_header, Desc, Session, QUEUE_SIZE,
};

/// The sector `hostile-indirect-nested` writes and reads through an indirect table.
const INDIRECT_SECTOR: u64 = 11;
/// Its data pattern.
const INDIRECT_SEED: u8 = 0x33;
/// A pattern the data buffer holds before a read, so the read must replace it.
const STALE_SEED: u8 = 0x99;
/// A descriptor length no buffer can have.
const HUGE_LEN: u32 = 0xffff_ffff;
/// 40 MiB: two of these exceed the device's per-chain byte limit (64 MiB).
const BIG_LEN: u32 = 40 << 20;
/// An address where `addr + len` wraps the 64-bit address space.
const WRAPPING_ADDR: u64 = 0xffff_ffff_ffff_f000;
/// Bytes of the three-entry indirect table of a request.
const TABLE_LEN: u32 = 3 * v::DESC_SIZE as u32;

/// A case's data buffers: (address, length); length 0 means absent.
type Buffers = [(u64, u32); 2];

/// A fresh session with `features`, or the reason there is none in `p`.
fn start(what: &str, features: u64, p: &mut Detail) -> Option<Session> {
    match Session::start(features) {
        Ok(s) => Some(s),
        Err(e) => {
            p.append(format_args!("{what}: init: {e}"));
            None
        }
    }
}

/// Header, data and status in descriptors 0..2 for a one-sector request.
fn standard_chain(kind: u32, sector: u64) {
    write_header(kind, sector);
    write_desc(desc_off(0), header_desc(1));
    write_desc(desc_off(1), data_desc(kind, 2));
    write_desc(desc_off(2), status_desc());
}

/// Descriptor 0 as an indirect descriptor for the table at `table` of `len` bytes.
fn indirect_head(table: usize, len: u32, flags: u16) {
    write_desc(
        desc_off(0),
        Desc {
            addr: dma::addr(table),
            len,
            flags: v::DESC_F_INDIRECT | flags,
            next: 0,
        },
    );
}

/// `hostile-desc-loop`: chains 0 → 1 → 0, 0 → 0, and a loop inside an
/// indirect table.
pub fn desc_loop(p: &mut Detail) {
    let what = "0 -> 1 -> 0";
    if let Some(mut s) = start(what, v::F_VERSION_1, p) {
        write_header(v::BLK_T_OUT, GOOD_SECTOR);
        write_desc(desc_off(0), header_desc(1));
        write_desc(desc_off(1), data_desc(v::BLK_T_OUT, 0));
        s.expect_refused(what, Some(0), p);
    }
    let what = "0 -> 0";
    if let Some(mut s) = start(what, v::F_VERSION_1, p) {
        write_header(v::BLK_T_OUT, GOOD_SECTOR);
        write_desc(desc_off(0), header_desc(0));
        s.expect_refused(what, Some(0), p);
    }
    let what = "indirect 0 -> 1 -> 0";
    if let Some(mut s) = start(what, v::F_VERSION_1 | v::F_INDIRECT_DESC, p) {
        write_header(v::BLK_T_OUT, GOOD_SECTOR);
        write_desc(table_off(dma::TABLE, 0), header_desc(1));
        write_desc(table_off(dma::TABLE, 1), data_desc(v::BLK_T_OUT, 0));
        indirect_head(dma::TABLE, 2 * v::DESC_SIZE as u32, 0);
        s.expect_refused(what, Some(0), p);
    }
}

/// `hostile-index-out-of-range`: available-ring heads 200 and 8 in a queue of
/// 8, a chain whose `next` is 9, and an available index 9 entries ahead.
pub fn index_out_of_range(p: &mut Detail) {
    for head in [200, QUEUE_SIZE] {
        if let Some(mut s) = start("head", v::F_VERSION_1, p) {
            standard_chain(v::BLK_T_IN, GOOD_SECTOR);
            s.expect_refused(
                if head == 200 { "head 200" } else { "head 8" },
                Some(head),
                p,
            );
        }
    }
    let what = "next 9";
    if let Some(mut s) = start(what, v::F_VERSION_1, p) {
        standard_chain(v::BLK_T_IN, GOOD_SECTOR);
        write_desc(desc_off(0), header_desc(9));
        s.expect_refused(what, Some(0), p);
    }
    let what = "avail idx 9 ahead";
    if let Some(mut s) = start(what, v::F_VERSION_1, p) {
        standard_chain(v::BLK_T_IN, GOOD_SECTOR);
        s.set_avail_idx(QUEUE_SIZE + 1);
        s.expect_refused(what, None, p);
    }
}

/// `hostile-huge-length`: a device-writable and a device-readable data
/// descriptor of 0xffff_ffff bytes, two of 40 MiB, and one whose range wraps
/// the address space.
pub fn huge_length(p: &mut Detail) {
    let data = dma::addr(dma::DATA);
    let cases: [(&str, u32, Buffers); 4] = [
        (
            "writable len 0xffffffff",
            v::BLK_T_IN,
            [(data, HUGE_LEN), (0, 0)],
        ),
        (
            "readable len 0xffffffff",
            v::BLK_T_OUT,
            [(data, HUGE_LEN), (0, 0)],
        ),
        (
            "two 40 MiB buffers",
            v::BLK_T_IN,
            [(data, BIG_LEN), (data, BIG_LEN)],
        ),
        (
            "wrapping buffer",
            v::BLK_T_IN,
            [(WRAPPING_ADDR, 0x2000), (0, 0)],
        ),
    ];
    for (what, kind, bufs) in cases {
        let Some(mut s) = start(what, v::F_VERSION_1, p) else {
            continue;
        };
        write_header(kind, GOOD_SECTOR);
        write_desc(desc_off(0), header_desc(1));
        let mut next = 1;
        for (addr, len) in bufs.into_iter().filter(|b| b.1 != 0) {
            let mut d = data_desc(kind, next + 1);
            d.addr = addr;
            d.len = len;
            write_desc(desc_off(next), d);
            next += 1;
        }
        write_desc(desc_off(next), status_desc());
        s.expect_refused(what, Some(0), p);
    }
}

/// `hostile-indirect-nested`: after a good request through an indirect table,
/// an indirect table holding an indirect descriptor; also an indirect
/// descriptor without VIRTIO_F_INDIRECT_DESC, one with NEXT set, and a table
/// whose length is not a whole number of descriptors.
pub fn indirect_nested(p: &mut Detail) {
    let features = v::F_VERSION_1 | v::F_INDIRECT_DESC;
    if let Some(mut s) = start("indirect", features, p) {
        let write_ok = io(
            &mut s,
            "write",
            v::BLK_T_OUT,
            INDIRECT_SECTOR,
            INDIRECT_SEED,
            p,
        );
        // A good read through a three-entry indirect table.
        write_header(v::BLK_T_IN, INDIRECT_SECTOR);
        write_desc(table_off(dma::TABLE, 0), header_desc(1));
        write_desc(table_off(dma::TABLE, 1), data_desc(v::BLK_T_IN, 2));
        write_desc(table_off(dma::TABLE, 2), status_desc());
        indirect_head(dma::TABLE, TABLE_LEN, 0);
        fill_data(STALE_SEED);
        let what = "good indirect read";
        let writes = request_writes(v::BLK_T_IN);
        let done = s.expect_completed(what, 0, v::BLK_S_OK, &writes, p);
        if let (true, Some(_), Some((i, got, want))) =
            (write_ok, done, data_mismatch(INDIRECT_SEED))
        {
            p.append(format_args!(
                "{what}: byte {i} reads {got:#x}, expected {want:#x}"
            ));
        }
        // The same table, its data entry now an indirect descriptor.
        write_desc(table_off(dma::TABLE2, 0), data_desc(v::BLK_T_IN, 1));
        write_desc(table_off(dma::TABLE2, 1), status_desc());
        write_desc(
            table_off(dma::TABLE, 1),
            Desc {
                addr: dma::addr(dma::TABLE2),
                len: 2 * v::DESC_SIZE as u32,
                flags: v::DESC_F_INDIRECT,
                next: 0,
            },
        );
        s.expect_refused("nested indirect", Some(0), p);
    }

    let what = "indirect not negotiated";
    if let Some(mut s) = start(what, v::F_VERSION_1, p) {
        write_header(v::BLK_T_IN, GOOD_SECTOR);
        write_desc(table_off(dma::TABLE, 0), header_desc(1));
        write_desc(table_off(dma::TABLE, 1), data_desc(v::BLK_T_IN, 2));
        write_desc(table_off(dma::TABLE, 2), status_desc());
        indirect_head(dma::TABLE, TABLE_LEN, 0);
        s.expect_refused(what, Some(0), p);
    }
    let what = "indirect with NEXT";
    if let Some(mut s) = start(what, features, p) {
        write_header(v::BLK_T_IN, GOOD_SECTOR);
        write_desc(table_off(dma::TABLE, 0), header_desc(1));
        write_desc(table_off(dma::TABLE, 1), data_desc(v::BLK_T_IN, 2));
        write_desc(table_off(dma::TABLE, 2), status_desc());
        write_desc(
            desc_off(0),
            Desc {
                addr: dma::addr(dma::TABLE),
                len: TABLE_LEN,
                flags: v::DESC_F_INDIRECT | v::DESC_F_NEXT,
                next: 1,
            },
        );
        write_desc(desc_off(1), status_desc());
        s.expect_refused(what, Some(0), p);
    }
    let what = "indirect table of 17 bytes";
    if let Some(mut s) = start(what, features, p) {
        write_header(v::BLK_T_IN, GOOD_SECTOR);
        write_desc(table_off(dma::TABLE, 0), header_desc(1));
        write_desc(table_off(dma::TABLE, 1), data_desc(v::BLK_T_IN, 2));
        write_desc(table_off(dma::TABLE, 2), status_desc());
        indirect_head(dma::TABLE, v::DESC_SIZE as u32 + 1, 0);
        s.expect_refused(what, Some(0), p);
    }
    // The disk still serves a plain read after all that.
    if let Some(mut s) = start("afterwards", v::F_VERSION_1, p) {
        io(
            &mut s,
            "good read afterwards",
            v::BLK_T_IN,
            GOOD_SECTOR,
            GOOD_SEED,
            p,
        );
        let _ = s.mmio.reset();
    }
}
