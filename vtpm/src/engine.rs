//! The TPM engine: [`Tpm`] owns the persistent and volatile state and runs one
//! command at a time through the reference implementation's order of checks —
//! header (tag, size, code), initialisation, handle area, authorization area,
//! parameters — answering every malformed command with the architected response
//! code. State that changed is committed to NV before the response is returned.

use crate::auth::{self, Session};
use crate::authorize::AuthArea;
use crate::defs::{cc, handle, limits, rc, st};
use crate::dispatch::{self, AuthRole};
use crate::drbg::{Drbg, Entropy};
use crate::hash::Digest;
use crate::marshal::{Reader, Writer};
use crate::nv::{NvError, NvStore, Orderly, Persistent};
use crate::nvrate::NvRateLimiter;
use crate::object::ObjectTable;
use crate::pcr::{Allocation, PcrBanks};
use crate::session::SessionTable;
use alloc::boxed::Box;
use alloc::vec::Vec;

/// A monotonic millisecond time source (the hypervisor's counter).
pub trait TimeSource {
    fn now_ms(&self) -> u64;
}

/// State that lives only while the TPM is powered (reset by _TPM_Init).
#[derive(Debug, Clone)]
pub struct Volatile {
    pub started: bool,
    pub pcrs: PcrBanks,
    /// Allocation in force since the last TPM Reset.
    pub allocation: Allocation,
    pub pcr_counter: u32,
    pub ph_enable: bool,
    pub sh_enable: bool,
    pub eh_enable: bool,
    pub ph_enable_nv: bool,
    pub platform_auth: Digest,
    /// Cleared by a failed lockoutAuth; restored at TPM Reset or after
    /// lockoutRecovery seconds.
    pub lockout_auth_enabled: bool,
    /// TPM time (ms) of the lockoutAuth failure.
    pub lockout_failed_at: u64,
    /// Clock (ms) at TPM time `clock_from`: set at power-on (TPM time 0), by
    /// TPM2_ClockSet and by TPM2_Clear.
    pub clock_base: u64,
    pub clock_from: u64,
    /// TPMS_CLOCK_INFO.safe.
    pub safe: bool,
    /// Orderly state found at power-on (decides Resume/Restart/Reset).
    pub orderly_at_init: Orderly,
    /// PCR_Allocate changed the allocation since startup (Shutdown(STATE) refused).
    pub pcr_reconfigured: bool,
    /// platformPolicy (SetPrimaryPolicy), cleared at every startup.
    pub platform_policy: Option<(crate::hash::HashAlg, Digest)>,
    /// HMAC and policy sessions.
    pub sessions: SessionTable,
    /// Loaded transient objects.
    pub objects: ObjectTable,
    /// Failed DA-protected authorizations (TPM_PT_LOCKOUT_COUNTER) and the
    /// TPM time of the last one.
    pub failed_tries: u32,
    pub last_auth_failure: u64,
    /// Sequence number of the next saved context.
    pub context_counter: u64,
    /// The rate of Clock and Time (TPM2_ClockRateAdjust; nominal at _TPM_Init).
    pub clock_rate: crate::commands::platform::ClockRate,
    /// authValue of the PCR authorization group (TPM2_PCR_SetAuthValue).
    pub pcr_auth: Digest,
    /// The command audit digest of this TPM Reset cycle (empty: not started).
    pub audit_digest: Digest,
    /// Two-phase ECC commitments of this TPM Reset cycle.
    pub commit: crate::nv::CommitState,
    /// The exclusive audit session, if any.
    pub exclusive_audit: Option<u32>,
}

impl Volatile {
    fn power_on(p: &Persistent, now: u64) -> Self {
        Self {
            started: false,
            pcrs: PcrBanks::new(),
            allocation: p.allocation,
            pcr_counter: 0,
            ph_enable: true,
            sh_enable: true,
            eh_enable: true,
            ph_enable_nv: true,
            platform_auth: Digest::filled(0, 0),
            lockout_auth_enabled: true,
            lockout_failed_at: 0,
            clock_base: p.clock,
            clock_from: 0,
            safe: p.orderly != Orderly::None,
            orderly_at_init: p.orderly,
            pcr_reconfigured: false,
            platform_policy: None,
            sessions: SessionTable::new(),
            objects: ObjectTable::with_persistent(&p.persistent_objects),
            failed_tries: 0,
            last_auth_failure: 0,
            context_counter: 1,
            clock_rate: crate::commands::platform::ClockRate::nominal(now),
            pcr_auth: Digest::filled(0, 0),
            audit_digest: Digest::filled(0, 0),
            commit: crate::nv::CommitState::default(),
            exclusive_audit: None,
        }
    }
}

