//! TCG TPM 2.0 Library (Part 2) constants: structure tags, response codes, command
//! codes, algorithm identifiers, capabilities, properties and handles. Every
//! architected number the engine uses is named here, once.

/// TPM_ST structure tags.
pub mod st {
    pub const RSP_COMMAND: u16 = 0x00C4;
    pub const NO_SESSIONS: u16 = 0x8001;
    pub const SESSIONS: u16 = 0x8002;
    pub const HASHCHECK: u16 = 0x8024;
    pub const AUTH_SECRET: u16 = 0x8029;
    pub const AUTH_SIGNED: u16 = 0x8025;
    pub const CREATION: u16 = 0x8021;
    pub const VERIFIED: u16 = 0x8022;
    pub const ATTEST_CERTIFY: u16 = 0x8017;
    pub const ATTEST_QUOTE: u16 = 0x8018;
    pub const ATTEST_TIME: u16 = 0x8019;
    pub const ATTEST_CREATION: u16 = 0x801A;
    pub const ATTEST_NV: u16 = 0x8014;
    pub const ATTEST_COMMAND_AUDIT: u16 = 0x8015;
    pub const ATTEST_SESSION_AUDIT: u16 = 0x8016;
}

/// TPM_SE session types.
pub mod se {
    pub const HMAC: u8 = 0x00;
    pub const POLICY: u8 = 0x01;
    pub const TRIAL: u8 = 0x03;
}

/// TPM_SU startup/shutdown types.
pub mod su {
    pub const CLEAR: u16 = 0x0000;
    pub const STATE: u16 = 0x0001;
}

/// TPM_RC response codes (format-0, format-1 and warnings) and decorations.
pub mod rc {
    pub const SUCCESS: u32 = 0x000;
    pub const BAD_TAG: u32 = 0x01E;
    pub const VER1: u32 = 0x100;
    pub const INITIALIZE: u32 = VER1;
    pub const FAILURE: u32 = VER1 + 0x001;
    pub const DISABLED: u32 = VER1 + 0x020;
    pub const AUTH_TYPE: u32 = VER1 + 0x024;
    pub const AUTH_MISSING: u32 = VER1 + 0x025;
    pub const PCR: u32 = VER1 + 0x027;
    pub const PCR_CHANGED: u32 = VER1 + 0x028;
    pub const COMMAND_SIZE: u32 = VER1 + 0x042;
    pub const COMMAND_CODE: u32 = VER1 + 0x043;
    pub const NV_SPACE: u32 = VER1 + 0x04B;
    pub const NV_DEFINED: u32 = VER1 + 0x04C;
    pub const AUTHSIZE: u32 = VER1 + 0x044;
    pub const AUTH_CONTEXT: u32 = VER1 + 0x045;
    pub const AUTH_UNAVAILABLE: u32 = VER1 + 0x02F;
    pub const CPHASH: u32 = VER1 + 0x051;
    pub const NO_RESULT: u32 = VER1 + 0x054;
    pub const FMT1: u32 = 0x080;
    pub const ATTRIBUTES: u32 = FMT1 + 0x002;
    pub const HASH: u32 = FMT1 + 0x003;
    pub const VALUE: u32 = FMT1 + 0x004;
    pub const HIERARCHY: u32 = FMT1 + 0x005;
    pub const HANDLE: u32 = FMT1 + 0x00B;
    pub const MODE: u32 = FMT1 + 0x009;
    pub const KEY_SIZE: u32 = FMT1 + 0x007;
    pub const KDF: u32 = FMT1 + 0x00C;
    pub const SCHEME: u32 = FMT1 + 0x012;
    pub const RANGE: u32 = FMT1 + 0x00D;
    pub const SIGNATURE: u32 = FMT1 + 0x01B;
    pub const KEY: u32 = FMT1 + 0x01C;
    pub const TICKET: u32 = FMT1 + 0x020;
    pub const BINDING: u32 = FMT1 + 0x025;
    pub const CURVE: u32 = FMT1 + 0x026;
    pub const ECC_POINT: u32 = FMT1 + 0x027;
    pub const TAG: u32 = FMT1 + 0x017;
    pub const SEQUENCE: u32 = VER1 + 0x003;
    pub const SYMMETRIC: u32 = FMT1 + 0x016;
    pub const POLICY_FAIL: u32 = FMT1 + 0x01D;
    pub const INTEGRITY: u32 = FMT1 + 0x01F;
    pub const EXPIRED: u32 = FMT1 + 0x023;
    pub const POLICY_CC: u32 = FMT1 + 0x024;
    pub const AUTH_FAIL: u32 = FMT1 + 0x00E;
    pub const NONCE: u32 = FMT1 + 0x00F;
    pub const SIZE: u32 = FMT1 + 0x015;
    pub const TYPE: u32 = FMT1 + 0x00A;
    pub const INSUFFICIENT: u32 = FMT1 + 0x01A;
    pub const RESERVED_BITS: u32 = FMT1 + 0x021;
    pub const BAD_AUTH: u32 = FMT1 + 0x022;
    pub const WARN: u32 = 0x900;
    pub const LOCALITY: u32 = WARN + 0x007;
    pub const OBJECT_MEMORY: u32 = WARN + 0x002;
    pub const SESSION_MEMORY: u32 = WARN + 0x003;
    pub const SESSION_HANDLES: u32 = WARN + 0x005;
    pub const REFERENCE_H0: u32 = WARN + 0x010;

