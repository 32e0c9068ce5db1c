//! The authority ABI: how the RayOS authority partition drives the hypervisor.
//!
//! - **Calls** ([`call`]) are SMCCC fast calls (`HVC #0`, SMC64 convention) in the
//!   *Vendor Specific Hypervisor Service* range (owning entity 6, Arm DEN0028):
//!   function ids `0xC600_0000 | n`. The caller puts arguments in x1..x7 and reads
//!   a signed status or result from x0. [`call::Call::encode`] is the caller's
//!   side; [`call::decode`] (syntax: known function, reserved bits zero, sizes and
//!   coordinates in range) and [`call::validate`] (meaning: the session is open,
//!   the VM exists, every buffer lies in the authority's own memory) are the
//!   hypervisor's. Only the authority partition may call: for any other guest the
//!   hypervisor answers [`Status::NotSupported`] for the *whole* range
//!   ([`in_range`]) and changes nothing.
//! - **Input events** ([`input`]) are 16-byte records in authority memory, handed
//!   over by `INJECT_INPUT`.
//! - **Replies** ([`reply`], minor 1): the text result of the most recent call,
//!   or why it failed, read with `REPLY`.
//! - **The event ring** ([`ring`]) is a single-producer single-consumer ring in
//!   authority memory, registered by `OPEN`: the hypervisor reports VM state
//!   changes, frames ready and finished input scripts there, and (minor 2) the
//!   physical input no guest takes, which is RayOS's.
//!
//! **Versioning.** [`VERSION`] is `major.minor`. A session starts with `OPEN`
//! carrying the caller's version: a different major, or a minor newer than the
//! hypervisor's, is refused with [`Status::VersionMismatch`] (a minor adds calls
//! and never changes an existing one; a caller built for minor *m* works with any
//! hypervisor of minor ≥ *m*). Every call except `VERSION` and `OPEN` answers
//! [`Status::NotOpen`] before a successful `OPEN`.
//!
//! All multi-byte values in authority memory are little-endian.
#![no_std]
#![forbid(unsafe_code)]

pub mod call;
pub mod input;
pub mod reply;
pub mod ring;

/// This ABI's version.
pub const VERSION: Version = Version { major: 1, minor: 3 };

/// An ABI version, passed in one register as `major << 16 | minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl Version {
    pub const fn to_reg(self) -> u64 {
        (self.major as u64) << 16 | self.minor as u64
    }

    /// `None` when bits above the 32-bit version are set.
    pub const fn from_reg(reg: u64) -> Option<Version> {
        if reg >> 32 != 0 {
            return None;
        }
        Some(Version {
            major: (reg >> 16) as u16,
            minor: reg as u16,
        })
    }

    /// Whether a caller built for `caller` may use a hypervisor of this version.
    pub const fn serves(self, caller: Version) -> bool {
        self.major == caller.major && caller.minor <= self.minor
    }
}

/// SMCCC owning entity number of the Vendor Specific Hypervisor Service range.
pub const OEN_VENDOR_HYP: u32 = 6;
/// Bit 31 of a function id: fast call.
const FAST_CALL: u32 = 1 << 31;
/// Bit 30 of a function id: SMC64 calling convention.
const SMC64: u32 = 1 << 30;
/// The owning-entity field, bits [29:24].
const OEN_SHIFT: u32 = 24;
const OEN_MASK: u32 = 0x3f;

/// The SMC64 fast-call function id of function number `n` in the range.
pub const fn fid(n: u16) -> u32 {
    FAST_CALL | SMC64 | OEN_VENDOR_HYP << OEN_SHIFT | n as u32
}

/// Whether `fid` is in the vendor-specific hypervisor service range (fast calls,
/// either calling convention): the range a non-authority guest gets
/// [`Status::NotSupported`] for, whatever the function number.
pub const fn in_range(fid: u32) -> bool {
    fid & FAST_CALL != 0 && (fid >> OEN_SHIFT) & OEN_MASK == OEN_VENDOR_HYP
}

