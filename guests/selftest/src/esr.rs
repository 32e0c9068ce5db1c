//! Decoding what the EL1 exception vectors see: which vector was taken
//! ([`Vector`]), the ESR_EL1 syndrome ([`Esr`]) and where execution resumes after
//! an exception the guest handles ([`resume_at`]).

use core::ops::Range;

use crate::defs::esr as f;

/// An ESR_EL1 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Esr(pub u64);

impl Esr {
    /// ESR.EC, the exception class.
    pub fn ec(self) -> u8 {
        ((self.0 >> f::EC_SHIFT) & f::EC_MASK) as u8
    }

    /// ESR.ISS.
    pub fn iss(self) -> u64 {
        self.0 & f::ISS_MASK
    }

    /// The DFSC/IFSC field of an abort.
    pub fn fsc(self) -> u8 {
        (self.0 & f::FSC_MASK) as u8
    }

    /// ISS.WnR of a data abort.
    pub fn is_write(self) -> bool {
        self.0 & f::ISS_WNR != 0
    }

    /// A data abort taken without a change in EL with a synchronous external abort status.
    pub fn is_external_data_abort(self) -> bool {
        self.ec() == f::EC_DABT_CURRENT && self.fsc() == f::FSC_SYNC_EXTERNAL
    }

    /// An instruction abort taken without a change in EL with a synchronous external abort status.
    pub fn is_external_instruction_abort(self) -> bool {
        self.ec() == f::EC_IABT_CURRENT && self.fsc() == f::FSC_SYNC_EXTERNAL
    }
}

/// Where the exception was taken from (the vector table quarter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Current EL using SP_EL0.
    CurrentSp0,
    /// Current EL using SP_ELx (the guests run here).
    CurrentSpx,
    /// A lower EL in AArch64.
    Lower64,
    /// A lower EL in AArch32.
    Lower32,
}

/// The kind of exception (the entry within a quarter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Synchronous.
    Sync,
    /// IRQ.
    Irq,
    /// FIQ.
    Fiq,
    /// SError.
    SError,
}

/// One of the 16 vector table entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector {
    /// Where it came from.
    pub source: Source,
    /// What it is.
    pub kind: Kind,
}

impl Vector {
    /// Number of entries in a vector table.
    pub const COUNT: u64 = 16;

    /// The entry with index `index` (0..16, in table order); `None` if out of range.
    pub fn from_index(index: u64) -> Option<Self> {
        if index >= Self::COUNT {
            return None;
        }
        let source = match index / 4 {
            0 => Source::CurrentSp0,
            1 => Source::CurrentSpx,
            2 => Source::Lower64,
            _ => Source::Lower32,
        };
        let kind = match index % 4 {
            0 => Kind::Sync,
            1 => Kind::Irq,
            2 => Kind::Fiq,
            _ => Kind::SError,
        };
        Some(Self { source, kind })
    }

    /// A short name for messages.
    pub fn kind_name(self) -> &'static str {
        match self.kind {
            Kind::Sync => "sync",
            Kind::Irq => "irq",
            Kind::Fiq => "fiq",
            Kind::SError => "serror",
        }
    }
}

/// Where the guest resumes after a synchronous exception it handles: instruction
/// aborts return to the caller (the check reached the bad address with `blr`, so
/// the link register holds the way back); so does any exception taken outside the
/// guest's own code (`text`), where execution has wandered off and skipping one
/// instruction would only continue there; everything else skips the faulting
/// instruction.
pub fn resume_at(esr: Esr, elr: u64, x30: u64, text: Range<u64>) -> u64 {
    match esr.ec() {
        f::EC_IABT_CURRENT | f::EC_IABT_LOWER => x30,
        _ if !text.contains(&elr) => x30,
        _ => elr.wrapping_add(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_injected_data_abort() {
        // EC 0x25, IL, WnR, DFSC 0x10.
        let esr = Esr(0x25 << 26 | 1 << 25 | 1 << 6 | 0x10);
        assert_eq!(esr.ec(), 0x25);
        assert_eq!(esr.fsc(), 0x10);
        assert!(esr.is_write());
        assert!(esr.is_external_data_abort());
        assert!(!esr.is_external_instruction_abort());
        assert_eq!(esr.iss(), 1 << 6 | 0x10);
    }

    #[test]
    fn decodes_instruction_abort_and_unknown() {
        let iabt = Esr(0x21 << 26 | 1 << 25 | 0x10);
        assert!(iabt.is_external_instruction_abort());
        assert!(!iabt.is_write());
        let undef = Esr(1 << 25);
        assert_eq!(undef.ec(), 0);
        assert!(!undef.is_external_data_abort());
        // A translation fault is not an external abort.
        assert!(!Esr(0x25 << 26 | 0x05).is_external_data_abort());
    }

    #[test]
    fn vector_indices_follow_the_table_layout() {
        assert_eq!(
            Vector::from_index(0),
            Some(Vector {
                source: Source::CurrentSp0,
                kind: Kind::Sync
            })
        );
        assert_eq!(
            Vector::from_index(4),
            Some(Vector {
                source: Source::CurrentSpx,
                kind: Kind::Sync
            })
        );
        assert_eq!(Vector::from_index(5).map(|v| v.kind_name()), Some("irq"));
        assert_eq!(
            Vector::from_index(7),
            Some(Vector {
                source: Source::CurrentSpx,
                kind: Kind::SError
            })
        );
        assert_eq!(
            Vector::from_index(10),
            Some(Vector {
                source: Source::Lower64,
                kind: Kind::Fiq
            })
        );
        assert_eq!(
            Vector::from_index(15),
            Some(Vector {
                source: Source::Lower32,
                kind: Kind::SError
            })
        );
        assert_eq!(Vector::from_index(16), None);
    }

    #[test]
    fn resume_skips_faulting_instruction_or_returns_to_caller() {
        let text = 0x4008_0000..0x4009_0000;
        let dabt = Esr(0x25 << 26 | 0x10);
        assert_eq!(
            resume_at(dabt, 0x4008_1000, 0x4008_2000, text.clone()),
            0x4008_1004
        );
        assert_eq!(
            resume_at(Esr(0), 0x4008_1000, 0x4008_2000, text.clone()),
            0x4008_1004
        );
        let iabt = Esr(0x21 << 26 | 0x10);
        assert_eq!(
            resume_at(iabt, 0x0a00_1000, 0x4008_2000, text.clone()),
            0x4008_2000
        );
        // Undefined instruction outside the image: the guest ran off into the weeds.
        assert_eq!(
            resume_at(Esr(0), 0x0a00_1000, 0x4008_2000, text.clone()),
            0x4008_2000
        );
        assert_eq!(
            resume_at(Esr(0), 0x4009_0000, 0x4008_2000, text),
            0x4008_2000
        );
    }
}
