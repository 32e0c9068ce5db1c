//! Part 3 §12 and §24.1: TPM2_CreatePrimary (ECC P-256 and RSA-2048 keys
//! derived from the hierarchy's primary seed), TPM2_LoadExternal and
//! TPM2_ReadPublic.
//!
//! Primary keys are deterministic: the private scalar is the first valid
//! candidate of the stream KDFa(nameAlg, primarySeed, "Primary Object
//! Creation", Name(template), sensitive.data) (Part 1 §27.?, FIPS 186-4 B.4.2
//! candidate testing), so the same template under the same seed always gives
//! the same key. RSA-2048 primes are drawn from the same stream as described
//! in [`crate::rsa_key`] (first p, then q, 128-byte candidates). (The reference implementation feeds the same KDFa output
//! through an AES CTR-DRBG first; keys are reproducible here but not
//! bit-identical with it.)

use crate::defs::{handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::object::{Key, Object};
use crate::public::{self, attr, name_of, Public, SymObject};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// Label of primary-object derivation.
const PRIMARY_LABEL: &[u8] = b"Primary Object Creation";
/// Hash of tickets (the context integrity hash).
const TICKET_HASH: HashAlg = HashAlg::Sha384;

impl Tpm {
    /// The primary seed of a hierarchy (the null seed changes at TPM Reset).
    pub(crate) fn primary_seed(&self, hierarchy: u32) -> [u8; limits::SEED_SIZE] {
        match hierarchy {
            handle::ENDORSEMENT => self.p.eps,
            handle::PLATFORM => self.p.pps,
            handle::OWNER => self.p.sps,
            _ => self.p.null_proof,
        }
    }

    /// The proof value of a hierarchy (for tickets).
    pub(crate) fn hierarchy_proof(&self, hierarchy: u32) -> [u8; limits::SEED_SIZE] {
        match hierarchy {
            handle::ENDORSEMENT => self.p.eh_proof,
            handle::PLATFORM => self.p.ph_proof,
            handle::OWNER => self.p.sh_proof,
            _ => self.p.null_proof,
        }
    }

    /// The key object of handle `h`, if that is a loaded key.
    pub(crate) fn key(&self, h: u32) -> Option<&Key> {
        match self.v.objects.get(h) {
            Some(Object::Key(k)) => Some(k),
            _ => None,
        }
    }
}

/// A deterministic byte stream for deriving a primary object: blocks
/// KDFa-style HMAC(seed, i || "Primary Object Creation" || 0 || Name(template)
/// || sensitive.data || L) for i = 1, 2, …, handed out in order.
pub(crate) struct KdfStream {
    h: HashAlg,
    seed: Vec<u8>,
    context: Vec<u8>,
    counter: u32,
    buf: Vec<u8>,
}

impl KdfStream {
    /// Bits the stream is declared to produce (the L of every block).
    const LIMIT_BITS: u32 = 1 << 16;

    pub(crate) fn new(h: HashAlg, seed: &[u8], name: &[u8], data: &[u8]) -> Self {
        Self {
            h,
            seed: seed.to_vec(),
            context: [name, data].concat(),
            counter: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.counter += 1;
            let b = self.h.hmac(
                &self.seed,
                &[
                    &self.counter.to_be_bytes(),
                    PRIMARY_LABEL,
                    &[0],
                    &self.context,
                    &Self::LIMIT_BITS.to_be_bytes(),
                ],
            );
            self.buf.extend_from_slice(b.as_bytes());
        }
        self.buf.drain(..n).collect()
    }
}

/// Generates an object's secrets with `rng` (bare codes): an ECC P-256 key
/// pair (sensitiveDataOrigin set, no caller data) with a seedValue for a
/// storage key; or a keyed-hash object's data (the caller's, or `rng`'s when
/// sensitiveDataOrigin is set) with its obfuscation seedValue and unique =
/// H(seedValue || data). Fills `public`'s unique field; returns (private,
/// seedValue).
pub(crate) fn generate(
    public: &mut Public,
    data: &[u8],
    rng: &mut dyn FnMut(usize) -> Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), u32> {
    let origin = public.has(attr::SENSITIVE_DATA_ORIGIN);
    let digest = public.name_alg.digest_size();
    if public.ty == public::ids::KEYEDHASH || public.ty == public::ids::SYMCIPHER {
        let size = match public.symmetric {
            SymObject::AesCfb(b)
            | SymObject::AesAnyMode(b)
            | SymObject::AesMode(b, _)
            | SymObject::Block(_, b, _) => usize::from(b / 8),
            SymObject::Null => digest,
        };
        if public.ty == public::ids::SYMCIPHER && !data.is_empty() && data.len() != size {
            return Err(rc::KEY_SIZE);
        }
        let secret = match (origin, data.is_empty()) {
            (true, true) => rng(size),
            (false, false) => data.to_vec(),
            _ => return Err(rc::ATTRIBUTES),
        };
        let seed_value = rng(digest);
        public.x = public
            .name_alg
            .digest(&[&seed_value, &secret])
            .as_bytes()
            .to_vec();
        public.y.clear();
        return Ok((secret, seed_value));
    }
    if !origin || !data.is_empty() {
        return Err(rc::ATTRIBUTES);
    }
    let private = if public.ty == public::ids::RSA {
        let (n, p) =
            crate::rsa_key::generate(public.rsa_bits, public.exponent, rng).ok_or(rc::VALUE)?;
        public.x = n;
        public.y.clear();
        p
    } else {
        let curve = public.curve;
        let d = public::derive_scalar(curve, |_| rng(curve.bytes()));
        public.set_point(&d.public());
        d.to_bytes()
    };
    let seed_value = if public.has(attr::RESTRICTED | attr::DECRYPT) {
        rng(digest)
    } else {
        Vec::new()
    };
    Ok((private, seed_value))
}

/// TPMS_CREATION_DATA: the creation PCRs and their digest, the locality, the
/// parent's (nameAlg, Name, qualified Name) and outsideInfo.
pub(crate) fn creation_data(
    tpm: &Tpm,
    locality: u8,
    h: HashAlg,
    creation_pcr_bytes: &[u8],
    creation_pcr: &[(HashAlg, u32)],
    parent: (u16, &[u8], &[u8]),
    outside_info: &[u8],
) -> Vec<u8> {
    let mut pcr_values: Vec<Digest> = Vec::new();
    for (bank, mask) in creation_pcr {
        for i in 0..limits::PCR_COUNT {
            if mask & (1 << i) != 0 && tpm.v.allocation.is_allocated(*bank, i) {
                pcr_values.push(*tpm.v.pcrs.get(*bank, i));
            }
        }
    }
    let parts: Vec<&[u8]> = pcr_values.iter().map(Digest::as_bytes).collect();
    let pcr_digest = h.digest(&parts);
    let mut cd = Writer::new();
    cd.bytes(creation_pcr_bytes)
        .tpm2b(pcr_digest.as_bytes())
        .u8(crate::pcr::locality_bit(locality))
        .u16(parent.0)
        .tpm2b(parent.1)
        .tpm2b(parent.2)
        .tpm2b(outside_info);
    cd.buf
}

/// QN(child) = nameAlg || H(QN(parent) || Name(child)); a hierarchy's QN is its handle.
fn qualified_name(h: HashAlg, hierarchy: u32, name: &[u8]) -> Vec<u8> {
    name_of(h, &[&hierarchy.to_be_bytes()[..], name].concat())
}

/// TPM2B_SENSITIVE_CREATE: (userAuth, data).
pub(crate) fn sensitive_create<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), u32> {
    let n = r.u16()? as usize;
    let mut sub = r.sub(n)?;
    let auth = sub.tpm2b(limits::TPMU_HA_SIZE)?;
    let data = sub.tpm2b(limits::MAX_SYM_DATA)?;
    if sub.remaining() != 0 || n == 0 {
        return Err(rc::SIZE);
    }
    Ok((auth, data))
}

