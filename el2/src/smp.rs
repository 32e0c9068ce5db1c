//! Physical CPUs and the vCPUs they time-share.
//!
//! Every physical CPU the platform has (up to [`MAX_CPUS`]) is started at boot and
//! runs [`pcpu_loop`]: it picks a runnable vCPU from the one run queue
//! (`sched::RunQueue`, the policy: priorities, round robin, blocking) and runs it
//! until the vCPU gives the CPU up — its time slice ended and another vCPU of at
//! least its priority waits ([`preempt_check`]), it waits in WFI
//! ([`block_vcpu`]), or it stopped. With nothing runnable the CPU waits for an
//! interrupt (WFI), servicing the hypervisor's own interrupts meanwhile.
//!
//! Each vCPU runs on its own hypervisor stack (slot `MAX_CPUS + i`, `stacks.rs`)
//! as a coroutine: giving the CPU up saves the vCPU's hardware state into its
//! `Vcpu`, switches stacks to the physical CPU's scheduler ([`switch_stacks`]:
//! callee-saved registers and SP), and the vCPU carries on where it stopped on
//! whichever CPU picks it next, after loading its state there. The run loop,
//! the exit handlers, WFI, the monitor's park loop are unchanged code that
//! simply may return on another CPU. A task's change of state in the run queue
//! (runnable again, blocked, off) is made by the scheduler once it is off the
//! vCPU's stack, so no two CPUs ever run on one stack.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use alloc::vec::Vec;
use arch::smccc::{func, ret, CpuPower};
use sched::{RunQueue, Wake};

use crate::el1::{read_sysreg, write_sysreg};
use crate::power::firmware_call;
use crate::stacks::{MAX_CPUS, MAX_VCPUS};
use crate::vm::{Vcpu, Vm};

/// A vCPU's time slice: 10 ms of the system counter. Long next to a world switch
/// (a few microseconds; the cost of slicing stays under 1 %), short next to a
/// person (an interactive partition of a higher priority does not wait for a
/// slice: waking it preempts at once) and no longer than a Linux guest's 4 ms
/// tick by more than a few ticks, so a guest spinning for a lock held by a
/// preempted sibling loses at most one slice.
const SLICE_MS: u64 = 10;

extern "C" {
    fn secondary_entry();
    fn switch_stacks(save_sp: *mut u64, load_sp: u64);
    fn vcpu_stack_start();
}

core::arch::global_asm!(
    r#"
    // switch_stacks(save_sp: *mut u64 [x0], load_sp: u64 [x1]): saves the
    // callee-saved registers on this stack and SP at *save_sp, then resumes the
    // context whose SP is load_sp (made by this function or by
    // `smp::fresh_stack`). The hypervisor is soft-float: no FP register is
    // callee-saved state of its code.
    .global switch_stacks
switch_stacks:
    sub     sp, sp, #96
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    mov     x2, sp
    str     x2, [x0]
    mov     sp, x1
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #96
    ret

    // First resumption of a fresh vCPU stack: x19 holds the vCPU index.
    .global vcpu_stack_start
vcpu_stack_start:
    mov     x0, x19
    mov     x29, xzr
    bl      vcpu_main
1:  wfe
    b       1b
"#
);

/// Bytes `switch_stacks` keeps on a stack.
const SWITCH_FRAME: u64 = 96;

/// Physical CPU `k`: (MPIDR affinity, device-tree index = redistributor index).
static PCPUS: spin::Once<Vec<(u64, usize)>> = spin::Once::new();
/// The run queue of every physical CPU: vCPU *i* is task *i*.
static RQ: spin::Once<arch::relax::Mutex<RunQueue>> = spin::Once::new();

