//! A long, deterministic mutation fuzzer for the TPM command parser and every
//! command handler, run as part of the suite: for each command the engine
//! implements (asked from the engine itself through GetCapability(COMMANDS)), it
//! builds commands with and without a password session, random handles and random
//! parameter bytes, then mutates valid-looking ones (bit flips, truncation, bytes
//! inserted or deleted, size field rewritten). Every response must be a well-formed
//! TPM response of the declared size, and the TPM must keep answering afterwards.
//! The generator is seeded, so a failure names the iteration that reproduces it.

use vtpm::{Entropy, MemNvStore, TimeSource, Tpm};

/// Iterations: enough that every implemented command gets on the order of a
/// thousand malformed variants.
const ITERATIONS: u64 = 200_000;
const SEED: u64 = 0x5241_594f_5354_504d;

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Fixed(Xorshift);
impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.0.next() as u8;
        }
    }
}
struct Clock;
impl TimeSource for Clock {
    fn now_ms(&self) -> u64 {
        1_000
    }
}

const TAG_NO_SESSIONS: u16 = 0x8001;
const TAG_SESSIONS: u16 = 0x8002;
const TAG_RSP_COMMAND: u16 = 0x00c4;
const TPM_RS_PW: u32 = 0x4000_0009;
const CC_STARTUP: u32 = 0x0144;
const CC_GET_CAPABILITY: u32 = 0x017a;
const CC_GET_RANDOM: u32 = 0x017b;
const CAP_COMMANDS: u32 = 2;
/// Handles worth trying besides random ones: hierarchies, PCRs, persistent and
/// transient ranges, NV indices, sessions.
const HANDLES: [u32; 9] = [
    0x4000_0001,
    0x4000_000b,
    0x4000_000c,
    0x4000_000a,
    0x0000_0010,
    0x8100_0001,
    0x8000_0000,
    0x0100_0000,
    0x0200_0000,
];

/// Algorithm identifiers parameters are made of: SHA-1/256/384, RSA, ECC, AES, CFB,
/// NULL, ECDSA, KEYEDHASH, HMAC, XOR.
const ALGS: [u16; 12] = [
    0x0004, 0x000b, 0x000c, 0x0001, 0x0023, 0x0006, 0x0043, 0x0010, 0x0018, 0x0008, 0x0005, 0x000a,
];

fn cmd(tag: u16, cc: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(10 + body.len());
    c.extend(tag.to_be_bytes());
    c.extend(((10 + body.len()) as u32).to_be_bytes());
    c.extend(cc.to_be_bytes());
    c.extend(body);
    c
}

fn check(what: &str, c: &[u8], r: &[u8]) {
    assert!(r.len() >= 10, "{what}: short response {r:02x?} to {c:02x?}");
    let size = u32::from_be_bytes(r[2..6].try_into().unwrap()) as usize;
    assert_eq!(
        size,
        r.len(),
        "{what}: size field disagrees with the response length for {c:02x?}"
    );
    let tag = u16::from_be_bytes([r[0], r[1]]);
    let rc = u32::from_be_bytes(r[6..10].try_into().unwrap());
    if rc != 0 {
        assert_eq!(
            r.len(),
            10,
            "{what}: an error response carries a body: {r:02x?}"
        );
        assert!(
            tag == TAG_NO_SESSIONS || tag == TAG_RSP_COMMAND,
            "{what}: error tag {tag:#x}"
        );
    } else {
        assert!(
            tag == TAG_NO_SESSIONS || tag == TAG_SESSIONS,
            "{what}: success tag {tag:#x}"
        );
        assert!(r.len() <= 4096, "{what}: response longer than the maximum");
    }
}

fn implemented_commands(t: &mut Tpm) -> Vec<u32> {
    let mut body = Vec::new();
    body.extend(CAP_COMMANDS.to_be_bytes());
    body.extend(0u32.to_be_bytes());
    body.extend(256u32.to_be_bytes());
    let r = t.execute(0, &cmd(TAG_NO_SESSIONS, CC_GET_CAPABILITY, &body));
    assert_eq!(
        &r[6..10],
        &[0, 0, 0, 0],
        "GetCapability(COMMANDS) failed: {r:02x?}"
    );
    // moreData(1) capability(4) count(4) then TPMA_CC words; the command index is
    // the low 16 bits.
    let count = u32::from_be_bytes(r[15..19].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let a = u32::from_be_bytes(r[19 + 4 * i..23 + 4 * i].try_into().unwrap());
            a & 0xffff
        })
        .collect()
}

fn password_session(rng: &mut Xorshift) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(TPM_RS_PW.to_be_bytes());
    s.extend(0u16.to_be_bytes()); // nonce
    s.push(if rng.below(2) == 0 {
        0x01
    } else {
        rng.next() as u8
    });
    let auth_len = rng.below(4) as usize;
    s.extend((auth_len as u16).to_be_bytes());
    s.extend(rng.bytes(auth_len));
    let mut area = Vec::from((s.len() as u32).to_be_bytes());
    area.extend(s);
    area
}