/// The authValue with trailing zeros removed, no longer than nameAlg's digest.
fn adjust_auth(auth: &[u8], h: HashAlg) -> Option<Digest> {
    let a = crate::auth::strip_trailing_zeros(auth);
    (a.len() <= h.digest_size()).then(|| Digest::from_slice(a))
}

pub fn create_primary(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (user_auth, data) = sensitive_create(&mut cmd.params).p(1)?;
    let template_bytes = {
        let before = cmd.params.rest();
        Public::unmarshal_2b(&mut cmd.params).p(2)?;
        &before[2..before.len() - cmd.params.remaining()]
    };
    let public = Public::unmarshal(&mut Reader::new(template_bytes)).p(2)?;
    let outside_info = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(3)?;
    let pcr_before = cmd.params.rest();
    let creation_pcr = cmd.params.pcr_selection_list().p(4)?;
    let creation_pcr_bytes = &pcr_before[..pcr_before.len() - cmd.params.remaining()];
    cmd.finish()?;
    let hierarchy = cmd.handles[0];
    let key = derive_primary(tpm, hierarchy, user_auth, data, template_bytes, public)?;
    let name = key.name.clone();
    let h = key.public.name_alg;
    let hb = hierarchy.to_be_bytes();
    let cd = creation_data(
        tpm,
        cmd.locality,
        h,
        creation_pcr_bytes,
        &creation_pcr,
        (crate::defs::alg::NULL, &hb, &hb),
        outside_info,
    );
    let creation_hash = h.digest(&[&cd]);
    let ticket = TICKET_HASH.hmac(
        &tpm.hierarchy_proof(hierarchy),
        &[&st::CREATION.to_be_bytes(), &name, creation_hash.as_bytes()],
    );
    let public_bytes = key.public.marshal();
    let handle = tpm
        .v
        .objects
        .insert(Object::Key(Box::new(key)))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(handle);
    cmd.out
        .tpm2b(&public_bytes)
        .tpm2b(&cd)
        .tpm2b(creation_hash.as_bytes())
        .u16(st::CREATION)
        .u32(hierarchy)
        .tpm2b(ticket.as_bytes())
        .tpm2b(&name);
    Ok(())
}

