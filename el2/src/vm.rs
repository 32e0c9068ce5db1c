//! A VM: its guest RAM, stage-2 tables, MMIO bus and vCPUs, and the EL2 controls
//! that make the hardware run it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use aarch64_cpu::registers::{Writeable, ICH_HCR_EL2};
use arch::controls::PmuPolicy;
use arch::relax::Mutex;
use arch::smccc::{CpuPower, PowerTopology};
use arch::timer::EmulatedTimer;
use boards::guest;
use devices::Pl011;
use vdev::{AsyncBlock, MmioBus, MmioContext, Shared, WorkSignal};

pub use crate::guestram::GuestRam;
use vgic::{SharedVgic, VgicConfig};
use vgpu::{Gpu, GpuConfig};
use virtio::{Blk, Console, EmptySlot, MmioTransport, Rng};

use crate::el1::{write_sysreg, El1Context};
use crate::vectors::GuestRegs;

/// Counts of exits by kind, for the VM's exit log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExitStats {
    pub hvc: u64,
    pub smc: u64,
    pub mmio: u64,
    pub sysreg: u64,
    pub wfi: u64,
    pub irq: u64,
    pub injected: u64,
}

impl ExitStats {
    pub fn add(&mut self, o: &ExitStats) {
        self.hvc += o.hvc;
        self.smc += o.smc;
        self.mmio += o.mmio;
        self.sysreg += o.sysreg;
        self.wfi += o.wfi;
        self.irq += o.irq;
        self.injected += o.injected;
    }
}

/// What a vCPU's list registers held at its last entry, as bits of one byte so
/// that the run loop tests for "nothing to flush or sync" with one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LrState(u8);

impl LrState {
    /// Nothing loaded, nothing left over.
    pub const EMPTY: Self = Self(0);
    const LOADED: u8 = 1 << 0;
    const OVERFLOW: u8 = 1 << 1;

    /// `loaded`: some list register holds an interrupt; `overflow`: deliverable
    /// interrupts did not fit in the list registers.
    #[inline(always)]
    pub fn new(loaded: bool, overflow: bool) -> Self {
        Self((u8::from(loaded) * Self::LOADED) | (u8::from(overflow) * Self::OVERFLOW))
    }
    #[inline(always)]
    pub fn loaded(self) -> bool {
        self.0 & Self::LOADED != 0
    }
    #[inline(always)]
    pub fn overflow(self) -> bool {
        self.0 & Self::OVERFLOW != 0
    }
    /// Whether either is set.
    #[inline(always)]
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// One virtual CPU: on its own hypervisor stack, run by whichever physical CPU
/// the scheduler gives it (`smp`).
pub struct Vcpu {
    pub idx: usize,
    pub regs: GuestRegs,
    pub el1: El1Context,
    /// The emulated EL1 physical timer.
    pub ptimer: EmulatedTimer,
    /// What the list registers held at the last entry.
    pub lrs: LrState,
    /// The hypervisor raised the virtual timer's vGIC line and has not lowered it
    /// since (`wait::sync_vtimer` watches the timer while this is set).
    pub vtimer_raised: bool,
    /// The virtual timer's physical PPI was active (taken, not yet deactivated
    /// by the guest) when the vCPU last gave its physical CPU up (`smp`): it is
    /// made active again where the vCPU runs next.
    pub vtimer_active: bool,
    /// The virtual CPU interface state loaded at the vCPU's start (a resumed vCPU's
    /// saved one; zero otherwise).
    pub cpuif: CpuInterface,
    pub stats: ExitStats,
}

/// ICH_VMCR_EL2 and the active-priority registers of a vCPU's virtual CPU
/// interface, as loaded when it starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuInterface {
    pub vmcr: u64,
    pub ap0r0: u64,
    pub ap1r0: u64,
}

impl Vcpu {
    pub fn new(idx: usize) -> Self {
        Self {
            idx,
            regs: GuestRegs::default(),
            el1: El1Context::reset(),
            ptimer: EmulatedTimer::default(),
            lrs: LrState::EMPTY,
            vtimer_raised: false,
            vtimer_active: false,
            cpuif: CpuInterface::default(),
            stats: ExitStats::default(),
        }
    }
}

/// Why a VM stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// PSCI SYSTEM_OFF, or the last vCPU called CPU_OFF.
    PoweredOff = 1,
    /// PSCI SYSTEM_RESET.
    Reset = 2,
}

/// Where and how a vCPU starts (PSCI CPU_ON, or reset of the boot vCPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartRequest {
    pub entry: u64,
    pub x0: u64,
}

