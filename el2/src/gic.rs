//! The physical GICv3, driven with `arm-gic`: distributor and redistributors
//! initialised, each CPU's redistributor woken and the hypervisor's own interrupts
//! enabled (EL2 timer, the guest's virtual timer for hardware-linked delivery, the
//! maintenance interrupt, the kick SGI, the host console UART). Guests never see the
//! physical GIC: their interrupts are virtual, through the ICH_* list registers.

use core::ptr::NonNull;

use aarch64_cpu::registers::ICC_SRE_EL2;
use arm_gic::gicv3::registers::{Gicd, GicrSgi, Sgi};
use arm_gic::gicv3::{GicV3, Group};
use arm_gic::{IntId, Trigger};
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;
use tock_registers::interfaces::Writeable;

use boards::discover::Gic as GicDesc;
use boards::guest;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);
/// Base of the first redistributor region, for per-CPU register writes `arm-gic`
/// has no call for.
static GICR_BASE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// Bytes of one CPU's redistributor (its RD_base and SGI_base frames), from
/// `arm-gic`'s register layout.
const GICR_STRIDE: usize = core::mem::size_of::<GicrSgi>();
/// Offset of GICR_ICACTIVER0 in a CPU's redistributor.
const GICR_ICACTIVER0: usize =
    core::mem::offset_of!(GicrSgi, sgi) + core::mem::offset_of!(Sgi, icactiver);
const _: () = assert!(GICR_STRIDE == 0x2_0000 && GICR_ICACTIVER0 == 0x1_0380);

/// Priority of every hypervisor interrupt (all equal: they never preempt each other,
/// since interrupts stay masked at EL2).
const PRIORITY: u8 = 0x80;

/// Why the GIC could not be brought up.
#[derive(Debug)]
#[allow(dead_code)] // fields are reported through Debug in the fatal log line
pub enum GicInitError {
    NoRedistributor,
    Driver(arm_gic::gicv3::GicError),
}

/// Turns on the system-register interface at EL2 (SRE) and lets EL1 use it too
/// (ENABLE), with the FIQ/IRQ bypass disabled (DFB, DIB); required before any
/// other ICC_* access on this CPU.
fn enable_sysreg_interface() {
    ICC_SRE_EL2.write(
        ICC_SRE_EL2::SRE::SET
            + ICC_SRE_EL2::DFB::SET
            + ICC_SRE_EL2::DIB::SET
            + ICC_SRE_EL2::ENABLE::SET,
    );
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Initialises the distributor and all redistributors, and the boot CPU (`cpu`).
pub fn init(desc: &GicDesc, cpu_count: usize, cpu: usize) -> Result<(), GicInitError> {
    enable_sysreg_interface();
    let gicr = desc
        .gicr
        .first()
        .copied()
        .ok_or(GicInitError::NoRedistributor)?;
    let (Some(gicd), Some(gicr)) = (
        NonNull::new(desc.gicd.base as *mut Gicd),
        NonNull::new(gicr.base as *mut GicrSgi),
    ) else {
        return Err(GicInitError::NoRedistributor);
    };
    // SAFETY: the addresses come from the device tree's gic-v3 node, are identity-mapped
    // as device memory, and nothing else in the hypervisor touches these registers.
    let mut gic = unsafe {
        GicV3::new(UniqueMmioPointer::new(gicd), gicr, cpu_count).map_err(GicInitError::Driver)?
    };
    gic.setup(cpu);
    *GIC.lock() = Some(gic);
    GICR_BASE.store(
        gicr.as_ptr() as usize,
        core::sync::atomic::Ordering::Relaxed,
    );
    init_private(cpu);
    crate::irq::init_cpu_interface();
    Ok(())
}

/// Brings up a secondary CPU's redistributor and CPU interface.
pub fn init_secondary(cpu: usize) {
    enable_sysreg_interface();
    if let Some(gic) = GIC.lock().as_mut() {
        gic.init_cpu(cpu);
    }
    init_private(cpu);
    crate::irq::init_cpu_interface();
}

fn configure(gic: &mut GicV3<'static>, id: IntId, cpu: Option<usize>, trigger: Trigger) {
    let _ = gic.set_group(id, cpu, Group::Group1NS);
    let _ = gic.set_interrupt_priority(id, cpu, PRIORITY);
    if !id.is_sgi() {
        let _ = gic.set_trigger(id, cpu, trigger);
    }
    let _ = gic.enable_interrupt(id, cpu, true);
}

/// Enables this CPU's private hypervisor interrupts.
fn init_private(cpu: usize) {
    let mut g = GIC.lock();
    let Some(gic) = g.as_mut() else { return };
    let irqs = crate::irq::hyp_irqs();
    for ppi in [irqs.htimer, irqs.vtimer, irqs.maintenance] {
        configure(
            gic,
            IntId::ppi(ppi - guest::PPI_BASE),
            Some(cpu),
            Trigger::Level,
        );
    }
    configure(
        gic,
        IntId::sgi(crate::irq::KICK_SGI),
        Some(cpu),
        Trigger::Edge,
    );
}

/// Enables shared interrupt `intid` (an SPI), level-triggered, routed to the boot CPU.
pub fn enable_spi(intid: u32) {
    let mut g = GIC.lock();
    let Some(gic) = g.as_mut() else { return };
    if let Ok(id) = IntId::try_from(intid) {
        configure(gic, id, None, Trigger::Level);
    }
}

/// Routes shared interrupt `intid` (an SPI) to the CPU whose MPIDR_EL1 is `mpidr`
/// (GICD_IROUTER, Interrupt_Routing_Mode 0: that one PE).
pub fn route_spi(intid: u32, mpidr: u64) {
    let mut g = GIC.lock();
    let Some(gic) = g.as_mut() else { return };
    if let Ok(id) = IntId::try_from(intid) {
        // Only the affinity fields: MPIDR_EL1 bit 31 is RES1, which in GICD_IROUTER
        // would select routing to any PE.
        let _ = gic
            .distributor()
            .set_routing(id, Some(mpidr & arch::smccc::MPIDR_AFFINITY_MASK));
    }
}

/// Disables interrupt `intid` (a private one on `cpu`): an interrupt the hypervisor
/// has no handler for must not fire again.
pub fn disable(intid: u32, cpu: usize) {
    let mut g = GIC.lock();
    let Some(gic) = g.as_mut() else { return };
    if let Ok(id) = IntId::try_from(intid) {
        let cpu = (intid < 32).then_some(cpu);
        let _ = gic.enable_interrupt(id, cpu, false);
    }
}

/// Deactivates private interrupt `intid` on `cpu`. A hardware-linked virtual timer
/// interrupt that a vCPU never EOId (it stopped, or the VM reset) leaves its physical
/// PPI active, which would silence the timer of the next vCPU on that CPU.
pub fn deactivate_private(intid: u32, cpu: usize) {
    let base = GICR_BASE.load(core::sync::atomic::Ordering::Relaxed);
    if base == 0 || intid >= 32 {
        return;
    }
    let reg = base + cpu * GICR_STRIDE + GICR_ICACTIVER0;
    // SAFETY: `reg` is GICR_ICACTIVER0 of `cpu`'s redistributor, inside the region the
    // device tree describes and identity-mapped as device memory; writing a one bit
    // only clears that interrupt's active state (one bit per INTID 0..=31).
    unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << intid) };
}
