//! The endorsement identity: the TCG default EK templates (EK Credential
//! Profile 2.x, low range: template L-1 RSA 2048 and L-2 ECC NIST P-256; high
//! range: H-3 ECC NIST P-384, H-4 ECC NIST P-521 and H-6 RSA 3072), the
//! vTPM manufacturer CA that certifies them, and the EK certificates it writes
//! at manufacture into the TCG-standard NV indices (0x01C00002 RSA, 0x01C0000A
//! ECC; 0x01C00016, 0x01C00018 and 0x01C0001C for H-3, H-4, H-6): DER X.509 v3 with the TCG EK extensions — an empty subject with a
//! critical subjectAltName whose directory name carries tcg-at-tpmManufacturer,
//! tcg-at-tpmModel and tcg-at-tpmVersion, the key usage of an encryption key
//! (keyEncipherment for RSA, keyAgreement for ECC), basicConstraints CA:FALSE,
//! the tcg-kp-EKCertificate extended key usage and the authority key identifier.
//!
//! The CA is an ECDSA P-256 key given as its 32-byte secret by the platform (the
//! hypervisor keeps it in the system disk's registry, never in guest memory);
//! its self-signed certificate is a deterministic function of that secret and
//! the system disk's identity, so any holder of the secret can re-export it.

use crate::commands::capability::{FIRMWARE_VERSION, MANUFACTURER, VENDOR_STRINGS};
use crate::commands::object::derive_primary;
use crate::defs::handle;
use crate::hash::HashAlg;
use crate::marshal::Reader;
use crate::nvindex::{nva, NvIndex, NvPublic};
use crate::public::{attr, ids, Curve, Public, SymObject, P256_BYTES};
use crate::{NvError, Tpm};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use der::asn1::{
    Any, BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString, SetOfVec, UintRef,
    UtcTime,
};
use der::{DateTime, Decode, Encode, Sequence, Tag};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// NV index of the RSA 2048 EK certificate (EK Credential Profile §2.2.1.4).
pub const EK_CERT_RSA_INDEX: u32 = 0x01C0_0002;
/// NV index of the ECC NIST P-256 EK certificate.
pub const EK_CERT_ECC_INDEX: u32 = 0x01C0_000A;
/// NV index of the ECC NIST P-384 EK certificate (template H-3).
pub const EK_CERT_ECC_P384_INDEX: u32 = 0x01C0_0016;
/// NV index of the ECC NIST P-521 EK certificate (template H-4).
pub const EK_CERT_ECC_P521_INDEX: u32 = 0x01C0_0018;
/// NV index of the RSA 3072 EK certificate (template H-6).
pub const EK_CERT_RSA3072_INDEX: u32 = 0x01C0_001C;

/// authPolicy of the high-range templates of SHA-384 name: policy B,
/// PolicyOR(policy A = PolicySecret(TPM_RH_ENDORSEMENT), policy C =
/// PolicyAuthorizeNV(0x01C07F02)) (EK Credential Profile, "Computing
/// PolicyB").
pub const EK_POLICY_B_SHA384: [u8; 48] = [
    0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
    0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
    0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
];
/// Policy B of SHA-512 name (policy C: PolicyAuthorizeNV(0x01C07F03)).
pub const EK_POLICY_B_SHA512: [u8; 64] = [
    0xB8, 0x22, 0x1C, 0xA6, 0x9E, 0x85, 0x50, 0xA4, 0x91, 0x4D, 0xE3, 0xFA, 0xA6, 0xA1, 0x8C, 0x07,
    0x2C, 0xC0, 0x12, 0x08, 0x07, 0x3A, 0x92, 0x8D, 0x5D, 0x66, 0xD5, 0x9E, 0xF7, 0x9E, 0x49, 0xA4,
    0x29, 0xC4, 0x1A, 0x6B, 0x26, 0x95, 0x71, 0xD5, 0x7E, 0xDB, 0x25, 0xFB, 0xDB, 0x18, 0x38, 0x42,
    0x56, 0x08, 0xB4, 0x13, 0xCD, 0x61, 0x6A, 0x5F, 0x6D, 0xB5, 0xB6, 0x07, 0x1A, 0xF9, 0x9B, 0xEA,
];