/// One command being executed, as the handler sees it.
pub struct Cmd<'a> {
    pub code: u32,
    pub locality: u8,
    pub handles: [u32; 3],
    pub params: Reader<'a>,
    /// The handle a TPMA_CC.rHandle command returns.
    pub r_handle: Option<u32>,
    /// Handle `i` was authorized by a policy session.
    pub policy_auth: [bool; 3],
    /// Response parameters.
    pub out: Writer,
    /// Set by a handler that changed persistent state.
    pub nv_dirty: bool,
    /// Set by a handler that changed state an orderly shutdown saved, so that
    /// state no longer describes the TPM.
    pub breaks_orderly: bool,
    /// Set by TPM2_SetCommandCodeAuditStatus when it changed the audit hash:
    /// that command is then not audited (the digest restarts).
    pub skip_audit: bool,
}

impl Cmd<'_> {
    /// Fails with TPM_RC_SIZE if parameter bytes are left over.
    pub fn finish(&self) -> Result<(), u32> {
        if self.params.remaining() != 0 {
            return Err(rc::SIZE);
        }
        Ok(())
    }
}

/// Adds the parameter-number decoration to an unmarshalling error.
pub trait ParamErr<T> {
    fn p(self, n: u32) -> Result<T, u32>;
}

impl<T> ParamErr<T> for Result<T, u32> {
    fn p(self, n: u32) -> Result<T, u32> {
        self.map_err(|e| e + rc::P + n * rc::N1)
    }
}

/// The TPM.
pub struct Tpm {
    pub(crate) nv: Box<dyn NvStore + Send>,
    pub(crate) time: Box<dyn TimeSource + Send>,
    pub(crate) drbg: Drbg,
    pub(crate) p: Persistent,
    pub(crate) v: Volatile,
    pub(crate) failure: bool,
    /// Budget of NV writes (kept across _TPM_Init: a reset earns nothing).
    pub(crate) nv_rate: NvRateLimiter,
    /// TPM_RC_NV_RATE has been logged since the last accepted NV write.
    pub(crate) nv_rate_logged: bool,
    /// The platform asserts physical presence (a platform signal, kept
    /// across _TPM_Init).
    pub(crate) physical_presence: bool,
}

/// Commands whose success writes the NV image and that TPM_RC_NV_RATE may refuse.
/// TPM2_Startup and TPM2_Shutdown write NV too but are never refused (the platform
/// needs them to work); their writes, and the periodic clock commits, still draw on
/// the budget.
const NV_RATE_LIMITED: &[u32] = &[
    cc::NV_DEFINE_SPACE,
    cc::NV_UNDEFINE_SPACE,
    cc::NV_WRITE,
    cc::NV_INCREMENT,
    cc::NV_EXTEND,
    cc::NV_SET_BITS,
    cc::NV_WRITE_LOCK,
    cc::NV_GLOBAL_WRITE_LOCK,
    cc::NV_READ_LOCK,
    cc::NV_CHANGE_AUTH,
    cc::NV_UNDEFINE_SPACE_SPECIAL,
    cc::CLOCK_SET,
    cc::CHANGE_EPS,
    cc::CHANGE_PPS,
    cc::EVICT_CONTROL,
    cc::CLEAR,
    cc::CLEAR_CONTROL,
    cc::HIERARCHY_CHANGE_AUTH,
    cc::SET_PRIMARY_POLICY,
    cc::PCR_ALLOCATE,
    cc::DICTIONARY_ATTACK_LOCK_RESET,
    cc::DICTIONARY_ATTACK_PARAMETERS,
    cc::PCR_SET_AUTH_POLICY,
    cc::PP_COMMANDS,
    cc::SET_ALGORITHM_SET,
    cc::SET_COMMAND_CODE_AUDIT_STATUS,
];

