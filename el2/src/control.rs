//! The hypervisor monitor's el2 side: runs the operator's monitor lines
//! (`monitor::execute`) against [`El2Control`], el2's [`VmControl`], and owns
//! what pausing a VM takes — every vCPU stopped at a clean point, guest virtual
//! time standing still while it is.
//!
//! **Where commands run.** The console pump (`console::pump_input`) only collects a
//! finished line and raises [`ATTENTION`], kicking its own CPU; the line runs at
//! the next [`checkpoint`], at the end of `wait::service_irqs` — after an
//! interrupt exit or in a WFI loop, with no lock held and the guest's registers
//! and list registers already back in the vCPU and the vGIC. So a command never
//! runs inside a device access.
//!
//! **Pause.** `vm pause` raises the VM's pause request and kicks every vCPU; each
//! vCPU reaching a checkpoint *parks* there: it marks itself parked and loops,
//! servicing its physical interrupts (device work the guest already submitted
//! still completes), polling the console (so `vm resume` is read even by a CPU
//! the UART's interrupt is not routed to) and napping on the EL2 timer. The
//! command answers once every vCPU that is not off has parked, so no guest
//! instruction runs after its `ok:` line. **Guest virtual time** stands still
//! while paused: every vCPU of a VM runs with the VM's one CNTVOFF_EL2, and
//! `vm resume` adds the time from the last vCPU parking to the resume, before any
//! vCPU runs again. A guest timer that fired meanwhile (measured against the old
//! offset) no longer asserts once the offset moved, and `wait::sync_vtimer`
//! lowers its line before the guest runs: no stale interrupt, no burst, no jump
//! in the guest's clock. The guest's *physical* counter (CNTPCT, not offset
//! without FEAT_ECV) does run on; a deadline of the emulated EL1 physical timer
//! that passed while paused fires at resume, as after any stall.
//!
//! **Suspend.** `vm suspend` and the suspend branch of `host shutdown` pause the
//! VM, then `suspend::suspend_vm` captures the commanding vCPU's state here and
//! every parked vCPU's in [`park`] (`suspend::on_park`: a vCPU's live EL1 state
//! belongs to the physical CPU running it), drains the devices, writes the image
//! and commits it; the VM then powers off, and with it the host.
//! **Snapshots.** `vm snapshot` and `vm rollback` pause a running VM the same way,
//! run `snapshot::take` / `snapshot::rollback` on the commanding vCPU, and let it
//! run again; a rolled-back parked vCPU takes up its saved state as it leaves the
//! park (`snapshot::on_unpark`). Snapshots live in memory, or with `--disk` on the
//! system disk (`snapshot::take_disk`; rollback finds either kind by its tag).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch::relax::Mutex;
use arch::smccc::{CpuPower, PowerTopology};
use monitor::command::{DisplayChange, SnapshotStore};
use monitor::control::{ShutdownReport, SnapshotInfo, SuspendReport};
use monitor::input::LineText;
use monitor::{After, ControlError, VmControl, VmInfo, VmState};

use crate::el1::{read_sysreg, write_sysreg};
use crate::vm::{StopReason, Vcpu, Vm};

/// How long `vm pause` and `host shutdown` wait for every vCPU to stop, in
/// milliseconds of the system counter.
const STOP_WAIT_MS: u64 = 5000;
/// How often a parked vCPU (and a command waiting for vCPUs) looks again, in
/// milliseconds.
const POLL_MS: u64 = 5;
/// Monitor lines waiting to run at most (more are refused as busy).
const MAX_PENDING: usize = 4;

/// A monitor line is waiting in [`PENDING`].
static ATTENTION: AtomicBool = AtomicBool::new(false);
/// Monitor lines waiting for a checkpoint, oldest first.
static PENDING: Mutex<VecDeque<Pending>> = Mutex::new(VecDeque::new());

/// A monitor line and the guest whose vCPU runs it: the one it acts on (its
/// index in `guests`), or `None` for any (the host, every VM, or a name no
/// running guest has). Lines run in the order typed: one for a guest waits at
/// the head until a vCPU of that guest reaches a checkpoint (it is woken for
/// it), unless that guest powers off meanwhile.
struct Pending {
    line: LineText,
    target: Option<usize>,
}

/// The guest `line` acts on, if it is one that still runs.
fn target_of(line: &LineText) -> Option<usize> {
    let name = monitor::command::parse(line.as_str()).ok()?.vm()?;
    let vm = crate::guests::find(name)?;
    (vm.stopping() != Some(StopReason::PoweredOff))
        .then(|| crate::guests::index_of(vm))
        .flatten()
}

