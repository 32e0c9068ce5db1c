//! Host resources: a 2D image the guest created, its pixels held by the host, and the
//! guest pages it attached as backing, from which TRANSFER_TO_HOST_2D copies.

use alloc::sync::Arc;
use alloc::vec::Vec;

use vdev::{GuestMemory, MemError};

use crate::defs::format::BYTES_PER_PIXEL;

/// A rectangle in a resource's or a scanout's pixel coordinates
/// (`struct virtio_gpu_rect`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// A rectangle at (`x`, `y`) of `width`×`height`.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// Whether it covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether it lies inside a `width`×`height` area (without any overflow).
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.x.checked_add(self.width).is_some_and(|r| r <= width)
            && self.y.checked_add(self.height).is_some_and(|b| b <= height)
    }

    /// The overlap of two rectangles (empty if none). Both must be valid (their
    /// right and bottom edges fit in `u32`).
    pub fn intersect(&self, other: &Rect) -> Rect {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.width).min(other.x + other.width);
        let y1 = (self.y + self.height).min(other.y + other.height);
        if x1 <= x0 || y1 <= y0 {
            return Rect::default();
        }
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// The smallest rectangle holding both (valid rectangles only).
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x0 = self.x.min(other.x);
        let y0 = self.y.min(other.y);
        let x1 = (self.x + self.width).max(other.x + other.width);
        let y1 = (self.y + self.height).max(other.y + other.height);
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// Whether `other` lies entirely inside this one.
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x + other.width <= self.x + self.width
            && other.y + other.height <= self.y + self.height
    }
}

/// One piece of a resource's backing: `len` bytes of guest RAM at `addr`
/// (`struct virtio_gpu_mem_entry`), which starts at byte `start` of the backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingEntry {
    pub addr: u64,
    pub len: u32,
    pub start: u64,
}

/// A guest's 2D resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub format: u32,
    pub width: u32,
    pub height: u32,
    /// The host copy: `height` rows of `width * 4` bytes. The render loop composes
    /// from a clone of the `Arc` after letting go of the device, so a transfer into
    /// a resource it is composing first copies it ([`Resource::unshare`]).
    pub pixels: Arc<Vec<u8>>,
    /// The attached guest pages, in backing order (empty: none attached).
    pub backing: Vec<BackingEntry>,
}

impl Resource {
    /// Bytes of one row of the host copy (and of the backing, which has the same
    /// layout).
    pub fn stride(&self) -> u64 {
        u64::from(self.width) * u64::from(BYTES_PER_PIXEL)
    }

    /// Bytes the host copy takes.
    pub fn bytes(&self) -> u64 {
        self.stride() * u64::from(self.height)
    }

    /// Makes the host copy this resource's own (copying it if a frame being
    /// composed shares it); `false` if the copy does not fit in memory.
    pub fn unshare(&mut self) -> bool {
        if Arc::get_mut(&mut self.pixels).is_some() {
            return true;
        }
        let mut own = Vec::new();
        if own.try_reserve_exact(self.pixels.len()).is_err() {
            return false;
        }
        own.extend_from_slice(&self.pixels);
        self.pixels = Arc::new(own);
        true
    }

    /// Total length of the attached backing.
    pub fn backing_len(&self) -> u64 {
        self.backing
            .last()
            .map_or(0, |e| e.start + u64::from(e.len))
    }

    /// Copies `dst.len()` bytes of the backing starting at byte `off` into `dst`.
    /// The caller checked that the range lies inside the backing.
    fn read_backing(
        backing: &[BackingEntry],
        mem: &dyn GuestMemory,
        mut off: u64,
        dst: &mut [u8],
    ) -> Result<(), MemError> {
        // The entry holding `off`: the last one starting at or before it.
        let mut i = backing
            .partition_point(|e| e.start <= off)
            .saturating_sub(1);
        let mut done = 0;
        while done < dst.len() {
            let Some(e) = backing.get(i) else {
                return Err(MemError::Overflow);
            };
            let within = off - e.start;
            let left = u64::from(e.len) - within;
            let n = core::cmp::min(left, (dst.len() - done) as u64) as usize;
            mem.read(e.addr + within, &mut dst[done..done + n])?;
            done += n;
            off += n as u64;
            i += 1;
        }
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D: copies `rect` (inside the resource) from the backing,
    /// whose rows have the resource's stride and whose byte `offset` holds the
    /// rectangle's first pixel, into the host copy. Returns `false` if the backing
    /// does not hold the whole source (nothing is copied then). Call
    /// [`Resource::unshare`] first, or a shared host copy is copied here infallibly.
    pub fn transfer_from_backing(
        &mut self,
        mem: &dyn GuestMemory,
        rect: Rect,
        offset: u64,
    ) -> Result<bool, MemError> {
        if rect.is_empty() {
            return Ok(true);
        }
        let stride = self.stride();
        let row_bytes = u64::from(rect.width) * u64::from(BYTES_PER_PIXEL);
        let last_row = stride.checked_mul(u64::from(rect.height - 1));
        let end = last_row
            .and_then(|l| l.checked_add(offset))
            .and_then(|l| l.checked_add(row_bytes));
        if end.is_none_or(|end| end > self.backing_len()) {
            return Ok(false);
        }
        let (backing, pixels) = (&self.backing, Arc::make_mut(&mut self.pixels));
        for row in 0..u64::from(rect.height) {
            let src = offset + row * stride;
            let dst =
                (u64::from(rect.y) + row) * stride + u64::from(rect.x) * u64::from(BYTES_PER_PIXEL);
            let (dst, len) = (dst as usize, row_bytes as usize);
            Self::read_backing(backing, mem, src, &mut pixels[dst..dst + len])?;
        }
        Ok(true)
    }
}