    pub const REFERENCE_S0: u32 = WARN + 0x018;
    pub const LOCKOUT: u32 = WARN + 0x021;
    /// NV written too often (TPM 2.0 Part 2, TPM_RC_NV_RATE).
    pub const NV_RATE: u32 = WARN + 0x020;
    pub const NV_UNAVAILABLE: u32 = WARN + 0x023;
    /// Is `code` a format-1 code (one that carries a handle/parameter/session number)?
    pub const fn is_fmt1(code: u32) -> bool {
        code & FMT1 != 0
    }
    /// Adds `decoration` to a format-1 code; other codes are returned unchanged
    /// (the reference implementation's RcSafeAddToResult).
    pub const fn safe_add(code: u32, decoration: u32) -> u32 {
        if is_fmt1(code) {
            code + decoration
        } else {
            code
        }
    }
    /// Decoration: the error is about a handle (format-1).
    pub const H: u32 = 0x000;
    /// Decoration: the error is about a parameter (format-1).
    pub const P: u32 = 0x040;
    /// Decoration: the error is about a session (format-1).
    pub const S: u32 = 0x800;
    /// The unit of the handle/parameter/session number field.
    pub const N1: u32 = 0x100;
}

/// TPM_CC command codes of the commands this TPM implements (and a few it names).
pub mod cc {
    pub const EVICT_CONTROL: u32 = 0x0120;
    pub const NV_UNDEFINE_SPACE: u32 = 0x0122;
    pub const NV_DEFINE_SPACE: u32 = 0x012A;
    pub const NV_INCREMENT: u32 = 0x0134;
    pub const NV_SET_BITS: u32 = 0x0135;
    pub const NV_EXTEND: u32 = 0x0136;
    pub const NV_WRITE: u32 = 0x0137;
    pub const NV_WRITE_LOCK: u32 = 0x0138;
    pub const NV_READ: u32 = 0x014E;
    pub const NV_READ_LOCK: u32 = 0x014F;
    pub const NV_READ_PUBLIC: u32 = 0x0169;
    pub const HIERARCHY_CONTROL: u32 = 0x0121;
    pub const CLEAR: u32 = 0x0126;
    pub const CLEAR_CONTROL: u32 = 0x0127;
    pub const HIERARCHY_CHANGE_AUTH: u32 = 0x0129;
    pub const SET_PRIMARY_POLICY: u32 = 0x012E;
    pub const POLICY_SECRET: u32 = 0x0151;
    pub const ECDH_ZGEN: u32 = 0x0154;
    pub const LOAD: u32 = 0x0157;
    pub const QUOTE: u32 = 0x0158;
    pub const RSA_DECRYPT: u32 = 0x0159;
    pub const RSA_ENCRYPT: u32 = 0x0174;
    pub const UNSEAL: u32 = 0x015E;
    pub const HMAC: u32 = 0x0155;
    pub const HMAC_START: u32 = 0x015B;
    pub const SEQUENCE_UPDATE: u32 = 0x015C;
    pub const SIGN: u32 = 0x015D;
    pub const CONTEXT_LOAD: u32 = 0x0161;
    pub const CONTEXT_SAVE: u32 = 0x0162;
    pub const LOAD_EXTERNAL: u32 = 0x0167;
    pub const POLICY_AUTHORIZE: u32 = 0x016A;
    pub const POLICY_AUTH_VALUE: u32 = 0x016B;
    pub const POLICY_COMMAND_CODE: u32 = 0x016C;
    pub const POLICY_CP_HASH: u32 = 0x016E;
    pub const POLICY_LOCALITY: u32 = 0x016F;
    pub const POLICY_OR: u32 = 0x0171;
    pub const READ_PUBLIC: u32 = 0x0173;
    pub const START_AUTH_SESSION: u32 = 0x0176;
    pub const VERIFY_SIGNATURE: u32 = 0x0177;
    pub const POLICY_PCR: u32 = 0x017F;
    pub const POLICY_RESTART: u32 = 0x0180;
    pub const EVENT_SEQUENCE_COMPLETE: u32 = 0x0185;
    pub const HASH_SEQUENCE_START: u32 = 0x0186;
    pub const POLICY_GET_DIGEST: u32 = 0x0189;
    pub const TEST_PARMS: u32 = 0x018A;
    pub const ENCRYPT_DECRYPT2: u32 = 0x0193;
    pub const POLICY_PASSWORD: u32 = 0x018C;
    pub const PCR_ALLOCATE: u32 = 0x012B;
    pub const CREATE_PRIMARY: u32 = 0x0131;
    pub const NV_GLOBAL_WRITE_LOCK: u32 = 0x0132;
    pub const CREATE: u32 = 0x0153;
    pub const SEQUENCE_COMPLETE: u32 = 0x013E;
    pub const DICTIONARY_ATTACK_LOCK_RESET: u32 = 0x0139;
    pub const DICTIONARY_ATTACK_PARAMETERS: u32 = 0x013A;
    pub const PCR_EVENT: u32 = 0x013C;
    pub const PCR_RESET: u32 = 0x013D;
    pub const INCREMENTAL_SELF_TEST: u32 = 0x0142;
    pub const SELF_TEST: u32 = 0x0143;
    pub const STARTUP: u32 = 0x0144;
    pub const SHUTDOWN: u32 = 0x0145;
    pub const STIR_RANDOM: u32 = 0x0146;
    pub const ECDH_KEY_GEN: u32 = 0x0163;
    pub const ENCRYPT_DECRYPT: u32 = 0x0164;
    pub const FLUSH_CONTEXT: u32 = 0x0165;
    pub const ECC_PARAMETERS: u32 = 0x0178;
    pub const GET_CAPABILITY: u32 = 0x017A;
    pub const GET_RANDOM: u32 = 0x017B;
    pub const GET_TEST_RESULT: u32 = 0x017C;
    pub const HASH: u32 = 0x017D;
    pub const PCR_READ: u32 = 0x017E;
    pub const READ_CLOCK: u32 = 0x0181;
    pub const PCR_EXTEND: u32 = 0x0182;
    pub const CREATE_LOADED: u32 = 0x0191;
    pub const NV_CHANGE_AUTH: u32 = 0x013B;
    pub const ACTIVATE_CREDENTIAL: u32 = 0x0147;
    pub const CERTIFY: u32 = 0x0148;
    pub const CERTIFY_CREATION: u32 = 0x014A;
    pub const GET_TIME: u32 = 0x014C;
    pub const OBJECT_CHANGE_AUTH: u32 = 0x0150;
    pub const MAKE_CREDENTIAL: u32 = 0x0168;
    pub const POLICY_NV: u32 = 0x0149;
    pub const NV_UNDEFINE_SPACE_SPECIAL: u32 = 0x011F;
    pub const CHANGE_EPS: u32 = 0x0124;
    pub const CHANGE_PPS: u32 = 0x0125;
    pub const CLOCK_SET: u32 = 0x0128;
    pub const NV_CERTIFY: u32 = 0x0184;
    pub const DUPLICATE: u32 = 0x014B;
    pub const IMPORT: u32 = 0x0156;
    pub const REWRAP: u32 = 0x0152;
    pub const POLICY_NAME_HASH: u32 = 0x0170;
    pub const POLICY_PHYSICAL_PRESENCE: u32 = 0x0187;
    pub const POLICY_DUPLICATION_SELECT: u32 = 0x0188;
    pub const POLICY_NV_WRITTEN: u32 = 0x018F;
    pub const POLICY_TEMPLATE: u32 = 0x0190;
    pub const POLICY_SIGNED: u32 = 0x0160;
    pub const POLICY_COUNTER_TIMER: u32 = 0x016D;
    pub const POLICY_TICKET: u32 = 0x0172;
    pub const POLICY_AUTHORIZE_NV: u32 = 0x0192;
    pub const PCR_SET_AUTH_POLICY: u32 = 0x012C;
    pub const PP_COMMANDS: u32 = 0x012D;
    pub const CLOCK_RATE_ADJUST: u32 = 0x0130;
    pub const GET_COMMAND_AUDIT_DIGEST: u32 = 0x0133;
    pub const SET_ALGORITHM_SET: u32 = 0x013F;
    pub const SET_COMMAND_CODE_AUDIT_STATUS: u32 = 0x0140;
    pub const GET_SESSION_AUDIT_DIGEST: u32 = 0x014D;
    pub const PCR_SET_AUTH_VALUE: u32 = 0x0183;
    pub const COMMIT: u32 = 0x018B;
    pub const ZGEN_2PHASE: u32 = 0x018D;
    pub const EC_EPHEMERAL: u32 = 0x018E;
    /// Bit 29 of a command code: vendor-specific command.
    pub const VENDOR_BIT: u32 = 1 << 29;
}

