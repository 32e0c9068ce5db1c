//! RSA encoding methods of PKCS#1 v2.2 (RFC 8017) over 256-byte blocks:
//! EMSA-PKCS1-v1_5 and EMSA-PSS (signatures; PSS verification recovers the
//! salt length), EME-OAEP (with an arbitrary binary label, as the TPM's
//! labels end in a zero byte) and EME-PKCS1-v1_5 (RSAES), with MGF1.
//! Pure byte functions: the raw RSA operations are in [`crate::rsa_key`].

use crate::hash::HashAlg;
use crate::session::ct_eq;
use alloc::vec::Vec;

/// DER DigestInfo prefixes of EMSA-PKCS1-v1_5 (RFC 8017 §9.2 note 1).
fn digest_info_prefix(h: HashAlg) -> &'static [u8] {
    match h {
        HashAlg::Sha1 => &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    }
}

/// MGF1 with hash `h`: `len` bytes.
pub fn mgf1(h: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + h.digest_size());
    let mut counter = 0u32;
    while out.len() < len {
        out.extend_from_slice(h.digest(&[seed, &counter.to_be_bytes()]).as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn xor_into(dst: &mut [u8], mask: &[u8]) {
    dst.iter_mut().zip(mask).for_each(|(d, m)| *d ^= m);
}

/// EMSA-PKCS1-v1_5 of `digest` into `k` bytes.
pub fn pkcs1v15_sign_encode(h: HashAlg, digest: &[u8], k: usize) -> Option<Vec<u8>> {
    let prefix = digest_info_prefix(h);
    let t_len = prefix.len() + digest.len();
    if digest.len() != h.digest_size() || k < t_len + 11 {
        return None;
    }
    let mut em = alloc::vec![0xFFu8; k];
    em[0] = 0;
    em[1] = 1;
    em[k - t_len - 1] = 0;
    em[k - t_len..k - digest.len()].copy_from_slice(prefix);
    em[k - digest.len()..].copy_from_slice(digest);
    Some(em)
}

/// EMSA-PSS-ENCODE of `digest` with `salt`, for a modulus of `mod_bits`
/// (the encoded message is ⌈(mod_bits − 1)/8⌉ bytes).
pub fn pss_encode(h: HashAlg, digest: &[u8], salt: &[u8], mod_bits: usize) -> Option<Vec<u8>> {
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = h.digest_size();
    if digest.len() != h_len || em_len < h_len + salt.len() + 2 {
        return None;
    }
    let m_hash = h.digest(&[&[0u8; 8], digest, salt]);
    let db_len = em_len - h_len - 1;
    let mut db = alloc::vec![0u8; db_len];
    db[db_len - salt.len() - 1] = 1;
    db[db_len - salt.len()..].copy_from_slice(salt);
    xor_into(&mut db, &mgf1(h, m_hash.as_bytes(), db_len));
    db[0] &= 0xFF >> (8 * em_len - em_bits);
    let mut em = db;
    em.extend_from_slice(m_hash.as_bytes());
    em.push(0xBC);
    Some(em)
}

/// EMSA-PSS-VERIFY of `digest` against the encoded message `em` (any salt
/// length).
pub fn pss_verify(h: HashAlg, digest: &[u8], em: &[u8], mod_bits: usize) -> bool {
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let h_len = h.digest_size();
    // `em` is the full modulus-sized block; drop a leading zero byte.
    let em = if em.len() == em_len + 1 {
        if em[0] != 0 {
            return false;
        }
        &em[1..]
    } else {
        em
    };
    if digest.len() != h_len || em.len() != em_len || em_len < h_len + 2 {
        return false;
    }
    if em[em_len - 1] != 0xBC {
        return false;
    }
    let db_len = em_len - h_len - 1;
    let top_mask = 0xFFu8 >> (8 * em_len - em_bits);
    if em[0] & !top_mask != 0 {
        return false;
    }
    let m_hash = &em[db_len..em_len - 1];
    let mut db = em[..db_len].to_vec();
    xor_into(&mut db, &mgf1(h, m_hash, db_len));
    db[0] &= top_mask;
    let Some(one) = db.iter().position(|b| *b != 0) else {
        return false;
    };
    if db[one] != 1 {
        return false;
    }
    let salt = &db[one + 1..];
    ct_eq(h.digest(&[&[0u8; 8], digest, salt]).as_bytes(), m_hash)
}

/// EME-OAEP encoding of `msg` with `label` and the random `seed` (digest
/// size) into `k` bytes.
pub fn oaep_encode(h: HashAlg, label: &[u8], msg: &[u8], seed: &[u8], k: usize) -> Option<Vec<u8>> {
    let h_len = h.digest_size();
    if seed.len() != h_len || k < 2 * h_len + 2 || msg.len() > k - 2 * h_len - 2 {
        return None;
    }
    let db_len = k - h_len - 1;
    let mut db = alloc::vec![0u8; db_len];
    db[..h_len].copy_from_slice(h.digest(&[label]).as_bytes());
    db[db_len - msg.len() - 1] = 1;
    db[db_len - msg.len()..].copy_from_slice(msg);
    xor_into(&mut db, &mgf1(h, seed, db_len));
    let mut masked_seed = seed.to_vec();
    xor_into(&mut masked_seed, &mgf1(h, &db, h_len));
    let mut em = alloc::vec![0u8];
    em.extend_from_slice(&masked_seed);
    em.extend_from_slice(&db);
    Some(em)
}

/// EME-OAEP decoding of `em` (`k` bytes) with `label`.
pub fn oaep_decode(h: HashAlg, label: &[u8], em: &[u8]) -> Option<Vec<u8>> {
    let h_len = h.digest_size();
    let k = em.len();
    if k < 2 * h_len + 2 {
        return None;
    }
    let mut seed = em[1..1 + h_len].to_vec();
    let mut db = em[1 + h_len..].to_vec();
    xor_into(&mut seed, &mgf1(h, &db, h_len));
    xor_into(&mut db, &mgf1(h, &seed, k - h_len - 1));
    let label_ok = ct_eq(&db[..h_len], h.digest(&[label]).as_bytes());
    let one = db[h_len..].iter().position(|b| *b != 0).map(|i| i + h_len);
    match one {
        Some(i) if em[0] == 0 && label_ok && db[i] == 1 => Some(db[i + 1..].to_vec()),
        _ => None,
    }
}

/// EME-PKCS1-v1_5 encoding of `msg` into `k` bytes with the nonzero padding
/// bytes drawn from `rng`.
pub fn pkcs1v15_enc_encode(
    msg: &[u8],
    k: usize,
    rng: &mut dyn FnMut(&mut [u8]),
) -> Option<Vec<u8>> {
    if k < 11 || msg.len() > k - 11 {
        return None;
    }
    let ps_len = k - msg.len() - 3;
    let mut ps = alloc::vec![0u8; ps_len];
    rng(&mut ps);
    for b in ps.iter_mut() {
        while *b == 0 {
            let mut one = [0u8; 1];
            rng(&mut one);
            *b = one[0];
        }
    }
    let mut em = alloc::vec![0u8, 2];
    em.extend_from_slice(&ps);
    em.push(0);
    em.extend_from_slice(msg);
    Some(em)
}

/// EME-PKCS1-v1_5 decoding.
pub fn pkcs1v15_enc_decode(em: &[u8]) -> Option<Vec<u8>> {
    if em.len() < 11 || em[0] != 0 || em[1] != 2 {
        return None;
    }
    let zero = em[2..].iter().position(|b| *b == 0)? + 2;
    if zero < 10 {
        return None;
    }
    Some(em[zero + 1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgf1_follows_its_definition() {
        let m = mgf1(HashAlg::Sha256, b"seed", 40);
        assert_eq!(
            &m[..32],
            HashAlg::Sha256.digest(&[b"seed", &[0, 0, 0, 0]]).as_bytes()
        );
        assert_eq!(
            &m[32..],
            &HashAlg::Sha256.digest(&[b"seed", &[0, 0, 0, 1]]).as_bytes()[..8]
        );
    }

    #[test]
    fn pkcs1v15_signature_block_layout() {
        let d = HashAlg::Sha256.digest(&[b"m"]);
        let em = pkcs1v15_sign_encode(HashAlg::Sha256, d.as_bytes(), 256).unwrap();
        assert_eq!(&em[..2], &[0, 1]);
        assert_eq!(em[256 - 32 - 19 - 1], 0);
        assert!(em[2..256 - 52].iter().all(|b| *b == 0xFF));
        assert_eq!(&em[256 - 32..], d.as_bytes());
        assert!(pkcs1v15_sign_encode(HashAlg::Sha256, &[0; 20], 256).is_none());
    }

    #[test]
    fn pss_round_trips_with_any_salt_length() {
        let d = HashAlg::Sha256.digest(&[b"m"]);
        for salt in [&[][..], &[7u8; 32][..], &[9u8; 100][..]] {
            let mut em = pss_encode(HashAlg::Sha256, d.as_bytes(), salt, 2048).unwrap();
            assert_eq!(em.len(), 256);
            assert!(pss_verify(HashAlg::Sha256, d.as_bytes(), &em, 2048));
            let other = HashAlg::Sha256.digest(&[b"n"]);
            assert!(!pss_verify(HashAlg::Sha256, other.as_bytes(), &em, 2048));
            em[100] ^= 1;
            assert!(!pss_verify(HashAlg::Sha256, d.as_bytes(), &em, 2048));
        }
    }

    #[test]
    fn oaep_round_trips_and_checks_the_label() {
        let em = oaep_encode(HashAlg::Sha256, b"SECRET\0", b"salt", &[3; 32], 256).unwrap();
        assert_eq!(em.len(), 256);
        assert_eq!(
            oaep_decode(HashAlg::Sha256, b"SECRET\0", &em).unwrap(),
            b"salt"
        );
        assert!(oaep_decode(HashAlg::Sha256, b"SECRET", &em).is_none());
        assert!(oaep_encode(HashAlg::Sha256, b"", &[0; 191], &[3; 32], 256).is_none());
        assert!(oaep_encode(HashAlg::Sha256, b"", &[0; 190], &[3; 32], 256).is_some());
    }

    #[test]
    fn pkcs1v15_encryption_round_trips() {
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                *x = n;
                n = n.wrapping_add(1);
            })
        };
        let em = pkcs1v15_enc_encode(b"hello", 256, &mut rng).unwrap();
        assert!(em[2..250].iter().all(|b| *b != 0));
        assert_eq!(pkcs1v15_enc_decode(&em).unwrap(), b"hello");
        assert!(pkcs1v15_enc_encode(&[0; 246], 256, &mut rng).is_none());
        let mut bad = em.clone();
        bad[1] = 1;
        assert!(pkcs1v15_enc_decode(&bad).is_none());
    }
}