/// Object attributes of the high-range templates: those of the low range
/// and userWithAuth (policy B admits the authValue's PolicySecret).
pub const EK_HIGH_ATTRIBUTES: u32 = EK_ATTRIBUTES | attr::USER_WITH_AUTH;

/// authPolicy of the default EK templates: PolicySecret(TPM_RH_ENDORSEMENT)
/// computed with SHA-256 (EK Credential Profile, policy A).
pub const EK_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Object attributes of the default EK templates: fixedTPM, fixedParent,
/// sensitiveDataOrigin, adminWithPolicy, restricted, decrypt.
pub const EK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

/// Bytes of the RSA 2048 modulus (the zero unique field of template L-1).
const RSA2048_BYTES: usize = 256;
/// keyBits of template L-1.
const RSA2048_BITS: u16 = 2048;
/// keyBits of template H-6.
const RSA3072_BITS: u16 = 3072;

/// TCG OIDs (TCG EK Credential Profile §3.1, TCG OID registry).
pub mod oid {
    use der::asn1::ObjectIdentifier;
    /// tcg-at-tpmManufacturer.
    pub const TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
    /// tcg-at-tpmModel.
    pub const TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
    /// tcg-at-tpmVersion.
    pub const TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");
    /// tcg-kp-EKCertificate.
    pub const KP_EK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.1");
    /// id-ecPublicKey.
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// prime256v1 (secp256r1).
    pub const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    /// prime192v1 (NIST P-192).
    pub const PRIME192V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.1");
    /// secp224r1 (NIST P-224).
    pub const SECP224R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");
    /// sm2p256v1 (GB/T 32918.5's curve, GM/T 0006).
    pub const SM2_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");
    /// secp384r1 (NIST P-384).
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// secp521r1 (NIST P-521).
    pub const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
    /// rsaEncryption.
    pub const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    /// ecdsa-with-SHA256.
    pub const ECDSA_WITH_SHA256: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    /// id-at-commonName.
    pub const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    /// id-at-organizationName.
    pub const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
    /// id-at-serialNumber.
    pub const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
}

/// The EK templates the TPM certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkKind {
    /// Template L-1: RSA 2048, AES-128-CFB, SHA-256.
    Rsa2048,
    /// Template L-2: ECC NIST P-256, AES-128-CFB, SHA-256.
    EccP256,
    /// Template H-3: ECC NIST P-384, AES-256-CFB, SHA-384, policy B.
    EccP384,
    /// Template H-4: ECC NIST P-521, AES-256-CFB, SHA-512, policy B.
    EccP521,
    /// Template H-6: RSA 3072, AES-256-CFB, SHA-384, policy B.
    Rsa3072,
}

impl EkKind {
    /// Every kind: the low range (RSA first), then the high range.
    pub const ALL: [EkKind; 5] = [
        EkKind::Rsa2048,
        EkKind::EccP256,
        EkKind::EccP384,
        EkKind::EccP521,
        EkKind::Rsa3072,
    ];

    /// The default template (TPMT_PUBLIC) of this kind: the low range with a
    /// zero-filled unique field of the key's size, the high range with an
    /// empty one.
    pub fn template(self) -> Public {
        use crate::public::Curve;
        let (ty, curve, bits) = match self {
            EkKind::Rsa2048 => (ids::RSA, Curve::P256, RSA2048_BITS),
            EkKind::EccP256 => (ids::ECC, Curve::P256, 0),
            EkKind::EccP384 => (ids::ECC, Curve::P384, 0),
            EkKind::EccP521 => (ids::ECC, Curve::P521, 0),
            EkKind::Rsa3072 => (ids::RSA, Curve::P256, RSA3072_BITS),
        };
        let (name_alg, policy): (HashAlg, &[u8]) = match self {
            EkKind::Rsa2048 | EkKind::EccP256 => (HashAlg::Sha256, &EK_POLICY_SHA256),
            EkKind::EccP384 | EkKind::Rsa3072 => (HashAlg::Sha384, &EK_POLICY_B_SHA384),
            EkKind::EccP521 => (HashAlg::Sha512, &EK_POLICY_B_SHA512),
        };
        let low = matches!(self, EkKind::Rsa2048 | EkKind::EccP256);
        let (x, y) = match (low, ty) {
            (true, ids::RSA) => (vec![0; RSA2048_BYTES], Vec::new()),
            (true, _) => (vec![0; P256_BYTES], vec![0; P256_BYTES]),
            (false, _) => (Vec::new(), Vec::new()),
        };
        Public {
            ty,
            name_alg,
            attributes: if low {
                EK_ATTRIBUTES
            } else {
                EK_HIGH_ATTRIBUTES
            },
            auth_policy: policy.to_vec(),
            symmetric: SymObject::AesCfb(if low { 128 } else { 256 }),
            scheme: None,
            x,
            y,
            exponent: 0,
            rsa_bits: bits,
            ecdaa_count: 0,
            curve,
        }
    }

