//! The ID register fields the hypervisor must hide from its guests (SVE, SME,
//! MTE, pointer authentication, EL2) and the physical address size it may
//! report, with the check that finds any it failed to sanitise.

use core::fmt;

use crate::defs::sysreg::ID_FIELD_MASK;

/// The ID registers the self-test reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdReg {
    /// ID_AA64PFR0_EL1.
    Pfr0,
    /// ID_AA64PFR1_EL1.
    Pfr1,
    /// ID_AA64ISAR1_EL1.
    Isar1,
    /// ID_AA64ISAR2_EL1.
    Isar2,
    /// ID_AA64MMFR0_EL1.
    Mmfr0,
}

impl IdReg {
    /// The architectural name.
    pub fn name(self) -> &'static str {
        match self {
            IdReg::Pfr0 => "ID_AA64PFR0_EL1",
            IdReg::Pfr1 => "ID_AA64PFR1_EL1",
            IdReg::Isar1 => "ID_AA64ISAR1_EL1",
            IdReg::Isar2 => "ID_AA64ISAR2_EL1",
            IdReg::Mmfr0 => "ID_AA64MMFR0_EL1",
        }
    }
}

/// The values read from the ID registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdValues {
    /// ID_AA64PFR0_EL1.
    pub pfr0: u64,
    /// ID_AA64PFR1_EL1.
    pub pfr1: u64,
    /// ID_AA64ISAR1_EL1.
    pub isar1: u64,
    /// ID_AA64ISAR2_EL1.
    pub isar2: u64,
    /// ID_AA64MMFR0_EL1.
    pub mmfr0: u64,
}

impl IdValues {
    /// The value of `reg`.
    pub fn get(&self, reg: IdReg) -> u64 {
        match reg {
            IdReg::Pfr0 => self.pfr0,
            IdReg::Pfr1 => self.pfr1,
            IdReg::Isar1 => self.isar1,
            IdReg::Isar2 => self.isar2,
            IdReg::Mmfr0 => self.mmfr0,
        }
    }
}

/// A 4-bit ID register field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The register.
    pub reg: IdReg,
    /// The field's architectural name.
    pub name: &'static str,
    /// Its lowest bit.
    pub lsb: u32,
}

impl Field {
    /// The field's value in `values`.
    pub fn value(&self, values: &IdValues) -> u64 {
        (values.get(self.reg) >> self.lsb) & ID_FIELD_MASK
    }
}

const fn field(reg: IdReg, name: &'static str, lsb: u32) -> Field {
    Field { reg, name, lsb }
}

/// Fields that must read as 0 (feature not implemented) in a guest.
pub const HIDDEN_FIELDS: &[Field] = &[
    field(IdReg::Pfr0, "SVE", 32),
    field(IdReg::Pfr0, "EL2", 8),
    field(IdReg::Pfr1, "SME", 24),
    field(IdReg::Pfr1, "MTE", 8),
    field(IdReg::Isar1, "GPI", 28),
    field(IdReg::Isar1, "GPA", 24),
    field(IdReg::Isar1, "API", 8),
    field(IdReg::Isar1, "APA", 4),
    field(IdReg::Isar2, "APA3", 12),
    field(IdReg::Isar2, "GPA3", 8),
];

/// ID_AA64MMFR0_EL1.PARange.
pub const PARANGE: Field = field(IdReg::Mmfr0, "PARange", 0);
/// The largest PARange a guest may see: 0b0101, 48 bits.
pub const PARANGE_MAX: u64 = 0b0101;

/// One thing the hypervisor failed to sanitise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdProblem {
    /// A feature field that must be 0 is not.
    Exposed {
        /// The field.
        field: Field,
        /// Its value.
        value: u64,
    },
    /// PARange reports more than 48 bits.
    PaRangeTooLarge(u64),
}

impl fmt::Display for IdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdProblem::Exposed { field, value } => {
                write!(f, "{}.{} = {value:#x}", field.reg.name(), field.name)
            }
            IdProblem::PaRangeTooLarge(v) => {
                write!(f, "{}.PARange = {v:#x} (> 48 bits)", IdReg::Mmfr0.name())
            }
        }
    }
}

/// Every field of `values` the hypervisor failed to sanitise.
pub fn problems(values: &IdValues) -> impl Iterator<Item = IdProblem> + '_ {
    let exposed = HIDDEN_FIELDS.iter().filter_map(move |f| {
        let value = f.value(values);
        (value != 0).then_some(IdProblem::Exposed { field: *f, value })
    });
    let parange = PARANGE.value(values);
    exposed.chain((parange > PARANGE_MAX).then_some(IdProblem::PaRangeTooLarge(parange)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_values_pass() {
        // cortex-a57-like: FP/AdvSIMD/EL0/EL1 fields set, nothing hidden exposed, 44-bit PA.
        let v = IdValues {
            pfr0: 0x0000_0000_0000_0022,
            pfr1: 0,
            isar1: 0x0010_0001,
            isar2: 0,
            mmfr0: 0x4,
        };
        assert_eq!(problems(&v).count(), 0);
        let v48 = IdValues { mmfr0: 0x5, ..v };
        assert_eq!(problems(&v48).count(), 0);
    }

    #[test]
    fn unsanitised_max_cpu_is_caught() {
        // QEMU -cpu max style values: SVE=1, EL2=1, MTE=2, SME=1, APA=5, GPA=1, 52-bit PA.
        let v = IdValues {
            pfr0: 1 << 32 | 1 << 8 | 0x22,
            pfr1: 1 << 24 | 2 << 8,
            isar1: 1 << 24 | 5 << 4,
            isar2: 0,
            mmfr0: 0x6,
        };
        let found: Vec<_> = problems(&v).map(|p| p.to_string()).collect();
        assert_eq!(
            found,
            [
                "ID_AA64PFR0_EL1.SVE = 0x1",
                "ID_AA64PFR0_EL1.EL2 = 0x1",
                "ID_AA64PFR1_EL1.SME = 0x1",
                "ID_AA64PFR1_EL1.MTE = 0x2",
                "ID_AA64ISAR1_EL1.GPA = 0x1",
                "ID_AA64ISAR1_EL1.APA = 0x5",
                "ID_AA64MMFR0_EL1.PARange = 0x6 (> 48 bits)",
            ]
        );
    }

    #[test]
    fn each_hidden_field_is_checked_alone() {
        for f in HIDDEN_FIELDS {
            let mut v = IdValues::default();
            let bits = 1u64 << f.lsb;
            match f.reg {
                IdReg::Pfr0 => v.pfr0 = bits,
                IdReg::Pfr1 => v.pfr1 = bits,
                IdReg::Isar1 => v.isar1 = bits,
                IdReg::Isar2 => v.isar2 = bits,
                IdReg::Mmfr0 => v.mmfr0 = bits,
            }
            let found: Vec<_> = problems(&v).collect();
            assert_eq!(
                found,
                [IdProblem::Exposed {
                    field: *f,
                    value: 1
                }],
                "{}",
                f.name
            );
        }
    }
}
