//! Pixel formats of surfaces and of the output frame, named by their DRM fourcc
//! (`XR24`, `AR24`, `BX24`): each pixel is a little-endian 32-bit word. Inside the
//! compositor a pixel is always an ARGB word `0xAARRGGBB` with straight (not
//! premultiplied) alpha.

/// The alpha byte of an opaque ARGB word.
pub const OPAQUE: u32 = 0xFF00_0000;
/// Bytes per pixel of every supported format.
pub const BYTES_PER_PIXEL: usize = 4;

/// A 32-bit pixel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// DRM `XRGB8888`: word bits [31:24] ignored, R, G, B; bytes B, G, R, X.
    Xrgb8888,
    /// DRM `ARGB8888`: word A, R, G, B; bytes B, G, R, A. Straight alpha.
    Argb8888,
    /// DRM `BGRX8888`: word B, G, R, bits [7:0] ignored; bytes X, R, G, B.
    Bgrx8888,
}

impl PixelFormat {
    /// Whether pixels carry alpha (only [`PixelFormat::Argb8888`]).
    pub const fn has_alpha(self) -> bool {
        matches!(self, PixelFormat::Argb8888)
    }

    /// One pixel's bytes as an ARGB word; formats without alpha read as opaque.
    #[inline(always)]
    pub fn load(self, bytes: [u8; 4]) -> u32 {
        let word = u32::from_le_bytes(bytes);
        match self {
            PixelFormat::Xrgb8888 => word | OPAQUE,
            PixelFormat::Argb8888 => word,
            PixelFormat::Bgrx8888 => word.swap_bytes() | OPAQUE,
        }
    }

    /// An ARGB word as this format's bytes. The output frame is opaque: the X (or A)
    /// byte is always written as 0xFF.
    #[inline(always)]
    pub fn store(self, argb: u32) -> [u8; 4] {
        let word = match self {
            PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => argb | OPAQUE,
            PixelFormat::Bgrx8888 => (argb | OPAQUE).swap_bytes(),
        };
        word.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_orders_match_the_drm_fourcc_definitions() {
        // Pure red, green 0x22, blue 0x33 in each layout, written out by hand.
        assert_eq!(
            PixelFormat::Xrgb8888.load([0x33, 0x22, 0x11, 0x00]),
            0xFF11_2233
        );
        assert_eq!(
            PixelFormat::Argb8888.load([0x33, 0x22, 0x11, 0x80]),
            0x8011_2233
        );
        assert_eq!(
            PixelFormat::Bgrx8888.load([0x00, 0x11, 0x22, 0x33]),
            0xFF11_2233
        );
        assert_eq!(
            PixelFormat::Xrgb8888.store(0x0011_2233),
            [0x33, 0x22, 0x11, 0xFF]
        );
        assert_eq!(
            PixelFormat::Argb8888.store(0x8011_2233),
            [0x33, 0x22, 0x11, 0xFF]
        );
        assert_eq!(
            PixelFormat::Bgrx8888.store(0x0011_2233),
            [0xFF, 0x11, 0x22, 0x33]
        );
    }
}
