//! The physical GICv3, driven with `arm-gic`: distributor and redistributors
//! initialised, each CPU's redistributor woken and the hypervisor's own interrupts
//! enabled (EL2 timer, the guest's virtual timer for hardware-linked delivery, the
//! maintenance interrupt, the kick SGI, the host console UART). Guests never see the
//! physical GIC: their interrupts are virtual, through the ICH_* list registers.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use aarch64_cpu::registers::ICC_SRE_EL2;
use arch::relax::Mutex;
use arm_gic::gicv3::registers::{Gicd, GicrSgi, Sgi};
use arm_gic::gicv3::{GicV3, Group};
use arm_gic::{IntId, Trigger};
use safe_mmio::UniqueMmioPointer;
use tock_registers::interfaces::Writeable;

use boards::discover::Gic as GicDesc;
use boards::guest;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);
/// Base of the first redistributor region, for per-CPU register writes `arm-gic`
/// has no call for.
static GICR_BASE: AtomicUsize = AtomicUsize::new(0);
/// Bytes from one redistributor to the next: [`GICR_STRIDE`], doubled where the
/// frames carry GICv4 virtual-LPI pages (GICR_TYPER.VLPIS).
static GICR_FRAME_BYTES: AtomicUsize = AtomicUsize::new(GICR_STRIDE);
/// The redistributor of each CPU (firmware CPU order), matched by the affinity its
/// GICR_TYPER reports (`boards::redist`), not by position.
static REDIST_OF_CPU: [AtomicUsize; crate::stacks::MAX_CPUS] =
    [const { AtomicUsize::new(usize::MAX) }; crate::stacks::MAX_CPUS];

/// The redistributor index `arm-gic` calls CPU `cpu`'s.
fn redist(cpu: usize) -> usize {
    REDIST_OF_CPU
        .get(cpu)
        .map(|r| r.load(Ordering::Relaxed))
        .filter(|&r| r != usize::MAX)
        .unwrap_or(cpu)
}
/// Bytes of one CPU's redistributor (its RD_base and SGI_base frames), from
/// `arm-gic`'s register layout.
const GICR_STRIDE: usize = core::mem::size_of::<GicrSgi>();
/// Offset of GICR_ICACTIVER0 in a CPU's redistributor.
const GICR_ICACTIVER0: usize =
    core::mem::offset_of!(GicrSgi, sgi) + core::mem::offset_of!(Sgi, icactiver);
const _: () = assert!(GICR_STRIDE == 0x2_0000 && GICR_ICACTIVER0 == 0x1_0380);
/// Offset of GICR_ISACTIVER0 in a CPU's redistributor.
const GICR_ISACTIVER0: usize =
    core::mem::offset_of!(GicrSgi, sgi) + core::mem::offset_of!(Sgi, isactiver);
const _: () = assert!(GICR_ISACTIVER0 == 0x1_0300);

/// Priority of every hypervisor interrupt (all equal: they never preempt each other,
/// since interrupts stay masked at EL2).
const PRIORITY: u8 = 0x80;

