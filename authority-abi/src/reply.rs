//! The REPLY record (ABI minor 1): the text result of the session's most recent
//! call, or why it failed, so the caller can show exactly what the hypervisor's
//! monitor would have shown.
//!
//! Layout, little-endian: `kind: u32, state: u32, count: u32, reserved: u32 (0)`,
//! then `count` items of `number: u64, len: u16, len bytes of UTF-8 text`.
//!
//! `kind` 0 is success; the others name the failure ([`ErrorKind`]) and fix what
//! the items are. `state` is a [`VmState`] for the kinds that name one (else 0).
//! What the items of a successful call are is the call's (see the call table):
//!
//! | call            | items                                                |
//! |-----------------|------------------------------------------------------|
//! | VM_SUSPEND      | (bytes written, "")                                  |
//! | VM_SNAPSHOT     | (bytes, note)                                        |
//! | VM_SNAPSHOTS    | per snapshot: (bytes, tag), (store: 0 memory 1 disk, note) |
//! | HOST_SHUTDOWN   | per VM: (0 powered off / 1 suspended, name)          |
//! | DISPLAY_STATUS  | (0, status text)                                     |
//! | INPUT_ACTION, SET_INPUT | (0, what became of the events / the routing)  |
//! | anything else   | none                                                 |

use crate::call::VmState;

/// Bytes before the first item.
pub const HEADER_SIZE: usize = 16;
/// Longest item text.
pub const ITEM_TEXT_MAX: usize = 1024;

/// Why a call failed (a REPLY's `kind`), with its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorKind {
    /// Items: (0, vm).
    NoSuchVm = 1,
    /// Items: (0, vm).
    AlreadyPaused = 2,
    /// Items: (0, vm); `state` set.
    NotPaused = 3,
    /// Items: (0, vm); `state` set.
    NotRunning = 4,
    /// Items: (0, vm), (0, tag).
    NoSuchSnapshot = 5,
    /// Items: (0, vm), (0, tag).
    SnapshotExists = 6,
    /// Items: (0, what), (0, why).
    Unsupported = 7,
    /// Items: (0, vm), (0, what).
    Timeout = 8,
    /// Items: (0, vm), (0, why).
    Failed = 9,
    /// Items: (0, vm), (0, why).
    Invalid = 10,
    /// The call was refused before it reached the VM (x0's status says why);
    /// no items.
    Refused = 11,
}

impl ErrorKind {
    const ALL: [ErrorKind; 11] = [
        ErrorKind::NoSuchVm,
        ErrorKind::AlreadyPaused,
        ErrorKind::NotPaused,
        ErrorKind::NotRunning,
        ErrorKind::NoSuchSnapshot,
        ErrorKind::SnapshotExists,
        ErrorKind::Unsupported,
        ErrorKind::Timeout,
        ErrorKind::Failed,
        ErrorKind::Invalid,
        ErrorKind::Refused,
    ];

    pub fn from_u32(v: u32) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }
}

/// Writes a record into `out` if it fits, and answers its length either way.
/// Texts longer than [`ITEM_TEXT_MAX`] are cut (at a character boundary).
pub fn encode<'a>(
    kind: u32,
    state: u32,
    items: impl Iterator<Item = (u64, &'a str)> + Clone,
    out: &mut [u8],
) -> usize {
    let cut = |t: &'a str| {
        let mut end = t.len().min(ITEM_TEXT_MAX);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        &t[..end]
    };
    let len = HEADER_SIZE + items.clone().map(|(_, t)| 10 + cut(t).len()).sum::<usize>();
    if len > out.len() {
        return len;
    }
    let count = items.clone().count() as u32;
    out[..HEADER_SIZE].fill(0);
    out[0..4].copy_from_slice(&kind.to_le_bytes());
    out[4..8].copy_from_slice(&state.to_le_bytes());
    out[8..12].copy_from_slice(&count.to_le_bytes());
    let mut at = HEADER_SIZE;
    for (n, t) in items {
        let t = cut(t);
        out[at..at + 8].copy_from_slice(&n.to_le_bytes());
        out[at + 8..at + 10].copy_from_slice(&(t.len() as u16).to_le_bytes());
        out[at + 10..at + 10 + t.len()].copy_from_slice(t.as_bytes());
        at += 10 + t.len();
    }
    len
}

/// A record as the caller reads it back; [`Record::parse`] checks it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u32,
    pub state: u32,
    count: u32,
    items: &'a [u8],
}

