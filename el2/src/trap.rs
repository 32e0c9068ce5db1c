//! Exit dispatch: every trap of a guest is decoded into an [`arch::Exit`] and handled
//! here, in one place. A guest can never bring the hypervisor down from here: bad
//! requests get the architected answer (SMCCC NOT_SUPPORTED, an injected abort or
//! undefined-instruction exception) and a log line.

use arch::exit::{AbortKind, Exit, MmioAccess};
use arch::inject::{inject, GuestPoint, Injection};
use arch::smccc::{handle_call, PowerAction};
use arch::sysreg::sanitise_id;
use vdev::{AccessSize, MmioContext, NullInterrupts};

use crate::el1::{read_id_register, read_sysreg, write_sysreg};
use crate::vm::{StopReason, Vm};

/// What the run loop does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop(StopReason),
}

/// Length of an A64 instruction.
const INSN: u64 = 4;
/// PSTATE mode bits of EL1h, and all of DAIF.
const PSTATE_EL1H_DAIF: u64 = 0x3c5;

/// Writes guest register `r` (31 is XZR: writes vanish).
fn set_reg(vm: &mut Vm, vcpu: usize, r: u8, v: u64) {
    if r < 31 {
        vm.vcpus[vcpu].regs.x[r as usize] = v;
    }
}

fn get_reg(vm: &Vm, vcpu: usize, r: u8) -> u64 {
    if r < 31 {
        vm.vcpus[vcpu].regs.x[r as usize]
    } else {
        0
    }
}

/// Injects a synchronous exception into the guest's EL1, at the instruction that
/// trapped (whose address is the current guest PC).
fn inject_exception(vm: &mut Vm, vcpu: usize, what: Injection) {
    vm.stats.injected += 1;
    let regs = &mut vm.vcpus[vcpu].regs;
    let e = inject(
        what,
        GuestPoint {
            pc: regs.pc,
            pstate: regs.pstate,
            vbar_el1: read_sysreg!("VBAR_EL1"),
            sctlr_el1: read_sysreg!("SCTLR_EL1"),
        },
    );
    write_sysreg!("ELR_EL1", e.elr_el1);
    write_sysreg!("SPSR_EL1", e.spsr_el1);
    write_sysreg!("ESR_EL1", e.esr_el1);
    if let Some(far) = e.far_el1 {
        write_sysreg!("FAR_EL1", far);
    }
    regs.pc = e.pc;
    regs.pstate = e.pstate;
}

fn undefined(vm: &mut Vm, vcpu: usize) {
    inject_exception(vm, vcpu, Injection::Undefined);
}

/// Handles a synchronous exit of vCPU `vcpu`.
pub fn handle_sync(vm: &mut Vm, vcpu: usize) -> Flow {
    let esr = read_sysreg!("ESR_EL2");
    let far = read_sysreg!("FAR_EL2");
    let hpfar = read_sysreg!("HPFAR_EL2");
    match arch::decode(esr, far, hpfar) {
        Exit::Hvc { imm } => {
            vm.stats.hvc += 1;
            if imm != 0 {
                log::warn!(
                    "{}: HVC #{imm:#x} at {:#x}: only HVC #0 is defined; NOT_SUPPORTED",
                    vm.name,
                    vm.vcpus[vcpu].regs.pc
                );
                set_reg(vm, vcpu, 0, arch::smccc::ret::NOT_SUPPORTED as u64);
                return Flow::Continue;
            }
            smccc(vm, vcpu)
        }
        Exit::Smc { .. } => {
            vm.stats.smc += 1;
            // A trapped SMC returns to the SMC itself; the call completes past it.
            vm.vcpus[vcpu].regs.pc += INSN;
            smccc(vm, vcpu)
        }
        Exit::DataAbort {
            ipa,
            va,
            kind,
            access,
            write,
            s1ptw,
        } => {
            data_abort(vm, vcpu, ipa, va, kind, access, write, s1ptw);
            Flow::Continue
        }
        Exit::InstructionAbort { ipa, va, kind, .. } => {
            log::warn!(
                "{}: instruction fetch from IPA {ipa:#x} (VA {:#x}, {kind:?}) at PC {:#x}: not executable guest memory; abort injected",
                vm.name,
                va.unwrap_or(0),
                vm.vcpus[vcpu].regs.pc
            );
            inject_exception(
                vm,
                vcpu,
                Injection::InstructionAbort {
                    far: va.unwrap_or(0),
                },
            );
            Flow::Continue
        }
        Exit::SysReg(acc) => {
            vm.stats.sysreg += 1;
            let enc = acc.encoding();
            if enc.is_id_group3() && acc.read {
                let v = sanitise_id(enc, read_id_register(enc.crm, enc.op2), vm.ipa_bits());
                set_reg(vm, vcpu, acc.reg, v);
                vm.vcpus[vcpu].regs.pc += INSN;
            } else {
                log::warn!(
                    "{}: {} of system register {enc} at PC {:#x} is not available to guests; undefined instruction injected",
                    vm.name,
                    if acc.read { "read" } else { "write" },
                    vm.vcpus[vcpu].regs.pc
                );
                undefined(vm, vcpu);
            }
            Flow::Continue
        }
        Exit::Wfx { wfe } => {
            vm.stats.wfi += 1;
            if !wfe {
                crate::timer::wait_for_guest_timer();
            }
            vm.vcpus[vcpu].regs.pc += INSN;
            Flow::Continue
        }
        Exit::Other { ec, iss } => {
            log::warn!(
                "{}: unhandled trap EC {ec:#04x} ISS {iss:#x} at PC {:#x}; undefined instruction injected",
                vm.name,
                vm.vcpus[vcpu].regs.pc
            );
            undefined(vm, vcpu);
            Flow::Continue
        }
    }
}