impl Tpm {
    /// Loads the NV image from `nv` (manufacturing a new TPM with fresh seeds if
    /// there is none) and powers the TPM on. A damaged image is refused.
    pub fn new(
        entropy: Box<dyn Entropy + Send>,
        time: Box<dyn TimeSource + Send>,
        mut nv: Box<dyn NvStore + Send>,
    ) -> Result<Self, NvError> {
        let mut drbg = Drbg::new(entropy, b"RayOS vTPM DRBG");
        let p = match nv.load()? {
            Some(img) => Persistent::decode(&img)?,
            None => {
                let p = Persistent::manufacture(&mut |b| drbg.generate(b));
                nv.store(&p.encode())?;
                p
            }
        };
        let now = time.now_ms();
        let v = Volatile::power_on(&p, now);
        Ok(Self {
            nv,
            time,
            drbg,
            p,
            v,
            failure: false,
            nv_rate: NvRateLimiter::standard(now),
            nv_rate_logged: false,
            physical_presence: false,
        })
    }

    /// _TPM_Init: the TPM loses all volatile state (power cycle or reset signal)
    /// and waits for TPM2_Startup.
    pub fn init(&mut self) {
        let now = self.time.now_ms();
        self.v = Volatile::power_on(&self.p, now);
        self.failure = false;
    }

    /// Has TPM2_Startup completed since the last _TPM_Init?
    pub fn is_started(&self) -> bool {
        self.v.started
    }

    /// Milliseconds of TPM clock now.
    pub fn clock(&self) -> u64 {
        self.v
            .clock_base
            .saturating_add(self.tpm_time().saturating_sub(self.v.clock_from))
    }

    /// The platform's physical-presence signal (TPM2_PP_Commands,
    /// TPM2_PolicyPhysicalPresence).
    pub fn set_physical_presence(&mut self, asserted: bool) {
        self.physical_presence = asserted;
    }

    /// Commits the persistent state (with the current clock) to NV.
    pub(crate) fn commit(&mut self) -> Result<(), NvError> {
        self.p.clock = self.clock();
        self.p.generation = self.p.generation.wrapping_add(1);
        let img = self.p.encode();
        self.nv.store(&img)
    }

