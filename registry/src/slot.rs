//! The two metadata slots (A and B): a 64-byte header (magic, slot version, slot index,
//! disk UUID, generation, payload length and CRC32C, header CRC32C) followed by the
//! payload (every VM record). A commit writes the inactive slot and flushes; a load
//! takes the valid slot with the highest generation. A slot that fails any check is
//! refused with a [`SlotError`] and never used.

use alloc::vec;
use alloc::vec::Vec;

use vdev::BlockBackend;

use crate::codec::{crc32c, get_u32, get_u64, put_u32, put_u64, DecodeError, Reader, Writer};
use crate::defs::{
    slot, BLOCK_SIZE, MAX_PAYLOAD, MAX_VMS, SLOT_HEADER_SIZE, SLOT_MAGIC, SLOT_VERSION,
    SLOT_VERSION_V1, SLOT_VERSION_V2, SLOT_VERSION_V3, SLOT_VERSION_V4, SLOT_VERSION_V5,
    TPM_CA_KEY_SIZE,
};
use crate::error::{SlotError, SlotId};
use crate::record::VmRecord;
use crate::space::check_layout;
use crate::superblock::Superblock;

/// Encodes the payload with no vTPM manufacturer CA key (see
/// [`encode_payload_with`]).
pub fn encode_payload(vms: &[VmRecord]) -> Vec<u8> {
    encode_payload_with(vms, None)
}

/// Encodes the payload: a `u32` record count, then each record as a `u32` length and
/// its bytes, then the vTPM manufacturer CA key: a `u8` presence flag (0 or 1) and,
/// if present, its [`TPM_CA_KEY_SIZE`] bytes.
pub fn encode_payload_with(
    vms: &[VmRecord],
    tpm_ca_key: Option<&[u8; TPM_CA_KEY_SIZE]>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(vms.len() as u32);
    for vm in vms {
        let at = w.len();
        w.u32(0);
        vm.encode(&mut w);
        let len = (w.len() - at - 4) as u32;
        w.patch_u32(at, len);
    }
    match tpm_ca_key {
        None => {
            w.u8(0);
        }
        Some(k) => {
            w.u8(1);
            w.bytes(k);
        }
    }
    w.into_bytes()
}

/// Decodes a payload of the current slot version (structure only; see
/// [`check_layout`] for the rules).
pub fn decode_payload(bytes: &[u8]) -> Result<Vec<VmRecord>, DecodeError> {
    decode_payload_version(bytes, SLOT_VERSION)
}

impl core::fmt::Debug for Payload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Payload { vms, tpm_ca_key } = self;
        f.debug_struct("Payload")
            .field("vms", vms)
            .field("tpm_ca_key", &tpm_ca_key.map(|_| "<secret>"))
            .finish()
    }
}

/// Decodes a payload written under slot version `version` (see
/// [`VmRecord::decode_version`]).
pub fn decode_payload_version(bytes: &[u8], version: u32) -> Result<Vec<VmRecord>, DecodeError> {
    decode_payload_full(bytes, version).map(|p| p.vms)
}

/// A decoded payload. Its `Debug` output never shows the CA key.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// Every VM record.
    pub vms: Vec<VmRecord>,
    /// The vTPM manufacturer CA key (slot version 3 on; `None` before).
    pub tpm_ca_key: Option<[u8; TPM_CA_KEY_SIZE]>,
}

/// Decodes a payload written under slot version `version`: the records, and from
/// [`SLOT_VERSION`] 3 on the CA key.
pub fn decode_payload_full(bytes: &[u8], version: u32) -> Result<Payload, DecodeError> {
    let mut r = Reader::new(bytes);
    let count = r.u32()? as usize;
    if count > MAX_VMS {
        return Err(DecodeError::TooLong("VM list"));
    }
    let mut vms = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u32()? as usize;
        vms.push(VmRecord::decode_version(r.take(len)?, version)?);
    }
    let tpm_ca_key = if [
        SLOT_VERSION,
        SLOT_VERSION_V5,
        SLOT_VERSION_V4,
        SLOT_VERSION_V3,
    ]
    .contains(&version)
    {
        match r.u8()? {
            0 => None,
            1 => Some(r.array()?),
            _ => return Err(DecodeError::BadValue("TPM CA key presence")),
        }
    } else {
        None
    };
    r.finish()?;
    Ok(Payload { vms, tpm_ca_key })
}

/// The bytes a commit writes to `slot`: header (slot version [`SLOT_VERSION`]) and
/// payload, zero-padded to whole blocks. The payload must fit ([`MAX_PAYLOAD`]);
/// `check_layout` guarantees it.
pub fn build_slot(sb: &Superblock, slot_id: SlotId, generation: u64, payload: &[u8]) -> Vec<u8> {
    build_slot_version(sb, slot_id, generation, payload, SLOT_VERSION)
}

