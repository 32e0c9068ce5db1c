//! A writer for the "newc" (SVR4, no CRC) cpio archive format the Linux kernel
//! unpacks as an initramfs.
//!
//! Every entry is a 110-byte ASCII header (magic `070701` and thirteen 8-digit hex
//! fields), the NUL-terminated path, padding to a 4-byte boundary, then the data,
//! padded again. The archive ends with the entry `TRAILER!!!`. Timestamps and
//! owners are zero so the same inputs always give the same bytes.

use std::io::{self, Write};

/// Magic of a newc header without checksums.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Header length in bytes: the magic and thirteen 8-digit hex fields.
pub const HEADER_LEN: usize = 6 + 13 * 8;
/// Headers, names and file data are aligned to this many bytes.
const ALIGN: usize = 4;

/// File-type bits of `st_mode` (see inode(7)).
pub mod mode {
    /// Mask of the file-type bits.
    #[cfg(test)]
    pub const S_IFMT: u32 = 0o170_000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020_000;
}

/// Streams a newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: usize,
}

/// The header fields of one entry that vary between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive. Inode numbers start at 1 (0 is reserved for the trailer).
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// Adds a directory. Parents must be added before their children.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(Header {
            name: path,
            mode: mode::S_IFDIR | perm,
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// Adds a regular file holding `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(Header {
            name: path,
            mode: mode::S_IFREG | perm,
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(Header {
            name: path,
            mode: mode::S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// Adds a character device node `major:minor`.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(Header {
            name: path,
            mode: mode::S_IFCHR | perm,
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.entry(Header {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, h: Header<'_>) -> io::Result<()> {
        let name = h.name.trim_start_matches('/');
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {:?}", h.name),
            ));
        }
        let filesize = u32::try_from(h.data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is larger than 4 GiB"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino,
            h.mode,
            0,
            0,
            h.nlink,
            0,
            filesize,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 1 + ALIGN);
        header.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        pad(&mut header, self.written);
        self.put(&header)?;
        self.put(h.data)?;
        let mut tail = Vec::new();
        pad(&mut tail, self.written);
        self.put(&tail)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len();
        Ok(())
    }
}

/// Appends NULs to `buf` so that `already + buf.len()` becomes a multiple of [`ALIGN`].
fn pad(buf: &mut Vec<u8>, already: usize) {
    while !(already + buf.len()).is_multiple_of(ALIGN) {
        buf.push(0);
    }
}

/// A parser for what [`CpioWriter`] writes, used by the tests to check archives.
#[cfg(test)]
pub mod parse {
    use super::{ALIGN, HEADER_LEN, NEWC_MAGIC, TRAILER};

    /// One parsed entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        pub ino: u32,
        pub name: String,
        pub mode: u32,
        pub nlink: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    fn align(x: usize) -> usize {
        x.div_ceil(ALIGN) * ALIGN
    }

    /// Parses a whole archive up to its trailer.
    pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            let h = bytes.get(pos..pos + HEADER_LEN).ok_or("truncated header")?;
            if &h[..6] != NEWC_MAGIC {
                return Err(format!("bad magic at {pos}"));
            }
            let field = |i: usize| -> Result<u32, String> {
                let s = std::str::from_utf8(&h[6 + i * 8..6 + (i + 1) * 8])
                    .map_err(|e| e.to_string())?;
                u32::from_str_radix(s, 16).map_err(|e| e.to_string())
            };
            let namesize = field(11)? as usize;
            let filesize = field(6)? as usize;
            let name_start = pos + HEADER_LEN;
            let name_bytes = bytes
                .get(name_start..name_start + namesize)
                .ok_or("truncated name")?;
            if name_bytes.last() != Some(&0) {
                return Err("name not NUL-terminated".into());
            }
            let name = String::from_utf8(name_bytes[..namesize - 1].to_vec())
                .map_err(|e| e.to_string())?;
            let data_start = align(name_start + namesize);
            let data = bytes
                .get(data_start..data_start + filesize)
                .ok_or("truncated data")?
                .to_vec();
            pos = align(data_start + filesize);
            if name == TRAILER {
                if pos != bytes.len() {
                    return Err(format!("{} bytes after trailer", bytes.len() - pos));
                }
                return Ok(out);
            }
            out.push(Entry {
                ino: field(0)?,
                name,
                mode: field(1)?,
                nlink: field(4)?,
                rdev: (field(9)?, field(10)?),
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::parse;
    use super::*;

    #[test]
    fn writes_entries_that_parse_back() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/busybox", 0o755, b"\x7fELF not really")
            .unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        w.file("empty", 0o644, b"").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % ALIGN, 0);
        let e = parse(&bytes).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "empty"
            ]
        );
        assert_eq!(e[0].mode, mode::S_IFDIR | 0o755);
        assert_eq!(e[1].mode, mode::S_IFREG | 0o755);
        assert_eq!(e[1].data, b"\x7fELF not really");
        assert_eq!(e[2].mode & mode::S_IFMT, mode::S_IFLNK);
        assert_eq!(e[2].data, b"busybox");
        assert_eq!(e[4].mode, mode::S_IFCHR | 0o600);
        assert_eq!(e[4].rdev, (5, 1));
        assert!(e[5].data.is_empty());
        let mut inos: Vec<_> = e.iter().map(|e| e.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), e.len(), "inode numbers must be unique");
    }

    #[test]
    fn every_name_length_pads_correctly() {
        // Names of each length modulo 4 and data of each length modulo 4.
        let mut w = CpioWriter::new(Vec::new());
        let names = ["a", "ab", "abc", "abcd", "abcde"];
        for (i, n) in names.iter().enumerate() {
            w.file(n, 0o644, &vec![b'x'; i]).unwrap();
        }
        let bytes = w.finish().unwrap();
        let e = parse(&bytes).unwrap();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(e[i].name, *n);
            assert_eq!(e[i].data.len(), i);
        }
    }

    #[test]
    fn header_is_ascii_newc() {
        let bytes = CpioWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(&bytes[..6], b"070701");
        assert!(bytes[..HEADER_LEN].iter().all(u8::is_ascii_hexdigit));
        assert_eq!(
            &bytes[HEADER_LEN..HEADER_LEN + TRAILER.len()],
            TRAILER.as_bytes()
        );
        assert!(parse(&bytes).unwrap().is_empty());
    }

    #[test]
    fn rejects_empty_and_nul_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/", 0o644, b"").is_err());
        assert!(w.file("a\0b", 0o644, b"").is_err());
    }
}
