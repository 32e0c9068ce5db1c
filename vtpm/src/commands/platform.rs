//! Platform administration: Part 3 §29.3 TPM2_ClockRateAdjust, §26.2
//! TPM2_PP_Commands and §26.3 TPM2_SetAlgorithmSet.

use crate::defs::{cc, rc};
use crate::dispatch;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::marshal::Reader;
use alloc::vec::Vec;

/// TPM_CLOCK_ADJUST: how TPM2_ClockRateAdjust moves the rate of Clock and
/// Time. Positive values make them run faster.
pub mod clock_adjust {
    pub const COARSE_SLOWER: i8 = -3;
    pub const COARSE_FASTER: i8 = 3;
}

/// The rate of Clock and Time in parts per million of the host's time.
pub const RATE_NOMINAL_PPM: u32 = 1_000_000;
/// The adjustment steps: coarse 1 %, medium 0.1 %, fine 0.01 %.
const STEP_PPM: [u32; 3] = [100, 1_000, 10_000];
/// The rate stays within ±10 % of nominal (Part 1 leaves the range to the
/// platform; further adjustments in one direction are ignored).
pub const RATE_LIMIT_PPM: u32 = 100_000;

/// The rate of Clock and Time since the last TPM2_ClockRateAdjust: TPM time
/// advances `rate_ppm` / 1 000 000 ms per host ms; `since` is the host time of
/// the last change and `elapsed` the TPM time (ms since _TPM_Init) then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRate {
    pub rate_ppm: u32,
    pub since: u64,
    pub elapsed: u64,
}

impl ClockRate {
    pub fn nominal(now: u64) -> Self {
        Self {
            rate_ppm: RATE_NOMINAL_PPM,
            since: now,
            elapsed: 0,
        }
    }

    /// TPM time (ms since _TPM_Init) at host time `now`.
    pub fn elapsed_at(&self, now: u64) -> u64 {
        let host = u128::from(now.saturating_sub(self.since));
        let scaled = host * u128::from(self.rate_ppm) / u128::from(RATE_NOMINAL_PPM);
        self.elapsed
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// Applies one TPM_CLOCK_ADJUST step at host time `now`.
    pub fn adjust(&mut self, adjust: i8, now: u64) {
        self.elapsed = self.elapsed_at(now);
        self.since = now;
        let step = match adjust.unsigned_abs() {
            0 => return,
            n => STEP_PPM[usize::from(n - 1)],
        };
        let (lo, hi) = (
            RATE_NOMINAL_PPM - RATE_LIMIT_PPM,
            RATE_NOMINAL_PPM + RATE_LIMIT_PPM,
        );
        self.rate_ppm = if adjust > 0 {
            (self.rate_ppm + step).min(hi)
        } else {
            self.rate_ppm.saturating_sub(step).max(lo)
        };
    }
}

/// TPM2_ClockRateAdjust: auth (owner or platform, USER), rateAdjust
/// (TPM_CLOCK_ADJUST, −3..=3).
pub fn clock_rate_adjust(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let adjust = cmd.params.u8().p(1)? as i8;
    if !(clock_adjust::COARSE_SLOWER..=clock_adjust::COARSE_FASTER).contains(&adjust) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    cmd.finish()?;
    let now = tpm.time.now_ms();
    tpm.v.clock_rate.adjust(adjust, now);
    Ok(())
}

/// Unmarshals a TPML_CC (parameter `n`).
pub(crate) fn cc_list(r: &mut Reader, n: u32) -> Result<Vec<u32>, u32> {
    let count = r.u32().p(n)?;
    if count > crate::defs::cap::MAX_CAP_CC {
        return Err(rc::SIZE + rc::P + n * rc::N1);
    }
    (0..count).map(|_| r.u32().p(n)).collect()
}

/// Commands whose platformAuth authorization TPM2_PP_Commands may make
/// require physical presence (the commands that accept TPM_RH_PLATFORM as
/// their authorization handle).
const PP_CAPABLE: &[u32] = &[
    cc::NV_UNDEFINE_SPACE_SPECIAL,
    cc::EVICT_CONTROL,
    cc::HIERARCHY_CONTROL,
    cc::NV_UNDEFINE_SPACE,
    cc::CHANGE_EPS,
    cc::CHANGE_PPS,
    cc::CLEAR,
    cc::CLEAR_CONTROL,
    cc::CLOCK_SET,
    cc::HIERARCHY_CHANGE_AUTH,
    cc::NV_DEFINE_SPACE,
    cc::PCR_ALLOCATE,
    cc::PCR_SET_AUTH_POLICY,
    cc::SET_PRIMARY_POLICY,
    cc::CLOCK_RATE_ADJUST,
    cc::CREATE_PRIMARY,
    cc::NV_GLOBAL_WRITE_LOCK,
    cc::SET_COMMAND_CODE_AUDIT_STATUS,
    cc::CREATE_LOADED,
];

/// Does TPM2_PP_Commands' list make `code` need physical presence when
/// authorized with platformAuth?
pub(crate) fn pp_required(tpm: &Tpm, code: u32) -> bool {
    tpm.p.pp_commands.binary_search(&code).is_ok()
}

/// TPM2_PP_Commands: auth (platform, USER with physical presence), setList,
/// clearList (TPML_CC). Commands not implemented or that cannot be
/// authorized by platformAuth are ignored; TPM2_PP_Commands itself always
/// needs physical presence.
pub fn pp_commands(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let set = cc_list(&mut cmd.params, 1)?;
    let clear = cc_list(&mut cmd.params, 2)?;
    cmd.finish()?;
    let list = &mut tpm.p.pp_commands;
    for c in set {
        if PP_CAPABLE.contains(&c) && dispatch::lookup(c).is_some() {
            if let Err(at) = list.binary_search(&c) {
                list.insert(at, c);
            }
        }
    }
    for c in clear {
        if c != cc::PP_COMMANDS {
            list.retain(|&x| x != c);
        }
    }
    cmd.nv_dirty = true;
    Ok(())
}

/// TPM2_SetAlgorithmSet: auth (platform, USER), algorithmSet (UINT32). The
/// value is kept in NV (and reported by TPM_PT_ALGORITHM_SET); this TPM has
/// one algorithm set, so it selects nothing else.
pub fn set_algorithm_set(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let set = cmd.params.u32().p(1)?;
    cmd.finish()?;
    tpm.p.algorithm_set = set;
    cmd.nv_dirty = true;
    Ok(())
}

/// TPM_RC_PP (Part 2 §6.6.3).
pub const RC_PP: u32 = rc::FMT1 + 0x010;
