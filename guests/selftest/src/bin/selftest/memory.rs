//! Checks of stage-2 isolation: loads, stores and instruction fetches at
//! unmapped IPAs get aborts; IPA 0x4008_0000 is this guest's own image, not the
//! hypervisor's; all of guest RAM is usable and nothing past it is.

use selftest_guest::defs::map;
use selftest_guest::defs::smccc::{SMCCC_VERSION, VERSION_1_1};
use selftest_guest::detail::Detail;
use selftest_guest::probe;
use selftest_guest::smccc::{call, ret, Conduit};
use selftest_guest::vectors;

use crate::mmio::expect_data_abort;

/// Words of the last RAM page written and read back.
const PAGE_WORDS: u64 = map::PAGE_SIZE / 4;

extern "C" {
    /// End of the guest image (BSS and stack included), from the linker script.
    static __image_end: u8;
}

/// Expects a 32-bit load from `addr` to abort with FAR = `addr`.
fn load_aborts(addr: u64, p: &mut Detail) {
    let (_, caught) = vectors::expect(|| probe::load32(addr));
    expect_data_abort("load", caught, addr, addr, false, p);
}

/// `unmapped-ipa`: loads from three unmapped IPAs and a store to one abort.
pub fn unmapped_ipa(p: &mut Detail) {
    for addr in [map::UNMAPPED_DEVICE, map::UNMAPPED_LOW, map::UNMAPPED_HIGH] {
        load_aborts(addr, p);
    }
    let (_, caught) = vectors::expect(|| probe::store32(map::UNMAPPED_DEVICE, 0x1234_5678));
    expect_data_abort(
        "store",
        caught,
        map::UNMAPPED_DEVICE,
        map::UNMAPPED_DEVICE,
        true,
        p,
    );
}

/// `unmapped-exec`: a branch to an unmapped IPA gets an instruction abort and
/// the guest carries on after the branch.
pub fn unmapped_exec(p: &mut Detail) {
    let target = map::UNMAPPED_EXEC;
    let (came_back, caught) = vectors::expect(|| probe::call_address(target));
    match caught.first {
        None => p.append(format_args!("no abort delivered")),
        Some(trap) => {
            if !trap.esr.is_external_instruction_abort() {
                p.append(format_args!(
                    "esr {:#x} (ec {:#x}, fsc {:#x}), expected ec 0x21 fsc 0x10",
                    trap.esr.0,
                    trap.esr.ec(),
                    trap.esr.fsc()
                ));
            }
            if trap.far != target || trap.elr != target {
                p.append(format_args!(
                    "far {:#x} elr {:#x}, expected {target:#x}",
                    trap.far, trap.elr
                ));
            }
            if caught.count != 1 {
                p.append(format_args!("{} exceptions, expected 1", caught.count));
            }
        }
    }
    if !came_back {
        p.append(format_args!("execution did not resume after the blr"));
    }
}

/// `hypervisor-memory`: the guest sees its own image at 0x4008_0000, can use
/// the last page of its RAM, cannot reach past it, and HVC still works.
pub fn hypervisor_memory(p: &mut Detail) {
    let marker = probe::load32(map::IMAGE_BASE + map::IMAGE_MARKER_OFFSET);
    if marker == u64::from(map::ARM64_IMAGE_MAGIC) {
        p.append(format_args!(
            "IPA {:#x} shows the hypervisor's Image magic",
            map::IMAGE_BASE + map::IMAGE_MARKER_OFFSET
        ));
    } else if marker != u64::from(map::IMAGE_MARKER) {
        p.append(format_args!(
            "image marker read {marker:#x}, expected {:#x}",
            map::IMAGE_MARKER
        ));
    }

    let image_end = core::ptr::addr_of!(__image_end) as u64;
    if image_end > map::LAST_RAM_PAGE {
        p.append(format_args!(
            "image ends at {image_end:#x}, inside the page under test"
        ));
        return;
    }
    let page = map::LAST_RAM_PAGE;
    let word = |i: u64| 0x5a5a_0000u32 ^ (i as u32).wrapping_mul(0x9e37_79b9);
    let (_, caught) = vectors::expect(|| {
        for i in 0..PAGE_WORDS {
            probe::store32(page + 4 * i, word(i));
        }
    });
    if caught.count != 0 {
        p.append(format_args!(
            "writing {page:#x} faulted (esr {:#x})",
            caught.first.map_or(0, |t| t.esr.0)
        ));
    }
    let (bad, caught) = vectors::expect(|| {
        (0..PAGE_WORDS).find(|&i| probe::load32(page + 4 * i) != u64::from(word(i)))
    });
    if caught.count != 0 {
        p.append(format_args!(
            "reading {page:#x} faulted (esr {:#x})",
            caught.first.map_or(0, |t| t.esr.0)
        ));
    } else if let Some(i) = bad {
        p.append(format_args!(
            "{:#x} read back {:#x}, wrote {:#x}",
            page + 4 * i,
            probe::load32(page + 4 * i),
            word(i)
        ));
    }

    load_aborts(map::GUEST_RAM_END, p);
    load_aborts(map::HOST_RAM_TOP_PAGE, p);

    let version = ret(SMCCC_VERSION, call(Conduit::Hvc, SMCCC_VERSION, [0; 3])[0]);
    if version != VERSION_1_1 {
        p.append(format_args!(
            "SMCCC_VERSION afterwards returned {version:#x}"
        ));
    }
}
