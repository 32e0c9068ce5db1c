//! NEON versions of the compositor's byte loops ([`compositor::Kernels`]).
//!
//! The hypervisor is built for `aarch64-unknown-none-softfloat`, where those loops
//! run a byte at a time; and both bare-metal targets are strict-alignment, where
//! the compiler turns even a NEON build's unaligned vector loads into a load per
//! byte. These kernels process 16 bytes per step with `LD1`/`ST1` of byte
//! elements, which need no alignment, and leave the last `len % 16` bytes to
//! [`Portable`]. Each computes exactly what the portable loop does (see the
//! comments), and `compositor::kernels::verify` compares them at display start.
//!
//! The render loop makes FP/SIMD usable and saves the guest's FP/SIMD registers
//! around the composition (`display.rs`); a [`Neon`] value is the promise that
//! this was done. The `bench-compose` test guest compiles this file too (it is
//! built soft-float for the benchmark), so the benchmark counts this code.

use core::arch::asm;

use compositor::{Kernels, Portable};

/// Bytes per NEON step.
const STEP: usize = 16;

/// The NEON kernels; exists only while FP/SIMD may be used and clobbered.
pub struct Neon {
    _promise: (),
}

impl Neon {
    /// # Safety
    ///
    /// For as long as the value lives, FP/SIMD instructions must not trap at the
    /// current exception level, and the FP/SIMD registers V0–V7 may be overwritten:
    /// they hold nothing anyone needs (the caller saved them, and the code that
    /// runs meanwhile keeps no values in them — it is built soft-float).
    pub unsafe fn new() -> Neon {
        Neon { _promise: () }
    }
}

/// The part of a length that whole steps cover.
fn body(n: usize) -> usize {
    n - n % STEP
}

impl Kernels for Neon {
    fn lerp_rows(&self, top: &[u8], bottom: &[u8], f: u8, out: &mut [u8]) {
        let n = out.len().min(top.len()).min(bottom.len());
        let m = body(n);
        if m > 0 {
            // Per byte, in 16-bit lanes: t·256 + b·f − t·f = t·(256 − f) + b·f (exact
            // modulo 2^16 and at most 65280), then RSHRN #8 adds 128 and shifts:
            // the portable `(t·(256 − f) + b·f + 128) >> 8`.
            // SAFETY: reads `m` bytes from `top` and `bottom` and writes `m` bytes to
            // `out`, all within the slices (`m ≤` each length); LD1/ST1 of byte
            // elements have no alignment requirement. FP/SIMD is usable and V0–V5
            // are free to clobber: the `Neon` value promises it (`Neon::new`).
            unsafe {
                asm!(
                    ".arch_extension simd",
                    "dup v0.16b, {f:w}",
                    "2:",
                    "ld1 {{v1.16b}}, [{t}], #16",
                    "ld1 {{v2.16b}}, [{b}], #16",
                    "shll v3.8h, v1.8b, #8",
                    "shll2 v4.8h, v1.16b, #8",
                    "umlal v3.8h, v2.8b, v0.8b",
                    "umlal2 v4.8h, v2.16b, v0.16b",
                    "umlsl v3.8h, v1.8b, v0.8b",
                    "umlsl2 v4.8h, v1.16b, v0.16b",
                    "rshrn v5.8b, v3.8h, #8",
                    "rshrn2 v5.16b, v4.8h, #8",
                    "st1 {{v5.16b}}, [{o}], #16",
                    "subs {n}, {n}, #16",
                    "b.ne 2b",
                    t = inout(reg) top.as_ptr() => _,
                    b = inout(reg) bottom.as_ptr() => _,
                    o = inout(reg) out.as_mut_ptr() => _,
                    n = inout(reg) m => _,
                    f = in(reg) u32::from(f),
                    options(nostack),
                );
            }
        }
        Portable.lerp_rows(&top[m..n], &bottom[m..n], f, &mut out[m..n]);
    }

