//! Overlay text (the status bar): strings rendered with the 8×8 bitmap font of the
//! `font8x8` crate into an owned ARGB8888 image that a [`Layer`](crate::Layer) shows.

use alloc::vec::Vec;

use crate::format::{PixelFormat, BYTES_PER_PIXEL};
use crate::surface::{LayerError, Surface, MAX_DIM};

/// Glyph cell size in font pixels.
pub const GLYPH: u32 = 8;
/// Drawn for characters outside the font's ASCII range.
const REPLACEMENT: char = '?';

/// An owned ARGB8888 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Canvas {
    /// A `width × height` canvas filled with ARGB `color` (sizes clamped to 1..=MAX_DIM).
    pub fn new(width: u32, height: u32, color: u32) -> Self {
        let (width, height) = (width.clamp(1, MAX_DIM), height.clamp(1, MAX_DIM));
        let px = color.to_le_bytes();
        let data = px.repeat(width as usize * height as usize);
        Canvas {
            width,
            height,
            data,
        }
    }

    pub fn surface(&self) -> Result<Surface<'_>, LayerError> {
        Surface::new(
            &self.data,
            self.width,
            self.height,
            self.width as usize * BYTES_PER_PIXEL,
            PixelFormat::Argb8888,
        )
    }

    fn set(&mut self, x: u32, y: u32, color: u32) {
        if x < self.width && y < self.height {
            let at = (y as usize * self.width as usize + x as usize) * BYTES_PER_PIXEL;
            self.data[at..at + BYTES_PER_PIXEL].copy_from_slice(&color.to_le_bytes());
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel a
    /// `scale × scale` block of `fg`; text past the right edge is cut.
    pub fn draw_text(&mut self, x: u32, y: u32, text: &str, scale: u32, fg: u32) {
        let scale = scale.max(1);
        let cell = GLYPH * scale;
        for (i, ch) in text.chars().enumerate() {
            let Some(left) = u32::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(cell))
                .and_then(|o| o.checked_add(x))
            else {
                return;
            };
            if left >= self.width {
                return;
            }
            let code = if ch.is_ascii() { ch } else { REPLACEMENT } as usize;
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    // Bit 0 is the leftmost pixel of a row.
                    if bits >> col & 1 == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            self.set(left + col * scale + dx, y + row as u32 * scale + dy, fg);
                        }
                    }
                }
            }
        }
    }
}

/// A status bar: `text` in `fg` on `bg`, one glyph row high with a margin of one
/// font pixel, `width` wide.
pub fn status_bar(width: u32, text: &str, scale: u32, fg: u32, bg: u32) -> Canvas {
    let scale = scale.clamp(1, MAX_DIM / (GLYPH + 2));
    let mut c = Canvas::new(width, (GLYPH + 2) * scale, bg);
    c.draw_text(scale, scale, text, scale, fg);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `text` at scale 1 on a 0 background in colour 1 and returns it as rows
    /// of `#` and `.`.
    fn picture(text: &str, width: u32) -> Vec<alloc::string::String> {
        let mut c = Canvas::new(width, GLYPH, 0);
        c.draw_text(0, 0, text, 1, 1);
        (0..GLYPH)
            .map(|y| {
                (0..width)
                    .map(|x| {
                        let at = ((y * width + x) * 4) as usize;
                        if c.data[at] == 1 {
                            '#'
                        } else {
                            '.'
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn letters_come_out_of_the_font() {
        // Drawn by hand from the glyphs' published shapes (font8x8's `H` and `-`).
        let want = [
            "##..##..........",
            "##..##..........",
            "##..##..........",
            "######..######..",
            "##..##..........",
            "##..##..........",
            "##..##..........",
            "................",
        ];
        assert_eq!(picture("H-", 16), want);
        // Cut at the right edge, no panic.
        assert_eq!(picture("H-", 3)[0], "##.");
    }

    #[test]
    fn status_bar_is_an_argb_surface() {
        let bar = status_bar(64, "héllo", 2, 0xFFFF_FFFF, 0x8000_0000);
        assert_eq!((bar.width, bar.height), (64, 20));
        let s = bar.surface().unwrap();
        assert_eq!(s.format(), PixelFormat::Argb8888);
        assert_eq!(s.pixel(0, 0), 0x8000_0000);
    }
}
