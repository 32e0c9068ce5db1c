//! Checks of MMIO emulation through the hypervisor's PL011: identification
//! registers, a read/write register, byte loads with sign extension, and the
//! aborts for an access size the device refuses and for an access without a
//! valid syndrome (`ldp`).

use selftest_guest::defs::map::PL011_BASE;
use selftest_guest::defs::pl011;
use selftest_guest::detail::Detail;
use selftest_guest::esr::Esr;
use selftest_guest::probe::{self, SENTINEL};
use selftest_guest::vectors::{self, Caught};

/// Checks that `caught` is exactly one external data abort with FAR in
/// `far_lo..=far_hi` and WnR equal to `write`.
pub fn expect_data_abort(
    what: &str,
    caught: Caught,
    far_lo: u64,
    far_hi: u64,
    write: bool,
    p: &mut Detail,
) {
    let Some(trap) = caught.first else {
        p.append(format_args!("{what}: no abort delivered"));
        return;
    };
    let esr: Esr = trap.esr;
    if !esr.is_external_data_abort() {
        p.append(format_args!(
            "{what}: esr {:#x} (ec {:#x}, fsc {:#x}), expected ec 0x25 fsc 0x10",
            esr.0,
            esr.ec(),
            esr.fsc()
        ));
    }
    if !(far_lo..=far_hi).contains(&trap.far) {
        p.append(format_args!(
            "{what}: far {:#x}, expected {far_lo:#x}",
            trap.far
        ));
    }
    if esr.is_external_data_abort() && esr.is_write() != write {
        p.append(format_args!(
            "{what}: WnR {}, expected {}",
            u8::from(esr.is_write()),
            u8::from(write)
        ));
    }
    if caught.count != 1 {
        p.append(format_args!(
            "{what}: {} exceptions, expected 1",
            caught.count
        ));
    }
}

/// `mmio-pl011-id`: PeriphID0..3 and CellID0..3 read the PL011's values.
pub fn pl011_id(p: &mut Detail) {
    let regs = pl011::PERIPH_ID
        .iter()
        .enumerate()
        .map(|(i, v)| (pl011::PERIPH_ID0 + 4 * i as u64, *v));
    let regs = regs.chain(
        pl011::CELL_ID
            .iter()
            .enumerate()
            .map(|(i, v)| (pl011::CELL_ID0 + 4 * i as u64, *v)),
    );
    for (offset, want) in regs {
        let got = probe::load32(PL011_BASE + offset);
        if got != u64::from(want) {
            p.append(format_args!(
                "{offset:#x} read {got:#x}, expected {want:#x}"
            ));
        }
    }
}

/// `mmio-pl011-rw`: IMSC holds a written value; it is cleared again afterwards.
pub fn pl011_rw(p: &mut Detail) {
    let imsc = PL011_BASE + pl011::IMSC;
    probe::store32(imsc, pl011::IMSC_TEST_VALUE);
    let got = probe::load32(imsc);
    if got != u64::from(pl011::IMSC_TEST_VALUE) {
        p.append(format_args!(
            "IMSC read {got:#x} after writing {:#x}",
            pl011::IMSC_TEST_VALUE
        ));
    }
    probe::store32(imsc, 0);
    let cleared = probe::load32(imsc);
    if cleared != 0 {
        p.append(format_args!("IMSC read {cleared:#x} after writing 0"));
    }
}

/// A probe doing one byte load.
type ByteLoad = fn(u64) -> u64;

/// `mmio-byte-and-sign`: byte loads of CellID1 (0xf0) extend as the instruction says.
pub fn byte_and_sign(p: &mut Detail) {
    let addr = PL011_BASE + pl011::CELL_ID1;
    let cases: [(&str, ByteLoad, u64); 3] = [
        ("ldrsb x", probe::load8_sext64, 0xffff_ffff_ffff_fff0),
        ("ldrsb w", probe::load8_sext32, 0x0000_0000_ffff_fff0),
        ("ldrb w", probe::load8, 0xf0),
    ];
    for (name, load, want) in cases {
        let got = load(addr);
        if got != want {
            p.append(format_args!("{name} read {got:#x}, expected {want:#x}"));
        }
    }
}

/// `mmio-bad-size`: a 64-bit load of FR is refused with a data abort.
pub fn bad_size(p: &mut Detail) {
    let fr = PL011_BASE + pl011::FR;
    let (value, caught) = vectors::expect(|| probe::load64(fr));
    expect_data_abort("ldr x from FR", caught, fr, fr, false, p);
    if caught.first.is_some() && value != SENTINEL {
        p.append(format_args!("the faulting load still wrote {value:#x}"));
    }
}

/// `mmio-no-syndrome`: an `ldp` from the PL011 (no valid ISS) gets a data abort.
pub fn no_syndrome(p: &mut Detail) {
    let addr = PL011_BASE + pl011::PERIPH_ID0;
    let (values, caught) = vectors::expect(|| probe::load_pair32(addr));
    // Either element may be the one reported.
    expect_data_abort("ldp w from PeriphID0", caught, addr, addr + 4, false, p);
    if caught.first.is_none() {
        p.append(format_args!("ldp read {:#x}, {:#x}", values.0, values.1));
    }
}
