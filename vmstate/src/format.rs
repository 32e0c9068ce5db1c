//! The saved-image layout, byte for byte (little-endian throughout), and its
//! version rule. `docs/architecture.md` ("Suspend and resume") describes the same.
//!
//! ```text
//! 0       header block (HEADER_BLOCK bytes; the header, zero padding)
//! 4096    RAM data: one 2 MiB slot per saved block (slot s at 4096 + s * 2 MiB);
//!         each non-zero page at its own offset in its block's slot (the places
//!         of zero pages are never read); CRC field 0, the CRCs are per block
//! vcpus   vCPU section (right after the RAM data): per vCPU, u32 length + a
//!         VcpuState blob ("VCPU")
//!         device section: u32 count, per device u8 name length, name, u64 MMIO
//!         base, u32 length, the device's SaveRestore blob
//!         zero padding to a 4 KiB boundary
//! index   RAM index: per saved block, u32 block number, u32 slot, u32 CRC32C of
//!         its data pages in page order, u32 reserved (0), 512-bit zero map
//! ```
//!
//! Version 1 (until the incremental suspend) packed the data pages back to back
//! after the small sections with one CRC over them; it is no longer read.
//!
//! Header: magic `RAYOSVMS`, u32 format version, u32 reserved (0); the
//! [`Fingerprint`] (VM UUID, vCPU count, RAM size and base, CRC32C of the device
//! layout); the [`TimeState`]; u32 section count (4) then per section u64 offset,
//! u64 length, u32 CRC32C, u32 reserved (0); u32 CRC32C of every header byte before
//! it. The registry's `saved_state` blob records the image's size and, as its
//! CRC32C, the header's CRC32C: the header carries every section's checksum, so it
//! covers the whole image.
//!
//! **Versions.** [`FORMAT_VERSION`] is what this build writes. A build reads every
//! format version from [`MIN_FORMAT_VERSION`] to its own, upgrading older images in
//! memory (every section decoder, and every device's `SaveRestore`, reads each
//! version it ever wrote and fills later fields with their reset values). An image
//! of a newer format, of a format older than [`MIN_FORMAT_VERSION`], or whose
//! device blobs a device refuses (a newer device version), is refused: the VM cold
//! boots on the same disk and the log says why. Raising [`MIN_FORMAT_VERSION`] is
//! how a build drops support for an old layout.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::time::TimeState;

/// The image's magic.
pub const MAGIC: [u8; 8] = *b"RAYOSVMS";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build still reads.
pub const MIN_FORMAT_VERSION: u32 = 2;
/// Bytes reserved for the header at the start of the image.
pub const HEADER_BLOCK: usize = 4096;
/// Where RAM data starts (aligned), and the section alignment.
pub const ALIGN: u64 = 4096;
/// Sections, in image order.
pub const SECTIONS: usize = 4;
/// Section numbers.
pub const SEC_VCPUS: usize = 0;
pub const SEC_DEVICES: usize = 1;
pub const SEC_RAM_DATA: usize = 2;
pub const SEC_RAM_INDEX: usize = 3;
/// Bounds on the small sections (the hypervisor reads them into memory).
pub const MAX_VCPU_SECTION: u64 = 64 << 10;
pub const MAX_DEVICE_SECTION: u64 = 8 << 20;
/// Longest device name.
pub const MAX_DEVICE_NAME: usize = 32;
/// Most devices a VM has on its bus.
pub const MAX_DEVICES: usize = 64;

/// What a saved image was taken from; a resume into a VM that differs is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// The VM record's UUID bytes.
    pub uuid: [u8; 16],
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub ram_ipa: u64,
    /// CRC32C of the device layout ([`device_layout_crc`]).
    pub devices_crc: u32,
}

impl Fingerprint {
    /// The first field that differs from `other`, by name.
    pub fn mismatch(&self, other: &Fingerprint) -> Option<&'static str> {
        if self.uuid != other.uuid {
            Some("VM identity")
        } else if self.vcpus != other.vcpus {
            Some("vCPU count")
        } else if self.memory_bytes != other.memory_bytes {
            Some("RAM size")
        } else if self.ram_ipa != other.ram_ipa {
            Some("RAM base")
        } else if self.devices_crc != other.devices_crc {
            Some("device layout")
        } else {
            None
        }
    }
}

