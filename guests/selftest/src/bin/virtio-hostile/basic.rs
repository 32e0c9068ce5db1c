//! The checks that the disk works for a correct driver and answers the
//! architected way to requests it can refuse without stopping: `virtio-probe`,
//! `virtio-good-io`, `hostile-bad-features`, `hostile-out-of-range-sector` and
//! `hypervisor-alive`. Also [`io`], the one good request the other checks use.

use selftest_guest::defs::smccc::{SMCCC_VERSION, VERSION_1_1};
use selftest_guest::defs::virtio as v;
use selftest_guest::detail::Detail;
use selftest_guest::smccc::{call, ret, Conduit};
use selftest_guest::vring::first_unoffered_bit;

use crate::driver::Mmio;
use crate::session::{
    data_desc, data_mismatch, desc_off, fill_data, header_desc, request_writes, status_desc,
    write_desc, write_header, Session, QUEUE_SIZE,
};

/// The sector `virtio-good-io` writes (and `hypervisor-alive` reads back).
pub const GOOD_SECTOR: u64 = 5;
/// Its data pattern.
pub const GOOD_SEED: u8 = 0x11;
/// The sector `hypervisor-alive` writes and reads.
const ALIVE_SECTOR: u64 = 13;
/// Its data pattern.
const ALIVE_SEED: u8 = 0x44;
/// Far beyond the 1 MiB disk.
const FAR_SECTOR: u64 = 1_000_000;
/// A sector whose byte offset overflows 64 bits.
const OVERFLOW_SECTOR: u64 = u64::MAX / 2;

/// One good one-sector request through descriptors 0..2: writes pattern `seed`
/// to `sector` (OUT) or reads `sector` and checks it holds pattern `seed` (IN).
/// Returns whether it completed with status OK and the right data.
pub fn io(s: &mut Session, what: &str, kind: u32, sector: u64, seed: u8, p: &mut Detail) -> bool {
    write_header(kind, sector);
    write_desc(desc_off(0), header_desc(1));
    write_desc(desc_off(1), data_desc(kind, 2));
    write_desc(desc_off(2), status_desc());
    // A read must replace what the buffer holds: a different pattern.
    fill_data(if kind == v::BLK_T_OUT { seed } else { !seed });
    let before = p.clone();
    let Some(used) = s.expect_completed(what, 0, v::BLK_S_OK, &request_writes(kind), p) else {
        return false;
    };
    let want_len = if kind == v::BLK_T_IN {
        v::SECTOR_SIZE as u32 + 1
    } else {
        1
    };
    if used.len != want_len {
        p.append(format_args!(
            "{what}: used len {} (want {want_len})",
            used.len
        ));
    }
    if kind == v::BLK_T_IN {
        if let Some((i, got, want)) = data_mismatch(seed) {
            p.append(format_args!(
                "{what}: sector {sector} byte {i} reads {got:#x}, expected {want:#x}"
            ));
        }
    }
    p.as_str() == before.as_str()
}

/// `virtio-probe`: the transport identifies as a version-2 virtio-mmio block
/// device offering VIRTIO_F_VERSION_1, with a 1 MiB capacity.
pub fn probe(p: &mut Detail) {
    let m = Mmio::new(v::BLK_BASE);
    let checks = [
        ("MagicValue", v::MAGIC_VALUE, v::MAGIC),
        ("Version", v::VERSION, v::VERSION_MODERN),
        ("DeviceID", v::DEVICE_ID, v::DEVICE_ID_BLOCK),
    ];
    for (name, off, want) in checks {
        let got = m.read(off);
        if got != want {
            p.append(format_args!("{name} {got:#x}, expected {want:#x}"));
        }
    }
    let offered = m.device_features();
    if offered & v::F_VERSION_1 == 0 {
        p.append(format_args!("DeviceFeatures {offered:#x} lack VERSION_1"));
    }
    let capacity = u64::from(m.read(v::CONFIG)) | u64::from(m.read(v::CONFIG + 4)) << 32;
    if capacity != v::BLK_CAPACITY_SECTORS {
        p.append(format_args!(
            "capacity {capacity} sectors, expected {}",
            v::BLK_CAPACITY_SECTORS
        ));
    }
}

/// `virtio-good-io`: full initialisation, a write of a pattern to sector 5 and
/// a read back that returns it.
pub fn good_io(p: &mut Detail) {
    let mut s = match Session::start(v::F_VERSION_1) {
        Ok(s) => s,
        Err(e) => return p.append(format_args!("init: {e}")),
    };
    if io(&mut s, "write", v::BLK_T_OUT, GOOD_SECTOR, GOOD_SEED, p) {
        io(&mut s, "read", v::BLK_T_IN, GOOD_SECTOR, GOOD_SEED, p);
    }
    let _ = s.mmio.reset();
}

