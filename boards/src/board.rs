//! The boards RayOS EL2 runs on, one `const` description each.

/// How the hypervisor ends the machine's life on this board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// PSCI SYSTEM_OFF through the platform firmware.
    Psci,
    /// Arm semihosting SYS_EXIT_EXTENDED, so an emulator reports the exit status
    /// (QEMU with `-semihosting`); PSCI SYSTEM_OFF is the fallback.
    SemihostingThenPsci,
}

/// One supported board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Short name used by scripts and logs.
    pub name: &'static str,
    /// Any of these root `compatible` strings identifies the board.
    pub compatible: &'static [&'static str],
    /// How to power off with an exit status.
    pub power_off: PowerOff,
    /// Whether the generic timer's EL2 physical timer and the GIC maintenance
    /// interrupt are wired as the device tree describes (false would need quirks).
    pub standard_irqs: bool,
}

/// QEMU's `virt` machine with `virtualization=on,gic-version=3`.
pub const QEMU_VIRT: Board = Board {
    name: "qemu-virt",
    compatible: &["linux,dummy-virt"],
    power_off: PowerOff::SemihostingThenPsci,
    standard_irqs: true,
};

/// Every board description, in lookup order.
pub const BOARDS: &[Board] = &[QEMU_VIRT];

impl Board {
    /// The board whose compatible list matches one of `root_compatible`.
    pub fn identify<'a>(
        mut root_compatible: impl Iterator<Item = &'a str>,
    ) -> Option<&'static Board> {
        root_compatible.find_map(|c| BOARDS.iter().find(|b| b.compatible.contains(&c)))
    }
}