    fn lerp_weighted(&self, out: &mut [u8], p: &[u8], q: &[u8], w: &[u8], mask: u32) {
        let n = out.len().min(p.len()).min(q.len()).min(w.len());
        let m = body(n);
        if m > 0 {
            // As `lerp_rows` with a weight per byte, then the mask ORed into every
            // 32-bit lane (a little-endian word: steps start on word boundaries).
            // SAFETY: reads `m` bytes of `p`, `q` and `w`, writes `m` bytes of
            // `out`, all within the slices; byte-element LD1/ST1 need no alignment.
            // FP/SIMD is usable and V0–V6 are free to clobber (`Neon::new`).
            unsafe {
                asm!(
                    ".arch_extension simd",
                    "dup v6.4s, {mask:w}",
                    "2:",
                    "ld1 {{v1.16b}}, [{p}], #16",
                    "ld1 {{v2.16b}}, [{q}], #16",
                    "ld1 {{v0.16b}}, [{w}], #16",
                    "shll v3.8h, v1.8b, #8",
                    "shll2 v4.8h, v1.16b, #8",
                    "umlal v3.8h, v2.8b, v0.8b",
                    "umlal2 v4.8h, v2.16b, v0.16b",
                    "umlsl v3.8h, v1.8b, v0.8b",
                    "umlsl2 v4.8h, v1.16b, v0.16b",
                    "rshrn v5.8b, v3.8h, #8",
                    "rshrn2 v5.16b, v4.8h, #8",
                    "orr v5.16b, v5.16b, v6.16b",
                    "st1 {{v5.16b}}, [{o}], #16",
                    "subs {n}, {n}, #16",
                    "b.ne 2b",
                    p = inout(reg) p.as_ptr() => _,
                    q = inout(reg) q.as_ptr() => _,
                    w = inout(reg) w.as_ptr() => _,
                    o = inout(reg) out.as_mut_ptr() => _,
                    n = inout(reg) m => _,
                    mask = in(reg) mask,
                    options(nostack),
                );
            }
        }
        Portable.lerp_weighted(&mut out[m..n], &p[m..n], &q[m..n], &w[m..n], mask);
    }

    fn lerp_weighted_in_place(&self, p: &mut [u8], q: &[u8], w: &[u8]) {
        let n = p.len().min(q.len()).min(w.len());
        let m = body(n);
        if m > 0 {
            let at = p.as_mut_ptr();
            // As `lerp_weighted` without the mask, storing back into `p`.
            // SAFETY: reads `m` bytes of `p`, `q` and `w` and writes the same `m`
            // bytes of `p` (each step stores what it loaded, after loading it), all
            // within the slices; byte-element LD1/ST1 need no alignment. FP/SIMD
            // is usable and V0–V5 are free to clobber (`Neon::new`).
            unsafe {
                asm!(
                    ".arch_extension simd",
                    "2:",
                    "ld1 {{v1.16b}}, [{p}], #16",
                    "ld1 {{v2.16b}}, [{q}], #16",
                    "ld1 {{v0.16b}}, [{w}], #16",
                    "shll v3.8h, v1.8b, #8",
                    "shll2 v4.8h, v1.16b, #8",
                    "umlal v3.8h, v2.8b, v0.8b",
                    "umlal2 v4.8h, v2.16b, v0.16b",
                    "umlsl v3.8h, v1.8b, v0.8b",
                    "umlsl2 v4.8h, v1.16b, v0.16b",
                    "rshrn v5.8b, v3.8h, #8",
                    "rshrn2 v5.16b, v4.8h, #8",
                    "st1 {{v5.16b}}, [{o}], #16",
                    "subs {n}, {n}, #16",
                    "b.ne 2b",
                    p = inout(reg) at.cast_const() => _,
                    q = inout(reg) q.as_ptr() => _,
                    w = inout(reg) w.as_ptr() => _,
                    o = inout(reg) at => _,
                    n = inout(reg) m => _,
                    options(nostack),
                );
            }
        }
        Portable.lerp_weighted_in_place(&mut p[m..n], &q[m..n], &w[m..n]);
    }

