//! TPM_ECC_BN_P256: the 256-bit Barreto–Naehrig curve of the TCG Algorithm
//! Registry (ISO/IEC 15946-5), y² = x³ + 3 over the prime p with generator
//! (1, 2) and prime order n (cofactor 1), as a RustCrypto curve: the field
//! and scalar types are Montgomery forms of `crypto-bigint`'s constant-time
//! [`Residue`] arithmetic, the points are `primeorder`'s complete formulas
//! for a generic `a` (here a = 0). Everything the vTPM does on its other
//! curves (key derivation, ECDSA, EC Schnorr, SM2, ECDAA, ECDH, MQV) works
//! on [`BnP256`] through the same generic code in [`crate::public`].

use core::fmt;
use core::iter::{Product, Sum};
use core::ops::{AddAssign, MulAssign, Neg, Shr, ShrAssign, SubAssign};
use crypto_bigint::modular::constant_mod::Residue;
use crypto_bigint::{impl_modulus, Limb, Word, U256};
use p256::elliptic_curve as ec;
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::subtle::{
    Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater, CtOption,
};

/// p, the field prime of BN P-256.
const P_HEX: &str = "FFFFFFFFFFFCF0CD46E5F25EEE71A49F0CDC65FB12980A82D3292DDBAED33013";
/// n, the group order of BN P-256.
const N_HEX: &str = "FFFFFFFFFFFCF0CD46E5F25EEE71A49E0CDC65FB1299921AF62D536CD10B500D";

impl_modulus!(FieldModulus, U256, P_HEX);
impl_modulus!(ScalarModulus, U256, N_HEX);

/// The BN P-256 curve (TPM_ECC_BN_P256).
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq, PartialOrd, Ord)]
pub struct BnP256;

/// Big-endian field or scalar bytes.
pub type FieldBytes = ec::FieldBytes<BnP256>;

impl ec::Curve for BnP256 {
    type FieldBytesSize = ec::consts::U32;
    type Uint = U256;
    const ORDER: U256 = U256::from_be_hex(N_HEX);
}

impl ec::PrimeCurve for BnP256 {}

impl ec::point::PointCompression for BnP256 {
    const COMPRESS_POINTS: bool = false;
}

impl ec::FieldBytesEncoding<BnP256> for U256 {}

/// The Montgomery-domain operations `primeorder`'s field macro takes, over a
/// `crypto-bigint` constant modulus: words in, words out.
macro_rules! mont_ops {
    ($m:ident, $modulus:ty) => {
        mod $m {
            use super::*;
            type R = Residue<$modulus, { U256::LIMBS }>;
            const fn r(a: &[Word; 4]) -> R {
                R::from_montgomery(U256::from_words(*a))
            }
            pub(super) const fn to_mont(a: &[Word; 4]) -> [Word; 4] {
                R::new(&U256::from_words(*a)).to_montgomery().to_words()
            }
            pub(super) const fn from_mont(a: &[Word; 4]) -> [Word; 4] {
                r(a).retrieve().to_words()
            }
            pub(super) const fn add(a: &[Word; 4], b: &[Word; 4]) -> [Word; 4] {
                r(a).add(&r(b)).to_montgomery().to_words()
            }
            pub(super) const fn sub(a: &[Word; 4], b: &[Word; 4]) -> [Word; 4] {
                r(a).sub(&r(b)).to_montgomery().to_words()
            }
            pub(super) const fn mul(a: &[Word; 4], b: &[Word; 4]) -> [Word; 4] {
                r(a).mul(&r(b)).to_montgomery().to_words()
            }
            pub(super) const fn neg(a: &[Word; 4]) -> [Word; 4] {
                R::neg(&r(a)).to_montgomery().to_words()
            }
            pub(super) const fn square(a: &[Word; 4]) -> [Word; 4] {
                r(a).square().to_montgomery().to_words()
            }
            /// a⁻¹ (constant time; zero maps to an unspecified value).
            pub(super) const fn invert(a: &[Word; 4]) -> [Word; 4] {
                r(a).invert().0.to_montgomery().to_words()
            }
        }
    };
}
mont_ops!(fp, FieldModulus);
mont_ops!(fn_, ScalarModulus);
use fn_::{
    add as n_add, from_mont as n_from_mont, mul as n_mul, neg as n_neg, square as n_square,
    sub as n_sub, to_mont as n_to_mont,
};
use fp::{
    add as p_add, from_mont as p_from_mont, mul as p_mul, neg as p_neg, square as p_square,
    sub as p_sub, to_mont as p_to_mont,
};

