//! Part 3 §12 and §24.1: TPM2_CreatePrimary (ECC P-256 keys derived from the
//! hierarchy's primary seed), TPM2_LoadExternal and TPM2_ReadPublic.
//!
//! Primary keys are deterministic: the private scalar is the first valid
//! candidate of the stream KDFa(nameAlg, primarySeed, "Primary Object
//! Creation", Name(template), sensitive.data) (Part 1 §27.?, FIPS 186-4 B.4.2
//! candidate testing), so the same template under the same seed always gives
//! the same key. (The reference implementation feeds the same KDFa output
//! through an AES CTR-DRBG first; keys are reproducible here but not
//! bit-identical with it.)

use crate::defs::{handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::object::{Key, Object};
use crate::public::{self, attr, name_of, Public};
use alloc::boxed::Box;
use alloc::vec::Vec;
use p256::PublicKey;

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

/// QN(child) = nameAlg || H(QN(parent) || Name(child)); a hierarchy's QN is its handle.
fn qualified_name(h: HashAlg, hierarchy: u32, name: &[u8]) -> Vec<u8> {
    name_of(h, &[&hierarchy.to_be_bytes()[..], name].concat())
}

/// TPM2B_SENSITIVE_CREATE: (userAuth, data).
fn sensitive_create<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), u32> {
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
    let mut public = Public::unmarshal(&mut Reader::new(template_bytes)).p(2)?;
    let outside_info = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(3)?;
    let pcr_before = cmd.params.rest();
    let creation_pcr = cmd.params.pcr_selection_list().p(4)?;
    let creation_pcr_bytes = &pcr_before[..pcr_before.len() - cmd.params.remaining()];
    cmd.finish()?;
    let hierarchy = cmd.handles[0];
    // CreateChecks for an asymmetric key under a hierarchy.
    public
        .validate(true)
        .map_err(|e| rc::safe_add(e, rc::P + 2 * rc::N1))?;
    if !public.has(attr::SENSITIVE_DATA_ORIGIN) || !data.is_empty() {
        return Err(rc::ATTRIBUTES + rc::P + 2 * rc::N1);
    }
    let auth = adjust_auth(user_auth, public.name_alg).ok_or(rc::SIZE + rc::P + rc::N1)?;
    let slot_free = tpm.v.objects.count() < limits::MAX_LOADED_OBJECTS;
    if !slot_free {
        return Err(rc::OBJECT_MEMORY);
    }
    // Derive the key from the seed, the template's Name and sensitive.data.
    let template_name = name_of(public.name_alg, template_bytes);
    let seed = tpm.primary_seed(hierarchy);
    let d = public::derive_p256(|i| {
        let all = crate::session::kdfa(
            public.name_alg,
            &seed,
            PRIMARY_LABEL,
            &template_name,
            data,
            (i + 1) * public::P256_BYTES as u32 * 8,
        );
        all[i as usize * public::P256_BYTES..].to_vec()
    });
    public.set_point(&PublicKey::from_secret_scalar(&d));
    let name = public.name();
    let h = public.name_alg;
    // TPMS_CREATION_DATA.
    let mut pcr_values: Vec<Digest> = Vec::new();
    for (bank, mask) in &creation_pcr {
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
        .u8(crate::pcr::locality_bit(cmd.locality))
        .u16(crate::defs::alg::NULL)
        .tpm2b(&hierarchy.to_be_bytes())
        .tpm2b(&hierarchy.to_be_bytes())
        .tpm2b(outside_info);
    let creation_hash = h.digest(&[&cd.buf]);
    let ticket = TICKET_HASH.hmac(
        &tpm.hierarchy_proof(hierarchy),
        &[&st::CREATION.to_be_bytes(), &name, creation_hash.as_bytes()],
    );
    let key = Key {
        qualified_name: qualified_name(h, hierarchy, &name),
        name: name.clone(),
        hierarchy,
        auth,
        private: Some(p256::elliptic_curve::PrimeField::to_repr(&*d).to_vec()),
        public,
    };
    let public_bytes = key.public.marshal();
    let handle = tpm
        .v
        .objects
        .insert(Object::Key(Box::new(key)))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(handle);
    cmd.out
        .tpm2b(&public_bytes)
        .tpm2b(&cd.buf)
        .tpm2b(creation_hash.as_bytes())
        .u16(st::CREATION)
        .u32(hierarchy)
        .tpm2b(ticket.as_bytes())
        .tpm2b(&name);
    Ok(())
}

/// TPMT_SENSITIVE of an ECC key: (authValue, private scalar).
fn sensitive<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), u32> {
    if r.u16()? != public::ids::ECC {
        return Err(rc::TYPE);
    }
    let auth = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let _seed = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let d = r.tpm2b(public::P256_BYTES)?;
    Ok((auth, d))
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
    let pk = public.point().ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
    let (auth, private) = match private {
        None => (Digest::filled(0, 0), None),
        Some((auth, d)) => {
            // A key with its private part is only loaded in the NULL hierarchy
            // and may not claim to be fixed to a TPM or parent.
            if hierarchy != handle::NULL {
                return Err(rc::HIERARCHY + rc::P + 3 * rc::N1);
            }
            if public.attributes & (attr::FIXED_TPM | attr::FIXED_PARENT) != 0 {
                return Err(rc::ATTRIBUTES + rc::P + 2 * rc::N1);
            }
            let s = public::scalar_from_bytes(d).ok_or(rc::KEY + rc::P + rc::N1)?;
            if PublicKey::from_secret_scalar(&s) != pk {
                return Err(rc::BINDING + rc::P + 2 * rc::N1);
            }
            let a = adjust_auth(auth, public.name_alg).ok_or(rc::SIZE + rc::P + rc::N1)?;
            (a, Some(d.to_vec()))
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

pub fn test_parms(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let ty = cmd.params.u16().p(1)?;
    if ty != public::ids::ECC {
        return Err(rc::TYPE + rc::P + rc::N1);
    }
    public::ecc_parms(&mut cmd.params).p(1)?;
    cmd.finish()
}
