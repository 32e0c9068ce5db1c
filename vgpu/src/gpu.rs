//! The virtio-gpu 2D device (virtio 1.2 §5.7) as a [`virtio::VirtioDevice`]: the
//! control queue's commands, the cursor queue, fences, the configuration space's
//! display events; and what the hypervisor's render loop reads out of it (each
//! scanout's pixels and damage, the cursor) or changes (a scanout's mode).
//!
//! Every field a guest sends is checked before it is used; a command that fails a
//! check gets the architected error response (VIRTIO_GPU_RESP_ERR_*) and a log line,
//! and changes nothing. Host memory is bounded per resource and per device
//! ([`GpuConfig`]). Commands complete synchronously, so a fenced command's fence is
//! signalled by its own response.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use vdev::GuestMemory;
use virtio::{DescChain, DeviceError, QueueContext, VirtioDevice};

use crate::defs::{self, cmd, config, cursor, features, format, hdr, layout, limits, queue};
use crate::edid;
use crate::resource::{BackingEntry, Rect, Resource};

/// Queue size of both queues.
const QUEUE_SIZE: u16 = 256;

/// What the hypervisor gives one GPU device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    /// The mode (width, height) of each scanout's virtual monitor; 1 to
    /// [`layout::MAX_SCANOUTS`] of them, each within [`edid::MAX_ACTIVE`].
    pub modes: Vec<(u32, u32)>,
    /// Most host bytes one resource may take.
    pub max_resource_bytes: u64,
    /// Most host bytes all resources together may take.
    pub max_total_bytes: u64,
}

impl GpuConfig {
    /// One scanout of `width`×`height`, the default memory bounds.
    pub fn single(width: u32, height: u32) -> Self {
        Self {
            modes: vec![(width, height)],
            max_resource_bytes: limits::DEFAULT_MAX_RESOURCE_BYTES,
            max_total_bytes: limits::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

/// A mode the virtual monitor cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeError {
    /// No such scanout.
    NoScanout,
    /// Zero or larger than an EDID can describe.
    BadSize,
}

/// One scanout: its virtual monitor and what the guest shows on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanout {
    /// The virtual monitor's mode.
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// The resource shown (0: none, the scanout is disabled).
    pub(crate) resource: u32,
    /// The part of the resource shown.
    pub(crate) rect: Rect,
    /// Changed areas (scanout coordinates) since the render loop last took them.
    pub(crate) damage: Vec<Rect>,
}

impl Scanout {
    pub(crate) fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            resource: 0,
            rect: Rect::default(),
            damage: Vec::new(),
        }
    }

    /// Adds `r` (scanout coordinates) to the damage, merging everything into one
    /// bounding box once [`limits::MAX_DAMAGE_RECTS`] are held.
    fn add_damage(&mut self, r: Rect) {
        if r.is_empty() || self.damage.iter().any(|d| d.contains(&r)) {
            return;
        }
        if self.damage.len() >= limits::MAX_DAMAGE_RECTS {
            let all = self.damage.iter().fold(r, |acc, d| acc.union(d));
            self.damage.clear();
            self.damage.push(all);
        } else {
            self.damage.push(r);
        }
    }
}

/// The cursor as the guest last set it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Cursor {
    /// The scanout it is on.
    pub(crate) scanout: u32,
    /// Position of the hot spot, in scanout coordinates (may be off-screen).
    pub(crate) x: i32,
    pub(crate) y: i32,
    pub(crate) hot_x: u32,
    pub(crate) hot_y: u32,
    /// The resource it was set from (0: hidden) and that resource's format.
    pub(crate) resource: u32,
    pub(crate) format: u32,
    /// The image, copied from the resource at UPDATE_CURSOR: 64×64 pixels, or empty
    /// when hidden.
    pub(crate) image: Vec<u8>,
}

/// What a scanout shows, for the render loop.
#[derive(Debug, Clone, Copy)]
pub struct ScanoutView<'a> {
    /// The whole resource's pixels, `stride` bytes per row.
    pub pixels: &'a [u8],
    pub stride: u32,
    /// The resource's size.
    pub width: u32,
    pub height: u32,
    /// A `defs::format` value.
    pub format: u32,
    /// The part of the resource the scanout shows.
    pub rect: Rect,
}

