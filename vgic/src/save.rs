//! Save/restore of the whole vGIC through `vdev::SaveRestore`: distributor control,
//! every redistributor's wake state and private interrupts, every SPI with its route
//! and hardware link.
//!
//! Layout, version 2, little-endian: `"VGIC"`, version u32, vCPU count u32, SPI count
//! u32, priority bits u8, each vCPU's MPIDR u64; GICD_CTLR u32; per vCPU: sleeping u8
//! then 32 interrupt records; then one record per SPI. An interrupt record is flags
//! u8 (enabled, group1, edge, pending latch, line, active, hardware-linked), priority
//! u8, pINTID u32, IROUTER u64, and (from version 2) the vCPU it is active on, u8
//! ([`NO_OWNER`] when none). Version 1 records have no owner byte: an active SPI
//! restored from one is loaded where its route says.
//!
//! Save after `sync` on every vCPU (a latch parked in a list register is saved as
//! pending either way). Restore needs a vGIC built from the same configuration; it
//! forgets every list register, so `el2` must `flush` before the next entry.

use alloc::vec::Vec;

use vdev::{RestoreError, SaveRestore};

use crate::irq::Irq;
use crate::lr::ICH_LR;
use crate::regs::{ctlr, intid, Irouter};
use crate::vgic::{VcpuState, Vgic};

mod flag {
    pub const ENABLED: u8 = 1 << 0;
    pub const GROUP1: u8 = 1 << 1;
    pub const EDGE: u8 = 1 << 2;
    pub const LATCH: u8 = 1 << 3;
    pub const LINE: u8 = 1 << 4;
    pub const ACTIVE: u8 = 1 << 5;
    pub const HW: u8 = 1 << 6;
    pub const ALL: u8 = (1 << 7) - 1;
}

/// Owner byte of an interrupt active on no particular vCPU.
const NO_OWNER: u8 = u8::MAX;
/// The first version whose records carry the owner byte.
const OWNER_VERSION: u32 = 2;

/// Largest pINTID an ICH_LR can carry.
const MAX_PINTID: u32 = ICH_LR::pINTID.mask as u32;

fn put_irq(out: &mut Vec<u8>, irq: &Irq) {
    let Irq {
        enabled,
        group1,
        edge,
        priority,
        latch,
        line,
        active,
        hw,
        route,
        // A latch parked in a list register is saved as pending; restore forgets
        // every list register.
        lr,
        owner,
    } = irq;
    let bits = [
        (*enabled, flag::ENABLED),
        (*group1, flag::GROUP1),
        (*edge, flag::EDGE),
        (*latch || lr.is_some_and(|h| h.latch_taken), flag::LATCH),
        (*line, flag::LINE),
        (*active, flag::ACTIVE),
        (hw.is_some(), flag::HW),
    ];
    out.push(bits.iter().filter(|(on, _)| *on).fold(0, |f, (_, b)| f | b));
    out.push(*priority);
    out.extend_from_slice(&hw.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&route.0.to_le_bytes());
    let owner = owner.filter(|_| *active);
    out.push(owner.map_or(NO_OWNER, |o| o as u8));
}

/// A bounds-checked little-endian reader.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(RestoreError::Malformed)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, RestoreError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, RestoreError> {
        self.take().map(u64::from_le_bytes)
    }

    /// Reads one interrupt record of a `version` blob from a VM with `vcpus` vCPUs,
    /// validating it as if it came from the guest.
    fn irq(
        &mut self,
        id: u32,
        prio_mask: u8,
        version: u32,
        vcpus: usize,
    ) -> Result<Irq, RestoreError> {
        let f = self.u8()?;
        let priority = self.u8()?;
        let pintid = self.u32()?;
        let route = self.u64()?;
        let owner = if version >= OWNER_VERSION {
            self.u8()?
        } else {
            NO_OWNER
        };
        let bad = f & !flag::ALL != 0
            || priority & !prio_mask != 0
            || pintid > MAX_PINTID
            || (f & flag::HW == 0 && pintid != 0)
            || Irouter::from_guest(route).0 != route
            || (id < intid::SGI_COUNT && f & flag::EDGE == 0)
            || (id < intid::PRIVATE_COUNT && route != 0)
            || (owner != NO_OWNER && (usize::from(owner) >= vcpus || f & flag::ACTIVE == 0));
        if bad {
            log::warn!("vgic: restore: bad record for INTID {id}");
            return Err(RestoreError::Malformed);
        }
        Ok(Irq {
            enabled: f & flag::ENABLED != 0,
            group1: f & flag::GROUP1 != 0,
            edge: f & flag::EDGE != 0,
            priority,
            latch: f & flag::LATCH != 0,
            line: f & flag::LINE != 0,
            active: f & flag::ACTIVE != 0,
            hw: (f & flag::HW != 0).then_some(pintid),
            route: Irouter(route),
            lr: None,
            owner: (owner != NO_OWNER).then_some(usize::from(owner)),
        })
    }
}

