//! The TIS (FIFO) interface of the PC Client Platform TPM Profile as a pure state
//! machine over the engine: five locality pages with TPM_ACCESS arbitration
//! (requestUse, relinquish, seize), TPM_STS with commandReady / Expect / tpmGo /
//! dataAvail / responseRetry and burst counts, the data FIFO (byte, word or dword
//! wide), interrupts, and the ID registers — what Linux `tpm_tis` and EDK2's
//! Tpm2DeviceLibDTpm use. Commands execute synchronously on tpmGo.

use crate::defs::limits::MAX_COMMAND_SIZE;
use crate::engine::Tpm;
use crate::tis_regs::{fifo::*, LOCALITIES, LOCALITY_PAGE, REGION_SIZE};
use crate::tis_regs::{DEVICE_ID, REVISION_ID, VENDOR_ID};
use alloc::vec::Vec;
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};

/// Bytes of a command up to the end of its commandSize field.
const SIZE_FIELD_END: usize = 6;

/// Command/response phase of the FIFO interface (PTP §5.6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TisState {
    Idle,
    Ready,
    Reception,
    Completion,
}

/// A TIS front end owning its TPM engine.
pub struct Tis {
    tpm: Tpm,
    intid: Option<u32>,
    active: Option<u8>,
    pending: u8,
    seized: u8,
    established: bool,
    state: TisState,
    cmd: Vec<u8>,
    rsp: Vec<u8>,
    rsp_pos: usize,
    int_enable: [u32; LOCALITIES as usize],
    int_vector: [u8; LOCALITIES as usize],
    int_status: [u32; LOCALITIES as usize],
}

impl Tis {
    /// A TIS over `tpm`, raising `intid` (level-high) when interrupts are enabled.
    pub fn new(tpm: Tpm, intid: Option<u32>) -> Self {
        Self {
            tpm,
            intid,
            active: None,
            pending: 0,
            seized: 0,
            established: false,
            state: TisState::Idle,
            cmd: Vec::new(),
            rsp: Vec::new(),
            rsp_pos: 0,
            int_enable: [0; LOCALITIES as usize],
            int_vector: [0; LOCALITIES as usize],
            int_status: [0; LOCALITIES as usize],
        }
    }

    /// Size of the MMIO region.
    pub const REGION_SIZE: u64 = REGION_SIZE;

