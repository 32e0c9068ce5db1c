//! [`Vgic`]: the whole interrupt state of one VM (distributor, one redistributor and
//! 32 private interrupts per vCPU, every SPI) and the input side: device lines,
//! PPI lines, hardware mappings and the "kick" mask telling `el2` which vCPUs have
//! new work.

use alloc::vec::Vec;

use crate::config::{ConfigError, VgicConfig};
use crate::irq::Irq;
use crate::regs::{ctlr, intid, mpidr, Irouter};

/// Why an input from the hypervisor side was refused (never guest-caused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputError {
    /// No vCPU with this index.
    NoSuchVcpu(usize),
    /// The INTID is not an implemented SPI.
    NotSpi(u32),
    /// The INTID is not a PPI (16..=31).
    NotPpi(u32),
    /// The INTID is not implemented (neither private nor an implemented SPI).
    NoSuchIntid(u32),
}

/// One vCPU's redistributor and private interrupts.
#[derive(Debug, Clone)]
pub(crate) struct VcpuState {
    /// MPIDR_EL1 affinity packed as Aff3.Aff2.Aff1.Aff0.
    pub affinity: u32,
    /// SGIs and PPIs.
    pub private: [Irq; intid::PRIVATE_COUNT as usize],
    /// GICR_WAKER.ProcessorSleep.
    pub sleeping: bool,
    /// INTID held by each list register, as written by the last flush.
    pub slots: Vec<Option<u32>>,
    /// Active interrupts the last flush left out of the list registers, in the order
    /// a guest ending them by priority deactivates them (highest priority first).
    pub left_out: Vec<u32>,
    /// LPI registers of its redistributor.
    pub lpi: crate::lpi::RdLpi,
}

/// Where an SPI is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// To this vCPU.
    One(usize),
    /// 1 of N: any vCPU may take it.
    Any,
    /// The target affinity names no vCPU: delivered nowhere.
    Nowhere,
}

/// The virtual GICv3 of one VM.
#[derive(Debug, Clone)]
pub struct Vgic {
    pub(crate) cfg: VgicConfig,
    /// GICD_CTLR writable bits (EnableGrp0/EnableGrp1).
    pub(crate) ctlr: u32,
    pub(crate) spis: Vec<Irq>,
    pub(crate) vcpus: Vec<VcpuState>,
    pub(crate) kicks: u64,
    /// LPI state, when the VM has an ITS (`lpi`).
    pub(crate) lpis: Option<crate::lpi::Lpis>,
}

impl Vgic {
    /// A vGIC in its reset state: everything disabled, Group 0, priority 0, SPIs
    /// level-sensitive and routed to vCPU 0, every redistributor asleep.
    pub fn new(cfg: VgicConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let route0 = Irouter::for_mpidr(cfg.mpidrs[0]);
        let spis = (0..cfg.num_spis)
            .map(|_| Irq {
                route: route0,
                ..Irq::default()
            })
            .collect();
        let vcpus = cfg
            .mpidrs
            .iter()
            .map(|m| VcpuState {
                affinity: mpidr::packed(*m),
                private: core::array::from_fn(|i| Irq::private(i as u32)),
                sleeping: true,
                slots: Vec::new(),
                left_out: Vec::new(),
                lpi: crate::lpi::RdLpi::default(),
            })
            .collect();
        Ok(Self {
            cfg,
            ctlr: 0,
            spis,
            vcpus,
            kicks: 0,
            lpis: None,
        })
    }

    /// Returns every register and interrupt to its reset state (a VM reboot). The
    /// hardware links made by [`Self::set_hw_mapping`] are host wiring and survive;
    /// list registers are forgotten, so `el2` must `flush` before the next entry.
    pub fn reset(&mut self) {
        let Ok(mut fresh) = Vgic::new(self.cfg.clone()) else {
            log::warn!("vgic: reset: configuration no longer valid; state kept");
            return;
        };
        for (new, old) in fresh.vcpus.iter_mut().zip(&self.vcpus) {
            for (n, o) in new.private.iter_mut().zip(&old.private) {
                n.hw = o.hw;
            }
        }
        for (n, o) in fresh.spis.iter_mut().zip(&self.spis) {
            n.hw = o.hw;
        }
        if self.lpis.is_some() {
            fresh.enable_lpi_support();
        }
        fresh.kick_all();
        *self = fresh;
    }

