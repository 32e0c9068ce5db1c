//! Reading a UEFI variable store as EDK2 firmware (Debian's AAVMF) keeps it in
//! its variable flash bank, and the EFI signature lists of the Secure Boot
//! variables (`PK`, `KEK`, `db`, `dbx`).
//!
//! The bank is a firmware volume (PI specification, volume 3: the
//! `EFI_FIRMWARE_VOLUME_HEADER` with signature `_FVH`) whose body starts with a
//! variable store header (EDK2's `VARIABLE_STORE_HEADER`: the store's format
//! GUID, size, format and state) and a run of variables, each a header, its
//! UTF-16 name and its data, the next header 4-byte aligned. A store whose
//! format GUID is `gEfiAuthenticatedVariableGuid` keeps authenticated variables
//! (time-based authenticated writes: the firmware enforces Secure Boot key
//! updates); `gEfiVariableGuid` stores cannot. Signature lists are
//! `EFI_SIGNATURE_LIST`s (UEFI specification, 32.4.1).
//!
//! The image is untrusted (a VM's firmware wrote it): every length is checked
//! against the bytes there are, and a malformed store is an error, never a panic.

use std::fmt;

/// An EFI GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID `d1-d2-d3-d4` as written in the specifications.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    fn read(b: &[u8]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        Guid(g)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `EFI_GLOBAL_VARIABLE`: the vendor of `PK` and `KEK`.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::new(
    0x8be4_df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: the vendor of `db` and `dbx`.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::new(
    0xd719_b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EDK2's `gEfiSecureBootEnableDisableGuid`: the vendor of `SecureBootEnable`
/// (1: the platform enforces Secure Boot once a PK is enrolled).
pub const SECURE_BOOT_ENABLE_DISABLE: Guid = Guid::new(
    0xf0a3_0bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);
/// EDK2's `gEfiCustomModeEnableGuid`: the vendor of `CustomMode` (1: key
/// variables writable without authentication, i.e. not enforcing).
pub const CUSTOM_MODE_ENABLE: Guid = Guid::new(
    0xc076_ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);
/// `EFI_CERT_X509_GUID`: a signature list of DER X.509 certificates.
pub const EFI_CERT_X509: Guid = Guid::new(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// `EFI_CERT_SHA256_GUID`: a signature list of SHA-256 image digests.
pub const EFI_CERT_SHA256: Guid = Guid::new(
    0xc1c4_1626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// EDK2's `gEfiAuthenticatedVariableGuid`: a store of authenticated variables.
pub const AUTHENTICATED_VARIABLE_STORE: Guid = Guid::new(
    0xaaf3_2c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// EDK2's `gEfiVariableGuid`: a store of plain (unauthenticated) variables.
pub const VARIABLE_STORE: Guid = Guid::new(
    0xddcf_3616,
    0x3275,
    0x4164,
    [0x98, 0xb6, 0xfe, 0x85, 0x70, 0x7f, 0xfe, 0x7d],
);

/// `EFI_FIRMWARE_VOLUME_HEADER.Signature`.
pub const FV_SIGNATURE: &[u8; 4] = b"_FVH";
/// Offset of `Signature` in the volume header.
const FV_SIGNATURE_OFFSET: usize = 40;
/// Offset of `HeaderLength` (u16) in the volume header.
const FV_HEADER_LENGTH_OFFSET: usize = 48;
/// Size of `VARIABLE_STORE_HEADER`: GUID, `Size` (u32), `Format`, `State`, two
/// reserved fields (u16, u32).
const STORE_HEADER_SIZE: usize = 28;
/// `VARIABLE_STORE_FORMATTED`.
pub const STORE_FORMATTED: u8 = 0x5a;
/// `VARIABLE_STORE_HEALTHY`.
pub const STORE_HEALTHY: u8 = 0xfe;
/// `VARIABLE_DATA`: every variable header starts with it.
pub const VARIABLE_START_ID: u16 = 0x55aa;
/// Size of `AUTHENTICATED_VARIABLE_HEADER`: `StartId`, `State`, reserved,
/// `Attributes`, `MonotonicCount` (u64), `TimeStamp` (`EFI_TIME`, 16 bytes),
/// `PubKeyIndex`, `NameSize`, `DataSize` (u32 each), `VendorGuid`.
const AUTH_VARIABLE_HEADER_SIZE: usize = 60;
/// Size of `VARIABLE_HEADER`: `StartId`, `State`, reserved, `Attributes`,
/// `NameSize`, `DataSize`, `VendorGuid`.
const VARIABLE_HEADER_SIZE: usize = 32;
/// Variable headers are 4-byte aligned (EDK2's `HEADER_ALIGNMENT`).
const HEADER_ALIGNMENT: usize = 4;
/// `State`: the variable was fully written (`VAR_ADDED`, bits 6 and 7 cleared).
pub const VAR_ADDED: u8 = 0x3f;
/// `State` bit cleared when a newer copy is being written
/// (`VAR_IN_DELETED_TRANSITION` = 0xfe).
const VAR_IN_DELETED_TRANSITION_BIT: u8 = 1 << 0;
/// `State` bit cleared when the copy is deleted (`VAR_DELETED` = 0xfd).
const VAR_DELETED_BIT: u8 = 1 << 1;

/// Why a variable store or signature list does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No firmware volume header (an erased or foreign bank).
    NotAFirmwareVolume,
    /// The store header names neither variable-store format.
    UnknownFormat(Guid),
    /// The store is not formatted/healthy.
    Unhealthy { format: u8, state: u8 },
    /// A length points past the bytes there are.
    Truncated(&'static str),
    /// A variable name is not NUL-terminated UTF-16.
    BadName,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotAFirmwareVolume => f.write_str("no firmware volume (_FVH) header"),
            StoreError::UnknownFormat(g) => write!(f, "unknown variable store format {g}"),
            StoreError::Unhealthy { format, state } => write!(
                f,
                "variable store not formatted/healthy (format {format:#04x}, state {state:#04x})"
            ),
            StoreError::Truncated(what) => write!(f, "truncated {what}"),
            StoreError::BadName => f.write_str("a variable name is not UTF-16"),
        }
    }
}

/// One live variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub vendor: Guid,
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// A parsed variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarStore {
    /// The store keeps authenticated variables (the firmware can enforce Secure
    /// Boot key updates).
    pub authenticated: bool,
    /// The live variables, each (name, vendor) once: its newest copy.
    pub variables: Vec<Variable>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl VarStore {
    /// Parses a variable bank image (its firmware volume and the store in it).
    pub fn parse(image: &[u8]) -> Result<VarStore, StoreError> {
        if image.len() < FV_HEADER_LENGTH_OFFSET + 2
            || &image[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4] != FV_SIGNATURE
        {
            return Err(StoreError::NotAFirmwareVolume);
        }
        let start = usize::from(u16_at(image, FV_HEADER_LENGTH_OFFSET));
        let header = image
            .get(start..start + STORE_HEADER_SIZE)
            .ok_or(StoreError::Truncated("variable store header"))?;
        let format_guid = Guid::read(header);
        let authenticated = match format_guid {
            g if g == AUTHENTICATED_VARIABLE_STORE => true,
            g if g == VARIABLE_STORE => false,
            g => return Err(StoreError::UnknownFormat(g)),
        };
        let size = u32_at(header, 16) as usize;
        let (format, state) = (header[20], header[21]);
        if format != STORE_FORMATTED || state != STORE_HEALTHY {
            return Err(StoreError::Unhealthy { format, state });
        }
        let store = image
            .get(start..start.saturating_add(size))
            .ok_or(StoreError::Truncated("variable store"))?;
        let header_size = if authenticated {
            AUTH_VARIABLE_HEADER_SIZE
        } else {
            VARIABLE_HEADER_SIZE
        };
        // (name/vendor offsets in the header) for the two formats.
        let (name_size_at, guid_at) = if authenticated { (36, 44) } else { (8, 16) };
        let mut found: Vec<(Variable, u8)> = Vec::new();
        let mut at = STORE_HEADER_SIZE;
        while at + header_size <= store.len() && u16_at(store, at) == VARIABLE_START_ID {
            let h = &store[at..at + header_size];
            let state = h[2];
            let attributes = u32_at(h, 4);
            let name_size = u32_at(h, name_size_at) as usize;
            let data_size = u32_at(h, name_size_at + 4) as usize;
            let vendor = Guid::read(&h[guid_at..]);
            let name_at = at + header_size;
            let data_at = name_at
                .checked_add(name_size)
                .ok_or(StoreError::Truncated("variable name"))?;
            let end = data_at
                .checked_add(data_size)
                .filter(|&e| e <= store.len())
                .ok_or(StoreError::Truncated("variable"))?;
            // Only fully written copies count; a copy in deletion transition
            // stands until its successor is added.
            let added = state | VAR_IN_DELETED_TRANSITION_BIT == VAR_ADDED;
            if added && state & VAR_DELETED_BIT != 0 {
                let name = utf16_name(&store[name_at..data_at])?;
                let in_transition = state & VAR_IN_DELETED_TRANSITION_BIT == 0;
                let var = Variable {
                    name,
                    vendor,
                    attributes,
                    data: store[data_at..end].to_vec(),
                };
                match found
                    .iter_mut()
                    .find(|(v, _)| v.name == var.name && v.vendor == var.vendor)
                {
                    // A newer fully added copy replaces one in transition.
                    Some((old, old_state)) if !in_transition || *old_state != VAR_ADDED => {
                        *old = var;
                        *old_state = state;
                    }
                    Some(_) => {}
                    None => found.push((var, state)),
                }
            }
            at = end.next_multiple_of(HEADER_ALIGNMENT);
        }
        Ok(VarStore {
            authenticated,
            variables: found.into_iter().map(|(v, _)| v).collect(),
        })
    }

    /// The live variable `name` of `vendor`.
    pub fn get(&self, name: &str, vendor: Guid) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.name == name && v.vendor == vendor)
    }
}

