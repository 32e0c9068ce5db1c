//! The authority partition (issue 16): RayOS's privileged partition, a second VM
//! beside the guest with its own stage-2 (its own VMID and RAM, nothing of the
//! guest's mapped), scheduled above the guest's vCPUs on the same physical CPUs,
//! and the only caller the authority ABI answers.
//!
//! - **Loading.** `cargo xtask run --authority` has QEMU's loader device put the
//!   partition's flat image (`guests/authority`) in host memory and names it with
//!   the hypervisor option `rayos.authority=BASE,SIZE`
//!   (`boards::devices::authority_image`). el2 keeps that range out of every
//!   allocation, gives the partition [`RAM_BYTES`] of RAM at the guest platform's
//!   RAM base, copies the image to [`LOAD_IPA`] and starts its one vCPU there at
//!   EL1h, MMU off, x0 = 0 (the partition's contract, `guests/authority`). Its
//!   devices are a guest platform's (it uses the PL011 alone), without a TPM.
//! - **Console.** Host console input goes to the partition's PL011, not the
//!   guest's (`wait::pump_console`); both print to the serial line.
//! - **Calls.** An authority `HVC #0` in the vendor-specific hypervisor range is
//!   posted here and the partition's vCPU waits; a guest vCPU runs it at its next
//!   checkpoint (`control::serve_authority`, where monitor lines run: the VM
//!   operations need a vCPU of the VM at a clean point) through
//!   `monitor::abi::Dispatcher` over el2's `VmControl`, and wakes the partition
//!   with the answer. Any other caller of the range gets NOT_SUPPORTED (`trap`).

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use arch::relax::Mutex;
use arch::smccc::{CpuPower, PowerTopology};
use boards::guest;
use monitor::abi::{AuthorityMemory, Dispatcher, Outcome};
use vdev::GuestMemory;

use crate::guestram::GuestRam;
use crate::vm::{StartRequest, Vcpu, Vm};

/// The partition's RAM.
pub const RAM_BYTES: u64 = 32 << 20;
/// Where its image is loaded and entered.
pub const LOAD_IPA: u64 = guest::RAM_BASE + 0x8_0000;
/// Its vCPU's scheduling priority: above every guest's, so it answers under load.
pub const PRIORITY: u8 = 1;
/// Its stage-2 VMID (the guest's is 1).
pub const VMID: u16 = 2;
/// How often the partition's waiting vCPU looks for its answer, in microseconds
/// (the guest vCPU serving the call wakes it at once; this is the fallback).
const POLL_US: u64 = 1000;

static AUTHORITY: AtomicPtr<Vm> = AtomicPtr::new(core::ptr::null_mut());
/// The guest VM the partition's calls act on.
static GUEST: AtomicPtr<Vm> = AtomicPtr::new(core::ptr::null_mut());

/// A call waiting for a guest vCPU's checkpoint, and its answer.
static REQUEST: Mutex<Option<[u64; 8]>> = Mutex::new(None);
static ANSWER: Mutex<Option<Outcome>> = Mutex::new(None);
static CALL_PENDING: AtomicBool = AtomicBool::new(false);
/// The partition's session.
static SESSION: Mutex<Option<Dispatcher>> = Mutex::new(None);

/// The partition, if one runs.
pub fn get() -> Option<&'static Vm> {
    // SAFETY: AUTHORITY is set once (`start`) to a leaked Box, never freed.
    unsafe { AUTHORITY.load(Ordering::Acquire).as_ref() }
}

/// Whether `vm` is the authority partition.
pub fn is(vm: &Vm) -> bool {
    core::ptr::eq(AUTHORITY.load(Ordering::Acquire), vm)
}