/// What a scanout shows, owned: the render loop takes it under the device's lock
/// and composes from it after letting go. The pixels are the resource's host copy,
/// shared (a transfer into the resource meanwhile copies it first).
#[derive(Debug, Clone)]
pub struct SharedScanout {
    /// The whole resource's pixels, `stride` bytes per row.
    pub pixels: Arc<Vec<u8>>,
    pub stride: u32,
    pub width: u32,
    pub height: u32,
    /// A `defs::format` value.
    pub format: u32,
    /// The part of the resource the scanout shows.
    pub rect: Rect,
}

/// The cursor, owned (see [`SharedScanout`]).
#[derive(Debug, Clone)]
pub struct OwnedCursor {
    pub scanout: u32,
    pub x: i32,
    pub y: i32,
    /// 64×64 pixels, 256 bytes per row.
    pub image: Vec<u8>,
    pub format: u32,
}

/// The cursor, for the render loop.
#[derive(Debug, Clone, Copy)]
pub struct CursorView<'a> {
    pub scanout: u32,
    /// Top-left corner of the image in scanout coordinates.
    pub x: i32,
    pub y: i32,
    /// 64×64 pixels, 256 bytes per row.
    pub image: &'a [u8],
    /// A `defs::format` value.
    pub format: u32,
}

/// A refused command: the error response type to send.
type CmdResult<T> = Result<T, u32>;

/// A response body after the header.
enum Body {
    None,
    /// The scanouts' modes ([`Gpu::display_info`]).
    DisplayInfo,
    Edid([u8; edid::BLOCK]),
}

/// The virtio-gpu device.
pub struct Gpu {
    pub(crate) config: GpuConfig,
    pub(crate) queue_sizes: [u16; 2],
    pub(crate) resources: BTreeMap<u32, Resource>,
    /// Host bytes all resources take.
    pub(crate) total_bytes: u64,
    pub(crate) scanouts: Vec<Scanout>,
    pub(crate) cursor: Cursor,
    /// `events_read`.
    pub(crate) events_read: u32,
    /// Incremented whenever something the render loop shows changed in a way damage
    /// does not describe (a scanout's source or mode, the cursor).
    pub(crate) generation: u64,
}

impl Gpu {
    /// A GPU with the scanouts and bounds of `config` (invalid modes are clamped to
    /// 1..=[`edid::MAX_ACTIVE`]; more than [`layout::MAX_SCANOUTS`] are dropped; none
    /// becomes one 1024×768 scanout).
    pub fn new(mut config: GpuConfig) -> Self {
        config.modes.truncate(layout::MAX_SCANOUTS);
        if config.modes.is_empty() {
            config.modes.push((1024, 768));
        }
        for m in &mut config.modes {
            m.0 = m.0.clamp(1, edid::MAX_ACTIVE);
            m.1 = m.1.clamp(1, edid::MAX_ACTIVE);
        }
        let scanouts = config
            .modes
            .iter()
            .map(|&(w, h)| Scanout::new(w, h))
            .collect();
        Self {
            config,
            queue_sizes: [QUEUE_SIZE; 2],
            resources: BTreeMap::new(),
            total_bytes: 0,
            scanouts,
            cursor: Cursor::default(),
            events_read: 0,
            generation: 0,
        }
    }

    /// Number of scanouts.
    pub fn num_scanouts(&self) -> usize {
        self.scanouts.len()
    }

    /// The virtual monitor mode of scanout `s`.
    pub fn mode(&self, s: usize) -> Option<(u32, u32)> {
        self.scanouts.get(s).map(|sc| (sc.width, sc.height))
    }

