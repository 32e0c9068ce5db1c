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
/// Rules: a saved blob starts with the device's `SAVE_ID` and `SAVE_VERSION`; a device
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
