//! `tis`: register access sequences against the TPM TIS (FIFO) interface over the
//! TPM engine: raw reads and writes anywhere in (and just past) the five locality
//! pages, writes of named registers, whole command exchanges through the FIFO
//! (request locality, commandReady, data, tpmGo, read back while dataAvail), platform
//! resets.
//!
//! Invariants: reads carry no bits outside the access, only the TIS's own INTID is
//! driven, a complete response read out of the FIFO is a well-formed TPM response.

use arbitrary::{Arbitrary, Unstructured};
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, VecMemory};
use vtpm::tis::Tis;
use vtpm::tis_regs::fifo::*;
use vtpm::tis_regs::{LOCALITY_PAGE, REGION_SIZE};

use crate::tpm_common::{check_response, startup_command, tpm, HEADER};

const INTID: u32 = 40;
/// Most FIFO reads one exchange makes (a response is at most 4 KiB).
const MAX_RESPONSE_READS: usize = 4200;

/// Registers a named write may target (in the locality page the op picks).
const REGISTERS: &[u64] = &[
    ACCESS,
    INT_ENABLE,
    INT_VECTOR,
    INT_STATUS,
    INTF_CAPABILITY,
    STS,
    STS + 1,
    STS + 3,
    DATA_FIFO,
    INTERFACE_ID,
    XDATA_FIFO,
    DID_VID,
    RID,
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
    tis: Tis,
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
        let v = self.tis.read(&mut ctx, offset, size).ok()?;
        assert_eq!(v & !size.mask(), 0, "TIS {offset:#x} read too wide");
        Some(v)
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        let _ = self.tis.write(&mut ctx, offset, size, value);
    }

    fn exchange(&mut self, locality: u8, command: &[u8]) {
        let page = u64::from(locality % 5) * LOCALITY_PAGE;
        self.write(
            page + ACCESS,
            AccessSize::Byte,
            u64::from(ACCESS_REQUEST_USE),
        );
        self.write(page + STS, AccessSize::Word, u64::from(STS_COMMAND_READY));
        for &b in command {
            self.write(page + DATA_FIFO, AccessSize::Byte, u64::from(b));
        }
        self.write(page + STS, AccessSize::Word, u64::from(STS_GO));
        let mut rsp = Vec::new();
        while rsp.len() < MAX_RESPONSE_READS {
            let sts = self.read(page + STS, AccessSize::Word).unwrap_or(0) as u32;
            if sts & STS_DATA_AVAIL == 0 {
                break;
            }
            rsp.push(self.read(page + DATA_FIFO, AccessSize::Byte).unwrap_or(0) as u8);
        }
        if rsp.len() >= HEADER {
            let size = u32::from_be_bytes([rsp[2], rsp[3], rsp[4], rsp[5]]) as usize;
            if size == rsp.len() {
                check_response(&rsp);
            }
        }
        self.write(page + STS, AccessSize::Word, u64::from(STS_COMMAND_READY));
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        tis: Tis::new(tpm(), Some(INTID)),
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
            Op::Reset => MmioDevice::reset(&mut h.tis, &mut h.irq),
        }
        assert!(!h.irq.other, "the TIS drove another INTID");
    }
}
