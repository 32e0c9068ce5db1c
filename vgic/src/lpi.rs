//! LPIs in the redistributors (GICv3 §5.1), present only when the VM has an ITS
//! ([`Vgic::enable_lpi_support`]): GICD_TYPER.LPIS and IDbits = 14 (LPIs
//! 8192..=16383), GICR_TYPER.PLPIS, GICR_CTLR.EnableLPIs (clearable: CES = 1),
//! GICR_PROPBASER and GICR_PENDBASER.
//!
//! Where the state lives:
//! - **Configuration** (priority and enable, one byte per LPI) is the guest's table at
//!   GICR_PROPBASER, in guest memory. The vGIC caches an LPI's byte and reads it again
//!   only when the ITS asks ([`Vgic::refresh_lpi`]: on MAPTI/MAPI, INV and INVALL), as
//!   the architecture allows (software must issue INV/INVALL after changing it). A byte
//!   outside guest RAM, or an LPI above PROPBASER.IDbits, reads as disabled.
//! - **Pending and active state** is kept here, in hypervisor memory: a fixed array of
//!   [`intid::LPI_COUNT`] interrupt records (allocated once, when LPI support is
//!   turned on; about 0.5 MiB) plus the set of LPIs that are pending, active or in a
//!   list register, which is all `flush` looks at. The pending table at
//!   GICR_PENDBASER is not read or written: the guest's table is assumed zero when
//!   EnableLPIs is set (as PENDBASER.PTZ says, and as Linux and Windows allocate it).
//! - An LPI is pending for one redistributor: the one its collection names when the
//!   ITS made it pending (stored as its route). LPIs are edge-triggered Group 1
//!   interrupts without hardware links; they go through the list registers like any
//!   other interrupt.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use vdev::GuestMemory;

use crate::irq::Irq;
use crate::regs::{gicr_ctlr, intid, lpi_tables, Irouter};
use crate::vgic::Vgic;

/// Every LPI's state.
#[derive(Debug, Clone)]
pub(crate) struct Lpis {
    /// LPI `LPI_FIRST + i` is `irqs[i]`.
    pub irqs: Vec<Irq>,
    /// LPIs that are pending, active or held in a list register.
    pub live: BTreeSet<u32>,
}

impl Lpis {
    /// An LPI at reset: edge-triggered, Group 1, disabled, priority 0.
    pub fn reset_irq() -> Irq {
        Irq {
            edge: true,
            group1: true,
            ..Irq::default()
        }
    }

    pub fn new() -> Self {
        Self {
            irqs: alloc::vec![Self::reset_irq(); intid::LPI_COUNT as usize],
            live: BTreeSet::new(),
        }
    }

    pub fn get(&self, id: u32) -> Option<&Irq> {
        self.irqs.get(id.checked_sub(intid::LPI_FIRST)? as usize)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Irq> {
        self.irqs
            .get_mut(id.checked_sub(intid::LPI_FIRST)? as usize)
    }

    /// Forgets LPIs that are neither pending, active nor in a list register.
    pub fn prune(&mut self) {
        let irqs = &self.irqs;
        self.live.retain(|&id| {
            let irq = &irqs[(id - intid::LPI_FIRST) as usize];
            irq.pending() || irq.active || irq.lr.is_some()
        });
    }
}

/// One redistributor's LPI registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RdLpi {
    /// GICR_CTLR.EnableLPIs.
    pub enabled: bool,
    /// GICR_PROPBASER as written (implemented fields).
    pub propbaser: u64,
    /// GICR_PENDBASER as written (implemented fields, PTZ dropped).
    pub pendbaser: u64,
}

/// Why an LPI request of the ITS was not carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpiError {
    /// The vGIC has no LPIs (no ITS).
    NoLpis,
    /// Not an implemented LPI.
    NotLpi(u32),
    /// No vCPU with this index.
    NoSuchVcpu(usize),
    /// The target redistributor has GICR_CTLR.EnableLPIs clear: the LPI is dropped.
    Disabled(usize),
}

