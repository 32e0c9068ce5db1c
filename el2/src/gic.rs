//! The physical GICv3, driven with `arm-gic`: distributor and this CPU's
//! redistributor initialised, the CPU interface enabled at EL2, and the hypervisor's
//! own private interrupts (the EL2 timer) enabled. Guests never see it: their
//! interrupts are virtual (ICH_* list registers, see the vGIC issue).

use core::ptr::NonNull;

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, Group};
use arm_gic::{IntId, InterruptGroup, Trigger};
use safe_mmio::UniqueMmioPointer;
use spin::Mutex;

use boards::discover::Gic as GicDesc;

static GIC: Mutex<Option<GicV3<'static>>> = Mutex::new(None);

/// ICC_SRE_EL2: system-register interface on (SRE), EL1 may use it too (Enable),
/// FIQ/IRQ bypass disabled (DFB, DIB).
const ICC_SRE_EL2_VALUE: u64 = 0b1111;

/// Initialises the GIC for `cpu_count` CPUs and this (boot) CPU.
pub fn init(desc: &GicDesc, cpu_count: usize) -> Result<(), arm_gic::gicv3::GicError> {
    // SAFETY: writes ICC_SRE_EL2 to enable the system-register interface at EL2 and
    // allow EL1 to use it; this is required before any ICC_* access.
    unsafe { core::arch::asm!("msr ICC_SRE_EL2, {}", "isb", in(reg) ICC_SRE_EL2_VALUE) };
    let gicr = desc
        .gicr
        .first()
        .copied()
        .unwrap_or(boards::Range { base: 0, size: 0 });
    // SAFETY: the addresses come from the device tree's gic-v3 node, are identity-mapped
    // as device memory, and nothing else in the hypervisor touches these registers.
    let mut gic = unsafe {
        GicV3::new(
            UniqueMmioPointer::new(NonNull::new(desc.gicd.base as *mut Gicd).expect("GICD base")),
            NonNull::new(gicr.base as *mut GicrSgi).expect("GICR base"),
            cpu_count,
        )?
    };
    gic.setup(0);
    GicCpuInterface::set_priority_mask(0xff);
    *GIC.lock() = Some(gic);
    Ok(())
}

/// Enables private interrupt `intid` (a PPI) on `cpu`, level-triggered, group 1.
pub fn enable_ppi(intid: u32, cpu: usize) {
    let mut g = GIC.lock();
    let Some(gic) = g.as_mut() else { return };
    let id = IntId::ppi(intid - boards::guest::PPI_BASE);
    let _ = gic.set_group(id, Some(cpu), Group::Group1NS);
    let _ = gic.set_interrupt_priority(id, Some(cpu), 0x80);
    let _ = gic.set_trigger(id, Some(cpu), Trigger::Level);
    let _ = gic.enable_interrupt(id, Some(cpu), true);
}

/// Acknowledges the highest-priority pending group-1 interrupt, if any.
pub fn acknowledge() -> Option<u32> {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map(u32::from)
}

/// Ends (and deactivates) interrupt `intid`.
pub fn end(intid: u32) {
    if let Ok(id) = IntId::try_from(intid) {
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    }
}
