//! The root complex's saved state (`PCIR`): per function, in device order, its
//! device number, configuration space bytes (Command, BARs, MSI-X control and
//! everything else software wrote), its INTx level, its MSI-X table and pending
//! bits, and the function's own blob behind a length. Which BARs decode and the
//! INTx lines are recomputed from those; the layout, the MSI controller and the
//! functions themselves come from the VM definition, so a blob for other
//! functions (another device number, another MSI-X size) is refused.
//!
//! Restore validates everything as guest input first (configuration bits no
//! write could reach, reserved MSI-X address bits, pending bits past the table,
//! each function's blob) and changes nothing when it refuses: functions already
//! restored when a later one refuses get their previous state back.

use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{RestoreError, SaveRestore};

use super::{RootComplex, Slot};
use crate::defs::CONFIG_HEADER_SIZE;
use crate::msix::Msix;

/// Largest function blob a restore accepts (an NVMe controller with every queue
/// and held command is far below).
const MAX_FUNCTION_BLOB: usize = 16 << 20;

/// One slot as read from a blob, not applied yet.
struct Loaded<'b> {
    config: [u8; CONFIG_HEADER_SIZE],
    intx_level: bool,
    msix: Option<Msix>,
    function: &'b [u8],
}

impl SaveRestore for RootComplex {
    const SAVE_ID: [u8; 4] = *b"PCIR";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let RootComplex {
            // From the VM definition.
            layout: _,
            slots,
            // Recomputed from the configuration spaces.
            decoded: _,
            spi_levels: _,
            // Wiring.
            msi: _,
            // A diagnostic count, not guest-visible.
            dropped_messages: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u32(slots.len() as u32);
        for s in slots {
            let Slot {
                device,
                config,
                msix,
                function,
                // From the function's spec.
                intx_pin: _,
                intx_level,
                // Logging bookkeeping, recomputed.
                refused: _,
            } = s;
            w.u8(*device).bytes(config.state()).flag(*intx_level);
            if let Some((m, _)) = msix {
                m.save(&mut w);
            }
            w.bytes(&function.save());
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        if r.u32()? as usize != self.slots.len() {
            return Err(RestoreError::Malformed);
        }
        let mut loaded = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            loaded.push(load(&mut r, s)?);
        }
        r.end()?;
        // The functions validate their own blobs; one refusing puts back those
        // already restored.
        let before: Vec<Vec<u8>> = self.slots.iter().map(|s| s.function.save()).collect();
        for (i, l) in loaded.iter().enumerate() {
            if let Err(e) = self.slots[i].function.restore(l.function) {
                for (s, old) in self.slots[..i].iter_mut().zip(&before) {
                    s.function
                        .restore(old)
                        .expect("a function takes back the state it saved");
                }
                return Err(e);
            }
        }
        for (s, l) in self.slots.iter_mut().zip(loaded) {
            s.config.set_state(l.config);
            s.intx_level = l.intx_level;
            if let (Some((m, _)), Some(new)) = (s.msix.as_mut(), l.msix) {
                *m = new;
            }
            s.refused = [false; crate::defs::BAR_COUNT];
        }
        self.recompute_decode();
        // The lines as the saved functions drive them; the vGIC, restored from
        // the same moment, already holds those levels.
        self.spi_levels = self.intx_levels();
        Ok(())
    }
}

/// Reads slot `s`'s part of a blob.
fn load<'b>(r: &mut Reader<'b>, s: &Slot) -> Result<Loaded<'b>, RestoreError> {
    if r.u8()? != s.device {
        return Err(RestoreError::Malformed);
    }
    let bytes = r.bytes(CONFIG_HEADER_SIZE)?;
    let intx_level = r.flag()?;
    if intx_level && s.intx_pin.is_none() {
        return Err(RestoreError::Malformed);
    }
    let config = s
        .config
        .check_state(bytes, intx_level)
        .ok_or(RestoreError::Malformed)?;
    let msix = match &s.msix {
        Some((m, _)) => Some(m.load(r)?),
        None => None,
    };
    let function = r.bytes(MAX_FUNCTION_BLOB)?;
    Ok(Loaded {
        config,
        intx_level,
        msix,
        function,
    })
}
