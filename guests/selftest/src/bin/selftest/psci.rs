//! Checks of the hypervisor's SMCCC/PSCI service: HVC round trips with register
//! preservation, PSCI_VERSION/FEATURES, unknown function IDs, trapped SMCs,
//! CPU_ON with a bad MPIDR and AFFINITY_INFO.

use selftest_guest::defs::map::GUEST_RAM_BASE;
use selftest_guest::defs::smccc::*;
use selftest_guest::detail::Detail;
use selftest_guest::smccc::{call, hvc_snapshot, ret, Conduit};
use selftest_guest::{boot, sysreg, vectors};

/// HVC round trips in `hvc-roundtrip`.
const ROUNDTRIPS: u64 = 1000;
/// First register SMCCC 1.1 requires the callee to preserve (x4..x17: v1.1; x18..x30: always).
const FIRST_PRESERVED: usize = 4;

/// Whether SMCCC_VERSION through HVC returns 1.1 without a fault: a hypervisor
/// implementing this contract is present (bare QEMU's built-in PSCI answers -1,
/// and without any PSCI conduit HVC is undefined).
pub fn hypervisor_answers() -> bool {
    let (r, caught) = vectors::expect(|| call(Conduit::Hvc, SMCCC_VERSION, [0; 3]));
    caught.count == 0 && ret(SMCCC_VERSION, r[0]) == VERSION_1_1
}

/// A distinct value for register `reg` in round trip `i`.
fn pattern(i: u64, reg: usize) -> u64 {
    0xa5a5_0000_0000_0000 ^ (i << 20) ^ ((reg as u64) << 8) ^ (reg as u64 * 0x0101_0101)
}

/// `hvc-roundtrip`: SMCCC_VERSION returns 1.1 a thousand times and x4..x30 survive.
pub fn hvc_roundtrip(p: &mut Detail) {
    for i in 0..ROUNDTRIPS {
        let mut regs = [0u64; 31];
        for (reg, slot) in regs.iter_mut().enumerate() {
            *slot = pattern(i, reg);
        }
        regs[0] = u64::from(SMCCC_VERSION);
        let after = hvc_snapshot(&regs);
        let version = ret(SMCCC_VERSION, after[0]);
        if version != VERSION_1_1 {
            p.append(format_args!(
                "round trip {i}: SMCCC_VERSION returned {version:#x}, expected {VERSION_1_1:#x}"
            ));
            return;
        }
        if let Some(reg) = (FIRST_PRESERVED..31).find(|&r| after[r] != regs[r]) {
            p.append(format_args!(
                "round trip {i}: x{reg} changed from {:#x} to {:#x}",
                regs[reg], after[reg]
            ));
            return;
        }
    }
}

/// Calls `fid` and checks its return code.
fn expect_ret(conduit: Conduit, fid: u32, args: [u64; 3], want: i64, problems: &mut Detail) {
    let got = ret(fid, call(conduit, fid, args)[0]);
    if got != want {
        problems.append(format_args!(
            "{} {fid:#x}({:#x}) = {got}, expected {want}",
            conduit.name(),
            args[0]
        ));
    }
}

/// `psci-version`: PSCI_VERSION returns 1.1.
pub fn psci_version(p: &mut Detail) {
    expect_ret(Conduit::Hvc, PSCI_VERSION, [0; 3], PSCI_VERSION_1_1, p);
}

/// `psci-features`: implemented functions report 0, CPU_SUSPEND and an unassigned ID -1.
pub fn psci_features(p: &mut Detail) {
    let implemented = [
        PSCI_VERSION,
        PSCI_CPU_ON_64,
        PSCI_AFFINITY_INFO_64,
        PSCI_SYSTEM_OFF,
        PSCI_FEATURES,
        SMCCC_VERSION,
    ];
    for fid in implemented {
        expect_ret(
            Conduit::Hvc,
            PSCI_FEATURES,
            [u64::from(fid), 0, 0],
            SUCCESS,
            p,
        );
    }
    for fid in [PSCI_CPU_SUSPEND, PSCI_UNASSIGNED] {
        expect_ret(
            Conduit::Hvc,
            PSCI_FEATURES,
            [u64::from(fid), 0, 0],
            NOT_SUPPORTED,
            p,
        );
    }
}

/// Function IDs no service of the hypervisor implements: an unassigned Arm
/// architecture call, SiP, OEM, unassigned PSCI, Trusted OS, and a yielding call.
const UNKNOWN_FIDS: [u32; 8] = [
    0x8000_5a5a,
    0x8200_1234,
    0xc200_1234,
    0x8300_0042,
    0x8400_001f,
    0xc400_001f,
    0xb200_0000,
    0x0400_0000,
];
/// How many pseudo-random Trusted OS function IDs are added.
const RANDOM_FIDS: usize = 4;