fn smccc(vm: &mut Vm, vcpu: usize) -> Flow {
    let x = &vm.vcpus[vcpu].regs.x;
    let args = [x[0], x[1], x[2], x[3]];
    let out = handle_call(args, vm, &crate::power::Firmware);
    set_reg(vm, vcpu, 0, out.x0);
    match out.action {
        PowerAction::None => Flow::Continue,
        PowerAction::SystemOff => {
            log::info!("{}: PSCI SYSTEM_OFF from vCPU {vcpu}", vm.name);
            Flow::Stop(StopReason::PoweredOff)
        }
        PowerAction::SystemReset => {
            log::info!("{}: PSCI SYSTEM_RESET from vCPU {vcpu}", vm.name);
            Flow::Stop(StopReason::Reset)
        }
        PowerAction::CpuOff => {
            vm.vcpus[vcpu].power = arch::smccc::CpuPower::Off;
            if vm
                .vcpus
                .iter()
                .all(|v| v.power == arch::smccc::CpuPower::Off)
            {
                log::info!("{}: last vCPU called CPU_OFF", vm.name);
                return Flow::Stop(StopReason::PoweredOff);
            }
            Flow::Continue
        }
        PowerAction::CpuOn {
            target,
            entry,
            context_id,
        } => {
            // Secondary vCPUs need a physical CPU each (the SMP issue); until then a
            // VM has one vCPU and CPU_ON never validates a target.
            log::warn!(
                "{}: CPU_ON for vCPU {target} at {entry:#x} (ctx {context_id:#x}) refused: secondary vCPUs are not started yet",
                vm.name
            );
            set_reg(vm, vcpu, 0, arch::smccc::ret::INTERNAL_FAILURE as u64);
            Flow::Continue
        }
        PowerAction::HostWorkaround(id) => {
            crate::power::firmware_call(u64::from(id), 0, 0, 0);
            Flow::Continue
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn data_abort(
    vm: &mut Vm,
    vcpu: usize,
    ipa: u64,
    va: Option<u64>,
    kind: AbortKind,
    access: Option<MmioAccess>,
    write: bool,
    s1ptw: bool,
) {
    let pc = vm.vcpus[vcpu].regs.pc;
    let far = va.unwrap_or(0);
    let fail = |vm: &mut Vm, why: core::fmt::Arguments| {
        log::warn!(
            "{}: {} IPA {ipa:#x} (VA {far:#x}) at PC {pc:#x}: {why}; data abort injected",
            vm.name,
            if write { "write to" } else { "read of" }
        );
        inject_exception(vm, vcpu, Injection::DataAbort { far, write });
    };
    if s1ptw {
        return fail(
            vm,
            format_args!("the guest's own page-table walk left its RAM"),
        );
    }
    if kind != AbortKind::Translation || vm.ram.contains(ipa) {
        return fail(vm, format_args!("{kind:?} fault on guest RAM"));
    }
    let Some(a) = access else {
        return fail(
            vm,
            format_args!(
                "MMIO access without a valid syndrome (e.g. a load/store pair or writeback)"
            ),
        );
    };
    let Some(size) = AccessSize::from_log2(a.bytes.trailing_zeros() as u8) else {
        return fail(vm, format_args!("impossible access size {}", a.bytes));
    };
    vm.stats.mmio += 1;
    let value = if a.write {
        get_reg(vm, vcpu, a.reg) & size.mask()
    } else {
        0
    };
    let Vm { bus, ram, .. } = vm;
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu,
        mem: ram,
        irq: &mut irq,
    };
    let result = match bus.find(ipa) {
        None => return fail(vm, format_args!("no device at this address")),
        Some((dev, _name, off)) => {
            if a.write {
                dev.write(&mut ctx, off, size, value).map(|_| 0)
            } else {
                dev.read(&mut ctx, off, size)
            }
        }
    };
    match result {
        Ok(v) => {
            if !a.write {
                set_reg(vm, vcpu, a.reg, a.load_result(v));
            }
            vm.vcpus[vcpu].regs.pc += INSN;
        }
        Err(e) => fail(vm, format_args!("device refused the access: {e:?}")),
    }
}

/// Handles a physical interrupt that arrived while a guest ran.
pub fn handle_irq(vm: &mut Vm) -> Flow {
    vm.stats.irq += 1;
    while let Some(intid) = crate::gic::acknowledge() {
        if intid == boards::guest::HTIMER_INTID {
            crate::timer::disarm();
        } else {
            log::warn!("physical interrupt {intid} has no handler; ignored");
        }
        crate::gic::end(intid);
    }
    Flow::Continue
}

/// Handles an SError taken while a guest ran: the guest gets a virtual SError.
pub fn handle_serror(vm: &mut Vm, vcpu: usize) -> Flow {
    let esr = read_sysreg!("ESR_EL2");
    log::warn!(
        "{}: SError (ESR_EL2 {esr:#x}) while vCPU {vcpu} ran; virtual SError injected",
        vm.name
    );
    write_sysreg!(
        "HCR_EL2",
        read_sysreg!("HCR_EL2") | aarch64_cpu::registers::HCR_EL2::VSE::SET.value
    );
    Flow::Continue
}

/// Starts vCPU `vcpu` at `entry` with `x0` in EL1h, interrupts masked.
pub fn reset_vcpu(vm: &mut Vm, vcpu: usize, entry: u64, x0: u64) {
    let v = &mut vm.vcpus[vcpu];
    v.regs = Default::default();
    v.regs.x[0] = x0;
    v.regs.pc = entry;
    v.regs.pstate = PSTATE_EL1H_DAIF;
    v.el1 = crate::el1::El1Context::reset();
}
