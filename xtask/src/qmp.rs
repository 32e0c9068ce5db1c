//! QEMU's machine protocol (QMP) over the Unix socket `--qmp PATH` (or the one
//! every captured run gets): the capabilities handshake and the commands
//! xtask sends — `screendump` of the physical display, the monitor commands
//! behind a timed-out run's CPU report (hang.rs) — plus a reader for the binary
//! PPM (P6) images it writes.
//!
//! QMP is one JSON object per line; xtask only needs to tell a command's answer
//! (`{"return": …}` or `{"error": …}`) from asynchronous events (`{"event": …}`),
//! which it skips, so it matches on the member name rather than parse JSON.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long to wait for QEMU to create its socket and answer.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The QEMU option that serves QMP on `socket` without waiting for a client.
pub fn qemu_arg(socket: &Path) -> String {
    format!("unix:{},server=on,wait=off", socket.display())
}

/// One QMP connection, after the capabilities handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket` (waiting up to [`TIMEOUT`] for it to appear) and
    /// negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Qmp, String> {
        Qmp::connect_within(socket, TIMEOUT, TIMEOUT)
    }

    /// [`Qmp::connect`] waiting at most `wait` for the socket to accept and
    /// `read_timeout` for each answer (until [`Qmp::set_read_timeout`]).
    pub fn connect_within(
        socket: &Path,
        wait: Duration,
        read_timeout: Duration,
    ) -> Result<Qmp, String> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < wait => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(format!("QMP socket {}: {e}", socket.display())),
            }
        };
        stream
            .set_read_timeout(Some(read_timeout))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", "{}")?;
        Ok(q)
    }

    /// How long each later answer may take (at least a millisecond).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), String> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| format!("QMP read timeout: {e}"))
    }

    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err("QEMU closed the QMP connection".into()),
            Ok(_) => Ok(l),
            Err(e) => Err(format!("QMP read: {e}")),
        }
    }

    /// Runs `command` with `arguments` (a JSON object); returns the answer line.
    pub fn execute(&mut self, command: &str, arguments: &str) -> Result<String, String> {
        let msg = format!("{{\"execute\": \"{command}\", \"arguments\": {arguments}}}\n");
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let l = self.line()?;
            if l.contains("\"return\"") {
                return Ok(l);
            }
            if l.contains("\"error\"") {
                return Err(format!("QMP {command}: {}", l.trim()));
            }
            // An event: not the answer.
        }
    }

    /// Writes the physical display to `file` as a PPM.
    pub fn screendump(&mut self, file: &Path) -> Result<(), String> {
        let path = std::path::absolute(file).map_err(|e| e.to_string())?;
        self.execute(
            "screendump",
            &format!("{{\"filename\": {}}}", json_string(&path.to_string_lossy())),
        )
        .map(|_| ())
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A socket path for a run that needs QMP but was given none: unique per process
/// (QEMU replaces a stale socket file left at the path by an earlier run).
pub fn default_socket(out_dir: &Path) -> PathBuf {
    out_dir.join(format!("qmp-{}.sock", std::process::id()))
}

/// A socket path of its own for one captured run: unique per process and run, so
/// that runs a process makes at the same time never share one.
pub fn run_socket(out_dir: &Path) -> PathBuf {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    out_dir.join(format!("qmp-{}-{n}.sock", std::process::id()))
}

/// An RGB image read from a PPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// `width * height` pixels as 0xRRGGBB, row by row.
    pub pixels: Vec<u32>,
}

impl Image {
    /// Pixel (x, y) as 0xRRGGBB.
    pub fn at(&self, x: u32, y: u32) -> u32 {
        self.pixels[(y * self.width + x) as usize]
    }
}

/// Parses a binary PPM (P6, maxval 255).
pub fn parse_ppm(data: &[u8]) -> Result<Image, String> {
    // Header: "P6", width, height, maxval, separated by whitespace (comments
    // start with '#'), then one whitespace byte and the raster.
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && (data[i].is_ascii_whitespace() || data[i] == b'#') {
            if data[i] == b'#' {
                while i < data.len() && data[i] != b'\n' {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("PPM header ends early".into());
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1;
    if fields[0] != "P6" {
        return Err(format!("not a binary PPM: {}", fields[0]));
    }
    let num = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("bad PPM number `{s}`"))
    };
    let (width, height, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max != 255 {
        return Err(format!("PPM maxval {max}, expected 255"));
    }
    let n = width as usize * height as usize;
    let raster = data.get(i..i + 3 * n).ok_or("PPM raster is short")?;
    let pixels = raster
        .chunks_exact(3)
        .map(|p| (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2]))
        .collect();
    Ok(Image {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_with_comments_parses() {
        let mut data = b"P6\n# made by a test\n3 2\n255\n".to_vec();
        for i in 0..6u8 {
            data.extend([i, 0x10 + i, 0x20 + i]);
        }
        let img = parse_ppm(&data).unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.at(0, 0), 0x00_1020);
        assert_eq!(img.at(2, 1), 0x05_1525);
        assert!(parse_ppm(&data[..data.len() - 1]).is_err());
        assert!(parse_ppm(b"P5\n1 1\n255\n\0").is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn every_run_gets_its_own_socket() {
        let (a, b) = (run_socket(Path::new("/t")), run_socket(Path::new("/t")));
        assert_ne!(a, b);
        assert!(a.starts_with("/t") && a.to_string_lossy().ends_with(".sock"));
    }

    #[test]
    fn the_qemu_option_serves_without_waiting() {
        assert_eq!(
            qemu_arg(Path::new("/t/q.sock")),
            "unix:/t/q.sock,server=on,wait=off"
        );
    }
}
