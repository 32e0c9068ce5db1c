//! A plain linear framebuffer in guest RAM (a device-tree `simple-framebuffer`, the
//! firmware's ramfb/GOP): the guest writes pixels with ordinary stores and never
//! says where. The hypervisor finds out through stage-2 write protection: the
//! framebuffer's pages are read-only until written, a write fault marks its page in
//! a `stage2::dirty::DirtyBitmap`, and the render loop takes the marked pages
//! (query and clear, protect again). This module is the pure half:
//!
//! - [`FbGeometry`]: where the framebuffer is and how it is laid out, validated
//!   against the VM's RAM (the guest may choose it: ramfb), and which RAM pages it
//!   spans.
//! - [`FbGeometry::rows_of`]: dirty page runs → the rows they touch (a row is
//!   damaged exactly when one of its visible bytes lies in a dirty page; padding
//!   between rows does not count).
//! - [`LinearFb`]: a host copy of the pixels that the render loop refreshes row
//!   by row from guest RAM ([`LinearFb::absorb`]) and presents like a virtio-gpu
//!   scanout ([`crate::present::ScanoutSource`]), its damage the refreshed rows.
//!
//! The copy exists so the compositor never reads memory a vCPU is writing at that
//! moment, and costs only the dirty rows per frame.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::defs::format;
use crate::gpu::{OwnedCursor, ScanoutView, SharedScanout};
use crate::resource::Rect;

/// The unit of dirty tracking (a stage-2 level-3 page).
pub const PAGE: u64 = 4096;
/// Largest width or height accepted.
pub const MAX_SIDE: u32 = 8192;
/// Largest framebuffer accepted (`stride × height`): 8 MiB, a 1920×1080 XRGB
/// frame (what one virtio-gpu resource may take in el2). The host copy is this
/// big and comes from the hypervisor's heap, so a guest must not choose more.
pub const MAX_BYTES: u64 = 8 << 20;

/// Where a linear framebuffer is and how its pixels are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FbGeometry {
    /// Guest-physical address of pixel (0, 0).
    pub base: u64,
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// A `defs::format` value ([`crate::present::pixel_format`] must know it).
    pub format: u32,
}

/// Why a framebuffer geometry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// Width or height 0 or above [`MAX_SIDE`].
    BadSize { width: u32, height: u32 },
    /// A row's pixels do not fit in `stride` bytes.
    StrideTooSmall { stride: u32, row: u64 },
    /// More than [`MAX_BYTES`].
    TooLarge(u64),
    /// A format the compositor cannot sample.
    Format(u32),
    /// Not entirely inside guest RAM.
    OutsideRam { base: u64, bytes: u64 },
    /// The host copy does not fit in memory.
    NoMemory(u64),
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadSize { width, height } => {
                write!(f, "size {width}x{height} not within 1..={MAX_SIDE}")
            }
            Self::StrideTooSmall { stride, row } => {
                write!(f, "stride {stride} below the row's {row} bytes")
            }
            Self::TooLarge(b) => write!(f, "{b} bytes, more than {MAX_BYTES}"),
            Self::Format(x) => write!(f, "unsupported pixel format {x:#x}"),
            Self::OutsideRam { base, bytes } => {
                write!(f, "{base:#x}+{bytes:#x} not inside guest RAM")
            }
            Self::NoMemory(b) => write!(f, "no memory for a {b}-byte copy"),
        }
    }
}

