//! Object public areas (TPMT_PUBLIC) of the key types this TPM implements —
//! ECC keys on NIST P-192, P-224, P-256, P-384, P-521 and SM2 P-256, RSA keys of 1024, 2048 and 3072 bits, keyed-hash and symmetric objects — with their unmarshalling checks, marshalling,
//! Names (nameAlg || H(TPMT_PUBLIC)) and the attribute rules of Part 1 §27
//! (PublicAttributesValidation). Also the ECC key pair helpers over both
//! curves ([`EcScalar`], [`EcPublic`]): key derivation from a seed, public
//! point computation, ECDH, ECDSA, EC Schnorr, SM2 signatures and the
//! ECMQV and SM2 key-exchange primitives of TPM2_ZGen_2Phase.

use crate::defs::{alg, limits, rc};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use alloc::vec::Vec;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve as ec;
use p256::{FieldBytes, NonZeroScalar, PublicKey};

/// TPMA_OBJECT bits.
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
    pub const X509_SIGN: u32 = 1 << 19;
    /// Bits with no assigned meaning (TPM_RC_RESERVED_BITS).
    pub const RESERVED: u32 = 1 | 1 << 3 | 0x300 | 0xF000 | 0xFFF0_0000;
}

/// TPM_ALG_ID / TPM_ECC_CURVE values used by public areas.
pub mod ids {
    pub const ECC: u16 = 0x0023;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    /// TPM_ALG_ECDAA: the anonymous (split) signing scheme of TPM2_Commit.
    pub const ECDAA: u16 = 0x001A;
    pub const NIST_P192: u16 = 0x0001;
    pub const NIST_P224: u16 = 0x0002;
    pub const NIST_P256: u16 = 0x0003;
    pub const NIST_P384: u16 = 0x0004;
    pub const NIST_P521: u16 = 0x0005;
    /// TPM_ECC_BN_P256: the 256-bit Barreto–Naehrig curve ([`crate::bn`]).
    pub const BN_P256: u16 = 0x0010;
    /// TPM_ECC_BN_P638: the 638-bit Barreto–Naehrig curve ([`crate::bn`]).
    pub const BN_P638: u16 = 0x0011;
    /// TPM_ECC_SM2_P256: the curve of GB/T 32918.5.
    pub const SM2_P256: u16 = 0x0020;
    pub const AES: u16 = 0x0006;
    pub const CFB: u16 = 0x0043;
    pub const CTR: u16 = 0x0040;
    pub const OFB: u16 = 0x0041;
    pub const CBC: u16 = 0x0042;
    pub const ECB: u16 = 0x0044;
    /// TPM_ALG_CMAC: a symmetric key's MAC mode (SP 800-38B).
    pub const CMAC: u16 = 0x003F;
    pub const RSA: u16 = 0x0001;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const SM2: u16 = 0x001B;
    pub const ECSCHNORR: u16 = 0x001C;
    pub const ECMQV: u16 = 0x001D;
    pub const MGF1: u16 = 0x0007;
    pub const TDES: u16 = 0x0003;
    pub const CAMELLIA: u16 = 0x0026;
    pub const KDF2: u16 = 0x0021;
    pub const KDF1_SP800_108: u16 = 0x0022;
}

/// Bytes of a P-192 coordinate or scalar.
pub const P192_BYTES: usize = 24;
/// Bytes of a P-224 coordinate or scalar.
pub const P224_BYTES: usize = 28;
/// Bytes of a P-256 (or SM2 P-256) coordinate or scalar.
pub const P256_BYTES: usize = 32;
/// Bytes of a P-384 coordinate or scalar.
pub const P384_BYTES: usize = 48;
/// Bytes of a P-521 coordinate or scalar.
pub const P521_BYTES: usize = 66;
/// Bytes of a BN P-638 coordinate or scalar.
pub const BN_P638_BYTES: usize = 80;
/// The largest coordinate of an implemented curve (MAX_ECC_KEY_BYTES).
pub const MAX_ECC_BYTES: usize = BN_P638_BYTES;

/// An implemented ECC curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P192,
    P224,
    P256,
    P384,
    P521,
    BnP256,
    BnP638,
    Sm2P256,
}

impl Curve {
    /// Every implemented curve, ascending by TPM_ECC_CURVE.
    pub const ALL: [Curve; 8] = [
        Curve::P192,
        Curve::P224,
        Curve::P256,
        Curve::P384,
        Curve::P521,
        Curve::BnP256,
        Curve::BnP638,
        Curve::Sm2P256,
    ];
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.id() == id)
    }
    pub fn id(self) -> u16 {
        match self {
            Curve::P192 => ids::NIST_P192,
            Curve::P224 => ids::NIST_P224,
            Curve::P256 => ids::NIST_P256,
            Curve::P384 => ids::NIST_P384,
            Curve::P521 => ids::NIST_P521,
            Curve::BnP256 => ids::BN_P256,
            Curve::BnP638 => ids::BN_P638,
            Curve::Sm2P256 => ids::SM2_P256,
        }
    }
    /// Bytes of a coordinate or scalar.
    pub fn bytes(self) -> usize {
        match self {
            Curve::P192 => P192_BYTES,
            Curve::P224 => P224_BYTES,
            Curve::P256 | Curve::BnP256 | Curve::Sm2P256 => P256_BYTES,
            Curve::P384 => P384_BYTES,
            Curve::P521 => P521_BYTES,
            Curve::BnP638 => BN_P638_BYTES,
        }
    }
    /// Bits of the group order n (ceil(log2 n)).
    pub fn order_bits(self) -> usize {
        num_bigint_dig::BigUint::from_bytes_be(&order(self)).bits()
    }
}

/// A private scalar on one of the curves.
#[derive(Clone, Copy)]
pub enum EcScalar {
    P192(ec::NonZeroScalar<p192::NistP192>),
    P224(p224::NonZeroScalar),
    P256(NonZeroScalar),
    P384(p384::NonZeroScalar),
    P521(p521::NonZeroScalar),
    BnP256(ec::NonZeroScalar<crate::bn::BnP256>),
    BnP638(ec::NonZeroScalar<crate::bn::BnP638>),
    Sm2P256(sm2::NonZeroScalar),
}

/// A public point on one of the curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcPublic {
    P192(ec::PublicKey<p192::NistP192>),
    P224(p224::PublicKey),
    P256(PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
    BnP256(ec::PublicKey<crate::bn::BnP256>),
    BnP638(ec::PublicKey<crate::bn::BnP638>),
    Sm2P256(sm2::PublicKey),
}

/// `$body` with `$d` bound to the curve-specific value of each variant of
/// `$v` (an [`EcScalar`] or [`EcPublic`]), for code generic over the curve.
macro_rules! each_curve {
    ($ty:ident, $v:expr, $d:ident => $body:expr) => {
        match $v {
            $ty::P192($d) => $body,
            $ty::P224($d) => $body,
            $ty::P256($d) => $body,
            $ty::P384($d) => $body,
            $ty::P521($d) => $body,
            $ty::BnP256($d) => $body,
            $ty::BnP638($d) => $body,
            $ty::Sm2P256($d) => $body,
        }
    };
}

/// `$body` with `$a` and `$b` bound to the curve-specific values of two
/// enums of the same curve (`$ta` and `$tb` variants), else `$other`.
macro_rules! same_curve {
    ($ta:ident, $va:expr, $tb:ident, $vb:expr, ($a:ident, $b:ident) => $body:expr, _ => $other:expr) => {
        match ($va, $vb) {
            ($ta::P192($a), $tb::P192($b)) => $body,
            ($ta::P224($a), $tb::P224($b)) => $body,
            ($ta::P256($a), $tb::P256($b)) => $body,
            ($ta::P384($a), $tb::P384($b)) => $body,
            ($ta::P521($a), $tb::P521($b)) => $body,
            ($ta::BnP256($a), $tb::BnP256($b)) => $body,
            ($ta::BnP638($a), $tb::BnP638($b)) => $body,
            ($ta::Sm2P256($a), $tb::Sm2P256($b)) => $body,
            _ => $other,
        }
    };
}

/// The curve-generic arithmetic this module needs of a curve crate.
pub(crate) trait Arith:
    ec::CurveArithmetic + ec::PrimeCurve + ec::point::PointCompression
where
    ec::Scalar<Self>: ec::ops::Reduce<Self::Uint, Bytes = ec::FieldBytes<Self>>,
{
    const CURVE: Curve;
    fn wrap_scalar(d: ec::NonZeroScalar<Self>) -> EcScalar;
    fn wrap_public(q: ec::PublicKey<Self>) -> EcPublic;
    /// The affine coordinates of `q`, each the curve's size.
    fn xy(q: &ec::PublicKey<Self>) -> (Vec<u8>, Vec<u8>);
    /// The point (x, y) (each exactly the field's size) if it is on the
    /// curve.
    fn from_xy(x: &[u8], y: &[u8]) -> Option<ec::PublicKey<Self>>;
}

macro_rules! arith {
    ($c:ty, $v:ident) => {
        arith!($c, $v, xy_on, from_xy_on);
    };
    ($c:ty, $v:ident, $xy:expr, $from_xy:expr) => {
        impl Arith for $c {
            const CURVE: Curve = Curve::$v;
            fn wrap_scalar(d: ec::NonZeroScalar<Self>) -> EcScalar {
                EcScalar::$v(d)
            }
            fn wrap_public(q: ec::PublicKey<Self>) -> EcPublic {
                EcPublic::$v(q)
            }
            fn xy(q: &ec::PublicKey<Self>) -> (Vec<u8>, Vec<u8>) {
                $xy(q)
            }
            fn from_xy(x: &[u8], y: &[u8]) -> Option<ec::PublicKey<Self>> {
                $from_xy(x, y)
            }
        }
    };
}
arith!(p192::NistP192, P192);
arith!(p224::NistP224, P224);
arith!(p256::NistP256, P256);
arith!(p384::NistP384, P384);
arith!(p521::NistP521, P521);
arith!(crate::bn::BnP256, BnP256);
// BN P-638's 80-byte coordinates have no SEC1 encoding: by coordinates.
arith!(
    crate::bn::BnP638,
    BnP638,
    |q: &ec::PublicKey<crate::bn::BnP638>| {
        let (x, y) = crate::bn::BnP638::xy(q.as_affine());
        (x.to_vec(), y.to_vec())
    },
    |x: &[u8], y: &[u8]| { ec::PublicKey::from_affine(crate::bn::BnP638::from_xy(x, y)?).ok() }
);
arith!(sm2::Sm2, Sm2P256);

