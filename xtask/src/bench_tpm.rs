//! `cargo xtask bench tpm`: TPM command throughput of the vTPM engine (the
//! `vtpm-sim` binary, built `--release`) against swtpm (libtpms), both driven in
//! the same run by the same Rust client over loopback TCP (the Microsoft
//! simulator framing for vtpm-sim, bare commands for swtpm's data socket), so
//! neither process spawning nor client differences enter the figures.
//!
//! Operations: GetRandom(32); PCR_Extend(SHA-256) of PCR 16 with a password
//! session; CreatePrimary(ECC P-256 signing key under the owner hierarchy, then
//! FlushContext); Sign(ECDSA P-256, SHA-256 digest) with such a primary; and
//! Hash(4 KiB) as HashSequenceStart + 4 × SequenceUpdate(1 KiB) +
//! SequenceComplete. After a warm-up each operation is timed in [`ROUNDS`]
//! interleaved rounds of [`ROUND_TIME`] per TPM (alternating which goes first)
//! and the ratio is the median of the per-round ratios (each vtpm round over
//! the swtpm round next to it), so load from elsewhere on the machine hits
//! both alike; ratios are vtpm ops/s over swtpm ops/s (≥ 1.0 means the vTPM is
//! at least as fast). The table also shows each TPM's median ops/s. An operation a TPM does not implement is reported as
//! unsupported, not timed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::Layout;

/// Interleaved timing rounds per operation and TPM, and the length of each.
/// Many short rounds rather than a few long ones: on a shared machine the
/// load changes within a second, and the ratio is taken round by round.
pub const ROUNDS: usize = 21;
pub const ROUND_TIME: Duration = Duration::from_millis(80);
/// Untimed runs before timing.
pub const WARMUP: u32 = 3;
/// TPM_RC_RETRY and how often a command is resent after it.
const RC_RETRY: u32 = 0x0922;
const MAX_RETRIES: u32 = 5;
/// How long a server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const RH_OWNER: u32 = 0x4000_0001;
const RH_NULL: u32 = 0x4000_0007;
const RS_PW: u32 = 0x4000_0009;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_ECC: u16 = 0x0023;
const ALG_ECDSA: u16 = 0x0018;
const ECC_NIST_P256: u16 = 0x0003;
const ST_HASHCHECK: u16 = 0x8024;
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign.
const SIGNING_KEY_ATTRS: u32 = 0x0004_0072;

mod cc {
    pub const CREATE_PRIMARY: u32 = 0x0131;
    pub const SEQUENCE_COMPLETE: u32 = 0x013E;
    pub const STARTUP: u32 = 0x0144;
    pub const SEQUENCE_UPDATE: u32 = 0x015C;
    pub const SIGN: u32 = 0x015D;
    pub const FLUSH_CONTEXT: u32 = 0x0165;
    pub const GET_RANDOM: u32 = 0x017B;
    pub const PCR_EXTEND: u32 = 0x0182;
    pub const HASH_SEQUENCE_START: u32 = 0x0186;
}

/// A command: tag, size, code, handles, optional password session, parameters.
fn command(code: u32, handles: &[u32], pw_session: bool, params: &[u8]) -> Vec<u8> {
    let tag = if pw_session {
        ST_SESSIONS
    } else {
        ST_NO_SESSIONS
    };
    let mut v = tag.to_be_bytes().to_vec();
    v.extend([0; 4]);
    v.extend(code.to_be_bytes());
    for h in handles {
        v.extend(h.to_be_bytes());
    }
    if pw_session {
        // TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, continueSession, empty password.
        v.extend(9u32.to_be_bytes());
        v.extend(RS_PW.to_be_bytes());
        v.extend([0, 0, 1, 0, 0]);
    }
    v.extend(params);
    let n = v.len() as u32;
    v[2..6].copy_from_slice(&n.to_be_bytes());
    v
}

fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend(b);
    v
}

fn response_code(r: &[u8]) -> u32 {
    r.get(6..10)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(u32::MAX)
}

