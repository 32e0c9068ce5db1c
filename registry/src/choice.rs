//! Which VMs of the registry the hypervisor starts: those the host's command
//! line names (`rayos.vm=NAME[,NAME…]`, from `cargo xtask run --vm NAME[,NAME…]`),
//! else every autostart VM.

use alloc::vec::Vec;

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

/// The names of a [`VM_ARG`] value, split at commas (empty names dropped).
pub fn names(arg: &str) -> impl Iterator<Item = &str> {
    arg.split(',').filter(|n| !n.is_empty())
}

/// Why no VM was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceError<'a> {
    /// No VM has this name.
    NoSuchVm(&'a str),
    /// No name was given and no VM is autostart.
    NoAutostart,
    /// A name was given twice.
    Twice(&'a str),
}

impl core::fmt::Display for ChoiceError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ChoiceError::NoSuchVm(n) => write!(f, "the registry has no VM named '{n}'"),
            ChoiceError::NoAutostart => write!(f, "the registry has no autostart VM"),
            ChoiceError::Twice(n) => write!(f, "VM '{n}' is named twice: a VM runs once"),
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

/// Every VM `arg` names ([`names`], in its order; duplicates refused), or with no
/// names every autostart VM in registry order.
pub fn choose_all<'a, 'n>(
    vms: &'a [VmRecord],
    arg: Option<&'n str>,
) -> Result<Vec<&'a VmRecord>, ChoiceError<'n>> {
    let Some(arg) = arg.filter(|a| names(a).next().is_some()) else {
        let all: Vec<&VmRecord> = vms.iter().filter(|v| v.policy.autostart).collect();
        return if all.is_empty() {
            Err(ChoiceError::NoAutostart)
        } else {
            Ok(all)
        };
    };
    let mut chosen: Vec<&VmRecord> = Vec::new();
    for n in names(arg) {
        let rec = choose(vms, Some(n))?;
        if chosen.iter().any(|c| c.uuid == rec.uuid) {
            return Err(ChoiceError::Twice(n));
        }
        chosen.push(rec);
    }
    Ok(chosen)
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
    fn several_names_or_every_autostart_vm() {
        let mut a = sample(1);
        a.policy.autostart = true;
        let mut b = sample(2);
        b.policy.autostart = false;
        let mut c = sample(3);
        c.policy.autostart = true;
        let vms = vec![a, b, c];
        let names = |r: Vec<&VmRecord>| r.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(choose_all(&vms, None).unwrap()), ["vm1", "vm3"]);
        assert_eq!(names(choose_all(&vms, Some("")).unwrap()), ["vm1", "vm3"]);
        assert_eq!(
            names(choose_all(&vms, Some("vm2,vm1")).unwrap()),
            ["vm2", "vm1"]
        );
        assert_eq!(names(choose_all(&vms, Some("vm2,,")).unwrap()), ["vm2"]);
        assert_eq!(
            choose_all(&vms, Some("vm1,vm9")),
            Err(ChoiceError::NoSuchVm("vm9"))
        );
        assert_eq!(
            choose_all(&vms, Some("vm1,vm1")),
            Err(ChoiceError::Twice("vm1"))
        );
        let none = vec![vms[1].clone()];
        assert_eq!(choose_all(&none, None), Err(ChoiceError::NoAutostart));
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