/// A section: where it is in the image, how long, its CRC32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Section {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

impl Section {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub version: u32,
    pub fingerprint: Fingerprint,
    pub time: TimeState,
    pub sections: [Section; SECTIONS],
}

/// Why an image (or a part of it) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// Not a saved image (magic).
    NotAnImage,
    /// A format version this build does not read.
    Version(u32),
    /// A checksum does not match (what it covers).
    Checksum(&'static str),
    /// A field is out of range (which).
    Malformed(&'static str),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NotAnImage => f.write_str("not a saved image (bad magic)"),
            FormatError::Version(v) => write!(
                f,
                "format version {v} (this build reads {MIN_FORMAT_VERSION}..={FORMAT_VERSION})"
            ),
            FormatError::Checksum(what) => write!(f, "{what} checksum mismatch"),
            FormatError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if self.0.len() < n {
            return Err(FormatError::Malformed(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}

impl Header {
    /// Encodes the header (without the padding to [`HEADER_BLOCK`]); its last four
    /// bytes are the CRC32C of the rest.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(256);
        w.extend_from_slice(&MAGIC);
        w.extend_from_slice(&self.version.to_le_bytes());
        w.extend_from_slice(&0u32.to_le_bytes());
        let f = &self.fingerprint;
        w.extend_from_slice(&f.uuid);
        w.extend_from_slice(&f.vcpus.to_le_bytes());
        w.extend_from_slice(&f.devices_crc.to_le_bytes());
        w.extend_from_slice(&f.memory_bytes.to_le_bytes());
        w.extend_from_slice(&f.ram_ipa.to_le_bytes());
        let t = &self.time;
        for v in [t.cntfrq, t.guest_vcount, t.host_pcount] {
            w.extend_from_slice(&v.to_le_bytes());
        }
        w.extend_from_slice(&(SECTIONS as u32).to_le_bytes());
        for s in &self.sections {
            w.extend_from_slice(&s.offset.to_le_bytes());
            w.extend_from_slice(&s.len.to_le_bytes());
            w.extend_from_slice(&s.crc.to_le_bytes());
            w.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = registry::crc32c(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        w
    }

    /// The header's CRC32C (what the registry records as the blob's checksum).
    pub fn crc(&self) -> u32 {
        let e = self.encode();
        u32::from_le_bytes([
            e[e.len() - 4],
            e[e.len() - 3],
            e[e.len() - 2],
            e[e.len() - 1],
        ])
    }

    /// Decodes and checks a header from the start of an image of `image_len` bytes:
    /// magic, checksum, version, and sections in order, inside the image, of
    /// bounded size, RAM data aligned.
    pub fn decode(bytes: &[u8], image_len: u64) -> Result<Header, FormatError> {
        let mut r = Rd(bytes);
        if r.take(8, "header")? != MAGIC {
            return Err(FormatError::NotAnImage);
        }
        let version = r.u32("header")?;
        let _reserved = r.u32("header")?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(r.take(16, "header")?);
        let vcpus = r.u32("header")?;
        let devices_crc = r.u32("header")?;
        let memory_bytes = r.u64("header")?;
        let ram_ipa = r.u64("header")?;
        let time = TimeState {
            cntfrq: r.u64("header")?,
            guest_vcount: r.u64("header")?,
            host_pcount: r.u64("header")?,
        };
        if r.u32("header")? as usize != SECTIONS {
            return Err(FormatError::Malformed("section count"));
        }
        let mut sections = [Section::default(); SECTIONS];
        for s in sections.iter_mut() {
            s.offset = r.u64("header")?;
            s.len = r.u64("header")?;
            s.crc = r.u32("header")?;
            let _ = r.u32("header")?;
        }
        let body = bytes.len() - r.0.len();
        let crc = r.u32("header")?;
        if registry::crc32c(&bytes[..body]) != crc {
            return Err(FormatError::Checksum("header"));
        }
        // The version is checked after the checksum: a torn header is "corrupt", a
        // whole one of another version is "incompatible".
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(FormatError::Version(version));
        }
        let h = Header {
            version,
            fingerprint: Fingerprint {
                uuid,
                vcpus,
                memory_bytes,
                ram_ipa,
                devices_crc,
            },
            time,
            sections,
        };
        h.check_layout(image_len)?;
        Ok(h)
    }

    fn check_layout(&self, image_len: u64) -> Result<(), FormatError> {
        for (i, s) in self.sections.iter().enumerate() {
            let end = s
                .offset
                .checked_add(s.len)
                .ok_or(FormatError::Malformed("section bounds"))?;
            if s.offset < HEADER_BLOCK as u64 || end > image_len {
                return Err(FormatError::Malformed("section bounds"));
            }
            let overlaps = self.sections[..i]
                .iter()
                .any(|o| s.len > 0 && o.len > 0 && s.offset < o.end() && o.offset < end);
            if overlaps {
                return Err(FormatError::Malformed("section bounds"));
            }
            let max = match i {
                SEC_VCPUS => MAX_VCPU_SECTION,
                SEC_DEVICES => MAX_DEVICE_SECTION,
                SEC_RAM_DATA => self.fingerprint.memory_bytes,
                _ => {
                    self.fingerprint.memory_bytes / crate::ram::BLOCK_SIZE as u64
                        * crate::ram::ENTRY_LEN as u64
                        + crate::ram::ENTRY_LEN as u64
                }
            };
            if s.len > max {
                return Err(FormatError::Malformed("section size"));
            }
        }
        if !self.sections[SEC_RAM_DATA].offset.is_multiple_of(ALIGN)
            || !self.sections[SEC_RAM_DATA]
                .len
                .is_multiple_of(crate::ram::PAGE_SIZE as u64)
        {
            return Err(FormatError::Malformed("RAM data alignment"));
        }
        if self.fingerprint.vcpus == 0
            || self.fingerprint.vcpus > registry::defs::MAX_VCPUS
            || !self
                .fingerprint
                .memory_bytes
                .is_multiple_of(crate::ram::BLOCK_SIZE as u64)
            || self.fingerprint.memory_bytes == 0
        {
            return Err(FormatError::Malformed("VM configuration"));
        }
        Ok(())
    }
}

/// One device's saved state, named by its place on the MMIO bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub name: String,
    pub base: u64,
    pub blob: Vec<u8>,
}

/// CRC32C of a VM's device layout: the name and MMIO base of every device whose
/// state is saved, in order.
pub fn device_layout_crc<'a>(devices: impl Iterator<Item = (&'a str, u64)>) -> u32 {
    let mut w = Vec::new();
    for (name, base) in devices {
        w.push(name.len() as u8);
        w.extend_from_slice(name.as_bytes());
        w.extend_from_slice(&base.to_le_bytes());
    }
    registry::crc32c(&w)
}

/// Encodes the vCPU section from each vCPU's saved blob.
pub fn encode_vcpus(blobs: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Vec::new();
    for b in blobs {
        w.extend_from_slice(&(b.len() as u32).to_le_bytes());
        w.extend_from_slice(b);
    }
    w
}

/// Splits the vCPU section into `vcpus` blobs.
pub fn decode_vcpus(bytes: &[u8], vcpus: u32) -> Result<Vec<&[u8]>, FormatError> {
    let mut r = Rd(bytes);
    let mut out = Vec::new();
    for _ in 0..vcpus {
        let n = r.u32("vCPU section")? as usize;
        out.push(r.take(n, "vCPU section")?);
    }
    if !r.0.is_empty() {
        return Err(FormatError::Malformed("vCPU section"));
    }
    Ok(out)
}

/// Encodes the device section.
pub fn encode_devices(devices: &[DeviceState]) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&(devices.len() as u32).to_le_bytes());
    for d in devices {
        w.push(d.name.len() as u8);
        w.extend_from_slice(d.name.as_bytes());
        w.extend_from_slice(&d.base.to_le_bytes());
        w.extend_from_slice(&(d.blob.len() as u32).to_le_bytes());
        w.extend_from_slice(&d.blob);
    }
    w
}