/// The handle a TPMA_CC.rHandle command returned.
fn response_handle(r: &[u8]) -> Option<u32> {
    let b = r.get(10..14)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// CreatePrimary(owner, ECC P-256 ECDSA-SHA256 signing key).
fn create_primary_ecc() -> Vec<u8> {
    let mut public = Vec::new();
    public.extend(ALG_ECC.to_be_bytes());
    public.extend(ALG_SHA256.to_be_bytes());
    public.extend(SIGNING_KEY_ATTRS.to_be_bytes());
    public.extend(tpm2b(&[])); // authPolicy
    public.extend(ALG_NULL.to_be_bytes()); // symmetric
    public.extend(ALG_ECDSA.to_be_bytes());
    public.extend(ALG_SHA256.to_be_bytes());
    public.extend(ECC_NIST_P256.to_be_bytes());
    public.extend(ALG_NULL.to_be_bytes()); // kdf
    public.extend(tpm2b(&[])); // unique.x
    public.extend(tpm2b(&[])); // unique.y
    let mut p = Vec::new();
    p.extend(tpm2b(&[0, 0, 0, 0])); // inSensitive: empty userAuth and data
    p.extend(tpm2b(&public));
    p.extend(tpm2b(&[])); // outsideInfo
    p.extend(0u32.to_be_bytes()); // creationPCR
    command(cc::CREATE_PRIMARY, &[RH_OWNER], true, &p)
}

fn sign_ecdsa(key: u32) -> Vec<u8> {
    let mut p = tpm2b(&[0x5A; 32]);
    p.extend(ALG_ECDSA.to_be_bytes());
    p.extend(ALG_SHA256.to_be_bytes());
    p.extend(ST_HASHCHECK.to_be_bytes());
    p.extend(RH_NULL.to_be_bytes());
    p.extend(tpm2b(&[]));
    command(cc::SIGN, &[key], true, &p)
}

fn flush(h: u32) -> Vec<u8> {
    command(cc::FLUSH_CONTEXT, &[], false, &h.to_be_bytes())
}

/// One TPM reached over TCP. Responses are read through a buffer (one read
/// system call per response for either framing), so the client costs both
/// TPMs the same.
struct Client {
    stream: TcpStream,
    reader: std::io::BufReader<TcpStream>,
    /// Microsoft simulator framing (TPM_SEND_COMMAND) rather than bare commands.
    mssim: bool,
}

impl Client {
    fn connect(port: u16, mssim: bool) -> Result<Self, Error> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| Error::io(format!("connect to TPM on port {port}"), e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| Error::io("socket timeout", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("socket nodelay", e))?;
        let reader = std::io::BufReader::new(
            stream
                .try_clone()
                .map_err(|e| Error::io("clone socket", e))?,
        );
        Ok(Self {
            stream,
            reader,
            mssim,
        })
    }

    /// Runs `cmd`, resending it while the TPM answers TPM_RC_RETRY (as TSS
    /// stacks do: libtpms asks once when it first records DA use).
    fn exec(&mut self, cmd: &[u8]) -> Result<Vec<u8>, Error> {
        let mut r = self.exec_once(cmd)?;
        for _ in 0..MAX_RETRIES {
            if response_code(&r) != RC_RETRY {
                break;
            }
            r = self.exec_once(cmd)?;
        }
        Ok(r)
    }

    fn exec_once(&mut self, cmd: &[u8]) -> Result<Vec<u8>, Error> {
        let io = |e| Error::io("TPM command round trip", e);
        if self.mssim {
            let mut m = Vec::with_capacity(cmd.len() + 9);
            m.extend(8u32.to_be_bytes()); // TPM_SEND_COMMAND
            m.push(0); // locality
            m.extend((cmd.len() as u32).to_be_bytes());
            m.extend(cmd);
            self.stream.write_all(&m).map_err(io)?;
            let mut len = [0u8; 4];
            self.reader.read_exact(&mut len).map_err(io)?;
            let mut rsp = vec![0u8; u32::from_be_bytes(len) as usize];
            self.reader.read_exact(&mut rsp).map_err(io)?;
            let mut ack = [0u8; 4];
            self.reader.read_exact(&mut ack).map_err(io)?;
            Ok(rsp)
        } else {
            self.stream.write_all(cmd).map_err(io)?;
            let mut hdr = [0u8; 10];
            self.reader.read_exact(&mut hdr).map_err(io)?;
            let len = u32::from_be_bytes([hdr[2], hdr[3], hdr[4], hdr[5]]) as usize;
            if !(10..=65536).contains(&len) {
                return Err(Error::step("tpm bench", format!("bad response size {len}")));
            }
            let mut rsp = hdr.to_vec();
            rsp.resize(len, 0);
            self.reader.read_exact(&mut rsp[10..]).map_err(io)?;
            Ok(rsp)
        }
    }

    /// Runs `cmd`, requiring TPM_RC_SUCCESS.
    fn ok(&mut self, what: &str, cmd: &[u8]) -> Result<Vec<u8>, Error> {
        let r = self.exec(cmd)?;
        match response_code(&r) {
            0 => Ok(r),
            rc => Err(Error::step("tpm bench", format!("{what}: rc {rc:#x}"))),
        }
    }
}

/// The benchmarked operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    GetRandom32,
    PcrExtendSha256,
    CreatePrimaryEccP256,
    SignEcdsaP256,
    Hash4KiB,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::GetRandom32,
        Op::PcrExtendSha256,
        Op::CreatePrimaryEccP256,
        Op::SignEcdsaP256,
        Op::Hash4KiB,
    ];

    /// The key of this operation in the headline line.
    pub fn key(self) -> &'static str {
        match self {
            Op::GetRandom32 => "getrandom32",
            Op::PcrExtendSha256 => "pcr_extend_sha256",
            Op::CreatePrimaryEccP256 => "createprimary_ecc_p256",
            Op::SignEcdsaP256 => "sign_ecdsa_p256",
            Op::Hash4KiB => "hash_4kib",
        }
    }
}

