//! What the TPM targets share: an engine built from a manufactured NV image made
//! once per process (manufacturing draws seeds; every input starts from the same
//! TPM), deterministic entropy and a clock that ticks per reading.

use std::sync::OnceLock;

use vtpm::{Entropy, MemNvStore, TimeSource, Tpm};

/// TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS and TPM_ST_RSP_COMMAND (TPM 2.0 Part 2, 6.9).
pub const ST_NO_SESSIONS: u16 = 0x8001;
pub const ST_SESSIONS: u16 = 0x8002;
pub const ST_RSP_COMMAND: u16 = 0x00C4;
/// TPM_CC_Startup, TPM_SU_CLEAR.
const CC_STARTUP: u32 = 0x0144;
const SU_CLEAR: u16 = 0x0000;
/// A response header: tag, size, responseCode.
pub const HEADER: usize = 10;

/// Deterministic entropy (a linear congruential sequence from its seed).
pub struct Counter(pub u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 33) as u8;
        }
    }
}

/// A clock that advances one millisecond per reading, so timeouts and the
/// dictionary-attack recovery move as the input runs.
#[derive(Default)]
pub struct Ticks(core::cell::Cell<u64>);

impl TimeSource for Ticks {
    fn now_ms(&self) -> u64 {
        let t = self.0.get() + 1;
        self.0.set(t);
        t
    }
}

/// The NV image of a TPM manufactured once per process.
fn manufactured() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut keep = SharedImage::default();
        Tpm::new(
            Box::new(Counter(1)),
            Box::new(Ticks::default()),
            Box::new(keep.clone()),
        )
        .expect("manufacturing a TPM failed");
        keep.take().expect("manufacturing stored no NV image")
    })
}

/// An NV store whose image the caller can read back.
#[derive(Default, Clone)]
struct SharedImage(std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl SharedImage {
    fn take(&mut self) -> Option<Vec<u8>> {
        self.0.lock().ok()?.take()
    }
}

impl vtpm::NvStore for SharedImage {
    fn load(&mut self) -> Result<Option<Vec<u8>>, vtpm::NvError> {
        Ok(self
            .0
            .lock()
            .map_err(|_| vtpm::NvError::Unavailable)?
            .clone())
    }
    fn store(&mut self, image: &[u8]) -> Result<(), vtpm::NvError> {
        *self.0.lock().map_err(|_| vtpm::NvError::Unavailable)? = Some(image.to_vec());
        Ok(())
    }
}

/// A powered-on TPM from the shared manufactured image (TPM2_Startup not sent).
pub fn tpm() -> Tpm {
    let nv = MemNvStore {
        image: Some(manufactured().to_vec()),
        writes: 0,
    };
    Tpm::new(
        Box::new(Counter(7)),
        Box::new(Ticks::default()),
        Box::new(nv),
    )
    .expect("the manufactured NV image was refused")
}

/// TPM2_Startup(CLEAR).
pub fn startup_command() -> Vec<u8> {
    let mut c = Vec::with_capacity(12);
    c.extend(ST_NO_SESSIONS.to_be_bytes());
    c.extend(12u32.to_be_bytes());
    c.extend(CC_STARTUP.to_be_bytes());
    c.extend(SU_CLEAR.to_be_bytes());
    c
}

/// Checks that `r` is a well-formed TPM response: a header whose size is the
/// response's, an error response is a bare header with a response tag.
pub fn check_response(r: &[u8]) {
    assert!(r.len() >= HEADER, "short response {r:02x?}");
    let size = u32::from_be_bytes([r[2], r[3], r[4], r[5]]) as usize;
    assert_eq!(size, r.len(), "response size field");
    let tag = u16::from_be_bytes([r[0], r[1]]);
    let code = u32::from_be_bytes([r[6], r[7], r[8], r[9]]);
    if code != 0 {
        assert_eq!(r.len(), HEADER, "error response with a body");
        assert!(
            tag == ST_NO_SESSIONS || tag == ST_RSP_COMMAND,
            "tag {tag:#x}"
        );
    } else {
        assert!(tag == ST_NO_SESSIONS || tag == ST_SESSIONS, "tag {tag:#x}");
    }
}

/// Splits `data` into commands at their own size fields: a command whose size field
/// is below a header or past the end takes the rest of the input.
pub fn split_commands(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = if data.len() >= HEADER {
            u32::from_be_bytes([data[2], data[3], data[4], data[5]]) as usize
        } else {
            0
        };
        let n = if (HEADER..=data.len()).contains(&n) {
            n
        } else {
            data.len()
        };
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

/// The NV image of a freshly manufactured TPM after TPM2_Startup(CLEAR) and
/// `commands` (for the seed corpus).
pub fn nv_image_after(commands: &[Vec<u8>]) -> Vec<u8> {
    let mut keep = SharedImage::default();
    let mut t = Tpm::new(
        Box::new(Counter(1)),
        Box::new(Ticks::default()),
        Box::new(keep.clone()),
    )
    .expect("manufacturing a TPM failed");
    t.execute(0, &startup_command());
    for c in commands {
        check_response(&t.execute(0, c));
    }
    drop(t);
    keep.take().expect("the TPM stored no NV image")
}
