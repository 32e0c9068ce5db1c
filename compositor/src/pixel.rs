//! Per-pixel arithmetic on ARGB words: bilinear interpolation with 8-bit weights and
//! alpha blending with exact rounding, two 8-bit channels per 32-bit lane pair.

use crate::format::OPAQUE;

const LANES: u32 = 0x00FF_00FF;
const HALF_LANES: u32 = 0x0080_0080;

/// `round(t / 255)` for `t ≤ 65535`, exactly.
#[inline(always)]
pub fn div255(t: u32) -> u32 {
    let t = t + 128;
    (t + (t >> 8)) >> 8
}

/// `p + (q − p)·f/256` per channel, rounded, for `f ≤ 255`.
#[inline(always)]
pub fn lerp(p: u32, q: u32, f: u32) -> u32 {
    let g = 256 - f;
    let rb = (((p & LANES) * g + (q & LANES) * f + HALF_LANES) >> 8) & LANES;
    let ag = (((p >> 8) & LANES) * g + ((q >> 8) & LANES) * f + HALF_LANES) & !LANES;
    rb | ag
}

/// `s` over the opaque `d` with coverage `a` (0..=255): `round((s·a + d·(255 − a)) /
/// 255)` per colour channel; the result is opaque.
#[inline(always)]
pub fn blend(s: u32, d: u32, a: u32) -> u32 {
    let na = 255 - a;
    let rb = (s & LANES) * a + (d & LANES) * na + HALF_LANES;
    let rb = ((rb + ((rb >> 8) & LANES)) >> 8) & LANES;
    let g = div255(((s >> 8) & 0xFF) * a + ((d >> 8) & 0xFF) * na);
    rb | (g << 8) | OPAQUE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn div255_rounds_exactly() {
        for t in 0..=65535u32 {
            assert_eq!(div255(t), (2 * t + 255) / 510, "t={t}");
        }
    }

    #[test]
    fn blend_matches_the_per_channel_formula() {
        for (s, d) in [(0x80FF_7F01u32, 0xFF00_80FEu32), (0x1234_5678, 0xFFFF_FFFF)] {
            for a in [0, 1, 127, 128, 254, 255] {
                let want = (0..3).fold(OPAQUE, |acc, i| {
                    let (sc, dc) = ((s >> (8 * i)) & 0xFF, (d >> (8 * i)) & 0xFF);
                    acc | (((2 * (sc * a + dc * (255 - a)) + 255) / 510) << (8 * i))
                });
                assert_eq!(blend(s, d, a), want, "s={s:#x} d={d:#x} a={a}");
            }
        }
    }

    #[test]
    fn lerp_endpoints_and_midpoint() {
        assert_eq!(lerp(0x10203040, 0x90A0B0C0, 0), 0x10203040);
        assert_eq!(lerp(0x00000000, 0xFEFEFEFE, 128), 0x7F7F7F7F);
        assert_eq!(lerp(0xFF00FF00, 0x00FF00FF, 255), 0x01FE01FE);
    }
}
