//! The Barreto–Naehrig curves of the TCG Algorithm Registry (ISO/IEC
//! 15946-5) as RustCrypto curves: TPM_ECC_BN_P256 ([`BnP256`]) and
//! TPM_ECC_BN_P638 ([`BnP638`]), each y² = x³ + b over a prime p with prime
//! order n (cofactor 1). The field and scalar types are Montgomery forms of
//! `crypto-bigint`'s constant-time [`Residue`] arithmetic, the points are
//! `primeorder`'s complete formulas for a generic `a` (here a = 0).
//! Everything the vTPM does on its other curves (key derivation, ECDSA, EC
//! Schnorr, SM2, ECDAA, ECDH, MQV) works on them through the same generic
//! code in [`crate::public`].
//!
//! BN P-638's 80-byte field elements have no SEC1 encoding in the RustCrypto
//! traits (`sec1::ModulusSize` stops at 66 bytes), so its points are read
//! and written by coordinates here ([`BnP638::xy`], [`BnP638::from_xy`]):
//! y from x by the square root whose parity the point records, and a point
//! given by (x, y) checked on the curve before it is decompressed from x.
//! Its integers are `U768` (the narrowest `crypto-bigint` width with the
//! byte-array encoding the curve traits need above 638 bits).

use core::fmt;
use core::iter::{Product, Sum};
use core::ops::{AddAssign, MulAssign, Neg, Shr, ShrAssign, SubAssign};
use crypto_bigint::modular::constant_mod::Residue;
use crypto_bigint::{impl_modulus, Word, U256, U768};
use p256::elliptic_curve as ec;
use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::subtle::{
    Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater, CtOption,
};