/// The affine coordinates of `q`, each the curve's size (SEC1).
fn xy_on<C: ec::CurveArithmetic>(q: &ec::PublicKey<C>) -> (Vec<u8>, Vec<u8>)
where
    ec::AffinePoint<C>: ec::sec1::FromEncodedPoint<C> + ec::sec1::ToEncodedPoint<C>,
    ec::FieldBytesSize<C>: ec::sec1::ModulusSize,
{
    use ec::sec1::ToEncodedPoint;
    let ep = q.to_encoded_point(false);
    (
        ep.x().map(|c| c.to_vec()).unwrap_or_default(),
        ep.y().map(|c| c.to_vec()).unwrap_or_default(),
    )
}

/// The point (x, y) (each exactly the field's size) if it is on `C` (SEC1).
fn from_xy_on<C: ec::CurveArithmetic>(x: &[u8], y: &[u8]) -> Option<ec::PublicKey<C>>
where
    ec::AffinePoint<C>: ec::sec1::FromEncodedPoint<C> + ec::sec1::ToEncodedPoint<C>,
    ec::FieldBytesSize<C>: ec::sec1::ModulusSize,
{
    use ec::sec1::FromEncodedPoint;
    let n = ec::FieldBytes::<C>::default().len();
    if x.len() != n || y.len() != n {
        return None;
    }
    let ep = ec::sec1::EncodedPoint::<C>::from_affine_coordinates(
        ec::FieldBytes::<C>::from_slice(x),
        ec::FieldBytes::<C>::from_slice(y),
        false,
    );
    Option::from(ec::PublicKey::<C>::from_encoded_point(&ep))
}

/// The point (x, y) on `C` as an [`EcPublic`].
fn public_on<C: Arith>(x: &[u8], y: &[u8]) -> Option<EcPublic>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    C::from_xy(x, y).map(C::wrap_public)
}

/// The affine coordinates of `q`, each the curve's size.
fn xy_of<C: Arith>(q: &ec::PublicKey<C>) -> (Vec<u8>, Vec<u8>)
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    C::xy(q)
}

/// The nonzero scalar of big-endian `d` (exactly the scalar's size), if it is
/// below n.
fn scalar_on<C: Arith>(d: &[u8]) -> Option<EcScalar>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    if d.len() != ec::FieldBytes::<C>::default().len() {
        return None;
    }
    Option::<ec::NonZeroScalar<C>>::from(ec::NonZeroScalar::<C>::from_repr(
        ec::FieldBytes::<C>::clone_from_slice(d),
    ))
    .map(C::wrap_scalar)
}

impl EcPublic {
    /// The affine coordinates, each the curve's size.
    pub fn xy(&self) -> (Vec<u8>, Vec<u8>) {
        each_curve!(EcPublic, self, q => xy_of(q))
    }
    /// The point (x, y) on `curve`, if it is on the curve.
    pub fn from_xy(curve: Curve, x: &[u8], y: &[u8]) -> Option<Self> {
        match curve {
            Curve::P192 => public_on::<p192::NistP192>(x, y),
            Curve::P224 => public_on::<p224::NistP224>(x, y),
            Curve::P256 => public_on::<p256::NistP256>(x, y),
            Curve::P384 => public_on::<p384::NistP384>(x, y),
            Curve::P521 => public_on::<p521::NistP521>(x, y),
            Curve::BnP256 => public_on::<crate::bn::BnP256>(x, y),
            Curve::BnP638 => public_on::<crate::bn::BnP638>(x, y),
            Curve::Sm2P256 => public_on::<sm2::Sm2>(x, y),
        }
    }
    /// The curve of this point.
    pub fn curve(&self) -> Curve {
        match self {
            EcPublic::P192(_) => Curve::P192,
            EcPublic::P224(_) => Curve::P224,
            EcPublic::P256(_) => Curve::P256,
            EcPublic::P384(_) => Curve::P384,
            EcPublic::P521(_) => Curve::P521,
            EcPublic::BnP256(_) => Curve::BnP256,
            EcPublic::BnP638(_) => Curve::BnP638,
            EcPublic::Sm2P256(_) => Curve::Sm2P256,
        }
    }
}

impl EcScalar {
    pub fn curve(&self) -> Curve {
        match self {
            EcScalar::P192(_) => Curve::P192,
            EcScalar::P224(_) => Curve::P224,
            EcScalar::P256(_) => Curve::P256,
            EcScalar::P384(_) => Curve::P384,
            EcScalar::P521(_) => Curve::P521,
            EcScalar::BnP256(_) => Curve::BnP256,
            EcScalar::BnP638(_) => Curve::BnP638,
            EcScalar::Sm2P256(_) => Curve::Sm2P256,
        }
    }
    /// The scalar's big-endian bytes (the curve's size).
    pub fn to_bytes(&self) -> Vec<u8> {
        each_curve!(EcScalar, self, d => ec::PrimeField::to_repr(&**d).to_vec())
    }
    /// d·G.
    pub fn public(&self) -> EcPublic {
        each_curve!(EcScalar, self, d => Arith::wrap_public(ec::PublicKey::from_secret_scalar(d)))
    }
}

/// TPMT_SYM_DEF_OBJECT of a storage key: TPM_ALG_NULL or AES-128/256-CFB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymObject {
    Null,
    AesCfb(u16),
    /// A symmetric key's algorithm with no fixed mode (TPM_ALG_NULL): the
    /// command chooses it.
    AesAnyMode(u16),
    /// A symmetric key's algorithm fixed to a mode other than CFB: (key
    /// bits, TPM_ALG_CTR/OFB/CBC/ECB).
    AesMode(u16, u16),
    /// A TDES or Camellia symmetric key: (TPM_ALG_TDES or TPM_ALG_CAMELLIA,
    /// key bits, its mode — CFB, CTR, OFB, CBC, ECB — or TPM_ALG_NULL).
    Block(u16, u16, u16),
}

/// The public area of an ECC P-256 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// TPM_ALG_ECC, TPM_ALG_RSA, TPM_ALG_KEYEDHASH or TPM_ALG_SYMCIPHER.
    pub ty: u16,
    pub name_alg: HashAlg,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub symmetric: SymObject,
    /// (scheme, its hash) or None for TPM_ALG_NULL.
    pub scheme: Option<(u16, HashAlg)>,
    /// The `count` of a TPMS_SCHEME_ECDAA scheme (0 for other schemes).
    pub ecdaa_count: u16,
    /// ECC: the point's x; RSA: the modulus; keyed hash: the unique digest.
    pub x: Vec<u8>,
    /// ECC: the point's y; others: empty.
    pub y: Vec<u8>,
    /// RSA: the exponent field as marshalled (0 means 65537); others: 0.
    pub exponent: u32,
    /// RSA: keyBits (one of [`crate::rsa_key::KEY_SIZES`]); others: 0.
    pub rsa_bits: u16,
    /// ECC: the curve; others: P-256 (unused).
    pub curve: Curve,
}

impl Public {
    /// The private scalar of this ECC key's sensitive part `d`, if it is one
    /// on the key's curve.
    pub fn scalar(&self, d: &[u8]) -> Option<EcScalar> {
        scalar_from_bytes(self.curve, d)
    }

    /// Unmarshals a TPMT_PUBLIC. Errors are bare codes.
    pub fn unmarshal(r: &mut Reader) -> Result<Self, u32> {
        let ty = r.u16()?;
        if ty != ids::ECC && ty != ids::KEYEDHASH && ty != ids::SYMCIPHER && ty != ids::RSA {
            return Err(rc::TYPE);
        }
        let name_alg = r.hash_alg(false)?.ok_or(rc::HASH)?;
        let attributes = r.u32()?;
        if attributes & attr::RESERVED != 0 {
            return Err(rc::RESERVED_BITS);
        }
        let auth_policy = r.tpm2b(limits::TPMU_HA_SIZE)?.to_vec();
        let mut exponent = 0;
        let mut rsa_bits = 0;
        let mut ecdaa_count = 0;
        let mut curve = Curve::P256;
        let (symmetric, scheme, x, y) = if ty == ids::RSA {
            let (symmetric, scheme, bits, e) = rsa_parms(r)?;
            exponent = e;
            rsa_bits = bits;
            let n = r.tpm2b(crate::rsa_key::MAX_RSA_BYTES)?.to_vec();
            (symmetric, scheme, n, Vec::new())
        } else if ty == ids::ECC {
            let (symmetric, scheme, count, c) = ecc_parms(r)?;
            ecdaa_count = count;
            curve = c;
            let x = r.tpm2b(c.bytes())?.to_vec();
            let y = r.tpm2b(c.bytes())?.to_vec();
            (symmetric, scheme, x, y)
        } else if ty == ids::SYMCIPHER {
            let sym = symcipher_parms(r)?;
            let unique = r.tpm2b(limits::TPMU_HA_SIZE)?.to_vec();
            (sym, None, unique, Vec::new())
        } else {
            let scheme = keyedhash_scheme(r)?;
            let unique = r.tpm2b(limits::TPMU_HA_SIZE)?.to_vec();
            (SymObject::Null, scheme, unique, Vec::new())
        };
        Ok(Self {
            ty,
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            ecdaa_count,
            x,
            y,
            exponent,
            rsa_bits,
            curve,
        })
    }

    /// Unmarshals a TPM2B_PUBLIC (its size must match its contents).
    pub fn unmarshal_2b(r: &mut Reader) -> Result<Self, u32> {
        let n = r.u16()? as usize;
        if n == 0 {
            return Err(rc::SIZE);
        }
        let mut sub = r.sub(n)?;
        let p = Self::unmarshal(&mut sub)?;
        if sub.remaining() != 0 {
            return Err(rc::SIZE);
        }
        Ok(p)
    }

