//! SMCCC 1.1 and PSCI 1.1 as seen by a guest: function identifiers, return codes and
//! the pure half of handling a call (validation and the power state machine). `el2`
//! carries out the [`PowerAction`] that comes back.

/// SMCCC function identifiers (Arm DEN0028), PSCI's (DEN0022) and TRNG's (DEN0098).
/// The SMCCC and PSCI numbers come from the `smccc` crate, under the names this
/// crate has always used (the 32-bit calling-convention forms without a suffix,
/// `*_64` for SMC64); the TRNG numbers, which `smccc` does not define, are here.
pub mod func {
    pub use smccc::arch::{
        SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1, SMCCC_ARCH_WORKAROUND_2,
        SMCCC_ARCH_WORKAROUND_3, SMCCC_VERSION,
    };
    pub use smccc::psci::{
        PSCI_AFFINITY_INFO_64, PSCI_CPU_OFF, PSCI_CPU_ON_64, PSCI_CPU_SUSPEND_64, PSCI_FEATURES,
        PSCI_MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_VERSION,
    };
    pub const PSCI_CPU_SUSPEND: u32 = smccc::psci::PSCI_CPU_SUSPEND_32;
    pub const PSCI_CPU_ON: u32 = smccc::psci::PSCI_CPU_ON_32;
    pub const PSCI_AFFINITY_INFO: u32 = smccc::psci::PSCI_AFFINITY_INFO_32;

    // Arm True Random Number Generator Firmware Interface 1.0 (DEN0098).
    pub const TRNG_VERSION: u32 = 0x8400_0050;
    pub const TRNG_FEATURES: u32 = 0x8400_0051;
    pub const TRNG_GET_UUID: u32 = 0x8400_0052;
    pub const TRNG_RND32: u32 = 0x8400_0053;
    pub const TRNG_RND64: u32 = 0xc400_0053;

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The numbers DEN0028 and DEN0022 give, whichever crate spells them.
        #[test]
        fn ids_match_the_specifications() {
            assert_eq!(SMCCC_VERSION, 0x8000_0000);
            assert_eq!(SMCCC_ARCH_FEATURES, 0x8000_0001);
            assert_eq!(SMCCC_ARCH_WORKAROUND_1, 0x8000_8000);
            assert_eq!(SMCCC_ARCH_WORKAROUND_2, 0x8000_7fff);
            assert_eq!(SMCCC_ARCH_WORKAROUND_3, 0x8000_3fff);
            assert_eq!(PSCI_VERSION, 0x8400_0000);
            assert_eq!(PSCI_CPU_SUSPEND, 0x8400_0001);
            assert_eq!(PSCI_CPU_SUSPEND_64, 0xc400_0001);
            assert_eq!(PSCI_CPU_OFF, 0x8400_0002);
            assert_eq!(PSCI_CPU_ON, 0x8400_0003);
            assert_eq!(PSCI_CPU_ON_64, 0xc400_0003);
            assert_eq!(PSCI_AFFINITY_INFO, 0x8400_0004);
            assert_eq!(PSCI_AFFINITY_INFO_64, 0xc400_0004);
            assert_eq!(PSCI_MIGRATE_INFO_TYPE, 0x8400_0006);
            assert_eq!(PSCI_SYSTEM_OFF, 0x8400_0008);
            assert_eq!(PSCI_SYSTEM_RESET, 0x8400_0009);
            assert_eq!(PSCI_FEATURES, 0x8400_000a);
        }
    }
}

/// SMCCC and PSCI return codes, as the signed values the guest reads in x0.
pub mod ret {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const NOT_REQUIRED: i64 = -2;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INTERNAL_FAILURE: i64 = -6;
    pub const INVALID_ADDRESS: i64 = -9;
}

/// SMCCC_VERSION answer: 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// PSCI_VERSION answer: 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x1_0001;
/// MIGRATE_INFO_TYPE answer: no Trusted OS that needs migration.
pub const MIGRATE_INFO_TYPE_NOT_REQUIRED: u64 = 2;
/// The MPIDR bits that name a PE: Aff3 [39:32], Aff2 [23:16], Aff1 [15:8], Aff0 [7:0].
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// PSCI AFFINITY_INFO states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPower {
    On = 0,
    Off = 1,
    OnPending = 2,
}

