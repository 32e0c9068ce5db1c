//! The TIS (FIFO) interface over SPI (TCG PC Client Platform TPM Profile, SPI
//! hardware protocol): [`TisSpi`] is a byte-level [`devices::SpiSlave`] that
//! decodes each transaction — a 4-byte header (bit 7 of byte 0: read; bits 5:0:
//! transfer size − 1; bytes 1..=3: a 24-bit address in the 0xD4_xxxx TPM space),
//! then 1..=64 data bytes — into register accesses on the same [`Tis`] state
//! machine the MMIO front end uses (offset = address & 0xFFFF: locality page and
//! register). The TPM is always ready, so the last header byte carries the
//! flow-control bit set and data follows immediately, no wait states.

use crate::tis::Tis;
use crate::tis_regs::{fifo, REGION_SIZE};
use alloc::vec::Vec;
use devices::SpiSlave;
use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, MmioContext, MmioDevice, NullInterrupts, RestoreError, SaveRestore, VecMemory,
};

/// SPI transaction encoding (PTP §7.4.6).
pub mod defs {
    /// Header length in bytes.
    pub const HEADER_LEN: usize = 4;
    /// Byte 0, bit 7: the transaction reads from the TPM.
    pub const HEADER_READ: u8 = 1 << 7;
    /// Byte 0, bits 5:0: transfer size minus one (1..=64 bytes).
    pub const HEADER_SIZE_MASK: u8 = 0x3f;
    /// Byte 0, bit 6: reserved, zero.
    pub const HEADER_RESERVED: u8 = 1 << 6;
    /// Address bits 23:16 of every TPM register (the 0xD4_0000 base of the
    /// locality space).
    pub const ADDRESS_SPACE: u8 = 0xd4;
    /// MISO bit 0 of the last header byte: 1 = no wait state, data follows.
    pub const FLOW_CONTROL_READY: u8 = 1 << 0;
    /// MISO of the other header bytes and of bytes beyond a transfer.
    pub const MISO_FILL: u8 = 0x00;
    /// What reads of addresses outside the TPM return.
    pub const UNMAPPED_READ: u8 = 0xff;
    /// Most data bytes one transaction carries.
    pub const MAX_TRANSFER: usize = HEADER_SIZE_MASK as usize + 1;
}

use defs::*;

/// Where the slave is in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Chip select inactive.
    Idle,
    /// Header bytes received so far.
    Header { bytes: [u8; HEADER_LEN], n: usize },
    /// Read data: the bytes fetched at the end of the header, and how many went out.
    Read { data: Vec<u8>, sent: usize },
    /// Write data collected so far for `len` bytes at `offset` (`None`: outside
    /// the TPM, dropped).
    Write {
        offset: Option<u64>,
        len: usize,
        data: Vec<u8>,
    },
    /// The transfer is complete; further bytes until deselect are ignored.
    Done,
}

/// A TIS front end reached over SPI.
pub struct TisSpi {
    tis: Tis,
    phase: Phase,
}

impl TisSpi {
    /// The SPI interface of `tis` (whose interrupt, if any, is not wired: SPI
    /// masters poll).
    pub fn new(tis: Tis) -> Self {
        Self {
            tis,
            phase: Phase::Idle,
        }
    }

    /// The TIS register model behind the bus.
    pub fn tis_mut(&mut self) -> &mut Tis {
        &mut self.tis
    }

    /// Platform reset: any transaction is abandoned and the TIS is reset (the
    /// TPM receives _TPM_Init).
    pub fn reset(&mut self) {
        self.phase = Phase::Idle;
        self.tis.reset();
    }

    /// The register offset of a 24-bit SPI address, if it is a TPM register.
    fn offset_of(addr: u32) -> Option<u64> {
        if (addr >> 16) as u8 != ADDRESS_SPACE {
            return None;
        }
        let off = u64::from(addr & 0xffff);
        (off < REGION_SIZE).then_some(off)
    }

    fn is_fifo(offset: u64) -> bool {
        let reg = offset % crate::tis_regs::LOCALITY_PAGE;
        (fifo::DATA_FIFO..fifo::DATA_FIFO + 4).contains(&reg)
            || (fifo::XDATA_FIFO..fifo::XDATA_FIFO + 4).contains(&reg)
    }

