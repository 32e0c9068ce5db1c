//! The command dispatch table: one entry per implemented command, carrying its
//! TPMA_CC attributes, the kinds and authorization roles of its handles, and its
//! handler. GetCapability(TPM_CAP_COMMANDS) and TPM_PT_TOTAL_COMMANDS are answered
//! from this same table, so what is reported is exactly what is implemented.

use crate::commands::{
    attest, audit, capability, clear, context, create, credential, duplication, ecc2phase, evict,
    hierarchy, nv, object, pcr, platform, policy, random, rsa, sequence, session, signing, startup,
    symmetric,
};
use crate::defs::{cc, handle, tpma_cc};
use crate::engine::{Cmd, Tpm};

/// What a handle in the handle area may be (its TPMI_ type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// TPMI_DH_PCR, optionally with TPM_RH_NULL (`+`).
    Pcr { allow_null: bool },
    /// TPMI_RH_PLATFORM.
    Platform,
    /// TPMI_RH_ENDORSEMENT.
    Endorsement,
    /// TPMI_RH_HIERARCHY: owner, platform, endorsement.
    Hierarchy,
    /// TPMI_RH_HIERARCHY+: owner, platform, endorsement or TPM_RH_NULL.
    HierarchyOrNull,
    /// TPMI_DH_PARENT+: a hierarchy, TPM_RH_NULL, or a loaded object.
    Parent,
    /// TPMI_RH_HIERARCHY_AUTH / TPMI_RH_HIERARCHY_POLICY: lockout,
    /// endorsement, owner, platform.
    HierarchyAuth,
    /// TPMI_DH_OBJECT, optionally with TPM_RH_NULL.
    Object { allow_null: bool },
    /// TPMI_DH_ENTITY, optionally with TPM_RH_NULL.
    Entity { allow_null: bool },
    /// TPMI_SH_POLICY.
    PolicySession,
    /// TPMI_SH_HMAC.
    HmacSession,
    /// TPMI_RH_PROVISION: owner or platform.
    Provision,
    /// TPMI_RH_CLEAR: lockout or platform.
    ClearAuth,
    /// TPMI_RH_LOCKOUT.
    Lockout,
    /// TPMI_RH_NV_AUTH: owner, platform or an NV index.
    NvAuth,
    /// TPMI_RH_NV_INDEX.
    NvIndex,
    /// TPMI_DH_CONTEXT: a session or a transient object.
    Context,
    /// TPMI_DH_OBJECT restricted to loaded transient objects (sequences).
    Transient,
}

impl HandleKind {
    /// Does `h` unmarshal as this type?
    pub fn accepts(self, h: u32) -> bool {
        match self {
            HandleKind::Pcr { allow_null } => {
                (h as usize) < crate::defs::limits::PCR_COUNT || (allow_null && h == handle::NULL)
            }
            HandleKind::Platform => h == handle::PLATFORM,
            HandleKind::Endorsement => h == handle::ENDORSEMENT,
            HandleKind::Hierarchy => {
                matches!(h, handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT)
            }
            HandleKind::HierarchyOrNull => HandleKind::Hierarchy.accepts(h) || h == handle::NULL,
            HandleKind::Parent => {
                HandleKind::HierarchyOrNull.accepts(h) || HandleKind::Transient.accepts(h)
            }
            HandleKind::HierarchyAuth => {
                matches!(
                    h,
                    handle::LOCKOUT | handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT
                )
            }
            HandleKind::Object { allow_null } => {
                matches!(handle::ht(h), handle::HT_TRANSIENT | handle::HT_PERSISTENT)
                    || (allow_null && h == handle::NULL)
            }
            HandleKind::Entity { allow_null } => {
                HandleKind::HierarchyAuth.accepts(h)
                    || matches!(
                        handle::ht(h),
                        handle::HT_TRANSIENT | handle::HT_PERSISTENT | handle::HT_NV_INDEX
                    )
                    || (h as usize) < crate::defs::limits::PCR_COUNT
                    || (allow_null && h == handle::NULL)
            }
            HandleKind::PolicySession => handle::ht(h) == handle::HT_POLICY_SESSION,
            HandleKind::HmacSession => handle::ht(h) == handle::HT_HMAC_SESSION,
            HandleKind::Provision => matches!(h, handle::OWNER | handle::PLATFORM),
            HandleKind::ClearAuth => matches!(h, handle::LOCKOUT | handle::PLATFORM),
            HandleKind::Lockout => h == handle::LOCKOUT,
            HandleKind::NvAuth => {
                matches!(h, handle::OWNER | handle::PLATFORM)
                    || handle::ht(h) == handle::HT_NV_INDEX
            }
            HandleKind::NvIndex => handle::ht(h) == handle::HT_NV_INDEX,
            HandleKind::Transient => {
                matches!(handle::ht(h), handle::HT_TRANSIENT | handle::HT_PERSISTENT)
            }
            HandleKind::Context => matches!(
                handle::ht(h),
                handle::HT_HMAC_SESSION | handle::HT_POLICY_SESSION | handle::HT_TRANSIENT
            ),
        }
    }
}

