//! Part 3 §16: TPM2_GetRandom and TPM2_StirRandom over the DRBG.

use crate::defs::limits;
use crate::engine::{Cmd, ParamErr, Tpm};

pub fn get_random(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let requested = cmd.params.u16().p(1)? as usize;
    cmd.finish()?;
    // At most one TPMU_HA's worth per call (Part 3 §16.1).
    let n = requested.min(limits::TPMU_HA_SIZE);
    let mut buf = [0u8; limits::TPMU_HA_SIZE];
    tpm.random(&mut buf[..n]);
    cmd.out.tpm2b(&buf[..n]);
    Ok(())
}

pub fn stir_random(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_SYM_DATA).p(1)?;
    cmd.finish()?;
    tpm.drbg.stir(data);
    Ok(())
}
