//! The distributor (GICD) register model: decode of an offset into a register, and
//! its read/write semantics with affinity routing always on (ARE RAO/WI) and one
//! Security state (DS RAO/WI). SGI/PPI fields of the banked registers are RAZ/WI
//! here (they live in the redistributors), reserved offsets are RAZ/WI with a log
//! line, legacy GICv2 registers are RAZ/WI.

use vdev::{AccessSize, MmioError};

use crate::access::{check, read_part, write_part, Widths};
use crate::banks::BitReg;
use crate::regs::{ctlr, gicd, id, iidr, intid, mpidr, typer, Irouter};
use crate::vgic::{Route, Vgic};

/// A decoded distributor offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Ctlr,
    Typer,
    Iidr,
    Typer2,
    /// A one-bit-per-interrupt register covering 32 INTIDs from `first`.
    Bits(BitReg, u32),
    /// IPRIORITYR byte for INTID `first`.
    Priority(u32),
    /// ICFGR covering 16 INTIDs from `first`.
    Config(u32),
    /// IROUTER of INTID `n`, accessed at byte `within` of it.
    Router(u32, u64),
    Pidr2,
    Cidr(u32),
    /// Architecturally RAZ/WI here (legacy or Security-only registers); the widths
    /// the register would accept.
    RazWi(Widths),
    /// Reserved: RES0, so RAZ/WI with a log line.
    Reserved,
}

/// Decodes `off`; an access inside a word-sized register decodes as that register
/// (and is then refused for its width).
fn decode(off: u64) -> Reg {
    let in_bank = |base: u64, size: u64| (base..base + size).contains(&off);
    match off & !3 {
        gicd::CTLR => Reg::Ctlr,
        gicd::TYPER => Reg::Typer,
        gicd::IIDR => Reg::Iidr,
        gicd::TYPER2 => Reg::Typer2,
        id::PIDR2 => Reg::Pidr2,
        _ if in_bank(gicd::IGROUPR, 7 * gicd::BITS_BANK_SIZE) => {
            let rel = off - gicd::IGROUPR;
            let reg = BitReg::from_bank(rel / gicd::BITS_BANK_SIZE);
            let first = ((rel % gicd::BITS_BANK_SIZE) / 4 * 32) as u32;
            reg.map_or(Reg::Reserved, |r| Reg::Bits(r, first))
        }
        _ if in_bank(gicd::IPRIORITYR, gicd::BYTE_BANK_SIZE) => {
            Reg::Priority((off - gicd::IPRIORITYR) as u32)
        }
        _ if in_bank(gicd::ITARGETSR, gicd::BYTE_BANK_SIZE) => Reg::RazWi(Widths::ByteOrWord),
        _ if in_bank(gicd::ICFGR, gicd::CFG_BANK_SIZE) => {
            Reg::Config(((off - gicd::ICFGR) / 4) as u32 * crate::regs::icfgr::PER_REG)
        }
        _ if in_bank(gicd::IGRPMODR, gicd::BITS_BANK_SIZE) => Reg::RazWi(Widths::Word),
        _ if in_bank(gicd::NSACR, gicd::CFG_BANK_SIZE) => Reg::RazWi(Widths::Word),
        gicd::SGIR => Reg::RazWi(Widths::Word),
        _ if in_bank(gicd::CPENDSGIR, gicd::SGI_BANK_SIZE)
            || in_bank(gicd::SPENDSGIR, gicd::SGI_BANK_SIZE) =>
        {
            Reg::RazWi(Widths::ByteOrWord)
        }
        _ if (gicd::IROUTER..gicd::IROUTER_END).contains(&off) => {
            let rel = off - gicd::IROUTER;
            Reg::Router((rel / 8) as u32, rel % 8)
        }
        _ => match id::CIDR.iter().find(|(o, _)| *o == off & !3) {
            Some((_, v)) => Reg::Cidr(*v),
            None => Reg::Reserved,
        },
    }
}

fn widths(reg: Reg) -> Widths {
    match reg {
        Reg::Priority(_) => Widths::ByteOrWord,
        Reg::Router(..) => Widths::WordOrDouble,
        Reg::RazWi(w) => w,
        Reg::Reserved => Widths::Any,
        _ => Widths::Word,
    }
}