/// True if `id` is an LPI a vGIC with LPIs implements.
pub fn is_lpi(id: u32) -> bool {
    (intid::LPI_FIRST..intid::LPI_FIRST + intid::LPI_COUNT).contains(&id)
}

impl Vgic {
    /// Turns LPI support on (a VM with an ITS), before the VM runs: GICD_TYPER.LPIS,
    /// GICR_TYPER.PLPIS and the LPI registers appear. Kept across [`Self::reset`].
    pub fn enable_lpi_support(&mut self) {
        if self.lpis.is_none() {
            self.lpis = Some(Lpis::new());
        }
    }

    /// Whether the vGIC has LPIs.
    pub fn has_lpis(&self) -> bool {
        self.lpis.is_some()
    }

    /// GICR_CTLR.EnableLPIs of `vcpu`'s redistributor.
    pub fn lpis_enabled(&self, vcpu: usize) -> bool {
        self.vcpus.get(vcpu).is_some_and(|v| v.lpi.enabled)
    }

    fn check_lpi(&self, id: u32, vcpu: usize) -> Result<(), LpiError> {
        if self.lpis.is_none() {
            return Err(LpiError::NoLpis);
        }
        if !is_lpi(id) {
            return Err(LpiError::NotLpi(id));
        }
        if vcpu >= self.vcpus.len() {
            return Err(LpiError::NoSuchVcpu(vcpu));
        }
        Ok(())
    }

    /// Makes LPI `id` pending on `vcpu`'s redistributor (an ITS translation or INT).
    pub fn set_lpi_pending(&mut self, id: u32, vcpu: usize) -> Result<(), LpiError> {
        self.check_lpi(id, vcpu)?;
        if !self.vcpus[vcpu].lpi.enabled {
            return Err(LpiError::Disabled(vcpu));
        }
        let route = Irouter::for_mpidr(self.cfg.mpidrs[vcpu]);
        let lpis = self.lpis.as_mut().ok_or(LpiError::NoLpis)?;
        let irq = lpis.get_mut(id).ok_or(LpiError::NotLpi(id))?;
        // Pending elsewhere already: it stays one pending interrupt, moved here.
        irq.route = route;
        let newly = irq.set_pending();
        lpis.live.insert(id);
        if newly {
            self.kick_for(vcpu, id);
        }
        Ok(())
    }

    /// Clears LPI `id`'s pending state (ITS CLEAR, DISCARD).
    pub fn clear_lpi_pending(&mut self, id: u32) -> Result<(), LpiError> {
        self.check_lpi(id, 0)?;
        let Some(irq) = self.lpis.as_mut().and_then(|l| l.get_mut(id)) else {
            return Err(LpiError::NotLpi(id));
        };
        irq.clear_pending();
        let irq = *irq;
        self.kick_holder(&irq);
        Ok(())
    }

    /// Moves LPI `id` (its pending state, and where it is delivered next) to `vcpu`
    /// (ITS MOVI). An LPI held in another vCPU's list register stays there until
    /// that vCPU's next exit.
    pub fn move_lpi(&mut self, id: u32, vcpu: usize) -> Result<(), LpiError> {
        self.check_lpi(id, vcpu)?;
        let route = Irouter::for_mpidr(self.cfg.mpidrs[vcpu]);
        let Some(irq) = self.lpis.as_mut().and_then(|l| l.get_mut(id)) else {
            return Err(LpiError::NotLpi(id));
        };
        if irq.route == route {
            return Ok(());
        }
        irq.route = route;
        let pending = irq.pending();
        let irq = *irq;
        self.kick_holder(&irq);
        if pending {
            self.kick_for(vcpu, id);
        }
        Ok(())
    }