    /// The NV index holding this kind's EK certificate.
    pub fn cert_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => EK_CERT_RSA_INDEX,
            EkKind::EccP256 => EK_CERT_ECC_INDEX,
            EkKind::EccP384 => EK_CERT_ECC_P384_INDEX,
            EkKind::EccP521 => EK_CERT_ECC_P521_INDEX,
            EkKind::Rsa3072 => EK_CERT_RSA3072_INDEX,
        }
    }
}

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkError {
    /// The CA secret is not a valid P-256 scalar.
    BadCaKey,
    /// The TPM refused to derive the EK (its TPM_RC).
    Derive(u32),
    /// DER encoding failed.
    Der,
    /// Storing the NV image failed.
    Nv(NvError),
}

impl From<der::Error> for EkError {
    fn from(_: der::Error) -> Self {
        EkError::Der
    }
}

/// ECDSA-Sig-Value.
#[derive(Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// RSAPublicKey (PKCS #1).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// The vTPM manufacturer CA of one system disk.
pub struct ManufacturerCa {
    key: SigningKey,
    name: Name,
    key_id: Vec<u8>,
    cert_der: Vec<u8>,
}

fn utf8(s: &str) -> Result<Any, EkError> {
    Ok(Any::new(Tag::Utf8String, s.as_bytes())?)
}

fn rdn(oid: ObjectIdentifier, value: Any) -> Result<RelativeDistinguishedName, EkError> {
    let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])?;
    Ok(RelativeDistinguishedName(set))
}

fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// A positive DER serial number from a digest (16 bytes, top bit clear, first
/// byte non-zero so the encoding is minimal).
fn serial_from(d: &[u8]) -> Result<SerialNumber, EkError> {
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[0] = (b[0] & 0x7F) | 0x01;
    Ok(SerialNumber::new(&b)?)
}

fn extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, EkError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::ECDSA_WITH_SHA256,
        parameters: None,
    }
}

/// The validity of every certificate made here: from 2025-01-01 with no
/// well-defined expiration (RFC 5280 §4.1.2.5, 99991231235959Z).
fn validity() -> Result<Validity, EkError> {
    Ok(Validity {
        not_before: Time::UtcTime(UtcTime::from_date_time(DateTime::new(
            2025, 1, 1, 0, 0, 0,
        )?)?),
        not_after: Time::GeneralTime(GeneralizedTime::from_date_time(DateTime::new(
            9999, 12, 31, 23, 59, 59,
        )?)),
    })
}

/// The SubjectPublicKeyInfo of an ECC point (uncompressed, RFC 5480's named
/// curve).
fn ec_spki(curve: Curve, x: &[u8], y: &[u8]) -> Result<SubjectPublicKeyInfoOwned, EkError> {
    let mut point = vec![0x04];
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    let named = match curve {
        Curve::P256 => &oid::PRIME256V1,
        Curve::P384 => &oid::SECP384R1,
        Curve::P521 => &oid::SECP521R1,
        Curve::P192 => &oid::PRIME192V1,
        Curve::P224 => &oid::SECP224R1,
        Curve::Sm2P256 => &oid::SM2_P256,
        // The Algorithm Registry's BN curves have no OID.
        Curve::BnP256 | Curve::BnP638 => return Err(EkError::Der),
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(Any::from(named)),
        },
        subject_public_key: BitString::from_bytes(&point)?,
    })
}

