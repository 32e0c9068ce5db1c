//! Putting a guest kernel, initrd and device tree into guest RAM the way Linux's arm64
//! boot protocol (and QEMU's `-kernel`) does: an image with the arm64 Image header
//! goes to the 2 MiB aligned RAM base plus its `text_offset`; anything else is a raw
//! image loaded at RAM base + 512 KiB and entered at its first byte. The initrd goes
//! where QEMU would put it, the device tree in the last 2 MiB of RAM.

use vdev::{GuestMemory, MemError};

use crate::guest;

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

/// Copies `kernel` into the guest RAM `[ram_base, ram_base + ram_size)` of `mem`,
/// where [`place_kernel`] says.
pub fn load_kernel(
    mem: &mut dyn GuestMemory,
    ram_base: u64,
    ram_size: u64,
    kernel: &[u8],
) -> Result<Loaded, LoadError> {
    let loaded = place_kernel(ram_base, ram_size, kernel)?;
    mem.write(loaded.entry, kernel).map_err(LoadError::Memory)?;
    Ok(loaded)
}

/// Where `kernel` goes in the guest RAM `[ram_base, ram_base + ram_size)`, or
/// why it does not fit; nothing is written.
pub fn place_kernel(ram_base: u64, ram_size: u64, kernel: &[u8]) -> Result<Loaded, LoadError> {
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
    let need = offset.saturating_add(size);
    if need > ram_size {
        return Err(LoadError::TooBig {
            need,
            have: ram_size,
        });
    }
    Ok(Loaded {
        entry: ram_base + offset,
        end: ram_base + need,
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

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::VecMemory;

    const BASE: u64 = 0x4000_0000;

    fn header(text_offset: u64, image_size: u64, len: usize) -> alloc::vec::Vec<u8> {
        let mut k = alloc::vec![0xaau8; len];
        k[8..16].copy_from_slice(&text_offset.to_le_bytes());
        k[16..24].copy_from_slice(&image_size.to_le_bytes());
        k[56..60].copy_from_slice(b"ARM\x64");
        k
    }

    #[test]
    fn placing_a_kernel_writes_nothing_and_refuses_one_larger_than_ram() {
        let k = header(0x1000, 8 << 20, 4096);
        let at = place_kernel(BASE, 16 << 20, &k).unwrap();
        assert_eq!(
            (at.entry, at.end),
            (BASE + 0x1000, BASE + 0x1000 + (8 << 20))
        );
        assert_eq!(
            place_kernel(BASE, 4 << 20, &k),
            Err(LoadError::TooBig {
                need: 0x1000 + (8 << 20),
                have: 4 << 20
            })
        );
    }

    #[test]
    fn image_goes_to_its_text_offset_and_reserves_its_bss() {
        let mut m = VecMemory::new(BASE, 4 << 20);
        let k = header(0x1000, 1 << 20, 4096);
        let l = load_kernel(&mut m, BASE, 4 << 20, &k).unwrap();
        assert_eq!(
            l,
            Loaded {
                entry: BASE + 0x1000,
                end: BASE + 0x1000 + (1 << 20),
                linux_image: true
            }
        );
        assert_eq!(
            m.read_u32(BASE + 0x1000 + 56).unwrap(),
            u32::from_le_bytes(*b"ARM\x64")
        );
    }

    #[test]
    fn legacy_images_and_raw_binaries_load_at_512k() {
        let mut m = VecMemory::new(BASE, 4 << 20);
        let l = load_kernel(&mut m, BASE, 4 << 20, &header(0x1234, 0, 128)).unwrap();
        assert_eq!((l.entry, l.linux_image), (BASE + 0x8_0000, true));
        let l = load_kernel(&mut m, BASE, 4 << 20, &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            l,
            Loaded {
                entry: BASE + 0x8_0000,
                end: BASE + 0x8_0004,
                linux_image: false
            }
        );
        assert_eq!(m.read_u32(BASE + 0x8_0000).unwrap(), 0x0403_0201);
    }

    #[test]
    fn a_kernel_that_does_not_fit_is_refused() {
        let mut m = VecMemory::new(BASE, 1 << 20);
        assert_eq!(
            load_kernel(&mut m, BASE, 1 << 20, &header(0, 2 << 20, 64)),
            Err(LoadError::TooBig {
                need: 2 << 20,
                have: 1 << 20
            })
        );
    }

    #[test]
    fn initrd_and_dtb_placement() {
        // 512 MiB: initrd at base + 128 MiB, DTB in the last 2 MiB.
        let l = place_boot_data(BASE, 512 << 20, BASE + (32 << 20), 4 << 20).unwrap();
        assert_eq!(
            l,
            BootLayout {
                initrd: Some((BASE + (128 << 20), BASE + (132 << 20))),
                dtb: BASE + (510 << 20)
            }
        );
        // A kernel past the preferred spot pushes the initrd after it (2 MiB aligned).
        let l = place_boot_data(BASE, 256 << 20, BASE + (129 << 20) + 5, 1 << 20).unwrap();
        assert_eq!(l.initrd, Some((BASE + (130 << 20), BASE + (131 << 20))));
        assert_eq!(
            place_boot_data(BASE, 64 << 20, BASE + (1 << 20), 0)
                .unwrap()
                .initrd,
            None
        );
        assert!(
            place_boot_data(BASE, 64 << 20, BASE + (63 << 20), 0).is_err(),
            "no room for the DTB"
        );
        assert!(
            place_boot_data(BASE, 64 << 20, BASE + (1 << 20), 60 << 20).is_err(),
            "initrd too big"
        );
    }
}