/// Why the GIC could not be brought up.
#[derive(Debug)]
#[allow(dead_code)] // fields are reported through Debug in the fatal log line
pub enum GicInitError {
    NoRedistributor,
    Driver(arm_gic::gicv3::GicError),
    /// CPUs and redistributors do not pair up by affinity.
    Affinity(boards::redist::MatchError),
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

/// Initialises the distributor and all redistributors, and the boot CPU (`cpu`,
/// an index into `cpus`, the CPUs' MPIDR affinities in firmware order).
pub fn init(desc: &GicDesc, cpus: &[u64], cpu: usize) -> Result<(), GicInitError> {
    enable_sysreg_interface();
    let region = desc
        .gicr
        .first()
        .copied()
        .ok_or(GicInitError::NoRedistributor)?;
    let (Some(gicd), Some(gicr)) = (
        NonNull::new(desc.gicd.base as *mut Gicd),
        NonNull::new(region.base as *mut GicrSgi),
    ) else {
        return Err(GicInitError::NoRedistributor);
    };
    // Walk the region's redistributors (GICR_TYPER.Last ends it) for the affinity
    // each serves. At most one per 128 KiB of the region.
    let most = (region.size as usize / GICR_STRIDE).max(1);
    let mut frames: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    let mut vlpis = false;
    {
        // SAFETY: the addresses come from the firmware's GIC description and are
        // identity-mapped as device memory; this probing instance only reads
        // GICR_TYPER (and the first frame's GICR_PIDR2) and is dropped before the
        // driver's own instance is made, so the two never alias.
        let mut probe = unsafe {
            GicV3::new(UniqueMmioPointer::new(gicd), gicr, most).map_err(GicInitError::Driver)?
        };
        for i in 0..most {
            let typer = probe.gicr_typer(i).map_err(GicInitError::Driver)?;
            vlpis |= typer.virtual_lpis_supported();
            frames.push(typer.core_mpidr());
            if typer.last_redistributor() {
                break;
            }
        }
    }
    let map =
        boards::redist::match_redistributors(cpus, &frames).map_err(GicInitError::Affinity)?;
    for (slot, &r) in REDIST_OF_CPU.iter().zip(&map) {
        slot.store(r, Ordering::Relaxed);
    }
    if map.iter().enumerate().any(|(i, &r)| i != r) {
        log::info!("GIC: redistributors matched to CPUs by GICR_TYPER affinity, not firmware order: {map:?}");
    }
    // SAFETY: the addresses come from the device tree's gic-v3 node, are identity-mapped
    // as device memory, and nothing else in the hypervisor touches these registers.
    let mut gic = unsafe {
        GicV3::new(UniqueMmioPointer::new(gicd), gicr, frames.len())
            .map_err(GicInitError::Driver)?
    };
    gic.setup(redist(cpu));
    *GIC.lock() = Some(gic);
    GICR_BASE.store(gicr.as_ptr() as usize, Ordering::Relaxed);
    GICR_FRAME_BYTES.store(
        if vlpis { 2 * GICR_STRIDE } else { GICR_STRIDE },
        Ordering::Relaxed,
    );
    init_private(cpu);
    crate::irq::init_cpu_interface();
    Ok(())
}

/// Brings up a secondary CPU's redistributor and CPU interface.
pub fn init_secondary(cpu: usize) {
    enable_sysreg_interface();
    if let Some(gic) = GIC.lock().as_mut() {
        gic.init_cpu(redist(cpu));
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
    let cpu = redist(cpu);
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
        let cpu = (intid < 32).then_some(redist(cpu));
        let _ = gic.enable_interrupt(id, cpu, false);
    }
}

/// Deactivates private interrupt `intid` on `cpu`. A hardware-linked virtual timer
/// interrupt that a vCPU never EOId (it stopped, or the VM reset) leaves its physical
/// PPI active, which would silence the timer of the next vCPU on that CPU.
pub fn deactivate_private(intid: u32, cpu: usize) {
    let base = GICR_BASE.load(Ordering::Relaxed);
    if base == 0 || intid >= 32 {
        return;
    }
    let reg = base + redist(cpu) * GICR_FRAME_BYTES.load(Ordering::Relaxed) + GICR_ICACTIVER0;
    // SAFETY: `reg` is GICR_ICACTIVER0 of `cpu`'s redistributor, inside the region the
    // device tree describes and identity-mapped as device memory; writing a one bit
    // only clears that interrupt's active state (one bit per INTID 0..=31).
    unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << intid) };
}

/// Makes private interrupt `intid` active on `cpu`: a vCPU whose hardware-linked
/// virtual timer interrupt is pending or active moved to this CPU, and its
/// deactivation by the guest deactivates the physical PPI here (smp.rs).
pub fn activate_private(intid: u32, cpu: usize) {
    let base = GICR_BASE.load(Ordering::Relaxed);
    if base == 0 || intid >= 32 {
        return;
    }
    let reg = base + redist(cpu) * GICR_FRAME_BYTES.load(Ordering::Relaxed) + GICR_ISACTIVER0;
    // SAFETY: `reg` is GICR_ISACTIVER0 of `cpu`'s redistributor, inside the region the
    // device tree describes and identity-mapped as device memory; writing a one bit
    // only sets that interrupt's active state (one bit per INTID 0..=31).
    unsafe { core::ptr::write_volatile(reg as *mut u32, 1 << intid) };
}

/// Whether private interrupt `intid` is active on `cpu` (GICR_ISACTIVER0).
pub fn private_active(intid: u32, cpu: usize) -> bool {
    let base = GICR_BASE.load(Ordering::Relaxed);
    if base == 0 || intid >= 32 {
        return false;
    }
    let reg = base + redist(cpu) * GICR_FRAME_BYTES.load(Ordering::Relaxed) + GICR_ISACTIVER0;
    // SAFETY: `reg` is GICR_ISACTIVER0 of `cpu`'s redistributor, inside the region the
    // device tree describes and identity-mapped as device memory; reading it has no
    // side effect.
    let v = unsafe { core::ptr::read_volatile(reg as *const u32) };
    v & (1 << intid) != 0
}