/// Wakes a vCPU of guest `target` that is on, so it reaches a checkpoint.
fn wake_target(target: usize) {
    if let Some(vm) = crate::guests::all().get(target) {
        if let Some(i) = (0..vm.vcpus()).find(|&i| vm.power(i) == CpuPower::On) {
            crate::smp::wake_vcpu(vm, i);
        }
    }
}
/// Held by the CPU running monitor lines, so lines run one at a time in the order
/// typed. Only ever `try_lock`ed: a CPU that finds it taken goes on (and parks if
/// asked to), since the holder may be waiting for exactly that.
static EXEC: Mutex<()> = Mutex::new(());

/// What this VM's run state is beyond its vCPUs' power states: the pause request,
/// which vCPUs parked, and the VM's virtual-counter offset.
pub struct RunControl {
    /// `vm pause` asked every vCPU to park.
    pause: AtomicBool,
    /// Per vCPU: parked at a checkpoint.
    parked: Vec<AtomicBool>,
    /// The latest physical count at which a vCPU parked in this pause.
    paused_at: AtomicU64,
    /// CNTVOFF_EL2 of every vCPU of the VM.
    cntvoff: AtomicU64,
    /// The VM's policy says suspend (not power off) on host shutdown.
    suspend_on_host_shutdown: AtomicBool,
}

impl RunControl {
    pub fn new(vcpus: usize) -> Self {
        Self {
            pause: AtomicBool::new(false),
            parked: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            paused_at: AtomicU64::new(0),
            cntvoff: AtomicU64::new(0),
            suspend_on_host_shutdown: AtomicBool::new(false),
        }
    }

    /// The CNTVOFF_EL2 a vCPU of this VM runs with.
    pub fn cntvoff(&self) -> u64 {
        self.cntvoff.load(Ordering::Acquire)
    }

    /// Sets the offset (a resume from a saved state, before any vCPU runs).
    pub fn set_cntvoff(&self, v: u64) {
        self.cntvoff.store(v, Ordering::Release);
    }

    /// Records the VM's host-shutdown policy (from its registry record).
    pub fn set_suspend_on_host_shutdown(&self, on: bool) {
        self.suspend_on_host_shutdown.store(on, Ordering::Relaxed);
    }

