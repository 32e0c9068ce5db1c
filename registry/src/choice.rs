//! Which VM of the registry the hypervisor starts: the one the host's command
//! line names (`rayos.vm=NAME`, from `cargo xtask run --vm NAME`), else the
//! first autostart VM.

use crate::record::VmRecord;

/// The word of a kernel-style command line that names the VM to start.
pub const VM_ARG: &str = "rayos.vm=";

/// The VM name `bootargs` gives with [`VM_ARG`] (the last one wins), if any.
pub fn vm_from_bootargs(bootargs: &str) -> Option<&str> {
    bootargs
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix(VM_ARG))
        .next_back()
        .filter(|n| !n.is_empty())
}

/// Why no VM was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceError<'a> {
    /// No VM has this name.
    NoSuchVm(&'a str),
    /// No name was given and no VM is autostart.
    NoAutostart,
}

impl core::fmt::Display for ChoiceError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ChoiceError::NoSuchVm(n) => write!(f, "the registry has no VM named '{n}'"),
            ChoiceError::NoAutostart => write!(f, "the registry has no autostart VM"),
        }
    }
}

/// The VM named `name` (whatever its autostart policy), or with no name the
/// first autostart VM.
pub fn choose<'a, 'n>(
    vms: &'a [VmRecord],
    name: Option<&'n str>,
) -> Result<&'a VmRecord, ChoiceError<'n>> {
    match name {
        Some(n) => vms
            .iter()
            .find(|v| v.name == n)
            .ok_or(ChoiceError::NoSuchVm(n)),
        None => vms
            .iter()
            .find(|v| v.policy.autostart)
            .ok_or(ChoiceError::NoAutostart),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;
    use alloc::vec;

    #[test]
    fn the_named_vm_wins_over_autostart() {
        let mut a = sample(1);
        a.policy.autostart = true;
        let mut b = sample(2);
        b.policy.autostart = false;
        let vms = vec![a, b];
        assert_eq!(choose(&vms, None).unwrap().name, "vm1");
        assert_eq!(choose(&vms, Some("vm2")).unwrap().name, "vm2");
        assert_eq!(choose(&vms, Some("vm3")), Err(ChoiceError::NoSuchVm("vm3")));
        let none = vec![vms[1].clone()];
        assert_eq!(choose(&none, None), Err(ChoiceError::NoAutostart));
    }

    #[test]
    fn the_name_comes_from_its_word_of_the_command_line() {
        assert_eq!(vm_from_bootargs(""), None);
        assert_eq!(vm_from_bootargs("console=ttyAMA0"), None);
        assert_eq!(vm_from_bootargs("rayos.vm=win quiet"), Some("win"));
        assert_eq!(vm_from_bootargs("a rayos.vm=x  rayos.vm=y"), Some("y"));
        assert_eq!(vm_from_bootargs("rayos.vm="), None);
        assert_eq!(vm_from_bootargs("xrayos.vm=z"), None);
    }
}
