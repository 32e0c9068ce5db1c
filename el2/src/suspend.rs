//! Suspend to the system disk and resume on boot: el2's side of `vmstate`. This
//! module gathers register state on each vCPU's own physical CPU (where its EL1
//! state is live), drains the devices, hands `vmstate` the bytes and does the I/O;
//! applying a saved state puts it back. The format, the commit protocol and the
//! resume-or-cold-boot decision are `vmstate`'s (host-tested).
//!
//! **Suspend** (`suspend_vm`, run by the monitor on vCPU `here` of a VM whose other
//! vCPUs are parked or off): every parked vCPU is asked to capture its state
//! ([`on_park`]) and `here` captures its own; guest requests still in flight in a
//! virtio-blk device are completed (drained) so the queues say everything; the vGIC
//! (list registers already synced back on the exit that brought each vCPU here) and
//! every device save; guest time is taken; `vmstate::suspend` writes the image and
//! commits the registry. The VM then powers off: its disk must not change after
//! the image was taken.
//!
//! **Resume** (`resume_vm`, at boot, before any vCPU runs): the image is read and
//! checked, RAM filled, devices restored, the image consumed (registry commit), then
//! CNTVOFF_EL2 is chosen so guest virtual time continues from the saved count and the
//! vCPUs that were on start from their saved state. Anything refused on the way is
//! logged and the VM cold boots (`prepare_boot` resets RAM and every device).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use arch::smccc::{CpuPower, PowerTopology};
use registry::Blob;
use vdev::{InterruptSink, RestoreError, SaveRestore, Shared};
use virtio::{MmioTransport, VirtioDevice};
use vmstate::{ColdReason, DeviceState, Fingerprint, Power, TimeState, VcpuState};

use crate::el1::{read_sysreg, El1Context, FpState};
use crate::sysdisk::{DmaQueue, SystemDisk};
use crate::vm::{GuestRam, Vcpu, VgicSink, Vm};

/// How long a suspend waits for parked vCPUs to capture and for in-flight guest
/// requests to complete, in milliseconds.
const WAIT_MS: u64 = 10_000;
/// How often it looks again, in milliseconds.
const POLL_MS: u64 = 1;

/// A VM was suspended: once its command has answered, the host powers off (no VM
/// is left to run).
static SUSPENDED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether a VM was suspended (and so stopped for good).
pub fn suspended() -> bool {
    SUSPENDED.load(Ordering::Acquire)
}

/// A device whose state a suspend saves: the one trait every saved device is
/// reached through (`vdev::SaveRestore` underneath, which is not object-safe).
pub trait DeviceHandle: Send + Sync {
    fn save(&self) -> Vec<u8>;
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError>;
    /// Guest requests started and not yet completed (a suspend waits for none).
    fn in_flight(&self) -> usize {
        0
    }
    /// After every device was restored: re-drive its interrupt line from its state.
    fn after_restore(&self, _mem: &mut GuestRam, _irq: &mut dyn InterruptSink) {}
}

impl<T: SaveRestore + Send> DeviceHandle for Shared<T> {
    fn save(&self) -> Vec<u8> {
        self.0.lock().save()
    }
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError> {
        self.0.lock().restore(blob)
    }
}

impl DeviceHandle for vgic::its::SharedIts {
    fn save(&self) -> Vec<u8> {
        self.lock().save()
    }
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError> {
        self.lock().restore(blob)
    }
}

impl DeviceHandle for vgic::SharedVgic {
    fn save(&self) -> Vec<u8> {
        self.lock().save()
    }
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError> {
        self.lock().restore(blob)
    }
}

/// A virtio-mmio transport, with how to count its device's requests in flight.
pub struct VirtioHandle<D: VirtioDevice> {
    pub transport: Shared<MmioTransport<D>>,
    pub in_flight: fn(&D) -> usize,
}

