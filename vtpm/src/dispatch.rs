//! The command dispatch table: one entry per implemented command, carrying its
//! TPMA_CC attributes, the kinds and authorization roles of its handles, and its
//! handler. GetCapability(TPM_CAP_COMMANDS) and TPM_PT_TOTAL_COMMANDS are answered
//! from this same table, so what is reported is exactly what is implemented.

use crate::commands::{capability, context, hierarchy, pcr, random, startup};
use crate::defs::{cc, handle, tpma_cc};
use crate::engine::{Cmd, Tpm};

/// What a handle in the handle area may be (its TPMI_ type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// TPMI_DH_PCR, optionally with TPM_RH_NULL (`+`).
    Pcr { allow_null: bool },
    /// TPMI_RH_PLATFORM.
    Platform,
    /// TPMI_RH_HIERARCHY: owner, platform, endorsement.
    Hierarchy,
    /// TPMI_RH_HIERARCHY_AUTH: lockout, endorsement, owner, platform.
    HierarchyAuth,
}

impl HandleKind {
    /// Does `h` unmarshal as this type?
    pub fn accepts(self, h: u32) -> bool {
        match self {
            HandleKind::Pcr { allow_null } => {
                (h as usize) < crate::defs::limits::PCR_COUNT || (allow_null && h == handle::NULL)
            }
            HandleKind::Platform => h == handle::PLATFORM,
            HandleKind::Hierarchy => {
                matches!(h, handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT)
            }
            HandleKind::HierarchyAuth => {
                matches!(
                    h,
                    handle::LOCKOUT | handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT
                )
            }
        }
    }
}

/// The authorization a handle needs (Part 3 "Auth Role").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRole {
    None,
    User,
}

/// One handle of a command's handle area.
#[derive(Debug, Clone, Copy)]
pub struct HandleSpec {
    pub kind: HandleKind,
    pub auth: AuthRole,
}

/// The handler of a command: unmarshals the parameters from `cmd.params`, checks
/// that none are left over, acts, and marshals the response parameters.
pub type Handler = fn(&mut Tpm, &mut Cmd) -> Result<(), u32>;

/// A dispatch-table entry.
pub struct CommandDesc {
    pub code: u32,
    pub name: &'static str,
    /// TPMA_CC.nv: the command may write NV.
    pub nv: bool,
    /// TPMA_CC.extensive: the command may flush many objects.
    pub extensive: bool,
    /// TPMA_CC.flushed: the command flushes the object it uses.
    pub flushed: bool,
    /// TPMA_CC.rHandle: the response has a handle.
    pub r_handle: bool,
    /// The command refuses an authorization area (TPM_RC_AUTH_CONTEXT).
    pub no_sessions: bool,
    pub handles: &'static [HandleSpec],
    pub handler: Handler,
}

impl CommandDesc {
    /// The TPMA_CC of this command; commandIndex is its place in [`COMMANDS`].
    pub fn attributes(&self, index: usize) -> u32 {
        let mut a = self.code & 0xFFFF;
        debug_assert!(index < 0x1_0000);
        if self.nv {
            a |= tpma_cc::NV;
        }
        if self.extensive {
            a |= tpma_cc::EXTENSIVE;
        }
        if self.flushed {
            a |= tpma_cc::FLUSHED;
        }
        a |= (self.handles.len() as u32) << tpma_cc::C_HANDLES_SHIFT;
        if self.r_handle {
            a |= tpma_cc::R_HANDLE;
        }
        if self.code & cc::VENDOR_BIT != 0 {
            a |= tpma_cc::V;
        }
        a
    }
}

const fn h(kind: HandleKind, auth: AuthRole) -> HandleSpec {
    HandleSpec { kind, auth }
}

const fn entry(
    code: u32,
    name: &'static str,
    nv: bool,
    handles: &'static [HandleSpec],
    handler: Handler,
) -> CommandDesc {
    CommandDesc {
        code,
        name,
        nv,
        extensive: false,
        flushed: false,
        r_handle: false,
        no_sessions: false,
        handles,
        handler,
    }
}

const fn no_sessions(mut d: CommandDesc) -> CommandDesc {
    d.no_sessions = true;
    d
}