/// An element of GF(p), in Montgomery form.
#[derive(Clone, Copy)]
pub struct FieldElement(U256);

primeorder::impl_mont_field_element!(
    BnP256,
    FieldElement,
    FieldBytes,
    U256,
    U256::from_be_hex(P_HEX),
    [Word; 4],
    p_from_mont,
    p_to_mont,
    p_add,
    p_sub,
    p_mul,
    p_neg,
    p_square
);

impl fmt::Debug for FieldElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldElement(0x{:X})", &self.to_canonical())
    }
}

impl FieldElement {
    const fn invert_unchecked(&self) -> Self {
        Self(U256::from_words(fp::invert(self.0.as_words())))
    }
    /// self⁻¹, none for zero.
    pub fn invert(&self) -> CtOption<Self> {
        CtOption::new(self.invert_unchecked(), !self.is_zero())
    }
    /// A square root: p ≡ 3 (mod 4), so self^((p + 1) / 4) when one exists.
    pub fn sqrt(&self) -> CtOption<Self> {
        let r = self.pow_vartime(&[
            0xb4ca4b76ebb4cc05,
            0xc337197ec4a602a0,
            0x51b97c97bb9c6927,
            0x3fffffffffff3c33,
        ]);
        CtOption::new(r, r.square().ct_eq(self))
    }
}

impl PrimeField for FieldElement {
    type Repr = FieldBytes;
    const MODULUS: &'static str = P_HEX;
    const NUM_BITS: u32 = 256;
    const CAPACITY: u32 = 255;
    const TWO_INV: Self = Self::from_u64(2).invert_unchecked();
    /// 2: a quadratic non-residue mod p.
    const MULTIPLICATIVE_GENERATOR: Self = Self::from_u64(2);
    /// p − 1 = 2·t with t odd.
    const S: u32 = 1;
    /// 2^t = −1.
    const ROOT_OF_UNITY: Self = FieldElement::neg(&Self::ONE);
    const ROOT_OF_UNITY_INV: Self = Self::ROOT_OF_UNITY.invert_unchecked();
    /// 2^(2^S).
    const DELTA: Self = Self::from_u64(4);
    fn from_repr(bytes: FieldBytes) -> CtOption<Self> {
        Self::from_bytes(&bytes)
    }
    fn to_repr(&self) -> FieldBytes {
        self.to_bytes()
    }
    fn is_odd(&self) -> Choice {
        self.is_odd()
    }
}

/// A scalar mod n, in Montgomery form.
#[derive(Clone, Copy, PartialOrd, Ord)]
pub struct Scalar(U256);

primeorder::impl_mont_field_element!(
    BnP256,
    Scalar,
    FieldBytes,
    U256,
    <BnP256 as ec::Curve>::ORDER,
    [Word; 4],
    n_from_mont,
    n_to_mont,
    n_add,
    n_sub,
    n_mul,
    n_neg,
    n_square
);

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scalar(0x{:X})", &self.to_canonical())
    }
}

/// (t − 1) / 2 for n − 1 = 2^S·t, little-endian words (Tonelli–Shanks).
const N_TM1D2: [u64; 4] = [
    0x5ec5aa6d9a216a01,
    0xc19b8cbf62533243,
    0xa8dcbe4bddce3493,
    0x1fffffffffff9e19,
];

impl Scalar {
    const fn invert_unchecked(&self) -> Self {
        Self(U256::from_words(fn_::invert(self.0.as_words())))
    }
    /// self⁻¹, none for zero.
    pub fn invert(&self) -> CtOption<Self> {
        CtOption::new(self.invert_unchecked(), !self.is_zero())
    }
    /// A square root (Tonelli–Shanks: n ≡ 1 mod 4).
    pub fn sqrt(&self) -> CtOption<Self> {
        ec::ff::helpers::sqrt_tonelli_shanks(self, N_TM1D2)
    }
}

