//! `crb`: register and buffer access sequences against the TPM CRB interface over
//! the TPM engine: raw reads and writes anywhere in (and just past) the five
//! locality pages, writes of named registers, whole command exchanges (request
//! locality, cmdReady, the command into the buffer, START, the response read back),
//! platform resets.
//!
//! Invariants: reads carry no bits outside the access, only the CRB's own INTID is
//! driven, and a START from the active locality leaves a well-formed TPM response
//! that fits the buffer.

use arbitrary::{Arbitrary, Unstructured};
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, VecMemory};
use vtpm::crb::Crb;
use vtpm::tis_regs::crb::*;
use vtpm::tis_regs::{LOCALITY_PAGE, REGION_SIZE};

use crate::tpm_common::{check_response, startup_command, tpm, HEADER};

const INTID: u32 = 41;
/// Guest physical address of the CRB window.
const BASE: u64 = 0x0c00_0000;

/// Registers a named write may target (in the locality page the op picks).
const REGISTERS: &[u64] = &[
    LOC_STATE,
    LOC_CTRL,
    LOC_STS,
    INTF_ID_LO,
    INTF_ID_HI,
    CTRL_EXT_LO,
    CTRL_REQ,
    CTRL_STS,
    CTRL_CANCEL,
    CTRL_START,
    INT_ENABLE,
    INT_STS,
    CTRL_CMD_SIZE,
    CTRL_CMD_LADDR,
    CTRL_RSP_ADDR_LO,
    DATA_BUFFER,
];

#[derive(Default)]
struct Irq {
    other: bool,
}

impl InterruptSink for Irq {
    fn set_level(&mut self, intid: u32, _level: bool) {
        self.other |= intid != INTID;
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u16,
        size: u8,
    },
    Write {
        offset: u16,
        size: u8,
        value: u64,
    },
    Register {
        locality: u8,
        reg: u8,
        size: u8,
        value: u32,
    },
    Exchange {
        locality: u8,
        command: crate::Bytes,
    },
    Startup {
        locality: u8,
    },
    Reset,
}

struct Harness {
    crb: Crb,
    mem: VecMemory,
    irq: Irq,
}

impl Harness {
    fn read(&mut self, offset: u64, size: AccessSize) -> Option<u64> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        let v = self.crb.read(&mut ctx, offset, size).ok()?;
        assert_eq!(v & !size.mask(), 0, "CRB {offset:#x} read too wide");
        Some(v)
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        let _ = self.crb.write(&mut ctx, offset, size, value);
    }

    fn read_buffer(&mut self, at: usize) -> u8 {
        self.read(DATA_BUFFER + at as u64, AccessSize::Byte)
            .unwrap_or(0) as u8
    }

    fn exchange(&mut self, locality: u8, command: &[u8]) {
        let page = u64::from(locality % 5) * LOCALITY_PAGE;
        self.write(
            page + LOC_CTRL,
            AccessSize::Word,
            u64::from(LOC_CTRL_REQUEST),
        );
        self.write(page + CTRL_REQ, AccessSize::Word, u64::from(REQ_CMD_READY));
        let command = &command[..command.len().min(DATA_BUFFER_SIZE)];
        for (i, chunk) in command.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let v = u32::from_le_bytes(word);
            self.write(DATA_BUFFER + 4 * i as u64, AccessSize::Word, u64::from(v));
        }
        let granted =
            self.read(page + LOC_STS, AccessSize::Word).unwrap_or(0) as u32 & LOC_STS_GRANTED != 0;
        self.write(page + CTRL_START, AccessSize::Word, 1);
        if !granted {
            return;
        }
        // START from the active locality ran the command: the buffer holds the
        // response, which must fit it.
        let header: Vec<u8> = (0..HEADER).map(|i| self.read_buffer(i)).collect();
        let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
        assert!(
            (HEADER..=DATA_BUFFER_SIZE).contains(&size),
            "response of {size} bytes in a {DATA_BUFFER_SIZE}-byte buffer"
        );
        let rsp: Vec<u8> = (0..size).map(|i| self.read_buffer(i)).collect();
        check_response(&rsp);
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        crb: Crb::new(tpm(), BASE, Some(INTID)),
        mem: VecMemory::new(0, 0),
        irq: Irq::default(),
    };
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            // A little past the region too: those must be refused, not panic.
            Op::Read { offset, size } => {
                let _ = h.read(
                    u64::from(offset) % (REGION_SIZE + 0x100),
                    crate::access_size(size),
                );
            }
            Op::Write {
                offset,
                size,
                value,
            } => h.write(
                u64::from(offset) % (REGION_SIZE + 0x100),
                crate::access_size(size),
                value,
            ),
            Op::Register {
                locality,
                reg,
                size,
                value,
            } => {
                let page = u64::from(locality % 5) * LOCALITY_PAGE;
                let reg = REGISTERS[usize::from(reg) % REGISTERS.len()];
                h.write(page + reg, crate::access_size(size), u64::from(value));
            }
            Op::Exchange { locality, command } => h.exchange(locality, &command.0),
            Op::Startup { locality } => h.exchange(locality, &startup_command()),
            Op::Reset => MmioDevice::reset(&mut h.crb, &mut h.irq),
        }
        assert!(!h.irq.other, "the CRB drove another INTID");
    }
}