fn utf16_name(b: &[u8]) -> Result<String, StoreError> {
    if !b.len().is_multiple_of(2) {
        return Err(StoreError::BadName);
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let end = units
        .iter()
        .position(|&u| u == 0)
        .ok_or(StoreError::BadName)?;
    String::from_utf16(&units[..end]).map_err(|_| StoreError::BadName)
}

/// One `EFI_SIGNATURE_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    pub signature_type: Guid,
    /// (owner, signature data) of each `EFI_SIGNATURE_DATA`.
    pub signatures: Vec<(Guid, Vec<u8>)>,
}

/// Size of `EFI_SIGNATURE_LIST` before its header: type GUID,
/// `SignatureListSize`, `SignatureHeaderSize`, `SignatureSize`.
const SIGNATURE_LIST_HEADER_SIZE: usize = 28;
/// `EFI_SIGNATURE_DATA.SignatureOwner`.
const SIGNATURE_OWNER_SIZE: usize = 16;

/// Parses a variable's data as a run of signature lists (`PK`, `KEK`, `db`,
/// `dbx`).
pub fn signature_lists(data: &[u8]) -> Result<Vec<SignatureList>, StoreError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let h = data
            .get(at..at + SIGNATURE_LIST_HEADER_SIZE)
            .ok_or(StoreError::Truncated("signature list header"))?;
        let list_size = u32_at(h, 16) as usize;
        let header_size = u32_at(h, 20) as usize;
        let sig_size = u32_at(h, 24) as usize;
        let end = at
            .checked_add(list_size)
            .filter(|&e| e <= data.len() && list_size >= SIGNATURE_LIST_HEADER_SIZE)
            .ok_or(StoreError::Truncated("signature list"))?;
        let first = (at + SIGNATURE_LIST_HEADER_SIZE)
            .checked_add(header_size)
            .filter(|&f| f <= end)
            .ok_or(StoreError::Truncated("signature list header"))?;
        if sig_size < SIGNATURE_OWNER_SIZE || !(end - first).is_multiple_of(sig_size) {
            return Err(StoreError::Truncated("signature"));
        }
        let signatures = data[first..end]
            .chunks_exact(sig_size)
            .map(|s| (Guid::read(s), s[SIGNATURE_OWNER_SIZE..].to_vec()))
            .collect();
        out.push(SignatureList {
            signature_type: Guid::read(h),
            signatures,
        });
        at = end;
    }
    Ok(out)
}

