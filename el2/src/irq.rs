//! Physical interrupts at EL2 and the virtual CPU interface: acknowledging and ending
//! the hypervisor's own interrupts (ICC_* with EOImode = 1, so a hardware-linked
//! virtual interrupt can be deactivated by the guest), the ICH_LR list registers as
//! [`vgic::ListRegisters`], and kicking other physical CPUs with an SGI.

use aarch64_cpu::registers::{
    ICH_LR0_EL2, ICH_LR10_EL2, ICH_LR11_EL2, ICH_LR12_EL2, ICH_LR13_EL2, ICH_LR14_EL2,
    ICH_LR15_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2, ICH_LR5_EL2, ICH_LR6_EL2,
    ICH_LR7_EL2, ICH_LR8_EL2, ICH_LR9_EL2, ICH_VTR_EL2,
};
use arch::regs::{ICC_CTLR_EL1 as CTLR, ICC_DIR_EL1 as DIR, ICC_SGI1R};
use arm_gic::gicv3::GicCpuInterface;
use arm_gic::{IntId, InterruptGroup};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

use crate::el1::typed_sysreg;

typed_sysreg!(
    /// ICC_CTLR_EL1 (`aarch64-cpu`'s has no EOImode and no write access).
    IccCtlrEl1, "ICC_CTLR_EL1", CTLR::Register, rw
);
typed_sysreg!(
    /// ICC_DIR_EL1: deactivates an interrupt (`arm-gic` has no call for it).
    IccDirEl1, "ICC_DIR_EL1", DIR::Register, w
);
typed_sysreg!(
    /// ICC_SGI1R_EL1: generates a group-1 SGI (`arm-gic`'s `send_sgi` has no range
    /// selector; `arch::sgi::sgi1r_to` builds the value).
    IccSgi1rEl1, "ICC_SGI1R_EL1", ICC_SGI1R::Register, w
);

/// The SGI the hypervisor sends to make another physical CPU look at its vCPU.
///
/// The normal world owns SGIs 0..=7: Arm's Trusted Firmware-A configures 8..=15 as
/// Secure Group 0/1 on many platforms (its `ARM_IRQ_SEC_SGI_0` is 8), so an SGI
/// there may never reach EL2. Nothing else in the normal world uses the physical
/// GIC (guests only see the virtual one), so the first of them is the kick.
pub const KICK_SGI: u32 = 0;
/// ICH_HCR_EL2.En (the virtual CPU interface on, no maintenance interrupt requested).
/// Which maintenance interrupts to request is the vGIC's policy: [`vgic::IchHcr`].
pub const ICH_HCR_EN: u64 = vgic::IchHcr::EXIT.0;
/// The lowest priority mask: every priority the GIC implements is let through.
const PRIORITY_MASK_ALL: u8 = u8::MAX;

/// The physical private interrupts the hypervisor takes, as the device tree names
/// them.
#[derive(Debug, Clone, Copy)]
pub struct HypIrqs {
    /// The EL2 physical timer.
    pub htimer: u32,
    /// The EL1 virtual timer (delivered to guests hardware-linked).
    pub vtimer: u32,
    /// The GIC's virtual-CPU-interface maintenance interrupt.
    pub maintenance: u32,
}

static HYP_IRQS: spin::Once<HypIrqs> = spin::Once::new();

/// Records the hypervisor's interrupts (once, at boot).
pub fn set_hyp_irqs(irqs: HypIrqs) {
    HYP_IRQS.call_once(|| irqs);
}

/// The hypervisor's interrupts; the architecture's recommended numbers (SBSA) until
/// the device tree has been read.
pub fn hyp_irqs() -> HypIrqs {
    HYP_IRQS.get().copied().unwrap_or(HypIrqs {
        htimer: boards::guest::HTIMER_INTID,
        vtimer: boards::guest::VTIMER_INTID,
        maintenance: boards::guest::MAINTENANCE_INTID,
    })
}

