//! Host simulator (feature `std`): serves the engine over the Microsoft TPM 2.0
//! simulator TCP protocol that tpm2-tss's `mssim` TCTI speaks, with the NV image
//! in a file, so `tpm2_* -T mssim:port=N` drives this TPM.
//!
//! Command port N: `TPM_SEND_COMMAND` (8) + locality byte + u32 length + command,
//! answered by u32 length + response + u32 0; `TPM_REMOTE_HANDSHAKE` (15);
//! `TPM_SESSION_END` (20) closes the connection; `TPM_STOP` (21) stops the server.
//! Platform port N+1: power, NV, cancel, physical-presence, reset signals, each
//! answered by u32 0.

use crate::drbg::Entropy;
use crate::engine::{TimeSource, Tpm};
use crate::nv::{NvError, NvStore};
use std::boxed::Box;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::vec::Vec;

/// Microsoft simulator protocol command codes.
pub mod mssim {
    pub const SIGNAL_POWER_ON: u32 = 1;
    pub const SIGNAL_POWER_OFF: u32 = 2;
    pub const SIGNAL_PHYS_PRES_ON: u32 = 3;
    pub const SIGNAL_PHYS_PRES_OFF: u32 = 4;
    pub const SIGNAL_HASH_START: u32 = 5;
    pub const SIGNAL_HASH_DATA: u32 = 6;
    pub const SIGNAL_HASH_END: u32 = 7;
    pub const SEND_COMMAND: u32 = 8;
    pub const SIGNAL_CANCEL_ON: u32 = 9;
    pub const SIGNAL_CANCEL_OFF: u32 = 10;
    pub const SIGNAL_NV_ON: u32 = 11;
    pub const SIGNAL_NV_OFF: u32 = 12;
    pub const SIGNAL_KEY_CACHE_ON: u32 = 13;
    pub const SIGNAL_KEY_CACHE_OFF: u32 = 14;
    pub const REMOTE_HANDSHAKE: u32 = 15;
    pub const SIGNAL_RESET: u32 = 17;
    pub const SIGNAL_RESTART: u32 = 18;
    pub const SESSION_END: u32 = 20;
    pub const STOP: u32 = 21;
    pub const TEST_FAILURE_MODE: u32 = 30;
    /// Protocol version answered to REMOTE_HANDSHAKE.
    pub const SERVER_VERSION: u32 = 1;
    /// Handshake flags: platform available, no TBS, not in RAW mode, PP not needed.
    pub const HANDSHAKE_FLAGS: u32 = 1;
    /// Largest command accepted on the wire.
    pub const MAX_WIRE_COMMAND: u32 = 1 << 16;
}

/// File-backed [`NvStore`]: `vtpm-nv.bin` in a directory, replaced atomically
/// (write a temporary file, sync, rename).
pub struct FileNvStore {
    path: PathBuf,
}

impl FileNvStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("vtpm-nv.bin"),
        }
    }
}

impl NvStore for FileNvStore {
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(NvError::Unavailable),
        }
    }
    fn store(&mut self, image: &[u8]) -> Result<(), NvError> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(image)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|_| NvError::Unavailable)
    }
}

/// Entropy from the host kernel.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let ok = fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .is_ok();
        if !ok {
            // No kernel RNG: fall back to clock jitter mixed by the DRBG.
            let t = Instant::now();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (t.elapsed().as_nanos() as u8).wrapping_add(i as u8);
            }
        }
    }
}

/// Monotonic host time.
pub struct HostTime(Instant);

impl TimeSource for HostTime {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

struct Sim {
    tpm: Tpm,
    powered: bool,
}

fn read_u32(s: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn nv_error(e: NvError) -> io::Error {
    io::Error::other(format!("vtpm NV image: {e:?}"))
}

/// Runs the simulator on 127.0.0.1 ports `port` (commands) and `port + 1`
/// (platform) with its NV image in `state_dir`, until a client sends TPM_STOP.
pub fn run_simulator(port: u16, state_dir: &Path) -> io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let platform_port = port
        .checked_add(1)
        .ok_or_else(|| io::Error::other("port + 1 overflows"))?;
    let tpm = Tpm::new(
        Box::new(OsEntropy),
        Box::new(HostTime(Instant::now())),
        Box::new(FileNvStore::new(state_dir)),
    )
    .map_err(nv_error)?;
    let cmd_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let plat_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, platform_port))?;
    let sim = Arc::new(Mutex::new(Sim {
        tpm,
        powered: false,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let wake = move || {
        for p in [port, platform_port] {
            let _ = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
        }
    };
    let plat = {
        let (sim, stop) = (sim.clone(), stop.clone());
        std::thread::spawn(move || serve(plat_listener, &sim, &stop, wake, platform_session))
    };
    let r = serve(cmd_listener, &sim, &stop, wake, command_session);
    stop.store(true, Ordering::SeqCst);
    wake();
    let _ = plat.join();
    r
}

type Session = fn(&mut TcpStream, &Mutex<Sim>) -> io::Result<bool>;

/// Accepts connections one at a time until `stop`; a session returning `true`
/// asked the server to stop.
fn serve(
    l: TcpListener,
    sim: &Mutex<Sim>,
    stop: &AtomicBool,
    wake: impl Fn(),
    session: Session,
) -> io::Result<()> {
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut s) = conn else { continue };
        let _ = s.set_nodelay(true);
        match session(&mut s, sim) {
            Ok(true) => {
                stop.store(true, Ordering::SeqCst);
                wake();
                break;
            }
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => log::warn!("vtpm-sim: connection ended: {e}"),
        }
    }
    Ok(())
}