    /// Changes the mode of scanout `s`'s virtual monitor and raises the display
    /// event; the caller then signals a configuration change through the transport
    /// (`MmioTransport::signal_config_change`) so the guest re-reads the display
    /// info and EDID.
    pub fn set_mode(&mut self, s: usize, width: u32, height: u32) -> Result<(), ModeError> {
        if width == 0 || height == 0 || width > edid::MAX_ACTIVE || height > edid::MAX_ACTIVE {
            return Err(ModeError::BadSize);
        }
        let sc = self.scanouts.get_mut(s).ok_or(ModeError::NoScanout)?;
        sc.width = width;
        sc.height = height;
        self.events_read |= config::EVENT_DISPLAY;
        self.generation += 1;
        Ok(())
    }

    /// A counter that changes whenever a scanout's source or mode or the cursor
    /// changed: the render loop recomposes everything when it moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What scanout `s` shows; `None` if it is disabled.
    pub fn scanout(&self, s: usize) -> Option<ScanoutView<'_>> {
        let sc = self.scanouts.get(s)?;
        let res = self.resources.get(&sc.resource)?;
        Some(ScanoutView {
            pixels: &res.pixels,
            stride: res.width * format::BYTES_PER_PIXEL,
            width: res.width,
            height: res.height,
            format: res.format,
            rect: sc.rect,
        })
    }

    /// [`Gpu::scanout`], owned: the pixels shared, not copied.
    pub fn scanout_shared(&self, s: usize) -> Option<SharedScanout> {
        let sc = self.scanouts.get(s)?;
        let res = self.resources.get(&sc.resource)?;
        Some(SharedScanout {
            pixels: Arc::clone(&res.pixels),
            stride: res.width * format::BYTES_PER_PIXEL,
            width: res.width,
            height: res.height,
            format: res.format,
            rect: sc.rect,
        })
    }

    /// [`Gpu::cursor`], copied (64×64 pixels); `None` also if the copy does not fit
    /// in memory.
    pub fn cursor_owned(&self) -> Option<OwnedCursor> {
        let c = self.cursor()?;
        let mut image = Vec::new();
        image.try_reserve_exact(c.image.len()).ok()?;
        image.extend_from_slice(c.image);
        Some(OwnedCursor {
            scanout: c.scanout,
            x: c.x,
            y: c.y,
            image,
            format: c.format,
        })
    }

    /// The areas of scanout `s` (in its own coordinates, inside its rectangle) the
    /// guest flushed since the last call; at most [`limits::MAX_DAMAGE_RECTS`].
    pub fn take_damage(&mut self, s: usize) -> Vec<Rect> {
        self.scanouts
            .get_mut(s)
            .map(|sc| core::mem::take(&mut sc.damage))
            .unwrap_or_default()
    }

    /// The cursor, if the guest set a visible one.
    pub fn cursor(&self) -> Option<CursorView<'_>> {
        let c = &self.cursor;
        if c.resource == 0 || c.image.is_empty() {
            return None;
        }
        Some(CursorView {
            scanout: c.scanout,
            x: c.x.wrapping_sub(c.hot_x as i32),
            y: c.y.wrapping_sub(c.hot_y as i32),
            image: &c.image,
            format: c.format,
        })
    }

    /// Host bytes the resources take now.
    pub fn resource_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of live resources.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Handles one chain of queue `q`; returns the bytes written into it.
    fn handle(
        &mut self,
        q: u16,
        chain: &DescChain,
        mem: &mut dyn GuestMemory,
    ) -> Result<u32, DeviceError> {
        let mut reader = chain.reader();
        let mut req = [0u8; layout::MAX_REQUEST];
        let got = reader.read(mem, &mut req)?;
        let mut writer = chain.writer();
        if got < hdr::SIZE {
            log::warn!("virtio-gpu: request of {got} bytes has no header");
            let mut resp = [0u8; hdr::SIZE];
            put32(&mut resp, hdr::TYPE, cmd::RESP_ERR_UNSPEC);
            writer.write(mem, &resp)?;
            return Ok(writer.written() as u32);
        }
        let kind = get32(&req, hdr::TYPE);
        let flags = get32(&req, hdr::FLAGS);
        let result = if q == queue::CURSORQ {
            self.cursor_command(kind, &req[..got])
        } else {
            self.control_command(kind, &req[..got], &mut reader, mem)
        };
        let (resp_type, body) = match result {
            Ok(body) => (
                match body {
                    Body::None => cmd::RESP_OK_NODATA,
                    Body::DisplayInfo => cmd::RESP_OK_DISPLAY_INFO,
                    Body::Edid(_) => cmd::RESP_OK_EDID,
                },
                body,
            ),
            Err(e) => {
                log::warn!("virtio-gpu: command {kind:#x} refused with {e:#x}");
                (e, Body::None)
            }
        };
        // The header: type, the fence echoed (the command is complete), the context
        // and ring index echoed.
        let mut resp = [0u8; hdr::SIZE];
        put32(&mut resp, hdr::TYPE, resp_type);
        put32(
            &mut resp,
            hdr::FLAGS,
            flags & (hdr::FLAG_FENCE | hdr::FLAG_INFO_RING_IDX),
        );
        if flags & hdr::FLAG_FENCE != 0 {
            resp[hdr::FENCE_ID..hdr::FENCE_ID + 8]
                .copy_from_slice(&req[hdr::FENCE_ID..hdr::FENCE_ID + 8]);
        }
        resp[hdr::CTX_ID..hdr::CTX_ID + 4].copy_from_slice(&req[hdr::CTX_ID..hdr::CTX_ID + 4]);
        if flags & hdr::FLAG_INFO_RING_IDX != 0 {
            resp[hdr::RING_IDX] = req[hdr::RING_IDX];
        }
        writer.write(mem, &resp)?;
        match &body {
            Body::None => {}
            Body::DisplayInfo => {
                writer.write(mem, &self.display_info())?;
            }
            Body::Edid(e) => {
                let mut tail = [0u8; layout::RESP_EDID - hdr::SIZE];
                put32(&mut tail, 0, edid::BLOCK as u32);
                tail[8..8 + edid::BLOCK].copy_from_slice(e);
                writer.write(mem, &tail)?;
            }
        }
        Ok(writer.written() as u32)
    }

    fn control_command(
        &mut self,
        kind: u32,
        req: &[u8],
        reader: &mut virtio::ChainReader,
        mem: &mut dyn GuestMemory,
    ) -> CmdResult<Body> {
        let need = match kind {
            cmd::GET_DISPLAY_INFO => hdr::SIZE,
            cmd::GET_EDID => layout::GET_EDID,
            cmd::RESOURCE_CREATE_2D => layout::RESOURCE_CREATE_2D,
            cmd::RESOURCE_UNREF | cmd::RESOURCE_DETACH_BACKING => layout::RESOURCE_ID_ONLY,
            cmd::SET_SCANOUT => layout::SET_SCANOUT,
            cmd::RESOURCE_FLUSH => layout::RESOURCE_FLUSH,
            cmd::TRANSFER_TO_HOST_2D => layout::TRANSFER_TO_HOST_2D,
            cmd::RESOURCE_ATTACH_BACKING => layout::ATTACH_BACKING,
            _ => {
                log::warn!("virtio-gpu: unsupported command {kind:#x}");
                return Err(cmd::RESP_ERR_UNSPEC);
            }
        };
        if req.len() < need {
            log::warn!(
                "virtio-gpu: command {kind:#x} of {} bytes is short",
                req.len()
            );
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let at = |i: usize| get32(req, hdr::SIZE + 4 * i);
        let rect = || Rect::new(at(0), at(1), at(2), at(3));
        match kind {
            cmd::GET_DISPLAY_INFO => Ok(Body::DisplayInfo),
            cmd::GET_EDID => self.get_edid(at(0)),
            cmd::RESOURCE_CREATE_2D => self
                .create_2d(at(0), at(1), at(2), at(3))
                .map(|()| Body::None),
            cmd::RESOURCE_UNREF => self.unref(at(0)).map(|()| Body::None),
            cmd::SET_SCANOUT => self.set_scanout(at(4), at(5), rect()).map(|()| Body::None),
            cmd::RESOURCE_FLUSH => self.flush(at(4), rect()).map(|()| Body::None),
            cmd::TRANSFER_TO_HOST_2D => {
                let offset = u64::from(at(4)) | (u64::from(at(5)) << 32);
                self.transfer(mem, at(6), rect(), offset)
                    .map(|()| Body::None)
            }
            cmd::RESOURCE_ATTACH_BACKING => {
                // Entries follow the fixed part; the first read may have taken some.
                let mut entries_bytes = Vec::new();
                entries_bytes.extend_from_slice(&req[layout::ATTACH_BACKING..]);
                self.attach_backing(mem, reader, at(0), at(1), entries_bytes)
                    .map(|()| Body::None)
            }
            cmd::RESOURCE_DETACH_BACKING => self.detach_backing(at(0)).map(|()| Body::None),
            _ => Err(cmd::RESP_ERR_UNSPEC),
        }
    }

    fn cursor_command(&mut self, kind: u32, req: &[u8]) -> CmdResult<Body> {
        if kind != cmd::UPDATE_CURSOR && kind != cmd::MOVE_CURSOR {
            log::warn!("virtio-gpu: command {kind:#x} on the cursor queue");
            return Err(cmd::RESP_ERR_UNSPEC);
        }
        if req.len() < layout::UPDATE_CURSOR {
            log::warn!("virtio-gpu: cursor command of {} bytes is short", req.len());
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let at = |i: usize| get32(req, hdr::SIZE + 4 * i);
        let (scanout, x, y) = (at(0), at(1) as i32, at(2) as i32);
        if scanout as usize >= self.scanouts.len() {
            return Err(cmd::RESP_ERR_INVALID_SCANOUT_ID);
        }
        if kind == cmd::MOVE_CURSOR {
            self.cursor.scanout = scanout;
            self.cursor.x = x;
            self.cursor.y = y;
            self.generation += 1;
            return Ok(Body::None);
        }
        let (resource, hot_x, hot_y) = (at(4), at(5), at(6));
        if resource == 0 {
            self.cursor = Cursor {
                scanout,
                x,
                y,
                ..Cursor::default()
            };
            self.generation += 1;
            return Ok(Body::None);
        }
        let res = self
            .resources
            .get(&resource)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if res.width != cursor::SIZE
            || res.height != cursor::SIZE
            || hot_x >= cursor::SIZE
            || hot_y >= cursor::SIZE
        {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let mut image = Vec::new();
        image
            .try_reserve_exact(res.pixels.len())
            .map_err(|_| cmd::RESP_ERR_OUT_OF_MEMORY)?;
        image.extend_from_slice(&res.pixels);
        self.cursor = Cursor {
            scanout,
            x,
            y,
            hot_x,
            hot_y,
            resource,
            format: res.format,
            image,
        };
        self.generation += 1;
        Ok(Body::None)
    }

    /// The body of RESP_OK_DISPLAY_INFO.
    fn display_info(&self) -> [u8; layout::RESP_DISPLAY_INFO - hdr::SIZE] {
        let mut b = [0u8; layout::RESP_DISPLAY_INFO - hdr::SIZE];
        for (i, sc) in self.scanouts.iter().enumerate() {
            let at = i * layout::DISPLAY_ONE;
            // rect (x = y = 0), enabled, flags = 0.
            put32(&mut b, at + 8, sc.width);
            put32(&mut b, at + 12, sc.height);
            put32(&mut b, at + 16, 1);
        }
        b
    }

    fn get_edid(&self, scanout: u32) -> CmdResult<Body> {
        let sc = self
            .scanouts
            .get(scanout as usize)
            .ok_or(cmd::RESP_ERR_INVALID_SCANOUT_ID)?;
        // Modes are kept within what an EDID holds, so this always succeeds.
        edid::generate(sc.width, sc.height)
            .map(Body::Edid)
            .ok_or(cmd::RESP_ERR_UNSPEC)
    }

    fn create_2d(&mut self, id: u32, fmt: u32, width: u32, height: u32) -> CmdResult<()> {
        if id == 0 || self.resources.contains_key(&id) {
            return Err(cmd::RESP_ERR_INVALID_RESOURCE_ID);
        }
        if !format::ALL.contains(&fmt) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        if width == 0
            || height == 0
            || width > limits::MAX_DIMENSION
            || height > limits::MAX_DIMENSION
        {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let bytes = u64::from(width) * u64::from(height) * u64::from(format::BYTES_PER_PIXEL);
        if bytes > self.config.max_resource_bytes
            || self.total_bytes + bytes > self.config.max_total_bytes
            || self.resources.len() >= limits::MAX_RESOURCES
        {
            return Err(cmd::RESP_ERR_OUT_OF_MEMORY);
        }
        let mut pixels = Vec::new();
        pixels
            .try_reserve_exact(bytes as usize)
            .map_err(|_| cmd::RESP_ERR_OUT_OF_MEMORY)?;
        pixels.resize(bytes as usize, 0);
        self.resources.insert(
            id,
            Resource {
                format: fmt,
                width,
                height,
                pixels: Arc::new(pixels),
                backing: Vec::new(),
            },
        );
        self.total_bytes += bytes;
        Ok(())
    }

    fn unref(&mut self, id: u32) -> CmdResult<()> {
        let res = self
            .resources
            .remove(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        self.total_bytes -= res.bytes();
        for sc in self.scanouts.iter_mut().filter(|sc| sc.resource == id) {
            sc.resource = 0;
            sc.rect = Rect::default();
            sc.damage.clear();
            self.generation += 1;
        }
        Ok(())
    }

    fn set_scanout(&mut self, scanout: u32, id: u32, rect: Rect) -> CmdResult<()> {
        let sc = self
            .scanouts
            .get_mut(scanout as usize)
            .ok_or(cmd::RESP_ERR_INVALID_SCANOUT_ID)?;
        if id == 0 {
            sc.resource = 0;
            sc.rect = Rect::default();
            sc.damage.clear();
            self.generation += 1;
            return Ok(());
        }
        let res = self
            .resources
            .get(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if rect.is_empty() || !rect.fits_in(res.width, res.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        sc.resource = id;
        sc.rect = rect;
        sc.damage.clear();
        sc.add_damage(Rect::new(0, 0, rect.width, rect.height));
        self.generation += 1;
        Ok(())
    }

    fn flush(&mut self, id: u32, rect: Rect) -> CmdResult<()> {
        let res = self
            .resources
            .get(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if !rect.fits_in(res.width, res.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        for sc in self.scanouts.iter_mut().filter(|sc| sc.resource == id) {
            let shown = rect.intersect(&sc.rect);
            if !shown.is_empty() {
                sc.add_damage(Rect::new(
                    shown.x - sc.rect.x,
                    shown.y - sc.rect.y,
                    shown.width,
                    shown.height,
                ));
            }
        }
        Ok(())
    }

    fn transfer(
        &mut self,
        mem: &dyn GuestMemory,
        id: u32,
        rect: Rect,
        offset: u64,
    ) -> CmdResult<()> {
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if !rect.fits_in(res.width, res.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        if res.backing.is_empty() {
            return Err(cmd::RESP_ERR_UNSPEC);
        }
        if !res.unshare() {
            return Err(cmd::RESP_ERR_OUT_OF_MEMORY);
        }
        match res.transfer_from_backing(mem, rect, offset) {
            Ok(true) => Ok(()),
            Ok(false) => Err(cmd::RESP_ERR_INVALID_PARAMETER),
            Err(e) => {
                log::warn!("virtio-gpu: resource {id}: backing unreadable: {e:?}");
                Err(cmd::RESP_ERR_INVALID_PARAMETER)
            }
        }
    }

    fn attach_backing(
        &mut self,
        mem: &mut dyn GuestMemory,
        reader: &mut virtio::ChainReader,
        id: u32,
        nr_entries: u32,
        mut raw: Vec<u8>,
    ) -> CmdResult<()> {
        let res = self
            .resources
            .get(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if !res.backing.is_empty() {
            return Err(cmd::RESP_ERR_UNSPEC);
        }
        if nr_entries == 0 || nr_entries > limits::MAX_BACKING_ENTRIES {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let want = nr_entries as usize * layout::MEM_ENTRY;
        if raw.len() < want {
            let have = raw.len();
            raw.try_reserve_exact(want - have)
                .map_err(|_| cmd::RESP_ERR_OUT_OF_MEMORY)?;
            raw.resize(want, 0);
            let got = reader
                .read(mem, &mut raw[have..])
                .map_err(|_| cmd::RESP_ERR_UNSPEC)?;
            if got < want - have {
                return Err(cmd::RESP_ERR_INVALID_PARAMETER);
            }
        }
        let mut backing = Vec::new();
        backing
            .try_reserve_exact(nr_entries as usize)
            .map_err(|_| cmd::RESP_ERR_OUT_OF_MEMORY)?;
        let mut start = 0u64;
        for e in raw[..want].chunks_exact(layout::MEM_ENTRY) {
            let addr = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
            let len = get32(e, 8);
            if len == 0 || addr.checked_add(u64::from(len)).is_none() {
                return Err(cmd::RESP_ERR_INVALID_PARAMETER);
            }
            backing.push(BackingEntry { addr, len, start });
            start += u64::from(len);
            if start > self.config.max_resource_bytes {
                return Err(cmd::RESP_ERR_INVALID_PARAMETER);
            }
        }
        // Every byte must be guest RAM: read the whole backing once.
        let mut scratch = [0u8; limits::CHUNK_BYTES];
        for e in &backing {
            let mut off = 0u64;
            while off < u64::from(e.len) {
                let n = core::cmp::min(u64::from(e.len) - off, limits::CHUNK_BYTES as u64) as usize;
                if let Err(err) = mem.read(e.addr + off, &mut scratch[..n]) {
                    log::warn!(
                        "virtio-gpu: resource {id}: backing {:#x}+{:#x} is not guest RAM: {err:?}",
                        e.addr,
                        e.len
                    );
                    return Err(cmd::RESP_ERR_INVALID_PARAMETER);
                }
                off += n as u64;
            }
        }
        if let Some(res) = self.resources.get_mut(&id) {
            res.backing = backing;
        }
        Ok(())
    }

    fn detach_backing(&mut self, id: u32) -> CmdResult<()> {
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if res.backing.is_empty() {
            return Err(cmd::RESP_ERR_UNSPEC);
        }
        res.backing = Vec::new();
        Ok(())
    }
}

/// A little-endian `u32` at `at` (0 past the end).
pub(crate) fn get32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl VirtioDevice for Gpu {
    fn device_id(&self) -> u32 {
        defs::DEVICE_ID
    }

    fn features(&self) -> u64 {
        features::EDID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut c = [0u8; config::SIZE];
        put32(&mut c, config::EVENTS_READ, self.events_read);
        put32(&mut c, config::NUM_SCANOUTS, self.scanouts.len() as u32);
        // events_clear reads 0; no capsets (2D only).
        virtio::device::read_config_bytes(&c, offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        if offset == config::EVENTS_CLEAR && data.len() == 4 {
            self.events_read &= !get32(data, 0);
        } else {
            log::warn!(
                "virtio-gpu: write of {} bytes to config at {offset:#x} ignored",
                data.len()
            );
        }
    }

    fn process(&mut self, q: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        if q != queue::CONTROLQ && q != queue::CURSORQ {
            return Ok(());
        }
        while let Some(chain) = qc.pop(q)? {
            let written = self.handle(q, &chain, qc.mem())?;
            qc.push_used(q, chain.head, written)?;
        }
        Ok(())
    }

    /// Device reset: every resource and scanout binding goes (the guest driver
    /// creates them again), the monitors keep their modes.
    fn reset(&mut self) {
        self.resources.clear();
        self.total_bytes = 0;
        for sc in &mut self.scanouts {
            sc.resource = 0;
            sc.rect = Rect::default();
            sc.damage.clear();
        }
        self.cursor = Cursor::default();
        self.events_read = 0;
        self.generation += 1;
    }

    /// VM reset: the monitors go back to their configured modes too.
    fn power_on_reset(&mut self) {
        for (sc, &(w, h)) in self.scanouts.iter_mut().zip(&self.config.modes) {
            sc.width = w;
            sc.height = h;
        }
    }

    fn save_state(&self) -> Vec<u8> {
        crate::save::save(self)
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        crate::save::restore(self, blob)
    }
}