impl FbGeometry {
    /// Bytes of one row's pixels.
    pub fn row_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(format::BYTES_PER_PIXEL)
    }

    /// Bytes the framebuffer spans (`stride × height`).
    pub fn bytes(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height)
    }

    /// Checks every field, and that the framebuffer lies inside the RAM at
    /// `ram_base` of `ram_size` bytes (`ram_base` page-aligned).
    pub fn validate(&self, ram_base: u64, ram_size: u64) -> Result<(), GeometryError> {
        let (width, height) = (self.width, self.height);
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(GeometryError::BadSize { width, height });
        }
        if u64::from(self.stride) < self.row_bytes() {
            return Err(GeometryError::StrideTooSmall {
                stride: self.stride,
                row: self.row_bytes(),
            });
        }
        let bytes = self.bytes();
        if bytes > MAX_BYTES {
            return Err(GeometryError::TooLarge(bytes));
        }
        if crate::present::pixel_format(self.format).is_none() {
            return Err(GeometryError::Format(self.format));
        }
        let inside = self.base >= ram_base
            && self.base - ram_base <= ram_size
            && bytes <= ram_size - (self.base - ram_base);
        if !inside {
            return Err(GeometryError::OutsideRam {
                base: self.base,
                bytes,
            });
        }
        Ok(())
    }

    /// The RAM pages (numbered from `ram_base`) the framebuffer spans. Only for a
    /// validated geometry.
    pub fn pages(&self, ram_base: u64) -> Range<usize> {
        let off = self.base - ram_base;
        let first = off / PAGE;
        let end = (off + self.bytes()).div_ceil(PAGE);
        first as usize..end as usize
    }

    /// Bytes between the start of the first page and pixel (0, 0).
    fn lead(&self) -> u64 {
        self.base % PAGE
    }

    /// The rows touched by `runs`, dirty page ranges counted from the
    /// framebuffer's first page (as [`FbGeometry::pages`] gives it), as sorted,
    /// disjoint, non-adjacent row ranges. A row counts when one of its
    /// `row_bytes` visible bytes lies in a dirty page; runs beyond the
    /// framebuffer are ignored.
    pub fn rows_of(&self, runs: &[Range<usize>]) -> Vec<Range<u32>> {
        let (lead, stride, row) = (self.lead(), u64::from(self.stride), self.row_bytes());
        let mut rows: Vec<Range<u32>> = Vec::new();
        if stride == 0 {
            return rows;
        }
        for run in runs {
            // The run's bytes, from pixel (0, 0).
            let start = (run.start as u64).saturating_mul(PAGE);
            let end = (run.end as u64).saturating_mul(PAGE);
            if end <= lead || end <= start {
                continue;
            }
            let (s, e) = (start.saturating_sub(lead), end - lead);
            let mut r0 = s / stride;
            if s % stride >= row {
                // Starts in the padding after row r0.
                r0 += 1;
            }
            let r1 = ((e - 1) / stride + 1).min(u64::from(self.height));
            if r0 >= r1 {
                continue;
            }
            add_rows(&mut rows, r0 as u32..r1 as u32);
        }
        rows
    }

    /// The damage rectangles of `rows` (full width).
    pub fn rects_of(&self, rows: &[Range<u32>]) -> Vec<Rect> {
        rows.iter()
            .map(|r| Rect::new(0, r.start, self.width, r.end - r.start))
            .collect()
    }
}

/// Adds `r` to the sorted, disjoint, non-adjacent ranges `rows`, merging.
fn add_rows(rows: &mut Vec<Range<u32>>, r: Range<u32>) {
    let at = rows.partition_point(|x| x.end < r.start);
    let mut merged = r;
    let mut end = at;
    while end < rows.len() && rows[end].start <= merged.end {
        merged.start = merged.start.min(rows[end].start);
        merged.end = merged.end.max(rows[end].end);
        end += 1;
    }
    rows.splice(at..end, [merged]);
}

/// Generations of linear framebuffers: each new one differs from every other and
/// (top bit set) from a virtio-gpu's, so a presenter switching sources recomposes all.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1 << 63);

/// A linear framebuffer's host copy and the rows changed since the render loop
/// last took them.
#[derive(Debug)]
pub struct LinearFb {
    geometry: FbGeometry,
    /// `stride × height` bytes, as in guest RAM.
    pixels: Arc<Vec<u8>>,
    /// Rows refreshed and not yet presented.
    pending: Vec<Range<u32>>,
    /// Changes when the geometry does (a new source for the presenter).
    generation: u64,
    /// Rows refreshed and frames with damage since the start (for `display status`).
    pub rows_refreshed: u64,
    /// The rows of the last refresh.
    pub last_rows: Option<Range<u32>>,
}

