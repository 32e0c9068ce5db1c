//! The early-boot diagnostic, printed on every boot before guests start: the CPU's
//! virtualization features (decoded by `arch::features`), the GIC, the timer
//! frequency and the memory map; a refusal with its reason when the CPU lacks
//! something the hypervisor needs.

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0};
use arch::features::{self, Features, IdRegisters};

use crate::el1::read_sysreg;

/// Reads the ID registers and decodes them.
pub fn cpu_features() -> Features {
    let pfr0 = read_sysreg!("ID_AA64PFR0_EL1");
    let regs = IdRegisters {
        pfr0,
        isar0: read_sysreg!("ID_AA64ISAR0_EL1"),
        isar1: read_sysreg!("ID_AA64ISAR1_EL1"),
        // ID_AA64ISAR2_EL1 by encoding (older assemblers lack the name).
        isar2: read_sysreg!("S3_0_C0_C6_2"),
        mmfr0: read_sysreg!("ID_AA64MMFR0_EL1"),
        mmfr1: read_sysreg!("ID_AA64MMFR1_EL1"),
        mmfr2: read_sysreg!("ID_AA64MMFR2_EL1"),
        // Reading ICH_VTR_EL2 without the GIC system-register interface is UNDEFINED.
        ich_vtr: IdRegisters::has_gic_sysregs(pfr0).then(|| read_sysreg!("ICH_VTR_EL2")),
    };
    features::decode(&regs)
}

/// Prints the CPU's features and what they allow; `Err` with the first reason
/// when the hypervisor cannot run here.
pub fn report_cpu(f: &Features) -> Result<(), features::Missing> {
    log::info!("diagnostic: CPU {f}");
    match features::windows_guests(f) {
        Ok(()) => log::info!("diagnostic: Windows guests: possible (LSE atomics present)"),
        Err(why) => log::warn!("diagnostic: Windows guests: {why}"),
    }
    let mut missing = features::missing(f);
    match missing.next() {
        None => Ok(()),
        Some(first) => {
            for m in missing {
                log::error!("diagnostic: also missing: {m}");
            }
            Err(first)
        }
    }
}

/// Prints the GIC, the timer frequency and the memory map.
pub fn report_platform(p: &boards::Platform, f: &Features) {
    let gic = &p.gic;
    log::info!(
        "diagnostic: GIC v3 (CPU interface {:?}): GICD {:#x}, {} redistributor region(s) from {:#x}, {} ITS(es)",
        f.gic_sysregs,
        gic.gicd.base,
        gic.gicr.len(),
        gic.gicr.first().map_or(0, |r| r.base),
        gic.its.len()
    );
    let hz = CNTFRQ_EL0.get();
    log::info!(
        "diagnostic: timer {}.{:03} MHz (CNTFRQ_EL0 = {hz})",
        hz / 1_000_000,
        hz % 1_000_000 / 1000
    );
    for r in &p.memory {
        log::info!(
            "diagnostic: memory {:#x}..{:#x} ({} MiB)",
            r.base,
            r.end(),
            r.size >> 20
        );
    }
    for r in &p.reserved {
        log::info!("diagnostic: reserved {:#x}..{:#x}", r.base, r.end());
    }
    if let Some(u) = &p.uart {
        log::info!(
            "diagnostic: console {:?} at {:#x} (INTID {:?})",
            u.kind,
            u.regs.base,
            u.intid
        );
    }
}