    fn paused(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    /// Forgets a pause (a VM started again after its suspend, every vCPU off).
    pub fn clear_pause(&self) {
        self.pause.store(false, Ordering::Release);
        for p in &self.parked {
            p.store(false, Ordering::Release);
        }
    }
}

/// Queues a finished monitor line for the next checkpoint; `false` when
/// [`MAX_PENDING`] lines already wait.
pub fn submit(line: LineText) -> bool {
    let target = target_of(&line);
    {
        let mut q = PENDING.lock();
        if q.len() >= MAX_PENDING {
            return false;
        }
        q.push_back(Pending { line, target });
        ATTENTION.store(true, Ordering::Release);
    }
    if let Some(t) = target {
        wake_target(t);
    }
    true
}

/// Whether monitor lines wait for a checkpoint.
pub fn attention() -> bool {
    ATTENTION.load(Ordering::Acquire)
}

/// The oldest waiting line if it may run on a vCPU of `vm` (the head for
/// another running guest waits for that guest, which is woken again).
fn take_pending(vm: &Vm) -> Option<LineText> {
    let mut q = PENDING.lock();
    let head = q.front()?;
    if let Some(t) = head.target {
        let ours = crate::guests::index_of(vm) == Some(t);
        let gone = crate::guests::all()
            .get(t)
            .is_none_or(|g| g.stopping() == Some(StopReason::PoweredOff));
        if !ours && !gone {
            drop(q);
            wake_target(t);
            return None;
        }
    }
    let line = q.pop_front().map(|p| p.line);
    ATTENTION.store(!q.is_empty(), Ordering::Release);
    line
}

/// Runs the waiting monitor lines on vCPU `here` of `vm`, unless another CPU is
/// running them.
fn run_pending(vm: &Vm, vcpu: &mut Vcpu) {
    if !ATTENTION.load(Ordering::Acquire) && !crate::authority::call_pending() {
        return;
    }
    let Some(_exec) = EXEC.try_lock() else {
        return;
    };
    // The partition's calls run on the primary guest (its snapshots need one of
    // its vCPUs), or on any guest once the primary is off.
    if crate::authority::call_pending()
        && crate::guests::primary()
            .is_none_or(|p| core::ptr::eq(p, vm) || p.stopping() == Some(StopReason::PoweredOff))
    {
        let here = vcpu.idx;
        crate::authority::serve(&mut El2Control { vm, here, vcpu }, false);
        if crate::suspend::suspended() && crate::guests::still_on() == 0 {
            // The call suspended the last guest: its further calls run on the
            // partition's own vCPU (`authority::call`).
            log::info!(
                "no VM left to run; the host stays up for the authority partition (its `host shutdown` powers it off)"
            );
        }
    }
    while let Some(line) = take_pending(vm) {
        run_line(vm, vcpu, line);
    }
}

/// Runs the authority partition's waiting call on its own vCPU `vcpu` (of the
/// partition `vm`): a call that touches no VM's execution
/// (`authority::runs_on_partition`), or any when no guest vCPU is left to take
/// it at a checkpoint. A call that needs a guest's own vCPU (a snapshot) is
/// refused as such.
pub fn serve_on_partition(vm: &Vm, vcpu: &mut Vcpu) {
    let Some(_exec) = EXEC.try_lock() else {
        return;
    };
    let here = vcpu.idx;
    crate::authority::serve(&mut El2Control { vm, here, vcpu }, true);
}

/// Where `vcpu` may stop or run monitor commands: called at the end of
/// `wait::service_irqs`. One load and branch per flag when there is nothing to do.
#[inline(always)]
pub fn checkpoint(vm: &Vm, vcpu: &mut Vcpu) {
    if (ATTENTION.load(Ordering::Acquire)
        || vm.run.pause.load(Ordering::Relaxed)
        || crate::authority::call_pending())
        && !crate::authority::is(vm)
    {
        checkpoint_slow(vm, vcpu);
    }
}

#[cold]
#[inline(never)]
fn checkpoint_slow(vm: &Vm, vcpu: &mut Vcpu) {
    if vm.run.parked[vcpu.idx].load(Ordering::Relaxed) {
        return; // the park loop's own interrupt servicing
    }
    run_pending(vm, vcpu);
    if vm.run.paused() && vm.stopping().is_none() {
        park(vm, vcpu);
    }
}

/// Runs one monitor line on vCPU `here` of `vm` and prints its status line.
fn run_line(vm: &Vm, vcpu: &mut Vcpu, line: LineText) {
    let here = vcpu.idx;
    let mut ctl = El2Control { vm, here, vcpu };
    let reply = monitor::execute(line.as_str(), &mut ctl);
    crate::console::monitor_status(&reply.status);
    if reply.after == After::PowerOffHost {
        log::info!("host shutdown: powering off");
        crate::power::shutdown(0);
    }
    if crate::suspend::suspended()
        && crate::guests::still_on() == 0
        && crate::authority::get().is_none()
    {
        log::info!("no VM left to run; powering off");
        crate::power::shutdown(0);
    }
}

/// Milliseconds as system-counter ticks.
fn ms_ticks(ms: u64) -> u64 {
    read_sysreg!("CNTFRQ_EL0").max(1) * ms / 1000
}

/// Holds `vcpu` at this checkpoint while its VM is paused.
fn park(vm: &Vm, vcpu: &mut Vcpu) {
    let idx = vcpu.idx;
    vm.run.parked[idx].store(true, Ordering::Release);
    vm.run
        .paused_at
        .fetch_max(read_sysreg!("CNTPCT_EL0"), Ordering::AcqRel);
    let poll = ms_ticks(POLL_MS);
    loop {
        crate::wait::service_irqs(vm, vcpu);
        crate::suspend::on_park(vm, vcpu);
        crate::wait::pump_console(vm);
        run_pending(vm, vcpu);
        if !vm.run.paused() || vm.stopping().is_some() {
            break;
        }
        crate::smp::sleep_vcpu(vm, vcpu, poll);
    }
    write_sysreg!("CNTVOFF_EL2", vm.run.cntvoff());
    // SAFETY: the new offset must be in effect before the timer is looked at.
    unsafe { core::arch::asm!("isb") };
    vm.run.parked[idx].store(false, Ordering::Release);
    crate::snapshot::on_unpark(vm, vcpu);
    crate::wait::sync_vtimer(vm, vcpu);
}

/// Whether vCPU `i` of `vm` runs no guest code: parked, off, or `here` (the one
/// running this command, at a checkpoint).
fn stopped(vm: &Vm, i: usize, here: Option<usize>) -> bool {
    Some(i) == here || vm.run.parked[i].load(Ordering::Acquire) || vm.power(i) == CpuPower::Off
}

/// Waits (kicking the laggards) until `done(i)` holds for every vCPU of `vm`;
/// `false` if [`STOP_WAIT_MS`] passed first. Meanwhile `vcpu` (of VM `own`,
/// running the command) gives its physical CPU up.
fn wait_all(vm: &Vm, own: &Vm, vcpu: &mut Vcpu, done: impl Fn(usize) -> bool) -> bool {
    let deadline = read_sysreg!("CNTPCT_EL0").saturating_add(ms_ticks(STOP_WAIT_MS));
    loop {
        let mut all = true;
        for i in (0..vm.vcpus()).filter(|&i| !done(i)) {
            all = false;
            crate::smp::wake_vcpu(vm, i);
        }
        if all {
            return true;
        }
        if read_sysreg!("CNTPCT_EL0") >= deadline {
            return false;
        }
        // Give the physical CPU to the vCPUs that still have to get here.
        crate::smp::sleep_vcpu(own, vcpu, ms_ticks(POLL_MS));
    }
}

/// el2's [`VmControl`]: today over its one VM, run on vCPU `here` of it.
pub struct El2Control<'a> {
    vm: &'a Vm,
    here: usize,
    /// The vCPU running the command (a suspend captures its state here).
    vcpu: &'a mut Vcpu,
}