/// Sets EOImode = 1 for this CPU's physical CPU interface, unmasks every priority
/// and enables group 1.
pub fn init_cpu_interface() {
    IccCtlrEl1.modify(CTLR::EOImode::DropOnly);
    GicCpuInterface::set_priority_mask(PRIORITY_MASK_ALL);
    GicCpuInterface::enable_group1(true);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Acknowledges the highest-priority pending group-1 interrupt and returns it;
/// `None` if nothing is pending (or only a special INTID, 1020..=1023).
///
/// This is the hypervisor's one system-register read with a side effect: reading
/// ICC_IAR1_EL1 makes the interrupt active, so it is not repeatable and must be
/// followed by [`priority_drop`] or [`end`]. `arm-gic` performs the read; it
/// declares it memory-neutral, which holds (no state in memory changes with it,
/// and nothing here relies on memory accesses staying after it).
pub fn acknowledge() -> Option<u32> {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1)
        .map(u32::from)
        .filter(|&id| id < u32::from(IntId::SPECIAL_SECURE))
}

/// Drops the running priority of `intid` (it stays active: EOImode = 1).
pub fn priority_drop(intid: u32) {
    if let Ok(id) = IntId::try_from(intid) {
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    }
}

/// Ends a hypervisor interrupt completely: priority drop and deactivation.
pub fn end(intid: u32) {
    priority_drop(intid);
    IccDirEl1.write(DIR::INTID.val(u64::from(intid)));
}

/// Sends the kick SGI to the physical CPU with affinity `mpidr` (any Aff0: the
/// range selector addresses CPUs past the first 16 of a cluster).
pub fn kick(mpidr: u64) {
    let v = arch::sgi::sgi1r_to(KICK_SGI as u8, mpidr);
    // Earlier stores (the kick flag) must be visible before the SGI.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    IccSgi1rEl1.set(v);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The physical list registers ICH_LR<n>_EL2 of this CPU.
pub struct HwListRegisters {
    count: usize,
}

impl HwListRegisters {
    pub fn new() -> Self {
        Self {
            count: ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1,
        }
    }
}

macro_rules! lr_access {
    ($op:ident, $i:expr $(, $v:expr)?) => {
        match $i {
            0 => lr_access!(@ $op ICH_LR0_EL2 $(, $v)?),
            1 => lr_access!(@ $op ICH_LR1_EL2 $(, $v)?),
            2 => lr_access!(@ $op ICH_LR2_EL2 $(, $v)?),
            3 => lr_access!(@ $op ICH_LR3_EL2 $(, $v)?),
            4 => lr_access!(@ $op ICH_LR4_EL2 $(, $v)?),
            5 => lr_access!(@ $op ICH_LR5_EL2 $(, $v)?),
            6 => lr_access!(@ $op ICH_LR6_EL2 $(, $v)?),
            7 => lr_access!(@ $op ICH_LR7_EL2 $(, $v)?),
            8 => lr_access!(@ $op ICH_LR8_EL2 $(, $v)?),
            9 => lr_access!(@ $op ICH_LR9_EL2 $(, $v)?),
            10 => lr_access!(@ $op ICH_LR10_EL2 $(, $v)?),
            11 => lr_access!(@ $op ICH_LR11_EL2 $(, $v)?),
            12 => lr_access!(@ $op ICH_LR12_EL2 $(, $v)?),
            13 => lr_access!(@ $op ICH_LR13_EL2 $(, $v)?),
            14 => lr_access!(@ $op ICH_LR14_EL2 $(, $v)?),
            _ => lr_access!(@ $op ICH_LR15_EL2 $(, $v)?),
        }
    };
    (@ read $r:ident) => { $r.get() };
    (@ write $r:ident, $v:expr) => { $r.set($v) };
}

impl vgic::ListRegisters for HwListRegisters {
    fn count(&self) -> usize {
        self.count
    }
    fn read(&self, i: usize) -> u64 {
        if i >= self.count {
            return 0;
        }
        lr_access!(read, i)
    }
    fn write(&mut self, i: usize, v: u64) {
        if i < self.count {
            lr_access!(write, i, v);
        }
    }
}
