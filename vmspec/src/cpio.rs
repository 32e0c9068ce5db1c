//! The `newc` (SVR4, "070701") cpio format: a strict reader and a small writer.

use alloc::vec::Vec;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// Why an archive was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpioError {
    /// A header does not start with the newc magic, at this byte offset.
    BadMagic(usize),
    /// A header field is not hexadecimal, at this byte offset.
    BadField(usize),
    /// A name or file runs past the end of the archive.
    Truncated(usize),
    /// A name is not UTF-8 or lacks its NUL terminator.
    BadName(usize),
}

/// One member of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn field(h: &[u8], i: usize, at: usize) -> Result<usize, CpioError> {
    let s = core::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).map_err(|_| CpioError::BadField(at))?;
    usize::from_str_radix(s, 16).map_err(|_| CpioError::BadField(at))
}

/// Iterates over the members of `archive` up to the trailer; an archive without
/// its trailer ends in [`CpioError::Truncated`].
pub fn entries(archive: &[u8]) -> impl Iterator<Item = Result<Entry<'_>, CpioError>> {
    let mut pos = 0usize;
    let mut done = false;
    core::iter::from_fn(move || {
        if done {
            return None;
        }
        if pos >= archive.len() {
            // The archive ended without its trailer: it was cut short.
            done = true;
            return Some(Err(CpioError::Truncated(pos)));
        }
        let r = (|| {
            let at = pos;
            let h = archive
                .get(at..at + HEADER_LEN)
                .ok_or(CpioError::Truncated(at))?;
            if &h[..6] != MAGIC {
                return Err(CpioError::BadMagic(at));
            }
            let mode = field(h, 1, at)? as u32;
            let filesize = field(h, 6, at)?;
            let namesize = field(h, 11, at)?;
            let name_end = (at + HEADER_LEN)
                .checked_add(namesize)
                .ok_or(CpioError::Truncated(at))?;
            let name = archive
                .get(at + HEADER_LEN..name_end)
                .ok_or(CpioError::Truncated(at))?;
            let name = name.strip_suffix(&[0]).ok_or(CpioError::BadName(at))?;
            let name = core::str::from_utf8(name).map_err(|_| CpioError::BadName(at))?;
            let data_start = align4(name_end);
            let data_end = data_start
                .checked_add(filesize)
                .ok_or(CpioError::Truncated(at))?;
            let data = archive
                .get(data_start..data_end)
                .ok_or(CpioError::Truncated(at))?;
            pos = align4(data_end);
            Ok(Entry { name, mode, data })
        })();
        match r {
            Ok(e) if e.name == TRAILER => {
                done = true;
                None
            }
            Ok(e) => Some(Ok(e)),
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    })
}

/// Builds a newc archive of regular files.
pub struct Writer {
    out: Vec<u8>,
    ino: u32,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: usize) {
        use core::fmt::Write;
        let mut h = alloc::string::String::new();
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        h.push_str("070701");
        for f in fields {
            let _ = write!(h, "{f:08x}");
        }
        self.ino += 1;
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds a regular file (mode 0644).
    pub fn add(&mut self, name: &str, data: &[u8]) {
        self.header(name, 0o100644, data.len());
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(TRAILER, 0, 0);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads() {
        let mut w = Writer::new();
        w.add("a", b"12345");
        w.add("dir-less-name.txt", b"");
        let a = w.finish();
        let got: Vec<_> = entries(&a).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].name, got[0].data), ("a", &b"12345"[..]));
        assert_eq!(got[1].name, "dir-less-name.txt");
        assert_eq!(got[0].mode, 0o100644);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut w = Writer::new();
        w.add("kernel", &[7u8; 37]);
        let a = w.finish();
        for cut in 1..a.len() {
            let r: Result<Vec<_>, _> = entries(&a[..cut]).collect();
            assert!(r.is_err(), "cut at {cut} parsed");
        }
        let mut bad = a.clone();
        bad[0] = b'1';
        assert_eq!(entries(&bad).next(), Some(Err(CpioError::BadMagic(0))));
        let mut bad = a;
        bad[60] = b'z';
        assert!(matches!(
            entries(&bad).next(),
            Some(Err(CpioError::BadField(0)))
        ));
    }
}