fn lock(sim: &Mutex<Sim>) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(|p| p.into_inner())
}

fn command_session(s: &mut TcpStream, sim: &Mutex<Sim>) -> io::Result<bool> {
    // Requests arrive as several small fields: read them through a buffer so a
    // command costs one read system call, not four; the command and the framed
    // response go through buffers kept for the whole connection, so a command
    // costs one read and one write and no per-command buffer allocation.
    let mut rd = io::BufReader::new(s.try_clone()?);
    let mut cmd = Vec::new();
    let mut out = Vec::new();
    loop {
        match read_u32(&mut rd)? {
            mssim::SEND_COMMAND => {
                let mut loc = [0u8; 1];
                rd.read_exact(&mut loc)?;
                let len = read_u32(&mut rd)?;
                if len > mssim::MAX_WIRE_COMMAND {
                    return Err(io::Error::other("command too large for the wire protocol"));
                }
                cmd.resize(len as usize, 0);
                rd.read_exact(&mut cmd)?;
                let rsp = {
                    let mut g = lock(sim);
                    if g.powered {
                        g.tpm.execute(loc[0], &cmd)
                    } else {
                        Vec::new()
                    }
                };
                out.clear();
                out.extend_from_slice(&(rsp.len() as u32).to_be_bytes());
                out.extend_from_slice(&rsp);
                out.extend_from_slice(&0u32.to_be_bytes());
                s.write_all(&out)?;
            }
            mssim::REMOTE_HANDSHAKE => {
                let _client_version = read_u32(&mut rd)?;
                out.clear();
                for v in [mssim::SERVER_VERSION, mssim::HANDSHAKE_FLAGS, 0] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                s.write_all(&out)?;
            }
            mssim::SESSION_END => return Ok(false),
            mssim::STOP => return Ok(true),
            other => {
                log::warn!("vtpm-sim: unknown command-port request {other}");
                return Ok(false);
            }
        }
    }
}

fn platform_session(s: &mut TcpStream, sim: &Mutex<Sim>) -> io::Result<bool> {
    loop {
        let req = read_u32(s)?;
        {
            let mut g = lock(sim);
            match req {
                mssim::SIGNAL_POWER_ON => {
                    if !g.powered {
                        g.powered = true;
                        g.tpm.init();
                    }
                }
                mssim::SIGNAL_POWER_OFF => g.powered = false,
                mssim::SIGNAL_RESET | mssim::SIGNAL_RESTART => {
                    g.powered = true;
                    g.tpm.init();
                }
                mssim::SIGNAL_HASH_DATA => {
                    let len = read_u32(s)?;
                    if len > mssim::MAX_WIRE_COMMAND {
                        return Err(io::Error::other("hash data too large"));
                    }
                    let mut skip = std::vec![0u8; len as usize];
                    s.read_exact(&mut skip)?;
                }
                mssim::SIGNAL_PHYS_PRES_ON => g.tpm.set_physical_presence(true),
                mssim::SIGNAL_PHYS_PRES_OFF => g.tpm.set_physical_presence(false),
                mssim::SIGNAL_HASH_START
                | mssim::SIGNAL_HASH_END
                | mssim::SIGNAL_CANCEL_ON
                | mssim::SIGNAL_CANCEL_OFF
                | mssim::SIGNAL_NV_ON
                | mssim::SIGNAL_NV_OFF
                | mssim::SIGNAL_KEY_CACHE_ON
                | mssim::SIGNAL_KEY_CACHE_OFF
                | mssim::TEST_FAILURE_MODE => {}
                mssim::SESSION_END => return Ok(false),
                mssim::STOP => return Ok(true),
                other => {
                    log::warn!("vtpm-sim: unknown platform request {other}");
                    return Ok(false);
                }
            }
        }
        s.write_all(&0u32.to_be_bytes())?;
    }
}