/// The authorization a handle needs (Part 3 "Auth Role").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRole {
    None,
    User,
    /// Part 1 "Authorization roles": ADMIN. An object's authValue serves
    /// (password or HMAC) only when its adminWithPolicy is clear; otherwise,
    /// and always for an NV index, a policy session whose policy includes
    /// TPM2_PolicyCommandCode is required.
    Admin,
    /// DUP: always a policy session whose policy includes
    /// TPM2_PolicyCommandCode.
    Dup,
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
    /// The first command parameter is a TPM2B (a session may decrypt it).
    pub decrypt: bool,
    /// The first response parameter is a TPM2B (a session may encrypt it).
    pub encrypt: bool,
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
        decrypt: false,
        encrypt: false,
        handles,
        handler,
    }
}

/// The first command parameter may be encrypted.
const fn dec(mut d: CommandDesc) -> CommandDesc {
    d.decrypt = true;
    d
}

/// The first response parameter may be encrypted.
const fn enc(mut d: CommandDesc) -> CommandDesc {
    d.encrypt = true;
    d
}

const fn flushed(mut d: CommandDesc) -> CommandDesc {
    d.flushed = true;
    d
}

const fn r_handle(mut d: CommandDesc) -> CommandDesc {
    d.r_handle = true;
    d
}

const fn no_sessions(mut d: CommandDesc) -> CommandDesc {
    d.no_sessions = true;
    d
}

const fn extensive(mut d: CommandDesc) -> CommandDesc {
    d.extensive = true;
    d
}

const POLICY_SESSION: &[HandleSpec] = &[h(HandleKind::PolicySession, AuthRole::None)];

const PCR_OR_NULL_USER: &[HandleSpec] = &[h(HandleKind::Pcr { allow_null: true }, AuthRole::User)];