/// TPMA_CC bit fields.
pub mod tpma_cc {
    pub const NV: u32 = 1 << 22;
    pub const EXTENSIVE: u32 = 1 << 23;
    pub const FLUSHED: u32 = 1 << 24;
    pub const C_HANDLES_SHIFT: u32 = 25;
    pub const R_HANDLE: u32 = 1 << 28;
    pub const V: u32 = 1 << 29;
}

/// TPM_ALG_ID values and TPMA_ALGORITHM bits.
pub mod alg {
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const XOR: u16 = 0x000A;
    pub const CFB: u16 = 0x0043;
    pub const HMAC: u16 = 0x0005;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const ATTR_ASYMMETRIC: u32 = 1 << 0;
    pub const ATTR_SYMMETRIC: u32 = 1 << 1;
    pub const ATTR_OBJECT: u32 = 1 << 3;
    pub const ATTR_HASH: u32 = 1 << 2;
    pub const ATTR_ENCRYPTING: u32 = 1 << 9;
    pub const ATTR_SIGNING: u32 = 1 << 8;
    pub const ATTR_METHOD: u32 = 1 << 10;
}

/// TPM_CAP capability selectors.
pub mod cap {
    pub const ALGS: u32 = 0;
    pub const HANDLES: u32 = 1;
    pub const COMMANDS: u32 = 2;
    pub const PP_COMMANDS: u32 = 3;
    pub const AUDIT_COMMANDS: u32 = 4;
    pub const PCRS: u32 = 5;
    pub const TPM_PROPERTIES: u32 = 6;
    pub const PCR_PROPERTIES: u32 = 7;
    pub const ECC_CURVES: u32 = 8;
    /// MAX_CAP_BUFFER: bytes of capability data in one response.
    pub const MAX_CAP_BUFFER: u32 = 1024;
    /// MAX_CAP_DATA: MAX_CAP_BUFFER less the TPM_CAP and count fields.
    pub const MAX_CAP_DATA: u32 = MAX_CAP_BUFFER - 8;
    pub const MAX_CAP_ALGS: u32 = MAX_CAP_DATA / 6;
    pub const MAX_CAP_HANDLES: u32 = MAX_CAP_DATA / 4;
    pub const MAX_CAP_CC: u32 = MAX_CAP_DATA / 4;
    pub const MAX_TPM_PROPERTIES: u32 = MAX_CAP_DATA / 8;
    pub const MAX_PCR_PROPERTIES: u32 = MAX_CAP_DATA / 5;
    pub const MAX_ECC_CURVES: u32 = MAX_CAP_DATA / 2;
}