    /// The configuration this vGIC was built from.
    pub fn config(&self) -> &VgicConfig {
        &self.cfg
    }

    /// Number of vCPUs (and redistributors).
    pub fn num_vcpus(&self) -> usize {
        self.vcpus.len()
    }

    /// Size of the redistributor region covering every vCPU.
    pub fn gicr_region_size(&self) -> u64 {
        self.vcpus.len() as u64 * crate::regs::gicr::STRIDE
    }

    /// One past the last implemented INTID.
    pub(crate) fn intid_limit(&self) -> u32 {
        intid::SPI_FIRST + self.cfg.num_spis
    }

    pub(crate) fn group_enables(&self) -> (bool, bool) {
        (
            self.ctlr & ctlr::ENABLE_GRP0 != 0,
            self.ctlr & ctlr::ENABLE_GRP1 != 0,
        )
    }

    /// The interrupt `intid` as seen by `vcpu` (private ones are per vCPU).
    pub(crate) fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid >= intid::LPI_FIRST {
            self.lpis.as_ref()?.get(intid)
        } else if intid < intid::PRIVATE_COUNT {
            self.vcpus.get(vcpu).map(|v| &v.private[intid as usize])
        } else {
            self.spis.get((intid - intid::SPI_FIRST) as usize)
        }
    }

    pub(crate) fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid >= intid::LPI_FIRST {
            self.lpis.as_mut()?.get_mut(intid)
        } else if intid < intid::PRIVATE_COUNT {
            self.vcpus
                .get_mut(vcpu)
                .map(|v| &mut v.private[intid as usize])
        } else {
            self.spis.get_mut((intid - intid::SPI_FIRST) as usize)
        }
    }

    /// The vCPU whose MPIDR has packed affinity `aff`.
    pub(crate) fn vcpu_by_affinity(&self, aff: u32) -> Option<usize> {
        self.vcpus.iter().position(|v| v.affinity == aff)
    }

    /// Where an SPI with router `r` is delivered.
    pub(crate) fn route_of(&self, r: Irouter) -> Route {
        if r.any_pe() {
            Route::Any
        } else {
            self.vcpu_by_affinity(r.affinity())
                .map_or(Route::Nowhere, Route::One)
        }
    }

    /// Notes that `intid` (as seen by `vcpu`) may have become deliverable.
    pub(crate) fn kick_for(&mut self, vcpu: usize, intid: u32) {
        if intid < intid::PRIVATE_COUNT {
            self.kicks |= 1 << vcpu;
            return;
        }
        let Some(irq) = self.irq(vcpu, intid) else {
            return;
        };
        // An SPI the distributor would not deliver (disabled, or its group off) needs
        // no vCPU's attention: enabling it kicks then (GICD_ISENABLER, GICD_CTLR).
        // A guest polling a device with its interrupt off is never interrupted.
        let (grp0, grp1) = self.group_enables();
        if !irq.enabled || !(if irq.group1 { grp1 } else { grp0 }) {
            return;
        }
        match self.route_of(irq.route) {
            Route::One(t) => self.kicks |= 1 << t,
            Route::Any => self.kicks |= u64::MAX >> (64 - self.vcpus.len()),
            Route::Nowhere => {}
        }
    }

    /// Kicks the vCPU whose list registers hold `irq`, if any, so it resyncs after a
    /// change the list register does not show yet (disable, clear, reprioritise…).
    pub(crate) fn kick_holder(&mut self, irq: &crate::irq::Irq) {
        if let Some(h) = irq.lr {
            self.kicks |= 1 << h.vcpu;
        }
    }

    /// Kicks every vCPU (a global enable changed).
    pub(crate) fn kick_all(&mut self) {
        self.kicks |= u64::MAX >> (64 - self.vcpus.len());
    }

    /// Takes the set of vCPUs (bit i = vCPU i) that may have gained a deliverable
    /// interrupt since the last call. `el2` wakes those in WFI and interrupts those
    /// running so their list registers get refilled.
    pub fn take_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.kicks)
    }

    /// Drives SPI `intid`'s input line (a device model's interrupt output).
    pub fn set_level(&mut self, intid: u32, level: bool) -> Result<(), InputError> {
        if !(intid::SPI_FIRST..self.intid_limit()).contains(&intid) {
            return Err(InputError::NotSpi(intid));
        }
        let irq = &mut self.spis[(intid - intid::SPI_FIRST) as usize];
        let was = irq.pending();
        if irq.set_line(level) {
            self.kick_for(0, intid);
        } else if was && !irq.pending() {
            let irq = *irq;
            self.kick_holder(&irq);
        }
        Ok(())
    }

    /// Drives PPI `intid` (16..=31) of `vcpu`, e.g. a timer output.
    pub fn set_ppi_level(
        &mut self,
        vcpu: usize,
        intid: u32,
        level: bool,
    ) -> Result<(), InputError> {
        if !(intid::PPI_FIRST..intid::PRIVATE_COUNT).contains(&intid) {
            return Err(InputError::NotPpi(intid));
        }
        let v = self
            .vcpus
            .get_mut(vcpu)
            .ok_or(InputError::NoSuchVcpu(vcpu))?;
        if v.private[intid as usize].set_line(level) {
            self.kicks |= 1 << vcpu;
        }
        Ok(())
    }

    /// The input line level of PPI `intid` (16..=31) of `vcpu`: as
    /// [`Self::set_ppi_level`] last drove it, except that a hardware-linked line is
    /// low again once the guest acknowledged the interrupt (see
    /// [`Self::set_hw_mapping`]). `el2` reads it to tell whether the guest has taken
    /// a hardware-linked interrupt whose physical one it still holds active.
    pub fn ppi_level(&self, vcpu: usize, intid: u32) -> Result<bool, InputError> {
        if !(intid::PPI_FIRST..intid::PRIVATE_COUNT).contains(&intid) {
            return Err(InputError::NotPpi(intid));
        }
        let v = self.vcpus.get(vcpu).ok_or(InputError::NoSuchVcpu(vcpu))?;
        Ok(v.private[intid as usize].line)
    }

    /// Links virtual `vintid` (of `vcpu` for a PPI/SGI; `vcpu` is ignored for an SPI)
    /// to physical `pintid`: list registers then carry HW = 1 and the guest's
    /// deactivation deactivates the physical interrupt. `el2` takes the physical
    /// interrupt, leaves it active, and calls [`Self::set_ppi_level`] /
    /// [`Self::set_level`] with `true`; the line is treated as sampled once the guest
    /// acknowledges (the physical interrupt fires again if still asserted).
    pub fn set_hw_mapping(
        &mut self,
        vcpu: usize,
        vintid: u32,
        pintid: u32,
    ) -> Result<(), InputError> {
        self.map_hw(vcpu, vintid, Some(pintid))
    }

    /// Removes a hardware link made by [`Self::set_hw_mapping`].
    pub fn clear_hw_mapping(&mut self, vcpu: usize, vintid: u32) -> Result<(), InputError> {
        self.map_hw(vcpu, vintid, None)
    }

    fn map_hw(&mut self, vcpu: usize, vintid: u32, pintid: Option<u32>) -> Result<(), InputError> {
        if vcpu >= self.vcpus.len() {
            return Err(InputError::NoSuchVcpu(vcpu));
        }
        if vintid >= self.intid_limit() {
            return Err(InputError::NoSuchIntid(vintid));
        }
        if let Some(irq) = self.irq_mut(vcpu, vintid) {
            irq.hw = pintid;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_validated() {
        let mut g = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        assert_eq!(g.set_level(31, true), Err(InputError::NotSpi(31)));
        assert_eq!(g.set_level(96, true), Err(InputError::NotSpi(96)));
        assert_eq!(g.set_level(95, true), Ok(()));
        assert_eq!(g.set_ppi_level(0, 15, true), Err(InputError::NotPpi(15)));
        assert_eq!(g.set_ppi_level(2, 27, true), Err(InputError::NoSuchVcpu(2)));
        assert_eq!(
            g.set_hw_mapping(0, 96, 96),
            Err(InputError::NoSuchIntid(96))
        );
        assert_eq!(g.set_hw_mapping(1, 27, 27), Ok(()));
        assert_eq!(g.irq(1, 27).unwrap().hw, Some(27));
        assert_eq!(g.irq(0, 27).unwrap().hw, None);
    }

    #[test]
    fn reset_clears_guest_state_but_keeps_hw_links() {
        let mut g = Vgic::new(VgicConfig::simple(2, 32)).unwrap();
        g.set_hw_mapping(1, 27, 27).unwrap();
        g.set_level(40, true).unwrap();
        g.irq_mut(0, 40).unwrap().enabled = true;
        g.vcpus[1].sleeping = false;
        g.ctlr = ctlr::ENABLE_GRP1;
        g.reset();
        assert_eq!(g.irq(1, 27).unwrap().hw, Some(27));
        let irq = g.irq(0, 40).unwrap();
        assert!(!irq.enabled && !irq.pending());
        assert!(g.vcpus[1].sleeping);
        assert_eq!(g.ctlr, 0);
        assert_eq!(g.take_kicks(), 0b11);
    }

    #[test]
    fn ppi_level_reads_the_line() {
        let mut g = Vgic::new(VgicConfig::simple(2, 32)).unwrap();
        assert_eq!(g.ppi_level(0, 15), Err(InputError::NotPpi(15)));
        assert_eq!(g.ppi_level(0, 32), Err(InputError::NotPpi(32)));
        assert_eq!(g.ppi_level(2, 27), Err(InputError::NoSuchVcpu(2)));
        assert_eq!(g.ppi_level(1, 27), Ok(false));
        g.set_ppi_level(1, 27, true).unwrap();
        assert_eq!(g.ppi_level(1, 27), Ok(true));
        assert_eq!(g.ppi_level(0, 27), Ok(false), "PPIs are per vCPU");
        g.irq_mut(1, 27).unwrap().set_pending();
        g.set_ppi_level(1, 27, false).unwrap();
        assert_eq!(g.ppi_level(1, 27), Ok(false), "the line, not the latch");
    }

    #[test]
    fn kicks_name_the_routed_vcpu() {
        let mut g = Vgic::new(VgicConfig::simple(3, 32)).unwrap();
        g.ctlr = ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1;
        g.irq_mut(0, 40).unwrap().enabled = true;
        g.set_level(40, true).unwrap();
        assert_eq!(g.take_kicks(), 0b001, "SPIs reset to vCPU 0");
        assert_eq!(g.take_kicks(), 0);
        g.set_ppi_level(2, 27, true).unwrap();
        assert_eq!(g.take_kicks(), 0b100);
        g.set_level(40, true).unwrap();
        assert_eq!(g.take_kicks(), 0, "no new pending state, no kick");
    }

    #[test]
    fn an_spi_the_distributor_would_not_deliver_kicks_nobody_until_enabled() {
        let mut g = Vgic::new(VgicConfig::simple(2, 32)).unwrap();
        g.ctlr = ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1;
        g.set_level(40, true).unwrap();
        assert_eq!(g.take_kicks(), 0, "disabled: no kick");
        g.set_level(40, false).unwrap();
        g.irq_mut(0, 40).unwrap().enabled = true;
        g.ctlr = 0;
        g.set_level(40, true).unwrap();
        assert_eq!(g.take_kicks(), 0, "its group off: no kick");
        g.set_level(40, false).unwrap();
        // Still pending while disabled, then enabled through GICD_ISENABLER1: the
        // enable kicks.
        g.ctlr = ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1;
        g.irq_mut(0, 40).unwrap().enabled = false;
        g.set_level(40, true).unwrap();
        assert_eq!(g.take_kicks(), 0);
        g.write_bits(0, 32, crate::banks::BitReg::SetEnable, 1 << 8);
        assert_eq!(
            g.take_kicks(),
            0b01,
            "enabling a pending SPI kicks its target"
        );
    }
}
