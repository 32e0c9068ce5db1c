//! `tpm_dispatch`: raw command bytes into the TPM engine. The first byte chooses the
//! locality (bits 0..2, 0..=4 valid, others refused by the engine) and whether
//! TPM2_Startup(CLEAR) is sent first (bit 7); the rest is one or more commands, split
//! at their own `commandSize` fields (the last one takes whatever is left).
//!
//! Invariants: every response is a well-formed TPM response of its declared size,
//! and the TPM still answers a well-formed command afterwards.

use crate::tpm_common::{check_response, split_commands, startup_command, tpm};

/// Bit 7 of the control byte: send TPM2_Startup(CLEAR) first.
const STARTUP: u8 = 0x80;
const LOCALITY_MASK: u8 = 0x07;
/// TPM2_GetRandom(8), the command asked after the input's.
const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 8];

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&control, commands)) = data.split_first() else {
        return;
    };
    let mut t = tpm();
    let locality = control & LOCALITY_MASK;
    if control & STARTUP != 0 {
        check_response(&t.execute(0, &startup_command()));
    }
    for c in split_commands(commands) {
        check_response(&t.execute(locality, c));
    }
    check_response(&t.execute(0, &GET_RANDOM_8));
}
