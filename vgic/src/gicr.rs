//! The redistributor (GICR) register model: one region covering every vCPU's pair of
//! 64 KiB frames (RD_base, then SGI_base) at a 0x20000 stride; the frame index picks
//! the vCPU. No LPIs: GICR_CTLR.EnableLPIs, PROPBASER and PENDBASER are not
//! implemented. Frames past the last vCPU and reserved offsets are RAZ/WI with a log.

use vdev::{AccessSize, MmioError};

use crate::access::{check, read_part, Widths};
use crate::banks::BitReg;
use crate::regs::{gicd, gicr, gicr_typer, icfgr, id, iidr, waker};
use crate::vgic::Vgic;

/// A decoded offset within one redistributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ctlr,
    Iidr,
    /// GICR_TYPER accessed at byte `within`.
    Typer(u64),
    Waker,
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
        Reg::Typer(_) => Widths::WordOrDouble,
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
            Reg::Ctlr | Reg::RazWi => 0,
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
            Reg::Reserved => {
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
                if value != 0 {
                    log::warn!("vgic: GICR{vcpu}_CTLR <- {value:#x}: no LPIs, ignored");
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
            Reg::Reserved => {
                log::warn!("vgic: GICR{vcpu} write to reserved offset {within:#x} (WI)");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