/// The SubjectPublicKeyInfo of a TPM public area (RSA, or ECC on any curve).
pub fn spki_of(public: &Public) -> Result<SubjectPublicKeyInfoOwned, EkError> {
    if public.ty == ids::ECC {
        return ec_spki(public.curve, &public.x, &public.y);
    }
    let e = if public.exponent == 0 {
        crate::rsa_key::DEFAULT_EXPONENT
    } else {
        public.exponent
    };
    let e_bytes = e.to_be_bytes();
    let key = RsaPublicKey {
        modulus: UintRef::new(&public.x)?,
        public_exponent: UintRef::new(&e_bytes)?,
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::from(Null)),
        },
        subject_public_key: BitString::from_bytes(&key.to_der()?)?,
    })
}

impl ManufacturerCa {
    /// The CA of the system disk `disk_id` with the secret scalar `secret`.
    pub fn new(secret: &[u8; 32], disk_id: &[u8; 16]) -> Result<Self, EkError> {
        let key = SigningKey::from_slice(secret).map_err(|_| EkError::BadCaKey)?;
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (
            point.x().ok_or(EkError::BadCaKey)?,
            point.y().ok_or(EkError::BadCaKey)?,
        );
        let spki = ec_spki(Curve::P256, x, y)?;
        // Key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2 (1)).
        let key_id = HashAlg::Sha1
            .digest(&[spki.subject_public_key.raw_bytes()])
            .as_bytes()
            .to_vec();
        let name = Name::from(RdnSequence(vec![
            rdn(oid::ORGANIZATION, utf8("RayOS")?)?,
            rdn(oid::COMMON_NAME, utf8("RayOS vTPM Manufacturer CA")?)?,
            rdn(
                oid::SERIAL_NUMBER,
                Any::new(Tag::PrintableString, hex(disk_id).as_bytes())?,
            )?,
        ]));
        let usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: serial_from(
                HashAlg::Sha256
                    .digest(&[b"CA", disk_id, &key_id])
                    .as_bytes(),
            )?,
            signature: ecdsa_sha256(),
            issuer: name.clone(),
            validity: validity()?,
            subject: name.clone(),
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                extension(
                    const_oid_bc(),
                    true,
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(0),
                    },
                )?,
                extension(const_oid_ku(), true, &usage)?,
                extension(
                    const_oid_ski(),
                    false,
                    &SubjectKeyIdentifier(OctetString::new(key_id.clone())?),
                )?,
            ]),
        };
        let mut ca = Self {
            key,
            name,
            key_id,
            cert_der: Vec::new(),
        };
        ca.cert_der = ca.sign(tbs)?;
        Ok(ca)
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    fn sign(&self, tbs: TbsCertificate) -> Result<Vec<u8>, EkError> {
        let tbs_der = tbs.to_der()?;
        // RFC 6979 deterministic ECDSA over SHA-256.
        let sig: Signature = self.key.sign(&tbs_der);
        let (r, s) = sig.split_bytes();
        let sig_der = EcdsaSig {
            r: UintRef::new(&r)?,
            s: UintRef::new(&s)?,
        }
        .to_der()?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: ecdsa_sha256(),
            signature: BitString::from_bytes(&sig_der)?,
        };
        Ok(cert.to_der()?)
    }

    /// The EK certificate of the EK whose public area is `ek`.
    pub fn certify_ek(&self, ek: &Public) -> Result<Vec<u8>, EkError> {
        let spki = spki_of(ek)?;
        let manufacturer = alloc::format!("id:{}", hex(&MANUFACTURER));
        let model: String = VENDOR_STRINGS
            .iter()
            .flatten()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect();
        let version = alloc::format!("id:{}", hex(&FIRMWARE_VERSION.0.to_be_bytes()));
        let tpm_name = Name::from(RdnSequence(vec![
            rdn(oid::TPM_MANUFACTURER, utf8(&manufacturer)?)?,
            rdn(oid::TPM_MODEL, utf8(&model)?)?,
            rdn(oid::TPM_VERSION, utf8(&version)?)?,
        ]));
        let usage = if ek.ty == ids::RSA {
            KeyUsage(KeyUsages::KeyEncipherment.into())
        } else {
            KeyUsage(KeyUsages::KeyAgreement.into())
        };
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: serial_from(
                HashAlg::Sha256
                    .digest(&[b"EK", &self.key_id, spki.subject_public_key.raw_bytes()])
                    .as_bytes(),
            )?,
            signature: ecdsa_sha256(),
            issuer: self.name.clone(),
            validity: validity()?,
            // The EK Credential Profile leaves the subject empty; the TPM's
            // identity is in the (then critical) subjectAltName.
            subject: Name::default(),
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                extension(
                    const_oid_aki(),
                    false,
                    &AuthorityKeyIdentifier {
                        key_identifier: Some(OctetString::new(self.key_id.clone())?),
                        authority_cert_issuer: None,
                        authority_cert_serial_number: None,
                    },
                )?,
                extension(
                    const_oid_bc(),
                    true,
                    &BasicConstraints {
                        ca: false,
                        path_len_constraint: None,
                    },
                )?,
                extension(const_oid_ku(), true, &usage)?,
                extension(
                    const_oid_eku(),
                    false,
                    &ExtendedKeyUsage(vec![oid::KP_EK_CERTIFICATE]),
                )?,
                extension(
                    const_oid_san(),
                    true,
                    &SubjectAltName(vec![GeneralName::DirectoryName(tpm_name)]),
                )?,
            ]),
        };
        self.sign(tbs)
    }
}

