//! Borrowed pixel buffers: a [`Surface`] to read from (a guest scanout, the cursor, an
//! overlay) and the [`Frame`] to write (the physical framebuffer). Both are validated
//! once when made, so the compositing loops index them without further checks failing.

use crate::format::{PixelFormat, BYTES_PER_PIXEL};
use crate::geom::Rect;

/// The largest width or height of a surface or frame, in pixels. Larger buffers are
/// refused (this bounds the fixed-point ranges of the compositing loops).
pub const MAX_DIM: u32 = 16384;

/// Why a buffer, or a layer built on it, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerError {
    /// Width or height is zero, or the crop is empty.
    Empty,
    /// Width or height above [`MAX_DIM`], or a placement beyond the coordinate range.
    TooLarge,
    /// The stride is shorter than a row.
    BadStride,
    /// The slice is shorter than `stride × (height − 1) + row`.
    BufferTooSmall,
    /// The crop rectangle is not inside the surface.
    CropOutside,
    /// The transform is singular, or maps the surface to nothing finite.
    Degenerate,
    /// The layer lies wholly outside the output.
    Offscreen,
}

/// Checks a buffer's geometry; returns the bytes of one row.
fn check_geometry(len: usize, width: u32, height: u32, stride: usize) -> Result<usize, LayerError> {
    if width == 0 || height == 0 {
        return Err(LayerError::Empty);
    }
    if width > MAX_DIM || height > MAX_DIM {
        return Err(LayerError::TooLarge);
    }
    let row = width as usize * BYTES_PER_PIXEL;
    if stride < row {
        return Err(LayerError::BadStride);
    }
    let needed = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .ok_or(LayerError::BufferTooSmall)?;
    if len < needed {
        return Err(LayerError::BufferTooSmall);
    }
    Ok(row)
}

/// A read-only image: `height` rows of `width` pixels, `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct Surface<'a> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
}

impl<'a> Surface<'a> {
    pub fn new(
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, LayerError> {
        check_geometry(data.len(), width, height, stride)?;
        Ok(Surface {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn rect(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    /// All of the surface's bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes from one row to the next.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// Bytes of pixels `x0..x1` of row `y` (callers keep them inside the surface).
    #[inline(always)]
    pub(crate) fn span(&self, y: u32, x0: u32, x1: u32) -> &'a [u8] {
        let start = y as usize * self.stride + x0 as usize * BYTES_PER_PIXEL;
        &self.data[start..start + (x1 - x0) as usize * BYTES_PER_PIXEL]
    }

    /// Pixel `(x, y)` as ARGB (callers keep it inside the surface).
    #[cfg(test)]
    pub(crate) fn pixel(&self, x: u32, y: u32) -> u32 {
        let at = y as usize * self.stride + x as usize * BYTES_PER_PIXEL;
        let b = &self.data[at..at + BYTES_PER_PIXEL];
        self.format.load([b[0], b[1], b[2], b[3]])
    }
}

/// The output framebuffer.
#[derive(Debug)]
pub struct Frame<'a> {
    data: &'a mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
}

impl<'a> Frame<'a> {
    pub fn new(
        data: &'a mut [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, LayerError> {
        check_geometry(data.len(), width, height, stride)?;
        Ok(Frame {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }

    pub fn rect(&self) -> Rect {
        Rect::new(0, 0, self.width, self.height)
    }

    /// Pixel `(x, y)` as ARGB, or `None` outside the frame.
    pub fn get(&self, x: u32, y: u32) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = y as usize * self.stride + x as usize * BYTES_PER_PIXEL;
        let b = &self.data[at..at + BYTES_PER_PIXEL];
        Some(self.format.load([b[0], b[1], b[2], b[3]]))
    }

    /// Mutable bytes of pixels `x0..x1` of row `y` (callers keep them inside).
    #[inline(always)]
    pub(crate) fn span_mut(&mut self, y: u32, x0: u32, x1: u32) -> &mut [u8] {
        let start = y as usize * self.stride + x0 as usize * BYTES_PER_PIXEL;
        &mut self.data[start..start + (x1 - x0) as usize * BYTES_PER_PIXEL]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_validated() {
        let buf = [0u8; 64];
        let f = PixelFormat::Xrgb8888;
        assert!(Surface::new(&buf, 4, 4, 16, f).is_ok());
        assert_eq!(
            Surface::new(&buf, 0, 4, 16, f).err(),
            Some(LayerError::Empty)
        );
        assert_eq!(
            Surface::new(&buf, 4, 0, 16, f).err(),
            Some(LayerError::Empty)
        );
        assert_eq!(
            Surface::new(&buf, 4, 4, 12, f).err(),
            Some(LayerError::BadStride)
        );
        assert_eq!(
            Surface::new(&buf, 4, 5, 16, f).err(),
            Some(LayerError::BufferTooSmall)
        );
        // The last row needs only its pixels, not a whole stride.
        assert!(Surface::new(&buf, 2, 4, 18, f).is_ok());
        assert_eq!(
            Surface::new(&buf, MAX_DIM + 1, 1, usize::MAX, f).err(),
            Some(LayerError::TooLarge)
        );
        assert_eq!(
            Surface::new(&buf, 4, 3, usize::MAX, f).err(),
            Some(LayerError::BufferTooSmall)
        );
    }
}