impl<D: VirtioDevice + Send> DeviceHandle for VirtioHandle<D> {
    fn save(&self) -> Vec<u8> {
        self.transport.0.lock().save()
    }
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError> {
        self.transport.0.lock().restore(blob)
    }
    fn in_flight(&self) -> usize {
        (self.in_flight)(self.transport.0.lock().device())
    }
    fn after_restore(&self, mem: &mut GuestRam, irq: &mut dyn InterruptSink) {
        self.transport.0.lock().poll(mem, irq);
    }
}

/// The PCI Express root complex with every function behind it (its windows on
/// the bus share it), counting the NVMe controller's commands in flight.
pub struct PcieHandle(pub alloc::sync::Arc<spin::Mutex<pci::RootComplex>>);

impl DeviceHandle for PcieHandle {
    fn save(&self) -> Vec<u8> {
        self.0.lock().save()
    }
    fn restore(&self, blob: &[u8]) -> Result<(), RestoreError> {
        self.0.lock().restore(blob)
    }
    fn in_flight(&self) -> usize {
        self.0.lock().in_flight()
    }
    /// Runs what the restored functions hold: commands saved as held run again
    /// and submission queue entries rung but not fetched are fetched (a drained
    /// suspend leaves none of the first; the second waits on a full queue).
    fn after_restore(&self, mem: &mut GuestRam, irq: &mut dyn InterruptSink) {
        let mut rc = self.0.lock();
        if rc.has_work() {
            let mut ctx = vdev::MmioContext { vcpu: 0, mem, irq };
            rc.poll(&mut ctx);
        }
    }
}

/// A device on the VM's bus whose state is saved, by its bus name and base.
pub struct SavedDevice {
    pub name: &'static str,
    pub base: u64,
    pub handle: Box<dyn DeviceHandle>,
}

/// The configuration a saved image must match to be resumed into `vm`.
pub fn fingerprint(vm: &Vm) -> Fingerprint {
    Fingerprint {
        uuid: vm.identity.map_or([0; 16], |u| u.0),
        vcpus: vm.vcpus() as u32,
        memory_bytes: vm.ram.size(),
        ram_ipa: vm.ram.ipa(),
        devices_crc: vmstate::format::device_layout_crc(
            vm.saved_devices.iter().map(|d| (d.name, d.base)),
        ),
    }
}

/// Milliseconds as system-counter ticks.
fn ms_ticks(ms: u64) -> u64 {
    read_sysreg!("CNTFRQ_EL0").max(1) * ms / 1000
}

/// `vcpu`'s state, read on the physical CPU that runs it (its EL1 state and its
/// virtual CPU interface are live there).
pub fn capture(vm: &Vm, vcpu: &mut Vcpu) -> VcpuState {
    vcpu.el1.save();
    let El1Context {
        sctlr,
        actlr,
        cpacr,
        ttbr0,
        ttbr1,
        tcr,
        mair,
        amair,
        vbar,
        contextidr,
        tpidr_el0,
        tpidrro_el0,
        tpidr_el1,
        sp_el0,
        sp_el1,
        elr_el1,
        spsr_el1,
        esr_el1,
        far_el1,
        afsr0,
        afsr1,
        par,
        csselr,
        cntkctl,
        cntv_ctl,
        cntv_cval,
        mdscr,
        fp: FpState { q, fpcr, fpsr },
    } = vcpu.el1;
    VcpuState {
        x: vcpu.regs.x,
        pc: vcpu.regs.pc,
        pstate: vcpu.regs.pstate,
        el1: vmstate::El1Regs {
            sctlr,
            actlr,
            cpacr,
            ttbr0,
            ttbr1,
            tcr,
            mair,
            amair,
            vbar,
            contextidr,
            tpidr_el0,
            tpidrro_el0,
            tpidr_el1,
            sp_el0,
            sp_el1,
            elr_el1,
            spsr_el1,
            esr_el1,
            far_el1,
            afsr0,
            afsr1,
            par,
            csselr,
            cntkctl,
            cntv_ctl,
            cntv_cval,
            mdscr,
        },
        q,
        fpcr,
        fpsr,
        ich_vmcr: read_sysreg!("ICH_VMCR_EL2"),
        ich_ap0r0: read_sysreg!("ICH_AP0R0_EL2") as u32,
        ich_ap1r0: read_sysreg!("ICH_AP1R0_EL2") as u32,
        ptimer_ctl: vcpu.ptimer.ctl,
        ptimer_cval: vcpu.ptimer.cval,
        vtimer_raised: vcpu.vtimer_raised,
        power: if vm.power(vcpu.idx) == CpuPower::Off {
            Power::Off
        } else {
            Power::On
        },
    }
}

