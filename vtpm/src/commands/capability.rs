//! Part 3 §30.2: TPM2_GetCapability — algorithms, handles, commands (from the
//! dispatch table), PCR allocation, fixed and variable TPM properties, PCR
//! properties and ECC curves.

use crate::defs::limits::PCR_COUNT;
use crate::defs::{alg, attr, cap, handle, limits, pt, rc};
use crate::dispatch::COMMANDS;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::pcr::{self, PCR_ATTRS};
use crate::public::ids;
use alloc::vec::Vec;

/// Identity reported through TPM_PT_MANUFACTURER and the vendor strings.
pub const MANUFACTURER: [u8; 4] = *b"RAYO";
pub const VENDOR_STRINGS: [[u8; 4]; 4] = [*b"RayO", *b"S vT", *b"PM\0\0", [0; 4]];
/// Firmware version (major.minor in VERSION_1, build in VERSION_2).
pub const FIRMWARE_VERSION: (u32, u32) = (0x0001_0000, 0);
/// The Library specification revision implemented (1.59 → 159).
pub const SPEC_REVISION: u32 = 159;
pub const SPEC_DAY_OF_YEAR: u32 = 312;
pub const SPEC_YEAR: u32 = 2019;

/// Implemented algorithms and their TPMA_ALGORITHM (libtpms's attributes for
/// the same algorithm), ascending by ID. An algorithm is listed when a command
/// accepts it where its kind is selectable. The KDF schemes (MGF1,
/// KDF1_SP800_56A, KDF2, KDF1_SP800_108) are selectable only in TPM2_TestParms's
/// ECC parameters, as in libtpms: an ECC key naming a KDF is refused at
/// creation (TPM_RC_KDF) by both, so no command computes KDF2; KDFa
/// (KDF1_SP800_108), KDFe (KDF1_SP800_56A) and MGF1 (OAEP, PSS) run inside
/// the engine.
const ALGORITHMS: [(u16, u32); 33] = [
    (ids::RSA, alg::ATTR_ASYMMETRIC | alg::ATTR_OBJECT),
    (ids::TDES, alg::ATTR_SYMMETRIC),
    (alg::SHA1, alg::ATTR_HASH),
    (alg::HMAC, alg::ATTR_HASH | alg::ATTR_SIGNING),
    (alg::AES, alg::ATTR_SYMMETRIC),
    (ids::MGF1, alg::ATTR_HASH | alg::ATTR_METHOD),
    (
        ids::KEYEDHASH,
        alg::ATTR_HASH | alg::ATTR_OBJECT | alg::ATTR_SIGNING | alg::ATTR_ENCRYPTING,
    ),
    (alg::XOR, alg::ATTR_SYMMETRIC | alg::ATTR_HASH),
    (alg::SHA256, alg::ATTR_HASH),
    (alg::SHA384, alg::ATTR_HASH),
    (alg::SHA512, alg::ATTR_HASH),
    (ids::RSASSA, alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING),
    (ids::RSAES, alg::ATTR_ASYMMETRIC | alg::ATTR_ENCRYPTING),
    (ids::RSAPSS, alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING),
    (ids::OAEP, alg::ATTR_ASYMMETRIC | alg::ATTR_ENCRYPTING),
    (ids::ECDSA, alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING),
    (ids::ECDH, alg::ATTR_ASYMMETRIC | alg::ATTR_METHOD),
    (ids::ECDAA, alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING),
    (
        ids::SM2,
        alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING | alg::ATTR_METHOD,
    ),
    (ids::ECSCHNORR, alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING),
    (ids::ECMQV, alg::ATTR_ASYMMETRIC | alg::ATTR_METHOD),
    (alg::KDF1_SP800_56A, alg::ATTR_HASH | alg::ATTR_METHOD),
    (ids::KDF2, alg::ATTR_HASH | alg::ATTR_METHOD),
    (ids::KDF1_SP800_108, alg::ATTR_HASH | alg::ATTR_METHOD),
    (ids::ECC, alg::ATTR_ASYMMETRIC | alg::ATTR_OBJECT),
    (ids::SYMCIPHER, alg::ATTR_OBJECT),
    (ids::CAMELLIA, alg::ATTR_SYMMETRIC),
    (ids::CMAC, alg::ATTR_SYMMETRIC | alg::ATTR_SIGNING),
    (ids::CTR, alg::ATTR_SYMMETRIC | alg::ATTR_ENCRYPTING),
    (ids::OFB, alg::ATTR_SYMMETRIC | alg::ATTR_ENCRYPTING),
    (ids::CBC, alg::ATTR_SYMMETRIC | alg::ATTR_ENCRYPTING),
    (alg::CFB, alg::ATTR_SYMMETRIC | alg::ATTR_ENCRYPTING),
    (ids::ECB, alg::ATTR_SYMMETRIC | alg::ATTR_ENCRYPTING),
];