/// `hostile-bad-features`: FEATURES_OK does not stick without VERSION_1 or with
/// a bit the device did not offer, DRIVER_OK does not stick without
/// FEATURES_OK, and DriverFeatures writes after FEATURES_OK are ignored.
pub fn bad_features(p: &mut Detail) {
    let m = Mmio::new(v::BLK_BASE);
    let offered = m.device_features();
    let Some(bit) = first_unoffered_bit(offered) else {
        return p.append(format_args!("device offers all 64 feature bits"));
    };
    let cases = [
        ("no VERSION_1", 0),
        ("all offered but VERSION_1", offered & !v::F_VERSION_1),
        ("unoffered bit", v::F_VERSION_1 | 1 << bit),
        ("every bit", u64::MAX),
    ];
    for (what, features) in cases {
        if let Err(e) = m.reset() {
            p.append(format_args!("{what}: {e}"));
        }
        m.add_status(v::S_ACKNOWLEDGE);
        m.add_status(v::S_DRIVER);
        m.set_driver_features(features);
        m.add_status(v::S_FEATURES_OK);
        let status = m.status();
        if status & v::S_FEATURES_OK != 0 {
            p.append(format_args!(
                "{what} ({features:#x}): FEATURES_OK stuck (status {status:#x})"
            ));
        }
        m.add_status(v::S_DRIVER_OK);
        let status = m.status();
        if status & v::S_DRIVER_OK != 0 {
            p.append(format_args!(
                "{what}: DRIVER_OK stuck without FEATURES_OK (status {status:#x})"
            ));
        }
    }

    // Accepted features cannot be changed afterwards; the device still works.
    let mut s = Session::fresh();
    if let Err(e) = s.mmio.negotiate(v::F_VERSION_1) {
        return p.append(format_args!("good negotiation: {e}"));
    }
    s.mmio.set_driver_features(u64::MAX);
    let setup = s
        .mmio
        .setup_queue(QUEUE_SIZE, Session::rings())
        .and_then(|()| s.mmio.driver_ok());
    if let Err(e) = setup {
        return p.append(format_args!("after a late DriverFeatures write: {e}"));
    }
    io(
        &mut s,
        "read after late DriverFeatures write",
        v::BLK_T_IN,
        GOOD_SECTOR,
        GOOD_SEED,
        p,
    );
    let _ = s.mmio.reset();
}

/// `hostile-out-of-range-sector`: reads and writes beyond the disk (or whose
/// byte offset overflows) complete with VIRTIO_BLK_S_IOERR, write nothing but
/// the status byte, and the device stays usable.
pub fn out_of_range_sector(p: &mut Detail) {
    let mut s = match Session::start(v::F_VERSION_1) {
        Ok(s) => s,
        Err(e) => return p.append(format_args!("init: {e}")),
    };
    let cases = [
        ("read of sector 1000000", v::BLK_T_IN, FAR_SECTOR),
        ("write of sector 1000000", v::BLK_T_OUT, FAR_SECTOR),
        (
            "read of the sector past the end",
            v::BLK_T_IN,
            v::BLK_CAPACITY_SECTORS,
        ),
        (
            "read at an overflowing offset",
            v::BLK_T_IN,
            OVERFLOW_SECTOR,
        ),
    ];
    for (what, kind, sector) in cases {
        write_header(kind, sector);
        write_desc(desc_off(0), header_desc(1));
        write_desc(desc_off(1), data_desc(kind, 2));
        write_desc(desc_off(2), status_desc());
        // Only the status byte may change, even for a read.
        let status_only = [request_writes(v::BLK_T_OUT)[0].clone()];
        if let Some(used) = s.expect_completed(what, 0, v::BLK_S_IOERR, &status_only, p) {
            if used.len != 1 {
                p.append(format_args!("{what}: used len {} (want 1)", used.len));
            }
        }
        io(
            &mut s,
            "good read afterwards",
            v::BLK_T_IN,
            GOOD_SECTOR,
            GOOD_SEED,
            p,
        );
    }
    let _ = s.mmio.reset();
}

/// `hypervisor-alive`: SMCCC_VERSION still answers 1.1, and after a reset the
/// disk still holds what `virtio-good-io` wrote and takes a new write.
pub fn hypervisor_alive(p: &mut Detail) {
    let version = ret(SMCCC_VERSION, call(Conduit::Hvc, SMCCC_VERSION, [0; 3])[0]);
    if version != VERSION_1_1 {
        p.append(format_args!("SMCCC_VERSION returned {version:#x}"));
    }
    let mut s = match Session::start(v::F_VERSION_1) {
        Ok(s) => s,
        Err(e) => return p.append(format_args!("init: {e}")),
    };
    io(
        &mut s,
        "read of sector 5",
        v::BLK_T_IN,
        GOOD_SECTOR,
        GOOD_SEED,
        p,
    );
    if io(&mut s, "write", v::BLK_T_OUT, ALIVE_SECTOR, ALIVE_SEED, p) {
        io(
            &mut s,
            "read back",
            v::BLK_T_IN,
            ALIVE_SECTOR,
            ALIVE_SEED,
            p,
        );
    }
    let _ = s.mmio.reset();
}