/// Puts a saved state into a new `vcpu` before it first enters the guest
/// (`run` loads the EL1 context and the virtual CPU interface from it).
pub fn apply(vcpu: &mut Vcpu, st: &VcpuState) {
    let vmstate::El1Regs {
        sctlr,
        actlr,
        cpacr,
        ttbr0,
        ttbr1,
        tcr,
        mair,
        amair,
        vbar,
        contextidr,
        tpidr_el0,
        tpidrro_el0,
        tpidr_el1,
        sp_el0,
        sp_el1,
        elr_el1,
        spsr_el1,
        esr_el1,
        far_el1,
        afsr0,
        afsr1,
        par,
        csselr,
        cntkctl,
        cntv_ctl,
        cntv_cval,
        mdscr,
    } = st.el1;
    vcpu.regs.x = st.x;
    vcpu.regs.pc = st.pc;
    vcpu.regs.pstate = st.pstate;
    vcpu.el1 = El1Context {
        sctlr,
        actlr,
        cpacr,
        ttbr0,
        ttbr1,
        tcr,
        mair,
        amair,
        vbar,
        contextidr,
        tpidr_el0,
        tpidrro_el0,
        tpidr_el1,
        sp_el0,
        sp_el1,
        elr_el1,
        spsr_el1,
        esr_el1,
        far_el1,
        afsr0,
        afsr1,
        par,
        csselr,
        cntkctl,
        cntv_ctl,
        cntv_cval,
        mdscr,
        fp: FpState {
            q: st.q,
            fpcr: st.fpcr,
            fpsr: st.fpsr,
        },
    };
    vcpu.cpuif = crate::vm::CpuInterface {
        vmcr: st.ich_vmcr,
        ap0r0: u64::from(st.ich_ap0r0),
        ap1r0: u64::from(st.ich_ap1r0),
    };
    vcpu.ptimer = arch::timer::EmulatedTimer {
        ctl: st.ptimer_ctl,
        cval: st.ptimer_cval,
    };
    vcpu.vtimer_raised = st.vtimer_raised;
}

/// Called by a vCPU parked at a monitor checkpoint: captures its state once when a
/// suspend asks for it.
pub fn on_park(vm: &Vm, vcpu: &mut Vcpu) {
    if vm.capture.load(Ordering::Acquire) {
        let mut slot = vm.captured[vcpu.idx].lock();
        if slot.is_none() {
            *slot = Some(Box::new(capture(vm, vcpu)));
        }
    }
}

/// Guest RAM as `vmstate` reads and fills it.
pub struct Ram(pub GuestRam);

impl vmstate::RamImage for Ram {
    fn blocks(&self) -> u32 {
        self.0.blocks()
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.0.populated_block(b)
    }
}

impl vmstate::RamSink for Ram {
    fn write_page(&mut self, b: u32, page: u32, data: &[u8]) {
        // `b` and `page` come from a checked index (inside RAM).
        self.0
            .restore_page(b, page as usize * vmstate::PAGE_SIZE, data);
    }
    fn end_block(&mut self, b: u32, zero: &vmstate::ZeroMap) {
        self.0
            .finish_restored_block(b, |p| zero.is_zero(p), vmstate::PAGE_SIZE);
    }
}