impl<'a> El2Control<'a> {
    /// The guest called `name`: this command's own (a monitor line naming a
    /// guest runs on it), or another (the partition's calls run on one guest
    /// and act on any; `host shutdown` acts on all).
    fn find(&self, name: &str) -> Result<&'a Vm, ControlError> {
        if self.vm.name == name && !crate::authority::is(self.vm) {
            return Ok(self.vm);
        }
        crate::guests::find(name).ok_or_else(|| ControlError::NoSuchVm(name.into()))
    }

    /// This command's vCPU index in `vm`, else `usize::MAX` (kick every vCPU).
    fn kick_from(&self, vm: &Vm) -> usize {
        self.here_in(vm).unwrap_or(usize::MAX)
    }

    /// The guest called `name` for a snapshot command: snapshots (in memory and
    /// the disk's copy-on-write log) are kept for one VM, the primary guest, and
    /// are taken and rolled back from one of its own vCPUs.
    fn snapshot_vm(&self, name: &str) -> Result<&'a Vm, ControlError> {
        let vm = self.find(name)?;
        if crate::guests::index_of(vm) != Some(0) {
            return Err(ControlError::Unsupported {
                what: format!("snapshots of vm {name}"),
                why: "snapshots are kept for the primary guest only (the first VM started) while several run",
            });
        }
        if self.here_in(vm).is_none() {
            return Err(ControlError::Unsupported {
                what: format!("snapshots of vm {name}"),
                why: "a snapshot is taken on one of the VM's own vCPUs, and none took this call",
            });
        }
        Ok(vm)
    }

    /// This command's vCPU index in `vm` (`None`: it runs on another guest).
    fn here_in(&self, vm: &Vm) -> Option<usize> {
        core::ptr::eq(self.vm, vm).then_some(self.here)
    }

    /// Waits until `done(i)` for every vCPU of `vm`, this command's vCPU giving
    /// its CPU up meanwhile.
    fn wait_all(&mut self, vm: &Vm, done: impl Fn(usize) -> bool) -> bool {
        wait_all(vm, self.vm, self.vcpu, done)
    }

    /// Stops `vm` for good (powered off): asks every vCPU but this command's to
    /// stop and waits until they have.
    fn stop_vm(&mut self, vm: &Vm) -> bool {
        let here = self.here_in(vm);
        vm.request_stop(StopReason::PoweredOff, here.unwrap_or(usize::MAX));
        self.wait_all(vm, |i| Some(i) == here || vm.power(i) == CpuPower::Off)
    }

    fn state(vm: &Vm) -> VmState {
        if vm.stopping() == Some(StopReason::PoweredOff) {
            VmState::Off
        } else if vm.run.paused() {
            VmState::Paused
        } else {
            VmState::Running
        }
    }

    /// Pauses the VM if it runs, suspends it to its saved-state extent
    /// (`suspend::suspend_vm`) and, once the image is committed, stops it for good:
    /// its disk must not change after the image was taken. On failure the VM is
    /// left as it was (running, or paused) and nothing was committed.
    fn suspend_vm(&mut self, vm: &Vm) -> Result<u64, ControlError> {
        let name = vm.name.clone();
        match Self::state(vm) {
            VmState::Running => self.pause_vm(vm)?,
            VmState::Paused => {}
            state => return Err(ControlError::NotRunning { vm: name, state }),
        }
        match crate::suspend::suspend_vm(vm, self.vm, self.vcpu) {
            Ok(done) => {
                if !self.stop_vm(vm) {
                    log::warn!("VM '{}': a vCPU did not stop after the suspend", vm.name);
                }
                Ok(done.bytes)
            }
            Err(why) => Err(ControlError::Failed {
                vm: name,
                why: format!("{why}; nothing was committed and the VM stays paused"),
            }),
        }
    }

    /// Pauses the VM for a snapshot or rollback if it runs; whether it ran.
    fn pause_for_snapshot(&mut self, name: &str) -> Result<bool, ControlError> {
        match Self::state(self.vm) {
            VmState::Running => self.pause(name).map(|()| true),
            VmState::Paused => Ok(false),
            state => Err(ControlError::NotRunning {
                vm: name.into(),
                state,
            }),
        }
    }

    /// Lets the VM run again after a snapshot or rollback if it ran before, with
    /// this vCPU on the VM's (possibly new) virtual-counter offset.
    fn continue_after_snapshot(
        &mut self,
        name: &str,
        was_running: bool,
    ) -> Result<(), ControlError> {
        if was_running {
            self.resume(name)?;
            crate::snapshot::load_cntvoff(self.vm);
            crate::wait::sync_vtimer(self.vm, self.vcpu);
        }
        Ok(())
    }
}