/// Builds the partition's VM around `image` (its flat binary): RAM from
/// `ram_pa`, the image copied in, vCPU 0 set to start at [`LOAD_IPA`]; it is
/// scheduler task `task_base`.
pub fn build(
    image: &[u8],
    ram_pa: u64,
    layout: stage2::Layout,
    task_base: usize,
) -> Result<Vm, alloc::string::String> {
    use alloc::format;
    if image.len() as u64 > RAM_BYTES - (LOAD_IPA - guest::RAM_BASE) {
        return Err(format!(
            "its image ({} bytes) does not fit its {} MiB of RAM",
            image.len(),
            RAM_BYTES >> 20
        ));
    }
    let ram = GuestRam::new(guest::RAM_BASE, ram_pa, RAM_BYTES, layout, VMID)
        .map_err(|e| format!("stage-2 tables: {e:?}"))?;
    let shape = crate::vm::DeviceShape {
        profile: boards::devices::Profile::LinuxDt,
        pcie: false,
        msi: boards::devices::Msi::V2m,
        framebuffer: None,
        vars_bank_size: 0,
        tpm: false,
        console: crate::console::AUTHORITY_SLOT,
    };
    let mut vm = Vm::new("authority", ram, 1, alloc::vec::Vec::new(), None, shape)
        .map_err(|e| format!("{e:?}"))?;
    vm.task_base = task_base;
    let mut mem = vm.ram;
    mem.write(LOAD_IPA, image)
        .map_err(|e| format!("loading its image: {e:?}"))?;
    *vm.start[0].lock() = Some(StartRequest {
        entry: LOAD_IPA,
        x0: 0,
    });
    Ok(vm)
}

/// Starts the partition `vm` (from [`build`]) beside `guest`, whose operations
/// its calls perform.
pub fn start(vm: Vm, guest: &'static Vm) {
    let vm: &'static Vm = alloc::boxed::Box::leak(alloc::boxed::Box::new(vm));
    GUEST.store(guest as *const Vm as *mut Vm, Ordering::Release);
    AUTHORITY.store(vm as *const Vm as *mut Vm, Ordering::Release);
    *SESSION.lock() = Some(Dispatcher::new());
    // The shell has an escape of its own (Ctrl-] ends `attach`): every typed
    // byte goes to the partition, and the monitor is its `vm …` commands.
    crate::console::pass_escape();
    crate::smp::register(vm, PRIORITY);
    if let Err(e) = crate::smp::start_vcpu(vm, 0, false) {
        crate::fatal(format_args!(
            "the authority partition did not start (PSCI {e})"
        ));
    }
    log::info!(
        "authority partition: {} MiB RAM at IPA {:#x}, entered at {LOAD_IPA:#x}, priority {PRIORITY} (guests 0), VMID {VMID}",
        RAM_BYTES >> 20,
        guest::RAM_BASE
    );
}

/// Calls that touch no VM's execution — the session's own (VERSION, REPLY), the
/// VM list, a console's bytes (`attach` polls CONSOLE_READ every 5 ms), the
/// reserved key: they run on the partition's own vCPU at once, where the
/// others wait for a guest vCPU's checkpoint (a VM at a clean point), so an
/// attached console does not interrupt the guest 200 times a second.
fn runs_on_partition(fid: u64) -> bool {
    use authority_abi::call::func;
    [
        func::VERSION,
        func::REPLY,
        func::VM_LIST,
        func::CONSOLE_READ,
        func::CONSOLE_WRITE,
        func::RESERVE_KEY,
    ]
    .iter()
    .any(|&n| fid == u64::from(authority_abi::fid(n)))
}