impl LinearFb {
    /// A framebuffer of `geometry` (validated against the RAM at `ram_base` of
    /// `ram_size` bytes), all of it pending: the first refresh must read it all
    /// (mark all its pages dirty).
    pub fn new(geometry: FbGeometry, ram_base: u64, ram_size: u64) -> Result<Self, GeometryError> {
        geometry.validate(ram_base, ram_size)?;
        let bytes = geometry.bytes();
        let mut pixels = Vec::new();
        pixels
            .try_reserve_exact(bytes as usize)
            .map_err(|_| GeometryError::NoMemory(bytes))?;
        pixels.resize(bytes as usize, 0);
        Ok(Self {
            geometry,
            pixels: Arc::new(pixels),
            pending: Vec::new(),
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            rows_refreshed: 0,
            last_rows: None,
        })
    }

    pub fn geometry(&self) -> FbGeometry {
        self.geometry
    }

    /// Refreshes the rows that the dirty page `runs` (from the framebuffer's first
    /// page) touch: `read(gpa, buf)` fills `buf` from guest RAM (`false`: could not,
    /// the rows keep their old pixels). Returns the rows refreshed.
    pub fn absorb(
        &mut self,
        runs: &[Range<usize>],
        mut read: impl FnMut(u64, &mut [u8]) -> bool,
    ) -> Vec<Range<u32>> {
        let rows = self.geometry.rows_of(runs);
        if rows.is_empty() {
            return rows;
        }
        let g = self.geometry;
        let stride = u64::from(g.stride);
        // The composition of the last frame has let go of its clone by now; if not,
        // this copies once.
        let pixels = Arc::make_mut(&mut self.pixels);
        for r in &rows {
            let from = u64::from(r.start) * stride;
            let to = u64::from(r.end - 1) * stride + g.row_bytes();
            let Some(buf) = pixels.get_mut(from as usize..to as usize) else {
                continue;
            };
            if read(g.base + from, buf) {
                add_rows(&mut self.pending, r.clone());
                self.rows_refreshed += u64::from(r.end - r.start);
            }
        }
        self.last_rows = rows.first().map(|f| f.start..rows[rows.len() - 1].end);
        rows
    }

    /// What the render loop shows: the whole framebuffer.
    pub fn view(&self) -> ScanoutView<'_> {
        let g = self.geometry;
        ScanoutView {
            pixels: &self.pixels,
            stride: g.stride,
            width: g.width,
            height: g.height,
            format: g.format,
            rect: Rect::new(0, 0, g.width, g.height),
        }
    }
}