/// What the VM looks like to the power state machine.
pub trait PowerTopology {
    /// The vCPU whose MPIDR affinity matches `mpidr` (already masked).
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize>;
    /// The power state of vCPU `idx`.
    fn power(&self, idx: usize) -> CpuPower;
    /// Whether the guest may start a vCPU at this intermediate physical address.
    fn valid_entry(&self, ipa: u64) -> bool;
    /// Atomically moves vCPU `idx` from `Off` to `OnPending`, so that of two vCPUs
    /// racing CPU_ON on one target exactly one starts it; `Err` carries the state
    /// that made the claim fail.
    fn claim_start(&self, idx: usize) -> Result<(), CpuPower>;
}

/// The platform's own firmware, asked on the guest's behalf about CPU-vulnerability
/// workarounds (they are properties of the physical CPU).
pub trait HostFirmware {
    /// SMCCC_ARCH_FEATURES(`id`) as answered by the host firmware.
    fn arch_features(&self, id: u32) -> i64;
}

/// What the hypervisor must do after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    None,
    /// Start vCPU `target` at `entry` with `context_id` in x0, MMU off, EL1h.
    CpuOn {
        target: usize,
        entry: u64,
        context_id: u64,
    },
    /// Stop the calling vCPU.
    CpuOff,
    /// Power the VM off.
    SystemOff,
    /// Reset the VM.
    SystemReset,
    /// Call the platform firmware with `id` and `x1` before returning (a
    /// CPU-vulnerability workaround; see [`host_workaround_x1`]).
    HostWorkaround {
        id: u32,
        x1: u64,
    },
}

/// SMCCC_ARCH_WORKAROUND_2's argument: a non-zero w1 asks for the Spectre-v4
/// (speculative store bypass, CVE-2018-3639) mitigation to be enabled for the caller,
/// zero asks for it to be disabled.
pub const WORKAROUND_2_ENABLE: u64 = 1;

/// The x1 the hypervisor passes to the platform firmware when the guest calls the
/// workaround `id` with `guest_x1`.
///
/// SMCCC_ARCH_WORKAROUND_2 is the only workaround with an argument, and it sets a
/// per-physical-CPU state that stays in force while EL2 runs — where the vTPM's keys
/// and the other VM state live. So the hypervisor keeps the mitigation enabled on the
/// physical CPU at all times and never forwards a disable: whatever the guest asks,
/// the firmware is told to enable (an idempotent call). A guest that asks for the
/// mitigation off merely runs with it on, which SMCCC permits — disabling it is a
/// performance request the callee may decline (firmware that mitigates permanently
/// behaves the same) — and the call still returns SUCCESS. This trades a little
/// guest store-forwarding performance for never having to toggle the mitigation on
/// every exit and entry (two firmware calls per exit for a per-vCPU state).
/// WORKAROUND_1 and _3 take no argument: x1 = 0.
pub fn host_workaround_x1(id: u32, guest_x1: u64) -> u64 {
    let _ = guest_x1;
    if id == func::SMCCC_ARCH_WORKAROUND_2 {
        WORKAROUND_2_ENABLE
    } else {
        0
    }
}

/// The answer to one call: x0..x3 for the guest and an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    pub x0: u64,
    pub action: PowerAction,
}

fn ok(x0: u64) -> CallOutcome {
    CallOutcome {
        x0,
        action: PowerAction::None,
    }
}

fn err(code: i64) -> CallOutcome {
    ok(code as u64)
}

/// Whether a function id names something this hypervisor implements (PSCI_FEATURES and
/// SMCCC_ARCH_FEATURES answer from this).
#[inline]
pub fn implemented(id: u32) -> bool {
    use func::*;
    matches!(
        id,
        SMCCC_VERSION
            | SMCCC_ARCH_FEATURES
            | PSCI_VERSION
            | PSCI_CPU_OFF
            | PSCI_CPU_ON
            | PSCI_CPU_ON_64
            | PSCI_AFFINITY_INFO
            | PSCI_AFFINITY_INFO_64
            | PSCI_MIGRATE_INFO_TYPE
            | PSCI_SYSTEM_OFF
            | PSCI_SYSTEM_RESET
            | PSCI_FEATURES
    )
}

