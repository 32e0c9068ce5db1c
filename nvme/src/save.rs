//! The controller's saved state: registers, queues (with completions waiting for
//! room), features, events, the error log and counters, and the submission queue
//! entries of held I/O commands, which a restored controller runs again (they had
//! not completed, so running them again is what the host may expect of a controller
//! that was interrupted). Restore validates everything as if the guest had sent it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{AsyncBlock, RestoreError, SaveRestore};

use crate::controller::{
    Controller, Cq, Cqe, ErrorEntry, Features, Smart, Sq, ERROR_LOG_ENTRIES, MAX_IN_FLIGHT,
};
use crate::defs::{aer, entry, feature};

/// CC bits a saved state may hold.
const CC_MASK: u32 = 0x00ff_fff1;
/// CSTS bits a saved state may hold: RDY, CFS, SHST.
const CSTS_MASK: u32 = 0b1111;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 2;
const SHST_SHIFT: u32 = 2;
const AQA_MASK: u32 = 0x0fff_0fff;
const BASE_ALIGN: u64 = 0xfff;
/// Commands held plus completions waiting, at most: fetching stops at
/// `MAX_IN_FLIGHT`, and completed event requests (never counted while held) add up
/// to `aer::LIMIT` more.
const MAX_HELD: usize = MAX_IN_FLIGHT + aer::LIMIT;

/// A parsed, validated state.
pub(crate) struct State {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    intms: u32,
    shutdown: u8,
    features: Features,
    sqs: Vec<Option<Sq>>,
    cqs: Vec<Option<Cq>>,
    aer_held: Vec<u16>,
    aer_pending: VecDeque<u32>,
    aer_error_masked: bool,
    errors: VecDeque<ErrorEntry>,
    error_count: u64,
    smart: Smart,
    replay: VecDeque<(u16, [u8; entry::SQE_BYTES])>,
}

pub(crate) fn save<B: AsyncBlock>(c: &Controller<B>) -> Vec<u8> {
    let mut w = Writer::new(Controller::<B>::SAVE_ID, Controller::<B>::SAVE_VERSION);
    w.u32(c.cc)
        .u32(c.csts)
        .u32(c.aqa)
        .u64(c.asq)
        .u64(c.acq)
        .u32(c.intms)
        .u8(c.shutdown_state());
    let f = &c.features;
    w.u32(f.arbitration)
        .u32(f.power_management)
        .u32(f.temperature_threshold)
        .u32(f.error_recovery)
        .flag(f.write_cache)
        .flag(f.queues.is_some());
    let (qs, qc) = f.queues.unwrap_or((0, 0));
    w.u16(qs)
        .u16(qc)
        .u32(f.coalescing)
        .u32(f.write_atomicity)
        .u32(f.async_event_config);
    w.u16(f.coalescing_disabled.len() as u16);
    for &cd in &f.coalescing_disabled {
        w.flag(cd);
    }
    w.u16(c.sqs.len() as u16);
    for q in &c.sqs {
        w.flag(q.is_some());
        if let Some(q) = q {
            w.u64(q.base)
                .u16(q.size)
                .u16(q.head)
                .u16(q.tail)
                .u16(q.cqid);
        }
    }
    for q in &c.cqs {
        w.flag(q.is_some());
        if let Some(q) = q {
            w.u64(q.base)
                .u16(q.size)
                .u16(q.head)
                .u16(q.tail)
                .flag(q.phase)
                .flag(q.ien)
                .u16(q.iv)
                .u16(q.pending.len() as u16);
            for e in &q.pending {
                w.u32(e.dw0).u16(e.sqid).u16(e.cid).u16(e.status);
            }
        }
    }
    w.u8(c.aer_held.len() as u8);
    for &cid in &c.aer_held {
        w.u16(cid);
    }
    w.u8(c.aer_pending.len() as u8);
    for &e in &c.aer_pending {
        w.u32(e);
    }
    w.flag(c.aer_error_masked);
    w.u8(c.errors.len() as u8);
    for e in &c.errors {
        w.u64(e.count).u16(e.sqid).u16(e.cid).u16(e.status);
    }
    w.u64(c.error_count)
        .u64(c.smart.blocks_read)
        .u64(c.smart.blocks_written)
        .u64(c.smart.read_commands)
        .u64(c.smart.write_commands);
    let held = c.held_entries();
    w.u16(held.len() as u16);
    for (sqid, sqe) in held {
        w.u16(sqid);
        for b in sqe {
            w.u8(b);
        }
    }
    w.finish()
}