impl SaveRestore for Vgic {
    const SAVE_ID: [u8; 4] = *b"VGIC";
    const SAVE_VERSION: u32 = 2;

    fn save(&self) -> Vec<u8> {
        let Self {
            cfg,
            ctlr,
            spis,
            vcpus,
            // Requests to the hypervisor, not state: restore kicks every vCPU.
            kicks: _,
            // Not saved: a VM with an ITS (the only one with LPIs) refuses suspend
            // and snapshots before anything is saved (`el2`'s ITS device handle).
            lpis: _,
        } = self;
        let mut out = Vec::new();
        out.extend_from_slice(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
        out.extend_from_slice(&(vcpus.len() as u32).to_le_bytes());
        out.extend_from_slice(&cfg.num_spis.to_le_bytes());
        out.push(cfg.priority_bits);
        for m in &cfg.mpidrs {
            out.extend_from_slice(&m.to_le_bytes());
        }
        out.extend_from_slice(&ctlr.to_le_bytes());
        for v in vcpus {
            let VcpuState {
                // From the configuration (its MPIDR is saved above).
                affinity: _,
                private,
                sleeping,
                // List-register bookkeeping: restore forgets every list register.
                slots: _,
                left_out: _,
                // LPI registers: see `lpis` above.
                lpi: _,
            } = v;
            out.push(u8::from(*sleeping));
            private.iter().for_each(|irq| put_irq(&mut out, irq));
        }
        spis.iter().for_each(|irq| put_irq(&mut out, irq));
        out
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (version, payload) = vdev::save::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut r = Reader(payload);
        let n = r.u32()? as usize;
        let same_shape = n == self.vcpus.len()
            && r.u32()? == self.cfg.num_spis
            && r.u8()? == self.cfg.priority_bits;
        if !same_shape || self.cfg.mpidrs.iter().any(|m| r.u64() != Ok(*m)) {
            log::warn!("vgic: restore: saved configuration differs from this vGIC's");
            return Err(RestoreError::Malformed);
        }
        let ctlr = r.u32()?;
        if ctlr & !ctlr::WRITABLE != 0 {
            return Err(RestoreError::Malformed);
        }
        let mask = self.cfg.priority_mask();
        let mut vcpus = self.vcpus.clone();
        for v in vcpus.iter_mut() {
            v.sleeping = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RestoreError::Malformed),
            };
            for (id, irq) in v.private.iter_mut().enumerate() {
                *irq = r.irq(id as u32, mask, version, n)?;
            }
            v.slots.clear();
            v.left_out.clear();
        }
        let spis = (0..self.cfg.num_spis)
            .map(|i| r.irq(intid::SPI_FIRST + i, mask, version, n))
            .collect::<Result<Vec<_>, _>>()?;
        if !r.0.is_empty() {
            return Err(RestoreError::Malformed);
        }
        self.ctlr = ctlr;
        self.vcpus = vcpus;
        self.spis = spis;
        self.kick_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VgicConfig;
    use crate::lr::{IchLr, LrState};
    use crate::regs::{gicd, gicr};
    use vdev::AccessSize::{Double, Word};