    /// The engine, e.g. to power-cycle it with the VM.
    pub fn tpm_mut(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// Platform reset: the interface returns to its power-on state and the TPM
    /// receives _TPM_Init.
    pub fn reset(&mut self) {
        self.active = None;
        self.pending = 0;
        self.seized = 0;
        self.established = false;
        self.abort_command();
        self.int_enable = [0; LOCALITIES as usize];
        self.int_vector = [0; LOCALITIES as usize];
        self.int_status = [0; LOCALITIES as usize];
        self.tpm.init();
    }

    /// Current phase (for tests and diagnostics).
    pub fn state(&self) -> TisState {
        self.state
    }

    fn command_complete(&self) -> bool {
        if self.cmd.len() >= MAX_COMMAND_SIZE {
            return true;
        }
        if self.cmd.len() < SIZE_FIELD_END {
            return false;
        }
        let size =
            u32::from_be_bytes([self.cmd[2], self.cmd[3], self.cmd[4], self.cmd[5]]) as usize;
        self.cmd.len() >= size
    }

    fn sts(&self, loc: u8) -> u32 {
        if self.active != Some(loc) {
            return u32::MAX;
        }
        let mut v = STS_FAMILY_TPM2 | STS_VALID | STS_SELF_TEST_DONE;
        let burst = match self.state {
            TisState::Idle => 0,
            TisState::Ready => {
                v |= STS_COMMAND_READY;
                MAX_COMMAND_SIZE - self.cmd.len()
            }
            TisState::Reception => {
                if !self.command_complete() {
                    v |= STS_EXPECT;
                }
                MAX_COMMAND_SIZE - self.cmd.len()
            }
            TisState::Completion => {
                let left = self.rsp.len() - self.rsp_pos;
                if left > 0 {
                    v |= STS_DATA_AVAIL;
                }
                left
            }
        };
        v | ((burst.min(0xFFFF) as u32) << STS_BURST_SHIFT)
    }

    fn access(&self, loc: u8) -> u8 {
        let mut v = ACCESS_REG_VALID;
        if !self.established {
            v |= ACCESS_ESTABLISHMENT;
        }
        if self.active == Some(loc) {
            v |= ACCESS_ACTIVE_LOCALITY;
        }
        if self.pending & !(1 << loc) != 0 {
            v |= ACCESS_PENDING_REQUEST;
        }
        if self.seized & (1 << loc) != 0 {
            v |= ACCESS_BEEN_SEIZED;
        }
        v
    }

    fn read_reg(&self, loc: u8, reg: u64) -> u32 {
        let l = loc as usize;
        match reg {
            ACCESS => u32::from(self.access(loc)),
            INT_ENABLE => self.int_enable[l],
            INT_VECTOR => u32::from(self.int_vector[l]),
            INT_STATUS => self.int_status[l],
            INTF_CAPABILITY => INTF_CAPABILITY_VALUE,
            STS => self.sts(loc),
            INTERFACE_ID => INTERFACE_ID_VALUE,
            DID_VID => u32::from(VENDOR_ID) | u32::from(DEVICE_ID) << 16,
            RID => u32::from(REVISION_ID),
            _ => 0,
        }
    }

    fn raise(&mut self, bits: u32) {
        if let Some(a) = self.active {
            self.int_status[a as usize] |= bits & self.int_enable[a as usize];
        }
    }

    fn update_irq(&mut self, ctx: &mut MmioContext) {
        let Some(intid) = self.intid else { return };
        let level = self.active.is_some_and(|a| {
            let a = a as usize;
            self.int_enable[a] & INT_GLOBAL_ENABLE != 0
                && self.int_status[a] & self.int_enable[a] & INT_SOURCES != 0
        });
        ctx.irq.set_level(intid, level);
    }

    fn abort_command(&mut self) {
        self.cmd.clear();
        self.rsp.clear();
        self.rsp_pos = 0;
        self.state = TisState::Idle;
    }

    fn set_active(&mut self, loc: Option<u8>) {
        if self.active != loc {
            self.abort_command();
            self.active = loc;
            if let Some(l) = loc {
                self.pending &= !(1 << l);
            }
            self.raise(INT_LOCALITY_CHANGE);
        }
    }

    fn write_access(&mut self, loc: u8, v: u8) {
        if v & ACCESS_SEIZE != 0 {
            if let Some(a) = self.active {
                if loc > a {
                    self.seized |= 1 << a;
                    self.set_active(Some(loc));
                }
            } else {
                self.set_active(Some(loc));
            }
            return;
        }
        if v & ACCESS_BEEN_SEIZED != 0 {
            self.seized &= !(1 << loc);
        }
        if v & ACCESS_ACTIVE_LOCALITY != 0 {
            // Relinquish (or withdraw a pending request).
            self.pending &= !(1 << loc);
            if self.active == Some(loc) {
                let next = (0..LOCALITIES).rev().find(|l| self.pending & (1 << l) != 0);
                self.set_active(None);
                self.set_active(next);
            }
        }
        if v & ACCESS_REQUEST_USE != 0 {
            match self.active {
                None => self.set_active(Some(loc)),
                Some(a) if a != loc => self.pending |= 1 << loc,
                _ => {}
            }
        }
    }

    fn write_sts(&mut self, loc: u8, v: u32) {
        if self.active != Some(loc) {
            log::warn!("vtpm-tis: STS write from inactive locality {loc}");
            return;
        }
        if v & STS_RESET_ESTABLISHMENT != 0 && loc >= 3 {
            self.established = false;
        }
        if v & STS_COMMAND_READY != 0 {
            self.cmd.clear();
            self.rsp.clear();
            self.rsp_pos = 0;
            self.state = TisState::Ready;
            self.raise(INT_COMMAND_READY);
        }
        if v & STS_GO != 0 {
            if self.state == TisState::Reception && self.command_complete() {
                self.rsp = self.tpm.execute(loc, &self.cmd);
                self.rsp_pos = 0;
                self.cmd.clear();
                self.state = TisState::Completion;
                self.raise(INT_DATA_AVAIL | INT_STS_VALID);
            } else {
                log::warn!("vtpm-tis: tpmGo in state {:?} ignored", self.state);
            }
        }
        if v & STS_RESPONSE_RETRY != 0 && self.state == TisState::Completion {
            self.rsp_pos = 0;
        }
    }

    fn fifo_read(&mut self, loc: u8, n: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..n {
            let b = if self.active == Some(loc)
                && self.state == TisState::Completion
                && self.rsp_pos < self.rsp.len()
            {
                self.rsp_pos += 1;
                self.rsp[self.rsp_pos - 1]
            } else {
                0xFF
            };
            v |= u64::from(b) << (8 * i);
        }
        v
    }

    fn fifo_write(&mut self, loc: u8, n: usize, value: u64) {
        if self.active != Some(loc) || !matches!(self.state, TisState::Ready | TisState::Reception)
        {
            log::warn!(
                "vtpm-tis: FIFO write dropped (locality {loc}, state {:?})",
                self.state
            );
            return;
        }
        for i in 0..n {
            if self.cmd.len() >= MAX_COMMAND_SIZE {
                log::warn!("vtpm-tis: command overflows the FIFO buffer");
                break;
            }
            self.cmd.push((value >> (8 * i)) as u8);
        }
        self.state = TisState::Reception;
    }
}

fn split(offset: u64) -> Result<(u8, u64), MmioError> {
    if offset >= REGION_SIZE {
        return Err(MmioError::NoRegister { offset });
    }
    Ok(((offset / LOCALITY_PAGE) as u8, offset % LOCALITY_PAGE))
}

fn is_fifo(reg: u64) -> bool {
    (DATA_FIFO..DATA_FIFO + 4).contains(&reg) || (XDATA_FIFO..XDATA_FIFO + 4).contains(&reg)
}

impl MmioDevice for Tis {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let (loc, reg) = split(offset)?;
        let n = size.bytes();
        if is_fifo(reg) {
            return Ok(self.fifo_read(loc, n as usize));
        }
        let shift = reg & 3;
        if shift + n > 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let v = u64::from(self.read_reg(loc, reg & !3)) >> (8 * shift);
        Ok(v & size.mask())
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let (loc, reg) = split(offset)?;
        let n = size.bytes();
        let value = value & size.mask();
        if is_fifo(reg) {
            self.fifo_write(loc, n as usize, value);
            self.update_irq(ctx);
            return Ok(());
        }
        let shift = reg & 3;
        if shift + n > 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let v = (value << (8 * shift)) as u32;
        let mask = (size.mask() << (8 * shift)) as u32;
        let l = loc as usize;
        match reg & !3 {
            ACCESS => {
                if shift == 0 {
                    self.write_access(loc, v as u8);
                }
            }
            INT_ENABLE => {
                let keep = self.int_enable[l] & !mask;
                self.int_enable[l] =
                    keep | (v & mask & (INT_SOURCES | INT_POLARITY_MASK | INT_GLOBAL_ENABLE));
            }
            INT_VECTOR => {
                if shift == 0 {
                    self.int_vector[l] = v as u8;
                }
            }
            INT_STATUS => self.int_status[l] &= !(v & mask),
            STS => self.write_sts(loc, v & mask),
            _ => log::warn!("vtpm-tis: write to read-only or unknown register {offset:#x}"),
        }
        self.update_irq(ctx);
        Ok(())
    }