    /// Marshals the TPMT_PUBLIC.
    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(self.ty)
            .u16(self.name_alg.id())
            .u32(self.attributes)
            .tpm2b(&self.auth_policy);
        if self.ty == ids::SYMCIPHER {
            let (bits, mode) = match self.symmetric {
                SymObject::AesCfb(b) => (b, ids::CFB),
                SymObject::AesAnyMode(b) => (b, alg::NULL),
                SymObject::AesMode(b, m) => (b, m),
                SymObject::Null => (0, alg::NULL),
                SymObject::Block(a, b, m) => {
                    w.u16(a).u16(b).u16(m).tpm2b(&self.x);
                    return w.buf;
                }
            };
            w.u16(ids::AES).u16(bits).u16(mode).tpm2b(&self.x);
            return w.buf;
        }
        if self.ty == ids::KEYEDHASH {
            match self.scheme {
                None => {
                    w.u16(alg::NULL);
                }
                Some((s, h)) => {
                    w.u16(s).u16(h.id());
                }
            }
            w.tpm2b(&self.x);
            return w.buf;
        }
        match self.symmetric {
            SymObject::Null => {
                w.u16(alg::NULL);
            }
            SymObject::AesCfb(bits) | SymObject::AesAnyMode(bits) => {
                w.u16(ids::AES).u16(bits).u16(ids::CFB);
            }
            SymObject::AesMode(bits, mode) => {
                w.u16(ids::AES).u16(bits).u16(mode);
            }
            SymObject::Block(a, bits, mode) => {
                w.u16(a).u16(bits).u16(mode);
            }
        }
        match self.scheme {
            None => {
                w.u16(alg::NULL);
            }
            Some((ids::RSAES, _)) => {
                w.u16(ids::RSAES);
            }
            Some((ids::ECDAA, h)) => {
                w.u16(ids::ECDAA).u16(h.id()).u16(self.ecdaa_count);
            }
            Some((s, h)) => {
                w.u16(s).u16(h.id());
            }
        }
        if self.ty == ids::RSA {
            w.u16(self.rsa_bits).u32(self.exponent).tpm2b(&self.x);
            return w.buf;
        }
        w.u16(self.curve.id())
            .u16(alg::NULL)
            .tpm2b(&self.x)
            .tpm2b(&self.y);
        w.buf
    }

    /// The Name: nameAlg || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        name_of(self.name_alg, &self.marshal())
    }

    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }

    /// PublicAttributesValidation for an ECC key (bare codes): consistent
    /// sign/decrypt/restricted with the scheme and symmetric algorithm,
    /// fixedTPM/fixedParent as a child of a hierarchy, authPolicy size.
    pub fn validate(&self, primary: bool) -> Result<(), u32> {
        if self.ty == ids::KEYEDHASH {
            return self.validate_keyedhash();
        }
        if self.ty == ids::SYMCIPHER {
            // Symmetric storage parents are not implemented.
            if self.has(attr::RESTRICTED) {
                return Err(rc::ATTRIBUTES);
            }
            if !self.auth_policy.is_empty() && self.auth_policy.len() != self.name_alg.digest_size()
            {
                return Err(rc::SIZE);
            }
            return Ok(());
        }
        let a = self.attributes;
        let (sign, decrypt, restricted) = (
            a & attr::SIGN != 0,
            a & attr::DECRYPT != 0,
            a & attr::RESTRICTED != 0,
        );
        if primary && (a & attr::FIXED_TPM != 0) != (a & attr::FIXED_PARENT != 0) {
            return Err(rc::ATTRIBUTES);
        }
        if !sign && !decrypt || restricted && sign && decrypt {
            return Err(rc::ATTRIBUTES);
        }
        if a & attr::ENCRYPTED_DUPLICATION != 0 && a & attr::FIXED_TPM != 0 {
            return Err(rc::ATTRIBUTES);
        }
        if !self.auth_policy.is_empty() && self.auth_policy.len() != self.name_alg.digest_size() {
            return Err(rc::SIZE);
        }
        let storage = restricted && decrypt;
        match (storage, self.symmetric) {
            (true, SymObject::Null) | (false, SymObject::AesCfb(_)) => return Err(rc::SYMMETRIC),
            _ => {}
        }
        if self.ty == ids::RSA && crate::rsa_key::exponent(self.exponent).is_none() {
            return Err(rc::VALUE);
        }
        match self.scheme {
            None if restricted && sign => return Err(rc::SCHEME),
            Some(_) if storage => return Err(rc::SCHEME),
            Some((ids::RSASSA | ids::RSAPSS, _)) if !sign || decrypt => return Err(rc::SCHEME),
            Some((ids::RSAES | ids::OAEP, _)) if !decrypt || sign => return Err(rc::SCHEME),
            Some((ids::ECDSA | ids::ECDAA | ids::ECSCHNORR, _)) if !sign => return Err(rc::SCHEME),
            Some((ids::ECDH | ids::ECMQV, _)) if !decrypt || sign => return Err(rc::SCHEME),
            // SM2 is a signing scheme of a signing key and the key-exchange
            // scheme of a decrypt key, never both.
            Some((ids::SM2, _)) if sign && decrypt => return Err(rc::SCHEME),
            _ => {}
        }
        Ok(())
    }

    /// Rules for a keyed-hash object (the reference implementation's
    /// SchemeChecks): with sign and decrypt both set or both clear (a sealed
    /// data object) there is no scheme; a signing-only key is an HMAC key (a
    /// restricted one names its scheme); a decrypt-only key would be an XOR
    /// derivation parent, not implemented.
    fn validate_keyedhash(&self) -> Result<(), u32> {
        let a = self.attributes;
        let (sign, decrypt) = (a & attr::SIGN != 0, a & attr::DECRYPT != 0);
        if a & attr::RESTRICTED != 0 && sign && decrypt {
            return Err(rc::ATTRIBUTES);
        }
        if !self.auth_policy.is_empty() && self.auth_policy.len() != self.name_alg.digest_size() {
            return Err(rc::SIZE);
        }
        match (sign, decrypt, self.scheme) {
            (false, false, None) if a & attr::RESTRICTED == 0 => Ok(()),
            (true, true, None) => Ok(()),
            (true, false, None) if a & attr::RESTRICTED == 0 => Ok(()),
            (true, false, Some((alg::HMAC, _))) => Ok(()),
            _ => Err(rc::SCHEME),
        }
    }

    /// The ECC public key of this area, if its point is on its curve.
    pub fn point(&self) -> Option<EcPublic> {
        if self.ty != ids::ECC {
            return None;
        }
        EcPublic::from_xy(self.curve, &self.x, &self.y)
    }

    /// The RSA public key of this area, if it is a usable RSA key whose
    /// modulus has the size keyBits names.
    pub fn rsa_public(&self) -> Option<rsa::RsaPublicKey> {
        if self.ty != ids::RSA || self.x.len() != usize::from(self.rsa_bits) / 8 {
            return None;
        }
        crate::rsa_key::public_key(&self.x, self.exponent)
    }

    /// Sets the unique field from a public key.
    pub fn set_point(&mut self, pk: &EcPublic) {
        (self.x, self.y) = pk.xy();
    }
}

/// The largest sensitive part (the TPMU_SENSITIVE_COMPOSITE member's TPM2B
/// limit) of an object of type `ty`: an RSA prime of the largest key
/// (TPM2B_PRIVATE_KEY_RSA), MAX_SYM_DATA for the others.
pub fn max_sensitive(ty: u16) -> usize {
    if ty == ids::RSA {
        crate::rsa_key::MAX_PRIME_BYTES
    } else {
        limits::MAX_SYM_DATA
    }
}

/// A key's scheme: (scheme, its hash), or None for TPM_ALG_NULL.
pub type Scheme = Option<(u16, HashAlg)>;

/// TPMS_ECC_PARMS (bare codes): the symmetric algorithm of a storage key, the
/// scheme (with the count of an ECDAA scheme, else 0), the curve (one of
/// [`Curve`]) and the KDF (TPM_ALG_NULL).
pub fn ecc_parms(r: &mut Reader) -> Result<(SymObject, Scheme, u16, Curve), u32> {
    let symmetric = match r.u16()? {
        alg::NULL => SymObject::Null,
        ids::AES => {
            let bits = r.u16()?;
            if bits != 128 && bits != 256 {
                return Err(rc::VALUE);
            }
            if r.u16()? != ids::CFB {
                return Err(rc::MODE);
            }
            SymObject::AesCfb(bits)
        }
        _ => return Err(rc::SYMMETRIC),
    };
    let mut count = 0;
    let scheme = match r.u16()? {
        alg::NULL => None,
        s @ (ids::ECDSA | ids::ECDH | ids::ECSCHNORR | ids::SM2 | ids::ECMQV) => {
            Some((s, r.hash_alg(false)?.ok_or(rc::HASH)?))
        }
        ids::ECDAA => {
            let h = r.hash_alg(false)?.ok_or(rc::HASH)?;
            count = r.u16()?;
            Some((ids::ECDAA, h))
        }
        _ => return Err(rc::SCHEME),
    };
    let curve = Curve::from_id(r.u16()?).ok_or(rc::CURVE)?;
    if r.u16()? != alg::NULL {
        return Err(rc::KDF);
    }
    Ok((symmetric, scheme, count, curve))
}

/// TPMS_RSA_PARMS as (symmetric, scheme, keyBits, exponent field).
pub type RsaParms = (SymObject, Option<(u16, HashAlg)>, u16, u32);

/// The symmetric algorithm of an asymmetric key (TPMT_SYM_DEF_OBJECT: NULL
/// or AES-128/256-CFB), bare codes.
fn sym_def_object(r: &mut Reader) -> Result<SymObject, u32> {
    Ok(match r.u16()? {
        alg::NULL => SymObject::Null,
        ids::AES => {
            let bits = r.u16()?;
            if bits != 128 && bits != 256 {
                return Err(rc::VALUE);
            }
            if r.u16()? != ids::CFB {
                return Err(rc::MODE);
            }
            SymObject::AesCfb(bits)
        }
        _ => return Err(rc::SYMMETRIC),
    })
}

/// TPMS_RSA_PARMS (bare codes): the symmetric algorithm of a storage key,
/// the scheme (RSASSA/RSAPSS/OAEP with a hash, RSAES, or NULL), keyBits
/// (1024, 2048 or 3072: TPM_RC_VALUE otherwise, as libtpms) and the exponent
/// field.
pub fn rsa_parms(r: &mut Reader) -> Result<RsaParms, u32> {
    let symmetric = sym_def_object(r)?;
    let scheme = match r.u16()? {
        alg::NULL => None,
        ids::RSAES => Some((ids::RSAES, HashAlg::Sha256)),
        s @ (ids::RSASSA | ids::RSAPSS | ids::OAEP) => {
            Some((s, r.hash_alg(false)?.ok_or(rc::HASH)?))
        }
        _ => return Err(rc::SCHEME),
    };
    let bits = r.u16()?;
    if !crate::rsa_key::key_bits_ok(bits) {
        return Err(rc::VALUE);
    }
    let exponent = r.u32()?;
    Ok((symmetric, scheme, bits, exponent))
}

