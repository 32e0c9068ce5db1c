//! A QEMU process driven through pipes: its console output (stdout and stderr)
//! is collected into one text buffer and optionally echoed as it arrives;
//! `expect`/`send`/`sleep` steps act on it; everything is bounded by one
//! deadline; and QEMU is killed whenever the session is dropped, so it never
//! outlives xtask (error paths and panics included).

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;

/// How long one wait for output lasts before the process is polled again.
const POLL: Duration = Duration::from_millis(100);
/// How long output is still collected after QEMU exited (pipes held open by
/// another process must not hang us).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Which pipe a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Why a wait ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The session's deadline passed.
    TimedOut,
    /// QEMU exited first (its exit code; `None` when killed by a signal).
    Exited(Option<i32>),
}

/// A running QEMU (or any console program) with piped stdio.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<(Stream, Vec<u8>)>,
    carry: [Vec<u8>; 2],
    text: String,
    /// Byte offset in `text` just after the previous `expect` match.
    mark: usize,
    echo: bool,
    deadline: Instant,
    exit: Option<(ExitStatus, Instant)>,
    eof: bool,
}

impl Session {
    /// Spawns `cmd` with piped stdio; the session ends at `now + timeout`.
    /// With `echo`, output is printed as it arrives (through `print!`, so test
    /// harnesses capture it).
    pub fn spawn(mut cmd: Command, echo: bool, timeout: Duration) -> io::Result<Session> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .map(|p| (Stream::Stdout, Box::new(p) as Box<dyn Read + Send>));
        let stderr = child
            .stderr
            .take()
            .map(|p| (Stream::Stderr, Box::new(p) as Box<dyn Read + Send>));
        for (stream, mut pipe) in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send((stream, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Session {
            child,
            stdin,
            rx,
            carry: [Vec::new(), Vec::new()],
            text: String::new(),
            mark: 0,
            echo,
            deadline: Instant::now() + timeout,
            exit: None,
            eof: false,
        })
    }

    /// Everything received so far.
    pub fn output(&self) -> &str {
        &self.text
    }

    /// When the session times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The exit code once the process exited (`Some(None)`: killed by a signal).
    pub fn exit_code(&self) -> Option<Option<i32>> {
        self.exit.map(|(s, _)| s.code())
    }

    /// Waits until the output since the previous match matches `re`.
    pub fn expect(&mut self, re: &Regex) -> Result<(), WaitError> {
        self.expect_capture(re).map(|_| ())
    }