/// [`build_slot`] with the version field set to `version` (tests write older
/// slots with it; the payload must be encoded for that version).
pub fn build_slot_version(
    sb: &Superblock,
    slot_id: SlotId,
    generation: u64,
    payload: &[u8],
    version: u32,
) -> Vec<u8> {
    let total = (SLOT_HEADER_SIZE + payload.len()).next_multiple_of(BLOCK_SIZE as usize);
    let mut b = vec![0u8; total];
    b[slot::MAGIC..slot::MAGIC + 8].copy_from_slice(&SLOT_MAGIC);
    put_u32(&mut b, slot::VERSION, version);
    put_u32(&mut b, slot::INDEX, slot_id.index());
    b[slot::DISK_UUID..slot::DISK_UUID + 16].copy_from_slice(&sb.disk_uuid.0);
    put_u64(&mut b, slot::GENERATION, generation);
    put_u32(&mut b, slot::PAYLOAD_LEN, payload.len() as u32);
    put_u32(&mut b, slot::PAYLOAD_CRC, crc32c(payload));
    let hcrc = crc32c(&b[..slot::HEADER_CRC]);
    put_u32(&mut b, slot::HEADER_CRC, hcrc);
    b[SLOT_HEADER_SIZE..SLOT_HEADER_SIZE + payload.len()].copy_from_slice(payload);
    b
}

/// A slot that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSlot {
    /// Its generation.
    pub generation: u64,
    /// Its records.
    pub vms: Vec<VmRecord>,
    /// The vTPM manufacturer CA key it holds.
    pub tpm_ca_key: Option<[u8; TPM_CA_KEY_SIZE]>,
}

/// What a valid slot header says.
struct Header {
    version: u32,
    generation: u64,
    payload_len: usize,
    payload_crc: u32,
}

/// Checks a slot header.
fn parse_header(sb: &Superblock, slot_id: SlotId, h: &[u8]) -> Result<Header, SlotError> {
    if h.iter().all(|&x| x == 0) {
        return Err(SlotError::Blank);
    }
    if h[slot::MAGIC..slot::MAGIC + 8] != SLOT_MAGIC {
        return Err(SlotError::BadMagic);
    }
    if crc32c(&h[..slot::HEADER_CRC]) != get_u32(h, slot::HEADER_CRC) {
        return Err(SlotError::HeaderChecksum);
    }
    let version = get_u32(h, slot::VERSION);
    // Non-zero reserved bytes under a valid CRC mean a writer of another layout.
    let known = [
        SLOT_VERSION,
        SLOT_VERSION_V5,
        SLOT_VERSION_V4,
        SLOT_VERSION_V3,
        SLOT_VERSION_V2,
        SLOT_VERSION_V1,
    ]
    .contains(&version);
    if !known || h[slot::RESERVED..slot::HEADER_CRC].iter().any(|&x| x != 0) {
        return Err(SlotError::UnsupportedVersion(version));
    }
    if get_u32(h, slot::INDEX) != slot_id.index() {
        return Err(SlotError::WrongSlot);
    }
    if h[slot::DISK_UUID..slot::DISK_UUID + 16] != sb.disk_uuid.0 {
        return Err(SlotError::WrongDisk);
    }
    let payload_len = get_u32(h, slot::PAYLOAD_LEN) as usize;
    if payload_len > MAX_PAYLOAD {
        return Err(SlotError::PayloadTooLarge);
    }
    Ok(Header {
        version,
        generation: get_u64(h, slot::GENERATION),
        payload_len,
        payload_crc: get_u32(h, slot::PAYLOAD_CRC),
    })
}