/// TPM_PT property tags.
pub mod pt {
    pub const FIXED: u32 = 0x100;
    pub const FAMILY_INDICATOR: u32 = FIXED;
    pub const LEVEL: u32 = FIXED + 1;
    pub const REVISION: u32 = FIXED + 2;
    pub const DAY_OF_YEAR: u32 = FIXED + 3;
    pub const YEAR: u32 = FIXED + 4;
    pub const MANUFACTURER: u32 = FIXED + 5;
    pub const VENDOR_STRING_1: u32 = FIXED + 6;
    pub const VENDOR_STRING_2: u32 = FIXED + 7;
    pub const VENDOR_STRING_3: u32 = FIXED + 8;
    pub const VENDOR_STRING_4: u32 = FIXED + 9;
    pub const VENDOR_TPM_TYPE: u32 = FIXED + 10;
    pub const FIRMWARE_VERSION_1: u32 = FIXED + 11;
    pub const FIRMWARE_VERSION_2: u32 = FIXED + 12;
    pub const INPUT_BUFFER: u32 = FIXED + 13;
    pub const HR_TRANSIENT_MIN: u32 = FIXED + 14;
    pub const HR_PERSISTENT_MIN: u32 = FIXED + 15;
    pub const HR_LOADED_MIN: u32 = FIXED + 16;
    pub const ACTIVE_SESSIONS_MAX: u32 = FIXED + 17;
    pub const PCR_COUNT: u32 = FIXED + 18;
    pub const PCR_SELECT_MIN: u32 = FIXED + 19;
    pub const CONTEXT_GAP_MAX: u32 = FIXED + 20;
    pub const NV_COUNTERS_MAX: u32 = FIXED + 22;
    pub const NV_INDEX_MAX: u32 = FIXED + 23;
    pub const MEMORY: u32 = FIXED + 24;
    pub const CLOCK_UPDATE: u32 = FIXED + 25;
    pub const CONTEXT_HASH: u32 = FIXED + 26;
    pub const CONTEXT_SYM: u32 = FIXED + 27;
    pub const CONTEXT_SYM_SIZE: u32 = FIXED + 28;
    pub const ORDERLY_COUNT: u32 = FIXED + 29;
    pub const MAX_COMMAND_SIZE: u32 = FIXED + 30;
    pub const MAX_RESPONSE_SIZE: u32 = FIXED + 31;
    pub const MAX_DIGEST: u32 = FIXED + 32;
    pub const MAX_OBJECT_CONTEXT: u32 = FIXED + 33;
    pub const MAX_SESSION_CONTEXT: u32 = FIXED + 34;
    pub const PS_FAMILY_INDICATOR: u32 = FIXED + 35;
    pub const PS_LEVEL: u32 = FIXED + 36;
    pub const PS_REVISION: u32 = FIXED + 37;
    pub const PS_DAY_OF_YEAR: u32 = FIXED + 38;
    pub const PS_YEAR: u32 = FIXED + 39;
    pub const SPLIT_MAX: u32 = FIXED + 40;
    pub const TOTAL_COMMANDS: u32 = FIXED + 41;
    pub const LIBRARY_COMMANDS: u32 = FIXED + 42;
    pub const VENDOR_COMMANDS: u32 = FIXED + 43;
    pub const NV_BUFFER_MAX: u32 = FIXED + 44;
    pub const MODES: u32 = FIXED + 45;
    pub const MAX_CAP_BUFFER: u32 = FIXED + 46;
    pub const VAR: u32 = 0x200;
    pub const PERMANENT: u32 = VAR;
    pub const STARTUP_CLEAR: u32 = VAR + 1;
    pub const HR_NV_INDEX: u32 = VAR + 2;
    pub const HR_LOADED: u32 = VAR + 3;
    pub const HR_LOADED_AVAIL: u32 = VAR + 4;
    pub const HR_ACTIVE: u32 = VAR + 5;
    pub const HR_ACTIVE_AVAIL: u32 = VAR + 6;
    pub const HR_TRANSIENT_AVAIL: u32 = VAR + 7;
    pub const HR_PERSISTENT: u32 = VAR + 8;
    pub const HR_PERSISTENT_AVAIL: u32 = VAR + 9;
    pub const NV_COUNTERS: u32 = VAR + 10;
    pub const NV_COUNTERS_AVAIL: u32 = VAR + 11;
    pub const ALGORITHM_SET: u32 = VAR + 12;
    pub const LOADED_CURVES: u32 = VAR + 13;
    pub const LOCKOUT_COUNTER: u32 = VAR + 14;
    pub const MAX_AUTH_FAIL: u32 = VAR + 15;
    pub const LOCKOUT_INTERVAL: u32 = VAR + 16;
    pub const LOCKOUT_RECOVERY: u32 = VAR + 17;
    pub const NV_WRITE_RECOVERY: u32 = VAR + 18;
    pub const AUDIT_COUNTER_0: u32 = VAR + 19;
    pub const AUDIT_COUNTER_1: u32 = VAR + 20;
}

