//! Exit dispatch: every trap of a guest is decoded into an [`arch::Exit`] and handled
//! here, in one place. A guest can never bring the hypervisor down from here: bad
//! requests get the architected answer (SMCCC NOT_SUPPORTED, an injected abort or
//! undefined-instruction exception) and a log line.

use arch::exit::{AbortKind, Exit, MmioAccess};
use arch::inject::{inject, is_external_abort, skip_instruction, GuestPoint, Injection};
use arch::smccc::{handle_call, CpuPower, PowerAction, PowerTopology};
use arch::sysreg::{id, sanitise_id, SysReg, SysRegAccess};
use arch::timer::EmulatedTimer;
use vdev::{AccessSize, MmioContext, MmioError};

use crate::el1::{read_id_register, read_sysreg, write_sysreg};
use crate::vm::{StartRequest, StopReason, Vcpu, Vm};

/// What the run loop does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop(StopReason),
    /// The vCPU called PSCI CPU_OFF: its physical CPU powers down.
    CpuOff,
}

/// GIC system registers that trap to EL2 while ICH_HCR_EL2.En and HCR_EL2.IMO are set:
/// the SGI generation registers.
const ICC_SGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 5);
const ICC_ASGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 6);
const ICC_SGI0R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 7);

/// Moves the guest past the instruction that trapped with syndrome `esr` (2 bytes
/// for a 16-bit T32 instruction, 4 otherwise: ESR_EL2.IL).
fn skip(vcpu: &mut Vcpu, esr: u64) {
    vcpu.regs.pc = skip_instruction(vcpu.regs.pc, vcpu.regs.pstate, esr);
}

/// Writes guest register `r` (31 is XZR: writes vanish).
fn set_reg(vcpu: &mut Vcpu, r: u8, v: u64) {
    if r < 31 {
        vcpu.regs.x[r as usize] = v;
    }
}

fn get_reg(vcpu: &Vcpu, r: u8) -> u64 {
    if r < 31 {
        vcpu.regs.x[r as usize]
    } else {
        0
    }
}