/// The authority ABI's operations beyond the monitor's. Those not here answer
/// `Unsupported` (the trait's defaults), which the partition's shell prints.
impl monitor::abi::AbiTarget for El2Control<'_> {
    /// The VM's state (every call asks it of every VM: nothing but the VM's
    /// own fields is read).
    fn abi_state(&self, name: &str) -> Option<authority_abi::call::VmState> {
        use authority_abi::call::VmState as Abi;
        Some(match Self::state(self.find(name).ok()?) {
            VmState::Running => Abi::Running,
            VmState::Paused => Abi::Paused,
            VmState::Off => Abi::Off,
        })
    }

    /// The VM's display and input flags, for VM_LIST: what the display and its
    /// input routing do now.
    fn abi_flags(&self, name: &str) -> u32 {
        use authority_abi::call::{VM_FROZEN, VM_INTERACTIVE, VM_PRESENTED};
        let Ok(vm) = self.find(name) else {
            return 0;
        };
        let policy = crate::display::policy_of(vm);
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        flag(
            policy.is_some_and(|p| p != vgpu::Policy::Hidden),
            VM_PRESENTED,
        ) | flag(policy == Some(vgpu::Policy::Frozen), VM_FROZEN)
            | flag(crate::input::interactive(vm), VM_INTERACTIVE)
    }

    /// Routes the events as the physical devices' are: they reach the guest only
    /// while it is presented and interactive; answers how many were delivered.
    fn inject(
        &mut self,
        name: &str,
        events: &[authority_abi::input::InputEvent],
    ) -> Result<u64, ControlError> {
        let vm = self.find(name)?;
        Ok(u64::from(
            crate::input::route(vm, events, self.kick_from(vm)).delivered,
        ))
    }

    /// Starts an input script on the VM; it runs from the render loop's callers
    /// (`scripts::poll`) and its end is a `ScriptDone` event.
    fn run_script(&mut self, name: &str, script: &[u8]) -> Result<(), ControlError> {
        let vm = self.find(name)?;
        let vm = crate::authority::guest()
            .filter(|g| core::ptr::eq(*g, vm))
            .ok_or_else(|| ControlError::Unsupported {
                what: format!("input scripts on vm {name}"),
                why: "scripts run on the authority partition's guest only",
            })?;
        crate::scripts::start(vm, script).map(|_| ())
    }

    /// The VM's current frame, or a region of it (`scripts::capture`).
    fn capture(
        &mut self,
        name: &str,
        region: Option<authority_abi::call::Rect>,
        max: u64,
        write: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<monitor::abi::Captured, ControlError> {
        let vm = self.find(name)?;
        crate::scripts::capture(vm, region, max, write)
    }

    /// Starts a guest that is off (it powered off, or was suspended, since the
    /// host booted): it resumes its saved state when its record has one its
    /// policy lets it resume, else it cold boots (`crate::restart_guest`).
    fn start(&mut self, name: &str) -> Result<(), ControlError> {
        let vm = self.find(name)?;
        let state = Self::state(vm);
        if state != VmState::Off {
            return Err(ControlError::Invalid {
                vm: name.into(),
                why: format!("it is {state}, not off"),
            });
        }
        if (0..vm.vcpus()).any(|i| vm.power(i) != CpuPower::Off) {
            return Err(ControlError::Failed {
                vm: name.into(),
                why: String::from("its vCPUs are still stopping; try again"),
            });
        }
        let vm =
            crate::guests::find(&vm.name).ok_or_else(|| ControlError::NoSuchVm(name.into()))?;
        crate::restart_guest(vm).map_err(|why| ControlError::Failed {
            vm: name.into(),
            why,
        })
    }

    /// The guest's serial output reaches the serial line directly (the
    /// partition shares it), so an attached console has nothing to fetch here.
    fn console_read(&mut self, name: &str, out: &mut [u8]) -> Result<usize, ControlError> {
        self.find(name)?;
        let _ = out;
        Ok(0)
    }

    /// Bytes typed into an attached console go to the guest's PL011, as many
    /// as its receive FIFO takes.
    fn console_write(&mut self, name: &str, data: &[u8]) -> Result<usize, ControlError> {
        let vm = self.find(name)?;
        let mut uart = vm.uart.0.lock();
        let n = uart.rx_room().min(data.len());
        if n > 0 {
            uart.push_rx(&data[..n], &mut crate::vm::VgicSink::new(&vm.vgic));
        }
        drop(uart);
        vm.deliver_kicks(self.kick_from(vm));
        Ok(n)
    }

    fn reserve_key(
        &mut self,
        chord: Option<authority_abi::input::Chord>,
    ) -> Result<(), ControlError> {
        crate::input::reserve_key(chord);
        Ok(())
    }

    /// The VM's registry policy bits (a system-disk VM; a direct boot has none).
    fn policy(&self, name: &str) -> Result<u32, ControlError> {
        let uuid = self.registry_identity(name)?;
        crate::storage::with(|st| st.registry.vm(uuid).map(|r| r.policy.bits()))
            .flatten()
            .ok_or_else(|| ControlError::Failed {
                vm: name.into(),
                why: "its registry record is gone".into(),
            })
    }

    /// Replaces the VM's registry policy (one registry commit); its
    /// suspend-on-host-shutdown bit takes effect at once, the others at their
    /// next use (a hide, the next host boot).
    fn set_policy(&mut self, name: &str, bits: u32) -> Result<(), ControlError> {
        let uuid = self.registry_identity(name)?;
        let policy = registry::Policy::from_bits(bits).ok_or_else(|| ControlError::Invalid {
            vm: name.into(),
            why: format!("policy bits {bits:#x} name flags the registry does not define"),
        })?;
        crate::storage::with(|st| st.registry.set_policy(&mut st.disk, uuid, policy))
            .ok_or_else(|| ControlError::Failed {
                vm: name.into(),
                why: "the system disk is not open".into(),
            })?
            .map_err(|e| ControlError::Failed {
                vm: name.into(),
                why: format!("registry commit failed ({e}); the policy is unchanged"),
            })?;
        self.find(name)?
            .run
            .set_suspend_on_host_shutdown(policy.suspend_on_host_shutdown);
        log::info!("VM '{name}': policy set to {bits:#x} (registry)");
        Ok(())
    }
}