impl crate::present::ScanoutSource for LinearFb {
    fn take_damage(&mut self, _scanout: usize) -> Vec<Rect> {
        let rows = core::mem::take(&mut self.pending);
        self.geometry.rects_of(&rows)
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn scanout(&self, scanout: usize) -> Option<ScanoutView<'_>> {
        (scanout == 0).then(|| self.view())
    }
    fn scanout_shared(&self, scanout: usize) -> Option<SharedScanout> {
        let g = self.geometry;
        (scanout == 0).then(|| SharedScanout {
            pixels: Arc::clone(&self.pixels),
            stride: g.stride,
            width: g.width,
            height: g.height,
            format: g.format,
            rect: Rect::new(0, 0, g.width, g.height),
        })
    }
    fn cursor_owned(&self) -> Option<OwnedCursor> {
        None
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // row and page ranges, one each
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const RAM: u64 = 0x4000_0000;
    const RAM_SIZE: u64 = 256 << 20;

    fn geo(base: u64, width: u32, height: u32, stride: u32) -> FbGeometry {
        FbGeometry {
            base,
            width,
            height,
            stride,
            format: format::B8G8R8X8_UNORM,
        }
    }

    /// Rows with a visible byte in a dirty page, by brute force over every row.
    fn reference(g: &FbGeometry, dirty: &[bool]) -> Vec<u32> {
        let first = (g.base - RAM) / PAGE;
        (0..g.height)
            .filter(|&y| {
                let s = g.base - RAM + u64::from(y) * u64::from(g.stride);
                let e = s + g.row_bytes();
                (s / PAGE..e.div_ceil(PAGE)).any(|p| dirty[(p - first) as usize])
            })
            .collect()
    }

    fn flatten(rows: &[Range<u32>]) -> Vec<u32> {
        rows.iter().flat_map(|r| r.clone()).collect()
    }

    fn runs(dirty: &[bool]) -> Vec<Range<usize>> {
        let mut v: Vec<Range<usize>> = Vec::new();
        for (p, _) in dirty.iter().enumerate().filter(|(_, d)| **d) {
            match v.last_mut() {
                Some(r) if r.end == p => r.end += 1,
                _ => v.push(p..p + 1),
            }
        }
        v
    }

    proptest! {
        #[test]
        fn damage_covers_exactly_the_rows_of_dirty_pages(
            lead in 0u64..PAGE,
            width in 1u32..700,
            pad in prop_oneof![Just(0u32), 0u32..5000],
            height in 1u32..300,
            seed in proptest::collection::vec(any::<bool>(), 1..2000),
        ) {
            let stride = width * 4 + pad;
            let g = geo(RAM + 3 * PAGE + lead, width, height, stride);
            prop_assert!(g.validate(RAM, RAM_SIZE).is_ok());
            let n = g.pages(RAM).len();
            let dirty: Vec<bool> = (0..n).map(|p| seed[p % seed.len()] && seed[(p * 7 + 3) % seed.len()]).collect();
            let rows = g.rows_of(&runs(&dirty));
            prop_assert_eq!(flatten(&rows), reference(&g, &dirty));
            // Sorted, disjoint, not adjacent.
            for w in rows.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
        }

        #[test]
        fn absorbed_rows_equal_guest_memory_and_are_damage(
            width in 1u32..200,
            height in 1u32..100,
            writes in proptest::collection::vec((0u32..100, any::<u8>()), 0..20),
        ) {
            let g = geo(RAM + 5 * PAGE + 40, width, height, width * 4 + 12);
            let mut guest = vec![0u8; g.bytes() as usize];
            let mut fb = LinearFb::new(g, RAM, RAM_SIZE).unwrap();
            let lead = (g.base % PAGE) as usize;
            let mut dirty = vec![false; g.pages(RAM).len()];
            for (y, v) in &writes {
                let y = y % height;
                let at = (y * g.stride) as usize;
                guest[at..at + g.row_bytes() as usize].fill(*v);
                dirty[(at + lead) / PAGE as usize] = true;
            }
            let read = |gpa: u64, buf: &mut [u8]| {
                let o = (gpa - g.base) as usize;
                buf.copy_from_slice(&guest[o..o + buf.len()]);
                true
            };
            let rows = fb.absorb(&runs(&dirty), read);
            let written: Vec<u32> = writes.iter().map(|(y, _)| y % height).collect();
            for y in &written {
                prop_assert!(flatten(&rows).contains(y));
            }
            for y in 0..height {
                let at = (y * g.stride) as usize;
                let len = g.row_bytes() as usize;
                prop_assert_eq!(&fb.view().pixels[at..at + len], &guest[at..at + len]);
            }
            use crate::present::ScanoutSource;
            let damage = fb.take_damage(0);
            prop_assert_eq!(damage, g.rects_of(&rows));
            prop_assert!(fb.take_damage(0).is_empty());
        }
    }

    #[test]
    fn a_write_in_one_page_damages_only_its_rows() {
        // 640x480 XRGB, page-aligned: a page holds 1.6 rows.
        let g = geo(RAM, 640, 480, 2560);
        assert_eq!(g.rows_of(&[0..1]), [0..2]);
        assert_eq!(g.rows_of(&[1..2]), [1..4]);
        // Pages 62..73 (the block of rows 100..116 at x=192): rows 99..117.
        assert_eq!(g.rows_of(&[62..73]), [99..117]);
        // Two runs whose rows touch merge; the last page ends at the last row.
        assert_eq!(g.rows_of(&[0..1, 1..2]), [0..4]);
        assert_eq!(g.rows_of(&[299..300]), [478..480]);
        assert!(g.rows_of(&[300..400]).is_empty(), "beyond the framebuffer");
        assert_eq!(g.pages(RAM), 0..300);
    }

    #[test]
    fn a_presenter_recomposes_only_the_refreshed_rows() {
        use compositor::{Frame, PixelFormat};
        let g = geo(RAM + 2 * PAGE, 64, 40, 256);
        let mut guest: Vec<u8> = (0..g.bytes()).map(|i| (i * 7) as u8).collect();
        let mut fb = LinearFb::new(g, RAM, RAM_SIZE).unwrap();
        let all = g.pages(RAM).len();
        let read = |guest: &Vec<u8>| {
            let guest = guest.clone();
            move |gpa: u64, buf: &mut [u8]| {
                let o = (gpa - g.base) as usize;
                buf.copy_from_slice(&guest[o..o + buf.len()]);
                true
            }
        };
        assert_eq!(fb.absorb(&[0..all], read(&guest)), [0..40]);
        let (ow, oh) = (100u32, 60u32);
        let mut out = vec![0u8; (ow * oh * 4) as usize];
        let mut p = crate::Presenter::new(0, 10, 5);
        let mut frame =
            Frame::new(&mut out, ow, oh, ow as usize * 4, PixelFormat::Xrgb8888).unwrap();
        let first = p.present(&mut fb, &mut frame, 0);
        assert_eq!(
            first,
            [compositor::Rect::new(0, 0, ow, oh)],
            "everything at first"
        );
        assert!(
            p.present(&mut fb, &mut frame, 0).is_empty(),
            "nothing changed"
        );
        // The guest writes row 20, in page 1 of the framebuffer (rows 16..32).
        guest[20 * 256..21 * 256].fill(0xee);
        let rows = fb.absorb(&[1..2], read(&guest));
        assert_eq!(rows, [16..32]);
        let damaged = p.present(&mut fb, &mut frame, 0);
        assert_eq!(damaged, [compositor::Rect::new(10, 5 + 16, 64, 16)]);
        // Equal to composing everything anew.
        let mut fresh = vec![0u8; out.len()];
        let mut q = crate::Presenter::new(0, 10, 5);
        let mut f2 =
            Frame::new(&mut fresh, ow, oh, ow as usize * 4, PixelFormat::Xrgb8888).unwrap();
        q.present(&mut fb, &mut f2, 0);
        assert_eq!(out, fresh);
        assert_eq!(out[((25 * ow + 10) * 4) as usize], 0xee);
    }

    #[test]
    fn padding_is_not_a_row() {
        // Rows of 16 bytes every 8192: page 1 holds only padding.
        let g = geo(RAM, 4, 3, 8192);
        assert!(g.rows_of(&[1..2]).is_empty());
        assert_eq!(g.rows_of(&[2..3]), [1..2]);
        assert_eq!(g.rows_of(&[0..5]), [0..3]);
    }

    #[test]
    fn hostile_geometry_is_refused() {
        let ok = geo(RAM, 640, 480, 2560);
        assert_eq!(ok.validate(RAM, RAM_SIZE), Ok(()));
        let bad = [
            (geo(RAM, 0, 480, 2560), "zero width"),
            (geo(RAM, 640, 0, 2560), "zero height"),
            (geo(RAM, MAX_SIDE + 1, 1, u32::MAX), "too wide"),
            (geo(RAM, 640, 480, 2559), "stride below the row"),
            (geo(RAM, 8192, 8192, 32768), "beyond MAX_BYTES"),
            (geo(RAM - PAGE, 16, 16, 64), "below RAM"),
            (
                geo(RAM + RAM_SIZE - 2560 * 479, 640, 480, 2560),
                "past RAM's end",
            ),
            (geo(u64::MAX - 100, 16, 16, 64), "address wraps"),
            (geo(RAM + RAM_SIZE, 1, 1, 4), "at RAM's end"),
        ];
        for (g, what) in bad {
            assert!(g.validate(RAM, RAM_SIZE).is_err(), "{what}");
            assert!(LinearFb::new(g, RAM, RAM_SIZE).is_err(), "{what}");
        }
        let mut f = ok;
        f.format = 0x1234;
        assert_eq!(
            f.validate(RAM, RAM_SIZE),
            Err(GeometryError::Format(0x1234))
        );
        // Ending exactly at RAM's end is fine.
        let last = geo(RAM + RAM_SIZE - 2560 * 480, 640, 480, 2560);
        assert_eq!(last.validate(RAM, RAM_SIZE), Ok(()));
    }

    #[test]
    fn runs_past_usize_pages_do_not_panic() {
        let g = geo(RAM + 100, 64, 64, 256);
        assert!(g.rows_of(&[usize::MAX - 1..usize::MAX]).is_empty());
        assert_eq!(g.rows_of(&[0..usize::MAX]), [0..64]);
    }
}