/// The X.509 certificates (DER) of `lists`.
pub fn x509_certificates(lists: &[SignatureList]) -> impl Iterator<Item = &[u8]> {
    lists
        .iter()
        .filter(|l| l.signature_type == EFI_CERT_X509)
        .flat_map(|l| l.signatures.iter().map(|(_, d)| d.as_slice()))
}

/// A certificate's subject common name, or `None` when it does not parse.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let cn = x509_cert::der::oid::db::rfc4519::CN;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn)
        .and_then(|atv| match atv.value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
                std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(String::from)
            }
            _ => None,
        })
}

/// A certificate's SHA-1 thumbprint (the digest of its DER encoding), the
/// way Microsoft names its certificates.
pub fn sha1_thumbprint(der: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(der).into()
}

/// Test helpers: variable stores and signature lists built from parts.
pub mod build {
    use super::*;

    /// A signature list of `signature_type` holding `signatures` (owner, data),
    /// all of the first one's size.
    pub fn signature_list(signature_type: Guid, signatures: &[(Guid, &[u8])]) -> Vec<u8> {
        let sig_size = SIGNATURE_OWNER_SIZE + signatures.first().map_or(0, |s| s.1.len());
        let mut out = signature_type.0.to_vec();
        let size = SIGNATURE_LIST_HEADER_SIZE + sig_size * signatures.len();
        out.extend((size as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((sig_size as u32).to_le_bytes());
        for (owner, data) in signatures {
            out.extend(owner.0);
            out.extend(*data);
        }
        out
    }

    /// A variable bank: a firmware volume header, an authenticated (or plain)
    /// store holding `vars` (name, vendor, state, data) in order, erased after.
    pub fn store(authenticated: bool, vars: &[(&str, Guid, u8, &[u8])]) -> Vec<u8> {
        const FV_HEADER: usize = 72;
        const SIZE: usize = 64 << 10;
        let mut img = vec![0xffu8; SIZE];
        img[..FV_HEADER].fill(0);
        img[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4].copy_from_slice(FV_SIGNATURE);
        img[FV_HEADER_LENGTH_OFFSET..FV_HEADER_LENGTH_OFFSET + 2]
            .copy_from_slice(&(FV_HEADER as u16).to_le_bytes());
        let mut s = if authenticated {
            AUTHENTICATED_VARIABLE_STORE.0.to_vec()
        } else {
            VARIABLE_STORE.0.to_vec()
        };
        s.extend(((SIZE - FV_HEADER) as u32).to_le_bytes());
        s.extend([STORE_FORMATTED, STORE_HEALTHY, 0, 0, 0, 0, 0, 0]);
        for (name, vendor, state, data) in vars {
            let mut n: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
            n.extend([0, 0]);
            s.extend(VARIABLE_START_ID.to_le_bytes());
            s.extend([*state, 0]);
            s.extend(7u32.to_le_bytes());
            if authenticated {
                s.extend([0u8; 8 + 16 + 4]);
            }
            s.extend((n.len() as u32).to_le_bytes());
            s.extend((data.len() as u32).to_le_bytes());
            s.extend(vendor.0);
            s.extend(&n);
            s.extend(*data);
            s.resize(s.len().next_multiple_of(HEADER_ALIGNMENT), 0xff);
        }
        img[FV_HEADER..FV_HEADER + s.len()].copy_from_slice(&s);
        img
    }
}

#[cfg(test)]
mod tests {
    use super::build::{signature_list, store};
    use super::*;

    const OWNER: Guid = Guid::new(1, 2, 3, [4; 8]);

    #[test]
    fn guids_print_as_the_specifications_write_them() {
        assert_eq!(
            EFI_GLOBAL_VARIABLE.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        assert_eq!(
            EFI_CERT_X509.0[..4],
            [0xa1, 0x59, 0xc0, 0xa5],
            "the first field is little-endian on disk"
        );
    }

    #[test]
    fn the_newest_added_copy_wins_and_deleted_copies_do_not_count() {
        let img = store(
            true,
            &[
                ("BootOrder", EFI_GLOBAL_VARIABLE, VAR_ADDED & 0xfc, b"old"),
                ("Gone", EFI_GLOBAL_VARIABLE, VAR_ADDED & 0xfd, b"x"),
                ("Half", EFI_GLOBAL_VARIABLE, 0x7f, b"header only"),
                ("BootOrder", EFI_GLOBAL_VARIABLE, VAR_ADDED, b"new"),
                ("PK", EFI_GLOBAL_VARIABLE, VAR_ADDED & 0xfe, b"pk"),
            ],
        );
        let s = VarStore::parse(&img).unwrap();
        assert!(s.authenticated);
        assert_eq!(
            s.get("BootOrder", EFI_GLOBAL_VARIABLE).unwrap().data,
            b"new"
        );
        assert!(s.get("Gone", EFI_GLOBAL_VARIABLE).is_none());
        assert!(s.get("Half", EFI_GLOBAL_VARIABLE).is_none());
        // In deletion transition with no successor: still the value.
        assert_eq!(s.get("PK", EFI_GLOBAL_VARIABLE).unwrap().data, b"pk");
        assert!(s.get("PK", EFI_IMAGE_SECURITY_DATABASE).is_none());
        let plain = VarStore::parse(&store(false, &[("X", OWNER, VAR_ADDED, b"1")])).unwrap();
        assert!(!plain.authenticated);
        assert_eq!(plain.get("X", OWNER).unwrap().data, b"1");
    }

    #[test]
    fn erased_foreign_and_truncated_stores_are_refused() {
        assert_eq!(
            VarStore::parse(&[0xff; 4096]),
            Err(StoreError::NotAFirmwareVolume)
        );
        let mut img = store(
            true,
            &[("db", EFI_IMAGE_SECURITY_DATABASE, VAR_ADDED, &[1; 40])],
        );
        let mut foreign = img.clone();
        foreign[72] ^= 1;
        assert!(matches!(
            VarStore::parse(&foreign),
            Err(StoreError::UnknownFormat(_))
        ));
        // DataSize pointing far past the store.
        let data_size_at = 72 + STORE_HEADER_SIZE + 40;
        img[data_size_at..data_size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            VarStore::parse(&img),
            Err(StoreError::Truncated("variable"))
        );
        assert!(VarStore::parse(&img[..60]).is_err());
    }

    #[test]
    fn signature_lists_parse_and_bad_sizes_are_refused() {
        let mut data = signature_list(EFI_CERT_X509, &[(OWNER, b"cert-one")]);
        data.extend(signature_list(
            EFI_CERT_SHA256,
            &[(OWNER, &[1; 32]), (OWNER, &[2; 32])],
        ));
        let lists = signature_lists(&data).unwrap();
        assert_eq!(lists.len(), 2);
        assert_eq!(lists[1].signatures.len(), 2);
        assert_eq!(
            x509_certificates(&lists).collect::<Vec<_>>(),
            vec![&b"cert-one"[..]]
        );
        let mut short = data.clone();
        short.truncate(data.len() - 1);
        assert!(signature_lists(&short).is_err());
        let mut zero = data.clone();
        zero[24..28].copy_from_slice(&0u32.to_le_bytes());
        assert!(signature_lists(&zero).is_err());
        let mut huge = data;
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(signature_lists(&huge).is_err());
    }

    /// Every byte of a store's header and first variables set to values that
    /// matter (0, 0xff, small and large lengths): parsing returns, never panics,
    /// and signature lists cut at every length are refused or parsed.
    #[test]
    fn damaged_stores_and_lists_never_panic() {
        let list = signature_list(EFI_CERT_X509, &[(OWNER, &[0x30; 40])]);
        let img = store(
            true,
            &[
                ("PK", EFI_GLOBAL_VARIABLE, VAR_ADDED, &list),
                ("db", EFI_IMAGE_SECURITY_DATABASE, VAR_ADDED, &list),
            ],
        );
        for at in 0..72 + STORE_HEADER_SIZE + 2 * (AUTH_VARIABLE_HEADER_SIZE + 8 + list.len()) {
            for v in [0x00, 0x01, 0x3f, 0x55, 0x80, 0xaa, 0xff] {
                let mut bad = img.clone();
                bad[at] = v;
                if let Ok(s) = VarStore::parse(&bad) {
                    for var in &s.variables {
                        let _ = signature_lists(&var.data);
                    }
                }
            }
        }
        for cut in 0..list.len() {
            assert!(signature_lists(&list[..cut]).is_err() || cut == 0);
        }
    }

    #[test]
    fn a_non_certificate_has_no_subject() {
        assert_eq!(subject_common_name(b"not DER"), None);
        assert_eq!(sha1_thumbprint(b"abc")[..4], [0xa9, 0x99, 0x3e, 0x36]);
    }
}