/// A virtual machine, shared by the physical CPUs running its vCPUs.
pub struct Vm {
    pub name: String,
    pub ram: GuestRam,
    /// Immutable once built: lookups take no lock, each device has its own (see
    /// [`vdev::bus`]). The vGIC's state is covered by its own lock
    /// ([`SharedVgic::lock`]), taken by the GICD/GICR devices inside their device
    /// call and by el2 directly, never while taking a device lock.
    pub bus: MmioBus,
    /// Raised by a device on the bus that left work for later; see
    /// [`Vm::resume_deferred`].
    pub work: WorkSignal,
    pub vgic: SharedVgic,
    pub uart: Shared<Pl011>,
    /// Per vCPU: its PSCI power state (a `CpuPower` as u8).
    pub power: Vec<AtomicU8>,
    /// Per vCPU: where it starts when powered on.
    pub start: Vec<Mutex<Option<StartRequest>>>,
    /// Per vCPU: the vGIC has new work for it (flush before the next entry). The
    /// physical CPU it runs on is the scheduler's business (`smp`).
    pub kick: Vec<AtomicBool>,
    /// Non-zero (a `StopReason`) once the VM must stop.
    pub stop: AtomicU8,
    /// Exit counts of vCPUs that have stopped.
    pub stats: Mutex<ExitStats>,
    /// The VM's devices (`boards::devices::device_list`): its bus, its device
    /// tree and its ACPI tables are generated from this one list.
    pub devices: Vec<boards::devices::DeviceSpec>,
    /// The guest's TPM (on its SPI-over-GPIO bus, or the CRB of a firmware VM).
    pub tpm: Option<crate::tpm::GuestTpm>,
    /// The VM's registry identity (system-disk VMs; `None` for boot bundles).
    pub identity: Option<registry::Uuid>,
    /// Every device whose state a suspend saves, in bus order (the vGIC first).
    pub saved_devices: Vec<crate::suspend::SavedDevice>,
    /// A suspend asks parked vCPUs to capture their state.
    pub capture: AtomicBool,
    /// Per vCPU: its state captured for a suspend.
    pub captured: Vec<Mutex<Option<Box<vmstate::VcpuState>>>>,
    /// Per vCPU: the saved state it starts from on resume.
    pub resume_slots: Vec<Mutex<Option<Box<vmstate::VcpuState>>>>,
    /// Pause state and the VM's virtual-counter offset (the monitor's `vm pause`).
    pub run: crate::control::RunControl,
    /// The guest's virtio-gpu, which the render loop (`display.rs`) presents.
    pub gpu: crate::display::GuestGpu,
    /// The guest's virtio-input keyboard and tablet (Linux VMs), fed by
    /// `input.rs`'s router.
    pub input: crate::input::GuestInput,
    /// The flash banks and fw_cfg of a `uefi-acpi` VM (`None`: a kernel boots
    /// with a device tree).
    pub firmware: Option<crate::firmware::Firmware>,
    /// The `simple-framebuffer` of a `linux-dt` VM (`boards::devices`), presented
    /// instead of the virtio-gpu's scanout ([`Vm::attach_framebuffer`]).
    pub framebuffer: Option<boards::devices::FramebufferSpec>,
    /// The PCI Express root complex (`None`: the VM has no PCIe).
    pub pcie: Option<alloc::sync::Arc<spin::Mutex<pci::RootComplex>>>,
    /// The ITS's frames, when the root complex's MSIs go to one.
    pub its: Option<boards::devices::Window>,
    /// The host's handle on the VM's USB devices (`None`: no xHCI controller).
    pub usb: Option<crate::usb::UsbInput>,
    /// The scheduler task of vCPU 0 (`smp::register`); vCPU `i` is task
    /// `task_base + i`.
    pub task_base: usize,
    /// The vCPU that asked for the reset under way coordinates it (`usize::MAX`:
    /// none); the others just stop.
    pub reset_owner: core::sync::atomic::AtomicUsize,
}

/// What building a VM's bus devices adds to: the bus and the devices a suspend
/// saves.
struct VirtioSlots<'a> {
    bus: &'a mut MmioBus,
    saved: &'a mut Vec<crate::suspend::SavedDevice>,
}

impl VirtioSlots<'_> {
    /// Puts `device` behind a virtio-mmio transport at `(name, base, size, intid)`
    /// (a device-list entry's): on the bus, and saved on suspend (`in_flight`
    /// counts the requests a suspend drains first).
    fn attach<D: virtio::VirtioDevice + Send + 'static>(
        &mut self,
        (name, base, size, intid): (&'static str, u64, u64, u32),
        device: D,
        in_flight: fn(&D) -> usize,
    ) -> Result<Shared<MmioTransport<D>>, VmError> {
        let transport = Shared::new(MmioTransport::new(device, intid));
        self.bus
            .insert(name, base, size, Box::new(transport.clone()))
            .map_err(VmError::Bus)?;
        self.saved.push(crate::suspend::SavedDevice {
            name,
            base,
            handle: Box::new(crate::suspend::VirtioHandle {
                transport: transport.clone(),
                in_flight,
            }),
        });
        Ok(transport)
    }
}

/// Host memory one resource of a guest's virtio-gpu may take: a 1920x1080 frame.
const GPU_MAX_RESOURCE_BYTES: u64 = 1920 * 1080 * 4;
/// Host memory all resources of a guest's virtio-gpu may take together (the heap
/// holds them).
const GPU_MAX_TOTAL_BYTES: u64 = 12 << 20;