    fn or_words(&self, src: &[u8], dst: &mut [u8], mask: u32) {
        let n = src.len().min(dst.len());
        let m = body(n);
        if m > 0 {
            // SAFETY: reads `m` bytes of `src` and writes `m` bytes of `dst`, within
            // the slices; byte-element LD1/ST1 need no alignment. FP/SIMD is usable
            // and V0–V1 are free to clobber (`Neon::new`).
            unsafe {
                asm!(
                    ".arch_extension simd",
                    "dup v0.4s, {mask:w}",
                    "2:",
                    "ld1 {{v1.16b}}, [{s}], #16",
                    "orr v1.16b, v1.16b, v0.16b",
                    "st1 {{v1.16b}}, [{d}], #16",
                    "subs {n}, {n}, #16",
                    "b.ne 2b",
                    s = inout(reg) src.as_ptr() => _,
                    d = inout(reg) dst.as_mut_ptr() => _,
                    n = inout(reg) m => _,
                    mask = in(reg) mask,
                    options(nostack),
                );
            }
        }
        Portable.or_words(&src[m..n], &mut dst[m..n], mask);
    }

    fn blend_argb(&self, src: &[u8], dst: &mut [u8], opacity: u8) {
        let n = src.len().min(dst.len());
        let m = body(n);
        if m > 0 {
            // Four pixels a step, in the portable loop's arithmetic:
            // - coverage per 32-bit lane: x = A·opacity (≤ 65025, in the low half;
            //   the high half 0), then `div255` in 16-bit lanes, (x + 128 +
            //   ((x + 128) >> 8)) >> 8 (the high halves stay 0: 128 >> 8 = 0), and
            //   SLI copies it into every byte of its pixel;
            // - per byte, t = s·a + d·(255 − a) (≤ 65025; 255 − a is NOT a), the
            //   same `div255` (t + 128 + ((t + 128) >> 8) ≤ 65407 fits) narrowed;
            // - alpha byte 0xFF; and where a = 0 the destination's bytes as they
            //   were (BIT under the CMEQ mask), as the portable loop skips them.
            // SAFETY: reads `m` bytes of `src` and reads and writes `m` bytes of
            // `dst` (each step stores the 16 bytes it loaded, after loading them),
            // all within the slices; byte-element LD1/ST1 need no alignment.
            // FP/SIMD is usable and V0–V7 are free to clobber (`Neon::new`).
            unsafe {
                asm!(
                    ".arch_extension simd",
                    "dup v0.4s, {op:w}",
                    "movi v7.8h, #0x80",
                    "2:",
                    "ld1 {{v1.16b}}, [{s}], #16",
                    "ld1 {{v2.16b}}, [{d}]",
                    "ushr v3.4s, v1.4s, #24",
                    "mul v3.4s, v3.4s, v0.4s",
                    "add v3.8h, v3.8h, v7.8h",
                    "usra v3.8h, v3.8h, #8",
                    "ushr v3.8h, v3.8h, #8",
                    "sli v3.4s, v3.4s, #8",
                    "sli v3.4s, v3.4s, #16",
                    "mvn v6.16b, v3.16b",
                    "umull v4.8h, v1.8b, v3.8b",
                    "umull2 v5.8h, v1.16b, v3.16b",
                    "umlal v4.8h, v2.8b, v6.8b",
                    "umlal2 v5.8h, v2.16b, v6.16b",
                    "add v4.8h, v4.8h, v7.8h",
                    "add v5.8h, v5.8h, v7.8h",
                    "usra v4.8h, v4.8h, #8",
                    "usra v5.8h, v5.8h, #8",
                    "shrn v4.8b, v4.8h, #8",
                    "shrn2 v4.16b, v5.8h, #8",
                    "orr v4.4s, #0xff, lsl #24",
                    "cmeq v3.16b, v3.16b, #0",
                    "bit v4.16b, v2.16b, v3.16b",
                    "st1 {{v4.16b}}, [{d}], #16",
                    "subs {n}, {n}, #16",
                    "b.ne 2b",
                    s = inout(reg) src.as_ptr() => _,
                    d = inout(reg) dst.as_mut_ptr() => _,
                    n = inout(reg) m => _,
                    op = in(reg) u32::from(opacity),
                    options(nostack),
                );
            }
        }
        Portable.blend_argb(&src[m..n], &mut dst[m..n], opacity);
    }
}