/// Decodes the device section.
pub fn decode_devices(bytes: &[u8]) -> Result<Vec<DeviceState>, FormatError> {
    let mut r = Rd(bytes);
    let n = r.u32("device section")? as usize;
    if n > MAX_DEVICES {
        return Err(FormatError::Malformed("device count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u8("device section")? as usize;
        if len > MAX_DEVICE_NAME {
            return Err(FormatError::Malformed("device name"));
        }
        let name = core::str::from_utf8(r.take(len, "device section")?)
            .map_err(|_| FormatError::Malformed("device name"))?;
        let base = r.u64("device section")?;
        let blen = r.u32("device section")? as usize;
        let blob = r.take(blen, "device section")?.to_vec();
        out.push(DeviceState {
            name: String::from(name),
            base,
            blob,
        });
    }
    if !r.0.is_empty() {
        return Err(FormatError::Malformed("device section"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    pub(crate) fn header() -> Header {
        Header {
            version: FORMAT_VERSION,
            fingerprint: Fingerprint {
                uuid: [7; 16],
                vcpus: 2,
                memory_bytes: 64 << 20,
                ram_ipa: 0x4000_0000,
                devices_crc: 0xabcd,
            },
            time: TimeState {
                cntfrq: 62_500_000,
                guest_vcount: 1 << 40,
                host_pcount: 1 << 41,
            },
            sections: [
                Section {
                    offset: 4096,
                    len: 1200,
                    crc: 1,
                },
                Section {
                    offset: 5296,
                    len: 300,
                    crc: 2,
                },
                Section {
                    offset: 8192,
                    len: 8192,
                    crc: 3,
                },
                Section {
                    offset: 16384,
                    len: 68,
                    crc: 4,
                },
            ],
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        let e = h.encode();
        assert_eq!(Header::decode(&e, 16384 + 68), Ok(h));
        assert_eq!(
            h.crc(),
            u32::from_le_bytes(e[e.len() - 4..].try_into().unwrap())
        );
    }

    #[test]
    fn every_header_bit_flip_is_refused() {
        let e = header().encode();
        for bit in 0..e.len() * 8 {
            let mut b = e.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&b, 1 << 20).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn newer_and_too_old_versions_are_refused_as_versions() {
        for v in [0, FORMAT_VERSION + 1, u32::MAX] {
            let mut h = header();
            h.version = v;
            assert_eq!(
                Header::decode(&h.encode(), 1 << 20),
                Err(FormatError::Version(v))
            );
        }
    }

    #[test]
    fn sections_out_of_bounds_overlapping_or_oversized_are_refused() {
        let len = 16384 + 68;
        let cases: [fn(&mut Header); 6] = [
            |h| h.sections[3].len = 1 << 40,              // past the image
            |h| h.sections[1].offset = 4096,              // overlaps the vCPUs
            |h| h.sections[0].offset = 0,                 // inside the header block
            |h| h.sections[2].offset = 8000,              // RAM data unaligned
            |h| h.sections[0].len = MAX_VCPU_SECTION + 1, // oversized
            |h| h.fingerprint.vcpus = 0,
        ];
        for (i, c) in cases.iter().enumerate() {
            let mut h = header();
            c(&mut h);
            assert!(Header::decode(&h.encode(), len).is_err(), "case {i}");
        }
        let mut h = header();
        h.sections[2].offset = u64::MAX - 10;
        assert!(Header::decode(&h.encode(), u64::MAX).is_err());
    }

    #[test]
    fn sections_round_trip() {
        let d = vec![
            DeviceState {
                name: "pl011".into(),
                base: 0x900_0000,
                blob: vec![1, 2, 3],
            },
            DeviceState {
                name: "virtio-blk".into(),
                base: 0xa00_0000,
                blob: vec![],
            },
        ];
        assert_eq!(decode_devices(&encode_devices(&d)), Ok(d));
        let v = vec![vec![9u8; 10], vec![8u8; 3]];
        let enc = encode_vcpus(&v);
        assert_eq!(decode_vcpus(&enc, 2).unwrap(), vec![&v[0][..], &v[1][..]]);
        assert!(decode_vcpus(&enc, 1).is_err());
        assert!(decode_vcpus(&enc, 3).is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512), n in 0u32..8) {
            let _ = Header::decode(&raw, 1 << 30);
            let _ = decode_devices(&raw);
            let _ = decode_vcpus(&raw, n);
            let _ = crate::ram::decode_index(&raw, n, n);
        }
    }
}