/// Why a VM could not be built.
#[derive(Debug)]
#[allow(dead_code)] // fields are reported through Debug in the fatal log line
pub enum VmError {
    Bus(vdev::BusError),
    Pci(pci::RootError),
    V2m(vgic::v2m::V2mError),
    Vgic(vgic::ConfigError),
    Tpm(String),
    /// The device list lacks what a model needs, or the root complex.
    Devices(&'static str),
}

/// What of a VM's device set its boot chooses; which virtio devices and whether
/// a TPM follow from the machine (disks, entropy).
#[derive(Debug, Clone, Copy)]
pub struct DeviceShape {
    pub profile: boards::devices::Profile,
    /// The PCI Express root complex (an NVMe disk).
    pub pcie: bool,
    /// Its MSI controller: the GICv2m frame or the ITS.
    pub msi: boards::devices::Msi,
    /// The simple framebuffer (`boards::devices::simple_framebuffer`).
    pub framebuffer: Option<boards::devices::FramebufferSpec>,
    /// Size of the variable-store flash bank (`uefi-acpi`).
    pub vars_bank_size: u64,
    /// A TPM (every guest; the authority partition has none).
    pub tpm: bool,
    /// The VM's console slot (`console::SLOTS`).
    pub console: usize,
}

/// I/O queues the UEFI firmware's NVMe driver creates (see `attach_pcie`).
const FIRMWARE_NVME_IO_QUEUES: u16 = 2;

/// The guest's MPIDR for vCPU `i`: Aff0 = i, with the U bit clear and bit 31 RES1.
pub fn vcpu_mpidr(i: usize) -> u64 {
    use aarch64_cpu::registers::MPIDR_EL1;
    MPIDR_EL1::RES1::SET.value | MPIDR_EL1::Aff0.val(i as u64).value
}

fn power_u8(p: CpuPower) -> u8 {
    p as u8
}

impl Vm {
    /// Builds a VM whose RAM is `ram` (already allocated), with `n` vCPUs
    /// and the devices of its `shape`'s profile ([`Vm::devices`]): `disks` become
    /// virtio-blk devices in the first virtio-mmio slots; the TPM keeps its NV
    /// image in `tpm_nv` (or in memory). Every bus window of the list's devices
    /// but the firmware's ([`Vm::attach_firmware`]) and the root complex's
    /// ([`Vm::attach_pcie`]) gets its model here.
    pub fn new(
        name: &str,
        ram: GuestRam,
        n: usize,
        disks: Vec<Box<dyn AsyncBlock + Send>>,
        tpm_nv: Option<crate::tpm::TpmNvPlace>,
        shape: DeviceShape,
    ) -> Result<Self, VmError> {
        use boards::devices::{BusModel, DeviceKind, Profile, VirtioDevice};
        let vgic =
            SharedVgic::new(VgicConfig::simple(n, guest::VGIC_SPIS)).map_err(VmError::Vgic)?;
        let mut bus = MmioBus::new();
        let mut saved_devices = alloc::vec![crate::suspend::SavedDevice {
            name: "vgic",
            base: guest::GICD_BASE,
            handle: Box::new(vgic.clone()),
        }];
        bus.insert(
            "gicd",
            guest::GICD_BASE,
            guest::GICD_SIZE,
            Box::new(vgic.gicd()),
        )
        .map_err(VmError::Bus)?;
        let gicr_size = vgic.lock().gicr_region_size();
        bus.insert("gicr", guest::GICR_BASE, gicr_size, Box::new(vgic.gicr()))
            .map_err(VmError::Bus)?;
        // A firmware VM's TPM is the CRB on the platform bus, a Linux VM's the
        // PL061/SPI chain; either needs an entropy source, as the virtio-rng does.
        let tpm_interface = match shape.profile {
            Profile::UefiAcpi => crate::tpm::Interface::Crb {
                base: boards::devices::TPM_CRB_BASE,
            },
            Profile::LinuxDt => crate::tpm::Interface::SpiGpio,
        };
        let tpm = if shape.tpm {
            crate::tpm::guest_tpm(tpm_nv, tpm_interface).map_err(VmError::Tpm)?
        } else {
            None
        };
        let mut rng = crate::entropy::source(b"RayOS virtio-rng");
        if rng.is_none() {
            log::warn!("no entropy source: the VM gets no virtio-rng");
        }
        let mut slots = boards::devices::virtio_slots(disks.len(), rng.is_some());
        slots.extend_from_slice(boards::devices::virtio_input_slots(shape.profile));
        let devices = boards::devices::device_list(
            shape.profile,
            &boards::devices::VmDevices {
                virtio_slots: &slots,
                tpm_spi_gpio: shape.profile == Profile::LinuxDt && tpm.is_some(),
                tpm_crb: shape.profile == Profile::UefiAcpi && tpm.is_some(),
                vars_bank_size: shape.vars_bank_size,
                pcie: shape.pcie,
                msi: shape.msi,
                framebuffer: shape.framebuffer,
            },
        );
        let console = devices
            .iter()
            .find(|d| d.kind == DeviceKind::Pl011)
            .and_then(|d| d.irq)
            .ok_or(VmError::Devices("the device list has no PL011"))?;
        let uart = Shared::new(Pl011::new(
            console.intid,
            Box::new(crate::console::GuestConsole(shape.console)),
        ));
        if let Some(tpm) = &tpm {
            if let crate::tpm::Interface::Crb { base } = tpm.interface() {
                // On the bus with the firmware's devices, from its device list
                // (`attach_firmware`).
                saved_devices.push(crate::suspend::SavedDevice {
                    name: "tpm-crb",
                    base,
                    handle: tpm.saved(),
                });
            }
        }
        let mut disks: Vec<Option<Box<dyn AsyncBlock + Send>>> =
            disks.into_iter().map(Some).collect();
        let mut gpu = None;
        let mut input = crate::input::GuestInput::default();
        let mut slots = VirtioSlots {
            bus: &mut bus,
            saved: &mut saved_devices,
        };
        for e in boards::devices::bus_entries(&devices) {
            let device = match e.model {
                BusModel::Device(DeviceKind::Pl011) => {
                    slots
                        .bus
                        .insert(e.name, e.base, e.size, Box::new(uart.clone()))
                        .map_err(VmError::Bus)?;
                    slots.saved.push(crate::suspend::SavedDevice {
                        name: e.name,
                        base: e.base,
                        handle: Box::new(uart.clone()),
                    });
                    continue;
                }
                BusModel::Device(DeviceKind::Pl061Tpm) => {
                    let tpm = tpm
                        .as_ref()
                        .ok_or(VmError::Devices("a PL061 TPM entry without a TPM"))?;
                    slots
                        .bus
                        .insert(e.name, e.base, e.size, tpm.device())
                        .map_err(VmError::Bus)?;
                    slots.saved.push(crate::suspend::SavedDevice {
                        name: e.name,
                        base: e.base,
                        handle: tpm.saved(),
                    });
                    continue;
                }
                BusModel::Device(DeviceKind::VirtioMmio { device, .. }) => device,
                // Every other slot answers as on QEMU `virt`: a transport with
                // device ID 0. They are not in the guest's device tree.
                BusModel::EmptyVirtioSlot { .. } => {
                    slots
                        .bus
                        .insert(e.name, e.base, e.size, Box::new(EmptySlot))
                        .map_err(VmError::Bus)?;
                    continue;
                }
                // The firmware's devices and the root complex's windows are put on
                // the bus by `attach_firmware` and `attach_pcie`, from this list.
                BusModel::Device(_) => continue,
            };
            let irq = e
                .irq
                .ok_or(VmError::Devices("a virtio entry without an SPI"))?;
            let at = (e.name, e.base, e.size, irq.intid);
            match device {
                VirtioDevice::Blk { disk } => {
                    let disk = disks
                        .get_mut(usize::from(disk))
                        .and_then(Option::take)
                        .ok_or(VmError::Devices("a virtio-blk entry without its disk"))?;
                    slots.attach(at, Blk::new(disk), Blk::in_flight)?;
                }
                VirtioDevice::Gpu => {
                    // A virtio-gpu for every guest (its monitor's mode and memory
                    // bounds: GPU_*).
                    let device = Gpu::new(GpuConfig {
                        modes: alloc::vec![vgpu::present::DEFAULT_MODE],
                        max_resource_bytes: GPU_MAX_RESOURCE_BYTES,
                        max_total_bytes: GPU_MAX_TOTAL_BYTES,
                    });
                    gpu = Some(slots.attach(at, device, |_| 0)?);
                }
                VirtioDevice::Rng => {
                    let e = rng
                        .take()
                        .ok_or(VmError::Devices("a virtio-rng entry without entropy"))?;
                    let device = Rng::new(Box::new(crate::entropy::VirtioEntropy(e)));
                    slots.attach(at, device, |_| 0)?;
                }
                VirtioDevice::Console => {
                    let slot = shape.console;
                    let device = Console::new(Box::new(move |bytes: &[u8]| {
                        crate::console::guest_write(slot, crate::console::Source::Virtio, bytes)
                    }));
                    slots.attach(at, device, |_| 0)?;
                }
                VirtioDevice::Keyboard => {
                    input.keyboard =
                        Some(slots.attach(at, virtio::input::Input::keyboard(), |_| 0)?);
                }
                VirtioDevice::Tablet => {
                    let (w, h) = vgpu::present::DEFAULT_MODE;
                    let device = virtio::input::Input::tablet(w, h);
                    input.tablet = Some(slots.attach(at, device, |_| 0)?);
                }
            }
        }
        let gpu = gpu.ok_or(VmError::Devices("the device list has no virtio-gpu"))?;
        let work = WorkSignal::new();
        bus.connect_work_signal(&work);
        Ok(Self {
            name: String::from(name),
            ram,
            bus,
            work,
            vgic,
            uart,
            power: (0..n)
                .map(|_| AtomicU8::new(power_u8(CpuPower::Off)))
                .collect(),
            start: (0..n).map(|_| Mutex::new(None)).collect(),
            kick: (0..n).map(|_| AtomicBool::new(false)).collect(),
            stop: AtomicU8::new(0),
            stats: Mutex::new(ExitStats::default()),
            devices,
            tpm,
            identity: None,
            saved_devices,
            capture: AtomicBool::new(false),
            captured: (0..n).map(|_| Mutex::new(None)).collect(),
            resume_slots: (0..n).map(|_| Mutex::new(None)).collect(),
            run: crate::control::RunControl::new(n),
            gpu,
            input,
            firmware: None,
            framebuffer: None,
            pcie: None,
            its: None,
            usb: None,
            task_base: 0,
            reset_owner: core::sync::atomic::AtomicUsize::new(usize::MAX),
        })
    }

