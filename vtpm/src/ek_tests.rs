//! EK certificate tests: provisioned at manufacture, read back the way a guest
//! reads them (TPM2_NV_ReadPublic / TPM2_NV_Read), parsed, chained to the
//! manufacturer CA and matched against TPM2_CreatePrimary's EK.

extern crate std;

use super::*;
use crate::defs::{cc, limits, su};
use crate::marshal::Writer;
use crate::object_tests::create_primary;
use crate::tests::{command, new_tpm, rc_of, startup, SharedNv, TestClock};
use der::Decode;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::VerifyingKey;

const CA_SECRET: [u8; 32] = [0x5A; 32];
const DISK_ID: [u8; 16] = [0x11; 16];

fn ca() -> ManufacturerCa {
    ManufacturerCa::new(&CA_SECRET, &DISK_ID).unwrap()
}

/// Reads a whole NV index through TPM2_NV_ReadPublic and chunked TPM2_NV_Read
/// with the index's own (empty) authValue.
fn read_nv(t: &mut Tpm, index: u32) -> Vec<u8> {
    let r = t.execute(0, &command(cc::NV_READ_PUBLIC, &[index], &[], &[]));
    assert_eq!(rc_of(&r), 0, "NV_ReadPublic {index:#x}");
    let mut rd = Reader::new(&r[10..]);
    let pubarea = rd.tpm2b(256).unwrap();
    let nvp = NvPublic::unmarshal_2b(&mut Reader::new(&{
        let mut w = Writer::new();
        w.tpm2b(pubarea);
        w.buf
    }))
    .unwrap();
    assert_eq!(nvp.index, index);
    assert!(nvp.has(nva::PLATFORMCREATE | nva::WRITTEN | nva::AUTHREAD));
    let mut out = Vec::new();
    while out.len() < nvp.data_size as usize {
        let n = (nvp.data_size as usize - out.len()).min(limits::MAX_BUFFER);
        let mut w = Writer::new();
        w.u16(n as u16).u16(out.len() as u16);
        let r = t.execute(0, &command(cc::NV_READ, &[index, index], &[b""], &w.buf));
        assert_eq!(rc_of(&r), 0, "NV_Read {index:#x}");
        // Sessions response without handles: parameterSize, then parameters.
        let n = u32::from_be_bytes(r[10..14].try_into().unwrap()) as usize;
        let mut rd = Reader::new(&r[14..14 + n]);
        out.extend_from_slice(rd.tpm2b(limits::MAX_BUFFER).unwrap());
    }
    out
}