/// TPMS_SYMCIPHER_PARMS (bare codes): AES-128/256 in CFB, CTR, OFB, CBC or
/// ECB mode, a CMAC key, or with no fixed mode (TPM_RC_MODE for another
/// mode); TDES-128/192 (two- and three-key) and Camellia-128/256 likewise,
/// but not as CMAC keys.
pub fn symcipher_parms(r: &mut Reader) -> Result<SymObject, u32> {
    let algorithm = r.u16()?;
    let sizes: &[u16] = match algorithm {
        ids::AES => &[128, 256],
        ids::TDES => &[128, 192],
        ids::CAMELLIA => &[128, 256],
        _ => return Err(rc::SYMMETRIC),
    };
    let bits = r.u16()?;
    if !sizes.contains(&bits) {
        return Err(rc::VALUE);
    }
    if algorithm != ids::AES {
        return match r.u16()? {
            m @ (ids::CFB | ids::CTR | ids::OFB | ids::CBC | ids::ECB | alg::NULL) => {
                Ok(SymObject::Block(algorithm, bits, m))
            }
            _ => Err(rc::MODE),
        };
    }
    match r.u16()? {
        ids::CFB => Ok(SymObject::AesCfb(bits)),
        alg::NULL => Ok(SymObject::AesAnyMode(bits)),
        m @ (ids::CTR | ids::OFB | ids::CBC | ids::ECB | ids::CMAC) => {
            Ok(SymObject::AesMode(bits, m))
        }
        _ => Err(rc::MODE),
    }
}

/// TPMT_KEYEDHASH_SCHEME (bare codes): HMAC with its hash, or TPM_ALG_NULL.
pub fn keyedhash_scheme(r: &mut Reader) -> Result<Option<(u16, HashAlg)>, u32> {
    match r.u16()? {
        alg::NULL => Ok(None),
        alg::HMAC => Ok(Some((alg::HMAC, r.hash_alg(false)?.ok_or(rc::HASH)?))),
        _ => Err(rc::SCHEME),
    }
}

/// Whether TPM2_TestParms's `algorithm` is one this TPM implements (the
/// others Part 2 defines are unmarshalled like them and then refused).
fn implemented(algorithm: u16) -> bool {
    algorithm != alg::XOR
}

/// The TestParms unmarshalling state: the first field naming an algorithm
/// this TPM does not implement, refused with `code` once everything after it
/// unmarshalled too (an earlier format error wins, as in an unmarshaller that
/// knows the algorithm).
#[derive(Default)]
struct Deferred(Option<u32>);

impl Deferred {
    fn check(&mut self, algorithm: u16, code: u32) {
        if !implemented(algorithm) {
            self.refuse(code);
        }
    }
    /// Refuses with `code` what the fields named so far combine to.
    fn refuse(&mut self, code: u32) {
        self.0.get_or_insert(code);
    }
}

/// TPMT_SYM_DEF_OBJECT as TPM2_TestParms checks it (bare codes): a block
/// cipher of Part 2 (AES, TDES, Camellia as libtpms builds them) and one of
/// its key sizes, and a mode of TPMI_ALG_SYM_MODE+; NULL only where
/// `allow_null` (an asymmetric key's field), then with nothing more.
fn test_sym_def_object(r: &mut Reader, allow_null: bool, d: &mut Deferred) -> Result<(), u32> {
    let algorithm = r.u16()?;
    if algorithm == alg::NULL && allow_null {
        return Ok(());
    }
    let sizes: &[u16] = match algorithm {
        ids::AES => &[128, 256],
        ids::TDES => &[128, 192],
        ids::CAMELLIA => &[128, 256],
        _ => return Err(rc::SYMMETRIC),
    };
    if !sizes.contains(&r.u16()?) {
        return Err(rc::VALUE);
    }
    let mode = r.u16()?;
    match mode {
        ids::CTR | ids::OFB | ids::CBC | ids::CFB | ids::ECB | ids::CMAC | alg::NULL => {}
        _ => return Err(rc::MODE),
    }
    // TDES and Camellia serve symmetric-cipher objects only, and not CMAC.
    if algorithm != ids::AES {
        if allow_null {
            d.refuse(rc::SYMMETRIC);
        } else if mode == ids::CMAC {
            d.refuse(rc::MODE);
        }
    }
    Ok(())
}

/// Whether `k` is a TPMI_ALG_KDF.
fn is_kdf(k: u16) -> bool {
    matches!(
        k,
        ids::MGF1 | alg::KDF1_SP800_56A | ids::KDF2 | ids::KDF1_SP800_108
    )
}

/// TPMT_KDF_SCHEME+ (bare codes): NULL, or a KDF with its hash.
fn test_kdf(r: &mut Reader, d: &mut Deferred) -> Result<(), u32> {
    match r.u16()? {
        alg::NULL => Ok(()),
        k if is_kdf(k) => {
            r.hash_alg(false)?;
            d.check(k, rc::KDF);
            Ok(())
        }
        _ => Err(rc::KDF),
    }
}

/// TPMT_PUBLIC_PARMS as TPM2_TestParms checks them (Part 3 §10.4: the
/// parameters are supported when they unmarshal; bare codes): each field a
/// value of its interface type — the ciphers, key sizes and modes of
/// [`test_sym_def_object`], the RSA key sizes, the schemes with a hash (ECDAA
/// with its count, XOR with its KDF), the curves, the KDFs — and nothing after
/// them, and every algorithm named one this TPM implements (else the field's
/// code once the rest unmarshalled: TPM_RC_SYMMETRIC, TPM_RC_SCHEME,
/// TPM_RC_KDF). A selector outside its type is TPM_RC_VALUE for the RSA and
/// keyed-hash schemes and TPM_RC_SCHEME for the ECC ones, as Part 2's
/// interface types (and libtpms) have it. What the TPM checks only at
/// creation (a storage key's CFB mode, sign/decrypt against the scheme) is
/// not part of the answer.
pub fn test_public_parms(r: &mut Reader) -> Result<(), u32> {
    let mut d = Deferred::default();
    let hash = |r: &mut Reader| r.hash_alg(false).map(|_| ());
    match r.u16()? {
        ids::SYMCIPHER => test_sym_def_object(r, false, &mut d)?,
        ids::KEYEDHASH => match r.u16()? {
            alg::NULL => {}
            alg::HMAC => hash(r)?,
            alg::XOR => {
                // TPMS_SCHEME_XOR: a hash and a TPMI_ALG_KDF+ (an ID alone).
                hash(r)?;
                d.check(alg::XOR, rc::SCHEME);
                match r.u16()? {
                    alg::NULL => {}
                    k if is_kdf(k) => d.check(k, rc::KDF),
                    _ => return Err(rc::KDF),
                }
            }
            _ => return Err(rc::VALUE),
        },
        ids::RSA => {
            test_sym_def_object(r, true, &mut d)?;
            match r.u16()? {
                alg::NULL | ids::RSAES => {}
                ids::RSASSA | ids::RSAPSS | ids::OAEP => hash(r)?,
                _ => return Err(rc::VALUE),
            }
            if !crate::rsa_key::key_bits_ok(r.u16()?) {
                return Err(rc::VALUE);
            }
            r.u32()?;
        }
        ids::ECC => {
            test_sym_def_object(r, true, &mut d)?;
            match r.u16()? {
                alg::NULL => {}
                s @ (ids::ECDSA | ids::ECDH | ids::ECSCHNORR | ids::ECMQV | ids::SM2) => {
                    hash(r)?;
                    d.check(s, rc::SCHEME);
                }
                ids::ECDAA => {
                    hash(r)?;
                    r.u16()?;
                }
                _ => return Err(rc::SCHEME),
            }
            Curve::from_id(r.u16()?).ok_or(rc::CURVE)?;
            test_kdf(r, &mut d)?;
        }
        _ => return Err(rc::TYPE),
    }
    d.0.map_or(Ok(()), Err)
}

/// nameAlg || H(data).
pub fn name_of(h: HashAlg, data: &[u8]) -> Vec<u8> {
    let mut n = h.id().to_be_bytes().to_vec();
    n.extend_from_slice(h.digest(&[data]).as_bytes());
    n
}

/// Derives a private key on `curve` from a byte stream by testing candidates
/// (FIPS 186-4 B.4.2): `next` yields candidates of the curve's size until one
/// is a valid nonzero scalar.
pub fn derive_scalar(curve: Curve, mut next: impl FnMut(u32) -> Vec<u8>) -> EcScalar {
    let mut i = 0u32;
    loop {
        if let Some(s) = scalar_from_bytes(curve, &next(i)) {
            return s;
        }
        i += 1;
    }
}

/// [`derive_scalar`] on P-256.
pub fn derive_p256(next: impl FnMut(u32) -> Vec<u8>) -> NonZeroScalar {
    match derive_scalar(Curve::P256, next) {
        EcScalar::P256(d) => d,
        // derive_scalar(P256, …) yields P-256 scalars only.
        _ => unreachable!(),
    }
}

/// The private scalar on `curve` from its big-endian bytes (exactly the
/// curve's size), if valid and nonzero.
pub fn scalar_from_bytes(curve: Curve, d: &[u8]) -> Option<EcScalar> {
    match curve {
        Curve::P192 => scalar_on::<p192::NistP192>(d),
        Curve::P224 => scalar_on::<p224::NistP224>(d),
        Curve::P256 => scalar_on::<p256::NistP256>(d),
        Curve::P384 => scalar_on::<p384::NistP384>(d),
        Curve::P521 => scalar_on::<p521::NistP521>(d),
        Curve::BnP256 => scalar_on::<crate::bn::BnP256>(d),
        Curve::BnP638 => scalar_on::<crate::bn::BnP638>(d),
        Curve::Sm2P256 => scalar_on::<sm2::Sm2>(d),
    }
}

/// The P-256 scalar of 32 big-endian bytes, if valid and nonzero (the
/// commitment arithmetic of ECDAA and 2-phase ECDH, which is P-256 only).
pub fn p256_scalar(d: &[u8]) -> Option<NonZeroScalar> {
    match scalar_from_bytes(Curve::P256, d)? {
        EcScalar::P256(s) => Some(s),
        _ => None,
    }
}

/// The x coordinate of d·Q for the point Q = (x, y), if Q is on d's curve.
pub fn ecdh_x(d: &EcScalar, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    ecdh_point(d, x, y).map(|(x, _)| x)
}

/// d·Q for the point Q = (x, y), if Q is on d's curve.
pub fn ecdh_point(d: &EcScalar, x: &[u8], y: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn on<C: Arith>(d: &ec::NonZeroScalar<C>, q: &ec::PublicKey<C>) -> Option<(Vec<u8>, Vec<u8>)>
    where
        ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
    {
        use ec::group::Curve as _;
        let shared = ec::PublicKey::<C>::from_affine((q.to_projective() * **d).to_affine()).ok()?;
        Some(xy_of(&shared))
    }
    // A coordinate may come without its leading zero bytes (OpenSSL's
    // encoding of a peer's ephemeral point, as libtpms accepts it).
    let n = d.curve().bytes();
    let q = EcPublic::from_xy(d.curve(), &fit(x, n)?, &fit(y, n)?)?;
    same_curve!(EcScalar, d, EcPublic, &q, (d, q) => on(d, q), _ => None)
}