    /// The accesses one transfer of `len` bytes at `offset` becomes: FIFO transfers
    /// stay on the FIFO byte by byte; a naturally aligned 1, 2 or 4-byte register
    /// transfer is one access; anything else goes byte by byte at rising offsets.
    fn accesses(offset: u64, len: usize) -> Vec<(u64, AccessSize, usize)> {
        if Self::is_fifo(offset) {
            return (0..len).map(|i| (offset, AccessSize::Byte, i)).collect();
        }
        let size = match len {
            1 => Some(AccessSize::Byte),
            2 => Some(AccessSize::Half),
            4 => Some(AccessSize::Word),
            _ => None,
        };
        match size {
            Some(s) if offset.is_multiple_of(len as u64) => alloc::vec![(offset, s, 0)],
            _ => (0..len)
                .map(|i| (offset + i as u64, AccessSize::Byte, i))
                .filter(|(o, _, _)| *o < REGION_SIZE)
                .collect(),
        }
    }

    fn read_data(&mut self, offset: Option<u64>, len: usize) -> Vec<u8> {
        let mut data = alloc::vec![UNMAPPED_READ; len];
        let Some(offset) = offset else {
            return data;
        };
        let mut mem = VecMemory::new(0, 0);
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        for (off, size, at) in Self::accesses(offset, len) {
            match self.tis.read(&mut ctx, off, size) {
                Ok(v) => {
                    let n = size.bytes() as usize;
                    data[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                Err(e) => log::warn!("vtpm-spi: read at {off:#x} refused: {e:?}"),
            }
        }
        data
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) {
        let mut mem = VecMemory::new(0, 0);
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        for (off, size, at) in Self::accesses(offset, data.len()) {
            let n = size.bytes() as usize;
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&data[at..at + n]);
            if let Err(e) = self.tis.write(&mut ctx, off, size, u64::from_le_bytes(b)) {
                log::warn!("vtpm-spi: write at {off:#x} refused: {e:?}");
            }
        }
    }

    /// Decodes a complete header and starts the data phase.
    fn start(&mut self, h: [u8; HEADER_LEN]) -> Phase {
        let len = usize::from(h[0] & HEADER_SIZE_MASK) + 1;
        let addr = u32::from_be_bytes([0, h[1], h[2], h[3]]);
        if h[0] & HEADER_RESERVED != 0 {
            log::warn!("vtpm-spi: reserved header bit set in {:#04x}", h[0]);
        }
        let offset = Self::offset_of(addr);
        if offset.is_none() {
            log::warn!("vtpm-spi: transfer to {addr:#08x}, outside the TPM's address space");
        }
        if h[0] & HEADER_READ != 0 {
            Phase::Read {
                data: self.read_data(offset, len),
                sent: 0,
            }
        } else {
            Phase::Write {
                offset,
                len,
                data: Vec::with_capacity(len),
            }
        }
    }
}

impl SpiSlave for TisSpi {
    fn select(&mut self, active: bool) {
        match (&self.phase, active) {
            (Phase::Write { data, len, .. }, false) => {
                log::warn!(
                    "vtpm-spi: write ended after {} of {len} data bytes; dropped",
                    data.len()
                );
            }
            (Phase::Header { n, .. }, false) if *n > 0 => {
                log::warn!("vtpm-spi: transaction ended inside its header");
            }
            _ => {}
        }
        self.phase = if active {
            Phase::Header {
                bytes: [0; HEADER_LEN],
                n: 0,
            }
        } else {
            Phase::Idle
        };
    }

    fn miso_byte(&mut self) -> u8 {
        match &self.phase {
            Phase::Header { n, .. } if *n == HEADER_LEN - 1 => FLOW_CONTROL_READY,
            Phase::Read { data, sent } => data.get(*sent).copied().unwrap_or(MISO_FILL),
            _ => MISO_FILL,
        }
    }

