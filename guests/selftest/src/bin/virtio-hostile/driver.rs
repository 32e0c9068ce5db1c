//! The virtio-mmio register interface of the disk, and the driver
//! initialisation sequence of virtio 1.2 §3.1.1 split into its steps, so the
//! hostile checks can stop after any of them or do one wrongly.
//!
//! Every register access is one 32-bit `ldr`/`str` from
//! [`probe`], which the hypervisor can always decode.

use core::fmt;

use selftest_guest::defs::virtio as v;
use selftest_guest::probe;

/// Why a step of the initialisation went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// Status did not read 0 after a reset.
    ResetStuck(u32),
    /// The device does not offer all the `wanted` features.
    NotOffered { wanted: u64, offered: u64 },
    /// FEATURES_OK did not stick.
    FeaturesRefused { status: u32 },
    /// QueueNumMax is below the queue size wanted (or 0: no queue 0).
    QueueTooSmall { max: u32 },
    /// QueueReady did not read 0 before setup.
    QueueAlreadyReady,
    /// QueueReady did not read 1 after setup.
    QueueNotReady { status: u32 },
    /// DRIVER_OK did not stick, or DEVICE_NEEDS_RESET is set.
    NotLive { status: u32 },
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ResetStuck(s) => write!(f, "status {s:#x} after reset"),
            Self::NotOffered { wanted, offered } => {
                write!(f, "features {wanted:#x} not all offered ({offered:#x})")
            }
            Self::FeaturesRefused { status } => {
                write!(f, "FEATURES_OK refused (status {status:#x})")
            }
            Self::QueueTooSmall { max } => write!(f, "QueueNumMax {max}"),
            Self::QueueAlreadyReady => write!(f, "queue 0 ready before setup"),
            Self::QueueNotReady { status } => {
                write!(f, "QueueReady reads 0 after setup (status {status:#x})")
            }
            Self::NotLive { status } => write!(f, "status {status:#x} after DRIVER_OK"),
        }
    }
}

/// The guest-physical addresses of a queue's three areas.
#[derive(Clone, Copy, Debug)]
pub struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// One virtio-mmio device.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: u64,
}

impl Mmio {
    /// The device whose registers start at `base`.
    pub const fn new(base: u64) -> Self {
        Self { base }
    }

    /// Reads the register at `off`.
    pub fn read(&self, off: u64) -> u32 {
        probe::load32(self.base + off) as u32
    }

    /// Writes the register at `off`.
    pub fn write(&self, off: u64, value: u32) {
        probe::store32(self.base + off, value);
    }

    /// Writes a 64-bit register pair (low half at `off`).
    pub fn write_pair(&self, off: u64, value: u64) {
        self.write(off, value as u32);
        self.write(off + v::HIGH_HALF, (value >> 32) as u32);
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.read(v::STATUS)
    }

    /// Sets `bits` in Status (keeping those already set).
    pub fn add_status(&self, bits: u32) {
        let s = self.status() & !v::S_NEEDS_RESET;
        self.write(v::STATUS, s | bits);
    }

    /// All 64 feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.write(v::DEVICE_FEATURES_SEL, 0);
        let lo = self.read(v::DEVICE_FEATURES);
        self.write(v::DEVICE_FEATURES_SEL, 1);
        let hi = self.read(v::DEVICE_FEATURES);
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// Writes all 64 DriverFeatures bits.
    pub fn set_driver_features(&self, features: u64) {
        self.write(v::DRIVER_FEATURES_SEL, 0);
        self.write(v::DRIVER_FEATURES, features as u32);
        self.write(v::DRIVER_FEATURES_SEL, 1);
        self.write(v::DRIVER_FEATURES, (features >> 32) as u32);
    }

    /// Resets the device (Status = 0) and checks Status reads 0.
    pub fn reset(&self) -> Result<(), InitError> {
        self.write(v::STATUS, 0);
        match self.status() {
            0 => Ok(()),
            s => Err(InitError::ResetStuck(s)),
        }
    }

    /// Reset, ACKNOWLEDGE, DRIVER, then accepts exactly `features` (which the
    /// device must offer) and checks FEATURES_OK sticks.
    pub fn negotiate(&self, features: u64) -> Result<(), InitError> {
        self.reset()?;
        self.add_status(v::S_ACKNOWLEDGE);
        self.add_status(v::S_DRIVER);
        let offered = self.device_features();
        if features & !offered != 0 {
            return Err(InitError::NotOffered {
                wanted: features,
                offered,
            });
        }
        self.set_driver_features(features);
        self.add_status(v::S_FEATURES_OK);
        let status = self.status();
        if status & v::S_FEATURES_OK == 0 {
            return Err(InitError::FeaturesRefused { status });
        }
        Ok(())
    }

    /// Programs queue 0 with `size` entries at `rings` and sets QueueReady
    /// (without checking that it stuck).
    pub fn program_queue(&self, size: u16, rings: RingAddrs) -> Result<(), InitError> {
        self.write(v::QUEUE_SEL, 0);
        let max = self.read(v::QUEUE_NUM_MAX);
        if max < u32::from(size) {
            return Err(InitError::QueueTooSmall { max });
        }
        if self.read(v::QUEUE_READY) != 0 {
            return Err(InitError::QueueAlreadyReady);
        }
        self.write(v::QUEUE_NUM, u32::from(size));
        self.write_pair(v::QUEUE_DESC_LOW, rings.desc);
        self.write_pair(v::QUEUE_DRIVER_LOW, rings.avail);
        self.write_pair(v::QUEUE_DEVICE_LOW, rings.used);
        self.write(v::QUEUE_READY, 1);
        Ok(())
    }

    /// [`Self::program_queue`], then checks QueueReady reads 1.
    pub fn setup_queue(&self, size: u16, rings: RingAddrs) -> Result<(), InitError> {
        self.program_queue(size, rings)?;
        if self.read(v::QUEUE_READY) != 1 {
            return Err(InitError::QueueNotReady {
                status: self.status(),
            });
        }
        Ok(())
    }

    /// Sets DRIVER_OK and checks the device is live.
    pub fn driver_ok(&self) -> Result<(), InitError> {
        self.add_status(v::S_DRIVER_OK);
        let status = self.status();
        if status & v::S_DRIVER_OK == 0 || status & v::S_NEEDS_RESET != 0 {
            return Err(InitError::NotLive { status });
        }
        Ok(())
    }

    /// The whole initialisation: negotiate `features`, set up queue 0, DRIVER_OK.
    pub fn init(&self, features: u64, size: u16, rings: RingAddrs) -> Result<(), InitError> {
        self.negotiate(features)?;
        self.setup_queue(size, rings)?;
        self.driver_ok()
    }

    /// Notifies queue 0 after a full barrier, so every ring write is visible first.
    pub fn notify(&self) {
        barrier();
        self.write(v::QUEUE_NOTIFY, 0);
    }

    /// Acknowledges every pending interrupt cause; returns InterruptStatus.
    pub fn ack_interrupts(&self) -> u32 {
        let pending = self.read(v::INTERRUPT_STATUS);
        if pending != 0 {
            self.write(v::INTERRUPT_ACK, pending);
        }
        pending
    }
}

/// `dsb sy`: every earlier memory access completes before any later one.
pub fn barrier() {
    // SAFETY: a barrier instruction; it changes no register or memory.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}
