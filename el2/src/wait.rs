//! What a physical CPU does between guest instructions that need time to pass or an
//! outside event: servicing physical interrupts (the guest's timers, list-register
//! maintenance, kicks from other CPUs, host console input, the system disk, the
//! physical keyboard and tablet), keeping the virtual timer's interrupt level in
//! step with the timer, and blocking a vCPU's WFI / WFIT until it has an
//! interrupt to take (or its timeout passes).
//!
//! The virtual timer runs in hardware and its interrupt is hardware-linked: the
//! physical PPI raises the vGIC line and stays active until the guest deactivates
//! the virtual one. The line must also drop when the timer stops asserting it
//! (disabled, IMASK, CVAL moved ahead) while nobody took the interrupt, as a real
//! GIC's level-sensitive input would: [`sync_vtimer`] checks that after every exit
//! on which the line is up, and then also deactivates the physical PPI the guest
//! never received, so it can fire again.

use core::sync::atomic::Ordering;

use aarch64_cpu::registers::{Readable, MPIDR_EL1};

use arch::smccc::{CpuPower, PowerTopology};
use arch::timer::{asserts_irq, vtimer_line, wfit_expired, wfit_wake_deadline, VtimerLine};
use boards::guest;

use crate::el1::read_sysreg;
use crate::vm::{Vcpu, Vm};
use crate::{gic, irq};
use devices::Pl011;

/// Physical interrupts one exit acknowledges at most.
const MAX_ACKS_PER_EXIT: usize = 32;

/// The INTID of the host console UART, if its interrupt is enabled.
static UART_INTID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(u32::MAX);

/// Records the host UART's interrupt, routed to this (the boot) CPU, so
/// `service_irqs` and [`idle`] can handle it. The boot CPU runs its scheduler for
/// the hypervisor's life, so the interrupt stays there whatever vCPUs are on.
pub fn set_uart_intid(intid: u32) {
    UART_INTID.store(intid, Ordering::Relaxed);
    gic::route_spi(intid, MPIDR_EL1.get() & arch::smccc::MPIDR_AFFINITY_MASK);
}

/// Moves bytes typed on the host console into the PL011 of the VM that owns the
/// console — the authority partition when one runs, else `vm` — through the
/// monitor's escape (`console::pump_input`). Skipped while another CPU holds
/// that PL011 (serving the owner's access): the host UART's interrupt is a
/// level, so it comes again until the bytes are taken, and a CPU never spins here
/// on a lock whose holder the emulator may not be running.
pub fn pump_console(vm: &Vm) {
    let owner = console_owner().unwrap_or(vm);
    if let Some(mut uart) = owner.uart.0.try_lock() {
        pump_console_locked(owner, &mut uart);
    }
}

/// The VM the serial console's input goes to: the authority partition when it
/// runs, else the primary guest.
fn console_owner() -> Option<&'static Vm> {
    crate::authority::get().or_else(crate::guests::primary)
}

/// [`pump_console`] with the guest's PL011 already locked (by the MMIO path, which
/// then serves the guest's access under the same lock). While nothing was typed
/// and nothing waits for the guest, this costs one host UART read. Bytes the
/// guest's receive FIFO has no room for wait in the console's queue; the guest
/// reading its UART takes them (`console_rx_waiting`).
#[inline(always)]
pub fn pump_console_locked(vm: &Vm, uart: &mut Pl011) {
    if console_owner().is_some_and(|o| !core::ptr::eq(o, vm)) {
        return; // the console is the authority partition's, or another guest's
    }
    let first = crate::console::poll_input();
    if first.is_some() || crate::console::guest_input_waiting() {
        pump_typed(vm, uart, first);
    }
}

/// [`pump_console_locked`] once something was typed (`first`) or waits.
#[inline(never)]
fn pump_typed(vm: &Vm, uart: &mut Pl011, first: Option<u8>) {
    let mut buf = [0u8; devices::pl011::RX_FIFO_DEPTH];
    let room = uart.rx_room().min(buf.len());
    let n = crate::console::pump_input(first, &mut buf[..room]);
    if n > 0 {
        uart.push_rx(&buf[..n], &mut crate::vm::VgicSink::new(&vm.vgic));
    }
}

/// Whether console input waits for the guest's UART: the MMIO path then pumps
/// after a guest access, which may have made room.
#[inline(always)]
pub fn console_rx_waiting() -> bool {
    crate::console::guest_input_waiting()
}

