//! USB mass storage, bulk-only transport (USB Mass Storage Class Bulk-Only
//! Transport 1.0) with the SCSI commands (SPC-4, SBC-3) Linux's `usb-storage` and
//! Windows' `USBSTOR` send: INQUIRY (standard data, supported-pages and serial
//! number VPD pages), TEST UNIT READY, REQUEST SENSE, READ CAPACITY(10/16),
//! READ(10/16), WRITE(10/16), MODE SENSE(6/10), READ FORMAT CAPACITIES, START STOP
//! UNIT, PREVENT ALLOW MEDIUM REMOVAL, SYNCHRONIZE CACHE(10), VERIFY(10), over a
//! [`vdev::AsyncBlock`] (a read-only install image or a writable extent).
//!
//! The backend's requests complete later: READ, WRITE and SYNCHRONIZE CACHE
//! submit one request at a time and the bulk endpoints answer NAK until it
//! completes ([`MassStorage::poll_backend`], from the controller's deferred work),
//! so a guest's doorbell write never waits for the disk. A bulk IN transfer is
//! filled whole or ends the data (a short packet ends the host's data phase);
//! the next chunk is read ahead; OUT data is taken up to [`WRITE_BACKLOG`] ahead
//! of the backend, and the CSW waits for the last write.
//!
//! The guest's Command Block Wrapper is validated (signature, length, LUN, command
//! length); an invalid one stalls both bulk endpoints until the class's Reset
//! Recovery (Bulk-Only Mass Storage Reset, then CLEAR_FEATURE on each endpoint).
//! Data moves in chunks of at most [`CHUNK`] bytes, so a guest asking for a huge
//! transfer never makes the model buffer it.

use alloc::vec;
use alloc::vec::Vec;

use vdev::{AsyncBlock, BlockError, BlockOp, Completion, Submit, SECTOR_SIZE};

use crate::defs::usb;
use crate::usb::{config, endpoint, interface, ss_companion, Control, Core, Descriptors, Transfer};

/// Bulk IN endpoint 1, bulk OUT endpoint 2.
pub const ENDPOINTS: &[u8] = &[0x81, 0x02];
const EP_IN: u8 = 0x81;
const EP_OUT: u8 = 0x02;
/// Most bytes read from or written to the backend at once.
pub const CHUNK: usize = 64 << 10;
/// Bytes of a Command Block Wrapper and a Command Status Wrapper.
pub const CBW_LEN: usize = 31;
pub const CSW_LEN: usize = 13;
/// "USBC" and "USBS".
pub const CBW_SIGNATURE: u32 = 0x4342_5355;
pub const CSW_SIGNATURE: u32 = 0x5342_5355;
/// CSW status values.
pub const CSW_PASSED: u8 = 0;
pub const CSW_FAILED: u8 = 1;
pub const CSW_PHASE_ERROR: u8 = 2;

/// SCSI operation codes.
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_FORMAT_CAPACITIES: u8 = 0x23;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const VERIFY_10: u8 = 0x2f;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    /// SERVICE ACTION IN(16); service action READ CAPACITY(16).
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
}

/// Sense keys and additional sense codes (ASC, ASCQ).
pub mod sense {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const INVALID_OPCODE: (u8, u8) = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
    pub const WRITE_PROTECTED: (u8, u8) = (0x27, 0x00);
    pub const MEDIUM_NOT_PRESENT: (u8, u8) = (0x3a, 0x00);
    pub const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);
    pub const WRITE_ERROR: (u8, u8) = (0x0c, 0x00);
}

/// Mass storage class, SCSI transparent command set, bulk-only transport.
const CLASS_MASS_STORAGE: u8 = 8;
const SUBCLASS_SCSI: u8 = 6;
const PROTOCOL_BOT: u8 = 0x50;

pub fn descriptors() -> Descriptors {
    let iface = interface(0, 2, CLASS_MASS_STORAGE, SUBCLASS_SCSI, PROTOCOL_BOT);
    let mut hs = iface.to_vec();
    hs.extend_from_slice(&endpoint(EP_IN, 2, 512, 0));
    hs.extend_from_slice(&endpoint(EP_OUT, 2, 512, 0));
    let mut ss = iface.to_vec();
    ss.extend_from_slice(&endpoint(EP_IN, 2, 1024, 0));
    ss.extend_from_slice(&ss_companion(15, 0));
    ss.extend_from_slice(&endpoint(EP_OUT, 2, 1024, 0));
    ss.extend_from_slice(&ss_companion(15, 0));
    Descriptors {
        vendor: crate::hid::VENDOR_ID,
        product: 0x0003,
        strings: &["RayOS", "RayOS USB Storage", "000000000001"],
        interfaces: 1,
        config_hs: config(1, &hs),
        config_ss: config(1, &ss),
    }
}