    fn busy_vgic() -> Vgic {
        let mut g = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        g.gicd_write(gicd::CTLR, Word, 3).unwrap();
        g.gicd_write(gicd::ISENABLER + 4, Word, 0xF0F0).unwrap();
        g.gicd_write(gicd::IGROUPR + 8, Word, 0xFFFF_0000).unwrap();
        g.gicd_write(gicd::IPRIORITYR + 40, Word, 0x1828_3848)
            .unwrap();
        g.gicd_write(gicd::ICFGR + 8, Word, 0xA).unwrap();
        g.gicd_write(gicd::IROUTER + 8 * 50, Double, 1).unwrap();
        g.gicr_write(gicr::STRIDE + gicr::WAKER, Word, 0).unwrap();
        g.gicr_write(
            gicr::STRIDE + gicr::SGI_BASE + gicr::ISACTIVER0,
            Word,
            1 << 30,
        )
        .unwrap();
        g.set_hw_mapping(1, 27, 27).unwrap();
        g.set_ppi_level(1, 27, true).unwrap();
        g.set_level(33, true).unwrap();
        g.send_sgi(1, 5 << 24 | 1).unwrap();
        g
    }

    type Snapshot = (u32, Vec<Irq>, Vec<(bool, [Irq; 32])>);

    fn state_of(g: &Vgic) -> Snapshot {
        (
            g.ctlr,
            g.spis.clone(),
            g.vcpus.iter().map(|v| (v.sleeping, v.private)).collect(),
        )
    }

    #[test]
    fn round_trip_restores_everything() {
        let g = busy_vgic();
        let blob = g.save();
        let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        assert_ne!(state_of(&h), state_of(&g));
        h.restore(&blob).unwrap();
        assert_eq!(state_of(&h), state_of(&g));
        assert_eq!(h.save(), blob);
        assert_eq!(h.take_kicks(), 0b11);
    }

    /// SPI 40 acknowledged on vCPU 1 and still active there.
    fn spi_active_on_vcpu1() -> Vgic {
        let mut g = busy_vgic();
        g.gicd_write(gicd::IROUTER + 8 * 40, Double, 1).unwrap();
        g.gicd_write(gicd::ISENABLER + 4, Word, 1 << 8).unwrap();
        g.gicd_write(gicd::IGROUPR + 4, Word, 1 << 8).unwrap();
        g.set_level(40, true).unwrap();
        let mut lrs = [0u64; 4];
        g.flush(1, &mut lrs).unwrap();
        let i = lrs.iter().position(|l| IchLr(*l).vintid() == 40).unwrap();
        lrs[i] = IchLr::new(40, 0, true, LrState::Active).0;
        g.sync(1, &mut lrs, 0).unwrap();
        assert_eq!(g.spis[8].owner, Some(1));
        g
    }

    impl crate::ListRegisters for [u64; 4] {
        fn count(&self) -> usize {
            4
        }
        fn read(&self, i: usize) -> u64 {
            self[i]
        }
        fn write(&mut self, i: usize, v: u64) {
            self[i] = v;
        }
    }

    /// Rewrites a version 2 blob of a two-vCPU, 64-SPI vGIC as version 1 (records
    /// without their owner byte).
    fn as_version_1(blob: &[u8]) -> Vec<u8> {
        const RECORD: usize = 15;
        let head = 8 + 4 + 4 + 1 + 2 * 8 + 4;
        let mut out = blob[..head].to_vec();
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        let mut at = head;
        for _ in 0..2 {
            out.push(blob[at]);
            at += 1;
            for _ in 0..32 {
                out.extend_from_slice(&blob[at..at + RECORD - 1]);
                at += RECORD;
            }
        }
        for _ in 0..64 {
            out.extend_from_slice(&blob[at..at + RECORD - 1]);
            at += RECORD;
        }
        assert_eq!(at, blob.len());
        out
    }

    #[test]
    fn the_vcpu_an_spi_is_active_on_survives_a_round_trip() {
        let g = spi_active_on_vcpu1();
        let blob = g.save();
        let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        h.restore(&blob).unwrap();
        assert_eq!(state_of(&h), state_of(&g));
        assert_eq!(h.spis[8].owner, Some(1));
        // A version 1 blob knows no owner: the route decides.
        let mut old = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        old.restore(&as_version_1(&blob)).unwrap();
        assert!(old.spis[8].active);
        assert_eq!(old.spis[8].owner, None);
        assert_eq!(old.spis[0], h.spis[0]);
    }