impl Vgic {
    fn gicd_typer(&self) -> u32 {
        let cpus = (self.vcpus.len() as u32).min(typer::CPU_NUMBER_MAX) - 1;
        let id_bits = if self.lpis.is_some() {
            intid::LPI_ID_BITS
        } else {
            typer::ID_BITS_NO_LPI
        };
        let mut v = self.cfg.it_lines_number() << typer::IT_LINES_SHIFT
            | cpus << typer::CPU_NUMBER_SHIFT
            | (id_bits - 1) << typer::ID_BITS_SHIFT;
        if self.lpis.is_some() {
            v |= typer::LPIS;
        }
        if self
            .vcpus
            .iter()
            .any(|c| mpidr::packed_aff3(c.affinity) != 0)
        {
            v |= typer::A3V;
        }
        if self
            .vcpus
            .iter()
            .any(|c| mpidr::packed_aff0(c.affinity) > typer::AFF0_MAX_WITHOUT_RSS)
        {
            v |= typer::RSS;
        }
        v
    }

    /// True if `n` is an implemented SPI.
    fn is_spi(&self, n: u32) -> bool {
        (intid::SPI_FIRST..self.intid_limit()).contains(&n)
    }

    /// Handles a guest read of the distributor frame at `offset`.
    pub fn gicd_read(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let reg = decode(offset);
        check(offset, size, widths(reg))?;
        let v = match reg {
            Reg::Ctlr => (self.ctlr | ctlr::ARE | ctlr::DS) as u64,
            Reg::Typer => self.gicd_typer() as u64,
            Reg::Iidr => iidr::VALUE as u64,
            Reg::Typer2 => 0,
            Reg::Pidr2 => id::PIDR2_GICV3 as u64,
            Reg::Cidr(v) => v as u64,
            // With ARE = 1 the SGI/PPI fields of GICD registers are RAZ/WI.
            Reg::Bits(_, first) if first < intid::PRIVATE_COUNT => 0,
            Reg::Bits(r, first) => self.read_bits(0, first, r) as u64,
            Reg::Priority(first) if first < intid::PRIVATE_COUNT => 0,
            Reg::Priority(first) => self.read_priorities(0, first, size.bytes() as u32),
            Reg::Config(first) if first < intid::PRIVATE_COUNT => 0,
            Reg::Config(first) => self.read_config(0, first) as u64,
            Reg::Router(n, within) if self.is_spi(n) => read_part(
                self.spis[(n - intid::SPI_FIRST) as usize].route.0,
                within,
                size,
            ),
            Reg::Router(..) | Reg::RazWi(_) => 0,
            Reg::Reserved => {
                log::warn!("vgic: GICD read of reserved offset {offset:#x} (RAZ)");
                0
            }
        };
        Ok(v)
    }

    /// Handles a guest write of the distributor frame at `offset`.
    pub fn gicd_write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let reg = decode(offset);
        check(offset, size, widths(reg))?;
        let value = value & size.mask();
        match reg {
            Reg::Ctlr => {
                let old = self.ctlr;
                self.ctlr = value as u32 & ctlr::WRITABLE;
                if self.ctlr & !old != 0 {
                    self.kick_all();
                }
            }
            Reg::Bits(_, first) | Reg::Config(first) | Reg::Priority(first)
                if first < intid::PRIVATE_COUNT => {}
            Reg::Bits(r, first) => self.write_bits(0, first, r, value as u32),
            Reg::Priority(first) => self.write_priorities(0, first, size.bytes() as u32, value),
            Reg::Config(first) => self.write_config(0, first, value as u32),
            Reg::Router(n, within) if self.is_spi(n) => self.write_router(n, within, size, value),
            Reg::Router(n, _) => log::debug!("vgic: GICD_IROUTER{n} is not an SPI (WI)"),
            Reg::Typer | Reg::Iidr | Reg::Typer2 | Reg::Pidr2 | Reg::Cidr(_) => {
                log::debug!("vgic: GICD write to read-only {offset:#x} ignored");
            }
            Reg::RazWi(_) => {}
            Reg::Reserved => log::warn!("vgic: GICD write to reserved offset {offset:#x} (WI)"),
        }
        Ok(())
    }

    fn write_router(&mut self, n: u32, within: u64, size: AccessSize, value: u64) {
        let idx = (n - intid::SPI_FIRST) as usize;
        let r = Irouter::from_guest(write_part(self.spis[idx].route.0, within, size, value));
        self.spis[idx].route = r;
        if self.route_of(r) == Route::Nowhere {
            log::warn!(
                "vgic: SPI {n} routed to affinity {:#010x}, which names no vCPU: it will not be delivered",
                r.affinity()
            );
        }
        if self.spis[idx].pending() {
            self.kick_for(0, n);
        }
    }
}

#[cfg(test)]
mod tests;