/// The primary object of `hierarchy` for the template `public` (marshalled
/// as `template_bytes`) and the sensitive-create `user_auth` and `data`,
/// derived from the hierarchy's seed (Part 1 §26.3), as TPM2_CreatePrimary
/// and TPM2_CreateLoaded make it. Errors carry the parameter numbers of
/// both commands (inSensitive 1, inPublic 2).
pub(crate) fn derive_primary(
    tpm: &mut Tpm,
    hierarchy: u32,
    user_auth: &[u8],
    data: &[u8],
    template_bytes: &[u8],
    mut public: Public,
) -> Result<Key, u32> {
    // CreateChecks for an asymmetric key under a hierarchy.
    public
        .validate(true)
        .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let auth = adjust_auth(user_auth, public.name_alg).ok_or(rc::SIZE + rc::P + rc::N1)?;
    let slot_free = tpm.v.objects.count() < limits::MAX_LOADED_OBJECTS;
    if !slot_free {
        return Err(rc::OBJECT_MEMORY);
    }
    // Derive the object from the seed, the template's Name and sensitive.data.
    let template_name = name_of(public.name_alg, template_bytes);
    let seed = tpm.primary_seed(hierarchy);
    let mut rng = KdfStream::new(public.name_alg, &seed, &template_name, data);
    let (private, seed_value) = generate(&mut public, data, &mut |n| rng.take(n))
        .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let name = public.name();
    let h = public.name_alg;
    Ok(Key {
        qualified_name: qualified_name(h, hierarchy, &name),
        name,
        hierarchy,
        auth,
        private: Some(private),
        seed_value,
        public,
    })
}

/// TPMT_SENSITIVE: (type, authValue, seedValue, private scalar or data).
type SensitiveParts<'a> = (u16, &'a [u8], &'a [u8], &'a [u8]);

