//! The EDID of the virtual monitor (VESA E-EDID 1.4 base block, 128 bytes): one
//! preferred detailed timing for the scanout's mode, a monitor name, sRGB
//! chromaticity, no extension blocks. The guest reads it with GET_EDID and picks the
//! mode from the detailed timing.

/// Bytes of an EDID base block.
pub const BLOCK: usize = 128;

/// Largest width or height a detailed timing descriptor holds (12 bits).
pub const MAX_ACTIVE: u32 = 0xfff;

/// Fixed header (bytes 0–7).
const HEADER: [u8; 8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
/// Manufacturer "RAY" as three 5-bit letters ('A' = 1), big-endian.
const MANUFACTURER: u16 = (18 << 10) | (1 << 5) | 25;
/// Product code of the virtual monitor.
const PRODUCT: u16 = 0x0001;
/// Year of manufacture, stored as the offset from 1990.
const YEAR_OFFSET: u8 = (2026 - 1990) as u8;
/// EDID structure version and revision.
const VERSION: u8 = 1;
const REVISION: u8 = 4;
/// Video input: digital, 8 bits per primary colour, interface not defined.
const VIDEO_INPUT: u8 = 0x80 | (0b010 << 4);
/// Display gamma 2.2, stored as (gamma × 100) − 100.
const GAMMA: u8 = 120;
/// Feature support: sRGB is the default colour space, the preferred timing mode is
/// the native one, RGB 4:4:4.
const FEATURES: u8 = (1 << 2) | (1 << 1);
/// sRGB chromaticity (red, green, blue, white; x then y), in 1/1024 units.
const CHROMA: [(u16, u16); 4] = [(655, 338), (307, 614), (154, 61), (320, 337)];
/// An unused standard-timing slot.
const STD_UNUSED: [u8; 2] = [0x01, 0x01];
/// Display descriptor tags.
const TAG_NAME: u8 = 0xfc;
const TAG_DUMMY: u8 = 0x10;
/// The monitor name (at most 13 bytes).
const NAME: &[u8] = b"RayOS virtual";
/// Offsets of the four 18-byte descriptors.
const DESCRIPTORS: [usize; 4] = [54, 72, 90, 108];
const DESCRIPTOR_LEN: usize = 18;
/// Horizontal blanking of the timing: front porch, sync width, back porch (CVT
/// reduced-blanking proportions).
const H_FRONT: u32 = 48;
const H_SYNC: u32 = 32;
const H_BLANK: u32 = 160;
/// Vertical front porch and sync width; the blanking is at least `V_BLANK_MIN`.
const V_FRONT: u32 = 3;
const V_SYNC: u32 = 5;
const V_BLANK_MIN: u32 = 23;
/// Refresh rate aimed at, in Hz.
const REFRESH_HZ: u64 = 60;
/// Largest pixel clock a descriptor holds, in 10 kHz units.
const MAX_CLOCK_10KHZ: u64 = 0xffff;
/// Flags of the timing: non-interlaced, digital separate sync, both syncs positive.
const DTD_FLAGS: u8 = (0b11 << 3) | (1 << 2) | (1 << 1);
/// Physical size assumed for a pixel: 0.264 mm (96 dots per inch), in µm.
const PIXEL_PITCH_UM: u32 = 264;

/// The EDID of a monitor whose preferred mode is `width`×`height`, or `None` if
/// either is 0 or above [`MAX_ACTIVE`].
pub fn generate(width: u32, height: u32) -> Option<[u8; BLOCK]> {
    if width == 0 || height == 0 || width > MAX_ACTIVE || height > MAX_ACTIVE {
        return None;
    }
    let mut e = [0u8; BLOCK];
    e[..8].copy_from_slice(&HEADER);
    e[8..10].copy_from_slice(&MANUFACTURER.to_be_bytes());
    e[10..12].copy_from_slice(&PRODUCT.to_le_bytes());
    // Serial number (12..16) and week (16) stay 0: not given.
    e[17] = YEAR_OFFSET;
    e[18] = VERSION;
    e[19] = REVISION;
    e[20] = VIDEO_INPUT;
    let width_mm = width * PIXEL_PITCH_UM / 1000;
    let height_mm = height * PIXEL_PITCH_UM / 1000;
    e[21] = u8::try_from(width_mm.div_ceil(10)).unwrap_or(u8::MAX);
    e[22] = u8::try_from(height_mm.div_ceil(10)).unwrap_or(u8::MAX);
    e[23] = GAMMA;
    e[24] = FEATURES;
    put_chromaticity(&mut e);
    // Established timings (35..38) stay 0; every standard timing is unused.
    for slot in 0..8 {
        e[38 + 2 * slot..40 + 2 * slot].copy_from_slice(&STD_UNUSED);
    }
    put_timing(
        &mut e[DESCRIPTORS[0]..][..DESCRIPTOR_LEN],
        width,
        height,
        width_mm,
        height_mm,
    );
    put_text(&mut e[DESCRIPTORS[1]..][..DESCRIPTOR_LEN], TAG_NAME, NAME);
    put_text(&mut e[DESCRIPTORS[2]..][..DESCRIPTOR_LEN], TAG_DUMMY, b"");
    put_text(&mut e[DESCRIPTORS[3]..][..DESCRIPTOR_LEN], TAG_DUMMY, b"");
    // No extension blocks (126); the checksum makes the block sum to 0 mod 256.
    let sum = e[..BLOCK - 1].iter().fold(0u8, |s, b| s.wrapping_add(*b));
    e[BLOCK - 1] = 0u8.wrapping_sub(sum);
    Some(e)
}

/// Bytes 25–34: the low two bits of each coordinate packed in two bytes, then the
/// high eight bits of each.
fn put_chromaticity(e: &mut [u8; BLOCK]) {
    let coords: [u16; 8] = [
        CHROMA[0].0,
        CHROMA[0].1,
        CHROMA[1].0,
        CHROMA[1].1,
        CHROMA[2].0,
        CHROMA[2].1,
        CHROMA[3].0,
        CHROMA[3].1,
    ];
    let low = |c: u16| (c & 0b11) as u8;
    e[25] = (low(coords[0]) << 6) | (low(coords[1]) << 4) | (low(coords[2]) << 2) | low(coords[3]);
    e[26] = (low(coords[4]) << 6) | (low(coords[5]) << 4) | (low(coords[6]) << 2) | low(coords[7]);
    for (i, c) in coords.iter().enumerate() {
        e[27 + i] = (c >> 2) as u8;
    }
}

/// A detailed timing descriptor for `w`×`h` at about [`REFRESH_HZ`] (lower if the
/// pixel clock would not fit).
fn put_timing(d: &mut [u8], w: u32, h: u32, w_mm: u32, h_mm: u32) {
    let v_blank = core::cmp::max(V_BLANK_MIN, h / 20);
    let total = u64::from(w + H_BLANK) * u64::from(h + v_blank);
    let clock = (total * REFRESH_HZ).div_ceil(10_000).min(MAX_CLOCK_10KHZ) as u16;
    d[0..2].copy_from_slice(&clock.to_le_bytes());
    let lo = |v: u32| (v & 0xff) as u8;
    let hi4 = |v: u32| ((v >> 8) & 0xf) as u8;
    d[2] = lo(w);
    d[3] = lo(H_BLANK);
    d[4] = (hi4(w) << 4) | hi4(H_BLANK);
    d[5] = lo(h);
    d[6] = lo(v_blank);
    d[7] = (hi4(h) << 4) | hi4(v_blank);
    d[8] = lo(H_FRONT);
    d[9] = lo(H_SYNC);
    d[10] = (((V_FRONT & 0xf) as u8) << 4) | (V_SYNC & 0xf) as u8;
    d[11] = ((((H_FRONT >> 8) & 3) as u8) << 6)
        | ((((H_SYNC >> 8) & 3) as u8) << 4)
        | ((((V_FRONT >> 4) & 3) as u8) << 2)
        | (((V_SYNC >> 4) & 3) as u8);
    let w_mm = w_mm.min(0xfff);
    let h_mm = h_mm.min(0xfff);
    d[12] = lo(w_mm);
    d[13] = lo(h_mm);
    d[14] = (hi4(w_mm) << 4) | hi4(h_mm);
    // No borders (15, 16).
    d[17] = DTD_FLAGS;
}

/// A display descriptor with `tag` holding `text` (newline-terminated, space-padded).
fn put_text(d: &mut [u8], tag: u8, text: &[u8]) {
    d[..5].copy_from_slice(&[0, 0, 0, tag, 0]);
    let body = &mut d[5..];
    if text.is_empty() {
        body.fill(0);
        return;
    }
    body.fill(b' ');
    let n = text.len().min(body.len());
    body[..n].copy_from_slice(&text[..n]);
    if n < body.len() {
        body[n] = b'\n';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The active size a detailed timing descriptor holds, decoded per the standard.
    fn dtd_active(d: &[u8]) -> (u32, u32) {
        let w = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let h = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        (w, h)
    }

    fn dtd_refresh_mhz(d: &[u8]) -> u64 {
        let clock = u64::from(u16::from_le_bytes([d[0], d[1]])) * 10_000;
        let hb = u64::from(d[3]) | (u64::from(d[4] & 0xf) << 8);
        let vb = u64::from(d[6]) | (u64::from(d[7] & 0xf) << 8);
        let (w, h) = dtd_active(d);
        clock * 1000 / ((u64::from(w) + hb) * (u64::from(h) + vb))
    }

    #[test]
    fn block_is_well_formed_for_many_modes() {
        for (w, h) in [
            (1, 1),
            (640, 480),
            (1024, 768),
            (1280, 800),
            (1920, 1080),
            (4095, 4095),
        ] {
            let e = generate(w, h).unwrap();
            assert_eq!(e[..8], HEADER);
            assert_eq!(
                e.iter().fold(0u8, |s, b| s.wrapping_add(*b)),
                0,
                "checksum {w}x{h}"
            );
            assert_eq!((e[18], e[19]), (1, 4));
            assert_eq!(e[126], 0, "no extensions");
            // Manufacturer letters decode to RAY.
            let m = u16::from_be_bytes([e[8], e[9]]);
            let letter = |s: u16| (b'A' - 1 + ((m >> s) & 0x1f) as u8) as char;
            assert_eq!([letter(10), letter(5), letter(0)], ['R', 'A', 'Y']);
            // The first descriptor is a timing (non-zero clock) for the mode.
            let d = &e[54..72];
            assert_ne!(u16::from_le_bytes([d[0], d[1]]), 0);
            assert_eq!(dtd_active(d), (w, h));
            // The others are display descriptors (clock 0), the first the name.
            for at in [72, 90, 108] {
                assert_eq!(e[at..at + 3], [0, 0, 0]);
            }
            assert_eq!(e[75], TAG_NAME);
            assert_eq!(&e[77..91 - 1], b"RayOS virtual\0"[..13].as_ref());
        }
    }

    #[test]
    fn common_modes_refresh_at_sixty_hertz() {
        for (w, h) in [(640, 480), (1280, 800), (1920, 1080)] {
            let e = generate(w, h).unwrap();
            let mhz = dtd_refresh_mhz(&e[54..72]);
            assert!((59_500..=60_500).contains(&mhz), "{w}x{h}: {mhz} mHz");
        }
    }

    #[test]
    fn impossible_modes_have_no_edid() {
        assert!(generate(0, 600).is_none());
        assert!(generate(800, 0).is_none());
        assert!(generate(4096, 600).is_none());
        assert!(generate(800, u32::MAX).is_none());
    }
}