    /// CNTVOFF_EL2 of every vCPU of the VM.
    pub fn cntvoff(&self) -> u64 {
        self.run.cntvoff()
    }

    /// Sets the VM's CNTVOFF_EL2 (a resume, before its vCPUs start).
    pub fn set_cntvoff(&self, v: u64) {
        self.run.set_cntvoff(v);
    }

    pub fn vcpus(&self) -> usize {
        self.power.len()
    }

    /// VM reset of every device on the bus (vGIC, PL011, PL061 and its SPI bus,
    /// virtio transports): registers to their reset values, in-flight work dropped,
    /// interrupt lines lowered. The TPM engine itself is reset by `tpm.reset()`.
    pub fn reset_devices(&self) {
        let mut irq = VgicSink::new(&self.vgic);
        self.bus.reset_all(&mut irq);
        // Work deferred before the reset went with it.
        self.work.take();
    }

    /// Resumes device work left over after a per-access budget ran out (one bounded
    /// round), if a device said it left some. Called on a vCPU's interrupt exits and
    /// in its WFI loop (`here`: that vCPU, which looks at its own interrupts itself)
    /// and by a physical CPU with no vCPU to run (`None`: every vCPU the work
    /// interrupts is woken): the guest may never notify again (VIRTIO_F_EVENT_IDX).
    pub fn resume_deferred(&self, here: Option<usize>) {
        if !self.work.take() {
            return;
        }
        let mut irq = VgicSink::new(&self.vgic);
        {
            let mut mem = self.ram;
            let mut ctx = MmioContext {
                vcpu: here.unwrap_or(0),
                mem: &mut mem,
                irq: &mut irq,
            };
            if self.bus.resume_deferred(&mut ctx) {
                self.work.raise();
            }
        }
        if irq.touched {
            // From a CPU without a vCPU, no vCPU looks by itself: a blocked vCPU 0
            // whose completion arrived here slept on until its next timer deadline.
            let kicked = self.deliver_kicks(here.unwrap_or(usize::MAX));
            crate::iostat::posted(self.task_base, kicked, here, |i| {
                crate::smp::vcpu_running(self, i)
            });
            // Completions are best delivered on the CPU of the vCPU they interrupt
            // (the system disk routes its interrupt there); when they interrupt no
            // vCPU (a polling guest) nothing is learnt.
            if kicked != 0 {
                crate::sysdisk::completions_taken_on(
                    kicked
                        .is_power_of_two()
                        .then(|| crate::smp::pcpu_of_vcpu(self, kicked.trailing_zeros() as usize))
                        .flatten()
                        .map(|m| m & arch::smccc::MPIDR_AFFINITY_MASK),
                );
            }
        }
    }