/// State an operation needs across iterations (the signing key).
struct Prepared {
    key: Option<u32>,
}

/// TPM_RC_COMMAND_CODE: the TPM does not implement the command.
const RC_COMMAND_CODE: u32 = 0x0143;

/// Runs `cmd` once to see whether the TPM implements it: `Ok(None)` if it
/// answers TPM_RC_COMMAND_CODE, the response on success, an error otherwise.
fn probe(c: &mut Client, what: &str, cmd: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let r = c.exec(cmd)?;
    match response_code(&r) {
        0 => Ok(Some(r)),
        RC_COMMAND_CODE => Ok(None),
        rc => Err(Error::step("tpm bench", format!("{what}: rc {rc:#x}"))),
    }
}

/// Sets `op` up on `c`; `Ok(None)` when the TPM does not implement it.
fn prepare(c: &mut Client, op: Op) -> Result<Option<Prepared>, Error> {
    let none = Prepared { key: None };
    match op {
        Op::GetRandom32 | Op::PcrExtendSha256 => Ok(Some(none)),
        Op::CreatePrimaryEccP256 | Op::SignEcdsaP256 => {
            let Some(r) = probe(c, "CreatePrimary", &create_primary_ecc())? else {
                return Ok(None);
            };
            let key = response_handle(&r).unwrap_or(0);
            if op == Op::CreatePrimaryEccP256 {
                c.ok("FlushContext", &flush(key))?;
                return Ok(Some(none));
            }
            if probe(c, "Sign", &sign_ecdsa(key))?.is_none() {
                c.ok("FlushContext", &flush(key))?;
                return Ok(None);
            }
            Ok(Some(Prepared { key: Some(key) }))
        }
        Op::Hash4KiB => {
            let mut start = tpm2b(&[]);
            start.extend(ALG_SHA256.to_be_bytes());
            let cmd = command(cc::HASH_SEQUENCE_START, &[], false, &start);
            let Some(r) = probe(c, "HashSequenceStart", &cmd)? else {
                return Ok(None);
            };
            c.ok("FlushContext", &flush(response_handle(&r).unwrap_or(0)))?;
            Ok(Some(none))
        }
    }
}

/// One operation.
fn once(c: &mut Client, op: Op, p: &Prepared) -> Result<(), Error> {
    match op {
        Op::GetRandom32 => {
            c.ok(
                "GetRandom",
                &command(cc::GET_RANDOM, &[], false, &32u16.to_be_bytes()),
            )?;
        }
        Op::PcrExtendSha256 => {
            let mut v = 1u32.to_be_bytes().to_vec();
            v.extend(ALG_SHA256.to_be_bytes());
            v.extend([0xA5; 32]);
            c.ok("PCR_Extend", &command(cc::PCR_EXTEND, &[16], true, &v))?;
        }
        Op::CreatePrimaryEccP256 => {
            let r = c.ok("CreatePrimary", &create_primary_ecc())?;
            let h = response_handle(&r).unwrap_or(0);
            c.ok("FlushContext", &flush(h))?;
        }
        Op::SignEcdsaP256 => {
            c.ok("Sign", &sign_ecdsa(p.key.unwrap_or(0)))?;
        }
        Op::Hash4KiB => {
            let mut start = tpm2b(&[]);
            start.extend(ALG_SHA256.to_be_bytes());
            let r = c.ok(
                "HashSequenceStart",
                &command(cc::HASH_SEQUENCE_START, &[], false, &start),
            )?;
            let h = response_handle(&r).unwrap_or(0);
            let chunk = tpm2b(&[0x3C; 1024]);
            for _ in 0..4 {
                c.ok(
                    "SequenceUpdate",
                    &command(cc::SEQUENCE_UPDATE, &[h], true, &chunk),
                )?;
            }
            let mut fin = tpm2b(&[]);
            fin.extend(RH_NULL.to_be_bytes());
            c.ok(
                "SequenceComplete",
                &command(cc::SEQUENCE_COMPLETE, &[h], true, &fin),
            )?;
        }
    }
    Ok(())
}

