//! The Command Response Buffer (CRB) interface of the PC Client Platform TPM
//! Profile as a pure state machine over the engine: locality arbitration through
//! TPM_LOC_CTRL/LOC_STATE/LOC_STS, the control area (CTRL_REQ cmdReady/goIdle,
//! CTRL_STS, CTRL_CANCEL, CTRL_START) and the command/response buffer inside the
//! MMIO region, whose guest-physical address the control area reports. This is the
//! interface Windows and Linux `tpm_crb` drive (ACPI TPM2 start method 6 or 7;
//! with 7 the OS also calls the ACPI start _DSM, which needs nothing from the
//! device). Commands execute synchronously when CTRL_START is written.

use crate::engine::Tpm;
use crate::tis_regs::crb::*;
use crate::tis_regs::{LOCALITIES, LOCALITY_PAGE, REGION_SIZE};
use alloc::vec;
use alloc::vec::Vec;
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};

/// A CRB front end owning its TPM engine.
pub struct Crb {
    tpm: Tpm,
    base: u64,
    active: Option<u8>,
    seized: u8,
    idle: bool,
    int_enable: u32,
    int_sts: u32,
    intid: Option<u32>,
    buffer: Vec<u8>,
}

impl Crb {
    /// A CRB over `tpm`, mapped at guest-physical `base` (the control area reports
    /// the buffer's address from it), raising `intid` on start completion when the
    /// guest enables it.
    pub fn new(tpm: Tpm, base: u64, intid: Option<u32>) -> Self {
        Self {
            tpm,
            base,
            active: None,
            seized: 0,
            idle: true,
            int_enable: 0,
            int_sts: 0,
            intid,
            buffer: vec![0; DATA_BUFFER_SIZE],
        }
    }

    /// Size of the MMIO region.
    pub const REGION_SIZE: u64 = REGION_SIZE;