    fn mosi_byte(&mut self, byte: u8) {
        let phase = core::mem::replace(&mut self.phase, Phase::Done);
        self.phase = match phase {
            Phase::Idle => Phase::Idle,
            Phase::Header { mut bytes, n } => {
                bytes[n] = byte;
                if n + 1 == HEADER_LEN {
                    self.start(bytes)
                } else {
                    Phase::Header { bytes, n: n + 1 }
                }
            }
            Phase::Read { data, sent } => {
                if sent + 1 < data.len() {
                    Phase::Read {
                        data,
                        sent: sent + 1,
                    }
                } else {
                    Phase::Done
                }
            }
            Phase::Write {
                offset,
                len,
                mut data,
            } => {
                data.push(byte);
                if data.len() < len {
                    Phase::Write { offset, len, data }
                } else {
                    if let Some(off) = offset {
                        self.write_data(off, &data);
                    }
                    Phase::Done
                }
            }
            Phase::Done => Phase::Done,
        };
    }
}

/// The saved tag of each [`Phase`].
mod phase_tag {
    pub const IDLE: u8 = 0;
    pub const HEADER: u8 = 1;
    pub const READ: u8 = 2;
    pub const WRITE: u8 = 3;
    pub const DONE: u8 = 4;
}

/// Saved state, version 1, little-endian after the header: the transaction phase
/// (tag u8; Header: bytes received u8 and the four header bytes; Read: the fetched
/// data (length u32, 1..=64 bytes) and bytes sent u32; Write: offset present
/// (flag) and offset u64, length u32, data so far (length u32, bytes)), then the
/// TIS's own blob (length u32, bytes). Restore accepts only phases the decoder can
/// reach.
impl SaveRestore for TisSpi {
    const SAVE_ID: [u8; 4] = *b"VTSP";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self { tis, phase } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        match phase {
            Phase::Idle => {
                w.u8(phase_tag::IDLE);
            }
            Phase::Header { bytes, n } => {
                w.u8(phase_tag::HEADER).u8(*n as u8);
                for b in bytes {
                    w.u8(*b);
                }
            }
            Phase::Read { data, sent } => {
                w.u8(phase_tag::READ).bytes(data).u32(*sent as u32);
            }
            Phase::Write { offset, len, data } => {
                w.u8(phase_tag::WRITE)
                    .flag(offset.is_some())
                    .u64(offset.unwrap_or(0))
                    .u32(*len as u32)
                    .bytes(data);
            }
            Phase::Done => {
                w.u8(phase_tag::DONE);
            }
        }
        w.bytes(&tis.save());
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let bad = Err(RestoreError::Malformed);
        let phase = match r.u8()? {
            phase_tag::IDLE => Phase::Idle,
            phase_tag::HEADER => {
                let n = usize::from(r.u8()?);
                let mut bytes = [0u8; HEADER_LEN];
                for b in &mut bytes {
                    *b = r.u8()?;
                }
                // A complete header starts the data phase; unreceived bytes are zero.
                if n >= HEADER_LEN || bytes[n..].iter().any(|&b| b != 0) {
                    return bad;
                }
                Phase::Header { bytes, n }
            }
            phase_tag::READ => {
                let data = r.bytes(MAX_TRANSFER)?.to_vec();
                let sent = r.u32()? as usize;
                // The last byte sent ends the transfer.
                if data.is_empty() || sent >= data.len() {
                    return bad;
                }
                Phase::Read { data, sent }
            }
            phase_tag::WRITE => {
                let has_offset = r.flag()?;
                let offset = r.u64()?;
                let len = r.u32()? as usize;
                let data = r.bytes(MAX_TRANSFER)?.to_vec();
                let offset_ok = if has_offset {
                    offset < REGION_SIZE
                } else {
                    offset == 0
                };
                // The last byte received performs the write and ends the transfer.
                if !offset_ok || !(1..=MAX_TRANSFER).contains(&len) || data.len() >= len {
                    return bad;
                }
                Phase::Write {
                    offset: has_offset.then_some(offset),
                    len,
                    data,
                }
            }
            phase_tag::DONE => Phase::Done,
            _ => return bad,
        };
        let inner = r.bytes(usize::MAX)?;
        r.end()?;
        let Self {
            tis,
            phase: s_phase,
        } = self;
        tis.restore(inner)?;
        *s_phase = phase;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::{cap, cc};
    use crate::tests::{command, new_tpm, rc_of, SharedNv, TestClock};
    use crate::tis_regs::fifo::*;
    use devices::{GpioPins, Pl061, SpiBitBang, SpiPins};

    fn spi() -> TisSpi {
        TisSpi::new(Tis::new(
            new_tpm(&SharedNv::default(), &TestClock::default()),
            None,
        ))
    }

