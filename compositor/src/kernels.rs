//! The byte loops of composition behind a trait, so that a caller can run them with
//! SIMD: the hypervisor is built for `aarch64-unknown-none-softfloat`, where these
//! loops run a byte at a time, and a strict-alignment target, where even a build with
//! NEON turns their unaligned vector loads into a load per byte. It provides NEON
//! versions (`el2/src/simd.rs`) and makes FP/SIMD usable around the composition.
//!
//! Every method works on byte slices of equal length (the shortest one bounds the
//! work) and must give exactly the bytes [`Portable`] gives; [`verify`] compares an
//! implementation with it.

use alloc::vec::Vec;

use crate::format::{BYTES_PER_PIXEL, OPAQUE};
use crate::pixel::{blend, div255};

/// The byte loops [`crate::compose_with`] runs. Each result byte depends only on the
/// input bytes at its index (and, for [`Kernels::or_words`], on the word it is in).
pub trait Kernels {
    /// `out[k] = (top[k]·(256 − f) + bottom[k]·f + 128) >> 8`.
    fn lerp_rows(&self, top: &[u8], bottom: &[u8], f: u8, out: &mut [u8]);
    /// `out[k] = (p[k]·(256 − w[k]) + q[k]·w[k] + 128) >> 8`, then every
    /// little-endian 32-bit word of `out` ORed with `mask`.
    fn lerp_weighted(&self, out: &mut [u8], p: &[u8], q: &[u8], w: &[u8], mask: u32);
    /// [`Kernels::lerp_weighted`] in place in `p`, without a mask.
    fn lerp_weighted_in_place(&self, p: &mut [u8], q: &[u8], w: &[u8]);
    /// Every little-endian 32-bit word of `dst` = the same word of `src` | `mask`.
    fn or_words(&self, src: &[u8], dst: &mut [u8], mask: u32);
    /// Overlays (the cursor, the status bar): every ARGB8888 pixel of `src` over
    /// the XRGB8888/ARGB8888 pixel of `dst` at the same index, with coverage
    /// `a = round(A·opacity / 255)` (`A` its alpha byte): left as it is when `a` is
    /// 0; else every colour byte `round((s·a + d·(255 − a)) / 255)` and the alpha
    /// byte 0xFF (so `src`'s colour, opaque, when `a` is 255).
    fn blend_argb(&self, src: &[u8], dst: &mut [u8], opacity: u8);
}

/// The kernels in plain Rust (the compiler vectorises them where it can).
#[derive(Debug, Clone, Copy, Default)]
pub struct Portable;

#[inline(always)]
fn lerp(a: u8, b: u8, f: u8) -> u8 {
    let f = u16::from(f);
    ((u16::from(a) * (256 - f) + u16::from(b) * f + 128) >> 8) as u8
}

/// ORs `mask` into every little-endian word of `out`: a word at a time when aligned.
#[inline(always)]
fn or_mask(out: &mut [u8], mask: u32) {
    if mask == 0 {
        return;
    }
    match bytemuck::try_cast_slice_mut::<u8, u32>(out) {
        Ok(words) => words.iter_mut().for_each(|w| *w |= mask.to_le()),
        Err(_) => {
            let m = mask.to_le_bytes();
            for px in out.chunks_exact_mut(BYTES_PER_PIXEL) {
                px.iter_mut().zip(m).for_each(|(b, m)| *b |= m);
            }
        }
    }
}

impl Kernels for Portable {
    #[inline(always)]
    fn lerp_rows(&self, top: &[u8], bottom: &[u8], f: u8, out: &mut [u8]) {
        // `t·(256 − f) + b·f + 128 ≤ 65408` fits 16 bits: the loop vectorises with
        // 16-bit lanes.
        let (f, g) = (u16::from(f), 256 - u16::from(f));
        for ((o, &t), &b) in out.iter_mut().zip(top).zip(bottom) {
            *o = ((u16::from(t) * g + u16::from(b) * f + 128) >> 8) as u8;
        }
    }

    #[inline(always)]
    fn lerp_weighted(&self, out: &mut [u8], p: &[u8], q: &[u8], w: &[u8], mask: u32) {
        let n = out.len().min(p.len()).min(q.len()).min(w.len());
        let out = &mut out[..n];
        for (((o, &a), &b), &f) in out.iter_mut().zip(p).zip(q).zip(w) {
            *o = lerp(a, b, f);
        }
        or_mask(out, mask);
    }

    #[inline(always)]
    fn lerp_weighted_in_place(&self, p: &mut [u8], q: &[u8], w: &[u8]) {
        for ((a, &b), &f) in p.iter_mut().zip(q).zip(w) {
            *a = lerp(*a, b, f);
        }
    }