/// Where the bulk-only transport is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a CBW on bulk OUT.
    Command,
    /// Sending `data` (then blocks still to be read from the backend at
    /// `disk_offset`, `disk_left` bytes), then the CSW.
    DataIn {
        data: Vec<u8>,
        disk_offset: u64,
        disk_left: u64,
    },
    /// Taking `left` bytes from the host: written at `disk_offset` when `write`,
    /// else dropped. `partial` holds data taken and not yet handed to the backend
    /// (it starts at `disk_offset`). With `left` zero the data phase is over and
    /// the CSW waits for the writes.
    DataOut {
        write: bool,
        disk_offset: u64,
        left: u64,
        partial: Vec<u8>,
    },
    /// A command without data for the device (SYNCHRONIZE CACHE) waits for its
    /// backend operation; then the host's data phase (`dir_in`, `host_len`) as
    /// for any command without data, then the CSW.
    Flush { dir_in: bool, host_len: u64 },
    /// The CSW is ready for bulk IN.
    Status,
    /// An invalid CBW: both bulk endpoints stall until Reset Recovery.
    ResetRecovery,
}

/// The backend operation a device waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Blocks for [`Phase::DataIn`].
    Read,
    /// Blocks of [`Phase::DataOut`].
    Write,
    /// [`Phase::Flush`]'s flush.
    Flush,
    /// Started by a command a reset or Reset Recovery abandoned: its completion is
    /// dropped (and nothing else starts before it, so writes stay in order).
    Orphan,
}

/// Most bytes of OUT data taken ahead of the backend: more waits (NAK) until a
/// write completes.
pub const WRITE_BACKLOG: usize = CHUNK;
/// Most bytes a saved [`Phase::DataIn`] or [`Phase::DataOut`] buffer may hold: a
/// TD's worth and a chunk read ahead.
pub const MAX_BUFFERED: usize = crate::controller::MAX_TD_BYTES + CHUNK;

/// A bulk-only mass storage device, LUN 0 only, over an asynchronous backend:
/// a command's blocks are read or written by backend requests that complete
/// later ([`Self::poll_backend`], from the controller's deferred work), one at a
/// time; meanwhile the bulk endpoints answer NAK, so the guest's vCPU never waits
/// for the disk.
pub struct MassStorage<B: AsyncBlock> {
    pub core: Core,
    backend: B,
    pub phase: Phase,
    /// The CBW being answered: tag, host's expected length, residue.
    pub tag: u32,
    pub residue: u32,
    pub status: u8,
    /// Sense data of the last failed command: key, ASC, ASCQ.
    pub sense: (u8, u8, u8),
    /// A backend failure during the data phase turns the CSW into a failure.
    pub(crate) data_failed: Option<(u8, (u8, u8))>,
    /// The backend request in flight: its tag and what it is for.
    inflight: Option<(u64, Pending)>,
    /// Tag of the next backend request.
    next_op: u64,
    /// Bytes the bulk IN transfer waiting for data asked for.
    want: usize,
    /// The backend was busy: submit again at the next poll.
    retry: bool,
}

