//! The crate's error type: every way a stage-2 request can be refused.

use core::fmt;

/// Why a layout or a table operation was refused. Operations that fail with
/// one of these leave the translation tables as they were (see each method).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// ID_AA64MMFR0_EL1.PARange holds a reserved value.
    UnsupportedPaRange,
    /// The IPA size (after the cap) is below the smallest the 4 KiB granule
    /// supports without FEAT_TTST (25 bits).
    IpaTooSmall,
    /// A hand-built [`crate::Layout`] is not the one this crate derives for its
    /// `ipa_bits`/`pa_bits`.
    InvalidLayout,
    /// The VMID does not fit in 8 bits and the layout does not use 16-bit VMIDs.
    VmidTooLarge,
    /// An address or size is not a multiple of 4 KiB.
    Unaligned,
    /// The IPA range reaches beyond the IPA size of the layout.
    IpaOutOfRange,
    /// The PA range reaches beyond the output address size of the layout.
    PaOutOfRange,
    /// `address + size` overflows 64 bits.
    Overflow,
    /// `map` found an existing mapping inside the requested IPA range.
    AlreadyMapped,
    /// `protect` found a hole (unmapped page) inside the requested IPA range.
    NotMapped,
    /// The [`crate::TableAllocator`] had no tables left.
    OutOfMemory,
    /// The allocator returned a table address that is not suitably aligned or
    /// does not fit a 48-bit descriptor.
    BadTableAddress,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Error::UnsupportedPaRange => "reserved PARange value",
            Error::IpaTooSmall => "IPA size below the 4 KiB granule minimum",
            Error::InvalidLayout => "inconsistent stage-2 layout",
            Error::VmidTooLarge => "VMID needs 16-bit VMIDs",
            Error::Unaligned => "address or size not 4 KiB aligned",
            Error::IpaOutOfRange => "IPA range beyond the IPA size",
            Error::PaOutOfRange => "PA range beyond the output address size",
            Error::Overflow => "address range overflows",
            Error::AlreadyMapped => "IPA range already (partly) mapped",
            Error::NotMapped => "IPA range not (fully) mapped",
            Error::OutOfMemory => "no translation tables left",
            Error::BadTableAddress => "allocator returned an unusable table address",
        };
        f.write_str(s)
    }
}