fn const_oid_bc() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.19")
}
fn const_oid_ku() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.15")
}
fn const_oid_ski() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.14")
}
fn const_oid_aki() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.35")
}
fn const_oid_eku() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.37")
}
fn const_oid_san() -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap("2.5.29.17")
}

/// PEM armour (RFC 7468) of `der` with `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for c in der.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = alloc::format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(core::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&alloc::format!("-----END {label}-----\n"));
    out
}

/// Attributes of the EK certificate indices: platform-created, written,
/// write-locked (written once at manufacture), readable by owner, platform and
/// with its (empty) authValue, not dictionary-attack protected.
const EK_CERT_NV_ATTRIBUTES: u32 = nva::PPWRITE
    | nva::WRITEDEFINE
    | nva::WRITELOCKED
    | nva::WRITTEN
    | nva::PPREAD
    | nva::OWNERREAD
    | nva::AUTHREAD
    | nva::NO_DA
    | nva::PLATFORMCREATE;

impl Tpm {
    /// The public area of the EK the endorsement hierarchy derives from the
    /// default template of `kind` (what TPM2_CreatePrimary returns for it).
    pub fn ek_public(&mut self, kind: EkKind) -> Result<Public, EkError> {
        let template = kind.template();
        let bytes = template.marshal();
        // The bytes re-parse exactly as CreatePrimary parses them.
        let public = Public::unmarshal(&mut Reader::new(&bytes)).map_err(EkError::Derive)?;
        let key = derive_primary(self, handle::ENDORSEMENT, &[], &[], &bytes, public)
            .map_err(EkError::Derive)?;
        Ok(key.public)
    }

    /// The EK certificate (DER) in the NV index of `kind`, if provisioned.
    pub fn ek_certificate(&self, kind: EkKind) -> Option<&[u8]> {
        self.nv_index(kind.cert_index())
            .filter(|i| i.public.has(nva::WRITTEN))
            .map(|i| i.data.as_slice())
    }

    /// Writes the EK certificates signed by `ca` into their NV indices, unless
    /// they are already there (idempotent: called at every power-on, it
    /// certifies once, at manufacture). Returns how many were written.
    pub fn provision_ek_certificates(&mut self, ca: &ManufacturerCa) -> Result<usize, EkError> {
        let mut written = 0;
        for kind in EkKind::ALL {
            if self.nv_index(kind.cert_index()).is_some() {
                continue;
            }
            let ek = self.ek_public(kind)?;
            let cert = ca.certify_ek(&ek)?;
            let public = NvPublic {
                index: kind.cert_index(),
                name_alg: HashAlg::Sha256,
                attributes: EK_CERT_NV_ATTRIBUTES,
                auth_policy: Vec::new(),
                data_size: cert.len() as u16,
            };
            self.p.nv_indices.push(NvIndex {
                public,
                auth: crate::hash::Digest::filled(0, 0),
                data: cert,
            });
            written += 1;
        }
        if written != 0 {
            self.p.nv_indices.sort_by_key(|i| i.public.index);
            self.commit().map_err(EkError::Nv)?;
        }
        Ok(written)
    }
}

/// Parses a DER certificate (for verifiers and tests).
pub fn parse_certificate(der: &[u8]) -> Result<Certificate, EkError> {
    Ok(Certificate::from_der(der)?)
}

#[cfg(test)]
#[path = "ek_tests.rs"]
mod tests;