/// An authority `HVC #0` in the ABI's range (x0..x7 in `vcpu`): runs it here
/// ([`runs_on_partition`]) or posts it for a guest vCPU, and waits for the
/// answer, which goes to x0 (x1..x3 cleared).
pub fn call(vm: &Vm, vcpu: &mut Vcpu) {
    let mut x = [0u64; 8];
    x.copy_from_slice(&vcpu.regs.x[..8]);
    let here = runs_on_partition(x[0]);
    *ANSWER.lock() = None;
    *REQUEST.lock() = Some(x);
    CALL_PENDING.store(true, Ordering::Release);
    let ticks = crate::el1::read_sysreg!("CNTFRQ_EL0").max(1) * POLL_US / 1_000_000;
    let outcome = loop {
        if let Some(o) = ANSWER.lock().take() {
            break o;
        }
        if here || crate::guests::still_on() == 0 {
            // No guest vCPU need (or will) reach a checkpoint: the call runs here
            // (unless a guest's checkpoint is running it: then its answer comes).
            crate::control::serve_on_partition(vm, vcpu);
            if ANSWER.lock().is_some() {
                continue;
            }
        } else {
            wake_a_guest_vcpu();
        }
        crate::smp::sleep_vcpu(vm, vcpu, ticks.max(1));
    };
    vcpu.regs.x[0] = outcome.x0;
    for r in &mut vcpu.regs.x[1..4] {
        *r = 0;
    }
    if outcome.after == monitor::After::PowerOffHost {
        log::info!("host shutdown (authority partition): powering off");
        crate::power::shutdown(0);
    }
}

/// The guest VM the partition's calls act on, if a partition runs.
pub fn guest() -> Option<&'static Vm> {
    // SAFETY: GUEST is set once (`start`) to a `&'static Vm`.
    unsafe { GUEST.load(Ordering::Acquire).as_ref() }
}

/// Posts the event `make(id)` — `id` being `vm`'s ABI id — on the partition's
/// event ring. `false` when the session is busy with a call (post it again
/// later); `true` once posted, or when there is no partition or session to tell
/// (a full or scribbled ring loses the event, counted by the dispatcher).
pub fn notify(
    vm: &Vm,
    make: impl FnOnce(authority_abi::call::VmId) -> authority_abi::ring::Event,
) -> bool {
    let Some(auth) = get() else {
        return true;
    };
    let Some(mut session) = SESSION.try_lock() else {
        return false;
    };
    let Some(d) = session.as_mut() else {
        return true;
    };
    let ev = make(d.id_of(&vm.name));
    let mut mem = PartitionMemory(auth.ram);
    if let Err(e) = d.notify(&ev, &mut mem) {
        log::debug!(
            "authority event {ev:?} lost: {e:?} ({} lost so far)",
            d.lost_events()
        );
    }
    true
}

/// Physical input RayOS keeps (`Event::Input` no guest took, the reserved
/// chord's `Event::ReservedKey`), waiting for the event ring while the session
/// is busy with a call; at most [`KEPT_MAX`], the oldest `Event::Input` dropped
/// (and logged) past that.
static KEPT: Mutex<alloc::collections::VecDeque<authority_abi::ring::Event>> =
    Mutex::new(alloc::collections::VecDeque::new());
static KEPT_WAITING: AtomicBool = AtomicBool::new(false);
const KEPT_MAX: usize = 256;

/// Hands physical input that is RayOS's to the partition (`Event::Input` no
/// guest took, `Event::ReservedKey`): on its ring, now or at the next
/// [`post_kept`]. Nothing without a partition.
pub fn keep_input(events: &[authority_abi::ring::Event]) {
    if get().is_none() || events.is_empty() {
        return;
    }
    {
        let mut q = KEPT.lock();
        for e in events {
            if q.len() == KEPT_MAX {
                // The oldest plain input event goes (a reserved key's press
                // stays while there is one to drop instead).
                let at = q
                    .iter()
                    .position(|k| matches!(k, authority_abi::ring::Event::Input { .. }))
                    .unwrap_or(0);
                q.remove(at);
                log::warn!("authority: physical input for RayOS dropped: {KEPT_MAX} events wait for its ring");
            }
            q.push_back(*e);
        }
    }
    KEPT_WAITING.store(true, Ordering::Release);
    post_kept();
}