/// Re-evaluates `vcpu`'s emulated EL1 physical timer: drives its interrupt line and
/// arms the EL2 timer for its next deadline.
pub fn update_ptimer(vm: &Vm, vcpu: &mut Vcpu) {
    let out = vcpu.ptimer.output(read_sysreg!("CNTPCT_EL0"));
    if let Err(e) = vm
        .vgic
        .lock()
        .set_ppi_level(vcpu.idx, guest::PTIMER_INTID, out.irq_level)
    {
        log::warn!(
            "{}: physical-timer interrupt for vCPU {}: {e:?}",
            vm.name,
            vcpu.idx
        );
    }
    crate::smp::arm_timer(out.deadline);
    vm.deliver_kicks(vcpu.idx);
}

/// After an exit: lowers the virtual timer's vGIC line if the hypervisor raised it
/// and the timer (the guest's live CNTV_CTL_EL0) no longer asserts its interrupt.
/// Costs one load and branch while the line is down.
#[inline(always)]
pub fn sync_vtimer(vm: &Vm, vcpu: &mut Vcpu) {
    if vcpu.vtimer_raised && vtimer_line(true, read_sysreg!("CNTV_CTL_EL0")) == VtimerLine::Lower {
        lower_vtimer(vm, vcpu);
    }
}

#[cold]
#[inline(never)]
fn lower_vtimer(vm: &Vm, vcpu: &mut Vcpu) {
    vcpu.vtimer_raised = false;
    let unacknowledged = {
        let mut vgic = vm.vgic.lock();
        // A hardware-linked line still high is an interrupt the guest never
        // acknowledged: its physical PPI is still active, and nothing else will
        // deactivate it. Once acknowledged, the guest's deactivation does.
        let high = vgic
            .ppi_level(vcpu.idx, guest::VTIMER_INTID)
            .unwrap_or(false);
        if let Err(e) = vgic.set_ppi_level(vcpu.idx, guest::VTIMER_INTID, false) {
            log::warn!(
                "{}: virtual-timer interrupt for vCPU {}: {e:?}",
                vm.name,
                vcpu.idx
            );
        }
        high
    };
    if unacknowledged {
        crate::gic::deactivate_private(irq::hyp_irqs().vtimer, crate::smp::this_redist());
    }
}

/// Handles every pending physical interrupt of this CPU.
pub fn service_irqs(vm: &Vm, vcpu: &mut Vcpu) {
    let hyp = irq::hyp_irqs();
    // A bound, so that an interrupt that stays asserted can never hold this CPU at
    // EL2: what is left is taken at the next exit, after the guest has run.
    for _ in 0..MAX_ACKS_PER_EXIT {
        let Some(intid) = irq::acknowledge() else {
            break;
        };
        match intid {
            id if id == hyp.vtimer => {
                if !asserts_irq(read_sysreg!("CNTV_CTL_EL0")) {
                    // The guest stopped the timer before the interrupt was taken.
                    irq::end(intid);
                    continue;
                }
                // Hardware-linked: the guest's EOI of the virtual interrupt deactivates
                // the physical one, so only drop its priority here (`lower_vtimer`
                // deactivates it if the timer stops before the guest takes it).
                irq::priority_drop(intid);
                vcpu.vtimer_raised = true;
                if let Err(e) = vm
                    .vgic
                    .lock()
                    .set_ppi_level(vcpu.idx, guest::VTIMER_INTID, true)
                {
                    log::warn!(
                        "{}: virtual-timer interrupt for vCPU {}: {e:?}",
                        vm.name,
                        vcpu.idx
                    );
                }
            }
            id if id == hyp.htimer => {
                irq::end(intid);
                crate::smp::expire();
                update_ptimer(vm, vcpu);
            }
            id if id == hyp.maintenance || id == irq::KICK_SGI => irq::end(intid),
            id if id == UART_INTID.load(Ordering::Relaxed) => {
                pump_console(vm);
                irq::end(intid);
            }
            // The system disk finished requests: hand them to their disks (a guest's
            // completes through `resume_deferred` below).
            id if Some(id) == crate::sysdisk::intid() => {
                crate::iostat::count(crate::iostat::Count::IrqOnVcpu);
                crate::sysdisk::service_interrupt();
                irq::end(intid);
            }
            // The physical keyboard or tablet has events: routed to the presented
            // VM now, whichever CPU this is.
            id if crate::input::is_physical_intid(id) => {
                crate::input::service_interrupt(id);
                irq::end(intid);
            }
            other => {
                log::warn!("physical interrupt {other} has no handler; disabled");
                gic::disable(other, crate::smp::this_redist());
                irq::end(other);
            }
        }
    }
    vm.resume_deferred(Some(vcpu.idx));
    vm.deliver_kicks(vcpu.idx);
    crate::guests::service_deferred(Some(vm));
    // Monitor commands and `vm pause` stop here (a clean point: no lock held).
    crate::control::checkpoint(vm, vcpu);
}