fn generate(rng: &mut Xorshift, codes: &[u32]) -> Vec<u8> {
    let cc = codes[rng.below(codes.len() as u64) as usize];
    let sessions = rng.below(2) == 0;
    let mut body = Vec::new();
    for _ in 0..rng.below(3) {
        let h = if rng.below(3) == 0 {
            rng.next() as u32
        } else {
            HANDLES[rng.below(HANDLES.len() as u64) as usize]
        };
        body.extend(h.to_be_bytes());
    }
    if sessions {
        body.extend(password_session(rng));
    }
    // Parameters shaped like TPM structures (sized buffers, algorithm IDs, small
    // integers, handles) reach deeper than uniform bytes.
    for _ in 0..rng.below(8) {
        match rng.below(6) {
            0 | 1 => {
                let n = rng.below(48) as usize;
                body.extend((n as u16).to_be_bytes());
                body.extend(rng.bytes(n));
            }
            2 => body.extend(ALGS[rng.below(ALGS.len() as u64) as usize].to_be_bytes()),
            3 => body.extend((rng.below(4) as u32).to_be_bytes()),
            4 => body.extend(HANDLES[rng.below(HANDLES.len() as u64) as usize].to_be_bytes()),
            _ => body.push(rng.below(4) as u8),
        }
    }
    let mut c = cmd(
        if sessions {
            TAG_SESSIONS
        } else {
            TAG_NO_SESSIONS
        },
        cc,
        &body,
    );
    // Mutate half of them further.
    if rng.below(2) == 0 {
        for _ in 0..=rng.below(4) {
            let n = c.len() as u64;
            match rng.below(5) {
                0 if n > 0 => {
                    let at = rng.below(n) as usize;
                    c[at] ^= 1 << rng.below(8);
                }
                1 => c.truncate(rng.below(n + 1) as usize),
                2 => {
                    let at = rng.below(n + 1) as usize;
                    c.insert(at, rng.next() as u8);
                }
                3 if n > 0 => {
                    c.remove(rng.below(n) as usize);
                }
                _ if c.len() >= 6 => {
                    let len = c.len() as u32;
                    c[2..6].copy_from_slice(&len.to_be_bytes());
                }
                _ => {}
            }
        }
    }
    c
}

#[test]
fn every_command_survives_malformed_input() {
    let mut rng = Xorshift(SEED);
    let mut t = Tpm::new(
        Box::new(Fixed(Xorshift(7))),
        Box::new(Clock),
        Box::new(MemNvStore::default()),
    )
    .unwrap();
    let startup = cmd(TAG_NO_SESSIONS, CC_STARTUP, &[0, 0]);
    check("startup", &startup, &t.execute(0, &startup));
    let codes = implemented_commands(&mut t);
    assert!(codes.len() >= 40, "only {} commands reported", codes.len());
    let mut ok = 0u64;
    let mut outcomes = std::collections::BTreeSet::new();
    for i in 0..ITERATIONS {
        let c = generate(&mut rng, &codes);
        let loc = rng.below(5) as u8;
        let r = t.execute(loc, &c);
        check(&format!("iteration {i}"), &c, &r);
        if r[6..10] == [0, 0, 0, 0] {
            ok += 1;
        }
        if c.len() >= 10 && codes.contains(&u32::from_be_bytes(c[6..10].try_into().unwrap())) {
            outcomes.insert((
                u32::from_be_bytes(c[6..10].try_into().unwrap()),
                u32::from_be_bytes(r[6..10].try_into().unwrap()),
            ));
        }
        if i % 1000 == 999 {
            let probe = cmd(TAG_NO_SESSIONS, CC_GET_RANDOM, &[0, 8]);
            let r = t.execute(0, &probe);
            check(&format!("probe after iteration {i}"), &probe, &r);
            // A fuzzed Shutdown may leave the TPM needing Startup; anything else must answer.
            let needs_startup =
                r[6..10] == 0x100u32.to_be_bytes() || (r[6..10] != [0, 0, 0, 0] && !t.is_started());
            if needs_startup {
                t.init();
                check("re-startup", &startup, &t.execute(0, &startup));
            }
        }
    }
    // Random input should sometimes be valid, or the fuzzer explores nothing.
    assert!(
        ok > 0,
        "no fuzzed command succeeded: the generator is too far off"
    );
    // Distinct (command, response code) pairs: how many different paths were taken.
    assert!(
        outcomes.len() >= 3 * codes.len(),
        "only {} distinct (command, response) outcomes",
        outcomes.len()
    );
    println!(
        "{ITERATIONS} fuzzed commands over {} command codes: {ok} succeeded, {} distinct (command, response code) outcomes",
        codes.len(),
        outcomes.len()
    );
}