    /// One transaction as Linux tpm_tis_spi does it: header, check the ready bit,
    /// then the data bytes. Returns the MISO bytes of the data phase.
    fn xfer(s: &mut TisSpi, read: bool, addr: u32, out: &[u8], len: usize) -> Vec<u8> {
        s.select(true);
        let h = [
            if read { HEADER_READ } else { 0 } | (len as u8 - 1),
            (addr >> 16) as u8,
            (addr >> 8) as u8,
            addr as u8,
        ];
        let mut miso = Vec::new();
        for b in h {
            miso.push(s.miso_byte());
            s.mosi_byte(b);
        }
        assert_eq!(miso[3] & FLOW_CONTROL_READY, FLOW_CONTROL_READY);
        let mut data = Vec::new();
        for i in 0..len {
            data.push(s.miso_byte());
            s.mosi_byte(out.get(i).copied().unwrap_or(0));
        }
        s.select(false);
        data
    }

    fn reg(loc: u32, r: u64) -> u32 {
        0xd4_0000 | (loc << 12) | r as u32
    }

    fn read32(s: &mut TisSpi, addr: u32) -> u32 {
        u32::from_le_bytes(xfer(s, true, addr, &[], 4).try_into().unwrap())
    }

    /// A TPM command as tpm_tis_core sends it over SPI (64-byte FIFO chunks).
    fn transact(s: &mut TisSpi, cmd: &[u8]) -> Vec<u8> {
        xfer(s, false, reg(0, STS), &[STS_COMMAND_READY as u8], 1);
        assert_ne!(read32(s, reg(0, STS)) & STS_COMMAND_READY, 0);
        for chunk in cmd.chunks(64) {
            xfer(s, false, reg(0, DATA_FIFO), chunk, chunk.len());
        }
        assert_eq!(read32(s, reg(0, STS)) & STS_EXPECT, 0);
        xfer(s, false, reg(0, STS), &[STS_GO as u8], 1);
        let sts = read32(s, reg(0, STS));
        assert_ne!(sts & STS_DATA_AVAIL, 0);
        let mut rsp = xfer(s, true, reg(0, DATA_FIFO), &[], 10);
        let size = u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize;
        while rsp.len() < size {
            let n = (size - rsp.len()).min(64);
            rsp.extend(xfer(s, true, reg(0, DATA_FIFO), &[], n));
        }
        assert_eq!(read32(s, reg(0, STS)) & STS_DATA_AVAIL, 0);
        rsp
    }

    #[test]
    fn registers_read_over_spi_match_the_tis() {
        let mut s = spi();
        assert_eq!(read32(&mut s, reg(0, DID_VID)), 0x0001_1014);
        assert_eq!(read32(&mut s, reg(0, INTF_CAPABILITY)) >> 28, 3);
        // A 2-byte read of DID alone, and a byte read of RID.
        assert_eq!(
            xfer(&mut s, true, reg(0, DID_VID + 2), &[], 2),
            [0x01, 0x00]
        );
        assert_eq!(xfer(&mut s, true, reg(0, RID), &[], 1), [0x01]);
        // Locality arbitration through ACCESS.
        xfer(&mut s, false, reg(0, ACCESS), &[ACCESS_REQUEST_USE], 1);
        let a = xfer(&mut s, true, reg(0, ACCESS), &[], 1)[0];
        assert_eq!(a & (ACCESS_ACTIVE_LOCALITY | ACCESS_REG_VALID), 0xa0);
        assert_eq!(
            s.tis_mut()
                .read(
                    &mut MmioContext {
                        vcpu: 0,
                        mem: &mut VecMemory::new(0, 0),
                        irq: &mut NullInterrupts
                    },
                    ACCESS,
                    AccessSize::Byte
                )
                .unwrap() as u8
                & ACCESS_ACTIVE_LOCALITY,
            ACCESS_ACTIVE_LOCALITY
        );
    }

    #[test]
    fn commands_run_over_spi_and_reset_clears_pcrs() {
        let mut s = spi();
        xfer(&mut s, false, reg(0, ACCESS), &[ACCESS_REQUEST_USE], 1);
        assert_eq!(
            rc_of(&transact(&mut s, &command(cc::STARTUP, &[], &[], &[0, 0]))),
            0
        );
        // A response bigger than one 64-byte chunk: the command list.
        let mut p = Vec::new();
        p.extend_from_slice(&cap::COMMANDS.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&64u32.to_be_bytes());
        let r = transact(&mut s, &command(cc::GET_CAPABILITY, &[], &[], &p));
        assert_eq!(rc_of(&r), 0);
        assert!(r.len() > 64, "{} bytes: not more than one chunk", r.len());
        let count = u32::from_be_bytes(r[15..19].try_into().unwrap()) as usize;
        assert_eq!(r.len(), 19 + 4 * count);
        s.reset();
        // After reset the TPM wants Startup again and no locality is active.
        let a = xfer(&mut s, true, reg(0, ACCESS), &[], 1)[0];
        assert_eq!(a & ACCESS_ACTIVE_LOCALITY, 0);
        assert!(!s.tis_mut().tpm_mut().is_started());
    }