/// Operations per second of `op` on `c` over one [`ROUND_TIME`] window.
fn rate(c: &mut Client, op: Op, p: &Prepared) -> Result<f64, Error> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND_TIME {
        once(c, op, p)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Median ops/s of `op` on each TPM over [`ROUNDS`] interleaved rounds (the
/// order alternating), so load from elsewhere on the machine hits both alike;
/// `None` for a TPM that does not implement the operation.
fn measure_pair(a: &mut Client, b: &mut Client, op: Op) -> Result<OpResult, Error> {
    let pa = prepare(a, op)?;
    let pb = prepare(b, op)?;
    for _ in 0..WARMUP {
        if let Some(p) = &pa {
            once(a, op, p)?;
        }
        if let Some(p) = &pb {
            once(b, op, p)?;
        }
    }
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for first in order {
            match (first, &pa, &pb) {
                (true, Some(p), _) => ra.push(rate(a, op, p)?),
                (false, _, Some(p)) => rb.push(rate(b, op, p)?),
                _ => {}
            }
        }
    }
    for (c, p) in [(a, &pa), (b, &pb)] {
        if let Some(k) = p.as_ref().and_then(|p| p.key) {
            c.ok("FlushContext", &flush(k))?;
        }
    }
    let paired = (ra.len() == rb.len() && !ra.is_empty())
        .then(|| median(ra.iter().zip(&rb).map(|(x, y)| x / y).collect()));
    let m = |v: Vec<f64>| (!v.is_empty()).then(|| median(v));
    Ok(OpResult {
        op,
        vtpm: m(ra),
        swtpm: m(rb),
        paired,
    })
}

/// A localhost port whose successor is free too.
fn free_port_pair() -> Result<u16, Error> {
    for _ in 0..50 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("bind a local port", e))?;
        let p = l
            .local_addr()
            .map_err(|e| Error::io("local port", e))?
            .port();
        if p < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(Error::step("tpm bench", "no free port pair on 127.0.0.1"))
}