    /// The engine, e.g. to power-cycle it with the VM.
    pub fn tpm_mut(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// Platform reset: interface back to power-on state, _TPM_Init to the TPM.
    pub fn reset(&mut self) {
        self.active = None;
        self.seized = 0;
        self.idle = true;
        self.int_enable = 0;
        self.int_sts = 0;
        self.buffer.fill(0);
        self.tpm.init();
    }

    fn buffer_gpa(&self) -> u64 {
        self.base + DATA_BUFFER
    }

    fn read_reg(&self, loc: u8, reg: u64) -> u32 {
        match reg {
            LOC_STATE => {
                let mut v = LOC_STATE_REG_VALID | LOC_STATE_ESTABLISHED;
                if let Some(a) = self.active {
                    v |= LOC_STATE_ASSIGNED | (u32::from(a) << LOC_STATE_ACTIVE_SHIFT);
                }
                v
            }
            LOC_STS => {
                let mut v = 0;
                if self.active == Some(loc) {
                    v |= LOC_STS_GRANTED;
                }
                if self.seized & (1 << loc) != 0 {
                    v |= LOC_STS_BEEN_SEIZED;
                }
                v
            }
            INTF_ID_LO => INTF_ID_LO_VALUE,
            INTF_ID_HI => INTF_ID_HI_VALUE,
            CTRL_STS if self.idle => STS_IDLE,
            INT_ENABLE => self.int_enable,
            INT_STS => self.int_sts,
            CTRL_CMD_SIZE | CTRL_RSP_SIZE => DATA_BUFFER_SIZE as u32,
            CTRL_CMD_LADDR | CTRL_RSP_ADDR_LO => self.buffer_gpa() as u32,
            CTRL_CMD_HADDR | CTRL_RSP_ADDR_HI => (self.buffer_gpa() >> 32) as u32,
            // CTRL_REQ, CTRL_CANCEL and CTRL_START complete synchronously and read 0.
            _ => 0,
        }
    }

    fn write_loc_ctrl(&mut self, loc: u8, v: u32) {
        if v & LOC_CTRL_SEIZE != 0 {
            if let Some(a) = self.active {
                if loc > a {
                    self.seized |= 1 << a;
                    self.active = Some(loc);
                }
            }
        }
        if v & LOC_CTRL_REQUEST != 0 && self.active.is_none() {
            self.active = Some(loc);
            self.seized &= !(1 << loc);
        }
        if v & LOC_CTRL_RELINQUISH != 0 && self.active == Some(loc) {
            self.active = None;
        }
    }

    fn start(&mut self, loc: u8, ctx: &mut MmioContext) {
        if self.active != Some(loc) {
            log::warn!("vtpm-crb: START from locality {loc} which is not active");
            return;
        }
        if self.idle {
            // CRB idle bypass: a START while idle implies cmdReady.
            self.idle = false;
        }
        let declared = if self.buffer.len() >= 6 {
            u32::from_be_bytes([
                self.buffer[2],
                self.buffer[3],
                self.buffer[4],
                self.buffer[5],
            ]) as usize
        } else {
            0
        };
        let len = declared.clamp(
            crate::defs::limits::HEADER_SIZE.min(self.buffer.len()),
            self.buffer.len(),
        );
        let rsp = self.tpm.execute(loc, &self.buffer[..len]);
        let n = rsp.len().min(self.buffer.len());
        self.buffer[..n].copy_from_slice(&rsp[..n]);
        self.int_sts |= INT_START;
        self.update_irq(ctx);
    }

    fn update_irq(&mut self, ctx: &mut MmioContext) {
        if let Some(intid) = self.intid {
            let level = self.int_enable & INT_GLOBAL_ENABLE != 0
                && self.int_sts & self.int_enable & INT_START != 0;
            ctx.irq.set_level(intid, level);
        }
    }
}

fn split(offset: u64) -> Result<(u8, u64), MmioError> {
    if offset >= REGION_SIZE {
        return Err(MmioError::NoRegister { offset });
    }
    let loc = (offset / LOCALITY_PAGE) as u8;
    debug_assert!(loc < LOCALITIES);
    Ok((loc, offset % LOCALITY_PAGE))
}

impl MmioDevice for Crb {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let (loc, reg) = split(offset)?;
        let n = size.bytes();
        if loc == 0 && reg >= DATA_BUFFER {
            let at = (reg - DATA_BUFFER) as usize;
            let mut v = 0u64;
            for i in 0..n as usize {
                v |= u64::from(self.buffer.get(at + i).copied().unwrap_or(0)) << (8 * i);
            }
            return Ok(v);
        }
        if n == 8 && reg & 7 == 0 {
            let lo = u64::from(self.read_reg(loc, reg));
            let hi = u64::from(self.read_reg(loc, reg + 4));
            return Ok(lo | hi << 32);
        }
        let shift = reg & 3;
        if shift + n > 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        Ok((u64::from(self.read_reg(loc, reg & !3)) >> (8 * shift)) & size.mask())
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
        if loc == 0 && reg >= DATA_BUFFER {
            let at = (reg - DATA_BUFFER) as usize;
            for i in 0..n as usize {
                if let Some(b) = self.buffer.get_mut(at + i) {
                    *b = (value >> (8 * i)) as u8;
                }
            }
            return Ok(());
        }
        // A 64-bit store to an 8-aligned register pair is two 32-bit writes, low
        // half first (EDK2's CRB driver stores TPM_CRB_CTRL_RSP_ADDR this way).
        if n == 8 && reg & 7 == 0 {
            self.write_reg(ctx, loc, reg, value as u32);
            self.write_reg(ctx, loc, reg + 4, (value >> 32) as u32);
            return Ok(());
        }
        let shift = reg & 3;
        if shift + n > 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        // A narrow write is its bytes in place, the register's other bytes zero
        // (the control registers act on the bits written as one).
        self.write_reg(ctx, loc, reg & !3, (value << (8 * shift)) as u32);
        Ok(())
    }