    #[inline(always)]
    fn or_words(&self, src: &[u8], dst: &mut [u8], mask: u32) {
        let n = (src.len().min(dst.len()) / BYTES_PER_PIXEL) * BYTES_PER_PIXEL;
        let (src, dst) = (&src[..n], &mut dst[..n]);
        if let (Ok(s), Ok(d)) = (
            bytemuck::try_cast_slice::<u8, u32>(src),
            bytemuck::try_cast_slice_mut::<u8, u32>(dst),
        ) {
            for (d, s) in d.iter_mut().zip(s) {
                *d = *s | mask.to_le();
            }
            return;
        }
        for (d, s) in dst
            .chunks_exact_mut(BYTES_PER_PIXEL)
            .zip(src.chunks_exact(BYTES_PER_PIXEL))
        {
            let w = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) | mask;
            d.copy_from_slice(&w.to_le_bytes());
        }
    }

    #[inline(always)]
    fn blend_argb(&self, src: &[u8], dst: &mut [u8], opacity: u8) {
        for (d, s) in dst
            .chunks_exact_mut(BYTES_PER_PIXEL)
            .zip(src.chunks_exact(BYTES_PER_PIXEL))
        {
            let s = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let a = div255((s >> 24) * u32::from(opacity));
            if a == 0 {
                continue;
            }
            let out = if a == 255 {
                s
            } else {
                blend(s, u32::from_le_bytes([d[0], d[1], d[2], d[3]]), a)
            };
            d.copy_from_slice(&(out | OPAQUE).to_le_bytes());
        }
    }
}

/// Why [`verify`] rejected an implementation: the method, the length and the
/// offset of the slices where its bytes differed from [`Portable`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub kernel: &'static str,
    pub len: usize,
    pub offset: usize,
}

/// Runs every method of `k` and of [`Portable`] on the same pseudo-random bytes —
/// lengths 0 to 100 (covering any vector width's main loop and tail), slices starting
/// at every offset 0..4 of their buffers, all weights and masks — and compares.
pub fn verify<K: Kernels + ?Sized>(k: &K) -> Result<(), Mismatch> {
    const MAX: usize = 100;
    let mut seed = 0x9E37_79B9u32;
    let mut bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed >> 24) as u8
            })
            .collect()
    };
    let (a, b, w) = (bytes(MAX + 8), bytes(MAX + 8), bytes(MAX + 8));
    let mut w = w;
    // Every weight, including the extremes.
    w[..4].copy_from_slice(&[0, 255, 1, 128]);
    for len in (0..=MAX).step_by(1) {
        for offset in 0..4 {
            let r = offset..offset + len;
            let fail = |kernel| Mismatch {
                kernel,
                len,
                offset,
            };
            let (mut want, mut got) = (alloc::vec![0u8; MAX + 8], alloc::vec![0u8; MAX + 8]);
            let f = w[len % w.len()];
            Portable.lerp_rows(&a[r.clone()], &b[r.clone()], f, &mut want[r.clone()]);
            k.lerp_rows(&a[r.clone()], &b[r.clone()], f, &mut got[r.clone()]);
            if want != got {
                return Err(fail("lerp_rows"));
            }
            let mask = [0, 0xFF00_0000, 0xFF, 0x8001_7F00][len % 4];
            Portable.lerp_weighted(
                &mut want[r.clone()],
                &a[r.clone()],
                &b[r.clone()],
                &w[r.clone()],
                mask,
            );
            k.lerp_weighted(
                &mut got[r.clone()],
                &a[r.clone()],
                &b[r.clone()],
                &w[r.clone()],
                mask,
            );
            if want != got {
                return Err(fail("lerp_weighted"));
            }
            Portable.lerp_weighted_in_place(&mut want[r.clone()], &b[r.clone()], &w[r.clone()]);
            k.lerp_weighted_in_place(&mut got[r.clone()], &b[r.clone()], &w[r.clone()]);
            if want != got {
                return Err(fail("lerp_weighted_in_place"));
            }
            Portable.or_words(&a[r.clone()], &mut want[r.clone()], mask);
            k.or_words(&a[r.clone()], &mut got[r.clone()], mask);
            if want != got {
                return Err(fail("or_words"));
            }
            // Alpha bytes 0 and 255 among the random ones, every opacity class.
            let mut src = a[r.clone()].to_vec();
            for (i, alpha) in src.iter_mut().skip(3).step_by(BYTES_PER_PIXEL).enumerate() {
                match (i + len) % 5 {
                    0 => *alpha = 0,
                    1 => *alpha = 255,
                    _ => {}
                }
            }
            let opacity = [255, 0, 1, 128, w[len % w.len()]][(len + offset) % 5];
            Portable.blend_argb(&src, &mut want[r.clone()], opacity);
            k.blend_argb(&src, &mut got[r.clone()], opacity);
            if want != got {
                return Err(fail("blend_argb"));
            }
        }
    }
    Ok(())
}
