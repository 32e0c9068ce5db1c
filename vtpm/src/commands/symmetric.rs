//! Part 3 §15.2–15.3: TPM2_EncryptDecrypt and TPM2_EncryptDecrypt2 with an AES
//! symmetric key in CFB mode
//! (the only block-cipher mode implemented; others answer TPM_RC_MODE). The
//! chaining value returned as ivOut follows the reference implementation: the
//! IV register after the last (possibly partial) block, whose leading bytes
//! are that block's ciphertext.

use crate::defs::{alg, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::public::{attr, ids, SymObject};
use aes::cipher::{BlockEncrypt, KeyInit};
use alloc::boxed::Box;
use alloc::vec::Vec;

/// AES block size, and so the IV size.
const BLOCK: usize = 16;

/// An AES key schedule of either size.
enum Cipher {
    A128(Box<aes::Aes128>),
    A256(Box<aes::Aes256>),
}

impl Cipher {
    fn new(key: &[u8]) -> Option<Self> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key)
                .ok()
                .map(|c| Cipher::A128(Box::new(c))),
            32 => aes::Aes256::new_from_slice(key)
                .ok()
                .map(|c| Cipher::A256(Box::new(c))),
            _ => None,
        }
    }
    fn encrypt(&self, b: &mut aes::Block) {
        match self {
            Cipher::A128(c) => c.encrypt_block(b),
            Cipher::A256(c) => c.encrypt_block(b),
        }
    }
}

/// AES-CFB over `data` in place with the IV register `iv` (updated).
fn cfb(key: &[u8], iv: &mut [u8; BLOCK], data: &mut [u8], decrypt: bool) {
    let Some(c) = Cipher::new(key) else {
        return;
    };
    for chunk in data.chunks_mut(BLOCK) {
        let mut ks = aes::Block::from(*iv);
        c.encrypt(&mut ks);
        for (i, b) in chunk.iter_mut().enumerate() {
            let input = *b;
            *b ^= ks[i];
            iv[i] = if decrypt { input } else { *b };
        }
    }
}

/// TPMI_ALG_CIPHER_MODE+: CTR, OFB, CBC, CFB, ECB or TPM_ALG_NULL.
fn cipher_mode(r: &mut crate::marshal::Reader) -> Result<u16, u32> {
    let mode = r.u16()?;
    if !matches!(
        mode,
        alg::NULL | ids::CFB | 0x0040 | 0x0041 | 0x0042 | 0x0044
    ) {
        return Err(rc::VALUE);
    }
    Ok(mode)
}

pub fn encrypt_decrypt2(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?.to_vec();
    let decrypt = cmd.params.yes_no().p(2)?;
    let mode = cipher_mode(&mut cmd.params).p(3)?;
    let iv_in = cmd.params.tpm2b(BLOCK).p(4)?.to_vec();
    cmd.finish()?;
    run(tpm, cmd, data, decrypt, mode, iv_in, [3, 4])
}

/// TPM2_EncryptDecrypt: the same operation with the parameters in the older
/// order (decrypt, mode, ivIn, inData).
pub fn encrypt_decrypt(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let decrypt = cmd.params.yes_no().p(1)?;
    let mode = cipher_mode(&mut cmd.params).p(2)?;
    let iv_in = cmd.params.tpm2b(BLOCK).p(3)?.to_vec();
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(4)?.to_vec();
    cmd.finish()?;
    run(tpm, cmd, data, decrypt, mode, iv_in, [2, 3])
}

/// The operation; `n` numbers the mode and ivIn parameters for errors.
fn run(
    tpm: &mut Tpm,
    cmd: &mut Cmd,
    data: Vec<u8>,
    decrypt: bool,
    mode: u16,
    iv_in: Vec<u8>,
    n: [u32; 2],
) -> Result<(), u32> {
    let (pmode, piv) = (rc::P + n[0] * rc::N1, rc::P + n[1] * rc::N1);
    let h1 = rc::H + rc::N1;
    let k = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + h1)?;
    if k.public.ty != ids::SYMCIPHER {
        return Err(rc::TYPE + h1);
    }
    if k.public.has(attr::RESTRICTED) {
        return Err(rc::ATTRIBUTES + h1);
    }
    // Decryption needs the decrypt attribute, encryption the sign attribute.
    let needed = if decrypt { attr::DECRYPT } else { attr::SIGN };
    if !k.public.has(needed) {
        return Err(rc::ATTRIBUTES + h1);
    }
    let key_mode = match k.public.symmetric {
        SymObject::AesCfb(_) => ids::CFB,
        _ => alg::NULL,
    };
    let mode = match (key_mode, mode) {
        (alg::NULL, alg::NULL) => return Err(rc::MODE + pmode),
        (alg::NULL, m) => m,
        (km, alg::NULL) => km,
        (km, m) if km == m => km,
        _ => return Err(rc::MODE + pmode),
    };
    if mode != ids::CFB {
        log::warn!("vtpm: EncryptDecrypt: only CFB mode is implemented");
        return Err(rc::MODE + pmode);
    }
    if iv_in.len() != BLOCK {
        return Err(rc::SIZE + piv);
    }
    let key: Vec<u8> = k.private.clone().ok_or(rc::AUTH_UNAVAILABLE)?;
    let mut iv = [0u8; BLOCK];
    iv.copy_from_slice(&iv_in);
    let mut out = data;
    cfb(&key, &mut iv, &mut out, decrypt);
    cmd.out.tpm2b(&out).tpm2b(&iv);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfb_matches_the_stream_cipher_and_chains_its_iv() {
        let key = [7u8; 16];
        let iv0 = [9u8; 16];
        let plain: Vec<u8> = (0..40u8).collect();
        let mut a = plain.clone();
        crate::session::aes_cfb(&key, &iv0, &mut a, true);
        // Two calls chained through ivOut equal one call.
        let mut iv = iv0;
        let (mut x, mut y) = (plain[..32].to_vec(), plain[32..].to_vec());
        cfb(&key, &mut iv, &mut x, false);
        assert_eq!(iv[..], x[16..32]);
        cfb(&key, &mut iv, &mut y, false);
        assert_eq!([x, y].concat(), a);
        let mut iv = iv0;
        cfb(&key, &mut iv, &mut a, true);
        assert_eq!(a, plain);
    }
}
