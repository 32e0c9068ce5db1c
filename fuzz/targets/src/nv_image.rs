//! `nv_image`: decode of the vTPM's NV image (the TPM's persistent state on disk).
//! The image ends in a SHA-256 of its body, which no mutation gets right by chance:
//! unless the first byte is `0xFF` (raw image), the rest is the body and the target
//! appends its digest, so the fuzzer reaches every field behind it.
//!
//! Invariants: a decoded image re-encodes to an image that decodes to the same
//! state, and a TPM powers on from it and answers TPM2_Startup(CLEAR) with a
//! well-formed response.

use vtpm::hash::HashAlg;
use vtpm::nv::Persistent;
use vtpm::{MemNvStore, Tpm};

use crate::tpm_common::{check_response, startup_command, Counter, Ticks};

/// First byte: take the rest as a whole image, checksum included.
const RAW: u8 = 0xFF;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let image = if control == RAW {
        rest.to_vec()
    } else {
        let mut v = rest.to_vec();
        v.extend_from_slice(HashAlg::Sha256.digest(&[rest]).as_bytes());
        v
    };
    let Ok(p) = Persistent::decode(&image) else {
        return;
    };
    let again = p.encode();
    assert_eq!(
        Persistent::decode(&again).as_ref(),
        Ok(&p),
        "NV image round trip"
    );
    let nv = MemNvStore {
        image: Some(image),
        writes: 0,
    };
    let Ok(mut tpm) = Tpm::new(
        Box::new(Counter(3)),
        Box::new(Ticks::default()),
        Box::new(nv),
    ) else {
        panic!("a TPM refused an NV image that decodes");
    };
    check_response(&tpm.execute(0, &startup_command()));
}
