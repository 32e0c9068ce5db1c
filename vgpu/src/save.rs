//! The device's saved state (inside the transport's blob, `MmioTransport`'s
//! `vdev::SaveRestore`): the display events, each scanout's mode, source and pending
//! damage, every resource with its pixels and backing, and the cursor. Restore
//! checks all of it as it checks a guest's commands (ids, formats, sizes, memory
//! bounds, rectangles, backing) and builds the new state aside, so a refused blob
//! changes nothing.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::RestoreError;

use crate::defs::{config, cursor, format, limits};
use crate::gpu::{Cursor, Gpu, Scanout};
use crate::resource::{BackingEntry, Rect, Resource};

/// Identifies the device's own blob inside the transport's.
const ID: [u8; 4] = *b"VGPU";
/// Layout version.
const VERSION: u32 = 1;

fn put_rect(w: &mut Writer, r: &Rect) {
    w.u32(r.x).u32(r.y).u32(r.width).u32(r.height);
}

fn get_rect(r: &mut Reader) -> Result<Rect, RestoreError> {
    Ok(Rect::new(r.u32()?, r.u32()?, r.u32()?, r.u32()?))
}

pub(crate) fn save(gpu: &Gpu) -> Vec<u8> {
    let Gpu {
        // Configuration from the VM definition, not state.
        config: _,
        queue_sizes: _,
        resources,
        // Derived from the resources.
        total_bytes: _,
        scanouts,
        cursor,
        events_read,
        // The render loop's change counter: a restore bumps it.
        generation: _,
    } = gpu;
    let mut w = Writer::new(ID, VERSION);
    w.u32(*events_read);
    w.u32(scanouts.len() as u32);
    for Scanout {
        width,
        height,
        resource,
        rect,
        damage,
    } in scanouts
    {
        w.u32(*width).u32(*height).u32(*resource);
        put_rect(&mut w, rect);
        w.u32(damage.len() as u32);
        for d in damage {
            put_rect(&mut w, d);
        }
    }
    w.u32(resources.len() as u32);
    for (
        id,
        Resource {
            format,
            width,
            height,
            pixels,
            backing,
        },
    ) in resources
    {
        w.u32(*id).u32(*format).u32(*width).u32(*height);
        w.u32(backing.len() as u32);
        for e in backing {
            // `start` is derived from the lengths.
            w.u64(e.addr).u32(e.len);
        }
        w.bytes(pixels);
    }
    let Cursor {
        scanout,
        x,
        y,
        hot_x,
        hot_y,
        resource,
        format,
        image,
    } = cursor;
    w.u32(*scanout)
        .u32(*x as u32)
        .u32(*y as u32)
        .u32(*hot_x)
        .u32(*hot_y)
        .u32(*resource)
        .u32(*format)
        .bytes(image);
    w.finish()
}

pub(crate) fn restore(gpu: &mut Gpu, blob: &[u8]) -> Result<(), RestoreError> {
    let (_version, mut r) = Reader::open(blob, ID, VERSION)?;
    let bad = || RestoreError::Malformed;
    let events_read = r.masked_u32(config::EVENT_DISPLAY)?;
    if r.u32()? as usize != gpu.scanouts.len() {
        return Err(bad());
    }
    let mut scanouts = Vec::new();
    for _ in 0..gpu.scanouts.len() {
        let width = r.u32()?;
        let height = r.u32()?;
        let resource = r.u32()?;
        let rect = get_rect(&mut r)?;
        if width == 0
            || height == 0
            || width > crate::edid::MAX_ACTIVE
            || height > crate::edid::MAX_ACTIVE
        {
            return Err(bad());
        }
        let n = r.u32()? as usize;
        if n > limits::MAX_DAMAGE_RECTS {
            return Err(bad());
        }
        let mut damage = Vec::new();
        for _ in 0..n {
            let d = get_rect(&mut r)?;
            if d.is_empty() || !d.fits_in(rect.width, rect.height) {
                return Err(bad());
            }
            damage.push(d);
        }
        if resource == 0 && (rect != Rect::default() || !damage.is_empty()) {
            return Err(bad());
        }
        scanouts.push(Scanout {
            width,
            height,
            resource,
            rect,
            damage,
        });
    }
    let count = r.u32()? as usize;
    if count > limits::MAX_RESOURCES {
        return Err(bad());
    }
    let mut resources = BTreeMap::new();
    let mut total = 0u64;
    for _ in 0..count {
        let id = r.u32()?;
        let fmt = r.u32()?;
        let width = r.u32()?;
        let height = r.u32()?;
        if id == 0 || resources.contains_key(&id) || !format::ALL.contains(&fmt) {
            return Err(bad());
        }
        if width == 0
            || height == 0
            || width > limits::MAX_DIMENSION
            || height > limits::MAX_DIMENSION
        {
            return Err(bad());
        }
        let bytes = u64::from(width) * u64::from(height) * u64::from(format::BYTES_PER_PIXEL);
        total += bytes;
        if bytes > gpu.config.max_resource_bytes || total > gpu.config.max_total_bytes {
            return Err(bad());
        }
        let entries = r.u32()?;
        if entries > limits::MAX_BACKING_ENTRIES {
            return Err(bad());
        }
        let mut backing = Vec::new();
        let mut start = 0u64;
        for _ in 0..entries {
            let addr = r.u64()?;
            let len = r.u32()?;
            if len == 0 || addr.checked_add(u64::from(len)).is_none() {
                return Err(bad());
            }
            backing.push(BackingEntry { addr, len, start });
            start += u64::from(len);
            if start > gpu.config.max_resource_bytes {
                return Err(bad());
            }
        }
        let pixels = r.bytes(bytes as usize)?;
        if pixels.len() as u64 != bytes {
            return Err(bad());
        }
        resources.insert(
            id,
            Resource {
                format: fmt,
                width,
                height,
                pixels: Arc::new(pixels.to_vec()),
                backing,
            },
        );
    }
    for sc in &scanouts {
        if sc.resource == 0 {
            continue;
        }
        let res = resources.get(&sc.resource).ok_or_else(bad)?;
        if sc.rect.is_empty() || !sc.rect.fits_in(res.width, res.height) {
            return Err(bad());
        }
    }
    let scanout = r.u32()?;
    let x = r.u32()? as i32;
    let y = r.u32()? as i32;
    let hot_x = r.u32()?;
    let hot_y = r.u32()?;
    let resource = r.u32()?;
    let cursor_format = r.u32()?;
    let image_len = (cursor::SIZE * cursor::SIZE * format::BYTES_PER_PIXEL) as usize;
    let image = r.bytes(image_len)?;
    r.end()?;
    if scanout as usize >= scanouts.len() && (scanout != 0 || resource != 0) {
        return Err(bad());
    }
    let hidden =
        resource == 0 && hot_x == 0 && hot_y == 0 && cursor_format == 0 && image.is_empty();
    let shown = resource != 0
        && hot_x < cursor::SIZE
        && hot_y < cursor::SIZE
        && format::ALL.contains(&cursor_format)
        && image.len() == image_len;
    if !hidden && !shown {
        return Err(bad());
    }
    gpu.events_read = events_read;
    gpu.scanouts = scanouts;
    gpu.resources = resources;
    gpu.total_bytes = total;
    gpu.cursor = Cursor {
        scanout,
        x,
        y,
        hot_x,
        hot_y,
        resource,
        format: cursor_format,
        image: image.to_vec(),
    };
    gpu.generation += 1;
    Ok(())
}