/// The x0 of the calls whose answer depends on the function identifier (the low
/// 32 bits of `x0`) alone, no argument and no VM or host state: SMCCC_VERSION,
/// PSCI_VERSION, PSCI_MIGRATE_INFO_TYPE. `None` for every other call, which
/// [`handle_call`] answers. Lets the exit path answer these before any other work.
#[inline(always)]
pub fn stateless_result(x0: u64) -> Option<u64> {
    use func::*;
    match x0 as u32 {
        SMCCC_VERSION => Some(SMCCC_VERSION_1_1),
        PSCI_VERSION => Some(PSCI_VERSION_1_1),
        PSCI_MIGRATE_INFO_TYPE => Some(MIGRATE_INFO_TYPE_NOT_REQUIRED),
        _ => None,
    }
}

/// Handles one SMCCC call made with `x` = x0..x3.
#[inline]
pub fn handle_call(x: [u64; 4], topo: &dyn PowerTopology, host: &dyn HostFirmware) -> CallOutcome {
    use func::*;
    // SMCCC: the function identifier is the low 32 bits of x0.
    let id = x[0] as u32;
    // SMC32/HVC32 calls pass 32-bit arguments.
    let smc64 = id & (1 << 30) != 0;
    let arg = |i: usize| if smc64 { x[i] } else { x[i] & 0xffff_ffff };
    if let Some(x0) = stateless_result(x[0]) {
        return ok(x0);
    }
    match id {
        SMCCC_ARCH_FEATURES => {
            let q = arg(1) as u32;
            match q {
                SMCCC_ARCH_WORKAROUND_1 | SMCCC_ARCH_WORKAROUND_2 | SMCCC_ARCH_WORKAROUND_3 => {
                    err(host.arch_features(q))
                }
                q if implemented(q) => ok(0),
                _ => err(ret::NOT_SUPPORTED),
            }
        }
        SMCCC_ARCH_WORKAROUND_1 | SMCCC_ARCH_WORKAROUND_2 | SMCCC_ARCH_WORKAROUND_3 => {
            if host.arch_features(id) == ret::SUCCESS {
                if id == SMCCC_ARCH_WORKAROUND_2 && arg(1) as u32 == 0 {
                    log::debug!("SMCCC_ARCH_WORKAROUND_2(disable): the mitigation stays enabled");
                }
                CallOutcome {
                    x0: 0,
                    action: PowerAction::HostWorkaround {
                        id,
                        x1: host_workaround_x1(id, arg(1)),
                    },
                }
            } else {
                err(ret::NOT_SUPPORTED)
            }
        }
        PSCI_FEATURES => {
            let q = arg(1) as u32;
            // SMCCC_VERSION is discoverable through PSCI_FEATURES (SMCCC 1.1 §7.1).
            if implemented(q) {
                ok(0)
            } else {
                err(ret::NOT_SUPPORTED)
            }
        }
        PSCI_CPU_ON | PSCI_CPU_ON_64 => {
            let Some(target) = topo.vcpu_by_mpidr(arg(1) & MPIDR_AFFINITY_MASK) else {
                log::warn!("PSCI CPU_ON: no vCPU has MPIDR {:#x}", arg(1));
                return err(ret::INVALID_PARAMETERS);
            };
            let busy = |state: CpuPower| match state {
                CpuPower::On => {
                    log::warn!("PSCI CPU_ON: vCPU {target} is already on");
                    err(ret::ALREADY_ON)
                }
                CpuPower::OnPending => {
                    log::warn!("PSCI CPU_ON: vCPU {target} is already starting");
                    err(ret::ON_PENDING)
                }
                CpuPower::Off => err(ret::INTERNAL_FAILURE),
            };
            match topo.power(target) {
                CpuPower::Off => {}
                state => return busy(state),
            }
            if !topo.valid_entry(arg(2)) {
                log::warn!("PSCI CPU_ON: entry {:#x} is not guest RAM", arg(2));
                return err(ret::INVALID_ADDRESS);
            }
            // The claim is what decides: another vCPU may have started the target
            // since its state was read.
            match topo.claim_start(target) {
                Ok(()) => CallOutcome {
                    x0: 0,
                    action: PowerAction::CpuOn {
                        target,
                        entry: arg(2),
                        context_id: arg(3),
                    },
                },
                Err(state) => busy(state),
            }
        }
        PSCI_CPU_OFF => CallOutcome {
            x0: ret::DENIED as u64,
            action: PowerAction::CpuOff,
        },
        PSCI_AFFINITY_INFO | PSCI_AFFINITY_INFO_64 => {
            if arg(2) != 0 {
                return err(ret::INVALID_PARAMETERS);
            }
            match topo.vcpu_by_mpidr(arg(1) & MPIDR_AFFINITY_MASK) {
                Some(i) => ok(topo.power(i) as u64),
                None => err(ret::INVALID_PARAMETERS),
            }
        }
        PSCI_SYSTEM_OFF => CallOutcome {
            x0: 0,
            action: PowerAction::SystemOff,
        },
        PSCI_SYSTEM_RESET => CallOutcome {
            x0: 0,
            action: PowerAction::SystemReset,
        },
        _ => {
            log::debug!("SMCCC call {id:#x} not supported");
            err(ret::NOT_SUPPORTED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Vm {
        mpidrs: [u64; 2],
        power: [core::cell::Cell<CpuPower>; 2],
    }
    impl PowerTopology for Vm {
        fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
            self.mpidrs.iter().position(|m| *m == mpidr)
        }
        fn power(&self, idx: usize) -> CpuPower {
            self.power[idx].get()
        }
        fn claim_start(&self, idx: usize) -> Result<(), CpuPower> {
            match self.power[idx].get() {
                CpuPower::Off => {
                    self.power[idx].set(CpuPower::OnPending);
                    Ok(())
                }
                other => Err(other),
            }
        }
        fn valid_entry(&self, ipa: u64) -> bool {
            (0x4000_0000..0x6000_0000).contains(&ipa)
        }
    }
    struct Fw;
    impl HostFirmware for Fw {
        fn arch_features(&self, id: u32) -> i64 {
            if id == func::SMCCC_ARCH_WORKAROUND_1 {
                ret::SUCCESS
            } else {
                ret::NOT_SUPPORTED
            }
        }
    }
    fn vm() -> Vm {
        Vm {
            mpidrs: [0, 1],
            power: [
                core::cell::Cell::new(CpuPower::On),
                core::cell::Cell::new(CpuPower::Off),
            ],
        }
    }
    fn call(x: [u64; 4]) -> CallOutcome {
        handle_call(x, &vm(), &Fw)
    }
    const NS: u64 = ret::NOT_SUPPORTED as u64;

    #[test]
    fn versions() {
        assert_eq!(call([func::PSCI_VERSION as u64, 0, 0, 0]).x0, 0x1_0001);
        assert_eq!(call([func::SMCCC_VERSION as u64, 0, 0, 0]).x0, 0x1_0001);
        assert_eq!(call([func::PSCI_MIGRATE_INFO_TYPE as u64, 0, 0, 0]).x0, 2);
    }

    #[test]
    fn features() {
        let f = |id: u32| call([func::PSCI_FEATURES as u64, id as u64, 0, 0]).x0;
        assert_eq!(f(func::PSCI_CPU_ON_64), 0);
        assert_eq!(f(func::PSCI_SYSTEM_OFF), 0);
        assert_eq!(f(func::PSCI_CPU_SUSPEND), NS);
        assert_eq!(f(0x1234), NS);
        assert_eq!(
            f(func::SMCCC_VERSION),
            0,
            "SMCCC 1.1 is discovered through PSCI_FEATURES"
        );
        let a = |id: u32| call([func::SMCCC_ARCH_FEATURES as u64, id as u64, 0, 0]).x0;
        assert_eq!(a(func::SMCCC_ARCH_WORKAROUND_1), 0);
        assert_eq!(a(func::SMCCC_ARCH_WORKAROUND_2), NS);
        assert_eq!(a(func::PSCI_VERSION), 0);
    }

    #[test]
    fn cpu_on_validation() {
        let on = |mpidr: u64, entry: u64| call([func::PSCI_CPU_ON_64 as u64, mpidr, entry, 7]);
        assert_eq!(on(5, 0x4000_0000).x0, ret::INVALID_PARAMETERS as u64);
        assert_eq!(on(0, 0x4000_0000).x0, ret::ALREADY_ON as u64);
        assert_eq!(on(1, 0x10).x0, ret::INVALID_ADDRESS as u64);
        assert_eq!(
            on(1, 0x4008_0000),
            CallOutcome {
                x0: 0,
                action: PowerAction::CpuOn {
                    target: 1,
                    entry: 0x4008_0000,
                    context_id: 7
                }
            }
        );
        let pending = vm();
        pending.power[1].set(CpuPower::OnPending);
        assert_eq!(
            handle_call(
                [func::PSCI_CPU_ON_64 as u64, 1, 0x4000_0000, 0],
                &pending,
                &Fw
            )
            .x0,
            ret::ON_PENDING as u64
        );
        // SMC32 form truncates arguments: MPIDR 1 with garbage in the top half still names vCPU 1.
        assert_eq!(
            call([
                func::PSCI_CPU_ON as u64,
                0xdead_0000_0000_0001,
                0x4000_0000,
                0
            ])
            .x0,
            0
        );
    }

    #[test]
    fn cpu_on_claims_its_target_once() {
        // Two vCPUs racing CPU_ON on one target: exactly one starts it, the other
        // sees it starting; and the claim leaves the target ON_PENDING.
        let vm = vm();
        let on = |entry: u64| handle_call([func::PSCI_CPU_ON_64 as u64, 1, entry, 0], &vm, &Fw);
        assert!(matches!(
            on(0x4000_0000).action,
            PowerAction::CpuOn { target: 1, .. }
        ));
        assert_eq!(vm.power[1].get(), CpuPower::OnPending);
        let second = on(0x4000_1000);
        assert_eq!(second.x0, ret::ON_PENDING as u64);
        assert_eq!(second.action, PowerAction::None);
    }

    #[test]
    fn cpu_on_of_a_refused_entry_claims_nothing() {
        let vm = vm();
        let out = handle_call([func::PSCI_CPU_ON_64 as u64, 1, 0x10, 0], &vm, &Fw);
        assert_eq!(out.x0, ret::INVALID_ADDRESS as u64);
        assert_eq!(vm.power[1].get(), CpuPower::Off);
    }

    #[test]
    fn affinity_info() {
        let a = |mpidr: u64, lvl: u64| call([func::PSCI_AFFINITY_INFO_64 as u64, mpidr, lvl, 0]).x0;
        assert_eq!(a(0, 0), 0);
        assert_eq!(a(1, 0), 1);
        assert_eq!(a(9, 0), ret::INVALID_PARAMETERS as u64);
        assert_eq!(a(0, 1), ret::INVALID_PARAMETERS as u64);
    }

    #[test]
    fn lifecycle_actions() {
        assert_eq!(
            call([func::PSCI_SYSTEM_OFF as u64, 0, 0, 0]).action,
            PowerAction::SystemOff
        );
        assert_eq!(
            call([func::PSCI_SYSTEM_RESET as u64, 0, 0, 0]).action,
            PowerAction::SystemReset
        );
        assert_eq!(
            call([func::PSCI_CPU_OFF as u64, 0, 0, 0]).action,
            PowerAction::CpuOff
        );
        assert_eq!(
            call([func::SMCCC_ARCH_WORKAROUND_1 as u64, 0, 0, 0]).action,
            PowerAction::HostWorkaround {
                id: func::SMCCC_ARCH_WORKAROUND_1,
                x1: 0
            }
        );
    }

    /// Firmware that implements every workaround.
    struct AllFw;
    impl HostFirmware for AllFw {
        fn arch_features(&self, _id: u32) -> i64 {
            ret::SUCCESS
        }
    }

    #[test]
    fn workaround_2_is_forwarded_as_enable_whatever_the_guest_asks() {
        let wa2 = |x1: u64| {
            handle_call(
                [func::SMCCC_ARCH_WORKAROUND_2 as u64, x1, 0, 0],
                &vm(),
                &AllFw,
            )
        };
        for x1 in [0, 1, 2, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            assert_eq!(
                wa2(x1),
                CallOutcome {
                    x0: 0,
                    action: PowerAction::HostWorkaround {
                        id: func::SMCCC_ARCH_WORKAROUND_2,
                        x1: WORKAROUND_2_ENABLE
                    }
                },
                "guest x1 = {x1:#x}"
            );
        }
        // WORKAROUND_1 and _3 carry no argument, whatever is in x1.
        for id in [func::SMCCC_ARCH_WORKAROUND_1, func::SMCCC_ARCH_WORKAROUND_3] {
            assert_eq!(
                handle_call([id as u64, 0x55, 0, 0], &vm(), &AllFw).action,
                PowerAction::HostWorkaround { id, x1: 0 }
            );
        }
        // Firmware without WORKAROUND_2: NOT_SUPPORTED and nothing forwarded.
        assert_eq!(
            call([func::SMCCC_ARCH_WORKAROUND_2 as u64, 0, 0, 0]),
            CallOutcome {
                x0: NS,
                action: PowerAction::None
            }
        );
    }

    proptest! {
        /// The calls answered from the identifier alone (the exit path's fast
        /// path) give the specifications' values (SMCCC 1.1, PSCI 1.1, "migration
        /// not required") through both entry points whatever x0's upper half and the
        /// arguments, and ask for no action; no other id is answered that way.
        #[test]
        fn stateless_results_ignore_upper_bits_and_arguments(id in prop_oneof![
            Just(func::SMCCC_VERSION), Just(func::PSCI_VERSION), Just(func::PSCI_MIGRATE_INFO_TYPE),
            Just(func::PSCI_FEATURES), Just(func::SMCCC_ARCH_FEATURES), any::<u32>()
        ], hi in any::<u32>(), a in any::<u64>(), b in any::<u64>()) {
            let x0 = u64::from(hi) << 32 | u64::from(id);
            let want = match id {
                func::SMCCC_VERSION | func::PSCI_VERSION => Some(0x1_0001),
                func::PSCI_MIGRATE_INFO_TYPE => Some(2),
                _ => None,
            };
            prop_assert_eq!(stateless_result(x0), want);
            if let Some(r) = want {
                prop_assert_eq!(call([x0, a, b, 0]), CallOutcome { x0: r, action: PowerAction::None });
            }
        }

        /// Any function id we do not implement answers NOT_SUPPORTED and asks for nothing.
        #[test]
        fn random_ids_are_not_supported(id in any::<u32>(), a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(!implemented(id));
            prop_assume!(!matches!(id, func::SMCCC_ARCH_WORKAROUND_1 | func::SMCCC_ARCH_WORKAROUND_2 | func::SMCCC_ARCH_WORKAROUND_3));
            let out = call([id as u64 | 0xffff_ffff_0000_0000, a, b, 0]);
            prop_assert_eq!(out, CallOutcome { x0: NS, action: PowerAction::None });
        }

        /// No call of any id with any arguments makes the hypervisor forward
        /// SMCCC_ARCH_WORKAROUND_2 with a disable: EL2 never runs with the Spectre-v4
        /// mitigation off.
        #[test]
        fn never_forwards_a_workaround_2_disable(id in prop_oneof![Just(func::SMCCC_ARCH_WORKAROUND_2), any::<u32>()],
                                                 hi in any::<u32>(), x1 in any::<u64>(), x2 in any::<u64>()) {
            let x0 = u64::from(hi) << 32 | u64::from(id);
            let out = handle_call([x0, x1, x2, 0], &vm(), &AllFw);
            if let PowerAction::HostWorkaround { id: fwd, x1: fx1 } = out.action {
                if fwd == func::SMCCC_ARCH_WORKAROUND_2 {
                    prop_assert_eq!(fx1, WORKAROUND_2_ENABLE);
                }
            }
        }
    }
}