impl<B: AsyncBlock> MassStorage<B> {
    pub fn new(backend: B, speed: u32) -> Self {
        MassStorage {
            core: Core::new(speed),
            backend,
            phase: Phase::Command,
            tag: 0,
            residue: 0,
            status: CSW_PASSED,
            sense: (sense::NO_SENSE, 0, 0),
            data_failed: None,
            inflight: None,
            next_op: 0,
            want: 0,
            retry: false,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// Blocks of the medium.
    pub fn blocks(&self) -> u64 {
        self.backend.capacity() / SECTOR_SIZE
    }

    /// Backend requests started and not completed (0 or 1).
    pub fn in_flight(&self) -> usize {
        usize::from(self.inflight.is_some() || self.retry)
    }

    /// The transport state was restored (saved with no request in flight): the
    /// backend work it needs starts at the next poll.
    pub(crate) fn restored(&mut self) {
        self.inflight = None;
        self.want = 0;
        self.retry = true;
    }

    /// Whether [`Self::poll_backend`] has something to do.
    pub fn has_work(&self) -> bool {
        self.retry || (self.inflight.is_some() && self.backend.has_completions())
    }

    /// Bytes one backend request carries at most: a whole number of sectors.
    fn chunk(&self) -> u64 {
        let n = (CHUNK.min(self.backend.max_transfer()) as u64) / SECTOR_SIZE * SECTOR_SIZE;
        n.max(SECTOR_SIZE)
    }

    pub(crate) fn bus_reset(&mut self) {
        self.reset_transport();
        self.sense = (sense::NO_SENSE, 0, 0);
    }

    fn reset_transport(&mut self) {
        self.phase = Phase::Command;
        self.residue = 0;
        self.status = CSW_PASSED;
        self.data_failed = None;
        self.want = 0;
        self.retry = false;
        if let Some((_, p)) = self.inflight.as_mut() {
            *p = Pending::Orphan;
        }
    }

    /// Whether a bulk IN now gets something (data or the CSW).
    pub fn in_ready(&self) -> bool {
        match &self.phase {
            Phase::Status => true,
            Phase::DataIn {
                data, disk_left, ..
            } => !data.is_empty() || (*disk_left == 0 && self.inflight.is_none()),
            _ => false,
        }
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) of `ep` was accepted.
    pub(crate) fn halt_cleared(&mut self, _ep: u8) {
        // Reset Recovery ends with the halts cleared; the transport then waits for
        // a CBW (it already does after the class reset).
    }

    pub(crate) fn class_request(&mut self, setup: &crate::usb::Setup, _data: &[u8]) -> Control {
        match (setup.request_type, setup.request) {
            (0x21, usb::BOT_RESET) if setup.value == 0 && setup.length == 0 && setup.index == 0 => {
                self.reset_transport();
                Control::ok()
            }
            (0xa1, usb::BOT_GET_MAX_LUN) if setup.value == 0 && setup.index == 0 => {
                Control::Data(vec![0])
            }
            _ => Control::Stall,
        }
    }

    fn csw(&mut self) -> Vec<u8> {
        let mut c = Vec::with_capacity(CSW_LEN);
        c.extend_from_slice(&CSW_SIGNATURE.to_le_bytes());
        c.extend_from_slice(&self.tag.to_le_bytes());
        c.extend_from_slice(&self.residue.to_le_bytes());
        c.push(self.status);
        self.phase = Phase::Command;
        c
    }

    /// Takes the backend's completions; `true` when one was this device's (the
    /// controller then retries the transfers that waited for it).
    pub fn poll_backend(&mut self) -> bool {
        let mut progressed = false;
        while let Some(c) = self.backend.poll() {
            match self.inflight {
                Some((tag, pending)) if tag == c.tag => {
                    self.inflight = None;
                    self.complete(pending, c);
                    progressed = true;
                }
                _ => log::warn!(
                    "xhci: usb-storage: the backend completed request {} that is not in flight",
                    c.tag
                ),
            }
        }
        if self.retry && self.inflight.is_none() {
            progressed = true;
        }
        self.pump();
        progressed
    }

    /// A backend request finished.
    fn complete(&mut self, pending: Pending, c: Completion) {
        match (pending, &mut self.phase) {
            (
                Pending::Read,
                Phase::DataIn {
                    data, disk_left, ..
                },
            ) => match c.result {
                Ok(()) => data.extend_from_slice(&c.buf),
                Err(e) => {
                    log::warn!("xhci: usb-storage: read failed: {e:?}");
                    self.data_failed = Some((sense::MEDIUM_ERROR, sense::UNRECOVERED_READ_ERROR));
                    *disk_left = 0;
                }
            },
            (Pending::Write, Phase::DataOut { partial, .. }) => {
                if let Err(e) = c.result {
                    log::warn!("xhci: usb-storage: write failed: {e:?}");
                    self.data_failed = Some(match e {
                        BlockError::ReadOnly => (sense::DATA_PROTECT, sense::WRITE_PROTECTED),
                        _ => (sense::MEDIUM_ERROR, sense::WRITE_ERROR),
                    });
                    // The rest of the data is taken and dropped.
                    partial.clear();
                }
            }
            (Pending::Flush, &mut Phase::Flush { dir_in, host_len }) => {
                if let Err(e) = c.result {
                    if e != BlockError::ReadOnly {
                        self.fail(sense::MEDIUM_ERROR, sense::WRITE_ERROR);
                    }
                }
                self.no_data(dir_in, host_len);
            }
            // An abandoned command's.
            _ => {}
        }
        self.settle();
    }

    /// The data phase of a write is over once every byte is taken and written.
    fn settle(&mut self) {
        if self.inflight.is_some() || self.retry {
            return;
        }
        if let Phase::DataOut {
            left: 0, partial, ..
        } = &self.phase
        {
            if partial.is_empty() {
                self.finish_data();
            }
        }
    }

    /// Starts the backend request the phase needs next, if none is in flight;
    /// one the backend completes at once is taken and the next one started.
    fn pump(&mut self) {
        self.retry = false;
        while self.inflight.is_none() {
            let chunk = self.chunk();
            let want = self.want.max(1);
            let (op, buf, pending) = match &mut self.phase {
                Phase::DataIn {
                    data,
                    disk_offset,
                    disk_left,
                } if *disk_left > 0 && data.len() < want => {
                    let n = (*disk_left).min(chunk);
                    let op = BlockOp::Read {
                        offset: *disk_offset,
                    };
                    (op, vec![0u8; n as usize], Pending::Read)
                }
                Phase::DataOut {
                    write: true,
                    disk_offset,
                    left,
                    partial,
                } => {
                    if self.data_failed.is_some() {
                        partial.clear();
                    }
                    let whole = partial.len() as u64 / SECTOR_SIZE * SECTOR_SIZE;
                    // Short of a chunk: more data may follow for the same request.
                    if whole == 0 || (whole < chunk && *left > 0) {
                        break;
                    }
                    let n = whole.min(chunk) as usize;
                    let op = BlockOp::Write {
                        offset: *disk_offset,
                    };
                    (op, partial[..n].to_vec(), Pending::Write)
                }
                Phase::Flush { .. } => (BlockOp::Flush, Vec::new(), Pending::Flush),
                _ => break,
            };
            let tag = self.next_op;
            let len = buf.len() as u64;
            let result = self.backend.submit(tag, op, buf);
            if matches!(result, Submit::Busy(_)) {
                // The backend takes it at a later poll (the controller asks while
                // `has_work`).
                self.retry = true;
                return;
            }
            self.next_op = self.next_op.wrapping_add(1);
            // The request is the backend's now: the phase moves past it.
            match &mut self.phase {
                Phase::DataIn {
                    disk_offset,
                    disk_left,
                    ..
                } => {
                    *disk_offset += len;
                    *disk_left -= len;
                }
                Phase::DataOut {
                    disk_offset,
                    partial,
                    ..
                } => {
                    partial.drain(..len as usize);
                    *disk_offset += len;
                }
                _ => {}
            }
            match result {
                Submit::Done(c) => self.complete(pending, c),
                _ => self.inflight = Some((tag, pending)),
            }
        }
        self.settle();
    }

    pub(crate) fn bulk_in(&mut self, max: usize) -> Transfer {
        match &mut self.phase {
            Phase::Command | Phase::DataOut { .. } | Phase::Flush { .. } => Transfer::Nak,
            Phase::ResetRecovery => Transfer::Stall,
            Phase::Status => {
                if max < CSW_LEN {
                    // A CSW is never split: the host asked for less than one.
                    return Transfer::Stall;
                }
                Transfer::Data(self.csw())
            }
            Phase::DataIn { .. } => {
                self.want = max;
                self.pump();
                let Phase::DataIn {
                    data, disk_left, ..
                } = &mut self.phase
                else {
                    return Transfer::Nak;
                };
                // A packet shorter than asked ends the host's data phase: it
                // waits until the transfer can be filled or the data ends.
                let ends = *disk_left == 0 && self.inflight.is_none();
                if data.len() < max && !ends {
                    return Transfer::Nak;
                }
                let take = data.len().min(max);
                let out: Vec<u8> = data.drain(..take).collect();
                let done = data.is_empty() && ends;
                self.want = 0;
                self.residue = self.residue.saturating_sub(out.len() as u32);
                if done {
                    self.finish_data();
                } else {
                    // Read ahead for the host's next transfer.
                    self.pump();
                }
                Transfer::Data(out)
            }
        }
    }

    fn finish_data(&mut self) {
        if let Some((key, asc)) = self.data_failed.take() {
            self.fail(key, asc);
        }
        self.phase = Phase::Status;
    }

    pub(crate) fn bulk_out(&mut self, data: &[u8]) -> Transfer {
        match &mut self.phase {
            Phase::Command => {
                self.command(data);
                // A read starts at once; a flush too.
                self.pump();
                Transfer::Data(Vec::new())
            }
            Phase::DataOut {
                write,
                left,
                partial,
                ..
            } => {
                if *left == 0 || (*write && partial.len() >= WRITE_BACKLOG) {
                    // Writes behind: the data waits.
                    return Transfer::Nak;
                }
                let take = (data.len() as u64).min(*left) as usize;
                *left -= take as u64;
                let over = take < data.len();
                if *write {
                    // Data a failed command drops stays in the residue.
                    self.residue = self.residue.saturating_sub(take as u32);
                    partial.extend_from_slice(&data[..take]);
                }
                if over {
                    log::warn!(
                        "xhci: usb-storage: {} bytes of OUT data beyond the CBW's length dropped",
                        data.len() - take
                    );
                }
                self.pump();
                Transfer::Data(Vec::new())
            }
            Phase::DataIn { .. } | Phase::Status | Phase::Flush { .. } => Transfer::Nak,
            Phase::ResetRecovery => Transfer::Stall,
        }
    }

    fn stall_both(&mut self) {
        self.phase = Phase::ResetRecovery;
        self.core.halted |= Core::halt_bit(EP_IN) | Core::halt_bit(EP_OUT);
    }

    fn fail(&mut self, key: u8, (asc, ascq): (u8, u8)) {
        self.status = CSW_FAILED;
        self.sense = (key, asc, ascq);
    }

    /// A CBW arrived.
    fn command(&mut self, cbw: &[u8]) {
        if cbw.len() != CBW_LEN
            || u32::from_le_bytes([cbw[0], cbw[1], cbw[2], cbw[3]]) != CBW_SIGNATURE
        {
            log::warn!(
                "xhci: usb-storage: invalid CBW ({} bytes), stalling",
                cbw.len()
            );
            self.stall_both();
            return;
        }
        let tag = u32::from_le_bytes([cbw[4], cbw[5], cbw[6], cbw[7]]);
        let host_len = u32::from_le_bytes([cbw[8], cbw[9], cbw[10], cbw[11]]);
        let dir_in = cbw[12] & 0x80 != 0;
        let lun = cbw[13] & 0xf;
        let cb_len = usize::from(cbw[14] & 0x1f);
        if cbw[13] & 0xf0 != 0 || cbw[14] & 0xe0 != 0 || !(1..=16).contains(&cb_len) {
            log::warn!("xhci: usb-storage: CBW with reserved bits or bad length, stalling");
            self.stall_both();
            return;
        }
        self.tag = tag;
        self.residue = host_len;
        self.status = CSW_PASSED;
        self.data_failed = None;
        let cdb = &cbw[15..15 + cb_len];
        let reply = if lun != 0 {
            Reply::Fail(sense::ILLEGAL_REQUEST, sense::INVALID_FIELD_IN_CDB)
        } else {
            self.execute(cdb)
        };
        let host_len = u64::from(host_len);
        match reply {
            Reply::Fail(key, asc) => {
                self.fail(key, asc);
                self.no_data(dir_in, host_len);
            }
            Reply::None => self.no_data(dir_in, host_len),
            Reply::Flush => self.phase = Phase::Flush { dir_in, host_len },
            Reply::In(mut data) => {
                if host_len > 0 && !dir_in {
                    self.phase_error(dir_in, host_len);
                    return;
                }
                // Allocation lengths cut a reply; the host's length cuts it again
                // (a shorter reply than asked is a residue, not an error).
                data.truncate(host_len as usize);
                self.sense = (sense::NO_SENSE, 0, 0);
                self.start_in(data, 0, 0);
            }
            Reply::Read { offset, bytes } => {
                if bytes > host_len || (bytes > 0 && !dir_in) {
                    self.phase_error(dir_in, host_len);
                    return;
                }
                self.start_in(Vec::new(), offset, bytes);
            }
            Reply::Write { offset, bytes } => {
                if bytes > host_len || (bytes > 0 && dir_in) {
                    self.phase_error(dir_in, host_len);
                    return;
                }
                if bytes == 0 {
                    self.no_data(dir_in, host_len);
                } else {
                    self.phase = Phase::DataOut {
                        write: true,
                        disk_offset: offset,
                        left: bytes,
                        partial: Vec::new(),
                    };
                }
            }
        }
    }

    fn start_in(&mut self, data: Vec<u8>, disk_offset: u64, disk_left: u64) {
        if data.is_empty() && disk_left == 0 {
            self.no_data(true, u64::from(self.residue));
            return;
        }
        self.phase = Phase::DataIn {
            data,
            disk_offset,
            disk_left,
        };
    }

    /// No data for the host: a host expecting IN data gets a zero-length packet
    /// (ending its data phase); one sending OUT data has it taken and dropped.
    fn no_data(&mut self, dir_in: bool, host_len: u64) {
        self.phase = if host_len == 0 {
            Phase::Status
        } else if dir_in {
            Phase::DataIn {
                data: Vec::new(),
                disk_offset: 0,
                disk_left: 0,
            }
        } else {
            Phase::DataOut {
                write: false,
                disk_offset: 0,
                left: host_len,
                partial: Vec::new(),
            }
        };
    }

    /// The host's direction or length disagrees with the command (BOT §6.7, cases
    /// 7, 8, 10, 13): Phase Error.
    fn phase_error(&mut self, dir_in: bool, host_len: u64) {
        self.no_data(dir_in, host_len);
        self.status = CSW_PHASE_ERROR;
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<(u64, u64), Reply> {
        let total = self.blocks();
        match lba.checked_add(blocks) {
            Some(end) if end <= total => Ok((lba * SECTOR_SIZE, blocks * SECTOR_SIZE)),
            _ => Err(Reply::Fail(sense::ILLEGAL_REQUEST, sense::LBA_OUT_OF_RANGE)),
        }
    }

    fn execute(&mut self, cdb: &[u8]) -> Reply {
        let invalid = Reply::Fail(sense::ILLEGAL_REQUEST, sense::INVALID_FIELD_IN_CDB);
        let be = |r: core::ops::Range<usize>| -> Option<u64> {
            let b = cdb.get(r)?;
            Some(b.iter().fold(0u64, |a, &x| a << 8 | u64::from(x)))
        };
        let opcode = cdb[0];
        let present = self.blocks() > 0;
        let not_ready = Reply::Fail(sense::NOT_READY, sense::MEDIUM_NOT_PRESENT);
        match opcode {
            op::TEST_UNIT_READY => {
                if present {
                    Reply::None
                } else {
                    not_ready
                }
            }
            op::REQUEST_SENSE => {
                let Some(alloc) = be(4..5) else {
                    return invalid;
                };
                let (key, asc, ascq) = self.sense;
                self.sense = (sense::NO_SENSE, 0, 0);
                let mut d = vec![0u8; 18];
                d[0] = 0x70;
                d[2] = key;
                d[7] = 10;
                d[12] = asc;
                d[13] = ascq;
                d.truncate(alloc as usize);
                Reply::In(d)
            }
            op::INQUIRY => {
                let (Some(evpd), Some(page), Some(alloc)) = (be(1..2), be(2..3), be(3..5)) else {
                    return invalid;
                };
                let mut d = if evpd & 1 == 0 {
                    if page != 0 {
                        return invalid;
                    }
                    let mut d = vec![0u8; 36];
                    d[1] = 0x80; // removable medium
                    d[2] = 0x06; // SPC-4
                    d[3] = 0x02; // response data format 2
                    d[4] = 31;
                    d[8..16].copy_from_slice(b"RayOS   ");
                    d[16..32].copy_from_slice(b"USB Storage     ");
                    d[32..36].copy_from_slice(b"0001");
                    d
                } else {
                    match page {
                        0x00 => vec![0, 0x00, 0, 2, 0x00, 0x80],
                        0x80 => {
                            let mut d = vec![0, 0x80, 0, 12];
                            d.extend_from_slice(b"000000000001");
                            d
                        }
                        _ => return invalid,
                    }
                };
                d.truncate(alloc as usize);
                Reply::In(d)
            }
            op::READ_CAPACITY_10 => {
                if !present {
                    return not_ready;
                }
                let last = (self.blocks() - 1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(SECTOR_SIZE as u32).to_be_bytes());
                Reply::In(d)
            }
            op::SERVICE_ACTION_IN_16 => {
                let (Some(sa), Some(alloc)) = (be(1..2), be(10..14)) else {
                    return invalid;
                };
                if sa & 0x1f != u64::from(op::SA_READ_CAPACITY_16) {
                    return Reply::Fail(sense::ILLEGAL_REQUEST, sense::INVALID_OPCODE);
                }
                if !present {
                    return not_ready;
                }
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&(self.blocks() - 1).to_be_bytes());
                d[8..12].copy_from_slice(&(SECTOR_SIZE as u32).to_be_bytes());
                d.truncate(alloc as usize);
                Reply::In(d)
            }
            op::READ_FORMAT_CAPACITIES => {
                let Some(alloc) = be(7..9) else {
                    return invalid;
                };
                let blocks = self.blocks().min(u64::from(u32::MAX)) as u32;
                let mut d = vec![0, 0, 0, 8];
                d.extend_from_slice(&blocks.to_be_bytes());
                // Descriptor type: formatted media (2) or no media (3).
                d.push(if present { 2 } else { 3 });
                d.extend_from_slice(&(SECTOR_SIZE as u32).to_be_bytes()[1..]);
                d.truncate(alloc as usize);
                Reply::In(d)
            }
            op::READ_10 | op::READ_16 | op::WRITE_10 | op::WRITE_16 | op::VERIFY_10 => {
                let long = matches!(opcode, op::READ_16 | op::WRITE_16);
                let (lba, blocks) = if long {
                    (be(2..10), be(10..14))
                } else {
                    (be(2..6), be(7..9))
                };
                let (Some(lba), Some(blocks)) = (lba, blocks) else {
                    return invalid;
                };
                if !present {
                    return not_ready;
                }
                let (offset, bytes) = match self.check_range(lba, blocks) {
                    Ok(r) => r,
                    Err(e) => return e,
                };
                match opcode {
                    op::VERIFY_10 => Reply::None,
                    op::READ_10 | op::READ_16 => Reply::Read { offset, bytes },
                    _ if self.backend.read_only() => {
                        Reply::Fail(sense::DATA_PROTECT, sense::WRITE_PROTECTED)
                    }
                    _ => Reply::Write { offset, bytes },
                }
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ten = opcode == op::MODE_SENSE_10;
                let (Some(page), Some(alloc)) = (be(2..3), if ten { be(7..9) } else { be(4..5) })
                else {
                    return invalid;
                };
                let page = (page & 0x3f) as u8;
                // All pages (0x3f) and the caching page (0x08): caching page, write
                // cache disabled (writes go to the backend as they arrive).
                let body: Vec<u8> = match page {
                    0x3f | 0x08 => {
                        let mut p = vec![0u8; 20];
                        p[0] = 0x08;
                        p[1] = 18;
                        p
                    }
                    _ => return invalid,
                };
                let wp = if self.backend.read_only() { 0x80 } else { 0 };
                let mut d = if ten {
                    let len = (6 + body.len()) as u16;
                    let mut h = len.to_be_bytes().to_vec();
                    h.extend_from_slice(&[0, wp, 0, 0, 0, 0]);
                    h
                } else {
                    vec![(3 + body.len()) as u8, 0, wp, 0]
                };
                d.extend_from_slice(&body);
                d.truncate(alloc as usize);
                Reply::In(d)
            }
            op::START_STOP_UNIT | op::PREVENT_ALLOW_MEDIUM_REMOVAL => Reply::None,
            // Nothing to make durable on a read-only medium.
            op::SYNCHRONIZE_CACHE_10 if self.backend.read_only() => Reply::None,
            op::SYNCHRONIZE_CACHE_10 => Reply::Flush,
            _ => Reply::Fail(sense::ILLEGAL_REQUEST, sense::INVALID_OPCODE),
        }
    }
}

/// What a command does next.
enum Reply {
    /// No data phase, passed.
    None,
    /// Failed with this sense key and ASC/ASCQ.
    Fail(u8, (u8, u8)),
    /// Data for the host.
    In(Vec<u8>),
    /// Blocks for the host from this byte range.
    Read { offset: u64, bytes: u64 },
    /// Blocks from the host to this byte range.
    Write { offset: u64, bytes: u64 },
    /// No data phase; passed once the backend made the writes durable.
    Flush,
}
