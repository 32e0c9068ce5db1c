//! ELF → flat binary image: what QEMU's `-kernel` (and any arm64 `Image` loader)
//! takes. Each `PT_LOAD` segment's file bytes land at `p_paddr - lowest p_paddr`;
//! segments without file bytes (NOLOAD `.bss`, stacks) are not written, so the
//! image ends at the last initialised byte. The hypervisor's image must start with
//! an arm64 `Image` header ([`check_arm64_image_header`]); the test guests are raw
//! images without one.

use std::fmt;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

/// Offset of the arm64 `Image` header's magic (Linux `Documentation/arch/arm64/booting.rst`).
pub const ARM64_IMAGE_MAGIC_OFFSET: usize = 56;
/// The arm64 `Image` header's magic, "ARM\x64".
pub const ARM64_IMAGE_MAGIC: [u8; 4] = *b"ARM\x64";
/// Largest flat image made; a larger span means a broken link script.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Why an ELF could not be flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlatError {
    /// Not a 64-bit ELF `object` can read.
    Parse(String),
    /// The ELF is for another machine (the value of `e_machine`).
    NotAarch64(u16),
    /// No `PT_LOAD` segment has file bytes.
    NoLoadableBytes,
    /// A segment's file size exceeds its memory size, or its bytes lie outside the file.
    BadSegment { index: usize, why: &'static str },
    /// Two segments' file bytes overlap in the image.
    Overlap { first: usize, second: usize },
    /// The image would be larger than [`MAX_IMAGE_BYTES`].
    TooLarge(u64),
    /// The image does not start with an arm64 `Image` header.
    MissingImageHeader,
    /// A dynamic relocation other than R_AARCH64_RELATIVE, which the
    /// hypervisor's self-relocation (el2/src/boot.rs) does not apply.
    UnsupportedRelocation(u32),
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlatError::Parse(e) => write!(f, "not a readable 64-bit ELF: {e}"),
            FlatError::NotAarch64(m) => write!(f, "ELF is for machine {m}, not AArch64 ({})", elf::EM_AARCH64.0),
            FlatError::NoLoadableBytes => write!(f, "no PT_LOAD segment has file bytes"),
            FlatError::UnsupportedRelocation(t) => write!(f, "relocation type {t} in the image: only R_AARCH64_RELATIVE ({}) is applied at start", elf::R_AARCH64_RELATIVE.0),
            FlatError::BadSegment { index, why } => write!(f, "program header {index}: {why}"),
            FlatError::Overlap { first, second } => write!(f, "PT_LOAD segments {first} and {second} overlap"),
            FlatError::TooLarge(n) => write!(f, "image would span {n} bytes (limit {MAX_IMAGE_BYTES})"),
            FlatError::MissingImageHeader => write!(
                f,
                "no arm64 Image header: expected \"ARM\\x64\" at offset {ARM64_IMAGE_MAGIC_OFFSET} (is the entry code first in .text.head?)"
            ),
        }
    }
}

/// A flat image and the physical address its first byte is linked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    pub load_addr: u64,
    pub bytes: Vec<u8>,
}

/// One segment that contributes file bytes.
struct Piece<'a> {
    index: usize,
    paddr: u64,
    bytes: &'a [u8],
}

