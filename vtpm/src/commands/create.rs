//! Part 3 §12.1, §12.2 and §12.7: TPM2_Create and TPM2_Load of children of a
//! storage key, and TPM2_Unseal of sealed data objects.
//!
//! A child's private area (TPM2B_PRIVATE) is Part 1 §23's protection:
//! integrity || AES-CFB(TPM2B_SENSITIVE) with symKey = KDFa(parent nameAlg,
//! parent seedValue, "STORAGE", Name(child), "", keyBits) and a zero IV, and
//! integrity = HMAC(KDFa(…, "INTEGRITY", "", "", digest bits), ciphertext ||
//! Name(child)).

use crate::commands::object::{creation_data, generate};
use crate::defs::{handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::object::{Key, Object};
use crate::public::{attr, ids, name_of, Public, SymObject};
use crate::session::{aes_cfb, ct_eq, kdfa};
use alloc::boxed::Box;
use alloc::vec::Vec;

const TICKET_HASH: HashAlg = HashAlg::Sha384;
/// Largest TPM2B_PRIVATE accepted.
const MAX_PRIVATE: usize = 512;

/// The storage parent of handle 1: a loaded restricted decrypt ECC or RSA key with
/// its private part and a symmetric algorithm.
pub(crate) fn storage_parent(tpm: &Tpm, h: u32) -> Result<Key, u32> {
    let h1 = rc::H + rc::N1;
    let k = tpm.key(h).ok_or(rc::TYPE + h1)?;
    let storage = matches!(k.public.ty, ids::ECC | ids::RSA)
        && k.public.has(attr::RESTRICTED | attr::DECRYPT)
        && matches!(k.public.symmetric, SymObject::AesCfb(_));
    if !storage {
        return Err(rc::TYPE + h1);
    }
    if k.private.is_none() || k.seed_value.is_empty() {
        return Err(rc::HANDLE + h1);
    }
    Ok(k.clone())
}

fn protection_keys(parent: &Key, name: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let SymObject::AesCfb(bits) = parent.public.symmetric else {
        return (Vec::new(), Vec::new());
    };
    let h = parent.public.name_alg;
    let sym = kdfa(
        h,
        &parent.seed_value,
        b"STORAGE",
        name,
        &[],
        u32::from(bits),
    );
    let mac = kdfa(
        h,
        &parent.seed_value,
        b"INTEGRITY",
        &[],
        &[],
        h.digest_size() as u32 * 8,
    );
    (sym, mac)
}

/// TPMT_SENSITIVE of `k` as a TPM2B_SENSITIVE.
fn sensitive_2b(k: &Key) -> Vec<u8> {
    let mut s = Writer::new();
    s.u16(k.public.ty)
        .tpm2b(k.auth.as_bytes())
        .tpm2b(&k.seed_value)
        .tpm2b(k.private.as_deref().unwrap_or(&[]));
    let mut w = Writer::new();
    w.tpm2b(&s.buf);
    w.buf
}

/// Wraps `k` under `parent` (TPM2B_PRIVATE contents).
pub(crate) fn wrap(parent: &Key, k: &Key) -> Vec<u8> {
    let (sym, mac) = protection_keys(parent, &k.name);
    let mut enc = sensitive_2b(k);
    aes_cfb(&sym, &[0u8; 16], &mut enc, true);
    let integrity = parent.public.name_alg.hmac(&mac, &[&enc, &k.name]);
    let mut w = Writer::new();
    w.tpm2b(integrity.as_bytes()).bytes(&enc);
    w.buf
}

/// A child's unwrapped sensitive area.
struct Sensitive {
    ty: u16,
    auth: Vec<u8>,
    seed_value: Vec<u8>,
    secret: Vec<u8>,
}

/// Unwraps a TPM2B_PRIVATE's contents for `public` (bare codes:
/// INTEGRITY, TYPE, SIZE).
fn unwrap(parent: &Key, name: &[u8], private: &[u8]) -> Result<Sensitive, u32> {
    let mut r = Reader::new(private);
    let integrity = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let enc = r.rest();
    let (sym, mac) = protection_keys(parent, name);
    let expect = parent.public.name_alg.hmac(&mac, &[enc, name]);
    if !ct_eq(integrity, expect.as_bytes()) {
        return Err(rc::INTEGRITY);
    }
    let mut plain = enc.to_vec();
    aes_cfb(&sym, &[0u8; 16], &mut plain, false);
    let bad = |_| rc::INTEGRITY;
    let mut r = Reader::new(&plain);
    let n = r.u16().map_err(bad)? as usize;
    let mut s = r.sub(n).map_err(bad)?;
    let ty = s.u16().map_err(bad)?;
    let auth = s.tpm2b(limits::TPMU_HA_SIZE).map_err(bad)?.to_vec();
    let seed = s.tpm2b(limits::TPMU_HA_SIZE).map_err(bad)?.to_vec();
    let secret = s
        .tpm2b(crate::public::max_sensitive(ty))
        .map_err(bad)?
        .to_vec();
    if s.remaining() != 0 || r.remaining() != 0 {
        return Err(rc::INTEGRITY);
    }
    Ok(Sensitive {
        ty,
        auth,
        seed_value: seed,
        secret,
    })
}

/// The fixedTPM/fixedParent rules of a child of `parent`.
fn check_child_attributes(parent: &Key, p: &Public) -> Result<(), u32> {
    let fixed_tpm = p.has(attr::FIXED_TPM);
    let fixed_parent = p.has(attr::FIXED_PARENT);
    if fixed_tpm && (!fixed_parent || !parent.public.has(attr::FIXED_TPM)) {
        return Err(rc::ATTRIBUTES);
    }
    p.validate(false)
}

/// A new ordinary object under the storage key `parent` (TPM2_Create and
/// TPM2_CreateLoaded; inSensitive is parameter 1, inPublic parameter 2).
fn new_child(
    tpm: &mut Tpm,
    parent: &Key,
    user_auth: &[u8],
    data: &[u8],
    mut public: Public,
) -> Result<Key, u32> {
    check_child_attributes(parent, &public).map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let a = crate::auth::strip_trailing_zeros(user_auth);
    if a.len() > public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let auth = Digest::from_slice(a);
    let (private, seed_value) = generate(&mut public, data, &mut |n| {
        let mut b = alloc::vec![0u8; n];
        tpm.random(&mut b);
        b
    })
    .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let name = public.name();
    let h = public.name_alg;
    Ok(Key {
        qualified_name: name_of(h, &[&parent.qualified_name[..], &name].concat()),
        name,
        hierarchy: parent.hierarchy,
        auth,
        private: Some(private),
        seed_value,
        public,
    })
}

pub fn create(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let n = cmd.params.u16().p(1)? as usize;
    let mut sub = cmd.params.sub(n).p(1)?;
    let user_auth = sub.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let data = sub.tpm2b(limits::MAX_SYM_DATA).p(1)?;
    if n == 0 || sub.remaining() != 0 {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let public = Public::unmarshal_2b(&mut cmd.params).p(2)?;
    let outside_info = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(3)?;
    let pcr_before = cmd.params.rest();
    let creation_pcr = cmd.params.pcr_selection_list().p(4)?;
    let creation_pcr_bytes = &pcr_before[..pcr_before.len() - cmd.params.remaining()];
    cmd.finish()?;
    let parent = storage_parent(tpm, cmd.handles[0])?;
    let key = new_child(tpm, &parent, user_auth, data, public)?;
    let name = key.name.clone();
    let h = key.public.name_alg;
    let cd = creation_data(
        tpm,
        cmd.locality,
        h,
        creation_pcr_bytes,
        &creation_pcr,
        (
            parent.public.name_alg.id(),
            &parent.name,
            &parent.qualified_name,
        ),
        outside_info,
    );
    let creation_hash = h.digest(&[&cd]);
    let ticket = TICKET_HASH.hmac(
        &tpm.hierarchy_proof(parent.hierarchy),
        &[&st::CREATION.to_be_bytes(), &name, creation_hash.as_bytes()],
    );
    cmd.out
        .tpm2b(&wrap(&parent, &key))
        .tpm2b(&key.public.marshal())
        .tpm2b(&cd)
        .tpm2b(creation_hash.as_bytes())
        .u16(st::CREATION)
        .u32(parent.hierarchy)
        .tpm2b(ticket.as_bytes());
    Ok(())
}

/// Part 3 §12.9: TPM2_CreateLoaded of a primary object (the parent a
/// hierarchy or TPM_RH_NULL: derived from its seed as TPM2_CreatePrimary
/// does, with an empty outPrivate) or of an ordinary object (the parent a
/// storage key: created as TPM2_Create does), loaded at once. Derived
/// objects (a derivation parent and a TPMT_TEMPLATE with TPMS_DERIVE) are
/// not implemented: such a parent is not a storage key (TPM_RC_TYPE).
pub fn create_loaded(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (user_auth, data) = crate::commands::object::sensitive_create(&mut cmd.params).p(1)?;
    let template_bytes = {
        let before = cmd.params.rest();
        Public::unmarshal_2b(&mut cmd.params).p(2)?;
        &before[2..before.len() - cmd.params.remaining()]
    };
    let public = Public::unmarshal(&mut Reader::new(template_bytes)).p(2)?;
    cmd.finish()?;
    let parent_handle = cmd.handles[0];
    let (key, private) = if handle::ht(parent_handle) == handle::HT_PERMANENT {
        let key = crate::commands::object::derive_primary(
            tpm,
            parent_handle,
            user_auth,
            data,
            template_bytes,
            public,
        )?;
        (key, Vec::new())
    } else {
        let parent = storage_parent(tpm, parent_handle)?;
        let key = new_child(tpm, &parent, user_auth, data, public)?;
        let private = wrap(&parent, &key);
        (key, private)
    };
    let public_bytes = key.public.marshal();
    let name = key.name.clone();
    let h = tpm
        .v
        .objects
        .insert(Object::Key(Box::new(key)))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(h);
    cmd.out.tpm2b(&private).tpm2b(&public_bytes).tpm2b(&name);
    Ok(())
}

pub fn load(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let private = cmd.params.tpm2b(MAX_PRIVATE).p(1)?;
    let public = Public::unmarshal_2b(&mut cmd.params).p(2)?;
    cmd.finish()?;
    let parent = storage_parent(tpm, cmd.handles[0])?;
    check_child_attributes(&parent, &public).map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let name = public.name();
    let Sensitive {
        ty,
        auth,
        seed_value,
        secret,
    } = unwrap(&parent, &name, private).map_err(|e| rc::safe_add(e, rc::P + rc::N1))?;
    if ty != public.ty {
        return Err(rc::TYPE + rc::P + 2 * rc::N1);
    }
    if !bound(&public, &secret, &seed_value) {
        return Err(rc::BINDING + rc::P + 2 * rc::N1);
    }
    if auth.len() > public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let key = Key {
        qualified_name: name_of(
            public.name_alg,
            &[&parent.qualified_name[..], &name].concat(),
        ),
        name: name.clone(),
        hierarchy: parent.hierarchy,
        auth: Digest::from_slice(&auth),
        private: Some(secret),
        seed_value,
        public,
    };
    let h = tpm
        .v
        .objects
        .insert(Object::Key(Box::new(key)))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(h);
    cmd.out.tpm2b(&name);
    Ok(())
}

/// Does the sensitive area (private part `secret`, `seed_value`) belong to
/// `public` (the RSA modulus, the ECC point, the keyed-hash unique digest)?
pub(crate) fn bound(public: &Public, secret: &[u8], seed_value: &[u8]) -> bool {
    if public.ty == ids::RSA {
        crate::rsa_key::private_key(&public.x, public.exponent, secret).is_some()
    } else if public.ty == ids::ECC {
        public
            .scalar(secret)
            .is_some_and(|d| Some(d.public()) == public.point())
    } else {
        public.name_alg.digest(&[seed_value, secret]).as_bytes() == public.x.as_slice()
    }
}

pub fn unseal(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let h1 = rc::H + rc::N1;
    let k = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + h1)?;
    if k.public.ty != ids::KEYEDHASH {
        return Err(rc::TYPE + h1);
    }
    if k.public.attributes & (attr::SIGN | attr::DECRYPT | attr::RESTRICTED) != 0 {
        return Err(rc::ATTRIBUTES + h1);
    }
    let data = k.private.clone().unwrap_or_default();
    cmd.out.tpm2b(&data);
    Ok(())
}

/// Part 3 §12.6 TPM2_ObjectChangeAuth: the object (ADMIN) wrapped under its
/// parent again with a new authValue. The loaded object keeps its old one;
/// the caller loads the returned outPrivate to use the new value.
pub fn object_change_auth(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let new_auth = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let h1 = rc::H + rc::N1;
    let h2 = rc::H + 2 * rc::N1;
    let object = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + h1)?.clone();
    let a = crate::auth::strip_trailing_zeros(new_auth);
    if a.len() > object.public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    // parentHandle must be the object's parent: its Qualified Name is
    // H(parent's Qualified Name || Name).
    let parent = tpm.key(cmd.handles[1]).ok_or(rc::TYPE + h2)?;
    let qn = name_of(
        object.public.name_alg,
        &[&parent.qualified_name[..], &object.name].concat(),
    );
    if qn != object.qualified_name || object.private.is_none() {
        return Err(rc::TYPE + h2);
    }
    let parent = storage_parent(tpm, cmd.handles[1]).map_err(|_| rc::TYPE + h2)?;
    let changed = Key {
        auth: Digest::from_slice(a),
        ..object
    };
    cmd.out.tpm2b(&wrap(&parent, &changed));
    Ok(())
}
