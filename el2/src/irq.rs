//! Physical interrupts at EL2 and the virtual CPU interface: acknowledging and ending
//! the hypervisor's own interrupts (ICC_* with EOImode = 1, so a hardware-linked
//! virtual interrupt can be deactivated by the guest), the ICH_LR list registers as
//! [`vgic::ListRegisters`], and kicking other physical CPUs with an SGI.

use crate::el1::{read_sysreg, write_sysreg};

/// INTIDs of 1020..=1023 are special (spurious and friends).
const INTID_SPECIAL_FIRST: u32 = 1020;
/// The SGI the hypervisor sends to make another physical CPU look at its vCPU.
///
/// The normal world owns SGIs 0..=7: Arm's Trusted Firmware-A configures 8..=15 as
/// Secure Group 0/1 on many platforms (its `ARM_IRQ_SEC_SGI_0` is 8), so an SGI
/// there may never reach EL2. Nothing else in the normal world uses the physical
/// GIC (guests only see the virtual one), so the first of them is the kick.
pub const KICK_SGI: u32 = 0;
/// ICC_CTLR_EL1.EOImode: EOIR only drops priority; DIR deactivates.
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
/// ICH_HCR_EL2.En (the virtual CPU interface on, no maintenance interrupt requested).
/// Which maintenance interrupts to request is the vGIC's policy: [`vgic::IchHcr`].
pub const ICH_HCR_EN: u64 = vgic::IchHcr::EXIT.0;
/// ICH_VTR_EL2.ListRegs: number of list registers minus one.
const ICH_VTR_LISTREGS_MASK: u64 = 0x1f;

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

/// Sets EOImode = 1 for this CPU's physical CPU interface.
pub fn init_cpu_interface() {
    write_sysreg!(
        "ICC_CTLR_EL1",
        read_sysreg!("ICC_CTLR_EL1") | ICC_CTLR_EOIMODE
    );
    write_sysreg!("ICC_PMR_EL1", 0xff);
    write_sysreg!("ICC_IGRPEN1_EL1", 1);
    // SAFETY: synchronises the CPU-interface configuration.
    unsafe { core::arch::asm!("isb") };
}

/// The highest-priority pending group-1 interrupt, acknowledged; `None` if nothing
/// is pending.
pub fn acknowledge() -> Option<u32> {
    let id = read_sysreg!("ICC_IAR1_EL1") as u32 & 0xff_ffff;
    (id < INTID_SPECIAL_FIRST).then_some(id)
}

/// Drops the running priority of `intid` (it stays active).
pub fn priority_drop(intid: u32) {
    write_sysreg!("ICC_EOIR1_EL1", u64::from(intid));
}

/// Ends a hypervisor interrupt completely: priority drop and deactivation.
pub fn end(intid: u32) {
    priority_drop(intid);
    write_sysreg!("ICC_DIR_EL1", u64::from(intid));
}

/// Sends the kick SGI to the physical CPU with affinity `mpidr` (any Aff0: the
/// range selector addresses CPUs past the first 16 of a cluster).
pub fn kick(mpidr: u64) {
    let v = arch::sgi::sgi1r_to(KICK_SGI as u8, mpidr);
    // SAFETY: the barrier orders earlier stores (the kick flag) before the SGI.
    unsafe { core::arch::asm!("dsb ishst") };
    write_sysreg!("ICC_SGI1R_EL1", v);
    // SAFETY: synchronises the SGI generation.
    unsafe { core::arch::asm!("isb") };
}

/// The physical list registers ICH_LR<n>_EL2 of this CPU.
pub struct HwListRegisters {
    count: usize,
}

impl HwListRegisters {
    pub fn new() -> Self {
        Self {
            count: ((read_sysreg!("ICH_VTR_EL2") & ICH_VTR_LISTREGS_MASK) + 1) as usize,
        }
    }
}

macro_rules! lr_access {
    ($op:ident, $i:expr $(, $v:expr)?) => {
        match $i {
            0 => lr_access!(@ $op "ICH_LR0_EL2" $(, $v)?),
            1 => lr_access!(@ $op "ICH_LR1_EL2" $(, $v)?),
            2 => lr_access!(@ $op "ICH_LR2_EL2" $(, $v)?),
            3 => lr_access!(@ $op "ICH_LR3_EL2" $(, $v)?),
            4 => lr_access!(@ $op "ICH_LR4_EL2" $(, $v)?),
            5 => lr_access!(@ $op "ICH_LR5_EL2" $(, $v)?),
            6 => lr_access!(@ $op "ICH_LR6_EL2" $(, $v)?),
            7 => lr_access!(@ $op "ICH_LR7_EL2" $(, $v)?),
            8 => lr_access!(@ $op "ICH_LR8_EL2" $(, $v)?),
            9 => lr_access!(@ $op "ICH_LR9_EL2" $(, $v)?),
            10 => lr_access!(@ $op "ICH_LR10_EL2" $(, $v)?),
            11 => lr_access!(@ $op "ICH_LR11_EL2" $(, $v)?),
            12 => lr_access!(@ $op "ICH_LR12_EL2" $(, $v)?),
            13 => lr_access!(@ $op "ICH_LR13_EL2" $(, $v)?),
            14 => lr_access!(@ $op "ICH_LR14_EL2" $(, $v)?),
            _ => lr_access!(@ $op "ICH_LR15_EL2" $(, $v)?),
        }
    };
    (@ read $r:literal) => { read_sysreg!($r) };
    (@ write $r:literal, $v:expr) => { write_sysreg!($r, $v) };
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