const fn extensive(mut d: CommandDesc) -> CommandDesc {
    d.extensive = true;
    d
}

const PCR_OR_NULL_USER: &[HandleSpec] = &[h(HandleKind::Pcr { allow_null: true }, AuthRole::User)];

/// The implemented commands, sorted by command code.
pub static COMMANDS: &[CommandDesc] = &[
    // Disabling a hierarchy flushes its objects: extensive.
    extensive(entry(
        cc::HIERARCHY_CONTROL,
        "HierarchyControl",
        true,
        &[h(HandleKind::Hierarchy, AuthRole::User)],
        hierarchy::hierarchy_control,
    )),
    entry(
        cc::HIERARCHY_CHANGE_AUTH,
        "HierarchyChangeAuth",
        true,
        &[h(HandleKind::HierarchyAuth, AuthRole::User)],
        hierarchy::hierarchy_change_auth,
    ),
    entry(
        cc::PCR_ALLOCATE,
        "PCR_Allocate",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        pcr::pcr_allocate,
    ),
    entry(
        cc::PCR_EVENT,
        "PCR_Event",
        true,
        PCR_OR_NULL_USER,
        pcr::pcr_event,
    ),
    entry(
        cc::PCR_RESET,
        "PCR_Reset",
        true,
        &[h(HandleKind::Pcr { allow_null: false }, AuthRole::User)],
        pcr::pcr_reset,
    ),
    entry(cc::SELF_TEST, "SelfTest", true, &[], startup::self_test),
    no_sessions(entry(cc::STARTUP, "Startup", true, &[], startup::startup)),
    entry(cc::SHUTDOWN, "Shutdown", true, &[], startup::shutdown),
    entry(
        cc::STIR_RANDOM,
        "StirRandom",
        true,
        &[],
        random::stir_random,
    ),
    no_sessions(entry(
        cc::FLUSH_CONTEXT,
        "FlushContext",
        false,
        &[],
        context::flush_context,
    )),
    entry(
        cc::GET_CAPABILITY,
        "GetCapability",
        false,
        &[],
        capability::get_capability,
    ),
    entry(cc::GET_RANDOM, "GetRandom", false, &[], random::get_random),
    entry(
        cc::GET_TEST_RESULT,
        "GetTestResult",
        false,
        &[],
        startup::get_test_result,
    ),
    entry(cc::HASH, "Hash", false, &[], context::hash),
    entry(cc::PCR_READ, "PCR_Read", false, &[], pcr::pcr_read),
    entry(cc::READ_CLOCK, "ReadClock", false, &[], context::read_clock),
    entry(
        cc::PCR_EXTEND,
        "PCR_Extend",
        true,
        PCR_OR_NULL_USER,
        pcr::pcr_extend,
    ),
];

/// The entry and commandIndex for `code`, if implemented.
pub fn lookup(code: u32) -> Option<(usize, &'static CommandDesc)> {
    COMMANDS
        .binary_search_by_key(&code, |d| d.code)
        .ok()
        .map(|i| (i, &COMMANDS[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(COMMANDS.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn attributes_encode_handles_and_nv() {
        let (i, d) = lookup(cc::PCR_EXTEND).unwrap();
        assert_eq!(d.attributes(i), 0x0240_0182);
        let (i, d) = lookup(cc::HIERARCHY_CONTROL).unwrap();
        assert_eq!(d.attributes(i), 0x02C0_0121);
        let (i, d) = lookup(cc::GET_CAPABILITY).unwrap();
        assert_eq!(d.attributes(i), 0x0000_017A);
        assert!(lookup(0x0131).is_none());
    }

    #[test]
    fn handle_kinds() {
        assert!(HandleKind::Pcr { allow_null: true }.accepts(handle::NULL));
        assert!(!HandleKind::Pcr { allow_null: false }.accepts(handle::NULL));
        assert!(!HandleKind::Pcr { allow_null: false }.accepts(24));
        assert!(HandleKind::HierarchyAuth.accepts(handle::LOCKOUT));
        assert!(!HandleKind::Hierarchy.accepts(handle::LOCKOUT));
    }
}
