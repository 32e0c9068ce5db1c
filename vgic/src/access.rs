//! Checks common to every vGIC frame: access alignment and the widths each register
//! class accepts, answered with the `vdev::MmioError` the hypervisor turns into an
//! external abort.

use vdev::{AccessSize, MmioError};

/// The widths a register accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Widths {
    /// 32-bit only (most registers).
    Word,
    /// 8- or 32-bit (IPRIORITYR, ITARGETSR, legacy SGI pending registers).
    ByteOrWord,
    /// 32- or 64-bit (IROUTER, GICR_TYPER).
    WordOrDouble,
    /// Anything (reserved space, which is RAZ/WI whatever the width).
    Any,
}

/// Refuses unaligned accesses and widths `w` does not allow.
pub(crate) fn check(offset: u64, size: AccessSize, w: Widths) -> Result<(), MmioError> {
    if !offset.is_multiple_of(size.bytes()) {
        log::warn!(
            "vgic: unaligned {}-byte access at {offset:#x}",
            size.bytes()
        );
        return Err(MmioError::Unaligned { offset });
    }
    let ok = match w {
        Widths::Word => size == AccessSize::Word,
        Widths::ByteOrWord => matches!(size, AccessSize::Byte | AccessSize::Word),
        Widths::WordOrDouble => matches!(size, AccessSize::Word | AccessSize::Double),
        Widths::Any => true,
    };
    if ok {
        Ok(())
    } else {
        log::warn!(
            "vgic: {}-byte access not allowed at {offset:#x}",
            size.bytes()
        );
        Err(MmioError::UnsupportedSize { offset, size })
    }
}

/// Reads a 64-bit register through an access of `size` at byte `within` of it.
pub(crate) fn read_part(reg: u64, within: u64, size: AccessSize) -> u64 {
    (reg >> (8 * within)) & size.mask()
}

/// Merges a write of `size` at byte `within` into 64-bit register `reg`.
pub(crate) fn write_part(reg: u64, within: u64, size: AccessSize, value: u64) -> u64 {
    let shift = 8 * within;
    let mask = size.mask() << shift;
    (reg & !mask) | ((value << shift) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_alignment() {
        assert_eq!(check(4, AccessSize::Word, Widths::Word), Ok(()));
        assert_eq!(
            check(4, AccessSize::Byte, Widths::Word),
            Err(MmioError::UnsupportedSize {
                offset: 4,
                size: AccessSize::Byte
            })
        );
        assert_eq!(
            check(2, AccessSize::Word, Widths::Any),
            Err(MmioError::Unaligned { offset: 2 })
        );
        assert_eq!(check(0x403, AccessSize::Byte, Widths::ByteOrWord), Ok(()));
        assert!(check(0x402, AccessSize::Half, Widths::ByteOrWord).is_err());
        assert_eq!(
            check(0x6004, AccessSize::Word, Widths::WordOrDouble),
            Ok(())
        );
        assert!(check(0x6004, AccessSize::Double, Widths::WordOrDouble).is_err());
    }

    #[test]
    fn partial_register_access() {
        let r = 0x1122_3344_5566_7788;
        assert_eq!(read_part(r, 4, AccessSize::Word), 0x1122_3344);
        assert_eq!(read_part(r, 0, AccessSize::Double), r);
        assert_eq!(
            write_part(r, 4, AccessSize::Word, 0xAABB_CCDD_0000_0001),
            0x0000_0001_5566_7788
        );
        assert_eq!(
            write_part(r, 0, AccessSize::Word, 0xFFFF_FFFF),
            0x1122_3344_FFFF_FFFF
        );
    }
}