/// Flattens a 64-bit little-endian AArch64 ELF.
pub fn elf_to_flat(data: &[u8]) -> Result<FlatImage, FlatError> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data)
        .map_err(|e| FlatError::Parse(e.to_string()))?;
    let endian = header
        .endian()
        .map_err(|e| FlatError::Parse(e.to_string()))?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_AARCH64 {
        return Err(FlatError::NotAarch64(machine.0));
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| FlatError::Parse(e.to_string()))?;
    check_relocations(header, endian, data)?;

    let mut pieces = Vec::new();
    for (index, ph) in phdrs.iter().enumerate() {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let (filesz, memsz) = (ph.p_filesz(endian), ph.p_memsz(endian));
        if filesz > memsz {
            return Err(FlatError::BadSegment {
                index,
                why: "p_filesz exceeds p_memsz",
            });
        }
        if filesz == 0 {
            continue;
        }
        let bytes = ph.data(endian, data).map_err(|()| FlatError::BadSegment {
            index,
            why: "file bytes lie outside the file",
        })?;
        pieces.push(Piece {
            index,
            paddr: ph.p_paddr(endian),
            bytes,
        });
    }
    let base = pieces
        .iter()
        .map(|p| p.paddr)
        .min()
        .ok_or(FlatError::NoLoadableBytes)?;

    pieces.sort_by_key(|p| p.paddr);
    let mut end = 0u64;
    let mut last_index = 0;
    for p in &pieces {
        let offset = p.paddr - base;
        if offset < end {
            return Err(FlatError::Overlap {
                first: last_index,
                second: p.index,
            });
        }
        end = offset
            .checked_add(p.bytes.len() as u64)
            .ok_or(FlatError::BadSegment {
                index: p.index,
                why: "p_paddr + p_filesz overflows",
            })?;
        last_index = p.index;
    }
    if end > MAX_IMAGE_BYTES {
        return Err(FlatError::TooLarge(end));
    }

    let mut bytes = vec![0u8; end as usize];
    for p in &pieces {
        let offset = (p.paddr - base) as usize;
        bytes[offset..offset + p.bytes.len()].copy_from_slice(p.bytes);
    }
    Ok(FlatImage {
        load_addr: base,
        bytes,
    })
}

/// Refuses relocation sections holding anything but R_AARCH64_RELATIVE: the
/// position-independent hypervisor applies only those to itself at start.
fn check_relocations(
    header: &elf::FileHeader64<object::Endianness>,
    endian: object::Endianness,
    data: &[u8],
) -> Result<(), FlatError> {
    let sections = header
        .sections(endian, data)
        .map_err(|e| FlatError::Parse(e.to_string()))?;
    for s in sections.iter() {
        if s.sh_type(endian) != elf::SHT_RELA {
            continue;
        }
        let relas: &[elf::Rela64<object::Endianness>] = s
            .data_as_array(endian, data)
            .map_err(|e| FlatError::Parse(e.to_string()))?;
        // ELF64 r_info: symbol in the high 32 bits, type in the low 32.
        let kind =
            |r: &elf::Rela64<object::Endianness>| (r.r_info.get(endian) & 0xffff_ffff) as u32;
        if let Some(t) = relas
            .iter()
            .map(kind)
            .find(|&t| t != elf::R_AARCH64_RELATIVE.0)
        {
            return Err(FlatError::UnsupportedRelocation(t));
        }
    }
    Ok(())
}