    /// The IPA size the guest is told about (ID_AA64MMFR0_EL1.PARange).
    pub fn ipa_bits(&self) -> u32 {
        self.ram.ipa_bits()
    }

    pub fn set_power(&self, vcpu: usize, p: CpuPower) {
        self.power[vcpu].store(power_u8(p), Ordering::Release);
    }

    /// The reason the VM must stop, if it must.
    pub fn stopping(&self) -> Option<StopReason> {
        match self.stop.load(Ordering::Acquire) {
            1 => Some(StopReason::PoweredOff),
            2 => Some(StopReason::Reset),
            _ => None,
        }
    }

    /// Asks every vCPU to stop for `why` (the first reason wins) and wakes them.
    pub fn request_stop(&self, why: StopReason, from: usize) {
        let _ = self
            .stop
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
        self.kick_others(from);
    }

    /// Wakes every vCPU but `from` that is not off: a sleeping one becomes
    /// runnable, a running one exits (`smp::wake_vcpu`).
    pub fn kick_others(&self, from: usize) {
        for i in 0..self.vcpus() {
            if i != from && self.power(i) != CpuPower::Off {
                crate::smp::wake_vcpu(self, i);
            }
        }
    }

    /// Marks the vCPUs the vGIC has new work for and wakes those but `from` (the
    /// caller's, which looks itself): a sleeping one becomes runnable, one running
    /// elsewhere is kicked; returns them (bit i: vCPU i).
    pub fn deliver_kicks(&self, from: usize) -> u64 {
        let mask = self.vgic.lock().take_kicks();
        for i in 0..self.vcpus() {
            if mask & (1 << i) != 0 {
                self.kick[i].store(true, Ordering::Release);
                if i != from && self.power(i) == CpuPower::On {
                    crate::smp::wake_vcpu(self, i);
                }
            }
        }
        mask
    }
}

impl Vm {
    /// Gives the VM the linear framebuffer `fb` in its RAM (before it runs): its
    /// pages are dirty-tracked at stage 2 (`GuestRam::set_framebuffer`) and the
    /// render loop presents it as the VM's surface (`display::register`);
    /// the device tree describes it (`load_guest`). Refused if its geometry does
    /// not fit the VM's RAM; the VM's device list then loses it.
    pub fn attach_framebuffer(
        &mut self,
        fb: boards::devices::FramebufferSpec,
    ) -> Result<(), vgpu::GeometryError> {
        let geometry = vgpu::FbGeometry {
            base: fb.base,
            width: fb.width,
            height: fb.height,
            stride: fb.stride,
            // DT `x8r8g8b8`: bytes B, G, R, X.
            format: vgpu::defs::format::B8G8R8X8_UNORM,
        };
        if let Err(e) = geometry.validate(self.ram.ipa(), self.ram.size()) {
            self.devices.retain(|d| {
                !matches!(
                    d.kind,
                    boards::devices::DeviceKind::SimpleFramebuffer { .. }
                )
            });
            return Err(e);
        }
        self.ram.set_framebuffer(geometry.pages(self.ram.ipa()));
        self.framebuffer = Some(fb);
        Ok(())
    }