/// Checks `cert` is signed by `ca_cert`'s key (ECDSA P-256 / SHA-256).
fn verify_signed_by(cert: &Certificate, ca_cert: &Certificate) -> bool {
    let ca_key = VerifyingKey::from_sec1_bytes(
        ca_cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let tbs = cert.tbs_certificate.to_der().unwrap();
    let sig = cert.signature.raw_bytes();
    let Ok(sig) = p256::ecdsa::Signature::from_der(sig) else {
        return false;
    };
    cert.signature_algorithm.oid == oid::ECDSA_WITH_SHA256 && ca_key.verify(&tbs, &sig).is_ok()
}

#[test]
fn ek_certificates_chain_to_the_ca_and_match_create_primary() {
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    let ca = ca();
    assert_eq!(t.provision_ek_certificates(&ca).unwrap(), EkKind::ALL.len());
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let ca_cert = parse_certificate(ca.certificate_der()).unwrap();
    assert!(verify_signed_by(&ca_cert, &ca_cert), "CA self-signature");
    for kind in EkKind::ALL {
        let der = read_nv(&mut t, kind.cert_index());
        assert_eq!(t.ek_certificate(kind), Some(der.as_slice()));
        let cert = Certificate::from_der(&der).unwrap();
        assert!(
            verify_signed_by(&cert, &ca_cert),
            "{kind:?} chains to the CA"
        );
        assert_eq!(cert.tbs_certificate.issuer, ca_cert.tbs_certificate.subject);
        // The TPM's EK from the default template has the certified key.
        let (rc0, h, public) =
            create_primary(&mut t, handle::ENDORSEMENT, &kind.template(), b"", b"");
        assert_eq!(rc0, 0);
        crate::object_tests::flush(&mut t, h);
        let ek = Public::unmarshal(&mut Reader::new(&public)).unwrap();
        assert_eq!(
            cert.tbs_certificate.subject_public_key_info,
            spki_of(&ek).unwrap(),
            "{kind:?}"
        );
        // A different key does not match (the comparison can fail).
        let mut template = kind.template();
        match template.x.first_mut() {
            Some(b) => *b = 1,
            None => template.x.push(1),
        }
        let (rc2, h2, other) = create_primary(&mut t, handle::ENDORSEMENT, &template, b"", b"");
        assert_eq!(rc2, 0);
        crate::object_tests::flush(&mut t, h2);
        let other = Public::unmarshal(&mut Reader::new(&other)).unwrap();
        assert_ne!(
            cert.tbs_certificate.subject_public_key_info,
            spki_of(&other).unwrap()
        );
        // The TCG EK extensions.
        let exts = cert.tbs_certificate.extensions.as_ref().unwrap();
        let find = |o: &str| {
            exts.iter()
                .find(|e| e.extn_id == ObjectIdentifier::new_unwrap(o))
                .unwrap_or_else(|| panic!("{o} missing"))
        };
        let san = find("2.5.29.17");
        assert!(san.critical, "empty subject: SAN is critical");
        let san = SubjectAltName::from_der(san.extn_value.as_bytes()).unwrap();
        let GeneralName::DirectoryName(dn) = &san.0[0] else {
            panic!("SAN is no directory name")
        };
        let attrs: Vec<_> = dn.0.iter().map(|r| r.0.as_slice()[0].oid).collect();
        assert_eq!(
            attrs,
            [oid::TPM_MANUFACTURER, oid::TPM_MODEL, oid::TPM_VERSION]
        );
        let eku = ExtendedKeyUsage::from_der(find("2.5.29.37").extn_value.as_bytes()).unwrap();
        assert_eq!(eku.0, [oid::KP_EK_CERTIFICATE]);
        let ku = KeyUsage::from_der(find("2.5.29.15").extn_value.as_bytes()).unwrap();
        match kind {
            EkKind::Rsa2048 | EkKind::Rsa3072 => assert!(ku.key_encipherment()),
            EkKind::EccP256 | EkKind::EccP384 | EkKind::EccP521 => assert!(ku.key_agreement()),
        }
        assert!(cert.tbs_certificate.subject.0.is_empty());
    }
    // Certified once: a second power-on keeps the same certificates, and the
    // indices survive the NV image.
    let first = read_nv(&mut t, EK_CERT_RSA_INDEX);
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(t.provision_ek_certificates(&ca).unwrap(), 0);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(read_nv(&mut t, EK_CERT_RSA_INDEX), first);
}

/// The templates as the EK Credential Profile gives them: the high range's
/// curves, key sizes, name algorithms, AES-256 and empty unique fields, and
/// their policy B = PolicyOR(policy A, policy C), recomputed here from policy
/// A = PolicySecret(TPM_RH_ENDORSEMENT) (whose SHA-256 value is the low
/// range's policy) and the profile's policy C values.
#[test]
fn templates_follow_the_credential_profile() {
    use crate::public::Curve;
    let policy_a = |h: HashAlg| {
        let zero = alloc::vec![0u8; h.digest_size()];
        let d = h.digest(&[
            &zero,
            &cc::POLICY_SECRET.to_be_bytes(),
            &handle::ENDORSEMENT.to_be_bytes(),
        ]);
        h.digest(&[d.as_bytes()]).as_bytes().to_vec()
    };
    assert_eq!(policy_a(HashAlg::Sha256), EK_POLICY_SHA256);
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let policy_c = [
        (HashAlg::Sha384, unhex("d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165")),
        (HashAlg::Sha512, unhex("589ee1e146544716e8deafe6db247b01b81e9f9c7dd16b814aa159138749105fba5388dd1dea702f35240c184933121e2c61b8f50d3ef91393a49a38c3f73fc8")),
    ];
    for (h, c) in policy_c {
        let zero = alloc::vec![0u8; h.digest_size()];
        let b = h.digest(&[&zero, &cc::POLICY_OR.to_be_bytes(), &policy_a(h), &c]);
        let want: &[u8] = if h == HashAlg::Sha384 {
            &EK_POLICY_B_SHA384
        } else {
            &EK_POLICY_B_SHA512
        };
        assert_eq!(b.as_bytes(), want, "{h:?}");
    }
    for (kind, ty, curve, bits, h) in [
        (EkKind::EccP384, ids::ECC, Curve::P384, 0, HashAlg::Sha384),
        (EkKind::EccP521, ids::ECC, Curve::P521, 0, HashAlg::Sha512),
        (
            EkKind::Rsa3072,
            ids::RSA,
            Curve::P256,
            3072,
            HashAlg::Sha384,
        ),
    ] {
        let t = kind.template();
        assert_eq!((t.ty, t.name_alg, t.rsa_bits), (ty, h, bits), "{kind:?}");
        if ty == ids::ECC {
            assert_eq!(t.curve, curve);
        }
        assert_eq!(t.symmetric, SymObject::AesCfb(256));
        assert!(t.x.is_empty() && t.y.is_empty());
        assert!(t.has(EK_ATTRIBUTES | attr::USER_WITH_AUTH));
        assert_eq!(t.scheme, None);
        assert_eq!(t.auth_policy.len(), h.digest_size());
    }
    let indices: Vec<u32> = EkKind::ALL.iter().map(|k| k.cert_index()).collect();
    assert_eq!(
        indices,
        [
            0x01C0_0002,
            0x01C0_000A,
            0x01C0_0016,
            0x01C0_0018,
            0x01C0_001C
        ]
    );
}

#[test]
fn certificates_of_another_ca_do_not_chain() {
    let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
    let other = ManufacturerCa::new(&[0x77; 32], &DISK_ID).unwrap();
    t.provision_ek_certificates(&other).unwrap();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let ca_cert = parse_certificate(ca().certificate_der()).unwrap();
    let cert = Certificate::from_der(&read_nv(&mut t, EK_CERT_ECC_INDEX)).unwrap();
    assert!(!verify_signed_by(&cert, &ca_cert));
    // A flipped bit in the signed part breaks the signature.
    let other_cert = parse_certificate(other.certificate_der()).unwrap();
    assert!(verify_signed_by(&cert, &other_cert));
    let mut bad = cert.clone();
    bad.tbs_certificate.serial_number = SerialNumber::new(&[1]).unwrap();
    assert!(!verify_signed_by(&bad, &other_cert));
}

#[test]
fn the_ca_certificate_is_a_function_of_secret_and_disk() {
    assert_eq!(ca().certificate_der(), ca().certificate_der());
    let other_disk = ManufacturerCa::new(&CA_SECRET, &[0x22; 16]).unwrap();
    assert_ne!(ca().certificate_der(), other_disk.certificate_der());
    assert_eq!(
        ManufacturerCa::new(&[0; 32], &DISK_ID).err(),
        Some(EkError::BadCaKey)
    );
    let pem = ca().certificate_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
}

/// With OpenSSL installed: `openssl verify -CAfile ca.pem ek.pem` accepts both
/// EK certificates (and refuses them against another CA).
#[test]
fn openssl_verifies_the_chain_when_installed() {
    use std::process::Command;
    if Command::new("openssl").arg("version").output().is_err() {
        std::eprintln!("openssl not installed: chain checked with the crates only");
        return;
    }
    let dir = std::env::temp_dir().join(std::format!("vtpm-ek-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
    let ca = ca();
    t.provision_ek_certificates(&ca).unwrap();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.certificate_pem()).unwrap();
    let other_pem = dir.join("other.pem");
    let other = ManufacturerCa::new(&[0x77; 32], &DISK_ID).unwrap();
    std::fs::write(&other_pem, other.certificate_pem()).unwrap();
    for kind in EkKind::ALL {
        let ek_pem = dir.join(std::format!("{kind:?}.pem"));
        std::fs::write(
            &ek_pem,
            pem("CERTIFICATE", &read_nv(&mut t, kind.cert_index())),
        )
        .unwrap();
        let run = |ca: &std::path::Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .arg(&ek_pem)
                .output()
                .unwrap()
        };
        let ok = run(&ca_pem);
        assert!(
            ok.status.success(),
            "{kind:?}: {}{}",
            std::string::String::from_utf8_lossy(&ok.stdout),
            std::string::String::from_utf8_lossy(&ok.stderr)
        );
        assert!(
            !run(&other_pem).status.success(),
            "{kind:?} verified by another CA"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