/// Blocks `vcpu`'s WFI until the vGIC has an interrupt for it, another CPU kicks it,
/// or the VM is stopping; a WFIT (`timeout`, a CNTVCT_EL0 value) also ends when the
/// guest's virtual count reaches its timeout. Meanwhile the vCPU is blocked in the
/// run queue and its physical CPU runs other vCPUs or waits for an interrupt
/// (`smp::block_vcpu`), until a wake-up or the earliest of the vCPU's deadlines:
/// its virtual timer's, its emulated physical timer's and the WFIT timeout.
pub fn wfi(vm: &Vm, vcpu: &mut Vcpu, timeout: Option<u64>) {
    // The guest is idle: show what it left unfinished (a prompt).
    crate::console::flush_idle();
    loop {
        service_irqs(vm, vcpu);
        if vm.stopping().is_some()
            || vm.kick[vcpu.idx].load(Ordering::Acquire)
            || vm.vgic.lock().has_pending(vcpu.idx)
        {
            break;
        }
        let cntvoff = read_sysreg!("CNTVOFF_EL2");
        if let Some(t) = timeout {
            if wfit_expired(read_sysreg!("CNTVCT_EL0"), t) {
                break;
            }
        }
        if vm.work.is_raised() {
            continue; // device work left over: the next round before sleeping
        }
        let pnow = read_sysreg!("CNTPCT_EL0");
        let ptimer = vcpu.ptimer.output(pnow).deadline;
        let vtimer = arch::timer::vtimer_deadline(
            read_sysreg!("CNTV_CTL_EL0"),
            read_sysreg!("CNTV_CVAL_EL0"),
            cntvoff,
            pnow,
        );
        let wfit = timeout.and_then(|t| wfit_wake_deadline(None, t, cntvoff, pnow));
        let until = [ptimer, vtimer, wfit].into_iter().flatten().min();
        crate::iostat::block(vcpu.idx);
        crate::smp::block_vcpu(vm, vcpu, until);
    }
}

/// A physical CPU with no vCPU to run: waits for an interrupt (a kick, the EL2
/// timer set for `deadline`, a device) and services the hypervisor's own ones.
/// Device work left over is resumed here (no vCPU may come to it), and a monitor
/// line typed meanwhile wakes a vCPU to run it at its checkpoint.
pub fn idle(vm: &Vm, deadline: Option<u64>) {
    match deadline {
        Some(d) => crate::timer::arm(d),
        None => crate::timer::disarm(),
    }
    // SAFETY: the timer write must take effect before the CPU waits on it.
    unsafe { core::arch::asm!("isb") };
    if !crate::guests::any_work() {
        crate::display::tick(true);
        aarch64_cpu::asm::wfi();
    }
    let hyp = irq::hyp_irqs();
    for _ in 0..MAX_ACKS_PER_EXIT {
        let Some(intid) = irq::acknowledge() else {
            break;
        };
        match intid {
            id if id == UART_INTID.load(Ordering::Relaxed) => {
                pump_console(vm);
                irq::end(intid);
            }
            id if Some(id) == crate::sysdisk::intid() => {
                crate::iostat::count(crate::iostat::Count::IrqIdle);
                crate::sysdisk::service_interrupt();
                irq::end(intid);
            }
            // The physical keyboard or tablet has events: routed to the presented
            // VM now, whichever CPU this is.
            id if crate::input::is_physical_intid(id) => {
                crate::input::service_interrupt(id);
                irq::end(intid);
            }
            id if id == hyp.htimer
                || id == hyp.vtimer
                || id == hyp.maintenance
                || id == irq::KICK_SGI =>
            {
                irq::end(intid)
            }
            other => {
                log::warn!("physical interrupt {other} has no handler; disabled");
                gic::disable(other, crate::smp::this_redist());
                irq::end(other);
            }
        }
    }
    crate::guests::service_deferred(None);
    if crate::control::attention() {
        // Monitor lines run at a vCPU's checkpoint: wake one that sleeps (of
        // the first guest still on; a line for one guest wakes that one).
        let on = |g: &&Vm| (0..g.vcpus()).find(|&i| g.power(i) == CpuPower::On);
        if let Some((g, i)) = crate::guests::all()
            .iter()
            .find_map(|g| on(g).map(|i| (*g, i)))
        {
            crate::smp::wake_vcpu(g, i);
        }
    }
}