impl PrimeField for Scalar {
    type Repr = FieldBytes;
    const MODULUS: &'static str = N_HEX;
    const NUM_BITS: u32 = 256;
    const CAPACITY: u32 = 255;
    const TWO_INV: Self = Self::from_u64(2).invert_unchecked();
    /// 2: a quadratic non-residue mod n.
    const MULTIPLICATIVE_GENERATOR: Self = Self::from_u64(2);
    /// n − 1 = 2²·t with t odd.
    const S: u32 = 2;
    /// 2^t.
    const ROOT_OF_UNITY: Self =
        Self::from_hex("00000000000000027311c281242030cd379baf3be3234b0afd1e06a5deaf4015");
    const ROOT_OF_UNITY_INV: Self = Self::ROOT_OF_UNITY.invert_unchecked();
    /// 2^(2^S).
    const DELTA: Self = Self::from_u64(16);
    fn from_repr(bytes: FieldBytes) -> CtOption<Self> {
        Self::from_bytes(&bytes)
    }
    fn to_repr(&self) -> FieldBytes {
        self.to_bytes()
    }
    fn is_odd(&self) -> Choice {
        self.is_odd()
    }
}

impl AsRef<Scalar> for Scalar {
    fn as_ref(&self) -> &Scalar {
        self
    }
}

impl ec::scalar::FromUintUnchecked for Scalar {
    type Uint = U256;
    fn from_uint_unchecked(uint: U256) -> Self {
        Self::from_uint_unchecked(uint)
    }
}

impl ec::scalar::IsHigh for Scalar {
    fn is_high(&self) -> Choice {
        const HALF: U256 = <BnP256 as ec::Curve>::ORDER.shr_vartime(1);
        self.to_canonical().ct_gt(&HALF)
    }
}

impl Shr<usize> for Scalar {
    type Output = Self;
    fn shr(self, rhs: usize) -> Self {
        Self::from_uint_unchecked(self.to_canonical().shr_vartime(rhs))
    }
}

impl ShrAssign<usize> for Scalar {
    fn shr_assign(&mut self, rhs: usize) {
        *self = *self >> rhs;
    }
}

impl ec::ops::Reduce<U256> for Scalar {
    type Bytes = FieldBytes;
    /// w mod n for any 256-bit w: n > 2^255, so one conditional subtraction.
    fn reduce(w: U256) -> Self {
        let (r, borrow) = w.sbb(&<BnP256 as ec::Curve>::ORDER, Limb::ZERO);
        let underflow = Choice::from((borrow.0 >> (Limb::BITS - 1)) as u8);
        Self::from_uint_unchecked(U256::conditional_select(&w, &r, !underflow))
    }
    fn reduce_bytes(bytes: &FieldBytes) -> Self {
        Self::reduce(U256::from_be_slice(bytes))
    }
}

impl ec::ops::Invert for Scalar {
    type Output = CtOption<Self>;
    fn invert(&self) -> CtOption<Self> {
        self.invert()
    }
}

impl ec::ops::Invert for FieldElement {
    type Output = CtOption<Self>;
    fn invert(&self) -> CtOption<Self> {
        self.invert()
    }
}

impl From<ec::ScalarPrimitive<BnP256>> for Scalar {
    fn from(w: ec::ScalarPrimitive<BnP256>) -> Self {
        Self::from_uint_unchecked(*w.as_uint())
    }
}

impl From<Scalar> for ec::ScalarPrimitive<BnP256> {
    fn from(s: Scalar) -> Self {
        // A reduced scalar is always below n.
        ec::ScalarPrimitive::new(s.to_canonical()).unwrap_or(ec::ScalarPrimitive::ZERO)
    }
}

impl From<Scalar> for FieldBytes {
    fn from(s: Scalar) -> Self {
        s.to_repr()
    }
}

impl From<Scalar> for U256 {
    fn from(s: Scalar) -> Self {
        s.to_canonical()
    }
}

/// A point in affine coordinates.
pub type AffinePoint = primeorder::AffinePoint<BnP256>;
/// A point in projective coordinates.
pub type ProjectivePoint = primeorder::ProjectivePoint<BnP256>;

impl ec::CurveArithmetic for BnP256 {
    type AffinePoint = AffinePoint;
    type ProjectivePoint = ProjectivePoint;
    type Scalar = Scalar;
}

impl ec::PrimeCurveArithmetic for BnP256 {
    type CurveGroup = ProjectivePoint;
}