/// `v` (big-endian) in exactly `n` bytes: leading zeros dropped or added;
/// None if its value does not fit.
fn fit(v: &[u8], n: usize) -> Option<Vec<u8>> {
    let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
    let mut out = alloc::vec![0u8; n];
    out.get_mut(n.checked_sub(v.len())?..)?.copy_from_slice(v);
    Some(out)
}

/// The group order n of `curve`, big-endian.
pub fn order(curve: Curve) -> Vec<u8> {
    fn on<C: ec::Curve>() -> Vec<u8> {
        use ec::bigint::Encoding;
        let n = C::ORDER.to_be_bytes();
        let b: &[u8] = n.as_ref();
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
        b[first..].to_vec()
    }
    match curve {
        Curve::P192 => on::<p192::NistP192>(),
        Curve::P224 => on::<p224::NistP224>(),
        Curve::P256 => on::<p256::NistP256>(),
        Curve::P384 => on::<p384::NistP384>(),
        Curve::P521 => on::<p521::NistP521>(),
        Curve::BnP256 => on::<crate::bn::BnP256>(),
        Curve::BnP638 => on::<crate::bn::BnP638>(),
        Curve::Sm2P256 => on::<sm2::Sm2>(),
    }
}

/// `v` (big-endian, any length) mod the group order of `curve`, as the
/// curve's scalar size in bytes.
pub fn mod_order(curve: Curve, v: &[u8]) -> Vec<u8> {
    let n = num_bigint_dig::BigUint::from_bytes_be(&order(curve));
    let m = (num_bigint_dig::BigUint::from_bytes_be(v) % n).to_bytes_be();
    let mut out = alloc::vec![0u8; curve.bytes()];
    out[curve.bytes() - m.len()..].copy_from_slice(&m);
    out
}

/// s = r + t·d mod n (t big-endian, below n, the scalar size), the second
/// half of an ECDAA signature; None when the curves differ or s is zero.
pub fn ecdaa_s(r: &EcScalar, t: &[u8], d: &EcScalar) -> Option<Vec<u8>> {
    fn on<C>(
        r: &p256::elliptic_curve::NonZeroScalar<C>,
        t: &[u8],
        d: &p256::elliptic_curve::NonZeroScalar<C>,
    ) -> Option<Vec<u8>>
    where
        C: p256::elliptic_curve::CurveArithmetic,
        p256::elliptic_curve::Scalar<C>:
            p256::elliptic_curve::ops::Reduce<C::Uint, Bytes = p256::elliptic_curve::FieldBytes<C>>,
    {
        use p256::elliptic_curve::{Field, PrimeField};
        let s = **r + reduce_scalar::<C>(t)? * **d;
        (!bool::from(s.is_zero())).then(|| s.to_repr().to_vec())
    }
    same_curve!(EcScalar, r, EcScalar, d, (r, d) => on(r, t, d), _ => None)
}

/// d·Q on P-256 (the 2-phase and ECDAA commitments).
pub fn p256_point(d: &NonZeroScalar, x: &[u8], y: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    ecdh_point(&EcScalar::P256(*d), x, y)
}

/// KDFe (Part 1 §11.4.10.3, SP 800-56A concatenation KDF): H(counter || Z ||
/// label || 0 || partyU || partyV) blocks, `bits` long.
pub fn kdfe(h: HashAlg, z: &[u8], label: &[u8], u: &[u8], v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + h.digest_size());
    let mut counter = 1u32;
    while out.len() < bytes {
        out.extend_from_slice(
            h.digest(&[&counter.to_be_bytes(), z, label, &[0], u, v])
                .as_bytes(),
        );
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// ECDSA over a prehashed `digest` (r, s as big-endian values of the
/// curve's size).
pub fn ecdsa_sign(d: &EcScalar, digest: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    match d {
        EcScalar::P256(d) => {
            let sig: Signature = SigningKey::from(*d)
                .sign_prehash(&prehash(digest, P256_BYTES))
                .ok()?;
            let (r, s) = sig.split_bytes();
            Some((r.to_vec(), s.to_vec()))
        }
        EcScalar::P384(d) => {
            let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(*d)
                .sign_prehash(&prehash(digest, P384_BYTES))
                .ok()?;
            let (r, s) = sig.split_bytes();
            Some((r.to_vec(), s.to_vec()))
        }
        EcScalar::P521(d) => {
            // Every digest is shorter than the 521-bit order: z is the
            // integer it is (SEC 1 §4.1.3 step 5).
            let z = left_pad(digest, P521_BYTES)?;
            let k = p521_nonce(d, &z);
            let (sig, _) = ecdsa::hazmat::sign_prehashed::<p521::NistP521, _>(
                d,
                *k,
                p521::FieldBytes::from_slice(&z),
            )
            .ok()?;
            let (r, s) = sig.split_bytes();
            Some((r.to_vec(), s.to_vec()))
        }
        EcScalar::P192(d) => ecdsa_sign_on(d, digest),
        EcScalar::P224(d) => ecdsa_sign_on(d, digest),
        EcScalar::BnP256(d) => ecdsa_sign_on(d, digest),
        EcScalar::BnP638(d) => ecdsa_sign_on(d, digest),
        EcScalar::Sm2P256(d) => ecdsa_sign_on(d, digest),
    }
}

/// ECDSA (SEC 1 §4.1.3) over a prehashed `digest` on a curve whose crate
/// has no signer of its own (P-192, whose crate only verifies; P-224 and
/// SM2 P-256, for one nonce derivation): z is the digest's leftmost bits
/// of the order's size (all of them when shorter), the nonce is
/// [`hmac_nonce`]'s.
fn ecdsa_sign_on<C: Arith>(d: &ec::NonZeroScalar<C>, digest: &[u8]) -> Option<(Vec<u8>, Vec<u8>)>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
    ecdsa::SignatureSize<C>: ec::generic_array::ArrayLength<u8>,
{
    let z = ecdsa::hazmat::bits2field::<C>(&prehash(digest, C::CURVE.bytes())).ok()?;
    let k = hmac_nonce(b"ECDSA nonce", d, &z);
    let (sig, _) = ecdsa::hazmat::sign_prehashed::<C, _>(d, *k, &z).ok()?;
    let (r, s) = sig.split_bytes();
    Some((r.to_vec(), s.to_vec()))
}

/// A nonce for key `d` and message `z`, derived deterministically in the
/// manner of RFC 6979 from a PRF of the key and the message: HMAC-SHA-512
/// keyed with d over (`label`, z, a counter) — for scalars wider than its
/// 64 bytes (BN P-638), further blocks over the same and the block's index
/// — cut to the scalar size and to the order's bits, the first candidate
/// that is a nonzero scalar below n.
fn hmac_nonce<C: Arith>(label: &[u8], d: &ec::NonZeroScalar<C>, z: &[u8]) -> ec::NonZeroScalar<C>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    let key = ec::PrimeField::to_repr(&**d);
    let top = 0xFFu8 >> (8 * C::CURVE.bytes() - C::CURVE.order_bits());
    let mut i = 0u32;
    loop {
        let mut c = ec::FieldBytes::<C>::default();
        let mut filled = 0;
        let mut block_index = 0u8;
        while filled < c.len() {
            let block = if block_index == 0 {
                HashAlg::Sha512.hmac(&key, &[label, z, &i.to_be_bytes()])
            } else {
                HashAlg::Sha512.hmac(&key, &[label, z, &i.to_be_bytes(), &[block_index]])
            };
            let n = (c.len() - filled).min(block.as_bytes().len());
            c[filled..filled + n].copy_from_slice(&block.as_bytes()[..n]);
            filled += n;
            block_index += 1;
        }
        c[0] &= top;
        if let Some(k) = Option::<ec::NonZeroScalar<C>>::from(ec::NonZeroScalar::<C>::from_repr(c))
        {
            return k;
        }
        i += 1;
    }
}

/// The P-521 ECDSA nonce for key `d` and message integer `z`: derived
/// deterministically, in the manner of RFC 6979, from a PRF of the key and
/// the message — HMAC-SHA-512 keyed with d over (z, a counter), two blocks
/// per candidate cut to 521 bits, the first candidate that is a nonzero
/// scalar. (The `ecdsa` crate's RFC 6979 needs a hash as wide as the
/// 66-byte field, which no TPM hash is.)
fn p521_nonce(d: &p521::NonZeroScalar, z: &[u8]) -> p521::NonZeroScalar {
    let key = p521::elliptic_curve::PrimeField::to_repr(&**d);
    let mut i = 0u32;
    loop {
        let mut c = Vec::with_capacity(2 * HashAlg::Sha512.digest_size());
        for half in [0u8, 1] {
            let block =
                HashAlg::Sha512.hmac(&key, &[b"P-521 ECDSA nonce", z, &i.to_be_bytes(), &[half]]);
            c.extend_from_slice(block.as_bytes());
        }
        c.truncate(P521_BYTES);
        // 521 bits: the top 7 bits of the first byte are clear.
        c[0] &= 0x01;
        if let Some(EcScalar::P521(k)) = scalar_from_bytes(Curve::P521, &c) {
            return k;
        }
        i += 1;
    }
}

/// The ECDSA message bytes of `digest` for a curve of `n`-byte scalars: a
/// digest shorter than that is the integer it is (SEC 1 §4.1.3 step 5,
/// libtpms's ECDSA), so left-padded to `n` bytes — the `ecdsa` crate
/// refuses prehashes shorter than half the field (SHA-1 on P-384) — and a
/// longer one stays as it is (its leftmost bits are taken).
fn prehash(digest: &[u8], n: usize) -> Vec<u8> {
    left_pad(digest, n).unwrap_or_else(|| digest.to_vec())
}