/// TPMA_PERMANENT and TPMA_STARTUP_CLEAR bits.
pub mod attr {
    pub const PERM_OWNER_AUTH_SET: u32 = 1 << 0;
    pub const PERM_ENDORSEMENT_AUTH_SET: u32 = 1 << 1;
    pub const PERM_LOCKOUT_AUTH_SET: u32 = 1 << 2;
    pub const PERM_DISABLE_CLEAR: u32 = 1 << 8;
    pub const PERM_IN_LOCKOUT: u32 = 1 << 9;
    pub const PERM_TPM_GENERATED_EPS: u32 = 1 << 10;
    pub const SC_PH_ENABLE: u32 = 1 << 0;
    pub const SC_SH_ENABLE: u32 = 1 << 1;
    pub const SC_EH_ENABLE: u32 = 1 << 2;
    pub const SC_PH_ENABLE_NV: u32 = 1 << 3;
    pub const SC_ORDERLY: u32 = 1 << 31;
}

/// TPMA_SESSION bits.
pub mod session_attr {
    pub const CONTINUE_SESSION: u8 = 1 << 0;
    pub const AUDIT_EXCLUSIVE: u8 = 1 << 1;
    pub const AUDIT_RESET: u8 = 1 << 2;
    pub const RESERVED: u8 = 0x18;
    pub const DECRYPT: u8 = 1 << 5;
    pub const ENCRYPT: u8 = 1 << 6;
    pub const AUDIT: u8 = 1 << 7;
}