/// A BN curve: its curve type, field element, scalar and point types in
/// module `$m`, over integers `$uint` encoded in `$bytes`-byte field
/// elements, with the constants of `PrimeField` — the multiplicative
/// generators are quadratic non-residues of no small-prime-order subgroup
/// (that they generate the whole group is not proven: p − 1 and n − 1 keep
/// unfactored parts of over 200 bits; only Tonelli–Shanks uses them, which
/// needs a non-residue), S, the 2-adic roots of unity and DELTA follow from
/// them — and the exponents of the square roots: (p + 1) / 4 for p ≡ 3
/// (mod 4), (t − 1) / 2 of Tonelli–Shanks for n.
macro_rules! bn_curve {
    (
        $m:ident, $curve:ident, $doc:literal, $uint:ident, $bytes:ty, $bits:literal,
        p: $p:literal, n: $n:literal, b: $b:literal, g: ($gx:expr, $gy:expr),
        field: { gen: $fgen:literal, s: $fs:literal, delta: $fdelta:literal, sqrt: $fsqrt:expr },
        scalar: { gen: $sgen:literal, s: $ss:literal, root: $sroot:literal, delta: $sdelta:literal, tm1d2: $stm:expr }
    ) => {
        #[doc = $doc]
        pub mod $m {
            use super::*;

            const P_HEX: &str = $p;
            const N_HEX: &str = $n;
            impl_modulus!(FieldModulus, $uint, P_HEX);
            impl_modulus!(ScalarModulus, $uint, N_HEX);
            const LIMBS: usize = $uint::LIMBS;
            type Words = [Word; LIMBS];

            #[doc = $doc]
            #[derive(Copy, Clone, Debug, Default, Eq, PartialEq, PartialOrd, Ord)]
            pub struct $curve;

            /// Big-endian field or scalar bytes.
            pub type FieldBytes = ec::FieldBytes<$curve>;

            /// This module's curve type, under one name for code generic
            /// over the BN modules.
            pub type BnCurve = $curve;

            impl ec::Curve for $curve {
                type FieldBytesSize = $bytes;
                type Uint = $uint;
                const ORDER: $uint = $uint::from_be_hex(N_HEX);
            }

            impl ec::PrimeCurve for $curve {}

            impl ec::point::PointCompression for $curve {
                const COMPRESS_POINTS: bool = false;
            }

            impl ec::FieldBytesEncoding<$curve> for $uint {}

            /// The Montgomery-domain operations `primeorder`'s field macro
            /// takes, over a `crypto-bigint` constant modulus.
            macro_rules! mont_ops {
                ($o:ident, $modulus:ty) => {
                    mod $o {
                        use super::*;
                        type R = Residue<$modulus, LIMBS>;
                        const fn r(a: &Words) -> R {
                            R::from_montgomery($uint::from_words(*a))
                        }
                        /// Any a below 2^(64·LIMBS), reduced: a·R² is below
                        /// R·modulus, so one Montgomery reduction gives a·R.
                        pub(super) const fn to_mont(a: &Words) -> Words {
                            R::new(&$uint::from_words(*a)).to_montgomery().to_words()
                        }
                        pub(super) const fn from_mont(a: &Words) -> Words {
                            r(a).retrieve().to_words()
                        }
                        pub(super) const fn add(a: &Words, b: &Words) -> Words {
                            r(a).add(&r(b)).to_montgomery().to_words()
                        }
                        pub(super) const fn sub(a: &Words, b: &Words) -> Words {
                            r(a).sub(&r(b)).to_montgomery().to_words()
                        }
                        pub(super) const fn mul(a: &Words, b: &Words) -> Words {
                            r(a).mul(&r(b)).to_montgomery().to_words()
                        }
                        pub(super) const fn neg(a: &Words) -> Words {
                            R::neg(&r(a)).to_montgomery().to_words()
                        }
                        pub(super) const fn square(a: &Words) -> Words {
                            r(a).square().to_montgomery().to_words()
                        }
                        /// a⁻¹ (constant time; zero maps to an unspecified value).
                        pub(super) const fn invert(a: &Words) -> Words {
                            r(a).invert().0.to_montgomery().to_words()
                        }
                    }
                };
            }
            mont_ops!(fp, FieldModulus);
            mont_ops!(fn_, ScalarModulus);
            use fn_::{
                add as n_add, from_mont as n_from_mont, mul as n_mul, neg as n_neg,
                square as n_square, sub as n_sub, to_mont as n_to_mont,
            };
            use fp::{
                add as p_add, from_mont as p_from_mont, mul as p_mul, neg as p_neg,
                square as p_square, sub as p_sub, to_mont as p_to_mont,
            };

            /// An element of GF(p), in Montgomery form.
            #[derive(Clone, Copy)]
            pub struct FieldElement($uint);

            primeorder::impl_mont_field_element!(
                $curve,
                FieldElement,
                FieldBytes,
                $uint,
                $uint::from_be_hex(P_HEX),
                Words,
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
                    Self($uint::from_words(fp::invert(self.0.as_words())))
                }
                /// self⁻¹, none for zero.
                pub fn invert(&self) -> CtOption<Self> {
                    CtOption::new(self.invert_unchecked(), !self.is_zero())
                }
                /// A square root: p ≡ 3 (mod 4), so self^((p + 1) / 4)
                /// when one exists.
                pub fn sqrt(&self) -> CtOption<Self> {
                    let r = self.pow_vartime(&$fsqrt);
                    CtOption::new(r, r.square().ct_eq(self))
                }
            }

            impl PrimeField for FieldElement {
                type Repr = FieldBytes;
                const MODULUS: &'static str = P_HEX;
                const NUM_BITS: u32 = $bits;
                const CAPACITY: u32 = $bits - 1;
                const TWO_INV: Self = Self::from_u64(2).invert_unchecked();
                const MULTIPLICATIVE_GENERATOR: Self = Self::from_u64($fgen);
                const S: u32 = $fs;
                /// −1: p − 1 = 2·t with t odd.
                const ROOT_OF_UNITY: Self = FieldElement::neg(&Self::ONE);
                const ROOT_OF_UNITY_INV: Self = Self::ROOT_OF_UNITY.invert_unchecked();
                const DELTA: Self = Self::from_u64($fdelta);
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
            pub struct Scalar($uint);

            primeorder::impl_mont_field_element!(
                $curve,
                Scalar,
                FieldBytes,
                $uint,
                <$curve as ec::Curve>::ORDER,
                Words,
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

            impl Scalar {
                const fn invert_unchecked(&self) -> Self {
                    Self($uint::from_words(fn_::invert(self.0.as_words())))
                }
                /// self⁻¹, none for zero.
                pub fn invert(&self) -> CtOption<Self> {
                    CtOption::new(self.invert_unchecked(), !self.is_zero())
                }
                /// A square root (Tonelli–Shanks: n ≡ 1 mod 4).
                pub fn sqrt(&self) -> CtOption<Self> {
                    ec::ff::helpers::sqrt_tonelli_shanks(self, $stm)
                }
            }

            impl PrimeField for Scalar {
                type Repr = FieldBytes;
                const MODULUS: &'static str = N_HEX;
                const NUM_BITS: u32 = $bits;
                const CAPACITY: u32 = $bits - 1;
                const TWO_INV: Self = Self::from_u64(2).invert_unchecked();
                const MULTIPLICATIVE_GENERATOR: Self = Self::from_u64($sgen);
                const S: u32 = $ss;
                const ROOT_OF_UNITY: Self = Self::from_hex($sroot);
                const ROOT_OF_UNITY_INV: Self = Self::ROOT_OF_UNITY.invert_unchecked();
                const DELTA: Self = Self::from_hex($sdelta);
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
                type Uint = $uint;
                fn from_uint_unchecked(uint: $uint) -> Self {
                    Self::from_uint_unchecked(uint)
                }
            }

            impl ec::scalar::IsHigh for Scalar {
                fn is_high(&self) -> Choice {
                    const HALF: $uint = <$curve as ec::Curve>::ORDER.shr_vartime(1);
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

            impl ec::ops::Reduce<$uint> for Scalar {
                type Bytes = FieldBytes;
                /// w mod n for any w of the integer width: the Montgomery
                /// conversion reduces it.
                fn reduce(w: $uint) -> Self {
                    Self::from_uint_unchecked(w)
                }
                fn reduce_bytes(bytes: &FieldBytes) -> Self {
                    Self::reduce(ec::FieldBytesEncoding::<$curve>::decode_field_bytes(bytes))
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

            impl From<ec::ScalarPrimitive<$curve>> for Scalar {
                fn from(w: ec::ScalarPrimitive<$curve>) -> Self {
                    Self::from_uint_unchecked(*w.as_uint())
                }
            }

            impl From<Scalar> for ec::ScalarPrimitive<$curve> {
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

            impl From<Scalar> for $uint {
                fn from(s: Scalar) -> Self {
                    s.to_canonical()
                }
            }

            /// A point in affine coordinates.
            pub type AffinePoint = primeorder::AffinePoint<$curve>;
            /// A point in projective coordinates.
            pub type ProjectivePoint = primeorder::ProjectivePoint<$curve>;

            impl ec::CurveArithmetic for $curve {
                type AffinePoint = AffinePoint;
                type ProjectivePoint = ProjectivePoint;
                type Scalar = Scalar;
            }

            impl primeorder::PrimeCurveParams for $curve {
                type FieldElement = FieldElement;
                type PointArithmetic = primeorder::point_arithmetic::EquationAIsGeneric;
                const EQUATION_A: FieldElement = FieldElement::ZERO;
                const EQUATION_B: FieldElement = FieldElement::from_u64($b);
                const GENERATOR: (FieldElement, FieldElement) = ($gx, $gy);
            }

            impl $curve {
                /// The affine coordinates of `q` (not the identity): x as
                /// stored, y the square root of x³ + b of the parity the
                /// point records.
                pub fn xy(q: &AffinePoint) -> (FieldBytes, FieldBytes) {
                    use ec::point::AffineCoordinates;
                    let x_bytes = q.x();
                    let x = Option::<FieldElement>::from(FieldElement::from_repr(x_bytes))
                        .unwrap_or(FieldElement::ZERO);
                    let root = Option::<FieldElement>::from(
                        (x.square() * x + FieldElement::from_u64($b)).sqrt(),
                    )
                    .unwrap_or(FieldElement::ZERO);
                    let flip = root.is_odd() ^ q.y_is_odd();
                    let y = FieldElement::conditional_select(&root, &-root, flip);
                    (x_bytes, y.to_repr())
                }

                /// The point (x, y), each exactly the field's size, if both
                /// are below p and y² = x³ + b.
                pub fn from_xy(x: &[u8], y: &[u8]) -> Option<AffinePoint> {
                    use ec::point::DecompressPoint;
                    let fx = FieldElement::from_slice(x).ok()?;
                    let fy = FieldElement::from_slice(y).ok()?;
                    if fy.square() != fx.square() * fx + FieldElement::from_u64($b) {
                        return None;
                    }
                    Option::from(AffinePoint::decompress(&fx.to_repr(), fy.is_odd()))
                }
            }
        }
    };
}

bn_curve!(
    bn_p256, BnP256, "TPM_ECC_BN_P256: y² = x³ + 3, G = (1, 2).", U256, ec::consts::U32, 256,
    p: "FFFFFFFFFFFCF0CD46E5F25EEE71A49F0CDC65FB12980A82D3292DDBAED33013",
    n: "FFFFFFFFFFFCF0CD46E5F25EEE71A49E0CDC65FB1299921AF62D536CD10B500D",
    b: 3,
    g: (FieldElement::from_u64(1), FieldElement::from_u64(2)),
    field: {
        gen: 2, s: 1, delta: 4,
        sqrt: [0xb4ca4b76ebb4cc05, 0xc337197ec4a602a0, 0x51b97c97bb9c6927, 0x3fffffffffff3c33]
    },
    scalar: {
        gen: 2, s: 2,
        root: "00000000000000027311c281242030cd379baf3be3234b0afd1e06a5deaf4015",
        delta: "0000000000000000000000000000000000000000000000000000000000000010",
        tm1d2: [0x5ec5aa6d9a216a01, 0xc19b8cbf62533243, 0xa8dcbe4bddce3493, 0x1fffffffffff9e19]
    }
);

bn_curve!(
    bn_p638, BnP638, "TPM_ECC_BN_P638: y² = x³ + 257, G = (p − 1, 16).", U768,
    ec::consts::U80, 638,
    p: "0000000000000000000000000000000023FFFFFDC000000D7FFFFFB8000001D3FFFFF942D000165E3FFF94870000D52FFFFDD0E00008DE55C00086520021E55BFFFFF51FFFF4EB800000004C80015ACDFFFFFFFFFFFFECE00000000000000067",
    n: "0000000000000000000000000000000023FFFFFDC000000D7FFFFFB8000001D3FFFFF942D000165E3FFF94870000D52FFFFDD0E00008DE55600086550021E555FFFFF54FFFF4EAC000000049800154D9FFFFFFFFFFFFEDA00000000000000061",
    b: 257,
    g: (FieldElement::neg(&FieldElement::ONE), FieldElement::from_u64(16)),
    field: {
        gen: 5, s: 1, delta: 25,
        sqrt: [
            0x000000000000001a, 0x7ffffffffffffb38, 0x00000013200056b3, 0xfffffd47fffd3ae0,
            0x7000219480087956, 0xffff743800023795, 0x8fffe521c000354b, 0xfffffe50b4000597,
            0x5fffffee00000074, 0x08ffffff70000003, 0, 0,
        ]
    },
    scalar: {
        gen: 7, s: 5,
        root: "00000000000000000000000000000000122ef17d523e2a11dda073a8e9ecbf54790589659b1f3eabc6063f96e0fba1db0354e650196e73e6f2776f9ebc21ba74b628213086aa37f6c5d740fc83acd901b179f3df1431de0d5fabfb4540b8ff49",
        delta: "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000003918fa8303c33586e913b01",
        tm1d2: [
            0x8000000000000001, 0x67ffffffffffffb6, 0x0000000126000553, 0x57ffffd53fffd3ab,
            0x5580021954008795, 0xbffff74380002379, 0x78fffe521c000354, 0x4fffffe50b400059,
            0x35fffffee0000007, 0x008ffffff7000000, 0, 0,
        ]
    }
);

pub use bn_p256::BnP256;
pub use bn_p638::BnP638;

#[cfg(test)]
mod tests {
    use ec::group::Group;
    use ec::ops::Reduce;
    use ec::point::AffineCoordinates;
    use ec::PrimeField;
    use p256::elliptic_curve as ec;

    /// The field and scalar constants from their definitions, inverses,
    /// square roots and encodings, the group order, and the coordinate
    /// reading and checking of points, on curve module `$m`.
    macro_rules! curve_tests {
        ($name:ident, $m:ident, $curve:ident, $uint:ident) => {
            #[test]
            fn $name() {
                use super::$m::*;
                use crypto_bigint::$uint;
                let pow2s = |mut v: Scalar, s: u32| {
                    for _ in 0..s {
                        v = v.square();
                    }
                    v
                };
                assert_eq!(FieldElement::TWO_INV.double(), FieldElement::ONE);
                assert_eq!(Scalar::TWO_INV.double(), Scalar::ONE);
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
                assert_eq!(
                    FieldElement::MULTIPLICATIVE_GENERATOR.square(),
                    FieldElement::DELTA
                );
                // The generators are non-residues.
                assert!(bool::from(
                    FieldElement::MULTIPLICATIVE_GENERATOR.sqrt().is_none()
                ));
                assert!(bool::from(
                    Scalar::MULTIPLICATIVE_GENERATOR.sqrt().is_none()
                ));
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
                assert!(bool::from(FieldElement::ZERO.invert().is_none()));
                // p and n themselves are no canonical encodings; n reduces
                // to zero, n + 5 to 5.
                let order = <$curve as ec::Curve>::ORDER;
                let n_bytes = ec::FieldBytesEncoding::<$curve>::encode_field_bytes(&order);
                assert!(bool::from(Scalar::from_repr(n_bytes).is_none()));
                let p_bytes = (FieldElement::ZERO - FieldElement::ONE).to_repr();
                let mut p_plus = p_bytes;
                let last = p_plus.len() - 1;
                p_plus[last] += 1;
                assert!(bool::from(FieldElement::from_repr(p_plus).is_none()));
                assert_eq!(Scalar::reduce_bytes(&n_bytes), Scalar::ZERO);
                let n5 = order.wrapping_add(&$uint::from_u64(5));
                assert_eq!(Scalar::reduce(n5), Scalar::from_u64(5));
                assert_eq!(Scalar::reduce($uint::MAX) + Scalar::ONE, {
                    // 2^w mod n, computed as (2^(w−1) mod n)·2.
                    Scalar::reduce($uint::ONE.shl_vartime($uint::BITS - 1)).double()
                });
                // The group: [n−1]G = −G and adding G gives the identity.
                let g = ProjectivePoint::generator();
                let p = g * -Scalar::ONE;
                assert_eq!(p, -g);
                assert!(bool::from((p + g).is_identity()));
                let (a, b) = (Scalar::from_u64(0xdead_beef), Scalar::from_u64(12345678));
                assert_eq!(g * a + g * b, g * (a + b));
                assert_eq!((g * a) * b, g * (a * b));
                // Coordinates: G's as the registry gives them, a point and
                // its negation read back, points off the curve refused.
                let (gx, gy) = $curve::xy(&g.to_affine());
                assert_eq!(
                    (
                        FieldElement::from_repr(gx).unwrap(),
                        FieldElement::from_repr(gy).unwrap()
                    ),
                    <$curve as primeorder::PrimeCurveParams>::GENERATOR
                );
                for q in [g * a, -(g * a), g * b] {
                    let q = q.to_affine();
                    let (x, y) = $curve::xy(&q);
                    assert_eq!(x, q.x());
                    assert_eq!($curve::from_xy(&x, &y), Some(q));
                    let mut y1 = y;
                    y1[last] ^= 1;
                    assert_eq!($curve::from_xy(&x, &y1), None);
                    assert_eq!($curve::from_xy(&x[1..], &y), None);
                }
                assert_eq!($curve::from_xy(&p_bytes, &p_plus), None);
            }
        };
    }
    curve_tests!(bn_p256_arithmetic, bn_p256, BnP256, U256);
    curve_tests!(bn_p638_arithmetic, bn_p638, BnP638, U768);
}