impl El2Control<'_> {
    /// The registry identity of the VM called `name`.
    fn registry_identity(&self, name: &str) -> Result<registry::Uuid, ControlError> {
        self.find(name)?
            .identity
            .ok_or_else(|| ControlError::Unsupported {
                what: format!("the policy of vm {name}"),
                why: "a VM booted from a bundle has no registry record",
            })
    }
}

impl VmControl for El2Control<'_> {
    fn list(&self) -> Vec<VmInfo> {
        crate::guests::all()
            .iter()
            .map(|vm| VmInfo {
                name: vm.name.clone(),
                vcpus: vm.vcpus(),
                state: Self::state(vm),
            })
            .collect()
    }

    fn pause(&mut self, name: &str) -> Result<(), ControlError> {
        let vm = self.find(name)?;
        self.pause_vm(vm)
    }

    fn resume(&mut self, name: &str) -> Result<(), ControlError> {
        let vm = self.find(name)?;
        self.resume_vm(vm)
    }

    fn suspend(&mut self, name: &str) -> Result<SuspendReport, ControlError> {
        let vm = self.find(name)?;
        let bytes_written = self.suspend_vm(vm)?;
        Ok(SuspendReport { bytes_written })
    }

    fn snapshot(
        &mut self,
        name: &str,
        tag: &str,
        store: SnapshotStore,
    ) -> Result<SnapshotInfo, ControlError> {
        self.snapshot_vm(name)?;
        let was_running = self.pause_for_snapshot(name)?;
        let vm = self.vm;
        let taken = match store {
            SnapshotStore::Memory => crate::snapshot::take(vm, self.vcpu, tag),
            SnapshotStore::Disk => crate::snapshot::take_disk(vm, self.vcpu, tag),
        };
        self.continue_after_snapshot(name, was_running)?;
        match taken {
            Ok(bytes) => Ok(SnapshotInfo {
                tag: tag.into(),
                store,
                bytes,
                note: String::new(),
            }),
            Err(crate::snapshot::TakeError::Exists) => Err(ControlError::SnapshotExists {
                vm: name.into(),
                tag: tag.into(),
            }),
            Err(crate::snapshot::TakeError::Other(why)) => Err(ControlError::Failed {
                vm: name.into(),
                why: format!("{why}; no snapshot was taken"),
            }),
        }
    }

    fn rollback(&mut self, name: &str, tag: &str) -> Result<(), ControlError> {
        self.snapshot_vm(name)?;
        if !crate::snapshot::list()
            .iter()
            .chain(&crate::snapshot::list_disk(self.vm))
            .any(|s| s.tag == tag)
        {
            return Err(ControlError::NoSuchSnapshot {
                vm: name.into(),
                tag: tag.into(),
            });
        }
        let was_running = self.pause_for_snapshot(name)?;
        let vm = self.vm;
        match crate::snapshot::rollback(vm, self.vcpu, tag) {
            Ok(()) => {
                vm.run
                    .paused_at
                    .store(read_sysreg!("CNTPCT_EL0"), Ordering::Release);
                self.continue_after_snapshot(name, was_running)
            }
            Err(crate::snapshot::RollbackError::NoSuch) => {
                self.continue_after_snapshot(name, was_running)?;
                Err(ControlError::NoSuchSnapshot {
                    vm: name.into(),
                    tag: tag.into(),
                })
            }
            Err(crate::snapshot::RollbackError::Refused(why)) => {
                self.continue_after_snapshot(name, was_running)?;
                Err(ControlError::Failed {
                    vm: name.into(),
                    why: format!("{why}; nothing was changed"),
                })
            }
            Err(crate::snapshot::RollbackError::Partial(why)) => Err(ControlError::Failed {
                vm: name.into(),
                why: format!("{why}; the VM stays paused"),
            }),
        }
    }

    fn snapshots(&self, name: &str) -> Result<Vec<SnapshotInfo>, ControlError> {
        self.snapshot_vm(name)?;
        Ok(crate::snapshot::list()
            .into_iter()
            .chain(crate::snapshot::list_disk(self.vm))
            .map(|s| SnapshotInfo {
                tag: s.tag,
                store: if s.disk {
                    SnapshotStore::Disk
                } else {
                    SnapshotStore::Memory
                },
                bytes: s.bytes,
                note: s.note,
            })
            .collect())
    }

    fn delete_snapshot(&mut self, name: &str, tag: &str) -> Result<(), ControlError> {
        self.snapshot_vm(name)?;
        match crate::snapshot::delete(self.vm, tag) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ControlError::NoSuchSnapshot {
                vm: name.into(),
                tag: tag.into(),
            }),
            Err(why) => Err(ControlError::Failed {
                vm: name.into(),
                why,
            }),
        }
    }

    /// Every guest that is not off, the others first and this command's own
    /// last: suspended when its policy says so, else powered off. A failure
    /// stops there and the host stays up (a VM to suspend is never powered off
    /// in its place); the VMs done before stay stopped, as the error says.
    fn host_shutdown(&mut self) -> Result<ShutdownReport, ControlError> {
        let own = self.vm;
        let mut report = ShutdownReport {
            powered_off: Vec::new(),
            suspended: Vec::new(),
        };
        // The others first, then the guest running this call (if a guest does:
        // the partition's own vCPU serves calls once no guest runs).
        let guests = crate::guests::all();
        let order = guests
            .iter()
            .filter(|g| !core::ptr::eq(**g, own))
            .chain(guests.iter().filter(|g| core::ptr::eq(**g, own)))
            .copied();
        for vm in order {
            if Self::state(vm) == VmState::Off {
                continue;
            }
            let done_before = |r: &ShutdownReport| {
                if r.suspended.is_empty() && r.powered_off.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (before it: suspended [{}], powered off [{}])",
                        r.suspended.join(" "),
                        r.powered_off.join(" ")
                    )
                }
            };
            if vm.run.suspend_on_host_shutdown.load(Ordering::Relaxed) {
                if let Err(e) = self.suspend_vm(vm) {
                    log::warn!(
                        "host shutdown stopped at VM '{}'{}",
                        vm.name,
                        done_before(&report)
                    );
                    return Err(e);
                }
                log::info!("VM '{}' suspended (host shutdown)", vm.name);
                report.suspended.push(vm.name.clone());
                continue;
            }
            if !self.stop_vm(vm) {
                return Err(ControlError::Failed {
                    vm: vm.name.clone(),
                    why: format!(
                        "a vCPU did not stop within 5 s of the power-off request; the VM is stopping, the host stays up{}",
                        done_before(&report)
                    ),
                });
            }
            log::info!("VM '{}' powered off (host shutdown)", vm.name);
            report.powered_off.push(vm.name.clone());
        }
        Ok(report)
    }

    fn display(&mut self, name: &str, change: DisplayChange) -> Result<(), ControlError> {
        let vm = self.find(name)?;
        crate::display::change(vm, self.kick_from(vm), change).map_err(|why| {
            ControlError::Invalid {
                vm: name.into(),
                why,
            }
        })
    }

    fn display_overlay(&mut self, text: &str) -> Result<(), ControlError> {
        crate::display::set_overlay(text).map_err(|_| ControlError::Unsupported {
            what: String::from("display overlay"),
            why: crate::display::HEADLESS,
        })
    }

    fn input(
        &mut self,
        name: &str,
        action: monitor::command::InputAction,
    ) -> Result<String, ControlError> {
        let vm = self.find(name)?;
        crate::input::command(vm, action, self.kick_from(vm)).map_err(|why| ControlError::Invalid {
            vm: vm.name.clone(),
            why,
        })
    }

    /// Every guest's presentation, the primary's first.
    fn display_status(&self) -> Result<String, ControlError> {
        let all: Vec<String> = crate::guests::all()
            .iter()
            .map(|vm| crate::display::status(vm))
            .collect();
        Ok(all.join(" | "))
    }

    fn usb(&mut self, name: &str, op: monitor::command::UsbOp) -> Result<(), ControlError> {
        use monitor::command::UsbOp;
        let vm = self.find(name)?;
        let usb = vm.usb.as_ref().ok_or_else(|| ControlError::Unsupported {
            what: alloc::format!("usb on vm {name}"),
            why: "the VM has no xHCI controller (cargo xtask run --usb)",
        })?;
        let invalid = |e: xhci::HostError| ControlError::Invalid {
            vm: name.into(),
            why: alloc::format!("{e}"),
        };
        match op {
            UsbOp::DetachStorage | UsbOp::AttachStorage if !usb.has_storage() => {
                Err(ControlError::Invalid {
                    vm: name.into(),
                    why: String::from("the VM has no USB storage device"),
                })
            }
            UsbOp::DetachStorage => usb.detach_storage().map_err(invalid),
            UsbOp::AttachStorage => usb.attach_storage().map_err(invalid),
        }
    }
}