/// Injects a synchronous exception into the guest's EL1, at the instruction that
/// trapped (whose address is the current guest PC).
fn inject_exception(vcpu: &mut Vcpu, what: Injection) {
    vcpu.stats.injected += 1;
    let e = inject(
        what,
        GuestPoint {
            pc: vcpu.regs.pc,
            pstate: vcpu.regs.pstate,
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
    vcpu.regs.pc = e.pc;
    vcpu.regs.pstate = e.pstate;
}

/// Handles a synchronous exit of `vcpu`. Hypercalls and MMIO accesses, the most
/// frequent exits, skip the general decoder.
#[inline(always)]
pub fn handle_sync(vm: &Vm, vcpu: &mut Vcpu) -> Flow {
    let esr = read_sysreg!("ESR_EL2");
    // EC and the immediate in one test: HVC #0, checked first.
    if arch::exit::is_hvc0(esr) {
        vcpu.stats.hvc += 1;
        // Calls answered from the function identifier alone need nothing else.
        if let Some(x0) = arch::smccc::stateless_result(vcpu.regs.x[0]) {
            vcpu.regs.x[0] = x0;
            return Flow::Continue;
        }
        return smccc(vm, vcpu);
    }
    if arch::exit::is_data_abort_lower(esr) && mmio_fast(vm, vcpu, esr) {
        return Flow::Continue;
    }
    handle_other_sync(vm, vcpu, esr)
}

/// The MMIO fast path: a translation fault outside guest RAM by a single load or
/// store with a valid syndrome ([`arch::exit::decode_mmio`]), which is exactly the
/// case the general path ([`data_abort`]) sends to [`mmio`] after its checks.
/// Returns false, having done nothing, for any other data abort.
#[inline(always)]
fn mmio_fast(vm: &Vm, vcpu: &mut Vcpu, esr: u64) -> bool {
    let far = read_sysreg!("FAR_EL2");
    let hpfar = read_sysreg!("HPFAR_EL2");
    match arch::exit::decode_mmio(esr, far, hpfar) {
        Some(m) if !vm.ram.contains(m.ipa) => {
            mmio(vm, vcpu, esr, m.ipa, m.va.unwrap_or(0), m.access);
            true
        }
        _ => false,
    }
}

#[inline(never)]
fn handle_other_sync(vm: &Vm, vcpu: &mut Vcpu, esr: u64) -> Flow {
    let far = read_sysreg!("FAR_EL2");
    let hpfar = read_sysreg!("HPFAR_EL2");
    match arch::decode(esr, far, hpfar) {
        Exit::Hvc { imm } => {
            vcpu.stats.hvc += 1;
            if imm != 0 {
                log::warn!(
                    "{}: HVC #{imm:#x} at {:#x}: only HVC #0 is defined; NOT_SUPPORTED",
                    vm.name,
                    vcpu.regs.pc
                );
                set_reg(vcpu, 0, arch::smccc::ret::NOT_SUPPORTED as u64);
                return Flow::Continue;
            }
            smccc(vm, vcpu)
        }
        Exit::Smc { .. } => {
            vcpu.stats.smc += 1;
            // A trapped SMC returns to the SMC itself; the call completes past it.
            skip(vcpu, esr);
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
            data_abort(
                vm,
                vcpu,
                esr,
                ipa,
                va.unwrap_or(0),
                kind,
                access,
                write,
                s1ptw,
            );
            Flow::Continue
        }
        Exit::InstructionAbort { ipa, va, kind, .. } => {
            if kind == AbortKind::Translation
                && vm.ram.contains(ipa)
                && vm.ram.ensure(ipa, 1).is_ok()
            {
                return Flow::Continue;
            }
            // The fetch's stage-1 walk updating a descriptor (hardware Access flag)
            // in a page dirty logging made read-only: logged, writable again.
            if kind == AbortKind::Permission && vm.ram.write_fault(ipa) {
                return Flow::Continue;
            }
            log::warn!(
                "{}: instruction fetch from IPA {ipa:#x} (VA {:#x}, {kind:?}) at PC {:#x}: not executable guest memory; abort injected",
                vm.name,
                va.unwrap_or(0),
                vcpu.regs.pc
            );
            inject_exception(
                vcpu,
                Injection::InstructionAbort {
                    far: va.unwrap_or(0),
                },
            );
            Flow::Continue
        }
        Exit::SysReg(acc) => {
            vcpu.stats.sysreg += 1;
            sysreg(vm, vcpu, esr, acc);
            Flow::Continue
        }
        Exit::Wfx { wfe, timeout_reg } => {
            vcpu.stats.wfi += 1;
            skip(vcpu, esr);
            // WFE and WFET return at once (an event may always have been pending),
            // after giving the CPU to a waiting vCPU (WFE traps only when vCPUs
            // outnumber CPUs: the one spinning may wait for one not running).
            // WFIT waits like WFI but no later than its timeout (a CNTVCT_EL0 value).
            if wfe {
                crate::smp::yield_on_wfe(vm, vcpu);
            } else {
                let timeout = timeout_reg.map(|r| get_reg(vcpu, r));
                crate::wait::wfi(vm, vcpu, timeout);
            }
            Flow::Continue
        }
        Exit::Other { ec, iss } => {
            log::warn!(
                "{}: unhandled trap EC {ec:#04x} ISS {iss:#x} at PC {:#x}; undefined instruction injected",
                vm.name,
                vcpu.regs.pc
            );
            inject_exception(vcpu, Injection::Undefined);
            Flow::Continue
        }
    }
}

fn sysreg(vm: &Vm, vcpu: &mut Vcpu, esr: u64, acc: SysRegAccess) {
    let enc = acc.encoding();
    if enc.is_id_group3() && acc.read {
        let hw = read_id_register(enc.crm, enc.op2);
        let pmu = enc != id::ID_AA64DFR0_EL1
            || arch::controls::guest_has_pmu(hw, crate::vm::pmu_policy());
        let v = sanitise_id(enc, hw, vm.ipa_bits(), pmu);
        set_reg(vcpu, acc.reg, v);
    } else if EmulatedTimer::owns(enc) {
        let now = read_sysreg!("CNTPCT_EL0");
        if acc.read {
            let v = vcpu.ptimer.read(enc, now);
            set_reg(vcpu, acc.reg, v);
        } else {
            vcpu.ptimer.write(enc, get_reg(vcpu, acc.reg), now);
            crate::wait::update_ptimer(vm, vcpu);
        }
    } else if matches!(enc, ICC_SGI1R_EL1 | ICC_ASGI1R_EL1 | ICC_SGI0R_EL1) && !acc.read {
        let value = get_reg(vcpu, acc.reg);
        if let Err(e) = vm.vgic.lock().send_sgi(vcpu.idx, value) {
            log::warn!(
                "{}: vCPU {} SGI write {value:#x} refused: {e:?}",
                vm.name,
                vcpu.idx
            );
        }
        vm.deliver_kicks(vcpu.idx);
    } else {
        log::warn!(
            "{}: {} of system register {enc} at PC {:#x} is not available to guests; undefined instruction injected",
            vm.name,
            if acc.read { "read" } else { "write" },
            vcpu.regs.pc
        );
        inject_exception(vcpu, Injection::Undefined);
        return;
    }
    skip(vcpu, esr);
}

#[inline(always)]
fn smccc(vm: &Vm, vcpu: &mut Vcpu) -> Flow {
    // The authority ABI answers the authority partition alone; for any other
    // caller its range falls through to NOT_SUPPORTED below.
    if authority_abi::in_range(vcpu.regs.x[0] as u32)
        && vcpu.regs.x[0] >> 32 == 0
        && crate::authority::is(vm)
    {
        crate::authority::call(vm, vcpu);
        return Flow::Continue;
    }
    let x = &vcpu.regs.x;
    let args = [x[0], x[1], x[2], x[3]];
    let out = handle_call(args, vm, &crate::power::Firmware);
    set_reg(vcpu, 0, out.x0);
    match out.action {
        PowerAction::None => Flow::Continue,
        PowerAction::SystemOff => {
            log::info!("{}: PSCI SYSTEM_OFF from vCPU {}", vm.name, vcpu.idx);
            Flow::Stop(StopReason::PoweredOff)
        }
        PowerAction::SystemReset => {
            log::info!("{}: PSCI SYSTEM_RESET from vCPU {}", vm.name, vcpu.idx);
            Flow::Stop(StopReason::Reset)
        }
        PowerAction::CpuOff => {
            let others_on = (0..vm.vcpus()).any(|i| i != vcpu.idx && vm.power(i) != CpuPower::Off);
            if !others_on {
                log::info!("{}: last vCPU called CPU_OFF", vm.name);
                return Flow::Stop(StopReason::PoweredOff);
            }
            log::info!("{}: vCPU {} off", vm.name, vcpu.idx);
            Flow::CpuOff
        }
        PowerAction::CpuOn {
            target,
            entry,
            context_id,
        } => {
            // The claim in `handle_call` made the target ON_PENDING: no other
            // vCPU can start it now. A vCPU is OFF only once its last run has
            // left its stack (`smp`), so the run queue takes it.
            *vm.start[target].lock() = Some(StartRequest {
                entry,
                x0: context_id,
            });
            if let Err(code) = crate::smp::start_vcpu(vm, target, false) {
                log::error!("{}: vCPU {target} did not start (PSCI {code})", vm.name,);
                vm.start[target].lock().take();
                vm.set_power(target, CpuPower::Off);
                set_reg(vcpu, 0, arch::smccc::ret::INTERNAL_FAILURE as u64);
            }
            Flow::Continue
        }
        PowerAction::HostWorkaround { id, x1 } => {
            crate::power::firmware_call(u64::from(id), x1, 0, 0);
            Flow::Continue
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn data_abort(
    vm: &Vm,
    vcpu: &mut Vcpu,
    esr: u64,
    ipa: u64,
    far: u64,
    kind: AbortKind,
    access: Option<MmioAccess>,
    write: bool,
    s1ptw: bool,
) {
    let fail = |vcpu: &mut Vcpu, why: core::fmt::Arguments| refuse(vm, vcpu, ipa, far, write, why);
    // First touch of a guest RAM block (by the guest or its own table walk):
    // populate it and let the guest retry the access.
    if kind == AbortKind::Translation && vm.ram.contains(ipa) && vm.ram.ensure(ipa, 1).is_ok() {
        return;
    }
    // A write to guest RAM that dirty logging made read-only: logged, writable again.
    if kind == AbortKind::Permission && vm.ram.write_fault(ipa) {
        return;
    }
    if s1ptw {
        return fail(
            vcpu,
            format_args!("the guest's own page-table walk left its RAM"),
        );
    }
    // A firmware VM's flash banks are mapped read-only: a write to the variable
    // store is a command for its model on the bus; the code bank ignores writes.
    if kind == AbortKind::Permission && write && !vm.ram.contains(ipa) && vm.firmware.is_some() {
        if crate::firmware::in_code_bank(ipa) {
            // As on QEMU, whose read-only flash takes the write as an unknown
            // command and stays in read-array mode: nothing changes.
            log::warn!(
                "{}: write to the firmware code bank at IPA {ipa:#x} (PC {:#x}): read-only flash, ignored",
                vm.name,
                vcpu.regs.pc
            );
            return skip(vcpu, esr);
        }
        if let Some(a) = access {
            return mmio(vm, vcpu, esr, ipa, far, a);
        }
    }
    if kind != AbortKind::Translation || vm.ram.contains(ipa) {
        // With HCR_EL2.TEA a synchronous external abort the hardware reports on a
        // guest access arrives here too, and is injected back like any other.
        let what = match kind {
            AbortKind::Other(code) if is_external_abort(code) => "external abort from the hardware",
            _ => "fault on guest RAM",
        };
        return fail(vcpu, format_args!("{kind:?} {what}"));
    }
    let Some(a) = access else {
        return fail(
            vcpu,
            format_args!(
                "MMIO access without a valid syndrome (e.g. a load/store pair or writeback)"
            ),
        );
    };
    mmio(vm, vcpu, esr, ipa, far, a);
}

/// Logs a refused guest access and injects a data abort for it.
#[cold]
#[inline(never)]
fn refuse(vm: &Vm, vcpu: &mut Vcpu, ipa: u64, far: u64, write: bool, why: core::fmt::Arguments) {
    log::warn!(
        "{}: {} IPA {ipa:#x} (VA {far:#x}) at PC {:#x}: {why}; data abort injected",
        vm.name,
        if write { "write to" } else { "read of" },
        vcpu.regs.pc
    );
    inject_exception(vcpu, Injection::DataAbort { far, write });
}

/// One emulated MMIO access `a` at `ipa` (outside guest RAM): the owning device is
/// looked up without a lock and locked alone for the call.
fn mmio(vm: &Vm, vcpu: &mut Vcpu, esr: u64, ipa: u64, far: u64, a: MmioAccess) {
    let Some(size) = AccessSize::from_log2(a.bytes.trailing_zeros() as u8) else {
        return refuse(
            vm,
            vcpu,
            ipa,
            far,
            a.write,
            format_args!("impossible access size {}", a.bytes),
        );
    };
    vcpu.stats.mmio += 1;
    let value = a.write.then(|| get_reg(vcpu, a.reg) & size.mask());
    let mut irq = crate::vm::VgicSink::new(&vm.vgic);
    let mut mem = vm.ram;
    let mut ctx = MmioContext {
        vcpu: vcpu.idx,
        mem: &mut mem,
        irq: &mut irq,
    };
    // Each arm completes the access itself, so that the device's result is read
    // where the device left it rather than first moved into one merged value.
    if (boards::guest::PL011_BASE..boards::guest::PL011_BASE + boards::guest::PL011_SIZE)
        .contains(&ipa)
    {
        let r = pl011_access(vm, &mut ctx, ipa - boards::guest::PL011_BASE, size, value);
        complete(vm, vcpu, esr, ipa, far, a, irq.touched, r);
    } else {
        match vm.bus.access(&mut ctx, ipa, size, value) {
            Some(r) => complete(vm, vcpu, esr, ipa, far, a, irq.touched, r),
            None => {
                if a.write && vm.is_gic(ipa) {
                    vm.deliver_kicks(vcpu.idx);
                }
                refuse(
                    vm,
                    vcpu,
                    ipa,
                    far,
                    a.write,
                    format_args!("no device at this address"),
                )
            }
        }
    }
}

/// Finishes an MMIO access a device answered with `result`: kicks the vCPUs whose
/// interrupt state may have changed (`touched`: a device drove a line), then
/// completes the guest's load or store, or refuses it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn complete(
    vm: &Vm,
    vcpu: &mut Vcpu,
    esr: u64,
    ipa: u64,
    far: u64,
    a: MmioAccess,
    touched: bool,
    result: Result<u64, MmioError>,
) {
    // Interrupt state changed if a device drove a line or the guest wrote its GIC.
    if touched || (a.write && vm.is_gic(ipa)) {
        vm.deliver_kicks(vcpu.idx);
    }
    match result {
        Ok(v) => {
            if !a.write {
                set_reg(vcpu, a.reg, a.load_result(v));
            }
            skip(vcpu, esr);
        }
        Err(e) => refuse_device(vm, vcpu, ipa, far, a.write, &e),
    }
}

/// [`refuse`] for an access the device refused with `e`.
#[cold]
#[inline(never)]
fn refuse_device(vm: &Vm, vcpu: &mut Vcpu, ipa: u64, far: u64, write: bool, e: &MmioError) {
    refuse(
        vm,
        vcpu,
        ipa,
        far,
        write,
        format_args!("device refused the access: {e:?}"),
    );
}

/// One guest access at `offset` into its PL011 (the device the bus also holds, at
/// the same range), served under the UART's own lock alone, which the console pump
/// shares: a read of DR or FR first moves waiting host input into the guest's FIFO,
/// so a guest polling its UART sees input without waiting for an interrupt; after
/// any access that may have made room while the host UART's interrupt is silenced,
/// the pump runs again to hand it more.
#[inline(always)]
fn pl011_access(
    vm: &Vm,
    ctx: &mut MmioContext,
    offset: u64,
    size: AccessSize,
    value: Option<u64>,
) -> Result<u64, MmioError> {
    use devices::pl011::reg;
    use vdev::MmioDevice;
    if offset == reg::DR && value == Some(u64::from(b'@')) {
        crate::latstat::mark(crate::latstat::Mark::GuestAt);
    }
    let mut uart = vm.uart.0.lock();
    let r = match value {
        Some(v) => uart.write(ctx, offset, size, v).map(|()| 0),
        None => {
            if offset == reg::DR || offset == reg::FR {
                crate::wait::pump_console_locked(vm, &mut uart);
            }
            uart.read(ctx, offset, size)
        }
    };
    if crate::wait::console_rx_waiting() {
        crate::wait::pump_console_locked(vm, &mut uart);
    }
    r
}

/// Handles an SError taken while a guest ran: the guest gets a virtual SError.
pub fn handle_serror(vm: &Vm, vcpu: &mut Vcpu) -> Flow {
    let esr = read_sysreg!("ESR_EL2");
    log::warn!(
        "{}: SError (ESR_EL2 {esr:#x}) while vCPU {} ran; virtual SError injected",
        vm.name,
        vcpu.idx
    );
    write_sysreg!(
        "HCR_EL2",
        read_sysreg!("HCR_EL2") | aarch64_cpu::registers::HCR_EL2::VSE::SET.value
    );
    Flow::Continue
}

/// Puts `vcpu` at its architectural reset state, to start at `req.entry` with `x0`,
/// in EL1h with interrupts masked and the MMU off.
pub fn reset_vcpu(vcpu: &mut Vcpu, req: StartRequest) {
    vcpu.regs = Default::default();
    vcpu.regs.x[0] = req.x0;
    vcpu.regs.pc = req.entry;
    vcpu.regs.pstate = arch::inject::START_PSTATE;
    vcpu.el1 = crate::el1::El1Context::reset();
    vcpu.ptimer = EmulatedTimer::default();
    vcpu.lrs = crate::vm::LrState::EMPTY;
}
