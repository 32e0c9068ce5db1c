//! The redistributor (GICR) register model: one region covering every vCPU's pair of
//! 64 KiB frames (RD_base, then SGI_base) at a 0x20000 stride; the frame index picks
//! the vCPU. GICR_CTLR.EnableLPIs, PROPBASER and PENDBASER exist only with LPIs
//! (a VM with an ITS, `lpi`); without, CTLR is RAZ/WI and the two tables are
//! reserved. Frames past the last vCPU and reserved offsets are RAZ/WI with a log.

use vdev::{AccessSize, MmioError};

use crate::access::{check, read_part, write_part, Widths};
use crate::banks::BitReg;
use crate::regs::{gicd, gicr, gicr_ctlr, gicr_typer, icfgr, id, iidr, lpi_tables, waker};
use crate::vgic::Vgic;

/// A decoded offset within one redistributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ctlr,
    Iidr,
    /// GICR_TYPER accessed at byte `within`.
    Typer(u64),
    Waker,
    /// GICR_PROPBASER accessed at byte `within`.
    PropBaser(u64),
    /// GICR_PENDBASER accessed at byte `within`.
    PendBaser(u64),
    Pidr2,
    Cidr(u32),
    Bits(BitReg),
    /// IPRIORITYR byte for INTID `first`.
    Priority(u32),
    /// ICFGR0 (first = 0) or ICFGR1 (first = 16).
    Config(u32),
    RazWi,
    Reserved,
}

/// Decodes an RD_base offset; an access inside a word-sized register decodes as it.
fn decode_rd(off: u64) -> Reg {
    match off & !3 {
        gicr::CTLR => Reg::Ctlr,
        gicr::IIDR => Reg::Iidr,
        o if (gicr::TYPER..gicr::TYPER + 8).contains(&o) => Reg::Typer(off - gicr::TYPER),
        gicr::WAKER => Reg::Waker,
        o if (gicr::PROPBASER..gicr::PROPBASER + 8).contains(&o) => {
            Reg::PropBaser(off - gicr::PROPBASER)
        }
        o if (gicr::PENDBASER..gicr::PENDBASER + 8).contains(&o) => {
            Reg::PendBaser(off - gicr::PENDBASER)
        }
        id::PIDR2 => Reg::Pidr2,
        _ => match id::CIDR.iter().find(|(o, _)| *o == off & !3) {
            Some((_, v)) => Reg::Cidr(*v),
            None => Reg::Reserved,
        },
    }
}

/// Decodes an SGI_base offset, like [`decode_rd`].
fn decode_sgi(off: u64) -> Reg {
    match off & !3 {
        o if (gicr::IGROUPR0..gicr::IGROUPR0 + 7 * gicd::BITS_BANK_SIZE).contains(&o)
            && (o - gicr::IGROUPR0).is_multiple_of(gicd::BITS_BANK_SIZE) =>
        {
            BitReg::from_bank((o - gicr::IGROUPR0) / gicd::BITS_BANK_SIZE)
                .map_or(Reg::Reserved, Reg::Bits)
        }
        o if (gicr::IPRIORITYR0..gicr::IPRIORITYR_END).contains(&o) => {
            Reg::Priority((off - gicr::IPRIORITYR0) as u32)
        }
        gicr::ICFGR0 => Reg::Config(0),
        gicr::ICFGR1 => Reg::Config(icfgr::PER_REG),
        gicr::IGRPMODR0 | gicr::NSACR => Reg::RazWi,
        _ => Reg::Reserved,
    }
}

fn widths(reg: Reg) -> Widths {
    match reg {
        Reg::Typer(_) | Reg::PropBaser(_) | Reg::PendBaser(_) => Widths::WordOrDouble,
        Reg::Priority(_) => Widths::ByteOrWord,
        Reg::Reserved => Widths::Any,
        _ => Widths::Word,
    }
}

impl Vgic {
    /// GICR_TYPER of `vcpu`'s redistributor.
    fn gicr_typer(&self, vcpu: usize) -> u64 {
        let mut v = (self.vcpus[vcpu].affinity as u64) << gicr_typer::AFFINITY_SHIFT
            | (vcpu as u64) << gicr_typer::PROCESSOR_NUMBER_SHIFT;
        if vcpu + 1 == self.vcpus.len() {
            v |= gicr_typer::LAST;
        }
        if self.lpis.is_some() {
            v |= gicr_typer::PLPIS;
        }
        v
    }

