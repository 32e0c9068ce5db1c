//! Presentation of a virtio-gpu's scanout on the physical display: the guest's
//! scanout as a panel (unscaled, at a position) over a background, with its cursor,
//! composed by `compositor` — the whole output when the source changed (a new
//! scanout resource, a mode, the cursor), otherwise only where the guest flushed.
//! Pure: the hypervisor's render loop hands it the device and the output frame.

use alloc::vec;
use alloc::vec::Vec;

use compositor::{compose, Frame, Layer, PixelFormat, Rect, Scene, Surface};

use crate::defs::{cursor, format};
use crate::gpu::Gpu;

/// The guest's virtual monitor mode unless the VM says otherwise.
pub const DEFAULT_MODE: (u32, u32) = (640, 480);
/// Where the guest's panel goes on the physical display unless told otherwise.
pub const DEFAULT_PANEL: (i32, i32) = (96, 64);
/// The colour around the panel (XRGB).
pub const BACKGROUND: u32 = 0x0020_3040;

/// The compositor's layout for a virtio-gpu format; `None` for the formats it cannot
/// sample (those with alpha first or RGBA order).
pub fn pixel_format(virtio_format: u32) -> Option<PixelFormat> {
    match virtio_format {
        // Bytes B, G, R, X / A.
        format::B8G8R8X8_UNORM => Some(PixelFormat::Xrgb8888),
        format::B8G8R8A8_UNORM => Some(PixelFormat::Argb8888),
        // Bytes X, R, G, B.
        format::X8R8G8B8_UNORM => Some(PixelFormat::Bgrx8888),
        _ => None,
    }
}

/// One guest scanout presented as a panel.
#[derive(Debug, Clone)]
pub struct Presenter {
    /// Top-left corner of the panel on the output.
    pub x: i32,
    pub y: i32,
    /// Scanout of the device shown.
    pub scanout: usize,
    pub background: u32,
    /// The device's generation at the last presentation (`None`: never presented).
    shown: Option<u64>,
    /// Set when an unsupported format was logged (once per source).
    warned: bool,
}

impl Presenter {
    /// Scanout `scanout` at (`x`, `y`) over [`BACKGROUND`].
    pub fn new(scanout: usize, x: i32, y: i32) -> Self {
        Self {
            x,
            y,
            scanout,
            background: BACKGROUND,
            shown: None,
            warned: false,
        }
    }

    /// Composes what changed since the last call into `frame`; returns the output
    /// rectangles recomposed (empty: the frame is unchanged).
    pub fn present(&mut self, gpu: &mut Gpu, frame: &mut Frame) -> Vec<Rect> {
        let damage = gpu.take_damage(self.scanout);
        let generation = gpu.generation();
        let full = self.shown != Some(generation);
        if !full && damage.is_empty() {
            return Vec::new();
        }
        if full {
            self.warned = false;
        }
        self.shown = Some(generation);
        let mut scene = Scene {
            background: self.background,
            layers: Vec::new(),
        };
        if let Some(v) = gpu.scanout(self.scanout) {
            let surface = pixel_format(v.format)
                .and_then(|f| Surface::new(v.pixels, v.width, v.height, v.stride as usize, f).ok());
            match surface {
                Some(s) => {
                    let mut layer = Layer::new(s, self.x, self.y);
                    layer.crop = Some(Rect::new(
                        v.rect.x as i32,
                        v.rect.y as i32,
                        v.rect.width,
                        v.rect.height,
                    ));
                    scene.layers.push(layer);
                }
                None if !self.warned => {
                    self.warned = true;
                    log::warn!("vgpu: scanout format {} cannot be presented", v.format);
                }
                None => {}
            }
        }
        if let Some(c) = gpu.cursor().filter(|c| c.scanout as usize == self.scanout) {
            let size = cursor::SIZE;
            let s = pixel_format(c.format).and_then(|f| {
                Surface::new(
                    c.image,
                    size,
                    size,
                    (size * format::BYTES_PER_PIXEL) as usize,
                    f,
                )
                .ok()
            });
            if let Some(s) = s {
                let mut layer =
                    Layer::new(s, self.x.saturating_add(c.x), self.y.saturating_add(c.y));
                layer.z = 1;
                scene.layers.push(layer);
            }
        }
        let output = frame.rect();
        let rects: Vec<Rect> = if full {
            vec![output]
        } else {
            damage
                .iter()
                .filter_map(|d| {
                    Rect::new(
                        self.x.saturating_add(d.x as i32),
                        self.y.saturating_add(d.y as i32),
                        d.width,
                        d.height,
                    )
                    .intersect(&output)
                })
                .collect()
        };
        compose(&scene, frame, &rects);
        rects
    }
}
