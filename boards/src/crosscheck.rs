//! What the firmware says against what the board description says.
//!
//! Discovery is authoritative: a mismatch is reported (one log line each in
//! `el2`), never silently "fixed", so a wrong description or an unexpected
//! firmware is seen at the first boot.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::board::Board;
use crate::discover::{Platform, Range};

/// One disagreement between the firmware and the board description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What disagrees, e.g. `"gic.gicd"`.
    pub what: &'static str,
    /// The description's value.
    pub described: String,
    /// The firmware's value.
    pub found: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the board description says {}, the firmware says {}; using the firmware's",
            self.what, self.described, self.found
        )
    }
}

fn ranges(r: &[Range]) -> String {
    let parts: Vec<String> = r
        .iter()
        .map(|r| format!("{:#x}+{:#x}", r.base, r.size))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Every disagreement between `platform` (discovered) and `board`. Values the
/// discovery took from the description (`platform.fallbacks`) agree by construction.
pub fn crosscheck(platform: &Platform, board: &Board) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut differ = |what, described: String, found: String| {
        out.push(Mismatch {
            what,
            described,
            found,
        })
    };

    // Memory: every discovered range inside one of the board's DRAM windows.
    let outside: Vec<Range> = platform
        .memory
        .iter()
        .filter(|m| {
            !board
                .memory
                .iter()
                .any(|w| w.base <= m.base && m.end() <= w.end())
        })
        .copied()
        .collect();
    if !outside.is_empty() {
        differ("memory", ranges(board.memory), ranges(&outside));
    }
    // Reserved: when the firmware lists any, each described one is among them.
    if !platform.reserved.is_empty() {
        let missing: Vec<Range> = board
            .reserved
            .iter()
            .filter(|d| !platform.reserved.contains(d))
            .copied()
            .collect();
        if !missing.is_empty() {
            differ("reserved", ranges(&missing), String::from("not reserved"));
        }
    }
    match &platform.uart {
        Some(u) if u.kind != board.uart.kind || u.regs.base != board.uart.regs.base => differ(
            "uart",
            format!("{:?} at {:#x}", board.uart.kind, board.uart.regs.base),
            format!("{:?} at {:#x}", u.kind, u.regs.base),
        ),
        Some(u) if u.intid.is_some() && u.intid != board.uart.intid => differ(
            "uart.intid",
            format!("{:?}", board.uart.intid),
            format!("{:?}", u.intid),
        ),
        _ => {}
    }
    let g = &platform.gic;
    if g.gicd.base != board.gic.gicd.base {
        differ(
            "gic.gicd",
            format!("{:#x}", board.gic.gicd.base),
            format!("{:#x}", g.gicd.base),
        );
    }
    let gicr_bases: Vec<u64> = g.gicr.iter().map(|r| r.base).collect();
    let described_gicr: Vec<u64> = board.gic.gicr.iter().map(|r| r.base).collect();
    if gicr_bases != described_gicr {
        differ("gic.gicr", ranges(board.gic.gicr), ranges(&g.gicr));
    }
    if let Some(stride) = g.redistributor_stride {
        if stride != board.gic.gicr_stride {
            differ(
                "gic.redistributor_stride",
                format!("{:#x}", board.gic.gicr_stride),
                format!("{stride:#x}"),
            );
        }
    }
    let unknown_its: Vec<Range> = g
        .its
        .iter()
        .filter(|i| !board.gic.its.iter().any(|d| d.base == i.base))
        .copied()
        .collect();
    if !unknown_its.is_empty() {
        differ("gic.its", ranges(board.gic.its), ranges(&unknown_its));
    }
    if let Some(m) = g.maintenance_intid {
        if m != board.gic.maintenance_intid {
            differ(
                "gic.maintenance_intid",
                format!("{}", board.gic.maintenance_intid),
                format!("{m}"),
            );
        }
    }
    if platform.timer != board.timer {
        differ(
            "timer",
            format!("{:?}", board.timer),
            format!("{:?}", platform.timer),
        );
    }
    if let Some(p) = platform.psci {
        if p != board.psci {
            differ("psci", format!("{:?}", board.psci), format!("{p:?}"));
        }
    }
    if platform.cpus.len() > board.max_cpus {
        differ(
            "cpus",
            format!("at most {}", board.max_cpus),
            format!("{}", platform.cpus.len()),
        );
    }
    let unknown_ecam: Vec<String> = platform
        .pci_ecam
        .iter()
        .filter(|e| !board.pci_ecam.contains(e))
        .map(|e| format!("segment {} at {:#x}", e.segment, e.base))
        .collect();
    if !unknown_ecam.is_empty() {
        differ(
            "pci_ecam",
            format!("{} window(s)", board.pci_ecam.len()),
            unknown_ecam.join(", "),
        );
    }
    out
}