    /// Executes one command received at `locality` and returns the response.
    /// Never panics on any input.
    pub fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        if self.failure {
            return self.failure_mode_response(command);
        }
        match self.run(locality, command) {
            Ok(resp) => resp,
            Err(code) => {
                if code != rc::INITIALIZE {
                    log::debug!("vtpm: command failed with rc {code:#x}");
                }
                error_response(code)
            }
        }
    }

    fn run(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>, u32> {
        let mut r = Reader::new(command);
        let tag = r.u16()?;
        if tag != st::NO_SESSIONS && tag != st::SESSIONS {
            log::warn!("vtpm: bad command tag {tag:#x}");
            return Err(rc::BAD_TAG);
        }
        let size = r.u32()?;
        if size as usize != command.len() || command.len() > limits::MAX_COMMAND_SIZE {
            log::warn!(
                "vtpm: command size {size} but {} bytes received",
                command.len()
            );
            return Err(rc::COMMAND_SIZE);
        }
        let code = r.u32()?;
        let (_, desc) = dispatch::lookup(code).ok_or_else(|| {
            log::warn!("vtpm: unimplemented command code {code:#x}");
            rc::COMMAND_CODE
        })?;
        if self.v.started == (code == crate::defs::cc::STARTUP) {
            return Err(rc::INITIALIZE);
        }
        // Handle area.
        let mut handles = [0u32; 3];
        for (i, spec) in desc.handles.iter().enumerate() {
            let dec = rc::H + (i as u32 + 1) * rc::N1;
            let h = r.u32().map_err(|e| e + dec)?;
            if !spec.kind.accepts(h) {
                return Err(rc::VALUE + dec);
            }
            self.check_loaded(h).map_err(|e| rc::safe_add(e, dec))?;
            handles[i] = h;
        }
        // Authorization area.
        let sessions_tag = tag == st::SESSIONS;
        let mut params: Vec<u8>;
        let area: AuthArea = if sessions_tag {
            if desc.no_sessions {
                return Err(rc::AUTH_CONTEXT);
            }
            let auth_size = r.u32()?;
            if auth_size < limits::MIN_SESSION_SIZE || auth_size as usize > r.remaining() {
                return Err(rc::SIZE);
            }
            let raw = r.bytes(auth_size as usize)?;
            let parsed: Vec<Session> = auth::parse_sessions(raw)?;
            params = r.rest().to_vec();
            self.authorize(locality, desc, &handles, &parsed, &mut params)?
        } else {
            if desc.handles.iter().any(|s| s.auth != AuthRole::None) {
                return Err(rc::AUTH_MISSING);
            }
            params = r.rest().to_vec();
            AuthArea::default()
        };
        let mut cmd = Cmd {
            code,
            locality,
            handles,
            params: Reader::new(&params),
            r_handle: None,
            policy_auth: core::array::from_fn(|i| {
                area.uses.get(i).is_some_and(|u| {
                    u.associated.is_some() && handle::ht(u.handle) == handle::HT_POLICY_SESSION
                })
            }),
            out: Writer::new(),
            nv_dirty: false,
            breaks_orderly: false,
            skip_audit: false,
        };
        if NV_RATE_LIMITED.contains(&code) && !self.nv_rate.available(self.time.now_ms()) {
            if !self.nv_rate_logged {
                log::warn!(
                    "vtpm: NV written too often; refusing NV writes with TPM_RC_NV_RATE for {} ms",
                    self.nv_rate.recovery_ms(self.time.now_ms())
                );
                self.nv_rate_logged = true;
            }
            return Err(rc::NV_RATE);
        }
        // Names of the handles as the command sees them, for its audit.
        let audit_names: Option<Vec<Vec<u8>>> = crate::commands::audit::is_audited(self, code)
            .then(|| {
                handles[..desc.handles.len()]
                    .iter()
                    .map(|h| self.entity_name(*h))
                    .collect()
            });
        let outcome = (desc.handler)(self, &mut cmd);
        if let (Ok(()), Some(names), false) = (&outcome, &audit_names, cmd.skip_audit) {
            if crate::commands::audit::record(self, code, names, &params, &cmd.out.buf) {
                cmd.nv_dirty = true;
            }
        }
        if outcome.is_ok() && cmd.breaks_orderly && self.p.orderly != Orderly::None {
            self.p.orderly = Orderly::None;
            self.p.saved = None;
            cmd.nv_dirty = true;
        }
        // The clock is committed each time it crosses a CLOCK_UPDATE boundary;
        // once it has been, a reported clock value cannot repeat (safe).
        let mask = (1u64 << limits::CLOCK_UPDATE_SHIFT) - 1;
        if self.v.started && (self.clock() | mask) > (self.p.clock | mask) {
            cmd.nv_dirty = true;
            self.v.safe = true;
        }
        if cmd.nv_dirty {
            if let Err(e) = self.commit() {
                log::warn!("vtpm: NV commit failed ({e:?}); entering failure mode");
                self.failure = true;
                return Err(rc::FAILURE);
            }
            self.nv_rate.record_write(self.time.now_ms());
            self.nv_rate_logged = false;
        }
        outcome?;
        let r_handle = cmd.r_handle;
        let mut out = core::mem::take(&mut cmd.out.buf);
        drop(cmd);
        let mut w = Writer::new();
        w.u16(tag).u32(0).u32(rc::SUCCESS);
        if let Some(h) = r_handle {
            w.u32(h);
        }
        if sessions_tag {
            let session_area = self.respond_sessions(code, &area, &mut out);
            w.u32(out.len() as u32).bytes(&out).bytes(&session_area);
        } else {
            w.bytes(&out);
            if !desc.no_sessions {
                self.note_no_audit_session();
            }
        }
        let len = w.len() as u32;
        w.patch_u32(2, len);
        Ok(w.buf)
    }

    /// In failure mode only TPM2_GetTestResult answers (with TPM_RC_FAILURE as its
    /// test result); everything else gets TPM_RC_FAILURE.
    fn failure_mode_response(&self, command: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(command);
        let is_test_result = matches!(
            (r.u16(), r.u32(), r.u32()),
            (Ok(st::NO_SESSIONS), Ok(size), Ok(crate::defs::cc::GET_TEST_RESULT))
                if size as usize == command.len() && command.len() == limits::HEADER_SIZE
        );
        if !is_test_result {
            return error_response(rc::FAILURE);
        }
        let mut w = Writer::new();
        w.u16(st::NO_SESSIONS)
            .u32(0)
            .u32(rc::SUCCESS)
            .tpm2b(&[])
            .u32(rc::FAILURE);
        let n = w.len() as u32;
        w.patch_u32(2, n);
        w.buf
    }

    /// TPM_RC_HIERARCHY if `h` is a disabled hierarchy.
    pub(crate) fn check_hierarchy_enabled(&self, h: u32) -> Result<(), u32> {
        let on = match h {
            handle::OWNER => self.v.sh_enable,
            handle::ENDORSEMENT => self.v.eh_enable,
            handle::PLATFORM => self.v.ph_enable,
            _ => true,
        };
        if on {
            Ok(())
        } else {
            Err(rc::HIERARCHY)
        }
    }

    /// EntityGetLoadStatus for the handles this TPM implements.
    fn check_loaded(&self, h: u32) -> Result<(), u32> {
        let ok = match handle::ht(h) {
            handle::HT_PERMANENT => match h {
                handle::OWNER => self.v.sh_enable,
                handle::ENDORSEMENT => self.v.eh_enable,
                handle::PLATFORM => self.v.ph_enable,
                _ => true,
            },
            handle::HT_HMAC_SESSION | handle::HT_POLICY_SESSION => {
                return self.v.sessions.get(h).map(|_| ()).ok_or(rc::REFERENCE_H0);
            }
            handle::HT_TRANSIENT => {
                return self.v.objects.get(h).map(|_| ()).ok_or(rc::REFERENCE_H0);
            }
            handle::HT_PERSISTENT => {
                return self.v.objects.get(h).map(|_| ()).ok_or(rc::HANDLE);
            }
            handle::HT_NV_INDEX => {
                return self.nv_index(h).map(|_| ()).ok_or(rc::HANDLE);
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(rc::HIERARCHY)
        }
    }

    /// The authValue of an entity.
    pub(crate) fn auth_value(&self, h: u32) -> Digest {
        match h {
            handle::OWNER => self.p.owner_auth,
            handle::ENDORSEMENT => self.p.endorsement_auth,
            handle::LOCKOUT => self.p.lockout_auth,
            handle::PLATFORM => self.v.platform_auth,
            _ if (h as usize) < limits::PCR_COUNT => {
                if crate::pcr::in_group(crate::pcr::AUTH_GROUP, h as usize) {
                    self.v.pcr_auth
                } else {
                    Digest::filled(0, 0)
                }
            }
            _ => match (self.v.objects.get(h), self.nv_index(h)) {
                (Some(o), _) => o.auth(),
                (None, Some(i)) => i.auth,
                (None, None) => Digest::filled(0, 0),
            },
        }
    }

    /// TPM_PT_NV_WRITE_RECOVERY: milliseconds until an NV write is accepted again.
    pub fn nv_rate_recovery_ms(&self) -> u32 {
        let ms = self.nv_rate.recovery_ms(self.time.now_ms());
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    /// Random bytes from the DRBG.
    pub fn random(&mut self, out: &mut [u8]) {
        self.drbg.generate(out);
    }
}

/// A 10-byte error response. TPM_RC_BAD_TAG gets the TPM 1.2-compatible tag.
pub fn error_response(code: u32) -> Vec<u8> {
    let tag = if code == rc::BAD_TAG {
        st::RSP_COMMAND
    } else {
        st::NO_SESSIONS
    };
    let mut w = Writer::new();
    w.u16(tag).u32(limits::HEADER_SIZE as u32).u32(code);
    w.buf
}