/// Posts the kept input waiting for the ring, unless a call holds the session
/// (then the next call of this, from the render loop's occasions, does).
pub fn post_kept() {
    if !KEPT_WAITING.load(Ordering::Acquire) {
        return;
    }
    let Some(auth) = get() else {
        return;
    };
    let Some(mut session) = SESSION.try_lock() else {
        return;
    };
    let Some(d) = session.as_mut() else {
        return;
    };
    let mut mem = PartitionMemory(auth.ram);
    let mut q = KEPT.lock();
    while let Some(ev) = q.pop_front() {
        if let Err(e) = d.notify(&ev, &mut mem) {
            log::debug!(
                "authority event {ev:?} lost: {e:?} ({} lost so far)",
                d.lost_events()
            );
        }
    }
    KEPT_WAITING.store(false, Ordering::Release);
}

/// Wakes a powered-on vCPU of the guest to reach its checkpoint.
fn wake_a_guest_vcpu() {
    // The primary first: it takes the calls while it runs (`control::run_pending`).
    let running = guest()
        .into_iter()
        .chain(crate::guests::all().iter().copied())
        .filter(|g| g.stopping() != Some(crate::vm::StopReason::PoweredOff));
    for g in running {
        if let Some(i) = (0..g.vcpus()).find(|&i| g.power(i) == CpuPower::On) {
            crate::smp::wake_vcpu(g, i);
            return;
        }
    }
}

/// Whether an authority call waits for a guest checkpoint.
#[inline(always)]
pub fn call_pending() -> bool {
    CALL_PENDING.load(Ordering::Acquire)
}

/// Runs the waiting call, if any, on `target` — at a guest vCPU's checkpoint,
/// then waking the partition with its answer, or on the partition's own vCPU
/// (`on_partition`), which must not wake itself: a wake-up left pending would
/// end its next WFI at once, and the partition, scheduled above the guests,
/// would spin its idle loop and starve a guest sharing its CPU.
pub fn serve(target: &mut dyn monitor::abi::AbiTarget, on_partition: bool) {
    let Some(x) = REQUEST.lock().take() else {
        return;
    };
    CALL_PENDING.store(false, Ordering::Release);
    let Some(auth) = get() else {
        return;
    };
    let mut mem = PartitionMemory(auth.ram);
    let outcome = match SESSION.lock().as_mut() {
        Some(d) => {
            let before = d.refused().0;
            let o = d.call(x, target, &mut mem);
            if let (n, Some((fid, status))) = d.refused() {
                if n > before {
                    log::debug!("authority call {fid:#x} refused: {status:?} ({n} so far)");
                }
            }
            o
        }
        None => return,
    };
    *ANSWER.lock() = Some(outcome);
    if !on_partition {
        crate::smp::wake_vcpu(auth, 0);
    }
}

/// The partition's RAM as the ABI dispatcher reads and writes it.
struct PartitionMemory(GuestRam);

impl AuthorityMemory for PartitionMemory {
    fn contains(&self, ipa: u64, len: u64) -> bool {
        let ram = self.0.ipa()..self.0.ipa() + self.0.size();
        len > 0 && ram.contains(&ipa) && ipa.checked_add(len).is_some_and(|end| end <= ram.end)
    }
    fn read(&self, ipa: u64, buf: &mut [u8]) {
        if let Err(e) = self.0.read(ipa, buf) {
            log::warn!("authority memory {ipa:#x}+{}: {e:?}", buf.len());
            buf.fill(0);
        }
    }
    fn write(&mut self, ipa: u64, buf: &[u8]) {
        if let Err(e) = self.0.write(ipa, buf) {
            log::warn!("authority memory {ipa:#x}+{}: {e:?}", buf.len());
        }
    }
    fn store_barrier(&mut self) {
        // SAFETY: a barrier: orders this CPU's earlier stores before its later ones
        // as the inner-shareable domain sees them; no memory is accessed.
        unsafe { core::arch::asm!("dmb ishst", options(nostack, preserves_flags)) };
    }
}