impl El2Control<'_> {
    /// Stops every vCPU of `vm` at a checkpoint (parked) and keeps them there.
    fn pause_vm(&mut self, vm: &Vm) -> Result<(), ControlError> {
        let name = vm.name.as_str();
        match Self::state(vm) {
            VmState::Running => {}
            VmState::Paused => return Err(ControlError::AlreadyPaused(name.into())),
            state => {
                return Err(ControlError::NotRunning {
                    vm: name.into(),
                    state,
                })
            }
        }
        vm.run.paused_at.store(0, Ordering::Release);
        vm.run.pause.store(true, Ordering::Release);
        let here = self.here_in(vm);
        if self.wait_all(vm, |i| stopped(vm, i, here)) {
            // This vCPU parks when the command returns: its time counts from here.
            vm.run
                .paused_at
                .fetch_max(read_sysreg!("CNTPCT_EL0"), Ordering::AcqRel);
            return Ok(());
        }
        // Not every vCPU stopped: let the parked ones go with the offset unchanged
        // (the others never stopped, so guest time must not move for them).
        vm.run.pause.store(false, Ordering::Release);
        Err(ControlError::Timeout {
            vm: name.into(),
            what: "waiting for every vCPU to stop",
        })
    }

    /// Lets a paused `vm` run again, its virtual time continuing from the pause.
    fn resume_vm(&mut self, vm: &Vm) -> Result<(), ControlError> {
        let state = Self::state(vm);
        if state != VmState::Paused {
            return Err(ControlError::NotPaused {
                vm: vm.name.clone(),
                state,
            });
        }
        let now = read_sysreg!("CNTPCT_EL0");
        let stood = now.saturating_sub(vm.run.paused_at.load(Ordering::Acquire));
        vm.run.cntvoff.fetch_add(stood, Ordering::AcqRel);
        log::info!(
            "VM '{}': resumed; guest virtual time held for {} ms",
            vm.name,
            stood * 1000 / read_sysreg!("CNTFRQ_EL0").max(1)
        );
        vm.run.pause.store(false, Ordering::Release);
        vm.kick_others(self.here_in(vm).unwrap_or(usize::MAX));
        Ok(())
    }
}