/// A fixed pseudo-random sequence of fast Trusted OS function IDs (owners 50..63).
fn random_trusted_os_fids() -> [u32; RANDOM_FIDS] {
    let mut state: u32 = 0x2545_f491;
    let mut out = [0; RANDOM_FIDS];
    for slot in &mut out {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let owner = OWNER_TRUSTED_OS_FIRST + (state >> 8) % OWNER_TRUSTED_OS_COUNT;
        let smc64 = if state & 1 != 0 { FID_SMC64 } else { 0 };
        *slot = FID_FAST | smc64 | owner << FID_OWNER_SHIFT | (state >> 16);
    }
    out
}

/// `smccc-unknown`: unknown function IDs return -1 through HVC and SMC, and
/// SMCCC_ARCH_FEATURES reports an unknown architecture call as not supported.
pub fn smccc_unknown(p: &mut Detail) {
    for conduit in [Conduit::Hvc, Conduit::Smc] {
        for fid in UNKNOWN_FIDS.into_iter().chain(random_trusted_os_fids()) {
            expect_ret(conduit, fid, [0; 3], NOT_SUPPORTED, p);
        }
    }
    expect_ret(
        Conduit::Hvc,
        SMCCC_ARCH_FEATURES,
        [u64::from(UNKNOWN_FIDS[0]), 0, 0],
        NOT_SUPPORTED,
        p,
    );
}

/// `authority-range-refused`: this guest is not the authority partition, so every
/// function id of the authority ABI's range — each defined call, the unassigned
/// numbers between them, the range's general queries (0xFF00..=0xFF03), in the
/// SMC64 and the SMC32 convention — answers NOT_SUPPORTED through HVC and SMC,
/// even with well-formed arguments (OPEN's are a valid version and a page of RAM).
pub fn authority_range_refused(p: &mut Detail) {
    let args = [authority_abi::VERSION.to_reg(), GUEST_RAM_BASE, 4096];
    let numbers = (0..=0x60u16).chain(0xff00..=0xff03);
    for n in numbers {
        let smc64 = authority_abi::fid(n);
        for fid in [smc64, smc64 & !FID_SMC64] {
            for conduit in [Conduit::Hvc, Conduit::Smc] {
                expect_ret(conduit, fid, args, NOT_SUPPORTED, p);
            }
        }
    }
}

/// `smc-trapped`: PSCI_VERSION through `smc #0` returns 1.1 and execution goes on
/// with the very next instruction.
pub fn smc_trapped(p: &mut Detail) {
    let mut x0 = u64::from(PSCI_VERSION);
    let next_ran: u64;
    // SAFETY: an SMCCC call through SMC followed by one `mov`; x0..x17 are declared
    // clobbered and the callee preserves everything else.
    unsafe {
        core::arch::asm!(
            "mov {m}, #0",
            "smc #0",
            "mov {m}, #1",
            m = out(reg) next_ran,
            inout("x0") x0,
            out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _, out("x6") _,
            out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
            out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
        )
    };
    let version = ret(PSCI_VERSION, x0);
    if next_ran != 1 {
        p.append(format_args!("the instruction after the smc was skipped"));
    }
    if version != PSCI_VERSION_1_1 {
        p.append(format_args!(
            "smc PSCI_VERSION returned {version:#x}, expected {PSCI_VERSION_1_1:#x}"
        ));
    }
}

/// `psci-cpu-on-invalid`: CPU_ON for an MPIDR that does not exist returns INVALID_PARAMETERS.
pub fn cpu_on_invalid(p: &mut Detail) {
    let args = [MPIDR_ABSENT, boot::secondary_park_address(), 0];
    expect_ret(Conduit::Hvc, PSCI_CPU_ON_64, args, INVALID_PARAMETERS, p);
    // This CPU is already on: starting it again is ALREADY_ON.
    let me = sysreg::mpidr_el1() & MPIDR_AFFINITY_MASK;
    let args = [me, boot::secondary_park_address(), 0];
    expect_ret(Conduit::Hvc, PSCI_CPU_ON_64, args, ALREADY_ON, p);
}

/// `psci-affinity-info`: this CPU is ON; an absent MPIDR is INVALID_PARAMETERS.
pub fn affinity_info(p: &mut Detail) {
    let me = sysreg::mpidr_el1() & MPIDR_AFFINITY_MASK;
    expect_ret(
        Conduit::Hvc,
        PSCI_AFFINITY_INFO_64,
        [me, 0, 0],
        AFFINITY_ON,
        p,
    );
    expect_ret(
        Conduit::Hvc,
        PSCI_AFFINITY_INFO_64,
        [MPIDR_ABSENT, 0, 0],
        INVALID_PARAMETERS,
        p,
    );
}