/// Checks that `image` starts with an arm64 `Image` header.
pub fn check_arm64_image_header(image: &[u8]) -> Result<(), FlatError> {
    let magic =
        image.get(ARM64_IMAGE_MAGIC_OFFSET..ARM64_IMAGE_MAGIC_OFFSET + ARM64_IMAGE_MAGIC.len());
    if magic == Some(&ARM64_IMAGE_MAGIC[..]) {
        Ok(())
    } else {
        Err(FlatError::MissingImageHeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::elf::{FileHeader as WFileHeader, ProgramHeader as WProgramHeader, Writer};
    use object::Endianness;

    /// A segment of a test ELF: physical address, file bytes, memory size.
    struct Seg<'a> {
        paddr: u64,
        bytes: &'a [u8],
        memsz: u64,
    }

    fn build_elf(machine: elf::Machine, segs: &[Seg<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(Endianness::Little, true, &mut out);
        w.reserve_file_header();
        w.reserve_program_headers(segs.len() as u32);
        let offsets: Vec<u64> = segs
            .iter()
            .map(|s| w.reserve(s.bytes.len() as u64, 16))
            .collect();
        w.write_file_header(&WFileHeader {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: machine,
            e_entry: segs.first().map_or(0, |s| s.paddr),
            e_flags: elf::FileFlags(0),
        })
        .unwrap();
        w.write_align_program_headers();
        for (s, off) in segs.iter().zip(&offsets) {
            w.write_program_header(&WProgramHeader {
                p_type: elf::PT_LOAD,
                p_flags: elf::PF_R,
                p_offset: *off,
                p_vaddr: s.paddr,
                p_paddr: s.paddr,
                p_filesz: s.bytes.len() as u64,
                p_memsz: s.memsz,
                p_align: 16,
            });
        }
        for (s, off) in segs.iter().zip(&offsets) {
            w.pad_until(*off);
            w.write(s.bytes);
        }
        out
    }

    #[test]
    fn segments_land_at_their_physical_offsets_and_bss_is_not_written() {
        let elf = build_elf(
            elf::EM_AARCH64,
            &[
                Seg {
                    paddr: 0x4008_1000,
                    bytes: b"DATA",
                    memsz: 4,
                },
                Seg {
                    paddr: 0x4008_0000,
                    bytes: b"TEXT",
                    memsz: 4,
                },
                // NOLOAD .bss: memory only.
                Seg {
                    paddr: 0x4008_2000,
                    bytes: b"",
                    memsz: 0x10000,
                },
            ],
        );
        let img = elf_to_flat(&elf).unwrap();
        assert_eq!(img.load_addr, 0x4008_0000);
        assert_eq!(img.bytes.len(), 0x1004);
        assert_eq!(&img.bytes[..4], b"TEXT");
        assert!(img.bytes[4..0x1000].iter().all(|b| *b == 0));
        assert_eq!(&img.bytes[0x1000..], b"DATA");
    }

    #[test]
    fn bad_inputs_are_refused_with_a_reason() {
        assert!(matches!(
            elf_to_flat(b"not an elf at all, just text"),
            Err(FlatError::Parse(_))
        ));
        let x86 = build_elf(
            elf::EM_X86_64,
            &[Seg {
                paddr: 0,
                bytes: b"x",
                memsz: 1,
            }],
        );
        assert_eq!(
            elf_to_flat(&x86),
            Err(FlatError::NotAarch64(elf::EM_X86_64.0))
        );
        let only_bss = build_elf(
            elf::EM_AARCH64,
            &[Seg {
                paddr: 0x1000,
                bytes: b"",
                memsz: 64,
            }],
        );
        assert_eq!(elf_to_flat(&only_bss), Err(FlatError::NoLoadableBytes));
        let overlap = build_elf(
            elf::EM_AARCH64,
            &[
                Seg {
                    paddr: 0x1000,
                    bytes: b"abcdefgh",
                    memsz: 8,
                },
                Seg {
                    paddr: 0x1004,
                    bytes: b"xy",
                    memsz: 2,
                },
            ],
        );
        assert_eq!(
            elf_to_flat(&overlap),
            Err(FlatError::Overlap {
                first: 0,
                second: 1
            })
        );
        let short_mem = build_elf(
            elf::EM_AARCH64,
            &[Seg {
                paddr: 0x1000,
                bytes: b"abcd",
                memsz: 2,
            }],
        );
        assert!(matches!(
            elf_to_flat(&short_mem),
            Err(FlatError::BadSegment { index: 0, .. })
        ));
        let huge = build_elf(
            elf::EM_AARCH64,
            &[
                Seg {
                    paddr: 0,
                    bytes: b"a",
                    memsz: 1,
                },
                Seg {
                    paddr: 1 << 40,
                    bytes: b"b",
                    memsz: 1,
                },
            ],
        );
        assert!(matches!(elf_to_flat(&huge), Err(FlatError::TooLarge(_))));
    }

    #[test]
    fn arm64_header_magic_is_checked() {
        let mut image = vec![0u8; 64];
        assert_eq!(
            check_arm64_image_header(&image),
            Err(FlatError::MissingImageHeader)
        );
        assert_eq!(
            check_arm64_image_header(&image[..10]),
            Err(FlatError::MissingImageHeader)
        );
        image[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(check_arm64_image_header(&image), Ok(()));
    }
}