fn wait_for_port(port: u16, what: &str) -> Result<(), Error> {
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if start.elapsed() > START_TIMEOUT {
            return Err(Error::step(
                "tpm bench",
                format!("{what} never opened port {port}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process killed (and its state directory removed) on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn state_dir(name: &str) -> Result<PathBuf, Error> {
    let d = std::env::temp_dir().join(format!("xtask-bench-tpm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    Ok(d)
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, Error> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("start {what}"), e))
}

/// Builds `vtpm-sim` with `--release`; returns its path.
fn build_vtpm_sim(layout: &Layout) -> Result<PathBuf, Error> {
    let status = crate::exec::cargo()
        .current_dir(&layout.root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "vtpm",
            "--features",
            "std",
            "--bin",
            "vtpm-sim",
        ])
        .status()
        .map_err(|e| Error::io("cargo build vtpm-sim", e))?;
    if !status.success() {
        return Err(Error::step(
            "tpm bench",
            format!("building vtpm-sim: {status}"),
        ));
    }
    Ok(layout.cargo_target.join("release").join("vtpm-sim"))
}

fn start_vtpm(bin: &Path) -> Result<(Server, Client), Error> {
    let port = free_port_pair()?;
    let dir = state_dir("vtpm")?;
    let child = spawn(
        Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .arg("--state")
            .arg(&dir),
        "vtpm-sim",
    )?;
    let server = Server { child, dir };
    wait_for_port(port + 1, "vtpm-sim")?;
    // Platform: TPM_SIGNAL_POWER_ON, then end the platform session.
    let mut p = TcpStream::connect((Ipv4Addr::LOCALHOST, port + 1))
        .map_err(|e| Error::io("vtpm-sim platform port", e))?;
    p.write_all(&1u32.to_be_bytes())
        .and_then(|_| p.read_exact(&mut [0u8; 4]))
        .and_then(|_| p.write_all(&20u32.to_be_bytes()))
        .map_err(|e| Error::io("vtpm-sim power on", e))?;
    let mut c = Client::connect(port, true)?;
    c.ok("Startup", &command(cc::STARTUP, &[], false, &[0, 0]))?;
    Ok((server, c))
}

fn start_swtpm() -> Result<(Server, Client), Error> {
    let port = free_port_pair()?;
    let dir = state_dir("swtpm")?;
    let child = spawn(
        Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .args(["--flags", "not-need-init,startup-clear"]),
        "swtpm (apt-get install swtpm)",
    )?;
    let server = Server { child, dir };
    wait_for_port(port + 1, "swtpm")?;
    let c = Client::connect(port, false)?;
    Ok((server, c))
}

/// One operation's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpResult {
    pub op: Op,
    pub vtpm: Option<f64>,
    pub swtpm: Option<f64>,
    /// The median of the per-round ratios, when both were timed.
    pub paired: Option<f64>,
}

impl OpResult {
    /// vtpm ops/s over swtpm ops/s, when both implement the operation: the
    /// median per-round ratio when there is one, else the ratio of medians.
    pub fn ratio(&self) -> Option<f64> {
        match (self.paired, self.vtpm, self.swtpm) {
            (Some(p), _, _) => Some(p),
            (None, Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "unsupported".to_string(), |v| format!("{v:.0}"))
}

/// The table and the headline line for `results`.
pub fn report(results: &[OpResult]) -> (String, String) {
    let mut table = format!(
        "{:<24} {:>14} {:>14} {:>8}\n",
        "operation", "vtpm ops/s", "swtpm ops/s", "ratio"
    );
    let mut headline = String::from("tpm");
    for r in results {
        let ratio = r.ratio();
        table.push_str(&format!(
            "{:<24} {:>14} {:>14} {:>8}\n",
            r.op.key(),
            fmt_rate(r.vtpm),
            fmt_rate(r.swtpm),
            ratio.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
        ));
        match ratio {
            Some(x) => headline.push_str(&format!(" {}_ratio={x:.2}", r.op.key())),
            None => headline.push_str(&format!(
                " {}_ratio=n/a({})",
                r.op.key(),
                if r.vtpm.is_none() {
                    "vtpm unsupported"
                } else {
                    "swtpm unsupported"
                }
            )),
        }
    }
    let ratios: Vec<f64> = results.iter().filter_map(OpResult::ratio).collect();
    if let Some(min) = ratios.iter().copied().reduce(f64::min) {
        headline.push_str(&format!(" min_ratio={min:.2}"));
    }
    (table, headline)
}

/// `cargo xtask bench tpm`.
pub fn run_tpm(layout: &Layout) -> Result<String, Error> {
    let bin = build_vtpm_sim(layout)?;
    let (_vs, mut ours) = start_vtpm(&bin)?;
    let (_ss, mut theirs) = start_swtpm()?;
    let mut results = Vec::new();
    for op in Op::ALL {
        results.push(measure_pair(&mut ours, &mut theirs, op)?);
    }
    let (table, headline) = report(&results);
    print!("{table}");
    Ok(headline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_their_size_and_password_session() {
        let c = command(cc::PCR_EXTEND, &[16], true, &[1, 2]);
        assert_eq!(
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]) as usize,
            c.len()
        );
        assert_eq!(&c[0..2], &ST_SESSIONS.to_be_bytes());
        assert_eq!(&c[14..18], &9u32.to_be_bytes());
        assert_eq!(&c[c.len() - 2..], &[1, 2]);
        let p = create_primary_ecc();
        assert_eq!(
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]) as usize,
            p.len()
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn report_prints_ratios_and_unsupported_operations() {
        let results = [
            OpResult {
                op: Op::GetRandom32,
                vtpm: Some(3000.0),
                swtpm: Some(1500.0),
                paired: None,
            },
            OpResult {
                op: Op::Hash4KiB,
                vtpm: Some(500.0),
                swtpm: Some(1000.0),
                paired: Some(0.6),
            },
            OpResult {
                op: Op::SignEcdsaP256,
                vtpm: None,
                swtpm: Some(800.0),
                paired: None,
            },
        ];
        let (table, headline) = report(&results);
        assert!(table.contains("unsupported"));
        assert!(headline.starts_with("tpm "));
        assert!(headline.contains("getrandom32_ratio=2.00"));
        // The per-round ratio wins over the ratio of the medians.
        assert!(headline.contains("hash_4kib_ratio=0.60"));
        assert!(headline.contains("sign_ecdsa_p256_ratio=n/a(vtpm unsupported)"));
        assert!(headline.ends_with("min_ratio=0.60"));
    }
}
