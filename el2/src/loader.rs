//! Putting a guest kernel into guest RAM the way Linux's arm64 boot protocol (and
//! QEMU's `-kernel`) does: an image with the arm64 Image header goes to the 2 MiB
//! aligned RAM base plus its `text_offset`; anything else is a raw image loaded at
//! RAM base + 512 KiB and entered at its first byte.

use boards::guest;
use vdev::{GuestMemory, MemError};

use crate::vm::GuestRam;

/// arm64 Image header fields (Documentation/arch/arm64/booting.rst).
mod image {
    pub const MAGIC_OFFSET: usize = 56;
    pub const MAGIC: &[u8; 4] = b"ARM\x64";
    pub const TEXT_OFFSET: usize = 8;
    pub const IMAGE_SIZE: usize = 16;
    pub const HEADER_LEN: usize = 64;
    /// text_offset assumed when image_size is zero (pre-3.17 kernels).
    pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
}

/// Where a kernel went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    /// First guest-physical byte past the kernel (including its BSS for Image files).
    pub end: u64,
    pub linux_image: bool,
}

/// Why a kernel could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// The kernel (with its BSS) does not fit in guest RAM.
    TooBig {
        need: u64,
        have: u64,
    },
    Memory(MemError),
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Copies `kernel` into `ram`.
pub fn load_kernel(ram: &mut GuestRam, kernel: &[u8]) -> Result<Loaded, LoadError> {
    let is_image = kernel.len() >= image::HEADER_LEN
        && &kernel[image::MAGIC_OFFSET..image::MAGIC_OFFSET + 4] == image::MAGIC;
    let (offset, size) = if is_image {
        let image_size = le64(kernel, image::IMAGE_SIZE);
        if image_size == 0 {
            (image::LEGACY_TEXT_OFFSET, kernel.len() as u64)
        } else {
            (
                le64(kernel, image::TEXT_OFFSET),
                image_size.max(kernel.len() as u64),
            )
        }
    } else {
        (guest::RAW_IMAGE_OFFSET, kernel.len() as u64)
    };
    let base = ram.ipa();
    let need = offset.saturating_add(size);
    if need > ram.size() {
        return Err(LoadError::TooBig {
            need,
            have: ram.size(),
        });
    }
    ram.write(base + offset, kernel)
        .map_err(LoadError::Memory)?;
    Ok(Loaded {
        entry: base + offset,
        end: base + need,
        linux_image: is_image,
    })
}

/// Where the initrd and device tree go in guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootLayout {
    /// `(start, end)` of the initrd, if there is one.
    pub initrd: Option<(u64, u64)>,
    pub dtb: u64,
}

/// Places the initrd where QEMU's `-kernel` would (RAM base + min(RAM/2, 128 MiB), or
/// past the kernel) and the DTB in the last 2 MiB of RAM.
pub fn place_boot_data(
    ram_base: u64,
    ram_size: u64,
    kernel_end: u64,
    initrd_len: u64,
) -> Result<BootLayout, &'static str> {
    const TWO_MIB: u64 = 2 << 20;
    let dtb = (ram_base + ram_size - TWO_MIB) & !(TWO_MIB - 1);
    if dtb < kernel_end {
        return Err("no room for the device tree after the kernel");
    }
    if initrd_len == 0 {
        return Ok(BootLayout { initrd: None, dtb });
    }
    let preferred = ram_base + (ram_size / 2).min(128 << 20);
    let start = preferred.max(kernel_end.next_multiple_of(TWO_MIB));
    if start + initrd_len > dtb {
        return Err("the initrd does not fit in guest RAM");
    }
    Ok(BootLayout {
        initrd: Some((start, start + initrd_len)),
        dtb,
    })
}