/// `v` (at most `n` bytes) left-padded to `n` bytes.
fn left_pad(v: &[u8], n: usize) -> Option<Vec<u8>> {
    if v.is_empty() || v.len() > n {
        return None;
    }
    let mut out = alloc::vec![0u8; n - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

/// The EC Schnorr challenge of TPM_ALG_ECSCHNORR (Part 1 §C.4.3): e =
/// H(xR ‖ digest) with xR the point's x-coordinate in the curve's field size,
/// cut to the order's size in bytes when the hash is longer (its leading
/// bytes).
fn schnorr_challenge(hash: HashAlg, x: &[u8], digest: &[u8]) -> Vec<u8> {
    let mut e = hash.digest(&[x, digest]).as_bytes().to_vec();
    e.truncate(x.len());
    e
}

/// `v` (big-endian, at most a scalar's size) reduced mod n.
pub(crate) fn reduce_scalar<C>(v: &[u8]) -> Option<p256::elliptic_curve::Scalar<C>>
where
    C: p256::elliptic_curve::CurveArithmetic,
    p256::elliptic_curve::Scalar<C>:
        p256::elliptic_curve::ops::Reduce<C::Uint, Bytes = p256::elliptic_curve::FieldBytes<C>>,
{
    use p256::elliptic_curve::ops::Reduce;
    let mut b = p256::elliptic_curve::FieldBytes::<C>::default();
    let n = b.len();
    b.get_mut(n.checked_sub(v.len())?..)?.copy_from_slice(v);
    Some(<p256::elliptic_curve::Scalar<C> as Reduce<C::Uint>>::reduce_bytes(&b))
}

/// EC Schnorr signing with nonce `k` on curve `C`: R = [k]G, r = e (the
/// challenge of [`schnorr_challenge`], zero-extended to the scalar size) and
/// s = k + e·d mod n; None when e or
/// s is zero (the caller draws another k).
fn schnorr_sign_on<C>(
    d: &p256::elliptic_curve::NonZeroScalar<C>,
    k: &p256::elliptic_curve::NonZeroScalar<C>,
    hash: HashAlg,
    digest: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)>
where
    C: p256::elliptic_curve::CurveArithmetic,
    p256::elliptic_curve::Scalar<C>:
        p256::elliptic_curve::ops::Reduce<C::Uint, Bytes = p256::elliptic_curve::FieldBytes<C>>,
{
    use p256::elliptic_curve::group::{Curve as _, Group};
    use p256::elliptic_curve::point::AffineCoordinates;
    use p256::elliptic_curve::{Field, PrimeField};
    let point = (C::ProjectivePoint::generator() * **k).to_affine();
    let x = point.x();
    let e = schnorr_challenge(hash, &x, digest);
    let e_scalar = reduce_scalar::<C>(&e)?;
    let s = **k + e_scalar * **d;
    if bool::from(e_scalar.is_zero()) || bool::from(s.is_zero()) {
        return None;
    }
    // r in the order's size, as libtpms marshals it.
    Some((left_pad(&e, x.len())?, s.to_repr().to_vec()))
}

/// EC Schnorr verification on curve `C`: with E = [s]G − [r]Q, the challenge
/// H(xE ‖ digest) equals r (as integers); s must be a scalar below n.
fn schnorr_verify_on<C>(
    q: &p256::elliptic_curve::PublicKey<C>,
    hash: HashAlg,
    digest: &[u8],
    r: &[u8],
    s: &[u8],
) -> bool
where
    C: p256::elliptic_curve::CurveArithmetic,
    p256::elliptic_curve::Scalar<C>:
        p256::elliptic_curve::ops::Reduce<C::Uint, Bytes = p256::elliptic_curve::FieldBytes<C>>,
{
    use p256::elliptic_curve::group::{Curve as _, Group};
    use p256::elliptic_curve::point::AffineCoordinates;
    use p256::elliptic_curve::PrimeField;
    let strip = |v: &[u8]| v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..].to_vec();
    let (r, s) = (strip(r), strip(s));
    let n = p256::elliptic_curve::FieldBytes::<C>::default().len();
    if r.is_empty() || s.is_empty() || r.len() > n || s.len() > n {
        return false;
    }
    let mut sb = p256::elliptic_curve::FieldBytes::<C>::default();
    sb[n - s.len()..].copy_from_slice(&s);
    let Some(s) = Option::<p256::elliptic_curve::Scalar<C>>::from(
        p256::elliptic_curve::Scalar::<C>::from_repr(sb),
    ) else {
        return false;
    };
    let Some(r_scalar) = reduce_scalar::<C>(&r) else {
        return false;
    };
    let e_point = C::ProjectivePoint::generator() * s - q.to_projective() * r_scalar;
    if bool::from(e_point.is_identity()) {
        return false;
    }
    let x = e_point.to_affine().x();
    strip(&schnorr_challenge(hash, &x, digest)) == r
}

/// A TPM_ALG_ECSCHNORR signature (r, s) of `digest` under `hash` with key `d`
/// and nonce `k` (a scalar on the same curve); None when the curves differ
/// or e or s came out zero (draw another k).
pub fn schnorr_sign(
    d: &EcScalar,
    k: &EcScalar,
    hash: HashAlg,
    digest: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    same_curve!(EcScalar, d, EcScalar, k, (d, k) => schnorr_sign_on(d, k, hash, digest), _ => None)
}

/// Does the TPM_ALG_ECSCHNORR signature (r, s) under `hash` verify over
/// `digest` with public key `pk`?
pub fn schnorr_verify(pk: &EcPublic, hash: HashAlg, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
    each_curve!(EcPublic, pk, q => schnorr_verify_on(q, hash, digest, r, s))
}
/// Verifies an ECDSA signature (r, s) over a prehashed `digest`.
pub fn ecdsa_verify(pk: &EcPublic, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
    match pk {
        EcPublic::P256(pk) => {
            let (Some(rb), Some(sb)) = (left_pad(r, P256_BYTES), left_pad(s, P256_BYTES)) else {
                return false;
            };
            let Ok(sig) =
                Signature::from_scalars(*FieldBytes::from_slice(&rb), *FieldBytes::from_slice(&sb))
            else {
                return false;
            };
            VerifyingKey::from(pk)
                .verify_prehash(&prehash(digest, P256_BYTES), &sig)
                .is_ok()
        }
        EcPublic::P384(pk) => {
            let (Some(rb), Some(sb)) = (left_pad(r, P384_BYTES), left_pad(s, P384_BYTES)) else {
                return false;
            };
            let Ok(sig) = p384::ecdsa::Signature::from_scalars(
                *p384::FieldBytes::from_slice(&rb),
                *p384::FieldBytes::from_slice(&sb),
            ) else {
                return false;
            };
            p384::ecdsa::VerifyingKey::from(pk)
                .verify_prehash(&prehash(digest, P384_BYTES), &sig)
                .is_ok()
        }
        EcPublic::P521(pk) => {
            use ecdsa::hazmat::VerifyPrimitive;
            let (Some(rb), Some(sb), Some(z)) = (
                left_pad(r, P521_BYTES),
                left_pad(s, P521_BYTES),
                left_pad(digest, P521_BYTES),
            ) else {
                return false;
            };
            let Ok(sig) = p521::ecdsa::Signature::from_scalars(
                *p521::FieldBytes::from_slice(&rb),
                *p521::FieldBytes::from_slice(&sb),
            ) else {
                return false;
            };
            pk.as_affine()
                .verify_prehashed(p521::FieldBytes::from_slice(&z), &sig)
                .is_ok()
        }
        EcPublic::P192(q) => ecdsa_verify_on(q, digest, r, s),
        EcPublic::P224(q) => ecdsa_verify_on(q, digest, r, s),
        EcPublic::BnP256(q) => ecdsa_verify_on(q, digest, r, s),
        EcPublic::BnP638(q) => ecdsa_verify_on(q, digest, r, s),
        EcPublic::Sm2P256(q) => ecdsa_verify_on(q, digest, r, s),
    }
}

/// The scalar of big-endian `v` (leading zeros allowed), if it is nonzero
/// and below n.
fn nonzero_scalar_of<C: Arith>(v: &[u8]) -> Option<ec::NonZeroScalar<C>>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
    let mut b = ec::FieldBytes::<C>::default();
    let n = b.len();
    b.get_mut(n.checked_sub(v.len())?..)?.copy_from_slice(v);
    Option::from(ec::NonZeroScalar::<C>::from_repr(b))
}

/// ECDSA verification (SEC 1 §4.1.4) on a curve without a verifier of its
/// own, with z as [`ecdsa_sign_on`] takes it.
fn ecdsa_verify_on<C: Arith>(q: &ec::PublicKey<C>, digest: &[u8], r: &[u8], s: &[u8]) -> bool
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
    ecdsa::SignatureSize<C>: ec::generic_array::ArrayLength<u8>,
{
    let (Some(r), Some(s), Ok(z)) = (
        nonzero_scalar_of::<C>(r),
        nonzero_scalar_of::<C>(s),
        ecdsa::hazmat::bits2field::<C>(&prehash(digest, C::CURVE.bytes())),
    ) else {
        return false;
    };
    let Ok(sig) = ecdsa::Signature::<C>::from_scalars(r, s) else {
        return false;
    };
    ecdsa::hazmat::verify_prehashed::<C>(&q.to_projective(), &z, &sig).is_ok()
}

/// e of an SM2 signature: the digest's integer mod n (Part 1 §C.5: the TPM
/// signs the digest e = H(Z_A ‖ M) the caller computed).
fn sm2_e<C: Arith>(digest: &[u8]) -> Option<ec::Scalar<C>>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    reduce_scalar::<C>(&mod_order(C::CURVE, digest))
}

/// SM2 signing (GB/T 32918.2 §6.1 A3–A7) of digest e with key d and nonce k:
/// (x1, y1) = [k]G, r = (e + x1) mod n, s = (1 + d)⁻¹·(k − r·d) mod n;
/// None when r = 0, r + k = n or s = 0 (draw another k).
fn sm2_sign_on<C: Arith>(
    d: &ec::NonZeroScalar<C>,
    k: &ec::NonZeroScalar<C>,
    digest: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    use ec::group::{Curve as _, Group};
    use ec::point::AffineCoordinates;
    use ec::{Field, PrimeField};
    let e = sm2_e::<C>(digest)?;
    let x1 = (C::ProjectivePoint::generator() * **k).to_affine().x();
    let r = e + reduce_scalar::<C>(&x1)?;
    if bool::from(r.is_zero()) || bool::from((r + **k).is_zero()) {
        return None;
    }
    let inv = Option::<ec::Scalar<C>>::from((ec::Scalar::<C>::ONE + **d).invert())?;
    let s = inv * (**k - r * **d);
    if bool::from(s.is_zero()) {
        return None;
    }
    Some((r.to_repr().to_vec(), s.to_repr().to_vec()))
}

/// SM2 verification (GB/T 32918.2 §7.1 B1–B7) of (r, s) over digest e:
/// r, s in [1, n−1], t = (r + s) mod n ≠ 0, (x1, y1) = [s]G + [t]P, and
/// (e + x1) mod n = r.
fn sm2_verify_on<C: Arith>(q: &ec::PublicKey<C>, digest: &[u8], r: &[u8], s: &[u8]) -> bool
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    use ec::group::{Curve as _, Group};
    use ec::point::AffineCoordinates;
    use ec::Field;
    let (Some(r), Some(s), Some(e)) = (
        nonzero_scalar_of::<C>(r),
        nonzero_scalar_of::<C>(s),
        sm2_e::<C>(digest),
    ) else {
        return false;
    };
    let t = *r + *s;
    if bool::from(t.is_zero()) {
        return false;
    }
    let p = C::ProjectivePoint::generator() * *s + q.to_projective() * t;
    if bool::from(p.is_identity()) {
        return false;
    }
    reduce_scalar::<C>(&p.to_affine().x()).is_some_and(|x1| e + x1 == *r)
}