    /// Gives the VM the firmware devices `fw` (before it runs): on its bus, and
    /// its boots start the firmware.
    pub fn attach_firmware(&mut self, fw: crate::firmware::Firmware) -> Result<(), VmError> {
        crate::firmware::attach(
            &mut self.bus,
            &fw,
            &self.devices,
            self.tpm.as_ref(),
            &mut self.saved_devices,
        )
        .map_err(VmError::Bus)?;
        // The firmware's GOP framebuffer (ramfb) becomes the VM's surface once
        // the firmware configures it through fw_cfg (`display::register` follows
        // its `etc/ramfb`).
        // The RTC's armed match is deferred work.
        self.bus.connect_work_signal(&self.work);
        self.firmware = Some(fw);
        Ok(())
    }

    /// Gives the VM the PCI Express root complex of its device list
    /// (`boards::devices::pcie_of`) with its GICv2m frame, an NVMe controller
    /// over `disk` at 00:01.0 (one I/O queue pair and MSI-X vector per vCPU, plus
    /// the admin vector) if there is one, and a virtio-blk over the virtio PCI
    /// transport over `virtio_blk` at 00:02.0 if there is one (the same
    /// `virtio::Blk` model as virtio-mmio), and an xHCI controller with its USB
    /// devices at 00:03.0 if `usb` ([`crate::usb`]).
    pub fn attach_pcie(
        &mut self,
        disk: Option<Box<dyn AsyncBlock + Send>>,
        virtio_blk: Option<Box<dyn AsyncBlock + Send>>,
        usb: Option<crate::usb::Usb>,
    ) -> Result<(), VmError> {
        use boards::devices as d;
        let spec = d::pcie_of(&self.devices)
            .ok_or(VmError::Devices("the device list has no root complex"))?;
        let w = |x: d::Window| pci::Window {
            base: x.base,
            size: x.size,
        };
        let layout = pci::Layout {
            ecam: w(spec.ecam),
            mmio32: w(spec.mmio32),
            mmio64: None,
            pio: Some(w(spec.pio)),
            intx_first_intid: spec.intx_first_intid,
        };
        let ram = [pci::Window {
            base: self.ram.ipa(),
            size: self.ram.size(),
        }];
        let mut rc = pci::RootComplex::new(layout, &ram).map_err(VmError::Pci)?;
        match spec.msi {
            d::MsiSpec::V2m(v2m) => {
                let frame = vgic::v2m::V2mFrame::new(
                    v2m.first_intid,
                    v2m.count,
                    guest::SPI_BASE + guest::VGIC_SPIS,
                )
                .map_err(VmError::V2m)?;
                rc.set_msi_controller(Box::new(V2mMessages {
                    frame,
                    base: v2m.frame.base,
                }));
                self.bus
                    .insert("gicv2m", v2m.frame.base, v2m.frame.size, Box::new(frame))
                    .map_err(VmError::Bus)?;
                // Saved on suspend and snapshot: its SPI range.
                self.saved_devices.push(crate::suspend::SavedDevice {
                    name: "gicv2m",
                    base: v2m.frame.base,
                    handle: Box::new(Shared::new(frame)),
                });
            }
            d::MsiSpec::Its(w) => {
                let its = vgic::its::SharedIts::new(
                    vgic::its::Its::new(self.vcpus(), &[(self.ram.ipa(), self.ram.size())]),
                    self.vgic.clone(),
                    w.base,
                );
                rc.set_msi_controller(Box::new(ItsMessages(its.clone())));
                self.bus
                    .insert("gic-its", w.base, w.size, Box::new(its.clone()))
                    .map_err(VmError::Bus)?;
                // Saved on suspend and snapshot: its registers and translations
                // (`VITS`; the LPIs are the vGIC's).
                self.saved_devices.push(crate::suspend::SavedDevice {
                    name: "gic-its",
                    base: w.base,
                    handle: Box::new(its.clone()),
                });
                self.its = Some(w);
            }
        }
        if let Some(disk) = disk {
            // One I/O queue per vCPU, and never fewer than the firmware's
            // NVMe driver creates (EDK2 NvmExpressDxe: one blocking and one
            // asynchronous queue): with one, a 1-vCPU firmware VM found no boot
            // disk ("create queue with invalid or used ID 2").
            let queues = (self.vcpus() as u16).max(FIRMWARE_NVME_IO_QUEUES);
            let cfg = nvme::Config {
                io_queues: queues,
                vectors: queues + 1,
                vendor_id: d::NVME_PCI_VENDOR_ID,
                subsystem_vendor_id: d::NVME_PCI_VENDOR_ID,
                ..nvme::Config::default()
            };
            let f = pci::nvme::NvmeFunction::new(
                disk,
                cfg,
                d::NVME_PCI_VENDOR_ID,
                d::NVME_PCI_DEVICE_ID,
            );
            rc.attach(d::NVME_PCI_DEVICE, Box::new(f))
                .map_err(VmError::Pci)?;
        }
        if let Some(disk) = virtio_blk {
            let class = pci::virtio::class_of(virtio::defs::device_id::BLOCK);
            let f = pci::virtio::VirtioFunction::new(Blk::new(disk), class);
            rc.attach(d::VIRTIO_PCI_BLK_DEVICE, Box::new(f))
                .map_err(VmError::Pci)?;
        }
        if let Some(usb) = usb {
            // Saved with the root complex (`PCIR`): the function's blob is the
            // controller's `xhci` state (`XhciFunction::save`).
            let (f, input) = crate::usb::function(usb);
            rc.attach(d::XHCI_PCI_DEVICE, Box::new(f))
                .map_err(VmError::Pci)?;
            self.usb = Some(input);
        }
        let rc = alloc::sync::Arc::new(spin::Mutex::new(rc));
        // Saved on suspend and snapshot: the root complex with every function
        // behind it.
        self.saved_devices.push(crate::suspend::SavedDevice {
            name: "pcie",
            base: spec.ecam.base,
            handle: Box::new(crate::suspend::PcieHandle(rc.clone())),
        });
        for win in pci::RootWindow::all(&rc) {
            let (base, size) = (win.window.base, win.window.size);
            let mut dev: Box<dyn vdev::MmioDevice + Send> = Box::new(win);
            dev.connect_work_signal(&self.work);
            self.bus
                .insert("pcie", base, size, dev)
                .map_err(VmError::Bus)?;
        }
        self.pcie = Some(rc);
        Ok(())
    }

