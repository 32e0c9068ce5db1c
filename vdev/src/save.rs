//! Versioned save/restore of device state.

use alloc::vec::Vec;

/// Why saved state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// The blob names another device type.
    WrongDevice,
    /// The blob's version is newer than this build understands.
    UnsupportedVersion(u32),
    /// The blob is shorter than its contents require, or fields are out of range.
    Malformed,
}

/// A device whose state can be captured and brought back.
///
/// Rules: a saved blob starts with [`header`] (the device's `SAVE_ID` and
/// `SAVE_VERSION`) and restore checks it with [`open`]; a device
/// must restore every version it ever saved (older fields get defaults), and refuses
/// newer ones. Restore validates everything as if it came from the guest.
pub trait SaveRestore {
    /// Four-byte identifier of the device type.
    const SAVE_ID: [u8; 4];
    /// Current version of the saved layout.
    const SAVE_VERSION: u32;
    /// Captures the device's state.
    fn save(&self) -> Vec<u8>;
    /// Replaces the device's state with `blob`.
    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError>;
}

/// Length of the header every saved blob starts with: `SAVE_ID` and the version
/// (little-endian).
pub const HEADER_LEN: usize = 8;

/// The header of a blob saved by a device with `id` at layout `version`.
pub fn header(id: [u8; 4], version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&id);
    h[4..].copy_from_slice(&version.to_le_bytes());
    h
}

/// Checks the header of `blob` for a device with `id` whose current layout is
/// `current`: the id must match and the version must be one this build knows
/// (`1..=current`). Returns the version and the payload after the header.
pub fn open(blob: &[u8], id: [u8; 4], current: u32) -> Result<(u32, &[u8]), RestoreError> {
    if blob.len() < HEADER_LEN {
        return Err(RestoreError::Malformed);
    }
    if blob[..4] != id {
        return Err(RestoreError::WrongDevice);
    }
    let version = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]);
    if version == 0 || version > current {
        return Err(RestoreError::UnsupportedVersion(version));
    }
    Ok((version, &blob[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bad_headers_are_named() {
        let mut blob = header(*b"TEST", 2).to_vec();
        blob.extend_from_slice(&[9, 9]);
        assert_eq!(open(&blob, *b"TEST", 2), Ok((2, &[9u8, 9][..])));
        assert_eq!(
            open(&blob, *b"TEST", 3),
            Ok((2, &[9u8, 9][..])),
            "older versions stay readable"
        );
        assert_eq!(
            open(&blob, *b"TEST", 1),
            Err(RestoreError::UnsupportedVersion(2))
        );
        assert_eq!(open(&blob, *b"OTHR", 2), Err(RestoreError::WrongDevice));
        assert_eq!(
            open(&header(*b"TEST", 0), *b"TEST", 2),
            Err(RestoreError::UnsupportedVersion(0))
        );
        assert_eq!(open(&blob[..7], *b"TEST", 2), Err(RestoreError::Malformed));
    }
}