fn sensitive<'a>(r: &mut Reader<'a>) -> Result<SensitiveParts<'a>, u32> {
    let ty = r.u16()?;
    if !matches!(
        ty,
        public::ids::ECC | public::ids::RSA | public::ids::KEYEDHASH | public::ids::SYMCIPHER
    ) {
        return Err(rc::TYPE);
    }
    let auth = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let seed = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let secret = r.tpm2b(public::max_sensitive(ty))?;
    Ok((ty, auth, seed, secret))
}

pub fn load_external(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let n = cmd.params.u16().p(1)? as usize;
    let private = if n == 0 {
        None
    } else {
        let mut sub = cmd.params.sub(n).p(1)?;
        let s = sensitive(&mut sub).p(1)?;
        if sub.remaining() != 0 {
            return Err(rc::SIZE + rc::P + rc::N1);
        }
        Some(s)
    };
    let public = Public::unmarshal_2b(&mut cmd.params).p(2)?;
    let hierarchy = cmd.params.u32().p(3)?;
    if !matches!(
        hierarchy,
        handle::OWNER | handle::ENDORSEMENT | handle::PLATFORM | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + 3 * rc::N1);
    }
    cmd.finish()?;
    if hierarchy != handle::NULL && tpm.check_hierarchy_enabled(hierarchy).is_err() {
        return Err(rc::HIERARCHY + rc::P + 3 * rc::N1);
    }
    public
        .validate(false)
        .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    let pk = if public.ty == public::ids::ECC {
        Some(public.point().ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?)
    } else {
        None
    };
    if public.ty == public::ids::RSA && public.rsa_public().is_none() {
        return Err(rc::KEY + rc::P + 2 * rc::N1);
    }
    let (auth, private, seed_value) = match private {
        None => (Digest::filled(0, 0), None, Vec::new()),
        Some((ty, auth, seed, secret)) => {
            // A key with its private part is only loaded in the NULL hierarchy
            // and may not claim to be fixed to a TPM or parent.
            if hierarchy != handle::NULL {
                return Err(rc::HIERARCHY + rc::P + 3 * rc::N1);
            }
            if public.attributes & (attr::FIXED_TPM | attr::FIXED_PARENT) != 0 {
                return Err(rc::ATTRIBUTES + rc::P + 2 * rc::N1);
            }
            if ty != public.ty {
                return Err(rc::TYPE + rc::P + rc::N1);
            }
            let bound = match pk {
                None if public.ty == public::ids::RSA => {
                    crate::rsa_key::private_key(&public.x, public.exponent, secret).is_some()
                }
                Some(pk) => {
                    let s = public.scalar(secret).ok_or(rc::KEY + rc::P + rc::N1)?;
                    s.public() == pk
                }
                None => public.name_alg.digest(&[seed, secret]).as_bytes() == public.x.as_slice(),
            };
            if !bound {
                return Err(rc::BINDING + rc::P + 2 * rc::N1);
            }
            let a = adjust_auth(auth, public.name_alg).ok_or(rc::SIZE + rc::P + rc::N1)?;
            (a, Some(secret.to_vec()), seed.to_vec())
        }
    };
    if !public.auth_policy.is_empty() && public.auth_policy.len() != public.name_alg.digest_size() {
        return Err(rc::SIZE + rc::P + 2 * rc::N1);
    }
    let name = public.name();
    let key = Key {
        qualified_name: qualified_name(public.name_alg, hierarchy, &name),
        name: name.clone(),
        hierarchy,
        auth,
        private,
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

pub fn read_public(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    // Sequence objects have no public area.
    let k = tpm.key(cmd.handles[0]).ok_or(rc::SEQUENCE)?;
    cmd.out
        .tpm2b(&k.public.marshal())
        .tpm2b(&k.name)
        .tpm2b(&k.qualified_name);
    Ok(())
}

/// Part 3 §10.4: TPM2_TestParms — TPM_RC_SUCCESS when the
/// TPMT_PUBLIC_PARMS unmarshal as parameters this TPM implements
/// ([`public::test_public_parms`]).
pub fn test_parms(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    public::test_public_parms(&mut cmd.params).p(1)?;
    cmd.finish()
}