/// Handles: TPM_HT types (the top byte) and TPM_RH/TPM_RS permanent handles.
pub mod handle {
    pub const HT_PCR: u8 = 0x00;
    pub const HT_NV_INDEX: u8 = 0x01;
    pub const HT_HMAC_SESSION: u8 = 0x02;
    pub const HT_POLICY_SESSION: u8 = 0x03;
    pub const HT_PERMANENT: u8 = 0x40;
    pub const HT_TRANSIENT: u8 = 0x80;
    pub const HT_PERSISTENT: u8 = 0x81;
    pub const OWNER: u32 = 0x4000_0001;
    pub const NULL: u32 = 0x4000_0007;
    pub const RS_PW: u32 = 0x4000_0009;
    pub const LOCKOUT: u32 = 0x4000_000A;
    pub const ENDORSEMENT: u32 = 0x4000_000B;
    pub const PLATFORM: u32 = 0x4000_000C;
    pub const PLATFORM_NV: u32 = 0x4000_000D;
    /// First savedHandle of an object context (0x80000000..=0x80000002).
    pub const TRANSIENT_SAVED: u32 = 0x8000_0000;
    /// The permanent handles this TPM implements, in ascending order.
    pub const PERMANENT_IMPLEMENTED: [u32; 7] = [
        OWNER,
        NULL,
        RS_PW,
        LOCKOUT,
        ENDORSEMENT,
        PLATFORM,
        PLATFORM_NV,
    ];
    /// Type of a handle (its most significant byte).
    pub const fn ht(h: u32) -> u8 {
        (h >> 24) as u8
    }
}