    #[test]
    fn bad_transactions_are_contained() {
        let mut s = spi();
        // Outside the 0xD4 space: reads 0xFF, writes dropped.
        assert_eq!(
            xfer(&mut s, true, 0xd5_0000 | DID_VID as u32, &[], 4),
            [0xff; 4]
        );
        xfer(&mut s, false, 0x00_0000, &[ACCESS_REQUEST_USE], 1);
        // Past the five localities.
        assert_eq!(xfer(&mut s, true, 0xd4_5000, &[], 1), [0xff]);
        // Straddling the end of the region: the bytes inside are served.
        let r = xfer(&mut s, true, reg(4, 0xffe), &[], 4);
        assert_eq!(r, [0, 0, 0xff, 0xff]);
        // A write cut short by deselect is not applied.
        s.select(true);
        for b in [0x00, 0xd4, 0x00, ACCESS as u8] {
            s.miso_byte();
            s.mosi_byte(b);
        }
        s.select(false);
        assert_eq!(
            xfer(&mut s, true, reg(0, ACCESS), &[], 1)[0] & ACCESS_ACTIVE_LOCALITY,
            0
        );
        // Bytes beyond the transfer and a header cut short are harmless.
        s.select(true);
        for b in [0x80, 0xd4, 0x0f, 0x00, 0, 0, 0] {
            s.miso_byte();
            s.mosi_byte(b);
        }
        s.select(false);
        s.select(true);
        s.mosi_byte(0x80);
        s.select(false);
        assert_eq!(read32(&mut s, reg(0, DID_VID)), 0x0001_1014);
    }

    /// The whole chain as the hypervisor builds it: PL061 pins → bit-banged SPI →
    /// TIS over SPI, driven through GPIODATA like Linux spi-gpio on gpio-pl061.
    #[test]
    fn gpio_bitbang_chain_reads_the_tpm_id() {
        let pins = SpiPins {
            sck: 0,
            mosi: 1,
            miso: 2,
            cs: 3,
        };
        let bus = SpiBitBang::new(pins, spi()).unwrap();
        let mut g = Pl061::new(bus, None);
        let mut irq = NullInterrupts;
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let data = |p: u8| u64::from(1u8 << p) << 2;
        let set = |g: &mut Pl061<_>, ctx: &mut MmioContext, p: u8, v: bool| {
            g.write(ctx, data(p), AccessSize::Byte, if v { 0xff } else { 0 })
                .unwrap()
        };
        // CS high (inactive) first, then make SCK, MOSI, CS outputs.
        set(&mut g, &mut ctx, 3, true);
        g.write(&mut ctx, 0x400, AccessSize::Byte, 0b1011).unwrap();
        set(&mut g, &mut ctx, 3, true);
        set(&mut g, &mut ctx, 3, false);
        let mut rx = Vec::new();
        for out in [0x83u8, 0xd4, 0x0f, 0x00, 0, 0, 0, 0] {
            let mut b = 0u8;
            for i in (0..8).rev() {
                set(&mut g, &mut ctx, 1, out & (1 << i) != 0);
                set(&mut g, &mut ctx, 0, true);
                let miso = g.read(&mut ctx, data(2), AccessSize::Byte).unwrap() != 0;
                b = (b << 1) | u8::from(miso);
                set(&mut g, &mut ctx, 0, false);
            }
            rx.push(b);
        }
        set(&mut g, &mut ctx, 3, true);
        assert_eq!(rx[3] & FLOW_CONTROL_READY, 1);
        assert_eq!(
            u32::from_le_bytes(rx[4..8].try_into().unwrap()),
            0x0001_1014
        );
        // Resetting the chain reaches the TPM.
        g.pins_mut().slave_mut().tis_mut().tpm_mut().init();
        g.pins_mut().reset();
        assert_eq!(
            g.pins_mut().input_levels() & 0b100,
            0b100,
            "MISO idles high"
        );
    }