/// A TPM_ALG_SM2 signature (r, s) of `digest` with key `d` and nonce `k` (a
/// scalar on the same curve); None when the curves differ or the nonce does
/// not serve (draw another k).
pub fn sm2_sign(d: &EcScalar, k: &EcScalar, digest: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    same_curve!(EcScalar, d, EcScalar, k, (d, k) => sm2_sign_on(d, k, digest), _ => None)
}

/// Does the TPM_ALG_SM2 signature (r, s) verify over `digest` with `pk`?
pub fn sm2_verify(pk: &EcPublic, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
    each_curve!(EcPublic, pk, q => sm2_verify_on(q, digest, r, s))
}

/// The key-exchange schemes of TPM2_ZGen_2Phase beyond ECDH's Full Unified
/// Model, whose Z is a single point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoPhase {
    /// TPM_ALG_ECMQV: SP 800-56A §5.7.2.3 (ECC MQV), Part 1 §C.6.
    Mqv,
    /// TPM_ALG_SM2: GB/T 32918.3 §6.1's V/U = t·(PB + x̄(RB)·RB) with
    /// t = d + x̄(RA)·r, but with the x̄ of libtpms ([`sm2_avf_bits`]), not
    /// the standard's.
    Sm2,
}

/// The associate value x̄ of the SM2 key exchange as libtpms 0.9.2 (the TCG
/// reference code that Debian's swtpm runs) computes it on a 64-bit host, for
/// an order of `order_bits` bits: x̄ = (x mod 2^keep) OR 2^set, returned as
/// (keep, set). GB/T 32918.3 §6.1 A4/B3 defines
/// x̄ = 2^w + (x mod 2^w) with w = ⌈⌈log2 n⌉/2⌉ − 1 (127 for a 256-bit n).
/// libtpms deviates three times, all of which decide its Z:
/// 1. w = ⌊msb(n)/2⌋ − 1 with msb the 0-based bit number of n's top bit,
///    one less than the standard's for every curve here (126 for 256 bits);
/// 2. its bit-masking helper keeps, of the 64-bit word holding bit w, the
///    low 64 − (w mod 64) bits instead of the low w mod 64 (x mod 2^66 for
///    256 bits);
/// 3. its set-bit helper shifts a 32-bit `int` (undefined in C for 32 and
///    more), and Debian's x86-64 build sets bit (w mod 64) mod 32 of that
///    word (bit 94 for 256 bits; libtpms 0.9.5 and later set bit w: that is
///    their only difference).
///
/// Both parties of an exchange apply the same x̄, so the vTPM and swtpm
/// agree on Z (the differential test `interop_sm2_key_exchange_with_swtpm`),
/// while neither agrees with a GB/T 32918.3 peer. The word size is 64 bits;
/// no curve here gives a shift of 31 (whose `int` would sign-extend).
pub fn sm2_avf_bits(order_bits: usize) -> (usize, usize) {
    let w = (order_bits - 1) / 2 - 1;
    let (base, r) = (w - w % 64, w % 64);
    let keep = if r == 0 { w } else { base + 64 - r };
    (keep, base + r % 32)
}

/// An associate value of a point's x: (x mod 2^keep) OR 2^set, as a scalar
/// (below n: both bits are below the order's top bit on every curve here).
fn avf<C: Arith>(x: &[u8], (keep, set): (usize, usize)) -> Option<ec::Scalar<C>>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    use num_bigint_dig::BigUint;
    let one = BigUint::from(1u32);
    let v = (BigUint::from_bytes_be(x) % (&one << keep)) | (&one << set);
    reduce_scalar::<C>(&v.to_bytes_be())
}

fn two_phase_on<C: Arith>(
    scheme: TwoPhase,
    ds: &ec::NonZeroScalar<C>,
    de: &ec::NonZeroScalar<C>,
    qs_b: &ec::PublicKey<C>,
    qe_b: &ec::PublicKey<C>,
) -> Option<(Vec<u8>, Vec<u8>)>
where
    ec::Scalar<C>: ec::ops::Reduce<C::Uint, Bytes = ec::FieldBytes<C>>,
{
    use ec::group::{Curve as _, Group};
    use ec::point::AffineCoordinates;
    // MQV: (x mod 2^f) + 2^f, f = ceil(ceil(log2 n) / 2); SM2: libtpms's x̄.
    let order_bits = C::CURVE.order_bits();
    let f = order_bits.div_ceil(2);
    let w = match scheme {
        TwoPhase::Mqv => (f, f),
        TwoPhase::Sm2 => sm2_avf_bits(order_bits),
    };
    let qe_a_x = (C::ProjectivePoint::generator() * **de).to_affine().x();
    let avf_a = avf::<C>(&qe_a_x, w)?;
    let avf_b = avf::<C>(&qe_b.as_affine().x(), w)?;
    let (qs_b, qe_b) = (qs_b.to_projective(), qe_b.to_projective());
    // The cofactor of every curve here is 1.
    let p = match scheme {
        // implicitSig = (de + avf(QeA)·ds) mod n; P = implicitSig·(QeB + avf(QeB)·QsB).
        TwoPhase::Mqv => (qe_b + qs_b * avf_b) * (**de + avf_a * **ds),
        // t = (ds + x̄(RA)·de) mod n; V = t·(PB + x̄(RB)·RB).
        TwoPhase::Sm2 => (qs_b + qe_b * avf_b) * (**ds + avf_a * **de),
    };
    if bool::from(p.is_identity()) {
        return None;
    }
    Some(xy_of(&ec::PublicKey::<C>::from_affine(p.to_affine()).ok()?))
}