/// Guest RAM and the system disk as `vmstate` moves RAM between them: DMA
/// straight from and to guest RAM, many requests in flight ([`sysdisk::DmaQueue`]),
/// no copies. Waits for every transfer when dropped. Suspend and resume use it,
/// and disk snapshots (`crate::snapshot`) to take one and to roll back to one.
pub struct Io {
    disk: TimedDisk,
    ram: GuestRam,
    q: DmaQueue,
    /// Counter ticks spent waiting for transfers and finishing blocks (the log's
    /// breakdown of where a suspend or resume spends its time).
    wait_ticks: u64,
    finish_ticks: u64,
    /// Counter ticks spent starting transfers (waiting while the queue is full).
    start_ticks: u64,
    /// Resume: when the block being checked was handed out, and the ticks from
    /// there to its `end_block` (checksumming it).
    handed_out: core::cell::Cell<u64>,
    check_ticks: u64,
    /// Whether a restored block's DMA'd pages are cleaned to the point of
    /// coherency too (not only the pages EL2 zeroes): see [`Io::for_cacheable_guest`].
    clean_dma: bool,
}

impl Io {
    pub fn new(disk: vdev::SharedBlock<SystemDisk>, ram: GuestRam) -> Self {
        Io {
            disk: TimedDisk { disk, ticks: 0 },
            ram,
            q: DmaQueue::default(),
            wait_ticks: 0,
            finish_ticks: 0,
            start_ticks: 0,
            handed_out: core::cell::Cell::new(0),
            check_ticks: 0,
            clean_dma: true,
        }
    }

    /// Restored blocks will be read by a guest whose data accesses are cacheable
    /// (`cacheable`: every vCPU that runs has SCTLR_EL1.M and .C set,
    /// [`data_cacheable`]): their DMA'd pages are left as the system disk, a
    /// cache-coherent device, wrote them — at the point of coherency, with at most
    /// clean copies in the cache (the checksum's reads) — and only the pages EL2
    /// zeroes are cleaned (`GuestRam::finish_dma_block`). Cleaning every line of
    /// every block was a fifth of a resume under QEMU (a DC CIVAC per 64 bytes).
    pub fn for_cacheable_guest(mut self, cacheable: bool) -> Self {
        self.clean_dma = !cacheable;
        self
    }

    /// Counter ticks spent finishing restored blocks (zeroing, cleaning, mapping).
    pub fn finish_ticks(&self) -> u64 {
        self.finish_ticks
    }

