//! Transfer Request Blocks (xHCI §4.11, §6.4): the 16-byte record every ring holds,
//! the consumer side of a ring ([`Ring`]: cycle bit, Link TRBs, bounded walks), and
//! the command TRB decoder ([`Command::parse`]).

use vdev::{GuestMemory, MemError};

use crate::defs::{cc, trb, trb_type};

/// One TRB: parameter, status, control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trb {
    pub param: u64,
    pub status: u32,
    pub control: u32,
}

impl Trb {
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[0..8]);
        Trb {
            param: u64::from_le_bytes(p),
            status: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            control: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.param.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..16].copy_from_slice(&self.control.to_le_bytes());
        b
    }
    pub fn read(mem: &dyn GuestMemory, gpa: u64) -> Result<Self, MemError> {
        let mut b = [0u8; 16];
        mem.read(gpa, &mut b)?;
        Ok(Self::from_bytes(&b))
    }
    pub fn kind(&self) -> u8 {
        ((self.control & trb::TYPE_MASK) >> trb::TYPE_SHIFT) as u8
    }
    pub fn cycle(&self) -> bool {
        self.control & trb::CYCLE != 0
    }
    pub fn has(&self, flag: u32) -> bool {
        self.control & flag != 0
    }
    /// The Slot ID field of a command or event.
    pub fn slot(&self) -> u8 {
        (self.control >> trb::SLOT_SHIFT) as u8
    }
    /// The Endpoint ID (Device Context Index) field of a command.
    pub fn endpoint(&self) -> u8 {
        ((self.control >> trb::EP_SHIFT) & 0x1f) as u8
    }
    /// The TRB Transfer Length of a transfer TRB.
    pub fn length(&self) -> u32 {
        self.status & trb::LENGTH_MASK
    }
    /// A TRB of `kind` with `control` flags (the cycle bit is the producer's).
    pub fn new(kind: u8, param: u64, status: u32, control: u32) -> Self {
        Trb {
            param,
            status,
            control: control | u32::from(kind) << trb::TYPE_SHIFT,
        }
    }
}

/// Most Link TRBs followed in a row before the ring is declared to loop.
pub const MAX_LINKS: u32 = 32;

/// Why a ring walk stopped without a TRB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// A TRB lies outside guest RAM.
    Memory(u64),
    /// [`MAX_LINKS`] Link TRBs in a row: the ring goes round without a TRB.
    LinkLoop(u64),
    /// The walk's budget of TRBs ran out (the work continues later).
    Budget,
}

/// What [`Ring::fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// A TRB (not a Link TRB) at this address.
    Trb(u64, Trb),
    /// The next TRB belongs to the producer (cycle bit mismatch).
    Empty,
}

/// The consumer side of a ring: dequeue pointer and consumer cycle state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    pub dequeue: u64,
    pub cycle: bool,
}

impl Ring {
    pub fn new(dequeue: u64, cycle: bool) -> Self {
        Ring {
            dequeue: dequeue & !0xf,
            cycle,
        }
    }

    /// The next TRB for the consumer, following Link TRBs (toggling the cycle state
    /// where they say so). Every TRB looked at costs one unit of `budget`.
    pub fn fetch(&mut self, mem: &dyn GuestMemory, budget: &mut u32) -> Result<Fetch, RingError> {
        let mut links = 0;
        loop {
            if *budget == 0 {
                return Err(RingError::Budget);
            }
            *budget -= 1;
            let t = Trb::read(mem, self.dequeue).map_err(|_| RingError::Memory(self.dequeue))?;
            if t.cycle() != self.cycle {
                return Ok(Fetch::Empty);
            }
            if t.kind() == trb_type::LINK {
                links += 1;
                if links > MAX_LINKS {
                    return Err(RingError::LinkLoop(self.dequeue));
                }
                if t.has(trb::TC) {
                    self.cycle = !self.cycle;
                }
                self.dequeue = t.param & !0xf;
                continue;
            }
            let at = self.dequeue;
            self.dequeue = self.dequeue.wrapping_add(trb::SIZE);
            return Ok(Fetch::Trb(at, t));
        }
    }
}

/// A decoded command TRB (xHCI §6.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    NoOp,
    EnableSlot,
    DisableSlot {
        slot: u8,
    },
    AddressDevice {
        slot: u8,
        input: u64,
        bsr: bool,
    },
    ConfigureEndpoint {
        slot: u8,
        input: u64,
        deconfigure: bool,
    },
    EvaluateContext {
        slot: u8,
        input: u64,
    },
    ResetEndpoint {
        slot: u8,
        dci: u8,
    },
    StopEndpoint {
        slot: u8,
        dci: u8,
    },
    SetTrDequeue {
        slot: u8,
        dci: u8,
        dequeue: u64,
        dcs: bool,
    },
    ResetDevice {
        slot: u8,
    },
}

impl Command {
    /// Decodes `t`; `Err` carries the completion code of a refused TRB.
    pub fn parse(t: &Trb) -> Result<Command, u8> {
        let slot = t.slot();
        let dci = t.endpoint();
        // Input context pointers are 16-byte aligned (bits 3:0 reserved).
        let input = || {
            if t.param & 0xf != 0 || t.param == 0 {
                Err(cc::TRB)
            } else {
                Ok(t.param)
            }
        };
        let ep = || {
            if dci == 0 {
                Err(cc::TRB)
            } else {
                Ok(dci)
            }
        };
        Ok(match t.kind() {
            trb_type::NO_OP_COMMAND => Command::NoOp,
            trb_type::ENABLE_SLOT => Command::EnableSlot,
            trb_type::DISABLE_SLOT => Command::DisableSlot { slot },
            trb_type::ADDRESS_DEVICE => Command::AddressDevice {
                slot,
                input: input()?,
                bsr: t.has(trb::BSR),
            },
            trb_type::CONFIGURE_ENDPOINT => {
                let deconfigure = t.has(trb::DC);
                Command::ConfigureEndpoint {
                    slot,
                    input: if deconfigure { 0 } else { input()? },
                    deconfigure,
                }
            }
            trb_type::EVALUATE_CONTEXT => Command::EvaluateContext {
                slot,
                input: input()?,
            },
            trb_type::RESET_ENDPOINT => Command::ResetEndpoint { slot, dci: ep()? },
            trb_type::STOP_ENDPOINT => Command::StopEndpoint { slot, dci: ep()? },
            trb_type::SET_TR_DEQUEUE => {
                let dequeue = t.param & !0xf;
                // Stream Context Type (bits 3:1) must be 0: no streams.
                if dequeue == 0 || t.param & 0xe != 0 {
                    return Err(cc::PARAMETER);
                }
                Command::SetTrDequeue {
                    slot,
                    dci: ep()?,
                    dequeue,
                    dcs: t.param & 1 != 0,
                }
            }
            trb_type::RESET_DEVICE => Command::ResetDevice { slot },
            _ => return Err(cc::TRB),
        })
    }
}
