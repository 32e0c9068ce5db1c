//! VM lifecycle policy, schema v1: what the hypervisor does with a VM on host boot,
//! when it is shown or hidden, and on host shutdown. `docs/policy.md` documents each
//! field and how the hypervisor acts on it.

use crate::codec::{DecodeError, Reader, Writer};
use crate::defs::{
    POLICY_AUTOSTART, POLICY_PAUSE_ON_HIDE, POLICY_RESUME_ON_BOOT, POLICY_SCHEMA_V1,
    POLICY_SUSPEND_ON_HOST_SHUTDOWN, POLICY_V1_KNOWN, POLICY_VISIBLE_ON_START,
};

/// A VM's lifecycle policy (schema v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Start (resume or cold-boot) the VM when the host boots. Default: off.
    pub autostart: bool,
    /// On start, resume from a valid saved state instead of cold-booting the same
    /// disks. Default: on.
    pub resume_on_boot: bool,
    /// Present the VM (attach display and input) as soon as it starts. Default: off —
    /// a VM runs in the background until the authority asks for it.
    pub visible_on_start: bool,
    /// Pause the VM's vCPUs while it is hidden. Default: off.
    pub pause_on_hide: bool,
    /// Save the VM's state (RAM + devices) when the host shuts down, so the next boot
    /// can resume it. Default: on.
    pub suspend_on_host_shutdown: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            autostart: false,
            resume_on_boot: true,
            visible_on_start: false,
            pause_on_hide: false,
            suspend_on_host_shutdown: true,
        }
    }
}

/// The policy fields by name, in schema order, for tools that list or set them.
pub const POLICY_FIELDS: [&str; 5] = [
    "autostart",
    "resume_on_boot",
    "visible_on_start",
    "pause_on_hide",
    "suspend_on_host_shutdown",
];

impl Policy {
    /// The schema version [`Policy::encode`] writes.
    pub const SCHEMA: u16 = POLICY_SCHEMA_V1;

    /// The policy as its flag bits (the schema's; the authority ABI's POLICY_GET).
    pub fn bits(&self) -> u32 {
        let mut bits = 0;
        for (on, bit) in [
            (self.autostart, POLICY_AUTOSTART),
            (self.resume_on_boot, POLICY_RESUME_ON_BOOT),
            (self.visible_on_start, POLICY_VISIBLE_ON_START),
            (self.pause_on_hide, POLICY_PAUSE_ON_HIDE),
            (
                self.suspend_on_host_shutdown,
                POLICY_SUSPEND_ON_HOST_SHUTDOWN,
            ),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }

    /// The policy with these flag bits; `None` if an undefined bit is set.
    pub fn from_bits(bits: u32) -> Option<Policy> {
        (bits & !POLICY_V1_KNOWN == 0).then_some(Policy {
            autostart: bits & POLICY_AUTOSTART != 0,
            resume_on_boot: bits & POLICY_RESUME_ON_BOOT != 0,
            visible_on_start: bits & POLICY_VISIBLE_ON_START != 0,
            pause_on_hide: bits & POLICY_PAUSE_ON_HIDE != 0,
            suspend_on_host_shutdown: bits & POLICY_SUSPEND_ON_HOST_SHUTDOWN != 0,
        })
    }

    /// The value of the field called `name` (one of [`POLICY_FIELDS`]).
    pub fn get(&self, name: &str) -> Option<bool> {
        Some(match name {
            "autostart" => self.autostart,
            "resume_on_boot" => self.resume_on_boot,
            "visible_on_start" => self.visible_on_start,
            "pause_on_hide" => self.pause_on_hide,
            "suspend_on_host_shutdown" => self.suspend_on_host_shutdown,
            _ => return None,
        })
    }

    /// Sets the field called `name`; `false` if there is no such field.
    pub fn set(&mut self, name: &str, value: bool) -> bool {
        let field = match name {
            "autostart" => &mut self.autostart,
            "resume_on_boot" => &mut self.resume_on_boot,
            "visible_on_start" => &mut self.visible_on_start,
            "pause_on_hide" => &mut self.pause_on_hide,
            "suspend_on_host_shutdown" => &mut self.suspend_on_host_shutdown,
            _ => return false,
        };
        *field = value;
        true
    }

    /// Appends the schema version (`u16`) and the flag bits (`u32`).
    pub fn encode(&self, w: &mut Writer) {
        w.u16(Self::SCHEMA);
        w.u32(self.bits());
    }

    /// Reads a policy; an unknown schema or an undefined flag bit is refused.
    pub fn decode(r: &mut Reader<'_>) -> Result<Policy, DecodeError> {
        if r.u16()? != POLICY_SCHEMA_V1 {
            return Err(DecodeError::BadValue("policy schema"));
        }
        let bits = r.u32()?;
        Policy::from_bits(bits).ok_or(DecodeError::BadValue("policy flags"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bits_round_trip_and_undefined_bits_are_refused() {
        use super::*;
        for bits in 0..=POLICY_V1_KNOWN {
            assert_eq!(Policy::from_bits(bits).map(|p| p.bits()), Some(bits));
        }
        assert_eq!(Policy::from_bits(POLICY_V1_KNOWN + 1), None);
        assert_eq!(
            Policy::default().bits() & POLICY_RESUME_ON_BOOT,
            POLICY_RESUME_ON_BOOT
        );
    }

    use super::*;

    #[test]
    fn defaults_match_the_documented_schema() {
        let p = Policy::default();
        assert!(!p.autostart && p.resume_on_boot && !p.visible_on_start);
        assert!(!p.pause_on_hide && p.suspend_on_host_shutdown);
    }

    #[test]
    fn every_combination_round_trips() {
        for bits in 0..32u32 {
            let mut p = Policy::default();
            for (i, name) in POLICY_FIELDS.iter().enumerate() {
                assert!(p.set(name, bits & (1 << i) != 0));
            }
            let mut w = Writer::new();
            p.encode(&mut w);
            let b = w.into_bytes();
            let mut r = Reader::new(&b);
            assert_eq!(Policy::decode(&mut r), Ok(p));
            for (i, name) in POLICY_FIELDS.iter().enumerate() {
                assert_eq!(p.get(name), Some(bits & (1 << i) != 0));
            }
        }
        assert!(!Policy::default().set("bogus", true));
        assert_eq!(Policy::default().get("bogus"), None);
    }

    #[test]
    fn unknown_schema_or_bits_refused() {
        let mut w = Writer::new();
        w.u16(2);
        w.u32(0);
        assert!(Policy::decode(&mut Reader::new(&w.into_bytes())).is_err());
        let mut w = Writer::new();
        w.u16(1);
        w.u32(1 << 5);
        assert!(Policy::decode(&mut Reader::new(&w.into_bytes())).is_err());
    }
}