    /// The VM's MMIO bus for its log: `name@base+size` (hex) for each window,
    /// then how many virtio-mmio slots are empty.
    pub fn bus_map(&self) -> BusMap<'_> {
        BusMap(&self.bus)
    }

    /// Whether `ipa` is in the guest's GIC distributor, redistributors or ITS.
    pub fn is_gic(&self, ipa: u64) -> bool {
        (guest::GICD_BASE..guest::GICD_BASE + guest::GICD_SIZE).contains(&ipa)
            || (guest::GICR_BASE..guest::GICR_BASE + guest::GICR_REGION_SIZE).contains(&ipa)
            || self
                .its
                .is_some_and(|w| (w.base..w.base + w.size).contains(&ipa))
    }
}

/// [`Vm::bus_map`].
pub struct BusMap<'a>(&'a MmioBus);

impl core::fmt::Display for BusMap<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let mut empty = 0;
        for (name, base, size) in self.0.regions() {
            if name == boards::devices::EMPTY_VIRTIO_SLOT {
                empty += 1;
                continue;
            }
            write!(f, "{name}@{base:x}+{size:x} ")?;
        }
        write!(f, "({empty} empty virtio-mmio slots)")
    }
}

/// MSI-X messages of the VM's PCI functions into its GICv2m frame.
struct V2mMessages {
    frame: vgic::v2m::V2mFrame,
    base: u64,
}

impl pci::MsiController for V2mMessages {
    fn deliver(&mut self, address: u64, data: u32, irq: &mut dyn vdev::InterruptSink) -> bool {
        self.frame.message(self.base, address, data, irq)
    }
}

/// MSI-X messages of the VM's PCI functions into its ITS (DeviceID = requester ID).
struct ItsMessages(vgic::its::SharedIts);

impl pci::MsiController for ItsMessages {
    fn deliver(&mut self, _address: u64, _data: u32, _irq: &mut dyn vdev::InterruptSink) -> bool {
        // Every message carries its requester ID (`deliver_from`).
        false
    }
    fn deliver_from(
        &mut self,
        requester: u16,
        address: u64,
        data: u32,
        irq: &mut dyn vdev::InterruptSink,
    ) -> bool {
        self.0.message(requester, address, data, irq)
    }
}

/// The vGIC as a device's interrupt sink for one access, noting whether any line was
/// driven (so kicks are only looked for when something changed).
pub struct VgicSink<'a> {
    vgic: &'a SharedVgic,
    pub touched: bool,
}