/// Implementation limits of this TPM.
pub mod limits {
    /// MAX_ALG_LIST_SIZE: entries of a TPML_ALG.
    pub const MAX_ALG_LIST_SIZE: u32 = 64;
    /// Number of PCRs (PC Client: 24).
    pub const PCR_COUNT: usize = 24;
    /// Bytes of a PCR select bitmap (PCR_SELECT_MIN = PCR_SELECT_MAX).
    pub const PCR_SELECT: usize = 3;
    /// Largest digest of an implemented hash (SHA-512).
    pub const MAX_DIGEST: usize = 64;
    /// Largest hierarchy authValue: the digest of the context integrity hash
    /// (TPM_PT_CONTEXT_HASH, SHA-384).
    pub const MAX_HIERARCHY_AUTH: usize = 48;
    /// sizeof(TPMU_HA): the largest TPM2B_DIGEST/NONCE/AUTH the unmarshaller accepts.
    pub const TPMU_HA_SIZE: usize = 64;
    /// MAX_DIGEST_BUFFER / MAX_EVENT_DATA: TPM2B_MAX_BUFFER, TPM2B_EVENT limit.
    pub const MAX_BUFFER: usize = 1024;
    /// TPM2B_SENSITIVE_DATA limit (MAX_SYM_DATA).
    pub const MAX_SYM_DATA: usize = 128;
    /// MAX_COMMAND_SIZE / MAX_RESPONSE_SIZE.
    pub const MAX_COMMAND_SIZE: usize = 4096;
    pub const MAX_RESPONSE_SIZE: usize = 4096;
    /// Sessions one command may carry.
    pub const MAX_SESSION_NUM: usize = 3;
    /// Digests a TPML_DIGEST in PCR_Read carries.
    pub const PCR_READ_MAX_DIGESTS: usize = 8;
    /// log2 of the interval (ms) at which the clock is written to NV
    /// (TPM_PT_CLOCK_UPDATE = 2^22 ms, about 70 minutes).
    pub const CLOCK_UPDATE_SHIFT: u32 = 22;
    /// Size of a seed or proof value.
    pub const SEED_SIZE: usize = 48;
    /// Sessions that may exist (loaded or saved) at once (MAX_ACTIVE_SESSIONS).
    pub const MAX_ACTIVE_SESSIONS: usize = 64;
    /// Sessions that may be loaded at once (MAX_LOADED_SESSIONS).
    pub const MAX_LOADED_SESSIONS: usize = 3;
    /// Transient objects that may be loaded at once (MAX_LOADED_OBJECTS).
    pub const MAX_LOADED_OBJECTS: usize = 3;
    /// Persistent objects the NV image holds (TPM_PT_HR_PERSISTENT_MIN).
    pub const MAX_PERSISTENT_OBJECTS: usize = 7;
    /// Bytes of NV index data the image holds in all.
    pub const NV_DATA_BUDGET: usize = 16 * 1024;
    /// Failures of DA-protected authorizations before lockout (TPM_PT_MAX_AUTH_FAIL).
    pub const MAX_AUTH_FAIL: u32 = 3;
    /// Milliseconds after which one failure is forgiven (TPM_PT_LOCKOUT_INTERVAL).
    pub const LOCKOUT_INTERVAL_MS: u64 = 1000 * 1000;
    /// Default seconds before lockoutAuth may be retried after a failure.
    pub const LOCKOUT_RECOVERY_S: u32 = 1000;
    /// Smallest nonceCaller StartAuthSession accepts.
    pub const MIN_NONCE: usize = 16;
    /// Entries of a TPML_DIGEST (PolicyOR takes 2..=8).
    pub const MAX_DIGEST_LIST: usize = 8;
    /// Command header: tag, commandSize, commandCode.
    pub const HEADER_SIZE: usize = 10;
    /// Smallest password session: handle, nonce size, attributes, hmac size.
    pub const MIN_SESSION_SIZE: u32 = 9;
}

/// TPM_GENERATED_VALUE: the prefix of TPM-generated structures.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
