//! The per-interrupt register banks the distributor and the redistributor SGI frame
//! share: one bit per interrupt (IGROUPR, IS/ICENABLER, IS/ICPENDR, IS/ICACTIVER),
//! one byte per interrupt (IPRIORITYR) and two bits per interrupt (ICFGR). Callers
//! pass the first INTID a register covers; INTIDs that are not implemented read as
//! zero and ignore writes.

use crate::regs::{icfgr, intid};
use crate::vgic::Vgic;

/// Which one-bit-per-interrupt register an access names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    /// The register in the bank at `offset - bank_base`, for banks laid out at
    /// `base + 0x80 * k` in IGROUPR … ICACTIVER order.
    pub fn from_bank(k: u64) -> Option<Self> {
        Some(match k {
            0 => BitReg::Group,
            1 => BitReg::SetEnable,
            2 => BitReg::ClearEnable,
            3 => BitReg::SetPending,
            4 => BitReg::ClearPending,
            5 => BitReg::SetActive,
            6 => BitReg::ClearActive,
            _ => return None,
        })
    }
}

impl Vgic {
    fn implemented(&self, intid: u32) -> bool {
        intid < self.intid_limit()
    }

    /// Reads the 32 bits of `reg` starting at `first` (a multiple of 32).
    pub(crate) fn read_bits(&self, vcpu: usize, first: u32, reg: BitReg) -> u32 {
        let mut v = 0;
        for i in 0..32 {
            let id = first + i;
            let Some(irq) = self.implemented(id).then(|| self.irq(vcpu, id)).flatten() else {
                continue;
            };
            let bit = match reg {
                BitReg::Group => irq.group1,
                BitReg::SetEnable | BitReg::ClearEnable => irq.enabled,
                BitReg::SetPending | BitReg::ClearPending => irq.visible_pending(),
                BitReg::SetActive | BitReg::ClearActive => irq.active,
            };
            v |= (bit as u32) << i;
        }
        v
    }

    /// Writes `value` to the 32 bits of `reg` starting at `first`.
    pub(crate) fn write_bits(&mut self, vcpu: usize, first: u32, reg: BitReg, value: u32) {
        for i in 0..32 {
            let id = first + i;
            let bit = value & (1 << i) != 0;
            if !self.implemented(id) || (!bit && reg != BitReg::Group) {
                continue;
            }
            let Some(irq) = self.irq_mut(vcpu, id) else {
                continue;
            };
            let kick = match reg {
                BitReg::Group => {
                    let changed = irq.group1 != bit;
                    irq.group1 = bit;
                    changed && irq.pending()
                }
                BitReg::SetEnable => !core::mem::replace(&mut irq.enabled, true) && irq.pending(),
                BitReg::ClearEnable => {
                    irq.enabled = false;
                    false
                }
                BitReg::SetPending => irq.set_pending(),
                BitReg::ClearPending => {
                    irq.clear_pending();
                    false
                }
                BitReg::SetActive => {
                    irq.active = true;
                    false
                }
                BitReg::ClearActive => {
                    let was = irq.active;
                    irq.deactivate();
                    was && irq.pending()
                }
            };
            let irq = *irq;
            if kick {
                self.kick_for(vcpu, id);
            }
            self.kick_holder(&irq);
        }
    }

    /// Reads `n` priority bytes starting at INTID `first`, byte k in bits [8k+7:8k].
    pub(crate) fn read_priorities(&self, vcpu: usize, first: u32, n: u32) -> u64 {
        (0..n)
            .filter(|k| self.implemented(first + k))
            .filter_map(|k| self.irq(vcpu, first + k).map(|irq| (k, irq.priority)))
            .fold(0, |v, (k, p)| v | (p as u64) << (8 * k))
    }

    /// Writes `n` priority bytes starting at INTID `first`.
    pub(crate) fn write_priorities(&mut self, vcpu: usize, first: u32, n: u32, value: u64) {
        let mask = self.cfg.priority_mask();
        for k in 0..n {
            if !self.implemented(first + k) {
                continue;
            }
            if let Some(irq) = self.irq_mut(vcpu, first + k) {
                irq.priority = (value >> (8 * k)) as u8 & mask;
                let irq = *irq;
                self.kick_holder(&irq);
            }
        }
    }

    /// Reads the ICFGR register covering the 16 INTIDs from `first`.
    pub(crate) fn read_config(&self, vcpu: usize, first: u32) -> u32 {
        let mut v = 0;
        for k in 0..icfgr::PER_REG {
            let id = first + k;
            if let Some(irq) = self.implemented(id).then(|| self.irq(vcpu, id)).flatten() {
                if irq.edge {
                    v |= icfgr::EDGE << (2 * k);
                }
            }
        }
        v
    }

    /// Writes the ICFGR register covering the 16 INTIDs from `first`. SGI fields are
    /// read-only (always edge).
    pub(crate) fn write_config(&mut self, vcpu: usize, first: u32, value: u32) {
        for k in 0..icfgr::PER_REG {
            let id = first + k;
            if id < intid::SGI_COUNT || !self.implemented(id) {
                continue;
            }
            if let Some(irq) = self.irq_mut(vcpu, id) {
                irq.edge = (value >> (2 * k)) & icfgr::EDGE != 0;
            }
        }
    }
}