    /// Splits a region offset into vCPU, decoded register, frame offset.
    fn gicr_decode(&self, offset: u64) -> (Option<usize>, Reg, u64) {
        let vcpu = (offset / gicr::STRIDE) as usize;
        let within = offset % gicr::STRIDE;
        let reg = if within < gicr::SGI_BASE {
            decode_rd(within)
        } else {
            decode_sgi(within - gicr::SGI_BASE)
        };
        (Some(vcpu).filter(|v| *v < self.vcpus.len()), reg, within)
    }

    /// Handles a guest read of the redistributor region at `offset`.
    pub fn gicr_read(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let (vcpu, reg, within) = self.gicr_decode(offset);
        let Some(vcpu) = vcpu else {
            check(offset, size, Widths::Any)?;
            log::warn!("vgic: GICR read at {offset:#x} past the last redistributor (RAZ)");
            return Ok(0);
        };
        check(offset, size, widths(reg))?;
        let v = match reg {
            Reg::Ctlr => u64::from(self.gicr_ctlr(vcpu)),
            Reg::RazWi => 0,
            Reg::PropBaser(at) if self.lpis.is_some() => {
                read_part(self.vcpus[vcpu].lpi.propbaser, at, size)
            }
            Reg::PendBaser(at) if self.lpis.is_some() => {
                read_part(self.vcpus[vcpu].lpi.pendbaser, at, size)
            }
            Reg::Iidr => iidr::VALUE as u64,
            Reg::Typer(at) => read_part(self.gicr_typer(vcpu), at, size),
            Reg::Waker => {
                if self.vcpus[vcpu].sleeping {
                    (waker::PROCESSOR_SLEEP | waker::CHILDREN_ASLEEP) as u64
                } else {
                    0
                }
            }
            Reg::Pidr2 => id::PIDR2_GICV3 as u64,
            Reg::Cidr(v) => v as u64,
            Reg::Bits(r) => self.read_bits(vcpu, 0, r) as u64,
            Reg::Priority(first) => self.read_priorities(vcpu, first, size.bytes() as u32),
            Reg::Config(first) => self.read_config(vcpu, first) as u64,
            Reg::Reserved | Reg::PropBaser(_) | Reg::PendBaser(_) => {
                log::warn!("vgic: GICR{vcpu} read of reserved offset {within:#x} (RAZ)");
                0
            }
        };
        Ok(v)
    }

    /// Handles a guest write of the redistributor region at `offset`.
    pub fn gicr_write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let (vcpu, reg, within) = self.gicr_decode(offset);
        let Some(vcpu) = vcpu else {
            check(offset, size, Widths::Any)?;
            log::warn!("vgic: GICR write at {offset:#x} past the last redistributor (WI)");
            return Ok(());
        };
        check(offset, size, widths(reg))?;
        let value = value & size.mask();
        match reg {
            Reg::Ctlr => {
                if self.lpis.is_some() {
                    let on = value as u32 & gicr_ctlr::ENABLE_LPIS != 0;
                    self.write_enable_lpis(vcpu, on);
                } else if value != 0 {
                    log::warn!("vgic: GICR{vcpu}_CTLR <- {value:#x}: no LPIs, ignored");
                }
            }
            Reg::PropBaser(at) | Reg::PendBaser(at) if self.lpis.is_some() => {
                let prop = matches!(reg, Reg::PropBaser(_));
                let lpi = &mut self.vcpus[vcpu].lpi;
                if lpi.enabled {
                    log::warn!(
                        "vgic: GICR{vcpu} LPI table register written with EnableLPIs set; ignored"
                    );
                } else if prop {
                    let v = write_part(lpi.propbaser, at, size, value);
                    lpi.propbaser = v
                        & (lpi_tables::PROP_ID_BITS_MASK
                            | lpi_tables::PROP_PA_MASK
                            | lpi_tables::ATTR_MASK);
                } else {
                    let v = write_part(lpi.pendbaser, at, size, value);
                    lpi.pendbaser = v & (lpi_tables::PEND_PA_MASK | lpi_tables::ATTR_MASK);
                }
            }
            Reg::Waker => {
                self.vcpus[vcpu].sleeping = value as u32 & waker::PROCESSOR_SLEEP != 0;
            }
            Reg::Bits(r) => self.write_bits(vcpu, 0, r, value as u32),
            Reg::Priority(first) => self.write_priorities(vcpu, first, size.bytes() as u32, value),
            Reg::Config(first) => self.write_config(vcpu, first, value as u32),
            Reg::Iidr | Reg::Typer(_) | Reg::Pidr2 | Reg::Cidr(_) => {
                log::debug!("vgic: GICR{vcpu} write to read-only {within:#x} ignored");
            }
            Reg::RazWi => {}
            Reg::Reserved | Reg::PropBaser(_) | Reg::PendBaser(_) => {
                log::warn!("vgic: GICR{vcpu} write to reserved offset {within:#x} (WI)");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
