//! The compositor benchmark guest: composes one frame with the `compositor` crate —
//! a 480×270 XRGB8888 surface, a 64×64 ARGB cursor and a status bar into a 640×360
//! output — and counts the instructions (PMU counter 0, INST_RETIRED, exact under
//! QEMU `-icount shift=0`) of: a copy of the output frame (the baseline), the full
//! frame unscaled, the full frame scaled bilinearly to fill the output, and the
//! damage-only frame after a 32×32 change. Prints one `bench-compose:` line and
//! powers off. The per-pixel figure does not depend on the frame size, which is kept
//! small so the run is quick under `-icount`.
//!
//! Each composition is counted twice: with `compose` (the portable loops) and with
//! `compose_with` the hypervisor's NEON kernels (`el2/src/simd.rs`, compiled into
//! this guest). `cargo xtask bench compose` builds this guest for the hypervisor's
//! target, `aarch64-unknown-none-softfloat`, so the figures are the instructions
//! the soft-float EL2 spends without and with them; `same=1` says the two produced
//! identical frames and `kernels_ok=1` that the kernels passed
//! `compositor::kernels::verify`. Built for `aarch64-unknown-none` (where the
//! compiler itself uses the SIMD registers the kernels clobber) both are portable.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
#[path = "../bench-exits/pmu.rs"]
mod pmu;
#[cfg(all(target_os = "none", not(target_feature = "neon")))]
#[path = "../../../../../el2/src/simd.rs"]
mod simd;

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use alloc::vec;
    use alloc::vec::Vec;

    use compositor::text::status_bar;
    use compositor::{compose, Filter, Frame, Layer, PixelFormat, Placement, Rect, Scene, Surface};
    use selftest_guest::{outln, power, sysreg, vectors};

    use crate::pmu;

    const OUT_W: u32 = 640;
    const OUT_H: u32 = 360;
    const SRC_W: u32 = 480;
    const SRC_H: u32 = 270;
    const CURSOR: u32 = 64;

    /// Instructions retired while `f` runs.
    fn count(f: impl FnOnce()) -> u64 {
        sysreg::isb();
        let start = sysreg::pmevcntr0_el0();
        sysreg::isb();
        f();
        sysreg::isb();
        let end = sysreg::pmevcntr0_el0();
        // PMEVCNTR0 may be only 32 bits wide; a frame here stays far below 2^32.
        u64::from((end as u32).wrapping_sub(start as u32))
    }

    fn pattern(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect()
    }

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(u32::MAX);
        if let Err(why) = pmu::start_instruction_counter() {
            outln!("bench-compose: error: {why}");
            power::system_off();
        }
        let src = pattern(SRC_W, SRC_H);
        let cursor_px: Vec<u8> = (0..CURSOR * CURSOR)
            .flat_map(|i| (if i % 3 == 0 { 0u32 } else { 0xC0FF_FFFF }).to_le_bytes())
            .collect();
        let bar = status_bar(OUT_W, "RayOS vm0", 1, 0xFFFF_FFFF, 0xA000_0000);
        let stride = OUT_W as usize * 4;
        let (Ok(guest), Ok(cursor), Ok(bar_surface)) = (
            Surface::new(
                &src,
                SRC_W,
                SRC_H,
                SRC_W as usize * 4,
                PixelFormat::Xrgb8888,
            ),
            Surface::new(
                &cursor_px,
                CURSOR,
                CURSOR,
                CURSOR as usize * 4,
                PixelFormat::Argb8888,
            ),
            bar.surface(),
        ) else {
            outln!("bench-compose: error: surfaces refused");
            power::system_off();
        };
        let scene = |placement: Placement, filter: Filter| Scene {
            background: 0x0020_2020,
            layers: vec![
                Layer {
                    placement,
                    filter,
                    ..Layer::new(guest, 0, 0)
                },
                Layer {
                    z: 2,
                    ..Layer::new(bar_surface, 0, 0)
                },
                Layer {
                    z: 3,
                    ..Layer::new(cursor, 300, 200)
                },
            ],
        };
        let unscaled = scene(Placement::At { x: 80, y: 45 }, Filter::Nearest);
        let scaled = scene(
            Placement::Scaled(Rect::new(0, 0, OUT_W, OUT_H)),
            Filter::Bilinear,
        );
        let output = Rect::new(0, 0, OUT_W, OUT_H);
        let Some(damage) = unscaled.layers[0].damage_of(Rect::new(100, 60, 32, 32), output) else {
            outln!("bench-compose: error: no damage");
            power::system_off();
        };
        let mut out = vec![0u8; stride * OUT_H as usize];
        let mut copy = vec![0u8; stride * OUT_H as usize];
        type Composer = fn(&Scene, &mut Frame, &[Rect]) -> compositor::Report;
        let frame_of = |compose: Composer, buf: &mut [u8], scene: &Scene, rects: &[Rect]| {
            if let Ok(mut f) = Frame::new(buf, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888) {
                compose(scene, &mut f, rects);
            }
        };
        // The soft-float build's NEON kernels; the hard-float build's compiler keeps
        // its own values in the registers they clobber, so it measures `compose`.
        #[cfg(not(target_feature = "neon"))]
        let (neon, kernels_ok): (Composer, bool) = {
            // SAFETY: the boot code sets CPACR_EL1.FPEN, so FP/SIMD does not trap at
            // EL1, and this guest is built soft-float: its own code keeps no values
            // in the FP/SIMD registers the kernels clobber.
            let k = unsafe { crate::simd::Neon::new() };
            (
                |s, f, d| {
                    // SAFETY: as above.
                    let k = unsafe { crate::simd::Neon::new() };
                    compositor::compose_with(s, f, d, &k)
                },
                compositor::kernels::verify(&k).is_ok(),
            )
        };
        #[cfg(target_feature = "neon")]
        let (neon, kernels_ok): (Composer, bool) = (compose, true);
        let measure = |compose: Composer, out: &mut [u8], copy: &mut [u8]| {
            let full = count(|| frame_of(compose, out, &unscaled, &[output]));
            let bilinear = count(|| frame_of(compose, out, &scaled, &[output]));
            copy.copy_from_slice(out);
            frame_of(compose, out, &unscaled, &[output]);
            let dmg = count(|| frame_of(compose, out, &unscaled, &[damage]));
            (full, bilinear, dmg)
        };
        let memcpy = count(|| copy.copy_from_slice(&out));
        let (full, bilinear, dmg) = measure(compose, &mut out, &mut copy);
        let (scaled_scalar, unscaled_scalar) = (copy.clone(), out.clone());
        let (neon_full, neon_bilinear, neon_dmg) = measure(neon, &mut out, &mut copy);
        let same = copy == scaled_scalar && out == unscaled_scalar;
        outln!(
            "bench-compose: output_pixels={} memcpy_insns={memcpy} full_insns={full} bilinear_insns={bilinear} damage_insns={dmg} damage_pixels={} neon_full_insns={neon_full} neon_bilinear_insns={neon_bilinear} neon_damage_insns={neon_dmg} same={} kernels_ok={} target={}",
            OUT_W * OUT_H,
            damage.w * damage.h,
            u32::from(same),
            u32::from(kernels_ok),
            if cfg!(target_feature = "neon") { "neon" } else { "softfloat" }
        );
        power::system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("bench-compose is a bare-metal guest: build it with --target aarch64-unknown-none");
}