impl<'a> VgicSink<'a> {
    pub fn new(vgic: &'a SharedVgic) -> Self {
        Self {
            vgic,
            touched: false,
        }
    }
}

impl vdev::InterruptSink for VgicSink<'_> {
    fn set_level(&mut self, intid: u32, level: bool) {
        self.touched = true;
        vdev::InterruptSink::set_level(&mut *self.vgic.lock(), intid, level);
    }
    fn set_lpi_pending(&mut self, intid: u32, vcpu: usize) {
        self.touched = true;
        vdev::InterruptSink::set_lpi_pending(&mut *self.vgic.lock(), intid, vcpu);
    }
}

impl PowerTopology for Vm {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        (0..self.vcpus()).find(|&i| vcpu_mpidr(i) & arch::smccc::MPIDR_AFFINITY_MASK == mpidr)
    }
    fn power(&self, idx: usize) -> CpuPower {
        match self.power[idx].load(Ordering::Acquire) {
            0 => CpuPower::On,
            2 => CpuPower::OnPending,
            _ => CpuPower::Off,
        }
    }
    fn valid_entry(&self, ipa: u64) -> bool {
        self.ram.contains(ipa) && ipa.is_multiple_of(4)
    }
    fn claim_start(&self, idx: usize) -> Result<(), CpuPower> {
        self.power[idx]
            .compare_exchange(
                power_u8(CpuPower::Off),
                power_u8(CpuPower::OnPending),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|_| self.power(idx))
    }
}

/// HCR_EL2 for a stage-2 guest (see `arch::controls::hcr_el2`).
pub fn hcr_el2() -> u64 {
    arch::controls::hcr_el2(crate::smp::oversubscribed())
}

/// Whether the VM's PMU may count at EL2: only a boot bundle that asks for it (the
/// exits benchmark, a host-side choice) sets this; system-disk VMs never do.
static PMU_EL2_COUNTING: AtomicBool = AtomicBool::new(false);

/// Sets the PMU policy of the VM about to be built (from its boot bundle).
pub fn set_pmu_policy(p: PmuPolicy) {
    PMU_EL2_COUNTING.store(p.el2_counting, Ordering::Relaxed);
}

/// The VM's PMU policy.
pub fn pmu_policy() -> PmuPolicy {
    PmuPolicy {
        el2_counting: PMU_EL2_COUNTING.load(Ordering::Relaxed),
    }
}

/// Programs the EL2 controls for running a vCPU of `vm` on this CPU. The PMU counters are all
/// given to the guest (HPMN = PMCR_EL0.N) but stop while EL2 runs, unless the VM's
/// PMU policy lets them count there (`bench exits` measures the exit path that way);
/// see `arch::controls::mdcr_el2`. The Spectre-v4 mitigation is (re)enabled on this
/// CPU, and the instruction cache invalidated if the VM's RAM was just loaded.
pub fn activate(vm: &Vm) {
    use crate::el1::read_sysreg;
    let pmcr_n = arch::controls::pmcr_n(read_sysreg!("PMCR_EL0"));
    let dfr0 = read_sysreg!("ID_AA64DFR0_EL1");
    crate::power::keep_ssb_mitigation_on();
    write_sysreg!("HCR_EL2", hcr_el2());
    write_sysreg!("VTCR_EL2", vm.ram.vtcr());
    write_sysreg!("VTTBR_EL2", vm.ram.vttbr());
    write_sysreg!("CPTR_EL2", arch::controls::cptr_el2());
    write_sysreg!(
        "MDCR_EL2",
        arch::controls::mdcr_el2(pmcr_n, dfr0, pmu_policy())
    );
    write_sysreg!("CNTHCTL_EL2", arch::controls::cnthctl_el2());
    // The VM's one offset: guest virtual time stood still while it was paused.
    write_sysreg!("CNTVOFF_EL2", vm.run.cntvoff());
    write_sysreg!("VPIDR_EL2", read_sysreg!("MIDR_EL1"));
    ICH_HCR_EL2.set(crate::irq::ICH_HCR_EN);
    write_sysreg!("ICH_VMCR_EL2", 0);
    write_sysreg!("ICH_AP0R0_EL2", 0);
    write_sysreg!("ICH_AP1R0_EL2", 0);
    // SAFETY: invalidates this VMID's stage-1+2 TLB entries so the new tables are used.
    unsafe { core::arch::asm!("isb", "tlbi vmalls12e1is", "dsb ish", "isb") };
    vm.ram.before_entry();
}

/// Makes vCPU `v` the one that runs on this CPU.
pub fn load_vcpu(v: &Vcpu) {
    write_sysreg!("VMPIDR_EL2", vcpu_mpidr(v.idx));
    write_sysreg!("ICH_VMCR_EL2", v.cpuif.vmcr);
    write_sysreg!("ICH_AP0R0_EL2", v.cpuif.ap0r0);
    write_sysreg!("ICH_AP1R0_EL2", v.cpuif.ap1r0);
    v.el1.restore();
}