/// Z of a two-phase key exchange (ECMQV or SM2) for party A with static key
/// `ds` and ephemeral key `de` and party B's static and ephemeral points;
/// None when the keys are on different curves, a point is not on the curve
/// or Z is the point at infinity.
pub fn two_phase_z(
    scheme: TwoPhase,
    ds: &EcScalar,
    de: &EcScalar,
    (qs_x, qs_y): (&[u8], &[u8]),
    (qe_x, qe_y): (&[u8], &[u8]),
) -> Option<(Vec<u8>, Vec<u8>)> {
    let curve = ds.curve();
    let qs = EcPublic::from_xy(curve, qs_x, qs_y)?;
    let qe = EcPublic::from_xy(curve, qe_x, qe_y)?;
    macro_rules! on {
        ($v:ident) => {
            match (ds, de, &qs, &qe) {
                (EcScalar::$v(ds), EcScalar::$v(de), EcPublic::$v(qs), EcPublic::$v(qe)) => {
                    two_phase_on(scheme, ds, de, qs, qe)
                }
                _ => None,
            }
        };
    }
    match curve {
        Curve::P192 => on!(P192),
        Curve::P224 => on!(P224),
        Curve::P256 => on!(P256),
        Curve::P384 => on!(P384),
        Curve::P521 => on!(P521),
        Curve::BnP256 => on!(BnP256),
        Curve::BnP638 => on!(BnP638),
        Curve::Sm2P256 => on!(Sm2P256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing_template() -> Public {
        Public {
            ty: ids::ECC,
            name_alg: HashAlg::Sha256,
            attributes: attr::FIXED_TPM
                | attr::FIXED_PARENT
                | attr::SENSITIVE_DATA_ORIGIN
                | attr::USER_WITH_AUTH
                | attr::SIGN,
            auth_policy: Vec::new(),
            symmetric: SymObject::Null,
            scheme: Some((ids::ECDSA, HashAlg::Sha256)),
            x: Vec::new(),
            y: Vec::new(),
            exponent: 0,
            rsa_bits: 0,
            ecdaa_count: 0,
            curve: crate::public::Curve::P256,
        }
    }

    #[test]
    fn public_area_round_trips_and_names_hash_it() {
        let p = signing_template();
        let bytes = p.marshal();
        let q = Public::unmarshal(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(p, q);
        let n = p.name();
        assert_eq!(&n[..2], &[0, 0x0B]);
        assert_eq!(&n[2..], HashAlg::Sha256.digest(&[&bytes]).as_bytes());
    }

    #[test]
    fn unmarshal_rejects_unsupported_fields() {
        let mut b = signing_template().marshal();
        b[1] = 0x7F; // no such type
        assert_eq!(Public::unmarshal(&mut Reader::new(&b)), Err(rc::TYPE));
        let mut p = signing_template();
        p.attributes |= 1;
        let b = p.marshal();
        assert_eq!(
            Public::unmarshal(&mut Reader::new(&b)),
            Err(rc::RESERVED_BITS)
        );
    }

    #[test]
    fn attribute_rules() {
        assert_eq!(signing_template().validate(true), Ok(()));
        let mut p = signing_template();
        p.attributes &= !attr::FIXED_PARENT;
        assert_eq!(p.validate(true), Err(rc::ATTRIBUTES));
        let mut p = signing_template();
        p.attributes |= attr::RESTRICTED | attr::DECRYPT;
        assert_eq!(p.validate(true), Err(rc::ATTRIBUTES));
        let mut p = signing_template();
        p.attributes = (p.attributes & !attr::SIGN) | attr::RESTRICTED | attr::DECRYPT;
        assert_eq!(p.validate(true), Err(rc::SYMMETRIC));
        p.symmetric = SymObject::AesCfb(128);
        assert_eq!(p.validate(true), Err(rc::SCHEME));
        p.scheme = None;
        assert_eq!(p.validate(true), Ok(()));
        let mut p = signing_template();
        p.auth_policy = alloc::vec![0; 20];
        assert_eq!(p.validate(true), Err(rc::SIZE));
    }

    #[test]
    fn kdfe_and_ecdh_follow_their_definitions() {
        let k = kdfe(HashAlg::Sha256, b"z", b"SECRET", b"u", b"v", 256);
        let expect =
            HashAlg::Sha256.digest(&[&1u32.to_be_bytes(), b"z", b"SECRET", &[0], b"u", b"v"]);
        assert_eq!(k, expect.as_bytes());
        assert_eq!(kdfe(HashAlg::Sha1, b"z", b"L", b"", b"", 256).len(), 32);
        // ECDH is symmetric: d1·(d2·G) = d2·(d1·G).
        let d1 = derive_p256(|i| {
            HashAlg::Sha256
                .digest(&[&i.to_be_bytes(), b"1"])
                .as_bytes()
                .to_vec()
        });
        let d2 = derive_p256(|i| {
            HashAlg::Sha256
                .digest(&[&i.to_be_bytes(), b"2"])
                .as_bytes()
                .to_vec()
        });
        let mut p1 = signing_template();
        let (d1, d2) = (EcScalar::P256(d1), EcScalar::P256(d2));
        p1.set_point(&d1.public());
        let mut p2 = signing_template();
        p2.set_point(&d2.public());
        assert_eq!(ecdh_x(&d1, &p2.x, &p2.y), ecdh_x(&d2, &p1.x, &p1.y));
        assert!(ecdh_x(&d1, &p2.x, &p1.y).is_none());
    }

    #[test]
    fn derived_keys_sign_and_verify() {
        let d = derive_p256(|i| {
            HashAlg::Sha256
                .digest(&[&i.to_be_bytes()])
                .as_bytes()
                .to_vec()
        });
        let d = EcScalar::P256(d);
        let pk = d.public();
        let mut p = signing_template();
        p.set_point(&pk);
        assert_eq!(p.point(), Some(pk));
        let digest = HashAlg::Sha256.digest(&[b"msg"]);
        let (r, s) = ecdsa_sign(&d, digest.as_bytes()).unwrap();
        assert!(ecdsa_verify(&pk, digest.as_bytes(), &r, &s));
        let other = HashAlg::Sha256.digest(&[b"other"]);
        assert!(!ecdsa_verify(&pk, other.as_bytes(), &r, &s));
        p.y[0] ^= 1;
        assert_eq!(p.point(), None);
    }

    /// P-521: derived keys sign (deterministically, SHA-256 and SHA-512
    /// digests) and verify, ECDH agrees both ways, a P-384 point is refused,
    /// and the area round-trips with 66-byte coordinates.
    #[test]
    fn p521_keys_sign_verify_and_agree() {
        let key = |tag: &'static [u8]| {
            derive_scalar(Curve::P521, move |i| {
                let mut v = HashAlg::Sha512
                    .digest(&[&i.to_be_bytes(), tag])
                    .as_bytes()
                    .to_vec();
                v.extend_from_slice(&[0, 0]);
                v
            })
        };
        let (d1, d2) = (key(b"1"), key(b"2"));
        assert_eq!(d1.curve(), Curve::P521);
        assert_eq!(d1.to_bytes().len(), P521_BYTES);
        let mut p = signing_template();
        p.curve = Curve::P521;
        p.scheme = Some((ids::ECDSA, HashAlg::Sha512));
        p.set_point(&d1.public());
        assert_eq!((p.x.len(), p.y.len()), (P521_BYTES, P521_BYTES));
        assert_eq!(p.point(), Some(d1.public()));
        for h in [HashAlg::Sha256, HashAlg::Sha512] {
            let digest = h.digest(&[b"msg"]);
            let (r, s) = ecdsa_sign(&d1, digest.as_bytes()).unwrap();
            assert_eq!((r.len(), s.len()), (P521_BYTES, P521_BYTES));
            assert_eq!(
                ecdsa_sign(&d1, digest.as_bytes()),
                Some((r.clone(), s.clone()))
            );
            assert!(ecdsa_verify(&d1.public(), digest.as_bytes(), &r, &s));
            assert!(!ecdsa_verify(&d2.public(), digest.as_bytes(), &r, &s));
            let other = h.digest(&[b"other"]);
            assert!(!ecdsa_verify(&d1.public(), other.as_bytes(), &r, &s));
            // The p521 crate's verifier agrees (SHA-512 digests: its
            // prehash rule needs at least half the field).
            if h == HashAlg::Sha512 {
                use p521::ecdsa::signature::hazmat::PrehashVerifier as _;
                let EcPublic::P521(pk) = d1.public() else {
                    unreachable!()
                };
                let sig = p521::ecdsa::Signature::from_scalars(
                    *p521::FieldBytes::from_slice(&r),
                    *p521::FieldBytes::from_slice(&s),
                )
                .unwrap();
                let vk = p521::ecdsa::VerifyingKey::from_affine(*pk.as_affine()).unwrap();
                assert!(vk.verify_prehash(digest.as_bytes(), &sig).is_ok());
            }
        }
        let (x2, y2) = d2.public().xy();
        assert_eq!(ecdh_x(&d1, &x2, &y2), ecdh_x(&d2, &p.x, &p.y));
        let d384 = derive_scalar(Curve::P384, |i| {
            HashAlg::Sha384
                .digest(&[&i.to_be_bytes()])
                .as_bytes()
                .to_vec()
        });
        let (x, y) = d384.public().xy();
        assert!(ecdh_x(&d1, &x, &y).is_none());
        let m = p.marshal();
        assert_eq!(Public::unmarshal(&mut Reader::new(&m)).unwrap(), p);
        p.y[5] ^= 1;
        assert_eq!(p.point(), None);
    }

    /// P-384: derived keys sign and verify, ECDH agrees both ways, a point
    /// of the other curve or off the curve is refused, and the marshalled
    /// area names the curve and round-trips.
    /// EC Schnorr on each curve with a fixed nonce: r is H(xR ‖ digest) of
    /// R = [k]G cut to the order's size and zero-extended to it, s = k + r·d
    /// mod n (on P-256 checked as [s]G = R + [r]Q); the signature verifies, and not
    /// over another digest, with another r or s, or with another key.
    #[test]
    fn ecschnorr_signatures_follow_their_definition() {
        use p256::elliptic_curve::point::AffineCoordinates;
        let cases = [
            (Curve::P256, HashAlg::Sha256),
            (Curve::P256, HashAlg::Sha512),
            (Curve::P384, HashAlg::Sha384),
            (Curve::P384, HashAlg::Sha512),
            (Curve::P521, HashAlg::Sha256),
            (Curve::P521, HashAlg::Sha512),
        ];
        for (curve, hash) in cases {
            let n = curve.bytes();
            let scalar = |b: u8| {
                let mut v = alloc::vec![0u8; n];
                v[n - 1] = b;
                v[1] = 0x5A;
                scalar_from_bytes(curve, &v).unwrap()
            };
            let (d, k, other) = (scalar(3), scalar(7), scalar(11));
            let digest = hash.digest(&[b"schnorr"]);
            let digest = digest.as_bytes();
            let (r, s) = schnorr_sign(&d, &k, hash, digest).unwrap();
            assert_eq!((r.len(), s.len()), (n, n));
            // r from R's x-coordinate, computed through the public-key path.
            let (xr, _) = k.public().xy();
            assert_eq!(xr.len(), n);
            let mut e = hash.digest(&[&xr, digest]).as_bytes().to_vec();
            e.truncate(n);
            let mut want = alloc::vec![0u8; n - e.len()];
            want.extend(&e);
            assert_eq!(r, want, "{curve:?} {hash:?}");
            // [s]G = R + [r]Q.
            if let (EcScalar::P256(d), EcScalar::P256(k)) = (d, k) {
                use p256::elliptic_curve::ops::Reduce;
                let rs =
                    <p256::Scalar as Reduce<p256::U256>>::reduce_bytes(FieldBytes::from_slice(&r));
                let sg = p256::ProjectivePoint::GENERATOR
                    * *NonZeroScalar::from_repr(*FieldBytes::from_slice(&s)).unwrap();
                let rhs = p256::ProjectivePoint::GENERATOR * *k
                    + p256::ProjectivePoint::GENERATOR * (rs * *d);
                assert_eq!(sg.to_affine().x(), rhs.to_affine().x());
            }
            let pk = d.public();
            assert!(schnorr_verify(&pk, hash, digest, &r, &s));
            // Leading zeros of r and s do not matter.
            let short: Vec<u8> = r.iter().copied().skip_while(|&b| b == 0).collect();
            assert!(schnorr_verify(&pk, hash, digest, &short, &s));
            let other_digest = hash.digest(&[b"other"]);
            assert!(!schnorr_verify(&pk, hash, other_digest.as_bytes(), &r, &s));
            let mut bad = s.clone();
            bad[n - 1] ^= 1;
            assert!(!schnorr_verify(&pk, hash, digest, &r, &bad));
            let mut bad = r.clone();
            bad[n - 1] ^= 1;
            assert!(!schnorr_verify(&pk, hash, digest, &bad, &s));
            assert!(!schnorr_verify(&other.public(), hash, digest, &r, &s));
            assert!(!schnorr_verify(&pk, hash, digest, &[], &s));
            // Another curve's nonce is refused.
            let wrong = if curve == Curve::P256 {
                Curve::P384
            } else {
                Curve::P256
            };
            let mut v = alloc::vec![0u8; wrong.bytes()];
            v[1] = 1;
            let k2 = scalar_from_bytes(wrong, &v).unwrap();
            assert!(schnorr_sign(&d, &k2, hash, digest).is_none());
        }
    }

    #[test]
    fn p384_keys_sign_verify_and_agree() {
        let key = |tag: &'static [u8]| {
            derive_scalar(Curve::P384, move |i| {
                HashAlg::Sha384
                    .digest(&[&i.to_be_bytes(), tag])
                    .as_bytes()
                    .to_vec()
            })
        };
        let (d1, d2) = (key(b"1"), key(b"2"));
        assert_eq!(d1.curve(), Curve::P384);
        assert_eq!(d1.to_bytes().len(), P384_BYTES);
        let mut p = signing_template();
        p.curve = Curve::P384;
        p.scheme = Some((ids::ECDSA, HashAlg::Sha384));
        p.set_point(&d1.public());
        assert_eq!(p.x.len(), P384_BYTES);
        assert_eq!(p.point(), Some(d1.public()));
        assert_eq!(
            p.scalar(&d1.to_bytes()).map(|d| d.public()),
            Some(d1.public())
        );
        let digest = HashAlg::Sha384.digest(&[b"msg"]);
        let (r, s) = ecdsa_sign(&d1, digest.as_bytes()).unwrap();
        assert!(ecdsa_verify(&d1.public(), digest.as_bytes(), &r, &s));
        assert!(!ecdsa_verify(&d2.public(), digest.as_bytes(), &r, &s));
        let (x2, y2) = d2.public().xy();
        assert_eq!(ecdh_x(&d1, &x2, &y2), ecdh_x(&d2, &p.x, &p.y));
        // A P-256 point is not a P-384 one.
        let d256 = EcScalar::P256(derive_p256(|i| {
            HashAlg::Sha256
                .digest(&[&i.to_be_bytes()])
                .as_bytes()
                .to_vec()
        }));
        let (x, y) = d256.public().xy();
        assert!(ecdh_x(&d1, &x, &y).is_none());
        let m = p.marshal();
        let q = Public::unmarshal(&mut Reader::new(&m)).unwrap();
        assert_eq!(q, p);
        p.y[0] ^= 1;
        assert_eq!(p.point(), None);
    }
}