/// The implemented ECC curves (TPM_CAP_ECC_CURVES), ascending.
const ECC_CURVES: [u16; 8] = [
    ids::NIST_P192,
    ids::NIST_P224,
    ids::NIST_P256,
    ids::NIST_P384,
    ids::NIST_P521,
    ids::BN_P256,
    ids::BN_P638,
    ids::SM2_P256,
];

fn four_cc(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

/// All TPM properties, ascending by tag.
fn properties(tpm: &Tpm) -> Vec<(u32, u32)> {
    let mut perm = attr::PERM_TPM_GENERATED_EPS;
    if !tpm.p.owner_auth.as_bytes().is_empty() {
        perm |= attr::PERM_OWNER_AUTH_SET;
    }
    if !tpm.p.endorsement_auth.as_bytes().is_empty() {
        perm |= attr::PERM_ENDORSEMENT_AUTH_SET;
    }
    if !tpm.p.lockout_auth.as_bytes().is_empty() {
        perm |= attr::PERM_LOCKOUT_AUTH_SET;
    }
    if tpm.p.disable_clear {
        perm |= attr::PERM_DISABLE_CLEAR;
    }
    if tpm.p.da.recovery_time != 0 && tpm.v.failed_tries >= tpm.p.da.max_tries {
        perm |= attr::PERM_IN_LOCKOUT;
    }
    let mut sc = 0;
    for (on, bit) in [
        (tpm.v.ph_enable, attr::SC_PH_ENABLE),
        (tpm.v.sh_enable, attr::SC_SH_ENABLE),
        (tpm.v.eh_enable, attr::SC_EH_ENABLE),
        (tpm.v.ph_enable_nv, attr::SC_PH_ENABLE_NV),
        (tpm.p.orderly != crate::nv::Orderly::None, attr::SC_ORDERLY),
    ] {
        if on {
            sc |= bit;
        }
    }
    let n_cmds = COMMANDS.len() as u32;
    let loaded = tpm.v.sessions.loaded_count() as u32;
    let active = loaded + tpm.v.sessions.saved_count() as u32;
    alloc::vec![
        (pt::FAMILY_INDICATOR, four_cc(*b"2.0\0")),
        (pt::LEVEL, 0),
        (pt::REVISION, SPEC_REVISION),
        (pt::DAY_OF_YEAR, SPEC_DAY_OF_YEAR),
        (pt::YEAR, SPEC_YEAR),
        (pt::MANUFACTURER, four_cc(MANUFACTURER)),
        (pt::VENDOR_STRING_1, four_cc(VENDOR_STRINGS[0])),
        (pt::VENDOR_STRING_2, four_cc(VENDOR_STRINGS[1])),
        (pt::VENDOR_STRING_3, four_cc(VENDOR_STRINGS[2])),
        (pt::VENDOR_STRING_4, four_cc(VENDOR_STRINGS[3])),
        (pt::VENDOR_TPM_TYPE, 1),
        (pt::FIRMWARE_VERSION_1, FIRMWARE_VERSION.0),
        (pt::FIRMWARE_VERSION_2, FIRMWARE_VERSION.1),
        (pt::INPUT_BUFFER, limits::MAX_BUFFER as u32),
        (pt::HR_TRANSIENT_MIN, limits::MAX_LOADED_OBJECTS as u32),
        (pt::HR_PERSISTENT_MIN, limits::MAX_PERSISTENT_OBJECTS as u32),
        (pt::HR_LOADED_MIN, 3),
        (pt::ACTIVE_SESSIONS_MAX, limits::MAX_ACTIVE_SESSIONS as u32),
        (pt::PCR_COUNT, PCR_COUNT as u32),
        (pt::PCR_SELECT_MIN, limits::PCR_SELECT as u32),
        (pt::CONTEXT_GAP_MAX, 0xFFFF),
        (pt::NV_COUNTERS_MAX, 0),
        (pt::NV_INDEX_MAX, 2048),
        (pt::MEMORY, 0),
        (pt::CLOCK_UPDATE, 1 << limits::CLOCK_UPDATE_SHIFT),
        (pt::CONTEXT_HASH, u32::from(alg::SHA384)),
        (pt::CONTEXT_SYM, 0x0006),
        (pt::CONTEXT_SYM_SIZE, 256),
        (pt::ORDERLY_COUNT, 255),
        (pt::MAX_COMMAND_SIZE, limits::MAX_COMMAND_SIZE as u32),
        (pt::MAX_RESPONSE_SIZE, limits::MAX_RESPONSE_SIZE as u32),
        (pt::MAX_DIGEST, limits::MAX_DIGEST as u32),
        (pt::MAX_OBJECT_CONTEXT, 0),
        (pt::MAX_SESSION_CONTEXT, 0),
        (pt::PS_FAMILY_INDICATOR, 1),
        (pt::PS_LEVEL, 0),
        (pt::PS_REVISION, 0x105),
        (pt::PS_DAY_OF_YEAR, 0),
        (pt::PS_YEAR, 0),
        (pt::SPLIT_MAX, 128),
        (pt::TOTAL_COMMANDS, n_cmds),
        (pt::LIBRARY_COMMANDS, n_cmds),
        (pt::VENDOR_COMMANDS, 0),
        (pt::NV_BUFFER_MAX, limits::MAX_BUFFER as u32),
        (pt::MODES, 0),
        (pt::MAX_CAP_BUFFER, cap::MAX_CAP_BUFFER),
        (pt::PERMANENT, perm),
        (pt::STARTUP_CLEAR, sc),
        (pt::HR_NV_INDEX, tpm.p.nv_indices.len() as u32),
        (pt::HR_LOADED, loaded),
        (
            pt::HR_LOADED_AVAIL,
            limits::MAX_LOADED_SESSIONS as u32 - loaded
        ),
        (pt::HR_ACTIVE, active),
        (
            pt::HR_ACTIVE_AVAIL,
            limits::MAX_ACTIVE_SESSIONS as u32 - active
        ),
        (
            pt::HR_TRANSIENT_AVAIL,
            (limits::MAX_LOADED_OBJECTS - tpm.v.objects.count()) as u32,
        ),
        (pt::HR_PERSISTENT, tpm.p.persistent_objects.len() as u32),
        (
            pt::HR_PERSISTENT_AVAIL,
            (limits::MAX_PERSISTENT_OBJECTS - tpm.p.persistent_objects.len()) as u32,
        ),
        (pt::NV_COUNTERS, 0),
        (pt::NV_COUNTERS_AVAIL, 0),
        (pt::ALGORITHM_SET, tpm.p.algorithm_set),
        (pt::LOADED_CURVES, 0),
        (pt::LOCKOUT_COUNTER, tpm.v.failed_tries),
        (pt::MAX_AUTH_FAIL, tpm.p.da.max_tries),
        (pt::LOCKOUT_INTERVAL, tpm.p.da.recovery_time),
        (pt::LOCKOUT_RECOVERY, tpm.p.da.lockout_recovery),
        (pt::NV_WRITE_RECOVERY, tpm.nv_rate_recovery_ms()),
        (pt::AUDIT_COUNTER_0, (tpm.p.audit.counter >> 32) as u32),
        (pt::AUDIT_COUNTER_1, tpm.p.audit.counter as u32),
    ]
}

/// Takes the entries at or above `from` (by key), at most `count`; returns them
/// and whether more remain.
fn window<T: Copy>(all: &[T], key: impl Fn(&T) -> u32, from: u32, count: u32) -> (Vec<T>, bool) {
    let rest: Vec<T> = all.iter().copied().filter(|e| key(e) >= from).collect();
    let n = (count as usize).min(rest.len());
    (rest[..n].to_vec(), rest.len() > n)
}

pub fn get_capability(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let capability = cmd.params.u32().p(1)?;
    let property = cmd.params.u32().p(2)?;
    let count = cmd.params.u32().p(3)?;
    cmd.finish()?;
    let mut body = crate::marshal::Writer::new();
    let more = match capability {
        cap::ALGS => {
            let (v, more) = window(
                &ALGORITHMS,
                |e| u32::from(e.0),
                property,
                count.min(cap::MAX_CAP_ALGS),
            );
            body.u32(v.len() as u32);
            for (id, a) in v {
                body.u16(id).u32(a);
            }
            more
        }
        cap::HANDLES => {
            let list: Vec<u32> = match handle::ht(property) {
                handle::HT_PCR => (0..PCR_COUNT as u32).collect(),
                handle::HT_PERMANENT => handle::PERMANENT_IMPLEMENTED.to_vec(),
                // TPM_HT_LOADED_SESSION and TPM_HT_SAVED_SESSION.
                handle::HT_HMAC_SESSION => tpm.v.sessions.handles(false),
                handle::HT_POLICY_SESSION => tpm.v.sessions.handles(true),
                handle::HT_TRANSIENT => tpm.v.objects.handles(),
                handle::HT_PERSISTENT => tpm.v.objects.persistent_handles(),
                handle::HT_NV_INDEX => tpm.p.nv_indices.iter().map(|i| i.public.index).collect(),
                _ => return Err(rc::HANDLE + rc::P + 2 * rc::N1),
            };
            // Sessions of both types share one index space: order and start
            // by the index.
            let session = matches!(
                handle::ht(property),
                handle::HT_HMAC_SESSION | handle::HT_POLICY_SESSION
            );
            let key = |h: &u32| if session { *h & 0x00FF_FFFF } else { *h };
            let end_of_type = (property & 0xFF00_0000) | 0x00FF_FFFF;
            let mut list: Vec<u32> = list
                .into_iter()
                .filter(|h| key(h) <= key(&end_of_type))
                .collect();
            list.sort_unstable_by_key(key);
            let (v, more) = window(&list, key, key(&property), count.min(cap::MAX_CAP_HANDLES));
            body.u32(v.len() as u32);
            for h in v {
                body.u32(h);
            }
            more
        }
        cap::COMMANDS => {
            let attrs: Vec<u32> = COMMANDS
                .iter()
                .enumerate()
                .map(|(i, d)| d.attributes(i))
                .collect();
            let (v, more) = window(
                &attrs,
                |a| a & 0xFFFF,
                property & 0xFFFF,
                count.min(cap::MAX_CAP_CC),
            );
            body.u32(v.len() as u32);
            for a in v {
                body.u32(a);
            }
            more
        }
        cap::PP_COMMANDS | cap::AUDIT_COMMANDS => {
            let list = if capability == cap::PP_COMMANDS {
                &tpm.p.pp_commands
            } else {
                &tpm.p.audit.commands
            };
            let (v, more) = window(list, |c| *c, property, count.min(cap::MAX_CAP_CC));
            body.u32(v.len() as u32);
            for c in v {
                body.u32(c);
            }
            more
        }
        cap::PCRS => {
            body.u32(HashAlg::ALL.len() as u32);
            for h in HashAlg::ALL {
                body.pcr_selection(h, tpm.v.allocation.mask(h));
            }
            false
        }
        cap::TPM_PROPERTIES => {
            let props = properties(tpm);
            let (v, more) = window(
                &props,
                |e| e.0,
                property,
                count.min(cap::MAX_TPM_PROPERTIES),
            );
            body.u32(v.len() as u32);
            for (t, val) in v {
                body.u32(t).u32(val);
            }
            more
        }
        cap::PCR_PROPERTIES => {
            let props = pcr_properties();
            let (v, more) = window(
                &props,
                |e| e.0,
                property,
                count.min(cap::MAX_PCR_PROPERTIES),
            );
            body.u32(v.len() as u32);
            for (t, mask) in v {
                body.u32(t).pcr_select(mask);
            }
            more
        }
        cap::ECC_CURVES => {
            let (v, more) = window(
                &ECC_CURVES,
                |c| u32::from(*c),
                property,
                count.min(cap::MAX_ECC_CURVES),
            );
            body.u32(v.len() as u32);
            for c in v {
                body.u16(c);
            }
            more
        }
        _ => return Err(rc::VALUE + rc::P + rc::N1),
    };
    cmd.out.u8(more as u8).u32(capability).bytes(&body.buf);
    Ok(())
}

/// TPM_PT_PCR tags: SAVE, then EXTEND_Ln/RESET_Ln for each locality.
fn pcr_properties() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    let mask = |f: &dyn Fn(usize) -> bool| {
        (0..PCR_COUNT)
            .filter(|&i| f(i))
            .fold(0u32, |m, i| m | 1 << i)
    };
    v.push((0x00, mask(&|i| PCR_ATTRS[i].state_save)));
    for loc in 0..5u8 {
        v.push((
            1 + 2 * u32::from(loc),
            mask(&|i| pcr::extend_allowed(i, loc)),
        ));
        v.push((
            2 + 2 * u32::from(loc),
            mask(&|i| pcr::reset_allowed(i, loc)),
        ));
    }
    // TPM_PT_PCR_NO_INCREMENT, _DRTM_RESET, _POLICY, _AUTH.
    v.push((0x11, pcr::NO_INCREMENT));
    v.push((0x12, pcr::DRTM_RESET));
    v.push((0x13, pcr::POLICY_GROUP));
    v.push((0x14, pcr::AUTH_GROUP));
    v
}