fn check(ok: bool) -> Result<(), RestoreError> {
    if ok {
        Ok(())
    } else {
        Err(RestoreError::Malformed)
    }
}

pub(crate) fn parse<B: AsyncBlock>(c: &Controller<B>, blob: &[u8]) -> Result<State, RestoreError> {
    let (_, mut r) = Reader::open(
        blob,
        Controller::<B>::SAVE_ID,
        Controller::<B>::SAVE_VERSION,
    )?;
    let cfg = c.config();
    let cc = r.masked_u32(CC_MASK)?;
    let csts = r.masked_u32(CSTS_MASK)?;
    let aqa = r.masked_u32(AQA_MASK)?;
    let asq = r.u64()?;
    let acq = r.u64()?;
    check(asq & BASE_ALIGN == 0 && acq & BASE_ALIGN == 0)?;
    let intms = r.u32()?;
    let shutdown = r.u8()?;
    check(shutdown <= 2 && u32::from(shutdown) == csts >> SHST_SHIFT)?;
    let mut features = Features {
        arbitration: r.u32()?,
        power_management: r.u32()?,
        temperature_threshold: r.u32()?,
        error_recovery: r.u32()?,
        write_cache: r.flag()?,
        queues: None,
        coalescing: 0,
        write_atomicity: 0,
        async_event_config: 0,
        coalescing_disabled: Vec::new(),
    };
    let has_queues = r.flag()?;
    let (qs, qc) = (r.u16()?, r.u16()?);
    if has_queues {
        check(qs < cfg.io_queues && qc < cfg.io_queues)?;
        features.queues = Some((qs, qc));
    } else {
        check(qs == 0 && qc == 0)?;
    }
    features.coalescing = r.masked_u32(0xffff)?;
    features.write_atomicity = r.masked_u32(1)?;
    features.async_event_config = r.masked_u32(feature::AEC_SUPPORTED)?;
    check(features.power_management & 0x1f == 0)?;
    check(features.temperature_threshold <= 0x3f_ffff && features.error_recovery <= 0x1_ffff)?;
    let nv = r.u16()?;
    check(nv == cfg.vectors)?;
    for _ in 0..nv {
        features.coalescing_disabled.push(r.flag()?);
    }
    let nq = usize::from(r.u16()?);
    check(nq == usize::from(cfg.io_queues) + 1)?;
    let size_ok = |size: u16| (2..=cfg.max_queue_entries).contains(&u32::from(size));
    let mut sqs = Vec::with_capacity(nq);
    for _ in 0..nq {
        if !r.flag()? {
            sqs.push(None);
            continue;
        }
        let q = Sq {
            base: r.u64()?,
            size: r.u16()?,
            head: r.u16()?,
            tail: r.u16()?,
            cqid: r.u16()?,
        };
        check(size_ok(q.size) && q.head < q.size && q.tail < q.size)?;
        check(q.base & BASE_ALIGN == 0 && usize::from(q.cqid) < nq)?;
        sqs.push(Some(q));
    }
    let mut cqs = Vec::with_capacity(nq);
    let mut held = 0usize;
    for _ in 0..nq {
        if !r.flag()? {
            cqs.push(None);
            continue;
        }
        let mut q = Cq {
            base: r.u64()?,
            size: r.u16()?,
            head: r.u16()?,
            tail: r.u16()?,
            phase: r.flag()?,
            ien: r.flag()?,
            iv: r.u16()?,
            pending: VecDeque::new(),
        };
        check(size_ok(q.size) && q.head < q.size && q.tail < q.size)?;
        check(q.base & BASE_ALIGN == 0 && q.iv < cfg.vectors)?;
        let n = usize::from(r.u16()?);
        held += n;
        check(held <= MAX_HELD)?;
        for _ in 0..n {
            let e = Cqe {
                dw0: r.u32()?,
                sqid: r.u16()?,
                cid: r.u16()?,
                status: r.u16()?,
            };
            check(usize::from(e.sqid) < nq && e.status & 0x8000 == 0)?;
            q.pending.push_back(e);
        }
        cqs.push(Some(q));
    }
    // Queue structure: the admin pair exists exactly while the controller is ready;
    // every submission queue's completion queue exists (the admin queue's is 0).
    let ready = csts & CSTS_RDY != 0;
    check(ready == sqs[0].is_some() && ready == cqs[0].is_some())?;
    check(ready || (sqs.iter().all(Option::is_none) && cqs.iter().all(Option::is_none)))?;
    // Ready (or failed) only while enabled.
    check(csts & (CSTS_RDY | CSTS_CFS) == 0 || cc & 1 != 0)?;
    for (i, q) in sqs.iter().enumerate() {
        if let Some(q) = q {
            check((i == 0) == (q.cqid == 0) && cqs[usize::from(q.cqid)].is_some())?;
        }
    }
    let n = usize::from(r.u8()?);
    check(n <= aer::LIMIT)?;
    let mut aer_held = Vec::with_capacity(n);
    for _ in 0..n {
        aer_held.push(r.u16()?);
    }
    check(n == 0 || ready)?;
    let n = usize::from(r.u8()?);
    check(n <= aer::MAX_PENDING)?;
    let mut aer_pending = VecDeque::with_capacity(n);
    for _ in 0..n {
        let e = r.u32()?;
        check(!aer_pending.contains(&e))?;
        aer_pending.push_back(e);
    }
    let aer_error_masked = r.flag()?;
    let n = usize::from(r.u8()?);
    check(n <= ERROR_LOG_ENTRIES)?;
    let mut errors = VecDeque::with_capacity(n);
    for _ in 0..n {
        errors.push_back(ErrorEntry {
            count: r.u64()?,
            sqid: r.u16()?,
            cid: r.u16()?,
            status: r.u16()?,
        });
    }
    let error_count = r.u64()?;
    let smart = Smart {
        blocks_read: r.u64()?,
        blocks_written: r.u64()?,
        read_commands: r.u64()?,
        write_commands: r.u64()?,
    };
    let n = usize::from(r.u16()?);
    check(held + n <= MAX_HELD)?;
    let mut replay = VecDeque::with_capacity(n);
    for _ in 0..n {
        let sqid = r.u16()?;
        check(sqid != 0 && sqs.get(usize::from(sqid)).is_some_and(Option::is_some))?;
        let mut sqe = [0u8; entry::SQE_BYTES];
        sqe.copy_from_slice(r.take(entry::SQE_BYTES)?);
        replay.push_back((sqid, sqe));
    }
    r.end()?;
    Ok(State {
        cc,
        csts,
        aqa,
        asq,
        acq,
        intms,
        shutdown,
        features,
        sqs,
        cqs,
        aer_held,
        aer_pending,
        aer_error_masked,
        errors,
        error_count,
        smart,
        replay,
    })
}

pub(crate) fn apply<B: AsyncBlock>(c: &mut Controller<B>, s: State) {
    let State {
        cc,
        csts,
        aqa,
        asq,
        acq,
        intms,
        shutdown,
        features,
        sqs,
        cqs,
        aer_held,
        aer_pending,
        aer_error_masked,
        errors,
        error_count,
        smart,
        replay,
    } = s;
    c.cc = cc;
    c.csts = csts;
    c.aqa = aqa;
    c.asq = asq;
    c.acq = acq;
    c.intms = intms;
    c.set_shutdown_state(shutdown);
    c.features = features;
    c.sqs = sqs;
    c.cqs = cqs;
    c.aer_held = aer_held;
    c.aer_pending = aer_pending;
    c.aer_error_masked = aer_error_masked;
    c.errors = errors;
    c.error_count = error_count;
    c.smart = smart;
    c.replay = replay;
}