/// The implemented commands, sorted by command code.
pub static COMMANDS: &[CommandDesc] = &[
    entry(
        cc::NV_UNDEFINE_SPACE_SPECIAL,
        "NV_UndefineSpaceSpecial",
        true,
        &[
            h(HandleKind::NvIndex, AuthRole::Admin),
            h(HandleKind::Platform, AuthRole::User),
        ],
        nv::nv_undefine_space_special,
    ),
    entry(
        cc::EVICT_CONTROL,
        "EvictControl",
        true,
        &[
            h(HandleKind::Provision, AuthRole::User),
            h(HandleKind::Transient, AuthRole::None),
        ],
        evict::evict_control,
    ),
    // Disabling a hierarchy flushes its objects: extensive.
    extensive(entry(
        cc::HIERARCHY_CONTROL,
        "HierarchyControl",
        true,
        &[h(HandleKind::Hierarchy, AuthRole::User)],
        hierarchy::hierarchy_control,
    )),
    entry(
        cc::NV_UNDEFINE_SPACE,
        "NV_UndefineSpace",
        true,
        &[
            h(HandleKind::Provision, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_undefine_space,
    ),
    extensive(entry(
        cc::CHANGE_EPS,
        "ChangeEPS",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        clear::change_eps,
    )),
    extensive(entry(
        cc::CHANGE_PPS,
        "ChangePPS",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        clear::change_pps,
    )),
    extensive(entry(
        cc::CLEAR,
        "Clear",
        true,
        &[h(HandleKind::ClearAuth, AuthRole::User)],
        clear::clear,
    )),
    entry(
        cc::CLEAR_CONTROL,
        "ClearControl",
        true,
        &[h(HandleKind::ClearAuth, AuthRole::User)],
        clear::clear_control,
    ),
    entry(
        cc::CLOCK_SET,
        "ClockSet",
        true,
        &[h(HandleKind::Provision, AuthRole::User)],
        context::clock_set,
    ),
    dec(entry(
        cc::HIERARCHY_CHANGE_AUTH,
        "HierarchyChangeAuth",
        true,
        &[h(HandleKind::HierarchyAuth, AuthRole::User)],
        hierarchy::hierarchy_change_auth,
    )),
    dec(entry(
        cc::NV_DEFINE_SPACE,
        "NV_DefineSpace",
        true,
        &[h(HandleKind::Provision, AuthRole::User)],
        nv::nv_define_space,
    )),
    entry(
        cc::PCR_ALLOCATE,
        "PCR_Allocate",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        pcr::pcr_allocate,
    ),
    dec(entry(
        cc::PCR_SET_AUTH_POLICY,
        "PCR_SetAuthPolicy",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        pcr::pcr_set_auth_policy,
    )),
    entry(
        cc::PP_COMMANDS,
        "PP_Commands",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        platform::pp_commands,
    ),
    dec(entry(
        cc::SET_PRIMARY_POLICY,
        "SetPrimaryPolicy",
        true,
        &[h(HandleKind::HierarchyAuth, AuthRole::User)],
        hierarchy::set_primary_policy,
    )),
    entry(
        cc::CLOCK_RATE_ADJUST,
        "ClockRateAdjust",
        false,
        &[h(HandleKind::Provision, AuthRole::User)],
        platform::clock_rate_adjust,
    ),
    dec(enc(r_handle(entry(
        cc::CREATE_PRIMARY,
        "CreatePrimary",
        false,
        &[h(HandleKind::HierarchyOrNull, AuthRole::User)],
        object::create_primary,
    )))),
    entry(
        cc::NV_GLOBAL_WRITE_LOCK,
        "NV_GlobalWriteLock",
        true,
        &[h(HandleKind::Provision, AuthRole::User)],
        nv::nv_global_write_lock,
    ),
    dec(enc(entry(
        cc::GET_COMMAND_AUDIT_DIGEST,
        "GetCommandAuditDigest",
        true,
        &[
            h(HandleKind::Endorsement, AuthRole::User),
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
        ],
        audit::get_command_audit_digest,
    ))),
    entry(
        cc::NV_INCREMENT,
        "NV_Increment",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_increment,
    ),
    entry(
        cc::NV_SET_BITS,
        "NV_SetBits",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_set_bits,
    ),
    dec(entry(
        cc::NV_EXTEND,
        "NV_Extend",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_extend,
    )),
    dec(entry(
        cc::NV_WRITE,
        "NV_Write",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_write,
    )),
    entry(
        cc::NV_WRITE_LOCK,
        "NV_WriteLock",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_write_lock,
    ),
    entry(
        cc::DICTIONARY_ATTACK_LOCK_RESET,
        "DictionaryAttackLockReset",
        true,
        &[h(HandleKind::Lockout, AuthRole::User)],
        clear::dictionary_attack_lock_reset,
    ),
    entry(
        cc::DICTIONARY_ATTACK_PARAMETERS,
        "DictionaryAttackParameters",
        true,
        &[h(HandleKind::Lockout, AuthRole::User)],
        clear::dictionary_attack_parameters,
    ),
    dec(entry(
        cc::NV_CHANGE_AUTH,
        "NV_ChangeAuth",
        true,
        &[h(HandleKind::NvIndex, AuthRole::Admin)],
        nv::nv_change_auth,
    )),
    dec(entry(
        cc::PCR_EVENT,
        "PCR_Event",
        true,
        PCR_OR_NULL_USER,
        pcr::pcr_event,
    )),
    entry(
        cc::PCR_RESET,
        "PCR_Reset",
        true,
        &[h(HandleKind::Pcr { allow_null: false }, AuthRole::User)],
        pcr::pcr_reset,
    ),
    flushed(dec(enc(entry(
        cc::SEQUENCE_COMPLETE,
        "SequenceComplete",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        sequence::sequence_complete,
    )))),
    entry(
        cc::SET_ALGORITHM_SET,
        "SetAlgorithmSet",
        true,
        &[h(HandleKind::Platform, AuthRole::User)],
        platform::set_algorithm_set,
    ),
    entry(
        cc::SET_COMMAND_CODE_AUDIT_STATUS,
        "SetCommandCodeAuditStatus",
        true,
        &[h(HandleKind::Provision, AuthRole::User)],
        audit::set_command_code_audit_status,
    ),
    entry(
        cc::INCREMENTAL_SELF_TEST,
        "IncrementalSelfTest",
        true,
        &[],
        startup::incremental_self_test,
    ),
    entry(cc::SELF_TEST, "SelfTest", true, &[], startup::self_test),
    no_sessions(entry(cc::STARTUP, "Startup", true, &[], startup::startup)),
    entry(cc::SHUTDOWN, "Shutdown", true, &[], startup::shutdown),
    dec(entry(
        cc::STIR_RANDOM,
        "StirRandom",
        true,
        &[],
        random::stir_random,
    )),
    dec(enc(entry(
        cc::ACTIVATE_CREDENTIAL,
        "ActivateCredential",
        false,
        &[
            h(HandleKind::Transient, AuthRole::Admin),
            h(HandleKind::Transient, AuthRole::User),
        ],
        credential::activate_credential,
    ))),
    dec(enc(entry(
        cc::CERTIFY,
        "Certify",
        false,
        &[
            h(HandleKind::Transient, AuthRole::Admin),
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
        ],
        attest::certify,
    ))),
    dec(entry(
        cc::POLICY_NV,
        "PolicyNV",
        false,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
            h(HandleKind::PolicySession, AuthRole::None),
        ],
        policy::policy_nv,
    )),
    dec(enc(entry(
        cc::CERTIFY_CREATION,
        "CertifyCreation",
        false,
        &[
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
            h(HandleKind::Transient, AuthRole::None),
        ],
        attest::certify_creation,
    ))),
    dec(enc(entry(
        cc::DUPLICATE,
        "Duplicate",
        false,
        &[
            h(HandleKind::Transient, AuthRole::Dup),
            h(HandleKind::Object { allow_null: true }, AuthRole::None),
        ],
        duplication::duplicate,
    ))),
    dec(enc(entry(
        cc::GET_TIME,
        "GetTime",
        false,
        &[
            h(HandleKind::Endorsement, AuthRole::User),
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
        ],
        attest::get_time,
    ))),
    dec(enc(entry(
        cc::GET_SESSION_AUDIT_DIGEST,
        "GetSessionAuditDigest",
        false,
        &[
            h(HandleKind::Endorsement, AuthRole::User),
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
            h(HandleKind::HmacSession, AuthRole::None),
        ],
        audit::get_session_audit_digest,
    ))),
    enc(entry(
        cc::NV_READ,
        "NV_Read",
        false,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_read,
    )),
    entry(
        cc::NV_READ_LOCK,
        "NV_ReadLock",
        true,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        nv::nv_read_lock,
    ),
    dec(enc(entry(
        cc::OBJECT_CHANGE_AUTH,
        "ObjectChangeAuth",
        false,
        &[
            h(HandleKind::Transient, AuthRole::Admin),
            h(HandleKind::Transient, AuthRole::None),
        ],
        create::object_change_auth,
    ))),
    dec(enc(entry(
        cc::POLICY_SECRET,
        "PolicySecret",
        false,
        &[
            h(HandleKind::Entity { allow_null: false }, AuthRole::User),
            h(HandleKind::PolicySession, AuthRole::None),
        ],
        policy::policy_secret,
    ))),
    dec(enc(entry(
        cc::REWRAP,
        "Rewrap",
        false,
        &[
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
            h(HandleKind::Object { allow_null: true }, AuthRole::None),
        ],
        duplication::rewrap,
    ))),
    dec(enc(entry(
        cc::CREATE,
        "Create",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        create::create,
    ))),
    enc(entry(
        cc::ECDH_ZGEN,
        "ECDH_ZGen",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        signing::ecdh_zgen,
    )),
    dec(enc(entry(
        cc::HMAC,
        "HMAC",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        sequence::hmac,
    ))),
    dec(enc(entry(
        cc::IMPORT,
        "Import",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        duplication::import,
    ))),
    dec(r_handle(entry(
        cc::LOAD,
        "Load",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        create::load,
    ))),
    dec(enc(entry(
        cc::QUOTE,
        "Quote",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        signing::quote,
    ))),
    dec(enc(entry(
        cc::RSA_DECRYPT,
        "RSA_Decrypt",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        rsa::rsa_decrypt,
    ))),
    dec(r_handle(entry(
        cc::HMAC_START,
        "HMAC_Start",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        sequence::hmac_start,
    ))),
    dec(entry(
        cc::SEQUENCE_UPDATE,
        "SequenceUpdate",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        sequence::sequence_update,
    )),
    dec(entry(
        cc::SIGN,
        "Sign",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        signing::sign,
    )),
    enc(entry(
        cc::UNSEAL,
        "Unseal",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        create::unseal,
    )),
    dec(enc(entry(
        cc::POLICY_SIGNED,
        "PolicySigned",
        false,
        &[
            h(HandleKind::Transient, AuthRole::None),
            h(HandleKind::PolicySession, AuthRole::None),
        ],
        policy::policy_signed,
    ))),
    r_handle(entry(
        cc::CONTEXT_LOAD,
        "ContextLoad",
        false,
        &[],
        session::context_load,
    )),
    entry(
        cc::CONTEXT_SAVE,
        "ContextSave",
        false,
        &[h(HandleKind::Context, AuthRole::None)],
        session::context_save,
    ),
    enc(entry(
        cc::ECDH_KEY_GEN,
        "ECDH_KeyGen",
        false,
        &[h(HandleKind::Transient, AuthRole::None)],
        signing::ecdh_key_gen,
    )),
    enc(entry(
        cc::ENCRYPT_DECRYPT,
        "EncryptDecrypt",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        symmetric::encrypt_decrypt,
    )),
    no_sessions(entry(
        cc::FLUSH_CONTEXT,
        "FlushContext",
        false,
        &[],
        context::flush_context,
    )),
    dec(enc(r_handle(entry(
        cc::LOAD_EXTERNAL,
        "LoadExternal",
        false,
        &[],
        object::load_external,
    )))),
    dec(enc(entry(
        cc::MAKE_CREDENTIAL,
        "MakeCredential",
        false,
        &[h(HandleKind::Transient, AuthRole::None)],
        credential::make_credential,
    ))),
    enc(entry(
        cc::NV_READ_PUBLIC,
        "NV_ReadPublic",
        false,
        &[h(HandleKind::NvIndex, AuthRole::None)],
        nv::nv_read_public,
    )),
    dec(entry(
        cc::POLICY_AUTHORIZE,
        "PolicyAuthorize",
        false,
        POLICY_SESSION,
        policy::policy_authorize,
    )),
    entry(
        cc::POLICY_AUTH_VALUE,
        "PolicyAuthValue",
        false,
        POLICY_SESSION,
        policy::policy_auth_value,
    ),
    entry(
        cc::POLICY_COMMAND_CODE,
        "PolicyCommandCode",
        false,
        POLICY_SESSION,
        policy::policy_command_code,
    ),
    dec(entry(
        cc::POLICY_COUNTER_TIMER,
        "PolicyCounterTimer",
        false,
        POLICY_SESSION,
        policy::policy_counter_timer,
    )),
    dec(entry(
        cc::POLICY_CP_HASH,
        "PolicyCpHash",
        false,
        POLICY_SESSION,
        policy::policy_cp_hash,
    )),
    entry(
        cc::POLICY_LOCALITY,
        "PolicyLocality",
        false,
        POLICY_SESSION,
        policy::policy_locality,
    ),
    dec(entry(
        cc::POLICY_NAME_HASH,
        "PolicyNameHash",
        false,
        POLICY_SESSION,
        policy::policy_name_hash,
    )),
    entry(
        cc::POLICY_OR,
        "PolicyOR",
        false,
        POLICY_SESSION,
        policy::policy_or,
    ),
    dec(entry(
        cc::POLICY_TICKET,
        "PolicyTicket",
        false,
        POLICY_SESSION,
        policy::policy_ticket,
    )),
    enc(entry(
        cc::READ_PUBLIC,
        "ReadPublic",
        false,
        &[h(HandleKind::Transient, AuthRole::None)],
        object::read_public,
    )),
    dec(enc(entry(
        cc::RSA_ENCRYPT,
        "RSA_Encrypt",
        false,
        &[h(HandleKind::Transient, AuthRole::None)],
        rsa::rsa_encrypt,
    ))),
    dec(enc(r_handle(entry(
        cc::START_AUTH_SESSION,
        "StartAuthSession",
        false,
        &[
            h(HandleKind::Object { allow_null: true }, AuthRole::None),
            h(HandleKind::Entity { allow_null: true }, AuthRole::None),
        ],
        session::start_auth_session,
    )))),
    dec(entry(
        cc::VERIFY_SIGNATURE,
        "VerifySignature",
        false,
        &[h(HandleKind::Transient, AuthRole::None)],
        signing::verify_signature,
    )),
    entry(
        cc::ECC_PARAMETERS,
        "ECC_Parameters",
        false,
        &[],
        signing::ecc_parameters,
    ),
    entry(
        cc::GET_CAPABILITY,
        "GetCapability",
        false,
        &[],
        capability::get_capability,
    ),
    enc(entry(
        cc::GET_RANDOM,
        "GetRandom",
        false,
        &[],
        random::get_random,
    )),
    enc(entry(
        cc::GET_TEST_RESULT,
        "GetTestResult",
        false,
        &[],
        startup::get_test_result,
    )),
    dec(enc(entry(cc::HASH, "Hash", false, &[], context::hash))),
    entry(cc::PCR_READ, "PCR_Read", false, &[], pcr::pcr_read),
    dec(entry(
        cc::POLICY_PCR,
        "PolicyPCR",
        false,
        POLICY_SESSION,
        policy::policy_pcr,
    )),
    entry(
        cc::POLICY_RESTART,
        "PolicyRestart",
        false,
        POLICY_SESSION,
        policy::policy_restart,
    ),
    entry(cc::READ_CLOCK, "ReadClock", false, &[], context::read_clock),
    entry(
        cc::PCR_EXTEND,
        "PCR_Extend",
        true,
        PCR_OR_NULL_USER,
        pcr::pcr_extend,
    ),
    dec(entry(
        cc::PCR_SET_AUTH_VALUE,
        "PCR_SetAuthValue",
        false,
        &[h(HandleKind::Pcr { allow_null: false }, AuthRole::User)],
        pcr::pcr_set_auth_value,
    )),
    dec(enc(entry(
        cc::NV_CERTIFY,
        "NV_Certify",
        false,
        &[
            h(HandleKind::Object { allow_null: true }, AuthRole::User),
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
        ],
        attest::nv_certify,
    ))),
    flushed(dec(entry(
        cc::EVENT_SEQUENCE_COMPLETE,
        "EventSequenceComplete",
        true,
        &[
            h(HandleKind::Pcr { allow_null: true }, AuthRole::User),
            h(HandleKind::Transient, AuthRole::User),
        ],
        sequence::event_sequence_complete,
    ))),
    dec(r_handle(entry(
        cc::HASH_SEQUENCE_START,
        "HashSequenceStart",
        false,
        &[],
        sequence::hash_sequence_start,
    ))),
    entry(
        cc::POLICY_PHYSICAL_PRESENCE,
        "PolicyPhysicalPresence",
        false,
        POLICY_SESSION,
        policy::policy_physical_presence,
    ),
    dec(entry(
        cc::POLICY_DUPLICATION_SELECT,
        "PolicyDuplicationSelect",
        false,
        POLICY_SESSION,
        policy::policy_duplication_select,
    )),
    enc(entry(
        cc::POLICY_GET_DIGEST,
        "PolicyGetDigest",
        false,
        POLICY_SESSION,
        policy::policy_get_digest,
    )),
    entry(cc::TEST_PARMS, "TestParms", false, &[], object::test_parms),
    dec(enc(entry(
        cc::COMMIT,
        "Commit",
        false,
        &[h(HandleKind::Object { allow_null: false }, AuthRole::User)],
        ecc2phase::commit_cmd,
    ))),
    entry(
        cc::POLICY_PASSWORD,
        "PolicyPassword",
        false,
        POLICY_SESSION,
        policy::policy_password,
    ),
    dec(enc(entry(
        cc::ZGEN_2PHASE,
        "ZGen_2Phase",
        false,
        &[h(HandleKind::Object { allow_null: false }, AuthRole::User)],
        ecc2phase::zgen_2phase,
    ))),
    enc(entry(
        cc::EC_EPHEMERAL,
        "EC_Ephemeral",
        false,
        &[],
        ecc2phase::ec_ephemeral,
    )),
    entry(
        cc::POLICY_NV_WRITTEN,
        "PolicyNvWritten",
        false,
        POLICY_SESSION,
        policy::policy_nv_written,
    ),
    dec(entry(
        cc::POLICY_TEMPLATE,
        "PolicyTemplate",
        false,
        POLICY_SESSION,
        policy::policy_template,
    )),
    dec(enc(r_handle(entry(
        cc::CREATE_LOADED,
        "CreateLoaded",
        false,
        &[h(HandleKind::Parent, AuthRole::User)],
        create::create_loaded,
    )))),
    entry(
        cc::POLICY_AUTHORIZE_NV,
        "PolicyAuthorizeNV",
        false,
        &[
            h(HandleKind::NvAuth, AuthRole::User),
            h(HandleKind::NvIndex, AuthRole::None),
            h(HandleKind::PolicySession, AuthRole::None),
        ],
        policy::policy_authorize_nv,
    ),
    dec(enc(entry(
        cc::ENCRYPT_DECRYPT2,
        "EncryptDecrypt2",
        false,
        &[h(HandleKind::Transient, AuthRole::User)],
        symmetric::encrypt_decrypt2,
    ))),
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
        // TPM2_FieldUpgradeStart is not implemented.
        assert!(lookup(0x012F).is_none());
        let (i, d) = lookup(cc::PP_COMMANDS).unwrap();
        assert_eq!(d.attributes(i), 0x0240_012D);
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