impl primeorder::PrimeCurveParams for BnP256 {
    type FieldElement = FieldElement;
    type PointArithmetic = primeorder::point_arithmetic::EquationAIsGeneric;
    const EQUATION_A: FieldElement = FieldElement::ZERO;
    const EQUATION_B: FieldElement = FieldElement::from_u64(3);
    const GENERATOR: (FieldElement, FieldElement) =
        (FieldElement::from_u64(1), FieldElement::from_u64(2));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec::group::{Curve as _, Group};
    use ec::point::AffineCoordinates;
    use ec::Field;

    fn hex(s: &str) -> FieldBytes {
        let mut b = FieldBytes::default();
        for (i, o) in b.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        b
    }

    #[test]
    fn field_and_scalar_constants_are_consistent() {
        // The constants ff documents, checked from their definitions.
        assert_eq!(FieldElement::TWO_INV.double(), FieldElement::ONE);
        assert_eq!(Scalar::TWO_INV.double(), Scalar::ONE);
        let pow2s = |mut v: Scalar, s: u32| {
            for _ in 0..s {
                v = v.square();
            }
            v
        };
        assert_eq!(pow2s(Scalar::ROOT_OF_UNITY, Scalar::S), Scalar::ONE);
        assert_ne!(pow2s(Scalar::ROOT_OF_UNITY, Scalar::S - 1), Scalar::ONE);
        assert_eq!(
            Scalar::ROOT_OF_UNITY * Scalar::ROOT_OF_UNITY_INV,
            Scalar::ONE
        );
        assert_eq!(
            pow2s(Scalar::MULTIPLICATIVE_GENERATOR, Scalar::S),
            Scalar::DELTA
        );
        assert_eq!(FieldElement::ROOT_OF_UNITY.square(), FieldElement::ONE);
        // Inverses, square roots, encodings.
        for v in [2u64, 3, 12345, u64::MAX] {
            let f = FieldElement::from_u64(v);
            assert_eq!(f * f.invert().unwrap(), FieldElement::ONE);
            let r = f.square().sqrt().unwrap();
            assert!(r == f || r == -f);
            let s = Scalar::from_u64(v);
            assert_eq!(s * s.invert().unwrap(), Scalar::ONE);
            let r = s.square().sqrt().unwrap();
            assert!(r == s || r == -s);
            assert_eq!(Scalar::from_repr(s.to_repr()).unwrap(), s);
        }
        // 2 has no square root in either field.
        assert!(bool::from(FieldElement::from_u64(2).sqrt().is_none()));
        assert!(bool::from(Scalar::from_u64(2).sqrt().is_none()));
        assert!(bool::from(FieldElement::ZERO.invert().is_none()));
        // p and n themselves are no canonical encodings.
        assert!(bool::from(FieldElement::from_repr(hex(P_HEX)).is_none()));
        assert!(bool::from(Scalar::from_repr(hex(N_HEX)).is_none()));
        // n reduces to zero, n + 5 to 5.
        use ec::ops::Reduce;
        assert_eq!(Scalar::reduce_bytes(&hex(N_HEX)), Scalar::ZERO);
        let n5 = U256::from_be_hex(N_HEX).wrapping_add(&U256::from_u64(5));
        assert_eq!(Scalar::reduce(n5), Scalar::from_u64(5));
    }

    #[test]
    fn the_group_has_order_n() {
        let g = ProjectivePoint::generator();
        let ga = g.to_affine();
        assert_eq!(ga.x(), FieldElement::ONE.to_repr());
        // [n−1]G = −G, and adding G gives the identity.
        let nm1 = -Scalar::ONE;
        let p = g * nm1;
        assert_eq!(p, -g);
        assert!(bool::from((p + g).is_identity()));
        // Scalar multiplication distributes: [a]G + [b]G = [a + b]G.
        let (a, b) = (Scalar::from_u64(0xdead_beef), Scalar::from_u64(12345678));
        assert_eq!(g * a + g * b, g * (a + b));
        assert_eq!((g * a) * b, g * (a * b));
        // A point off the curve is refused: (1, 3).
        let mut ep = [0u8; 65];
        ep[0] = 4;
        ep[32] = 1;
        ep[64] = 3;
        let ep = ec::sec1::EncodedPoint::<BnP256>::from_bytes(ep).unwrap();
        use ec::sec1::FromEncodedPoint;
        assert!(bool::from(AffinePoint::from_encoded_point(&ep).is_none()));
    }
}