/// What x0 holds after a call: a non-negative result, or one of these.
///
/// The first three are SMCCC's own codes; the others are this service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Status {
    /// Unknown function, or the caller is not the authority partition.
    NotSupported = -1,
    /// A malformed argument (reserved bits set, a size or coordinate out of range).
    InvalidParameters = -2,
    /// The operation is not allowed now (e.g. the VM's policy forbids it).
    Denied = -3,
    /// A call other than `VERSION`/`OPEN` before the session was opened.
    NotOpen = -64,
    /// `OPEN` with a version this hypervisor does not serve.
    VersionMismatch = -65,
    /// No VM has this id.
    NoSuchVm = -66,
    /// The VM is in the wrong state for the operation (pausing a paused VM).
    BadState = -67,
    /// A buffer that is not entirely inside the authority's own memory.
    BadBuffer = -68,
    /// No snapshot has this tag.
    NoSuchSnapshot = -69,
    /// Out of space (snapshot area, hypervisor memory, the input queue).
    NoSpace = -70,
    /// (Minor 1.) The operation failed part-way or timed out; REPLY says how.
    Failed = -71,
}

impl Status {
    const ALL: [Status; 11] = [
        Status::NotSupported,
        Status::InvalidParameters,
        Status::Denied,
        Status::NotOpen,
        Status::VersionMismatch,
        Status::NoSuchVm,
        Status::BadState,
        Status::BadBuffer,
        Status::NoSuchSnapshot,
        Status::NoSpace,
        Status::Failed,
    ];

    /// The value the caller reads in x0.
    pub const fn to_x0(self) -> u64 {
        self as i64 as u64
    }

    /// x0 as the caller sees it: `Ok(result)` when non-negative.
    pub fn from_x0(x0: u64) -> Result<u64, Option<Status>> {
        if (x0 as i64) >= 0 {
            return Ok(x0);
        }
        Err(Status::ALL.into_iter().find(|s| s.to_x0() == x0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_are_smc64_fast_calls_of_owning_entity_6() {
        assert_eq!(fid(0), 0xC600_0000);
        assert_eq!(fid(0x51), 0xC600_0051);
        assert!(in_range(0xC600_0000) && in_range(0xC6FF_FFFF));
        // The SMC32 forms are in the range too (refused alike).
        assert!(in_range(0x8600_0000) && in_range(0x8600_FF01));
        // Neighbours: standard hypervisor service (5), trusted apps (0x30), yielding.
        for other in [
            0xC500_0000,
            0xC700_0000,
            0xF000_0000,
            0x4600_0000,
            0x8400_0000,
        ] {
            assert!(!in_range(other), "{other:#x}");
        }
    }

    #[test]
    fn versions_travel_in_one_register_and_minors_are_backward_compatible() {
        let v = Version { major: 1, minor: 3 };
        assert_eq!(v.to_reg(), 0x1_0003);
        assert_eq!(Version::from_reg(0x1_0003), Some(v));
        assert_eq!(Version::from_reg(1 << 32), None);
        assert!(v.serves(Version { major: 1, minor: 0 }));
        assert!(v.serves(v));
        assert!(!v.serves(Version { major: 1, minor: 4 }));
        assert!(!v.serves(Version { major: 2, minor: 0 }));
        assert!(!v.serves(Version { major: 0, minor: 3 }));
    }

    #[test]
    fn every_status_round_trips_through_x0_and_results_are_not_statuses() {
        for s in Status::ALL {
            assert!((s.to_x0() as i64) < 0);
            assert_eq!(Status::from_x0(s.to_x0()), Err(Some(s)));
        }
        assert_eq!(Status::from_x0(0), Ok(0));
        assert_eq!(Status::from_x0(i64::MAX as u64), Ok(i64::MAX as u64));
        assert_eq!(Status::from_x0(-1000i64 as u64), Err(None));
        assert_eq!(Status::NotSupported.to_x0(), u64::MAX);
    }
}