    /// Platform reset ([`Tis::reset`]: _TPM_Init included); the interrupt line, if
    /// wired, is lowered.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        Tis::reset(self);
        if let Some(intid) = self.intid {
            irq.set_level(intid, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::cc;
    use crate::tests::{command, new_tpm, rc_of, SharedNv, TestClock};
    use vdev::{InterruptSink, VecMemory};

    #[derive(Default)]
    struct Irq(Option<bool>);
    impl InterruptSink for Irq {
        fn set_level(&mut self, _intid: u32, level: bool) {
            self.0 = Some(level);
        }
    }

    fn tis() -> Tis {
        Tis::new(
            new_tpm(&SharedNv::default(), &TestClock::default()),
            Some(42),
        )
    }

    fn rd(t: &mut Tis, irq: &mut Irq, off: u64, size: AccessSize) -> u64 {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        t.read(&mut ctx, off, size).unwrap()
    }

    fn wr(t: &mut Tis, irq: &mut Irq, off: u64, size: AccessSize, v: u64) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        t.write(&mut ctx, off, size, v).unwrap()
    }

    /// Sends a command the way Linux tpm_tis does: byte-wide FIFO writes checking
    /// Expect, tpmGo, then reads the header, the size and the rest.
    fn transact(t: &mut Tis, irq: &mut Irq, loc: u8, cmd: &[u8]) -> Vec<u8> {
        let base = u64::from(loc) * LOCALITY_PAGE;
        wr(
            t,
            irq,
            base + STS,
            AccessSize::Byte,
            u64::from(STS_COMMAND_READY),
        );
        assert_ne!(
            rd(t, irq, base + STS, AccessSize::Byte) as u32 & STS_COMMAND_READY,
            0
        );
        for (i, b) in cmd.iter().enumerate() {
            wr(t, irq, base + DATA_FIFO, AccessSize::Byte, u64::from(*b));
            let sts = rd(t, irq, base + STS, AccessSize::Word) as u32;
            assert_eq!(
                sts & STS_EXPECT != 0,
                i + 1 < cmd.len(),
                "expect after byte {i}"
            );
        }
        wr(t, irq, base + STS, AccessSize::Byte, u64::from(STS_GO));
        let sts = rd(t, irq, base + STS, AccessSize::Word) as u32;
        assert_ne!(sts & STS_DATA_AVAIL, 0);
        let burst = (sts >> STS_BURST_SHIFT) & 0xFFFF;
        let mut out = Vec::new();
        for _ in 0..burst {
            out.push(rd(t, irq, base + DATA_FIFO, AccessSize::Byte) as u8);
        }
        assert_eq!(
            rd(t, irq, base + STS, AccessSize::Byte) as u32 & STS_DATA_AVAIL,
            0
        );
        out
    }

    /// Locality 0 active with its interrupts enabled, TPM2_Startup done, and a
    /// TPM2_GetRandom response half read; locality 2 has asked for use.
    fn drive_tis(t: &mut Tis) {
        let mut irq = Irq::default();
        wr(
            t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        let ie = INT_GLOBAL_ENABLE | INT_DATA_AVAIL | INT_COMMAND_READY;
        wr(t, &mut irq, INT_ENABLE, AccessSize::Word, u64::from(ie));
        wr(t, &mut irq, INT_VECTOR, AccessSize::Byte, 9);
        let r = transact(t, &mut irq, 0, &command(cc::STARTUP, &[], &[], &[0, 0]));
        assert_eq!(rc_of(&r), 0);
        wr(
            t,
            &mut irq,
            STS,
            AccessSize::Byte,
            u64::from(STS_COMMAND_READY),
        );
        for b in command(cc::GET_RANDOM, &[], &[], &[0, 8]) {
            wr(t, &mut irq, DATA_FIFO, AccessSize::Byte, u64::from(b));
        }
        wr(t, &mut irq, STS, AccessSize::Byte, u64::from(STS_GO));
        rd(t, &mut irq, DATA_FIFO, AccessSize::Word);
        let l2 = 2 * LOCALITY_PAGE;
        wr(
            t,
            &mut irq,
            l2 + ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
    }

    /// What a guest sees: the registers of every locality, then six FIFO bytes.
    fn probe_tis(t: &mut Tis) -> Vec<u64> {
        let mut irq = Irq::default();
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let mut seen = Vec::new();
        for l in 0..u64::from(LOCALITIES) {
            for r in [
                ACCESS,
                INT_ENABLE,
                INT_VECTOR,
                INT_STATUS,
                INTF_CAPABILITY,
                STS,
                INTERFACE_ID,
                DID_VID,
                RID,
            ] {
                let size = if r == ACCESS || r == INT_VECTOR {
                    AccessSize::Byte
                } else {
                    AccessSize::Word
                };
                seen.push(
                    t.read(&mut ctx, l * LOCALITY_PAGE + r, size)
                        .unwrap_or(u64::MAX),
                );
            }
        }
        for _ in 0..6 {
            seen.push(
                t.read(&mut ctx, DATA_FIFO, AccessSize::Byte)
                    .unwrap_or(u64::MAX),
            );
        }
        seen.push(u64::from(irq.0 == Some(true)));
        seen
    }

    vdev::save_restore_tests!(saved_state, make: tis, drive: drive_tis, probe: probe_tis);

    #[test]
    fn save_restore_mid_response() {
        use vdev::SaveRestore;
        let mut t = tis();
        let mut irq = Irq::default();
        wr(
            &mut t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        let r = transact(
            &mut t,
            &mut irq,
            0,
            &command(cc::STARTUP, &[], &[], &[0, 0]),
        );
        assert_eq!(rc_of(&r), 0);
        wr(
            &mut t,
            &mut irq,
            STS,
            AccessSize::Byte,
            u64::from(STS_COMMAND_READY),
        );
        for b in command(cc::GET_RANDOM, &[], &[], &[0, 8]) {
            wr(&mut t, &mut irq, DATA_FIFO, AccessSize::Byte, u64::from(b));
        }
        wr(&mut t, &mut irq, STS, AccessSize::Byte, u64::from(STS_GO));
        let first = rd(&mut t, &mut irq, DATA_FIFO, AccessSize::Word);
        let blob = t.save();
        let mut u = tis();
        u.restore(&blob).unwrap();
        assert_eq!(u.save(), blob);
        assert_eq!(u.state(), TisState::Completion);
        assert_eq!(rd(&mut u, &mut irq, STS + 1, AccessSize::Half), 16);
        assert_eq!(first, u64::from(u32::from_le_bytes([0x80, 1, 0, 0])));
        // The restored engine is started.
        let r = transact(
            &mut u,
            &mut irq,
            0,
            &command(cc::GET_RANDOM, &[], &[], &[0, 8]),
        );
        assert_eq!(rc_of(&r), 0);
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert_eq!(u.restore(&bad), Err(vdev::RestoreError::WrongDevice));
        assert!(u.restore(&blob[..blob.len() - 1]).is_err());
    }

    #[test]
    fn ids_and_capabilities() {
        let mut t = tis();
        let mut irq = Irq::default();
        assert_eq!(rd(&mut t, &mut irq, DID_VID, AccessSize::Word), 0x0001_1014);
        assert_eq!(
            rd(&mut t, &mut irq, INTF_CAPABILITY, AccessSize::Word) >> 28,
            3
        );
        assert_eq!(
            rd(&mut t, &mut irq, ACCESS, AccessSize::Byte) as u8 & ACCESS_REG_VALID,
            ACCESS_REG_VALID
        );
        // STS of an inactive locality reads all ones.
        assert_eq!(rd(&mut t, &mut irq, STS, AccessSize::Word), 0xFFFF_FFFF);
    }

    #[test]
    fn locality_arbitration() {
        let mut t = tis();
        let mut irq = Irq::default();
        wr(
            &mut t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        assert_ne!(
            rd(&mut t, &mut irq, ACCESS, AccessSize::Byte) as u8 & ACCESS_ACTIVE_LOCALITY,
            0
        );
        let l2 = 2 * LOCALITY_PAGE;
        wr(
            &mut t,
            &mut irq,
            l2 + ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        assert_eq!(
            rd(&mut t, &mut irq, l2 + ACCESS, AccessSize::Byte) as u8 & ACCESS_ACTIVE_LOCALITY,
            0
        );
        assert_ne!(
            rd(&mut t, &mut irq, ACCESS, AccessSize::Byte) as u8 & ACCESS_PENDING_REQUEST,
            0
        );
        // Relinquish hands over to the pending locality.
        wr(
            &mut t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_ACTIVE_LOCALITY),
        );
        assert_ne!(
            rd(&mut t, &mut irq, l2 + ACCESS, AccessSize::Byte) as u8 & ACCESS_ACTIVE_LOCALITY,
            0
        );
        // Locality 4 seizes.
        let l4 = 4 * LOCALITY_PAGE;
        wr(
            &mut t,
            &mut irq,
            l4 + ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_SEIZE),
        );
        assert_ne!(
            rd(&mut t, &mut irq, l4 + ACCESS, AccessSize::Byte) as u8 & ACCESS_ACTIVE_LOCALITY,
            0
        );
        assert_ne!(
            rd(&mut t, &mut irq, l2 + ACCESS, AccessSize::Byte) as u8 & ACCESS_BEEN_SEIZED,
            0
        );
    }

    #[test]
    fn command_round_trip_with_interrupt() {
        let mut t = tis();
        let mut irq = Irq::default();
        wr(
            &mut t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        wr(
            &mut t,
            &mut irq,
            INT_ENABLE,
            AccessSize::Word,
            u64::from(INT_GLOBAL_ENABLE | INT_DATA_AVAIL),
        );
        let r = transact(
            &mut t,
            &mut irq,
            0,
            &command(cc::STARTUP, &[], &[], &[0, 0]),
        );
        assert_eq!(rc_of(&r), 0);
        assert_eq!(irq.0, Some(true));
        wr(
            &mut t,
            &mut irq,
            INT_STATUS,
            AccessSize::Word,
            u64::from(INT_DATA_AVAIL),
        );
        assert_eq!(irq.0, Some(false));
        let r = transact(
            &mut t,
            &mut irq,
            0,
            &command(cc::GET_RANDOM, &[], &[], &[0, 16]),
        );
        assert_eq!(r.len(), 10 + 2 + 16);
        // responseRetry rereads the response.
        wr(
            &mut t,
            &mut irq,
            STS,
            AccessSize::Byte,
            u64::from(STS_RESPONSE_RETRY),
        );
        assert_eq!(
            rd(&mut t, &mut irq, DATA_FIFO, AccessSize::Word) as u32,
            u32::from_le_bytes([0x80, 0x01, 0, 0])
        );
    }

    #[test]
    fn wide_fifo_access_and_early_go_ignored() {
        let mut t = tis();
        let mut irq = Irq::default();
        wr(
            &mut t,
            &mut irq,
            ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        wr(
            &mut t,
            &mut irq,
            STS,
            AccessSize::Byte,
            u64::from(STS_COMMAND_READY),
        );
        let c = command(cc::STARTUP, &[], &[], &[0, 0]);
        wr(
            &mut t,
            &mut irq,
            DATA_FIFO,
            AccessSize::Word,
            u64::from(u32::from_le_bytes(c[0..4].try_into().unwrap())),
        );
        wr(&mut t, &mut irq, STS, AccessSize::Byte, u64::from(STS_GO));
        assert_eq!(t.state(), TisState::Reception);
        for b in &c[4..] {
            wr(
                &mut t,
                &mut irq,
                XDATA_FIFO,
                AccessSize::Byte,
                u64::from(*b),
            );
        }
        wr(&mut t, &mut irq, STS, AccessSize::Byte, u64::from(STS_GO));
        assert_eq!(t.state(), TisState::Completion);
        assert_eq!(rd(&mut t, &mut irq, STS + 1, AccessSize::Half), 10);
        assert!(t
            .read(
                &mut MmioContext {
                    vcpu: 0,
                    mem: &mut VecMemory::new(0, 0),
                    irq: &mut irq
                },
                STS,
                AccessSize::Double
            )
            .is_err());
    }
}

mod save {
    //! Snapshot of the TIS interface and its engine's volatile state.
    use super::*;
    use crate::marshal::{Reader, Writer};
    use vdev::{RestoreError, SaveRestore};

    /// The saved `active` of no active locality.
    const NO_LOCALITY: u8 = 0xFF;

    impl SaveRestore for Tis {
        const SAVE_ID: [u8; 4] = *b"VTIS";
        const SAVE_VERSION: u32 = 1;

        fn save(&self) -> Vec<u8> {
            let Self {
                tpm,
                // Wiring from the VM definition, not state.
                intid: _,
                active,
                pending,
                seized,
                established,
                state,
                cmd,
                rsp,
                rsp_pos,
                int_enable,
                int_vector,
                int_status,
            } = self;
            let mut w = Writer::new();
            w.bytes(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
            w.u8(active.unwrap_or(NO_LOCALITY))
                .u8(*pending)
                .u8(*seized)
                .u8(u8::from(*established));
            w.u8(match state {
                TisState::Idle => 0,
                TisState::Ready => 1,
                TisState::Reception => 2,
                TisState::Completion => 3,
            });
            w.u32(cmd.len() as u32).bytes(cmd);
            w.u32(rsp.len() as u32).bytes(rsp).u32(*rsp_pos as u32);
            for l in 0..LOCALITIES as usize {
                w.u32(int_enable[l]).u8(int_vector[l]).u32(int_status[l]);
            }
            w.bytes(&tpm.save_volatile());
            w.buf
        }

        fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
            let m = |_| RestoreError::Malformed;
            let (_version, payload) = vdev::save::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
            let mut r = Reader::new(payload);
            let active = match r.u8().map_err(m)? {
                NO_LOCALITY => None,
                l if l < LOCALITIES => Some(l),
                _ => return Err(RestoreError::Malformed),
            };
            let mask = (1u8 << LOCALITIES) - 1;
            let pending = r.u8().map_err(m)?;
            let seized = r.u8().map_err(m)?;
            let established = r.u8().map_err(m)?;
            if pending & !mask != 0 || seized & !mask != 0 || established > 1 {
                return Err(RestoreError::Malformed);
            }
            let state = match r.u8().map_err(m)? {
                0 => TisState::Idle,
                1 => TisState::Ready,
                2 => TisState::Reception,
                3 => TisState::Completion,
                _ => return Err(RestoreError::Malformed),
            };
            let n = r.u32().map_err(m)? as usize;
            if n > MAX_COMMAND_SIZE {
                return Err(RestoreError::Malformed);
            }
            let cmd = r.bytes(n).map_err(m)?.to_vec();
            let n = r.u32().map_err(m)? as usize;
            if n > crate::defs::limits::MAX_RESPONSE_SIZE {
                return Err(RestoreError::Malformed);
            }
            let rsp = r.bytes(n).map_err(m)?.to_vec();
            let rsp_pos = r.u32().map_err(m)? as usize;
            if rsp_pos > rsp.len() {
                return Err(RestoreError::Malformed);
            }
            let mut ie = [0u32; LOCALITIES as usize];
            let mut iv = [0u8; LOCALITIES as usize];
            let mut is = [0u32; LOCALITIES as usize];
            for l in 0..LOCALITIES as usize {
                ie[l] = r.u32().map_err(m)?;
                iv[l] = r.u8().map_err(m)?;
                is[l] = r.u32().map_err(m)?;
                // Only bits a guest can set (as the register writes mask them).
                if ie[l] & !(INT_SOURCES | INT_POLARITY_MASK | INT_GLOBAL_ENABLE) != 0
                    || is[l] & !INT_SOURCES != 0
                {
                    return Err(RestoreError::Malformed);
                }
            }
            let Self {
                tpm,
                intid: _,
                active: s_active,
                pending: s_pending,
                seized: s_seized,
                established: s_established,
                state: s_state,
                cmd: s_cmd,
                rsp: s_rsp,
                rsp_pos: s_rsp_pos,
                int_enable,
                int_vector,
                int_status,
            } = self;
            // The engine last of the checks: if it refuses, nothing has changed.
            tpm.restore_volatile(r.rest())?;
            *s_active = active;
            *s_pending = pending;
            *s_seized = seized;
            *s_established = established == 1;
            *s_state = state;
            *s_cmd = cmd;
            *s_rsp = rsp;
            *s_rsp_pos = rsp_pos;
            *int_enable = ie;
            *int_vector = iv;
            *int_status = is;
            Ok(())
        }
    }
}