    /// [`Session::expect`] returning what matched: `re`'s first group if it has
    /// one, else the whole match.
    pub fn expect_capture(&mut self, re: &Regex) -> Result<String, WaitError> {
        loop {
            if let Some(c) = re.captures(&self.text[self.mark..]) {
                let whole = c.get(0).expect("group 0 is the match");
                let got = c.get(1).unwrap_or(whole).as_str().to_string();
                self.mark += whole.end();
                return Ok(got);
            }
            if self.finished() {
                return Err(WaitError::Exited(self.exit_code().flatten()));
            }
            if Instant::now() >= self.deadline {
                return Err(WaitError::TimedOut);
            }
            self.pump(self.deadline);
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()
    }

    /// Waits `d` while collecting output; fails if the deadline comes first.
    pub fn sleep(&mut self, d: Duration) -> Result<(), WaitError> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if Instant::now() >= self.deadline {
                return Err(WaitError::TimedOut);
            }
            self.pump(until.min(self.deadline));
        }
        Ok(())
    }

    /// Waits until the process exits and its output is drained, or `limit`
    /// (capped at the deadline) passes. Returns the exit code if it exited.
    pub fn wait_exit(&mut self, limit: Instant) -> Option<Option<i32>> {
        let limit = limit.min(self.deadline);
        while !self.finished() && Instant::now() < limit {
            self.pump(limit);
        }
        // Exited but a pipe is still open: take what arrived.
        self.exit_code()
    }

    /// Kills the process (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some((status, Instant::now()));
            }
        }
        self.stdin = None;
        while let Ok((stream, bytes)) = self.rx.try_recv() {
            self.absorb(stream, &bytes);
        }
    }

    /// Exited and drained (or the drain grace is over).
    fn finished(&self) -> bool {
        match self.exit {
            Some((_, at)) => self.eof || at.elapsed() >= DRAIN_GRACE,
            None => false,
        }
    }

    /// Collects output for at most one poll interval (bounded by `until`) and
    /// polls the process.
    fn pump(&mut self, until: Instant) {
        let wait = until.saturating_duration_since(Instant::now()).min(POLL);
        if self.eof {
            thread::sleep(wait);
        } else {
            match self.rx.recv_timeout(wait) {
                Ok((stream, bytes)) => {
                    self.absorb(stream, &bytes);
                    while let Ok((stream, bytes)) = self.rx.try_recv() {
                        self.absorb(stream, &bytes);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some((status, Instant::now()));
            }
        }
    }

    fn absorb(&mut self, stream: Stream, bytes: &[u8]) {
        let idx = stream as usize;
        let text = decode_utf8(&mut self.carry[idx], bytes);
        if self.echo && !text.is_empty() {
            match stream {
                Stream::Stdout => {
                    print!("{text}");
                    let _ = io::stdout().flush();
                }
                Stream::Stderr => eprint!("{text}"),
            }
        }
        self.text.push_str(&text);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Decodes `chunk` appended to `carry` (bytes of a character split across
/// chunks); invalid bytes become U+FFFD, an incomplete tail stays in `carry`.
fn decode_utf8(carry: &mut Vec<u8>, chunk: &[u8]) -> String {
    carry.extend_from_slice(chunk);
    let mut out = String::new();
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    *carry = rest.to_vec();
    out
}

/// Runs `cmd` on the inherited terminal and waits for it; the process is killed
/// if waiting fails. Returns its exit code (`None`: killed by a signal).
pub fn run_interactive(mut cmd: Command) -> io::Result<Option<i32>> {
    let mut child = cmd.spawn()?;
    match child.wait() {
        Ok(status) => Ok(status.code()),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> Session {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        Session::spawn(cmd, false, Duration::from_millis(timeout_ms)).unwrap()
    }

    #[test]
    fn expect_consumes_output_in_order() {
        let mut s = sh(
            "echo 'login: '; read name; echo \"hello $name\"; echo done; exit 3",
            5000,
        );
        s.expect(&Regex::new("login:").unwrap()).unwrap();
        s.send("ray\n").unwrap();
        s.expect(&Regex::new("hello ray").unwrap()).unwrap();
        // "login:" lies before the previous match, so it is not found again.
        assert_eq!(
            s.expect(&Regex::new("login:").unwrap()),
            Err(WaitError::Exited(Some(3)))
        );
        assert_eq!(
            s.wait_exit(Instant::now() + Duration::from_secs(5)),
            Some(Some(3))
        );
        assert!(s.output().contains("done"));
    }

    #[test]
    fn the_deadline_bounds_every_wait_and_the_process_is_killed() {
        let mut s = sh("echo started; sleep 30", 300);
        let t = Instant::now();
        assert_eq!(
            s.expect(&Regex::new("never").unwrap()),
            Err(WaitError::TimedOut)
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(s.wait_exit(Instant::now() + Duration::from_secs(10)), None);
        assert_eq!(s.sleep(Duration::from_secs(1)), Err(WaitError::TimedOut));
        s.kill();
        assert_eq!(s.exit_code(), Some(None), "killed by a signal");
        assert!(s.output().contains("started"));
    }

    #[test]
    fn stderr_is_collected_and_sleep_keeps_reading() {
        let mut s = sh("echo to-err >&2; sleep 0.2; echo to-out", 5000);
        s.sleep(Duration::from_millis(600)).unwrap();
        assert!(s.output().contains("to-err") && s.output().contains("to-out"));
    }

    #[test]
    fn dropping_a_session_kills_the_process() {
        let mut s = sh("echo $$; sleep 30", 5000);
        s.expect(&Regex::new(r"\d+").unwrap()).unwrap();
        let pid: u32 = s.output().trim().parse().unwrap();
        drop(s);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "killed and reaped"
        );
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let mut carry = Vec::new();
        let bytes = "é€".as_bytes();
        let a = decode_utf8(&mut carry, &bytes[..1]);
        let b = decode_utf8(&mut carry, &bytes[1..3]);
        let c = decode_utf8(&mut carry, &bytes[3..]);
        assert_eq!(format!("{a}{b}{c}"), "é€");
        assert_eq!(decode_utf8(&mut Vec::new(), b"a\xffb"), "a\u{fffd}b");
    }
}