    /// Locality 0 requested; then a 4-byte read of DID_VID stopped after its first
    /// data byte, so the slave is mid-transfer.
    fn drive_spi(s: &mut TisSpi) {
        xfer(s, false, reg(0, ACCESS), &[ACCESS_REQUEST_USE], 1);
        s.select(true);
        let addr = reg(0, DID_VID);
        for b in [
            HEADER_READ | 3,
            (addr >> 16) as u8,
            (addr >> 8) as u8,
            addr as u8,
        ] {
            s.miso_byte();
            s.mosi_byte(b);
        }
        s.miso_byte();
        s.mosi_byte(0);
    }

    /// What a master sees: the rest of the transfer in progress, then STS and
    /// ACCESS of locality 0 in fresh transactions.
    fn probe_spi(s: &mut TisSpi) -> Vec<u8> {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(s.miso_byte());
            s.mosi_byte(0);
        }
        s.select(false);
        seen.extend(read32(s, reg(0, STS)).to_le_bytes());
        seen.extend(xfer(s, true, reg(0, ACCESS), &[], 1));
        seen
    }

    vdev::save_restore_tests!(saved_state, make: spi, drive: drive_spi, probe: probe_spi);

    /// The TPM chain as el2 builds it: PL061 → bit-banged SPI → TIS over SPI.
    type Chain = Pl061<SpiBitBang<TisSpi>>;
    const CHAIN_PINS: SpiPins = SpiPins {
        sck: 0,
        mosi: 1,
        miso: 2,
        cs: 3,
    };

    fn chain() -> Chain {
        Pl061::new(SpiBitBang::new(CHAIN_PINS, spi()).unwrap(), None)
    }

    fn chain_io<R>(f: impl FnOnce(&mut MmioContext) -> R) -> R {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut NullInterrupts,
        };
        f(&mut ctx)
    }

    fn chain_set(g: &mut Chain, pin: u8, v: bool) {
        chain_io(|x| {
            g.write(
                x,
                u64::from(1u8 << pin) << 2,
                AccessSize::Byte,
                if v { 0xff } else { 0 },
            )
            .unwrap()
        })
    }

    /// Clocks one byte out on MOSI and returns the MISO byte.
    fn chain_byte(g: &mut Chain, out: u8) -> u8 {
        let mut b = 0u8;
        for i in (0..8).rev() {
            chain_set(g, CHAIN_PINS.mosi, out & (1 << i) != 0);
            chain_set(g, CHAIN_PINS.sck, true);
            let miso = chain_io(|x| {
                g.read(x, u64::from(1u8 << CHAIN_PINS.miso) << 2, AccessSize::Byte)
                    .unwrap()
            });
            b = (b << 1) | u8::from(miso != 0);
            chain_set(g, CHAIN_PINS.sck, false);
        }
        b
    }

    /// The pins configured, a 4-byte read of DID_VID begun: header and one data
    /// byte, then three bits of the next, SCK high.
    fn drive_chain(g: &mut Chain) {
        chain_set(g, CHAIN_PINS.cs, true);
        chain_io(|x| g.write(x, 0x400, AccessSize::Byte, 0b1011).unwrap());
        chain_set(g, CHAIN_PINS.cs, false);
        for out in [0x83u8, 0xd4, 0x0f, 0x00, 0] {
            chain_byte(g, out);
        }
        for _ in 0..3 {
            chain_set(g, CHAIN_PINS.sck, false);
            chain_set(g, CHAIN_PINS.sck, true);
        }
    }

    /// What the guest sees: the GPIO register file, then MISO through three more
    /// bytes and a fresh read of ACCESS.
    fn probe_chain(g: &mut Chain) -> Vec<u64> {
        let mut seen: Vec<u64> = chain_io(|x| {
            (0x3fc..0x424)
                .step_by(4)
                .map(|off| g.read(x, off, AccessSize::Byte).unwrap())
                .collect()
        });
        chain_set(g, CHAIN_PINS.sck, false);
        for _ in 0..3 {
            seen.push(u64::from(chain_byte(g, 0)));
        }
        chain_set(g, CHAIN_PINS.cs, true);
        chain_set(g, CHAIN_PINS.cs, false);
        for out in [0x80u8, 0xd4, 0x00, 0x00, 0] {
            seen.push(u64::from(chain_byte(g, out)));
        }
        chain_set(g, CHAIN_PINS.cs, true);
        seen
    }

    vdev::save_restore_tests!(
        chain_saved_state,
        make: chain,
        drive: drive_chain,
        probe: probe_chain,
    );
}
