//! Checks of the virtio-mmio window as a guest probing QEMU `virt` sees it: a
//! slot without a device answers as an empty transport (virtio 1.2 §4.2.2:
//! MagicValue, Version 2, DeviceID 0) instead of aborting the access.

use selftest_guest::defs::map::VIRTIO_MMIO_BASE;
use selftest_guest::defs::virtio::{
    DEVICE_ID, DEVICE_ID_NONE, MAGIC, MAGIC_VALUE, STATUS, S_ACKNOWLEDGE, VERSION, VERSION_MODERN,
};
use selftest_guest::detail::Detail;
use selftest_guest::probe;
use selftest_guest::vectors;

/// `virtio-empty-slot`: the first slot (no device in the test VM) reads as an
/// empty transport, ignores a Status write, and no access aborts.
pub fn empty_slot(p: &mut Detail) {
    let slot = VIRTIO_MMIO_BASE;
    let (regs, caught) = vectors::expect(|| {
        let before = [MAGIC_VALUE, VERSION, DEVICE_ID].map(|r| probe::load32(slot + r));
        probe::store32(slot + STATUS, S_ACKNOWLEDGE);
        let after = [
            probe::load32(slot + STATUS),
            probe::load32(slot + DEVICE_ID),
        ];
        (before, after)
    });
    if caught.count != 0 {
        p.append(format_args!(
            "{} exception(s) probing the slot (first ESR {:#x})",
            caught.count,
            caught.first.map_or(0, |t| t.esr.0)
        ));
        return;
    }
    let ([magic, version, id], [status, id_after]) = regs;
    for (name, got, want) in [
        ("MagicValue", magic, MAGIC),
        ("Version", version, VERSION_MODERN),
        ("DeviceID", id, DEVICE_ID_NONE),
        ("Status after a write", status, 0),
        ("DeviceID after a write", id_after, DEVICE_ID_NONE),
    ] {
        if got != u64::from(want) {
            p.append(format_args!("{name} read {got:#x}, expected {want:#x}"));
        }
    }
}