    /// Moves every LPI pending on `from` to `to` (ITS MOVALL).
    pub fn move_all_lpis(&mut self, from: usize, to: usize) -> Result<(), LpiError> {
        self.check_lpi(intid::LPI_FIRST, from)?;
        self.check_lpi(intid::LPI_FIRST, to)?;
        let from_route = Irouter::for_mpidr(self.cfg.mpidrs[from]);
        let ids: Vec<u32> = match self.lpis.as_ref() {
            Some(l) => l
                .live
                .iter()
                .copied()
                .filter(|&id| l.get(id).is_some_and(|i| i.route == from_route))
                .collect(),
            None => return Err(LpiError::NoLpis),
        };
        for id in ids {
            self.move_lpi(id, to)?;
        }
        Ok(())
    }

    /// Reads LPI `id`'s configuration byte again from `vcpu`'s GICR_PROPBASER table
    /// in guest memory (ITS MAPTI/MAPI, INV, INVALL).
    pub fn refresh_lpi(
        &mut self,
        id: u32,
        vcpu: usize,
        mem: &dyn GuestMemory,
    ) -> Result<(), LpiError> {
        self.check_lpi(id, vcpu)?;
        let prop = self.vcpus[vcpu].lpi.propbaser;
        let id_bits = (prop & lpi_tables::PROP_ID_BITS_MASK) as u32 + 1;
        let mut byte = [0u8; 1];
        if id_bits < 32 && id >= 1 << id_bits {
            log::debug!("vgic: LPI {id} above GICR{vcpu}_PROPBASER.IDbits: disabled");
        } else {
            let gpa = (prop & lpi_tables::PROP_PA_MASK) + u64::from(id - intid::LPI_FIRST);
            if mem.read(gpa, &mut byte).is_err() {
                log::warn!(
                    "vgic: LPI {id} configuration at {gpa:#x} (GICR{vcpu}_PROPBASER) is not guest RAM: disabled"
                );
                byte[0] = 0;
            }
        }
        let mask = self.cfg.priority_mask();
        let Some(irq) = self.lpis.as_mut().and_then(|l| l.get_mut(id)) else {
            return Err(LpiError::NotLpi(id));
        };
        let enabled = byte[0] & lpi_tables::CFG_ENABLE != 0;
        let priority = byte[0] & lpi_tables::CFG_PRIORITY_MASK & mask;
        if (irq.enabled, irq.priority) == (enabled, priority) {
            return Ok(());
        }
        let newly_enabled = enabled && !irq.enabled;
        irq.enabled = enabled;
        irq.priority = priority;
        let irq = *irq;
        self.kick_holder(&irq);
        if newly_enabled && irq.pending() {
            if let crate::vgic::Route::One(t) = self.route_of(irq.route) {
                self.kick_for(t, id);
            }
        }
        Ok(())
    }

    /// GICR_CTLR write with LPIs: EnableLPIs set or cleared. Clearing it drops the
    /// pending LPIs of that redistributor.
    pub(crate) fn write_enable_lpis(&mut self, vcpu: usize, on: bool) {
        let was = self.vcpus[vcpu].lpi.enabled;
        self.vcpus[vcpu].lpi.enabled = on;
        if was && !on {
            let route = Irouter::for_mpidr(self.cfg.mpidrs[vcpu]);
            let ids: Vec<u32> = self.lpis.as_ref().map_or(Vec::new(), |l| {
                l.live
                    .iter()
                    .copied()
                    .filter(|&id| l.get(id).is_some_and(|i| i.route == route))
                    .collect()
            });
            for id in ids {
                let _ = self.clear_lpi_pending(id);
            }
        }
    }

    /// GICR_CTLR as read.
    pub(crate) fn gicr_ctlr(&self, vcpu: usize) -> u32 {
        if self.lpis.is_none() {
            return 0;
        }
        let mut v = gicr_ctlr::CES;
        if self.vcpus[vcpu].lpi.enabled {
            v |= gicr_ctlr::ENABLE_LPIS;
        }
        v
    }
}

#[cfg(test)]
mod tests;