impl<'a> Record<'a> {
    /// `None` for anything [`encode`] does not write.
    pub fn parse(b: &'a [u8]) -> Option<Record<'a>> {
        if b.len() < HEADER_SIZE || b[12..16] != [0; 4] {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let r = Record {
            kind: u(0),
            state: u(4),
            count: u(8),
            items: &b[HEADER_SIZE..],
        };
        let mut n = 0u32;
        let mut it = r.raw();
        loop {
            match it.next() {
                Some(Some(_)) => n += 1,
                Some(None) => return None,
                None => break,
            }
        }
        if n != r.count || it.rest != 0 {
            return None;
        }
        Some(r)
    }

    fn raw(&self) -> Raw<'a> {
        Raw {
            b: self.items,
            at: 0,
            left: self.count,
            rest: 0,
        }
    }

    /// The items, in order.
    pub fn items(&self) -> impl Iterator<Item = (u64, &'a str)> {
        self.raw().map_while(|i| i)
    }

    /// Item `i`'s text, or "" when there is none.
    pub fn text(&self, i: usize) -> &'a str {
        self.items().nth(i).map_or("", |(_, t)| t)
    }

    /// `state` as a VM state.
    pub fn vm_state(&self) -> Option<VmState> {
        VmState::from_u32(self.state)
    }
}

struct Raw<'a> {
    b: &'a [u8],
    at: usize,
    left: u32,
    /// Bytes after the last item (set when the items are exhausted).
    rest: usize,
}

impl<'a> Iterator for Raw<'a> {
    /// `Some(None)`: a malformed item.
    type Item = Option<(u64, &'a str)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            self.rest = self.b.len() - self.at;
            return None;
        }
        self.left -= 1;
        let b = self.b.get(self.at..)?;
        if b.len() < 10 {
            self.left = 0;
            return Some(None);
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[..8]);
        let len = u16::from_le_bytes([b[8], b[9]]) as usize;
        let Some(t) = b
            .get(10..10 + len)
            .and_then(|t| core::str::from_utf8(t).ok())
        else {
            self.left = 0;
            return Some(None);
        };
        if len > ITEM_TEXT_MAX {
            self.left = 0;
            return Some(None);
        }
        self.at += 10 + len;
        Some(Some((u64::from_le_bytes(n), t)))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_and_a_short_buffer_gets_the_length_only() {
        let items = [(7u64, "linux"), (1, "disk log 0 of 4 KiB used"), (0, "")];
        let mut out = [0xaau8; 128];
        let len = encode(9, 2, items.iter().copied(), &mut out);
        assert_eq!(len, HEADER_SIZE + 3 * 10 + 5 + 24);
        let r = Record::parse(&out[..len]).unwrap();
        assert_eq!((r.kind, r.state), (9, 2));
        assert_eq!(r.vm_state(), Some(VmState::Paused));
        assert!(r.items().eq(items.iter().copied()));
        assert_eq!(r.text(1), "disk log 0 of 4 KiB used");
        assert_eq!(r.text(5), "");
        let mut small = [0xaau8; 20];
        assert_eq!(encode(9, 2, items.iter().copied(), &mut small), len);
        assert_eq!(small, [0xaa; 20], "nothing written");
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "é".repeat(ITEM_TEXT_MAX);
        let mut out = [0u8; 2048];
        let len = encode(0, 0, [(0, long.as_str())].into_iter(), &mut out);
        let r = Record::parse(&out[..len]).unwrap();
        assert_eq!(r.text(0).len(), ITEM_TEXT_MAX);
        assert!(long.starts_with(r.text(0)));
    }

    #[test]
    fn malformed_records_are_refused() {
        let mut out = [0u8; 64];
        let len = encode(0, 0, [(1, "abc")].into_iter(), &mut out);
        assert!(Record::parse(&out[..len]).is_some());
        assert!(Record::parse(&out[..len - 1]).is_none(), "cut short");
        assert!(Record::parse(&out[..len + 1]).is_none(), "trailing byte");
        let mut bad = out;
        bad[8] = 2; // count
        assert!(Record::parse(&bad[..len]).is_none());
        let mut bad = out;
        bad[12] = 1; // reserved
        assert!(Record::parse(&bad[..len]).is_none());
        let mut bad = out;
        bad[HEADER_SIZE + 10] = 0xff; // not UTF-8
        assert!(Record::parse(&bad[..len]).is_none());
        assert!(Record::parse(&out[..8]).is_none());
    }

    #[test]
    fn error_kinds_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(ErrorKind::from_u32(0), None);
        assert_eq!(ErrorKind::from_u32(12), None);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(r) = Record::parse(&b) {
                let items: std::vec::Vec<_> = r.items().collect();
                prop_assert_eq!(items.len() as u32, r.count);
            }
        }
    }
}