    /// Block `b`'s bytes `[off, off + len)` as a physical range, checked.
    fn range(&self, b: u32, off: usize, len: usize) -> Result<u64, vdev::BlockError> {
        match self.ram.block_pa(b) {
            Some((pa, blen)) if off.checked_add(len).is_some_and(|e| e <= blen) => {
                Ok(pa + off as u64)
            }
            _ => Err(vdev::BlockError::OutOfRange),
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        let _ = self.disk.disk.0.lock().dma_wait(&mut self.q, u64::MAX);
    }
}

impl vmstate::RamImage for Io {
    fn blocks(&self) -> u32 {
        self.ram.blocks()
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.ram.populated_block(b)
    }
}

impl vmstate::RamIo for Io {
    fn disk(&mut self) -> &mut dyn vdev::BlockBackend {
        &mut self.disk
    }
    fn start_write(
        &mut self,
        b: u32,
        off: usize,
        len: usize,
        at: u64,
    ) -> Result<u64, vdev::BlockError> {
        let pa = self.range(b, off, len)?;
        if !self.ram.is_populated(b) {
            return Err(vdev::BlockError::OutOfRange);
        }
        let t = read_sysreg!("CNTPCT_EL0");
        // SAFETY: a populated block of the VM's RAM (identity-mapped, never freed);
        // the VM is paused and its devices drained (a suspend or a disk snapshot),
        // so nothing writes it until the writer, which waits for every transfer
        // (`wait`, `Drop`), is over.
        let r = unsafe {
            self.disk
                .disk
                .0
                .lock()
                .dma_start(&mut self.q, true, at, pa, len as u64)
        };
        self.start_ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
        r
    }
    fn start_read(
        &mut self,
        b: u32,
        off: usize,
        len: usize,
        at: u64,
    ) -> Result<u64, vdev::BlockError> {
        let pa = self.range(b, off, len)?;
        if self.ram.is_populated(b) {
            return Err(vdev::BlockError::OutOfRange);
        }
        let t = read_sysreg!("CNTPCT_EL0");
        // SAFETY: a block of the VM's RAM not yet populated (a resume, or a
        // rollback after `GuestRam::reset`, with every vCPU parked and the devices
        // drained): no vCPU maps it and no device reaches it; only `restored`
        // reads it, after `wait` saw this transfer complete (`Drop` waits for all
        // on any exit).
        let r = unsafe {
            self.disk
                .disk
                .0
                .lock()
                .dma_start(&mut self.q, false, at, pa, len as u64)
        };
        self.start_ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
        r
    }
    fn start_flush(&mut self) -> Result<(), vdev::BlockError> {
        let t = read_sysreg!("CNTPCT_EL0");
        let r = self.disk.disk.0.lock().dma_flush_start(&mut self.q);
        self.start_ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
        r.map(|_| ())
    }
    fn wait(&mut self, ticket: u64) -> Result<(), vdev::BlockError> {
        let t = read_sysreg!("CNTPCT_EL0");
        let r = self.disk.disk.0.lock().dma_wait(&mut self.q, ticket);
        self.wait_ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
        r
    }
    fn restored(&self, b: u32) -> &[u8] {
        self.handed_out.set(read_sysreg!("CNTPCT_EL0"));
        self.ram.staged_block(b)
    }
    fn end_block(&mut self, b: u32, zero: &vmstate::ZeroMap) {
        let t = read_sysreg!("CNTPCT_EL0");
        self.check_ticks += t.wrapping_sub(self.handed_out.get());
        self.ram
            .finish_dma_block(b, |p| zero.is_zero(p), vmstate::PAGE_SIZE, self.clean_dma);
        self.finish_ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
    }
    fn changed(&mut self, b: u32) -> vmstate::PageBits {
        self.ram.take_dirty(b)
    }
}

/// Whether a guest whose vCPUs that run hold these states accesses its RAM
/// cacheable: at least one runs, and each has its stage-1 MMU and data cache on
/// (SCTLR_EL1.M and SCTLR_EL1.C). Such a guest already shares its RAM with
/// caches, so clean lines of it in a cache are nothing new to it.
pub fn data_cacheable(vcpus: &[VcpuState]) -> bool {
    use aarch64_cpu::registers::SCTLR_EL1;
    let on = || vcpus.iter().filter(|v| v.power == Power::On);
    on().next().is_some()
        && on().all(|v| {
            let r = tock_registers::LocalRegisterCopy::<u64, SCTLR_EL1::Register>::new(v.el1.sctlr);
            r.is_set(SCTLR_EL1::M) && r.is_set(SCTLR_EL1::C)
        })
}

/// The system disk as `vmstate` reaches it for all but guest RAM (the small
/// sections, the index, the header, flushes, registry commits), with the counter
/// ticks spent there (the log's breakdown).
struct TimedDisk {
    disk: vdev::SharedBlock<SystemDisk>,
    ticks: u64,
}

impl TimedDisk {
    fn timed<T>(&mut self, f: impl FnOnce(&mut vdev::SharedBlock<SystemDisk>) -> T) -> T {
        let t = read_sysreg!("CNTPCT_EL0");
        let r = f(&mut self.disk);
        self.ticks += read_sysreg!("CNTPCT_EL0").wrapping_sub(t);
        r
    }
}

impl vdev::BlockBackend for TimedDisk {
    fn capacity(&self) -> u64 {
        self.disk.capacity()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), vdev::BlockError> {
        self.timed(|d| d.read_at(offset, buf))
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), vdev::BlockError> {
        self.timed(|d| d.write_at(offset, data))
    }
    fn flush(&mut self) -> Result<(), vdev::BlockError> {
        self.timed(|d| d.flush())
    }
}

/// What a completed suspend wrote.
pub struct Suspended {
    pub bytes: u64,
}

/// Waits until `done` holds, kicking `vm`'s vCPUs not parked; `false` after
/// [`WAIT_MS`]. With `sleeper` (the vCPU running this, of VM `.0`, which need
/// not be `vm`) the wait gives the physical CPU to the other vCPUs, which may
/// need it to get where `done` wants them; without, it naps on the EL2 timer.
/// `here` is the waiting vCPU's index in `vm` (`usize::MAX`: none of `vm`'s).
fn wait_until(
    vm: &Vm,
    here: usize,
    mut sleeper: Option<(&Vm, &mut Vcpu)>,
    mut done: impl FnMut() -> bool,
) -> bool {
    let deadline = read_sysreg!("CNTPCT_EL0").saturating_add(ms_ticks(WAIT_MS));
    loop {
        // Completions of guest requests come back through the system disk's
        // interrupt; take them here too and finish the requests.
        crate::sysdisk::service_interrupt();
        vm.resume_deferred((here < vm.vcpus()).then_some(here));
        if done() {
            return true;
        }
        if read_sysreg!("CNTPCT_EL0") >= deadline {
            return false;
        }
        vm.kick_others(here);
        match sleeper.as_mut() {
            Some((own, v)) => crate::smp::sleep_vcpu(own, v, ms_ticks(POLL_MS)),
            None => crate::timer::nap(ms_ticks(POLL_MS)),
        }
    }
}

/// A paused VM's state besides RAM, taken at one moment.
pub struct Machine {
    pub vcpus: Vec<VcpuState>,
    pub devices: Vec<DeviceState>,
    pub time: TimeState,
}

/// Captures every vCPU of `vm` (each where it runs: `here` now when it is one of
/// `vm`'s, i.e. `own` is `vm`; the parked ones in [`on_park`]), drains the
/// devices' guest requests and saves every device and guest time, from vCPU
/// `here` of VM `own` at a checkpoint, `vm` paused. Shared by suspend and
/// snapshots.
pub fn capture_machine(vm: &Vm, own: &Vm, here: &mut Vcpu) -> Result<Machine, String> {
    // 1. Every vCPU's state, each captured on its own physical CPU.
    for s in &vm.captured {
        *s.lock() = None;
    }
    vm.capture.store(true, Ordering::Release);
    let idx = if core::ptr::eq(vm, own) {
        *vm.captured[here.idx].lock() = Some(Box::new(capture(vm, here)));
        here.idx
    } else {
        usize::MAX
    };
    let all = wait_until(vm, idx, Some((own, &mut *here)), || {
        (0..vm.vcpus()).all(|i| vm.power(i) == CpuPower::Off || vm.captured[i].lock().is_some())
    });
    vm.capture.store(false, Ordering::Release);
    if !all {
        return Err(String::from(
            "a vCPU did not stop to have its state captured",
        ));
    }
    let vcpus: Vec<VcpuState> = (0..vm.vcpus())
        .map(|i| match vm.captured[i].lock().take() {
            Some(s) => *s,
            None => VcpuState::default(), // off: nothing but its power state
        })
        .collect();
    // 2. Drain: every guest request in flight completes, so the queues say all.
    drain(vm, idx)?;
    // 3. Devices and time, at the same moment.
    let devices: Vec<DeviceState> = vm
        .saved_devices
        .iter()
        .map(|d| DeviceState {
            name: String::from(d.name),
            base: d.base,
            blob: d.handle.save(),
        })
        .collect();
    let pcount = read_sysreg!("CNTPCT_EL0");
    let time = TimeState {
        cntfrq: read_sysreg!("CNTFRQ_EL0"),
        guest_vcount: pcount.wrapping_sub(vm.cntvoff()),
        host_pcount: pcount,
    };
    Ok(Machine {
        vcpus,
        devices,
        time,
    })
}

/// Waits until no device of `vm` has a guest request in flight.
pub fn drain(vm: &Vm, here: usize) -> Result<(), String> {
    if wait_until(vm, here, None, || {
        vm.saved_devices.iter().all(|d| d.handle.in_flight() == 0)
    }) {
        Ok(())
    } else {
        Err(String::from(
            "guest disk requests did not complete; nothing was written",
        ))
    }
}

/// Restores every device of `vm` from `saved` (the same set, by name and base,
/// each validating its own blob), then re-drives their interrupt lines.
pub fn restore_devices(vm: &Vm, saved: &[DeviceState]) -> Result<(), ColdReason> {
    if saved.len() != vm.saved_devices.len() {
        return Err(ColdReason::ConfigMismatch("device count"));
    }
    for (d, saved) in vm.saved_devices.iter().zip(saved) {
        if saved.name != d.name || saved.base != d.base {
            return Err(ColdReason::ConfigMismatch("device layout"));
        }
        d.handle
            .restore(&saved.blob)
            .map_err(|e| ColdReason::StateRefused(d.name, e))?;
    }
    let mut irq = VgicSink::new(&vm.vgic);
    let mut mem = vm.ram;
    for d in &vm.saved_devices {
        d.handle.after_restore(&mut mem, &mut irq);
    }
    Ok(())
}

/// Suspends `vm` to its saved-state extent, from vCPU `here` of VM `own` (running
/// this at a checkpoint; every other vCPU of `vm` is parked or off). On success
/// the image is committed and the caller must not let the VM run again.
pub fn suspend_vm(vm: &Vm, own: &Vm, here: &mut Vcpu) -> Result<Suspended, String> {
    let start = read_sysreg!("CNTPCT_EL0");
    let Some(uuid) = vm.identity else {
        return Err(String::from(
            "the VM was not started from the system disk (a boot bundle has nowhere to suspend to)",
        ));
    };
    let Machine {
        vcpus,
        devices,
        time,
    } = capture_machine(vm, own, here)?;
    let captured = read_sysreg!("CNTPCT_EL0");
    let input = vmstate::SuspendInput {
        uuid,
        fingerprint: fingerprint(vm),
        time,
        vcpus: &vcpus,
        devices: &devices,
    };
    // 4. The image and the registry commit; with the image this VM was resumed
    // from still in its extent, only the pages written since.
    let base = vm.ram.base();
    let incremental = base.is_some();
    let ticks = |t: u64| t * 1000 / read_sysreg!("CNTFRQ_EL0").max(1);
    let report = crate::storage::with(|st| {
        let mut io = Io::new(st.disk.clone(), vm.ram);
        let r = vmstate::suspend(
            &mut io,
            &mut st.registry,
            &input,
            base.as_ref(),
            crate::accel::crc32c_append,
        )
        .map_err(|e| format!("{e}"));
        r.map(|r| {
            (
                r,
                ticks(io.wait_ticks + io.start_ticks),
                ticks(io.disk.ticks),
            )
        })
    })
    .unwrap_or_else(|| Err(String::from("no system disk is open")));
    // Whatever happened, the extent no longer holds the base image.
    vm.ram.drop_base();
    let (report, wait_ms, sync_ms) = report?;
    let capture_ms = ticks(captured.wrapping_sub(start));
    let millis =
        read_sysreg!("CNTPCT_EL0").wrapping_sub(start) * 1000 / read_sysreg!("CNTFRQ_EL0").max(1);
    log::info!(
        "VM '{}' suspended: {} KiB written{}, {} KiB image ({} blocks touched, {} rewritten, {} pages with data, {} zero pages) in {} ms (waiting for the disk {} ms; capturing and draining {} ms, sections, index, header, flushes and registry {} ms, the rest zero pages and checksums)",
        vm.name,
        report.written >> 10,
        if incremental { " (incremental)" } else { "" },
        report.bytes >> 10,
        report.blocks,
        report.blocks_written,
        report.data_pages,
        report.zero_pages,
        millis,
        wait_ms,
        capture_ms,
        sync_ms
    );
    SUSPENDED.store(true, Ordering::Release);
    Ok(Suspended {
        bytes: report.bytes,
    })
}

/// Restores `vm` from the saved image `blob` at boot, before any vCPU runs.
/// `Ok` leaves every vCPU that was on with its state in `vm.resume_slots`; on
/// `Err` the VM holds part of the image and must cold boot (which resets RAM and
/// every device).
pub fn resume_vm(vm: &Vm, blob: Blob) -> Result<(), ColdReason> {
    let start = read_sysreg!("CNTPCT_EL0");
    let expected = fingerprint(vm);
    let cntfrq = read_sysreg!("CNTFRQ_EL0");
    let crc = crate::accel::crc32c_append;
    let ms = |from: u64| read_sysreg!("CNTPCT_EL0").wrapping_sub(from) * 1000 / cntfrq.max(1);
    let (mut ram_ms, mut wait_ms, mut finish_ms, mut check_ms) = (0, 0, 0, 0);
    let ticks = |t: u64| t * 1000 / cntfrq.max(1);
    let opened = crate::storage::with(|st| {
        let opened = vmstate::open_saved(&mut st.disk, blob, &expected, cntfrq, crc)?;
        let t = read_sysreg!("CNTPCT_EL0");
        let mut io =
            Io::new(st.disk.clone(), vm.ram).for_cacheable_guest(data_cacheable(&opened.vcpus));
        vmstate::restore_ram(&mut io, &opened)?;
        ram_ms = ms(t);
        (wait_ms, finish_ms, check_ms) = (
            ticks(io.wait_ticks + io.start_ticks),
            ticks(io.finish_ticks),
            ticks(io.check_ticks),
        );
        Ok(opened)
    })
    .unwrap_or(Err(ColdReason::Unreadable))?;
    let devices_start = read_sysreg!("CNTPCT_EL0");
    // Devices: the same set, by name and base (the fingerprint's layout CRC
    // already matched), each validating its own blob.
    restore_devices(vm, &opened.devices)?;
    let devices_ms = ms(devices_start);
    // Consumed before the guest runs: its disk diverges from here on.
    let consumed = crate::storage::with(|st| {
        vm.identity
            .map(|u| vmstate::consume(&mut st.disk, &mut st.registry, u).is_ok())
            .unwrap_or(false)
    })
    .unwrap_or(false);
    if !consumed {
        return Err(ColdReason::NotConsumable);
    }
    // From here every write to guest RAM is logged: a later suspend rewrites only
    // those pages into the image still in the extent.
    vm.ram.start_dirty_log(opened.base());
    // Guest virtual time continues from the saved count; the emulated physical
    // timer keeps its distance to its deadline.
    let now = read_sysreg!("CNTPCT_EL0");
    vm.set_cntvoff(vmstate::cntvoff_for(opened.header.time.guest_vcount, now));
    for (i, mut st) in opened.vcpus.into_iter().enumerate() {
        st.ptimer_cval =
            vmstate::rebase_physical(st.ptimer_cval, opened.header.time.host_pcount, now);
        vm.kick[i].store(true, Ordering::Release);
        if st.power == Power::On {
            *vm.resume_slots[i].lock() = Some(Box::new(st));
        }
    }
    log::info!(
        "VM '{}': resumed from its saved state ({} KiB read, {} pages with data) in {} ms (RAM {} ms of which waiting for the disk {} ms, checksums {} ms, finishing blocks {} ms; devices {} ms); guest time continues at {} ticks",
        vm.name,
        (opened.data_pages * vmstate::PAGE_SIZE as u64
            + opened.header.sections[vmstate::format::SEC_RAM_INDEX].end()
            - opened.header.sections[vmstate::format::SEC_VCPUS].offset)
            >> 10,
        opened.data_pages,
        now.wrapping_sub(start) * 1000 / cntfrq.max(1),
        ram_ms,
        wait_ms,
        check_ms,
        finish_ms,
        devices_ms,
        opened.header.time.guest_vcount
    );
    Ok(())
}