/// Per physical CPU: the SP of its scheduler while it runs a vCPU.
static SCHED_SP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per task: the VM whose vCPU it is (`register`). Task `vm.task_base + i` is
/// vCPU `i` of `vm`; the VMs' ranges follow each other from 0.
static TASK_VM: [AtomicPtr<Vm>; MAX_VCPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_VCPUS];
/// Per vCPU: its SP while it does not run (0: its stack is fresh).
static VCPU_SP: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Per vCPU: how it starts when its stack is fresh ([`START_RUN`], [`START_BOOT`]).
static START: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(START_RUN) }; MAX_VCPUS];
const START_RUN: u8 = 0;
const START_BOOT: u8 = 1;
/// Per physical CPU: what its last vCPU asked the scheduler to do with it.
static PENDING: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per physical CPU: the counter value its current vCPU's slice ends at.
static SLICE_END: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// Per physical CPU: a vCPU of a higher priority became runnable.
static RESCHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per physical CPU: the vCPU whose EL1 translations it last held (`usize::MAX`:
/// none), and the VM whose EL2 controls it holds.
static LAST_RAN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
static ACTIVE_VM: [AtomicPtr<Vm>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

/// [`PENDING`] encodings: nothing; the vCPU stays runnable; it blocks (until
/// the deadline in the upper bits + 1, or none); it stopped (and the boot vCPU
/// must start, for a VM reset).
const P_NONE: u64 = 0;
const P_PREEMPT: u64 = 1;
const P_BLOCK: u64 = 2;
const P_EXIT: u64 = 3;
const P_EXIT_START0: u64 = 4;
const P_KIND: u64 = 0x7;

/// More vCPUs than physical CPUs: guests' WFE traps so a spinning vCPU yields.
static OVERSUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Whether vCPUs outnumber the physical CPUs (HCR_EL2.TWE is set then).
pub fn oversubscribed() -> bool {
    OVERSUBSCRIBED.load(Ordering::Relaxed)
}

/// The physical CPUs the hypervisor schedules on (the boot CPU first) and the
/// number of vCPUs of every VM together (tasks).
pub fn init(pcpus: Vec<(u64, usize)>, vcpus: usize) {
    let n = pcpus.len();
    OVERSUBSCRIBED.store(vcpus > n, Ordering::Relaxed);
    arch::relax::set_hint(spin_hint);
    PCPUS.call_once(|| pcpus);
    RQ.call_once(|| arch::relax::Mutex::new(RunQueue::new(vcpus, n)));
    log::info!("scheduler: {vcpus} vCPU(s) on {n} physical CPU(s), {SLICE_MS} ms time slices");
}

/// How a CPU waits for a contended lock (`arch::relax`): `YIELD`, which hands
/// an SMT core or QEMU's one emulation thread to another CPU.
fn spin_hint() {
    // SAFETY: YIELD is a hint with no architectural effect on state or memory.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

/// Makes `vm`'s vCPUs tasks `vm.task_base..+vcpus` of the run queue, at
/// `priority` (higher runs first; guests 0).
pub fn register(vm: &'static Vm, priority: u8) {
    let mut q = rq().lock();
    for i in 0..vm.vcpus() {
        let t = vm.task_base + i;
        match TASK_VM.get(t) {
            Some(slot) if t < q.tasks() => {
                slot.store(vm as *const Vm as *mut Vm, Ordering::Release);
                let _ = q.set_priority(t, priority);
            }
            _ => crate::fatal(format_args!(
                "VM '{}': vCPU {i} has no scheduler task (task {t})",
                vm.name
            )),
        }
    }
}

/// The VM of task `t` and its vCPU index there.
fn task_vm(t: usize) -> (&'static Vm, usize) {
    let p = TASK_VM
        .get(t)
        .map_or(core::ptr::null_mut(), |v| v.load(Ordering::Acquire));
    // SAFETY: TASK_VM holds only `&'static Vm`s (`register`), never freed.
    match unsafe { p.as_ref() } {
        Some(vm) => (vm, t - vm.task_base),
        None => crate::fatal(format_args!("scheduler task {t} has no VM")),
    }
}

fn rq() -> &'static arch::relax::Mutex<RunQueue> {
    RQ.get()
        .unwrap_or_else(|| crate::fatal(format_args!("scheduler used before init")))
}

fn pcpus() -> &'static [(u64, usize)] {
    PCPUS.get().map_or(&[], |v| v.as_slice())
}

/// This physical CPU's number (0: the boot CPU).
pub fn this_pcpu() -> usize {
    let me = read_sysreg!("MPIDR_EL1") & arch::smccc::MPIDR_AFFINITY_MASK;
    pcpus().iter().position(|&(m, _)| m == me).unwrap_or(0)
}

/// The scheduler task (`task_base` + vCPU index) running on this CPU: the
/// last one loaded here.
pub fn running_task() -> usize {
    LAST_RAN[this_pcpu()].load(Ordering::Relaxed)
}

/// This physical CPU's redistributor (device-tree) index.
pub fn this_redist() -> usize {
    pcpus().get(this_pcpu()).map_or(0, |&(_, i)| i)
}

/// The MPIDR of the physical CPU running vCPU `i` of `vm` now, if one does.
pub fn pcpu_of_vcpu(vm: &Vm, i: usize) -> Option<u64> {
    let c = rq().lock().cpu_of(vm.task_base + i)?;
    pcpus().get(c).map(|&(m, _)| m)
}

fn counter() -> u64 {
    read_sysreg!("CNTPCT_EL0")
}

fn slice_ticks() -> u64 {
    read_sysreg!("CNTFRQ_EL0").max(1) * SLICE_MS / 1000
}

/// Interrupts physical CPU `c` for `wake`.
fn kick_pcpu(c: usize, t: Option<usize>, q: &RunQueue) {
    if q.current(c) != t {
        RESCHED[c].store(true, Ordering::Release);
    }
    if let Some(&(mpidr, _)) = pcpus().get(c) {
        crate::irq::kick(mpidr);
    }
}

/// vCPU `i` of `vm` has new work: a blocked vCPU becomes runnable (and an idle
/// CPU, or one running lower-priority work, is kicked); a running one's CPU is
/// kicked so it exits and looks.
pub fn wake_vcpu(vm: &Vm, i: usize) {
    let t = vm.task_base + i;
    let here = this_pcpu();
    let mut q = rq().lock();
    if let Ok(Wake::Kick(c)) = q.wake(t) {
        if !(c == here && q.current(c) == Some(t)) {
            kick_pcpu(c, Some(t), &q);
        }
    }
}

/// Whether vCPU `i` of `vm` runs on a physical CPU now (`iostat`).
pub fn vcpu_running(vm: &Vm, i: usize) -> bool {
    rq().lock().cpu_of(vm.task_base + i).is_some()
}

/// Makes vCPU `i` of `vm` (powered on: a PSCI CPU_ON, a resume) runnable;
/// `boot`: it resets and boots the VM first.
pub fn start_vcpu(vm: &Vm, i: usize, boot: bool) -> Result<(), i64> {
    if i >= vm.vcpus() || vm.task_base + i >= MAX_VCPUS {
        return Err(ret::INVALID_PARAMETERS);
    }
    let t = vm.task_base + i;
    START[t].store(if boot { START_BOOT } else { START_RUN }, Ordering::Relaxed);
    let mut q = rq().lock();
    match q.start(t) {
        Ok(Wake::Kick(c)) => {
            kick_pcpu(c, Some(t), &q);
            Ok(())
        }
        Ok(Wake::Nothing) => Ok(()),
        Err(e) => {
            log::warn!("vCPU {t} cannot start: {e:?}");
            Err(ret::INTERNAL_FAILURE)
        }
    }
}

/// Starts physical CPU `k` (not the boot CPU) into its scheduler loop.
fn start_pcpu(k: usize) -> Result<(), i64> {
    let (mpidr, _) = *pcpus().get(k).ok_or(ret::INVALID_PARAMETERS)?;
    let entry = secondary_entry as *const () as usize as u64;
    match firmware_call(u64::from(func::PSCI_CPU_ON_64), mpidr, entry, k as u64) {
        Some(0) => Ok(()),
        Some(r) => Err(r as i64),
        None => Err(ret::NOT_SUPPORTED),
    }
}

/// Starts every secondary physical CPU; returns how many run.
pub fn start_secondaries() -> usize {
    let mut up = 1;
    for k in 1..pcpus().len() {
        match start_pcpu(k) {
            Ok(()) => up += 1,
            Err(e) => log::warn!(
                "physical CPU {:#x} did not start (PSCI {e}); scheduling without it",
                pcpus()[k].0
            ),
        }
    }
    up
}

/// The stack slot a secondary CPU started by [`start_pcpu`] runs its scheduler
/// on, from its PSCI context id; `None` for one never made.
pub fn decode_start(v: u64) -> Option<usize> {
    (v < MAX_CPUS as u64 && (v as usize) < pcpus().len()).then_some(v as usize)
}

/// The redistributor index of physical CPU `k`.
pub fn redist_of(k: usize) -> usize {
    pcpus().get(k).map_or(0, |&(_, i)| i)
}

/// A fresh stack for vCPU `t`: a `switch_stacks` frame that resumes at
/// `vcpu_stack_start` with x19 = `t`.
fn fresh_stack(t: usize) -> u64 {
    let top = crate::stacks::vcpu_stack_top(t);
    let sp = top - SWITCH_FRAME;
    let frame = sp as *mut u64;
    // SAFETY: vCPU `t`'s stack slot is reserved for it (stacks.rs) and nothing
    // runs on it (the task was off, its previous run ended on the scheduler's
    // side); the 12 words below its top are its first switch frame: x19 = t,
    // x29 = 0, x30 = the start routine.
    unsafe {
        for i in 0..12 {
            frame.add(i).write_volatile(0);
        }
        frame.write_volatile(t as u64);
        frame
            .add(11)
            .write_volatile(vcpu_stack_start as *const () as usize as u64);
    }
    sp
}

/// The scheduler of physical CPU `k`, on its own stack, for ever: runs vCPUs of
/// every VM as the run queue gives them out, and waits for an interrupt when
/// there are none (servicing the hypervisor's own for `vm`, the guest).
pub fn pcpu_loop(vm: &'static Vm, k: usize) -> ! {
    loop {
        let next = {
            let mut q = rq().lock();
            let resume = settle(k, &mut q);
            let mut kicks = 0u64;
            q.expire(counter(), |c| kicks |= 1 << c);
            kick_mask(kicks & !(1 << k), &q);
            match resume {
                Some(t) => Some(t),
                None => q.pick(k).ok().flatten(),
            }
        };
        match next {
            Some(t) => {
                if log::log_enabled!(log::Level::Debug) {
                    let (v, i) = task_vm(t);
                    log::debug!("pCPU {k} runs {} vCPU {i}", v.name);
                }
                SLICE_END[k].store(counter().wrapping_add(slice_ticks()), Ordering::Relaxed);
                RESCHED[k].store(false, Ordering::Relaxed);
                let sp = match VCPU_SP[t].swap(0, Ordering::AcqRel) {
                    0 => fresh_stack(t),
                    sp => sp,
                };
                // SAFETY: `sp` is vCPU `t`'s saved context (or its fresh frame), which
                // only this CPU resumes (the run queue gave `t` to it); this CPU's
                // scheduler context is saved in its own slot.
                unsafe { switch_stacks(SCHED_SP[k].as_ptr(), sp) };
            }
            None => crate::wait::idle(vm, next_deadline()),
        }
    }
}

/// Applies what the vCPU that last ran on CPU `k` asked for, now that the CPU is
/// off its stack; returns the vCPU to resume at once (a block a wake-up beat).
fn settle(k: usize, q: &mut RunQueue) -> Option<usize> {
    let p = PENDING[k].swap(P_NONE, Ordering::AcqRel);
    let cur = q.current(k)?;
    let (vm, idx) = task_vm(cur);
    match p & P_KIND {
        P_PREEMPT => {
            if let Ok(Wake::Kick(c)) = q.preempt(k) {
                if c != k {
                    kick_pcpu(c, None, q);
                }
            }
        }
        P_BLOCK => {
            let until = (p >> 3).checked_sub(1);
            if q.block(k, until) == Ok(false) {
                log::debug!("pCPU {k}: vCPU {cur} woken before it blocked");
                return Some(cur);
            }
        }
        P_EXIT | P_EXIT_START0 => {
            let _ = q.stop(k);
            vm.set_power(idx, CpuPower::Off);
            if p & P_KIND == P_EXIT_START0 {
                let boot = vm.task_base;
                START[boot].store(START_BOOT, Ordering::Relaxed);
                if let Ok(Wake::Kick(c)) = q.start(boot) {
                    if c != k {
                        if let Some(&(m, _)) = pcpus().get(c) {
                            crate::irq::kick(m);
                        }
                    }
                }
            }
        }
        _ => {}
    }
    None
}

/// The earliest counter value a blocked vCPU waits for.
fn next_deadline() -> Option<u64> {
    rq().lock().next_deadline()
}

/// Wakes the blocked vCPUs whose deadline passed (on the EL2 timer's interrupt).
pub fn expire() {
    let now = counter();
    let mut q = rq().lock();
    let mut kicks = 0u64;
    q.expire(now, |c| kicks |= 1 << c);
    kick_mask(kicks, &q);
}

/// Kicks every physical CPU in `mask` (bit c: CPU c) for newly runnable work.
fn kick_mask(mask: u64, q: &RunQueue) {
    for c in (0..pcpus().len()).filter(|c| mask & (1 << c) != 0) {
        kick_pcpu(c, None, q);
    }
}

/// Arms the EL2 timer for the earliest of `deadline` (the running vCPU's
/// emulated physical timer), the end of its time slice and a blocked vCPU's
/// deadline.
pub fn arm_timer(deadline: Option<u64>) {
    let k = this_pcpu();
    let slice = SLICE_END[k].load(Ordering::Relaxed);
    let d = [deadline, Some(slice), next_deadline()]
        .into_iter()
        .flatten()
        .min();
    match d {
        Some(d) if d != u64::MAX => crate::timer::arm(d),
        _ => crate::timer::disarm(),
    }
}

/// On an interrupt exit of `vcpu`: if its slice is over (or a vCPU of a higher
/// priority woke) and the run queue says another vCPU is owed this CPU, gives
/// it up, staying runnable; otherwise starts a new slice.
pub fn preempt_check(vm: &Vm, vcpu: &mut Vcpu) {
    let k = this_pcpu();
    let now = counter();
    if !RESCHED[k].swap(false, Ordering::AcqRel) && now < SLICE_END[k].load(Ordering::Relaxed) {
        return;
    }
    if rq().lock().should_preempt(k) {
        log::debug!("pCPU {k}: vCPU {} preempted", vcpu.idx);
        give_up(vm, vcpu, P_PREEMPT);
    } else {
        SLICE_END[k].store(now.wrapping_add(slice_ticks()), Ordering::Relaxed);
        crate::wait::update_ptimer(vm, vcpu);
    }
}

/// A guest WFE trapped (only while oversubscribed): the vCPU likely waits for a
/// lock whose holder is not running, so it gives its CPU up if another vCPU of at
/// least its priority waits for one; otherwise it carries on at once.
pub fn yield_on_wfe(vm: &Vm, vcpu: &mut Vcpu) {
    let k = this_pcpu();
    if rq().lock().should_preempt(k) {
        give_up(vm, vcpu, P_PREEMPT);
    }
}

/// `vcpu` waits (its WFI, or a monitor poll) until woken or until the counter
/// reaches `until`; other vCPUs use the CPU meanwhile. Returns when it runs
/// again, with its state loaded (perhaps on another CPU, perhaps at once if a
/// wake-up came first).
pub fn block_vcpu(vm: &Vm, vcpu: &mut Vcpu, until: Option<u64>) {
    let enc = until.map_or(0, |u| u.saturating_add(1).min(u64::MAX >> 3));
    give_up(vm, vcpu, P_BLOCK | (enc << 3));
}

/// Sleeps `vcpu` for `ticks` of the counter (the monitor's polls).
pub fn sleep_vcpu(vm: &Vm, vcpu: &mut Vcpu, ticks: u64) {
    block_vcpu(vm, vcpu, Some(counter().saturating_add(ticks)));
}

/// Gives this CPU up from a vCPU whose run ended (its state is no longer used):
/// stays runnable and returns when it runs again.
pub fn yield_ended(vm: &Vm, i: usize) {
    release_vtimer();
    let t = vm.task_base + i;
    let k = this_pcpu();
    PENDING[k].store(P_PREEMPT, Ordering::Release);
    // SAFETY: see `give_up`.
    unsafe { switch_stacks(VCPU_SP[t].as_ptr(), SCHED_SP[k].load(Ordering::Acquire)) };
}

/// Ends vCPU `i` of `vm`, running here (powered off, or stopped for a reset);
/// `start_boot`: vCPU 0 then starts and boots the VM again. Never returns: the
/// stack is abandoned and made fresh at the vCPU's next start.
pub fn exit_vcpu(vm: &Vm, i: usize, start_boot: bool) -> ! {
    let k = this_pcpu();
    log::debug!("pCPU {k}: {} vCPU {i} ends", vm.name);
    // An ended vCPU's timer interrupt, left active, would starve the next vCPU
    // to run here of its own (a guest powering off while another runs on
    // stalled the other in WFI for minutes).
    release_vtimer();
    PENDING[k].store(
        if start_boot { P_EXIT_START0 } else { P_EXIT },
        Ordering::Release,
    );
    let mut dead = 0u64;
    // SAFETY: switches to this CPU's scheduler; the saved SP goes to a local that
    // nothing reads, so this stack is never resumed and is made fresh again.
    unsafe { switch_stacks(&mut dead, SCHED_SP[k].load(Ordering::Acquire)) };
    unreachable!("an ended vCPU was resumed")
}

/// Saves `vcpu`'s hardware state, switches to this CPU's scheduler with
/// `pending` for it, and loads the state again where it next runs.
fn give_up(vm: &Vm, vcpu: &mut Vcpu, pending: u64) {
    save_hw(vcpu);
    let k = this_pcpu();
    PENDING[k].store(pending, Ordering::Release);
    // SAFETY: this runs on vCPU `vcpu.idx`'s own stack; its SP is saved in its
    // slot, which the scheduler of whichever CPU picks it next resumes — only
    // after this CPU's scheduler applied `pending` (the run queue lock orders
    // it), so no other CPU runs this stack before this CPU has left it.
    unsafe {
        switch_stacks(
            VCPU_SP[vm.task_base + vcpu.idx].as_ptr(),
            SCHED_SP[k].load(Ordering::Acquire),
        )
    };
    load_hw(vm, vcpu);
}

/// What of a vCPU lives in this CPU's hardware while it runs, into `vcpu`: its
/// EL1 system registers and FP/SIMD (with the virtual timer's CNTV_CTL/CVAL),
/// its virtual CPU interface (ICH_VMCR_EL2, active priorities). Its list
/// registers are empty here: every exit synced them back into the vGIC. The
/// virtual timer is stopped and, if its hardware-linked interrupt is active on
/// this CPU (taken by the hypervisor, not yet deactivated by the guest), that is
/// recorded and it is deactivated here; it is made active again where the vCPU
/// runs, so the guest's deactivation finds it there.
fn save_hw(vcpu: &mut Vcpu) {
    vcpu.el1.save();
    vcpu.cpuif = crate::vm::CpuInterface {
        vmcr: read_sysreg!("ICH_VMCR_EL2"),
        ap0r0: read_sysreg!("ICH_AP0R0_EL2"),
        ap1r0: read_sysreg!("ICH_AP1R0_EL2"),
    };
    // No maintenance request is left armed (the next entry's flush sets its own).
    write_sysreg!("ICH_HCR_EL2", crate::irq::ICH_HCR_EN);
    vcpu.vtimer_active = release_vtimer();
}

/// Takes the leaving vCPU's virtual timer off this CPU: stops it, and
/// deactivates its physical interrupt if it is active — hardware-linked, it
/// waits for a guest EOI that will not come here, and while it stays active no
/// later vCPU on this CPU ever takes its own timer interrupt. Returns whether it
/// was active (the vCPU's state to carry to where it runs next).
pub fn release_vtimer() -> bool {
    write_sysreg!("CNTV_CTL_EL0", 0);
    let vtimer = crate::irq::hyp_irqs().vtimer;
    let active = crate::gic::private_active(vtimer, this_redist());
    if active {
        crate::gic::deactivate_private(vtimer, this_redist());
    }
    active
}

/// Loads `vcpu` into this CPU (after [`save_hw`], perhaps on another CPU): the
/// VM's EL2 controls if this CPU does not hold them, the vCPU's state, and a
/// local flush of EL1 translations and the instruction cache if another vCPU
/// ran here since (a guest may keep stale entries a local invalidation on
/// another CPU removed).
fn load_hw(vm: &Vm, vcpu: &mut Vcpu) {
    let k = this_pcpu();
    activate_here(vm, k);
    // The VM's one virtual-counter offset, which a resume or rollback moves while
    // other CPUs hold the old one.
    write_sysreg!("CNTVOFF_EL2", vm.cntvoff());
    let t = vm.task_base + vcpu.idx;
    if LAST_RAN[k].swap(t, Ordering::Relaxed) != t {
        // SAFETY: invalidates this CPU's EL1&0 TLB entries of the current VMID and its
        // instruction cache; no memory is touched.
        unsafe {
            core::arch::asm!(
                "tlbi vmalle1",
                "ic iallu",
                "dsb nsh",
                "isb",
                options(nostack)
            )
        };
        crate::iostat::count(crate::iostat::Count::Flushes);
    }
    crate::iostat::count(crate::iostat::Count::Loads);
    crate::vm::load_vcpu(vcpu);
    if core::mem::take(&mut vcpu.vtimer_active) {
        crate::gic::activate_private(crate::irq::hyp_irqs().vtimer, this_redist());
    }
    // The list registers are empty: flush before the next entry.
    vm.kick[vcpu.idx].store(true, Ordering::Release);
    crate::wait::update_ptimer(vm, vcpu);
}

/// Programs the EL2 controls for `vm` on CPU `k` unless they are there.
fn activate_here(vm: &Vm, k: usize) {
    let p = vm as *const Vm as *mut Vm;
    if ACTIVE_VM[k].swap(p, Ordering::Relaxed) != p {
        crate::vm::activate(vm);
    }
}

/// vCPU `i` of `vm` starts its run on this CPU (`vm::activate` was just called).
pub fn started_here(vm: &Vm, i: usize) {
    let k = this_pcpu();
    ACTIVE_VM[k].store(vm as *const Vm as *mut Vm, Ordering::Relaxed);
    LAST_RAN[k].store(vm.task_base + i, Ordering::Relaxed);
}

/// The VM and vCPU index of the task a fresh stack starts (`vcpu_main`), and
/// whether it boots the VM first.
pub fn fresh_start(t: usize) -> (&'static Vm, usize, bool) {
    let (vm, i) = task_vm(t);
    (
        vm,
        i,
        START[t].swap(START_RUN, Ordering::Relaxed) == START_BOOT,
    )
}