    /// Platform reset ([`Crb::reset`]: _TPM_Init included); the interrupt line, if
    /// wired, is lowered.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        Crb::reset(self);
        if let Some(intid) = self.intid {
            irq.set_level(intid, false);
        }
    }
}

impl Crb {
    /// A write of the whole 32-bit register `reg` (4-aligned) of locality `loc`.
    fn write_reg(&mut self, ctx: &mut MmioContext, loc: u8, reg: u64, v: u32) {
        let active = self.active == Some(loc);
        match reg & !3 {
            LOC_CTRL => self.write_loc_ctrl(loc, v),
            CTRL_REQ if active => {
                if v & REQ_CMD_READY != 0 {
                    self.idle = false;
                }
                if v & REQ_GO_IDLE != 0 {
                    self.idle = true;
                }
            }
            CTRL_CANCEL if active => {}
            CTRL_START if active => {
                if v & 1 != 0 {
                    self.start(loc, ctx);
                }
            }
            INT_ENABLE => {
                self.int_enable = v & (INT_START | INT_GLOBAL_ENABLE);
                self.update_irq(ctx);
            }
            INT_STS => {
                self.int_sts &= !v;
                self.update_irq(ctx);
            }
            // The buffer's address and size are fixed: a driver writing back what
            // it read (EDK2 does) changes nothing and is not worth a log line.
            CTRL_CMD_SIZE..=CTRL_RSP_ADDR_HI if self.read_reg(loc, reg) == v => {}
            r => log::warn!("vtpm-crb: write {v:#x} to register {r:#x} of locality {loc} ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::cc;
    use crate::tests::{command, new_tpm, rc_of, SharedNv, TestClock};
    use vdev::{NullInterrupts, VecMemory};

    fn io<R>(f: impl FnOnce(&mut MmioContext) -> R) -> R {
        let mut mem = VecMemory::new(0, 0);
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        f(&mut ctx)
    }

    /// Drives the CRB the way Linux tpm_crb does: request locality, cmdReady,
    /// copy the command into the buffer, START, poll START, read the response.
    fn transact(c: &mut Crb, cmd: &[u8]) -> Vec<u8> {
        io(|x| {
            c.write(x, CTRL_REQ, AccessSize::Word, u64::from(REQ_CMD_READY))
                .unwrap();
            assert_eq!(c.read(x, CTRL_REQ, AccessSize::Word).unwrap(), 0);
            assert_eq!(
                c.read(x, CTRL_STS, AccessSize::Word).unwrap() as u32 & STS_IDLE,
                0
            );
            let addr = c.read(x, CTRL_CMD_LADDR, AccessSize::Word).unwrap() - 0x0C00_0000;
            for (i, chunk) in cmd.chunks(4).enumerate() {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                c.write(
                    x,
                    addr + 4 * i as u64,
                    AccessSize::Word,
                    u64::from(u32::from_le_bytes(w)),
                )
                .unwrap();
            }
            c.write(x, CTRL_START, AccessSize::Word, 1).unwrap();
            assert_eq!(c.read(x, CTRL_START, AccessSize::Word).unwrap(), 0);
            let rsp_addr = c.read(x, CTRL_RSP_ADDR_LO, AccessSize::Double).unwrap() - 0x0C00_0000;
            let mut hdr = Vec::new();
            for i in 0..10 {
                hdr.push(c.read(x, rsp_addr + i, AccessSize::Byte).unwrap() as u8);
            }
            let len = u32::from_be_bytes(hdr[2..6].try_into().unwrap()) as u64;
            for i in 10..len {
                hdr.push(c.read(x, rsp_addr + i, AccessSize::Byte).unwrap() as u8);
            }
            hdr
        })
    }

    fn crb() -> Crb {
        Crb::new(
            new_tpm(&SharedNv::default(), &TestClock::default()),
            0x0C00_0000,
            None,
        )
    }

    #[test]
    fn interface_id_says_crb() {
        let mut c = crb();
        let id = io(|x| c.read(x, INTF_ID_LO, AccessSize::Word).unwrap()) as u32;
        assert_eq!(id & 0xF, 1);
        assert_eq!((id >> 17) & 3, 1);
        assert_eq!(
            io(|x| c.read(x, INTF_ID_HI, AccessSize::Word).unwrap()),
            0x0001_1014
        );
    }

    #[test]
    fn locality_and_commands() {
        let mut c = crb();
        let state = io(|x| c.read(x, LOC_STATE, AccessSize::Word).unwrap()) as u32;
        assert_eq!(state & LOC_STATE_ASSIGNED, 0);
        io(|x| {
            c.write(x, LOC_CTRL, AccessSize::Word, u64::from(LOC_CTRL_REQUEST))
                .unwrap()
        });
        let state = io(|x| c.read(x, LOC_STATE, AccessSize::Word).unwrap()) as u32;
        assert_ne!(state & LOC_STATE_ASSIGNED, 0);
        assert_eq!(
            io(|x| c.read(x, LOC_STS, AccessSize::Word).unwrap()) as u32 & LOC_STS_GRANTED,
            LOC_STS_GRANTED
        );
        assert_eq!(
            rc_of(&transact(&mut c, &command(cc::STARTUP, &[], &[], &[0, 0]))),
            0
        );
        let r = transact(&mut c, &command(cc::GET_RANDOM, &[], &[], &[0, 8]));
        assert_eq!(r.len(), 20);
        // A locality that is not active cannot start.
        let l1 = LOCALITY_PAGE;
        io(|x| {
            c.write(
                x,
                l1 + LOC_CTRL,
                AccessSize::Word,
                u64::from(LOC_CTRL_REQUEST),
            )
            .unwrap()
        });
        assert_eq!(
            io(|x| c.read(x, l1 + LOC_STS, AccessSize::Word).unwrap()),
            0
        );
        // goIdle then relinquish.
        io(|x| {
            c.write(x, CTRL_REQ, AccessSize::Word, u64::from(REQ_GO_IDLE))
                .unwrap()
        });
        assert_eq!(
            io(|x| c.read(x, CTRL_STS, AccessSize::Word).unwrap()) as u32,
            STS_IDLE
        );
        io(|x| {
            c.write(
                x,
                LOC_CTRL,
                AccessSize::Word,
                u64::from(LOC_CTRL_RELINQUISH),
            )
            .unwrap()
        });
        assert_eq!(
            io(|x| c.read(x, LOC_STATE, AccessSize::Word).unwrap()) as u32 & LOC_STATE_ASSIGNED,
            0
        );
    }

    /// EDK2's driver writes the control area's buffer registers back with 64-bit
    /// stores of the values it read: accepted, nothing changes, and commands go
    /// on working. A different value does not move the buffer, and a 64-bit
    /// store to an 8-aligned control register pair acts as its two halves.
    #[test]
    fn sixty_four_bit_write_backs_of_the_buffer_registers_are_accepted() {
        let mut c = crb();
        io(|x| {
            c.write(x, LOC_CTRL, AccessSize::Word, u64::from(LOC_CTRL_REQUEST))
                .unwrap();
            let rsp = c.read(x, CTRL_RSP_ADDR_LO, AccessSize::Double).unwrap();
            let sizes = c.read(x, CTRL_CMD_SIZE, AccessSize::Word).unwrap();
            c.write(x, CTRL_RSP_ADDR_LO, AccessSize::Double, rsp)
                .unwrap();
            c.write(x, CTRL_RSP_ADDR_LO, AccessSize::Double, 0x1234_5000)
                .unwrap();
            c.write(x, CTRL_CMD_SIZE, AccessSize::Word, 16).unwrap();
            assert_eq!(
                c.read(x, CTRL_RSP_ADDR_LO, AccessSize::Double).unwrap(),
                rsp
            );
            assert_eq!(c.read(x, CTRL_CMD_SIZE, AccessSize::Word).unwrap(), sizes);
            // CTRL_CANCEL (0x48) and CTRL_START (0x4C) as one store: START runs.
            c.write(x, CTRL_REQ, AccessSize::Word, u64::from(REQ_CMD_READY))
                .unwrap();
        });
        let startup = command(cc::STARTUP, &[], &[], &[0, 0]);
        io(|x| {
            for (i, chunk) in startup.chunks(4).enumerate() {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                c.write(
                    x,
                    DATA_BUFFER + 4 * i as u64,
                    AccessSize::Word,
                    u64::from(u32::from_le_bytes(w)),
                )
                .unwrap();
            }
            c.write(x, CTRL_CANCEL, AccessSize::Double, 1 << 32)
                .unwrap();
            let rc = (0..4)
                .map(|i| c.read(x, DATA_BUFFER + 6 + i, AccessSize::Byte).unwrap() as u8)
                .collect::<Vec<_>>();
            assert_eq!(rc, [0, 0, 0, 0], "TPM2_Startup through a 64-bit START");
        });
        let r = transact(&mut c, &command(cc::GET_RANDOM, &[], &[], &[0, 8]));
        assert_eq!((rc_of(&r), r.len()), (0, 20));
        // A 64-bit store that is not 8-aligned is still refused.
        assert!(io(|x| c.write(x, CTRL_STS, AccessSize::Double, 0)).is_err());
    }

    #[test]
    fn garbage_in_buffer_gets_an_error_response() {
        let mut c = crb();
        io(|x| {
            c.write(x, LOC_CTRL, AccessSize::Word, u64::from(LOC_CTRL_REQUEST))
                .unwrap()
        });
        let r = transact(&mut c, &[0xFF; 3]);
        assert_eq!(r.len(), 10);
        assert_ne!(rc_of(&r), 0);
    }
}

mod save {
    //! Snapshot of the CRB interface and its engine's volatile state.
    use super::*;
    use crate::marshal::{Reader, Writer};
    use vdev::{RestoreError, SaveRestore};

    /// The saved `active` of no active locality.
    const NO_LOCALITY: u8 = 0xFF;

    impl SaveRestore for Crb {
        const SAVE_ID: [u8; 4] = *b"VCRB";
        const SAVE_VERSION: u32 = 1;

        fn save(&self) -> Vec<u8> {
            let Self {
                tpm,
                // Wiring from the VM definition, not state.
                base: _,
                intid: _,
                active,
                seized,
                idle,
                int_enable,
                int_sts,
                buffer,
            } = self;
            let mut w = Writer::new();
            w.bytes(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
            w.u8(active.unwrap_or(NO_LOCALITY))
                .u8(*seized)
                .u8(u8::from(*idle));
            w.u32(*int_enable).u32(*int_sts).bytes(buffer);
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
            let seized = r.u8().map_err(m)?;
            let idle = r.u8().map_err(m)?;
            if seized >> LOCALITIES != 0 || idle > 1 {
                return Err(RestoreError::Malformed);
            }
            let int_enable = r.u32().map_err(m)?;
            let int_sts = r.u32().map_err(m)?;
            // Only bits a guest or a completed command can set.
            if int_enable & !(INT_START | INT_GLOBAL_ENABLE) != 0 || int_sts & !INT_START != 0 {
                return Err(RestoreError::Malformed);
            }
            let buffer = r.bytes(DATA_BUFFER_SIZE).map_err(m)?.to_vec();
            let Self {
                tpm,
                base: _,
                intid: _,
                active: s_active,
                seized: s_seized,
                idle: s_idle,
                int_enable: s_int_enable,
                int_sts: s_int_sts,
                buffer: s_buffer,
            } = self;
            // The engine last of the checks: if it refuses, nothing has changed.
            tpm.restore_volatile(r.rest())?;
            *s_active = active;
            *s_seized = seized;
            *s_idle = idle == 1;
            *s_int_enable = int_enable;
            *s_int_sts = int_sts;
            *s_buffer = buffer;
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::tests_support::crb;
        use super::*;
        use crate::defs::cc;
        use crate::tests::command;
        use alloc::vec::Vec;

        fn io<R>(f: impl FnOnce(&mut MmioContext) -> R) -> R {
            let mut mem = vdev::VecMemory::new(0, 0);
            let mut ctx = MmioContext {
                vcpu: 0,
                mem: &mut mem,
                irq: &mut vdev::NullInterrupts,
            };
            f(&mut ctx)
        }

        /// Locality 0 requested, the interrupt enabled, TPM2_Startup run through
        /// the buffer: the CRB is busy with a response waiting and its interrupt
        /// status set; locality 1's seize is recorded.
        fn drive_crb(c: &mut Crb) {
            let cmd = command(cc::STARTUP, &[], &[], &[0, 0]);
            io(|x| {
                let w = |c: &mut Crb, x: &mut MmioContext, off: u64, v: u32| {
                    c.write(x, off, AccessSize::Word, u64::from(v)).unwrap()
                };
                w(c, x, LOC_CTRL, LOC_CTRL_REQUEST);
                w(c, x, LOCALITY_PAGE + LOC_CTRL, LOC_CTRL_SEIZE);
                w(
                    c,
                    x,
                    LOCALITY_PAGE + INT_ENABLE,
                    INT_START | INT_GLOBAL_ENABLE,
                );
                w(c, x, LOCALITY_PAGE + CTRL_REQ, REQ_CMD_READY);
                for (i, chunk) in cmd.chunks(4).enumerate() {
                    let mut b = [0u8; 4];
                    b[..chunk.len()].copy_from_slice(chunk);
                    w(c, x, DATA_BUFFER + 4 * i as u64, u32::from_le_bytes(b));
                }
                w(c, x, LOCALITY_PAGE + CTRL_START, 1);
            });
        }

        /// What a guest sees: every register of every locality's control area,
        /// and the buffer.
        fn probe_crb(c: &mut Crb) -> Vec<u64> {
            io(|x| {
                (0..u64::from(LOCALITIES))
                    .flat_map(|l| {
                        (0..DATA_BUFFER)
                            .step_by(4)
                            .map(move |r| l * LOCALITY_PAGE + r)
                    })
                    .chain((DATA_BUFFER..LOCALITY_PAGE).step_by(4))
                    .map(|off| c.read(x, off, AccessSize::Word).unwrap())
                    .collect()
            })
        }

        vdev::save_restore_tests!(saved_state, make: crb, drive: drive_crb, probe: probe_crb);

        #[test]
        fn round_trip_and_refusals() {
            let mut c = crb();
            let mut mem = vdev::VecMemory::new(0, 0);
            let mut irq = vdev::NullInterrupts;
            let mut ctx = MmioContext {
                vcpu: 0,
                mem: &mut mem,
                irq: &mut irq,
            };
            c.write(
                &mut ctx,
                LOC_CTRL,
                AccessSize::Word,
                u64::from(LOC_CTRL_REQUEST),
            )
            .unwrap();
            c.write(&mut ctx, DATA_BUFFER, AccessSize::Word, 0x1234_5678)
                .unwrap();
            let blob = c.save();
            let mut d = crb();
            d.restore(&blob).unwrap();
            assert_eq!(d.save(), blob);
            assert_eq!(
                d.read(&mut ctx, DATA_BUFFER, AccessSize::Word).unwrap(),
                0x1234_5678
            );
            assert_ne!(
                d.read(&mut ctx, LOC_STATE, AccessSize::Word).unwrap() as u32 & LOC_STATE_ASSIGNED,
                0
            );
            let mut bad = blob.clone();
            bad[8] = 9;
            assert_eq!(d.restore(&bad), Err(RestoreError::Malformed));
            assert_eq!(d.restore(&blob[..20]), Err(RestoreError::Malformed));
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::Crb;
    use crate::tests::{new_tpm, SharedNv, TestClock};

    pub fn crb() -> Crb {
        Crb::new(
            new_tpm(&SharedNv::default(), &TestClock::default()),
            0x0C00_0000,
            None,
        )
    }
}