/// Reads and fully checks one slot.
pub fn read_slot(
    disk: &mut dyn BlockBackend,
    sb: &Superblock,
    slot_id: SlotId,
) -> Result<LoadedSlot, SlotError> {
    // Whole blocks only: the first block holds the header, the rest follows.
    let base = sb.slot_offset(slot_id);
    let block = BLOCK_SIZE as usize;
    let mut buf = vec![0u8; block];
    disk.read_at(base, &mut buf).map_err(SlotError::Io)?;
    let Header {
        version,
        generation,
        payload_len,
        payload_crc,
    } = parse_header(sb, slot_id, &buf[..SLOT_HEADER_SIZE])?;
    let total = (SLOT_HEADER_SIZE + payload_len).next_multiple_of(block);
    buf.resize(total, 0);
    disk.read_at(base + BLOCK_SIZE, &mut buf[block..])
        .map_err(SlotError::Io)?;
    let payload = &buf[SLOT_HEADER_SIZE..SLOT_HEADER_SIZE + payload_len];
    if crc32c(payload) != payload_crc {
        return Err(SlotError::PayloadChecksum);
    }
    let Payload { vms, tpm_ca_key } =
        decode_payload_full(payload, version).map_err(SlotError::Decode)?;
    check_layout(sb, &vms).map_err(SlotError::Inconsistent)?;
    Ok(LoadedSlot {
        generation,
        vms,
        tpm_ca_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDisk;
    use crate::record::tests::sample;
    use crate::uuid::Uuid;
    use vdev::BlockBackend;

    fn setup(vms: &[VmRecord]) -> (Superblock, MemDisk, usize) {
        let sb = Superblock::for_capacity(Uuid::from_random_bytes([5; 16]), 1 << 30).unwrap();
        let mut disk = MemDisk::new(sb.data_offset as usize);
        let bytes = build_slot(&sb, SlotId::B, 42, &encode_payload(vms));
        disk.write_at(sb.slot_b_offset, &bytes).unwrap();
        let used = SLOT_HEADER_SIZE + encode_payload(vms).len();
        (sb, disk, used)
    }

    #[test]
    fn round_trip() {
        let vms = vec![sample(0), sample(1)];
        let (sb, mut disk, _) = setup(&vms);
        assert_eq!(
            read_slot(&mut disk, &sb, SlotId::B),
            Ok(LoadedSlot {
                generation: 42,
                vms: vms.clone(),
                tpm_ca_key: None,
            })
        );
        assert_eq!(read_slot(&mut disk, &sb, SlotId::A), Err(SlotError::Blank));
    }

    #[test]
    fn tpm_ca_key_round_trips_and_its_flag_is_checked() {
        let vms = vec![sample(0)];
        let key = [0xA5; TPM_CA_KEY_SIZE];
        let p = encode_payload_with(&vms, Some(&key));
        let got = decode_payload_full(&p, SLOT_VERSION).unwrap();
        assert_eq!((got.vms, got.tpm_ca_key), (vms.clone(), Some(key)));
        // The flag is 0 or 1; a cut key is refused.
        let flag_at = p.len() - TPM_CA_KEY_SIZE - 1;
        let mut bad = p.clone();
        bad[flag_at] = 2;
        assert!(decode_payload_full(&bad, SLOT_VERSION).is_err());
        assert!(decode_payload_full(&p[..p.len() - 1], SLOT_VERSION).is_err());
        // A version-3 payload: the records without their (empty) snapshot lists
        // and (zero) RTC offsets.
        let mut w = Writer::new();
        w.u32(vms.len() as u32);
        for vm in &vms {
            let mut rec = Writer::new();
            vm.encode(&mut rec);
            let rec = rec.into_bytes();
            w.u32(rec.len() as u32 - 11);
            w.bytes(&rec[..rec.len() - 11]);
        }
        let mut v3 = w.into_bytes();
        let v2 = v3.clone();
        v3.extend_from_slice(&p[flag_at..]);
        let old = decode_payload_full(&v3, SLOT_VERSION_V3).unwrap();
        assert_eq!((old.vms, old.tpm_ca_key), (vms.clone(), Some(key)));
        assert!(decode_payload_full(&v3, SLOT_VERSION).is_err());
        // A version-2 payload has no trailer either.
        let old = decode_payload_full(&v2, SLOT_VERSION_V2).unwrap();
        assert_eq!((old.vms, old.tpm_ca_key), (vms, None));
        assert!(decode_payload_full(&v2, SLOT_VERSION).is_err());
    }

    #[test]
    fn every_byte_flip_refused() {
        let (sb, disk, used) = setup(&[sample(0), sample(1)]);
        let base = sb.slot_b_offset as usize;
        for i in 0..used {
            let mut d = disk.clone();
            d.bytes_mut()[base + i] ^= 0x20;
            assert!(
                read_slot(&mut d, &sb, SlotId::B).is_err(),
                "flip at slot byte {i} accepted"
            );
        }
    }

    #[test]
    fn misplaced_or_foreign_slot_refused() {
        let (sb, mut disk, _) = setup(&[sample(0)]);
        let mut copy = vec![0u8; 4096];
        disk.read_at(sb.slot_b_offset, &mut copy).unwrap();
        disk.write_at(sb.slot_a_offset, &copy).unwrap();
        assert_eq!(
            read_slot(&mut disk, &sb, SlotId::A),
            Err(SlotError::WrongSlot)
        );
        let mut other = sb;
        other.disk_uuid = Uuid::from_random_bytes([6; 16]);
        assert_eq!(
            read_slot(&mut disk, &other, SlotId::B),
            Err(SlotError::WrongDisk)
        );
    }

    #[test]
    fn valid_checksum_but_inconsistent_contents_refused() {
        let mut bad = sample(1);
        bad.tpm_nv = sample(0).tpm_nv;
        let (sb, mut disk, _) = setup(&[sample(0), bad]);
        assert!(matches!(
            read_slot(&mut disk, &sb, SlotId::B),
            Err(SlotError::Inconsistent(_))
        ));
        let mut junk = Writer::new();
        junk.u32(1);
        junk.u32(3);
        junk.bytes(&[1, 2, 3]);
        let sb2 = sb;
        let bytes = build_slot(&sb2, SlotId::A, 1, &junk.into_bytes());
        disk.write_at(sb2.slot_a_offset, &bytes).unwrap();
        assert_eq!(
            read_slot(&mut disk, &sb2, SlotId::A),
            Err(SlotError::Decode(DecodeError::Truncated))
        );
    }

    /// Rewrites a header field of slot B and fixes up the header CRC.
    fn patch_header(disk: &mut MemDisk, sb: &Superblock, f: impl FnOnce(&mut [u8])) {
        let base = sb.slot_b_offset as usize;
        let h = &mut disk.bytes_mut()[base..base + SLOT_HEADER_SIZE];
        f(h);
        let crc = crc32c(&h[..slot::HEADER_CRC]);
        put_u32(h, slot::HEADER_CRC, crc);
    }

    #[test]
    fn well_checksummed_but_invalid_headers_refused() {
        let (sb, disk, _) = setup(&[sample(0)]);
        type Patch = fn(&mut [u8]);
        let cases: [(Patch, SlotError); 5] = [
            (
                |h| put_u32(h, slot::VERSION, SLOT_VERSION + 1),
                SlotError::UnsupportedVersion(SLOT_VERSION + 1),
            ),
            (
                |h| put_u32(h, slot::VERSION, 0),
                SlotError::UnsupportedVersion(0),
            ),
            (
                |h| h[slot::RESERVED] = 1,
                SlotError::UnsupportedVersion(SLOT_VERSION),
            ),
            (
                |h| put_u32(h, slot::PAYLOAD_LEN, MAX_PAYLOAD as u32 + 1),
                SlotError::PayloadTooLarge,
            ),
            (
                |h| put_u32(h, slot::PAYLOAD_LEN, 3),
                SlotError::PayloadChecksum,
            ),
        ];
        for (patch, want) in cases {
            let mut d = disk.clone();
            patch_header(&mut d, &sb, patch);
            assert_eq!(read_slot(&mut d, &sb, SlotId::B), Err(want));
        }
    }

    #[test]
    fn version_1_slot_still_reads_with_zero_starts() {
        // A version-1 payload: the same records without the trailing counter.
        let vms = vec![sample(1), sample(2)];
        let mut w = Writer::new();
        w.u32(vms.len() as u32);
        for vm in &vms {
            let mut rec = Writer::new();
            vm.encode(&mut rec);
            let rec = rec.into_bytes();
            // Without the counter, the (empty) snapshot list, the RTC offset, the
            // MSI controller and the disk bus.
            let v1 = &rec[..rec.len() - 19];
            w.u32(v1.len() as u32);
            w.bytes(v1);
        }
        let payload = w.into_bytes();
        let sb = Superblock::for_capacity(Uuid::from_random_bytes([5; 16]), 1 << 30).unwrap();
        let mut disk = MemDisk::new(sb.data_offset as usize);
        let bytes = build_slot_version(&sb, SlotId::A, 7, &payload, SLOT_VERSION_V1);
        disk.write_at(sb.slot_a_offset, &bytes).unwrap();
        let loaded = read_slot(&mut disk, &sb, SlotId::A).unwrap();
        assert_eq!(loaded.generation, 7);
        let want: Vec<VmRecord> = vms
            .into_iter()
            .map(|v| VmRecord { starts: 0, ..v })
            .collect();
        assert_eq!(loaded.vms, want);
        // The same payload under a version-2 header does not decode.
        let bytes = build_slot(&sb, SlotId::A, 8, &payload);
        disk.write_at(sb.slot_a_offset, &bytes).unwrap();
        assert!(matches!(
            read_slot(&mut disk, &sb, SlotId::A),
            Err(SlotError::Decode(_))
        ));
    }

    #[test]
    fn payload_decode_rejects_truncation() {
        let p = encode_payload(&[sample(0), sample(1)]);
        assert_eq!(decode_payload(&p).map(|v| v.len()), Ok(2));
        for cut in 0..p.len() {
            assert!(decode_payload(&p[..cut]).is_err(), "cut at {cut}");
        }
    }
}