    #[test]
    fn refuses_owners_that_cannot_be() {
        let blob = spi_active_on_vcpu1().save();
        let spi40_owner = blob.len() - (64 - 9) * 15 - 1;
        assert_eq!(blob[spi40_owner], 1);
        for (v, why) in [(2, "no vCPU 2"), (0xFE, "no vCPU 254")] {
            let mut bad = blob.clone();
            bad[spi40_owner] = v;
            let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
            assert_eq!(h.restore(&bad), Err(RestoreError::Malformed), "{why}");
        }
        let mut bad = blob.clone();
        bad[spi40_owner + 15] = 0; // SPI 41 is not active
        let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        assert_eq!(h.restore(&bad), Err(RestoreError::Malformed));
    }

    #[test]
    fn refuses_foreign_newer_short_and_mismatched_blobs() {
        let blob = busy_vgic().save();
        let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        let before = state_of(&h);
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert_eq!(h.restore(&bad), Err(RestoreError::WrongDevice));
        let mut bad = blob.clone();
        bad[4] = 3;
        assert_eq!(h.restore(&bad), Err(RestoreError::UnsupportedVersion(3)));
        for cut in [3, 10, blob.len() - 1] {
            assert_eq!(
                h.restore(&blob[..cut]),
                Err(RestoreError::Malformed),
                "cut {cut}"
            );
        }
        let mut long = blob.clone();
        long.push(0);
        assert_eq!(h.restore(&long), Err(RestoreError::Malformed));
        let mut other = Vgic::new(VgicConfig::simple(2, 96)).unwrap();
        assert_eq!(other.restore(&blob), Err(RestoreError::Malformed));
        assert_eq!(state_of(&h), before, "a refused blob changes nothing");
    }

    #[test]
    fn refuses_out_of_range_fields() {
        let blob = busy_vgic().save();
        let header = 4 + 4 + 4 + 4 + 1 + 2 * 8;
        let first_irq = header + 4 + 1; // vCPU 0, SGI 0
        let cases: [(usize, u8); 5] = [
            (header, 0x80),        // GICD_CTLR bit 7
            (header + 4, 2),       // sleeping not 0/1
            (first_irq, 0x80),     // unknown flag
            (first_irq, 0),        // SGI not edge
            (first_irq + 1, 0x01), // priority below the implemented bits
        ];
        for (at, v) in cases {
            let mut bad = blob.clone();
            bad[at] = v;
            let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
            assert_eq!(
                h.restore(&bad),
                Err(RestoreError::Malformed),
                "byte {at} = {v:#x}"
            );
        }
        // pINTID without the HW flag, and a route on a private interrupt.
        for at in [first_irq + 2, first_irq + 6] {
            let mut bad = blob.clone();
            bad[at] = 1;
            let mut h = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
            assert_eq!(h.restore(&bad), Err(RestoreError::Malformed), "byte {at}");
        }
    }

    /// What the guest and el2 see: the distributor's and both redistributors'
    /// registers, then what a flush of each vCPU puts in its list registers.
    fn probe_vgic(g: &mut Vgic) -> Vec<u64> {
        let mut seen: Vec<u64> = (0..gicd::IROUTER)
            .step_by(4)
            .map(|off| g.gicd_read(off, Word).unwrap_or(u64::MAX))
            .collect();
        for spi in 32..96 {
            seen.push(
                g.gicd_read(gicd::IROUTER + 8 * spi, Double)
                    .unwrap_or(u64::MAX),
            );
        }
        for v in 0..2 {
            let frame = v * gicr::STRIDE;
            let rd = (0..0x100).step_by(4);
            let sgi = (gicr::SGI_BASE..gicr::SGI_BASE + 0x1000).step_by(4);
            for off in rd.chain(sgi) {
                seen.push(g.gicr_read(frame + off, Word).unwrap_or(u64::MAX));
            }
        }
        for v in 0..2 {
            let mut lrs = [0u64; 4];
            let outcome = g.flush(v, &mut lrs);
            seen.extend(lrs);
            seen.push(u64::from(outcome.is_ok()));
        }
        seen
    }

    vdev::save_restore_tests!(
        saved_state,
        make: || Vgic::new(VgicConfig::simple(2, 64)).unwrap(),
        drive: |g: &mut Vgic| *g = spi_active_on_vcpu1(),
        probe: probe_vgic,
    );
}
