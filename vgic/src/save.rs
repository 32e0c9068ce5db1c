//! Save/restore of the whole vGIC through `vdev::SaveRestore`: distributor control,
//! every redistributor's wake state and private interrupts, every SPI with its route
//! and hardware link, and (a VM with an ITS) the LPIs.
//!
//! Layout, version 3, little-endian: `"VGIC"`, version u32, vCPU count u32, SPI count
//! u32, priority bits u8, each vCPU's MPIDR u64; GICD_CTLR u32; per vCPU: sleeping u8
//! then 32 interrupt records; then one record per SPI. An interrupt record is flags
//! u8 (enabled, group1, edge, pending latch, line, active, hardware-linked), priority
//! u8, pINTID u32, IROUTER u64, and (from version 2) the vCPU it is active on, u8
//! ([`NO_OWNER`] when none). Version 1 records have no owner byte: an active SPI
//! restored from one is loaded where its route says. From version 3 the SPIs are
//! followed by the LPI section: a u8, 1 if the vGIC has LPIs (it must match the
//! vGIC restored into), and then per vCPU GICR_CTLR.EnableLPIs u8, GICR_PROPBASER
//! u64 and GICR_PENDBASER u64, an LPI count u32 and that many (INTID u32, record)
//! pairs in ascending INTID order: every LPI whose state differs from reset (its
//! cached configuration — enable and priority —, pending, active or routed
//! elsewhere). Versions 1 and 2 have no LPI section: their LPIs (none: a VM with
//! an ITS was not saved before version 3) restore in their reset state.
//!
//! Save after `sync` on every vCPU (a latch parked in a list register is saved as
//! pending either way). Restore needs a vGIC built from the same configuration; it
//! forgets every list register, so `el2` must `flush` before the next entry.

use alloc::vec::Vec;

use vdev::{RestoreError, SaveRestore};

use crate::irq::Irq;
use crate::lpi::{Lpis, RdLpi};
use crate::lr::ICH_LR;
use crate::regs::{ctlr, intid, lpi_tables, Irouter};
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
/// The first version with the LPI section.
const LPI_VERSION: u32 = 3;

/// The GICR_PROPBASER bits a guest can set.
const PROPBASER_WRITABLE: u64 =
    lpi_tables::PROP_ID_BITS_MASK | lpi_tables::PROP_PA_MASK | lpi_tables::ATTR_MASK;
/// The GICR_PENDBASER bits a guest can set.
const PENDBASER_WRITABLE: u64 = lpi_tables::PEND_PA_MASK | lpi_tables::ATTR_MASK;

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
    const SAVE_VERSION: u32 = 3;

    fn save(&self) -> Vec<u8> {
        let Self {
            cfg,
            ctlr,
            spis,
            vcpus,
            // Requests to the hypervisor, not state: restore kicks every vCPU.
            kicks: _,
            lpis,
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
                // In the LPI section below.
                lpi: _,
            } = v;
            out.push(u8::from(*sleeping));
            private.iter().for_each(|irq| put_irq(&mut out, irq));
        }
        spis.iter().for_each(|irq| put_irq(&mut out, irq));
        out.push(u8::from(lpis.is_some()));
        if let Some(lpis) = lpis {
            for v in vcpus {
                let RdLpi {
                    enabled,
                    propbaser,
                    pendbaser,
                } = v.lpi;
                out.push(u8::from(enabled));
                out.extend_from_slice(&propbaser.to_le_bytes());
                out.extend_from_slice(&pendbaser.to_le_bytes());
            }
            let Lpis {
                irqs,
                // Derived: restore rebuilds it from the records.
                live: _,
            } = lpis;
            let reset = Lpis::reset_irq();
            let changed: Vec<(u32, &Irq)> = irqs
                .iter()
                .enumerate()
                .filter(|(_, irq)| !same_as_reset(irq, &reset))
                .map(|(i, irq)| (intid::LPI_FIRST + i as u32, irq))
                .collect();
            out.extend_from_slice(&(changed.len() as u32).to_le_bytes());
            for (id, irq) in changed {
                out.extend_from_slice(&id.to_le_bytes());
                put_irq(&mut out, irq);
            }
        }
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
        let lpis = if version >= LPI_VERSION {
            self.restore_lpis(&mut r, &mut vcpus, mask, version)?
        } else {
            // No LPI section: reset LPIs (a VM with LPIs was not saved before).
            self.lpis.as_ref().map(|_| Lpis::new())
        };
        if !r.0.is_empty() {
            return Err(RestoreError::Malformed);
        }
        self.ctlr = ctlr;
        self.vcpus = vcpus;
        self.spis = spis;
        self.lpis = lpis;
        self.kick_all();
        Ok(())
    }
}

/// Whether an LPI's record is its reset record once list-register bookkeeping is
/// ignored (what a save leaves out).
fn same_as_reset(irq: &Irq, reset: &Irq) -> bool {
    let latch = irq.latch || irq.lr.is_some_and(|h| h.latch_taken);
    Irq {
        latch,
        lr: None,
        owner: irq.owner.filter(|_| irq.active),
        ..*irq
    } == *reset
}

impl Vgic {
    /// Reads the LPI section of a version 3 blob into `vcpus` (their LPI registers)
    /// and a fresh set of LPIs, validating it as guest-written state.
    fn restore_lpis(
        &self,
        r: &mut Reader<'_>,
        vcpus: &mut [VcpuState],
        mask: u8,
        version: u32,
    ) -> Result<Option<Lpis>, RestoreError> {
        let has = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(RestoreError::Malformed),
        };
        if has != self.lpis.is_some() {
            log::warn!("vgic: restore: the saved vGIC's LPI support differs from this one's");
            return Err(RestoreError::Malformed);
        }
        if !has {
            return Ok(None);
        }
        for v in vcpus.iter_mut() {
            let enabled = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RestoreError::Malformed),
            };
            let propbaser = r.u64()?;
            let pendbaser = r.u64()?;
            if propbaser & !PROPBASER_WRITABLE != 0 || pendbaser & !PENDBASER_WRITABLE != 0 {
                log::warn!("vgic: restore: bad GICR_PROPBASER/PENDBASER");
                return Err(RestoreError::Malformed);
            }
            v.lpi = RdLpi {
                enabled,
                propbaser,
                pendbaser,
            };
        }
        let count = r.u32()?;
        if count > intid::LPI_COUNT {
            return Err(RestoreError::Malformed);
        }
        let routes: Vec<Irouter> = self
            .cfg
            .mpidrs
            .iter()
            .map(|&m| Irouter::for_mpidr(m))
            .collect();
        let mut lpis = Lpis::new();
        let mut last = None;
        for _ in 0..count {
            let id = r.u32()?;
            let irq = r.irq(id, mask, version, vcpus.len())?;
            let bad = !crate::lpi::is_lpi(id)
                || last.is_some_and(|l| id <= l)
                || !irq.edge
                || !irq.group1
                || irq.line
                || irq.hw.is_some()
                || !routes.contains(&irq.route);
            if bad {
                log::warn!("vgic: restore: bad record for LPI {id}");
                return Err(RestoreError::Malformed);
            }
            last = Some(id);
            if irq.pending() || irq.active {
                lpis.live.insert(id);
            }
            *lpis.get_mut(id).ok_or(RestoreError::Malformed)? = irq;
        }
        Ok(Some(lpis))
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
        // The LPI section (none) is version 3's.
        assert_eq!(at, blob.len() - 1);
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
        let spi40_owner = blob.len() - 1 - (64 - 9) * 15 - 1;
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
        bad[4] = 4;
        assert_eq!(h.restore(&bad), Err(RestoreError::UnsupportedVersion(4)));
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

    const LPI0: u32 = intid::LPI_FIRST;
    const PROP: u64 = 0x4001_0000;

    fn lpi_vgic() -> Vgic {
        let mut g = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
        g.enable_lpi_support();
        g
    }

    /// A vGIC with LPIs: both redistributors' tables set and LPIs on, LPI0 and
    /// LPI0 + 5 configured (enabled, priority 0x80), LPI0 + 5 pending on vCPU 1 and
    /// LPI0 + 7 pending (not enabled) on vCPU 0.
    fn busy_lpis() -> Vgic {
        let mut g = busy_vgic();
        g.enable_lpi_support();
        let mut mem = vdev::VecMemory::new(0x4000_0000, 1 << 20);
        for id in [LPI0, LPI0 + 5] {
            vdev::GuestMemory::write(&mut mem, PROP + u64::from(id - LPI0), &[0x81]).unwrap();
        }
        for v in 0..2 {
            let rd = v * gicr::STRIDE;
            g.gicr_write(rd + gicr::PROPBASER, Double, PROP | 13)
                .unwrap();
            g.gicr_write(rd + gicr::PENDBASER, Double, 0x4008_0000 | 7 << 7)
                .unwrap();
            g.gicr_write(rd + gicr::CTLR, Word, 1).unwrap();
        }
        g.refresh_lpi(LPI0, 0, &mem).unwrap();
        g.refresh_lpi(LPI0 + 5, 1, &mem).unwrap();
        g.set_lpi_pending(LPI0 + 5, 1).unwrap();
        g.set_lpi_pending(LPI0 + 7, 0).unwrap();
        g
    }

    vdev::save_restore_tests!(
        saved_lpis,
        make: lpi_vgic,
        drive: |g: &mut Vgic| *g = busy_lpis(),
        probe: probe_vgic,
    );

    #[test]
    fn lpis_survive_a_round_trip() {
        let mut g = busy_lpis();
        let blob = g.save();
        let mut h = lpi_vgic();
        h.restore(&blob).unwrap();
        assert!(h.lpis_enabled(1));
        let mut lrs = [0u64; 4];
        h.flush(1, &mut lrs).unwrap();
        let got: Vec<(u32, u8)> = lrs
            .iter()
            .map(|l| IchLr(*l))
            .filter(|l| l.state() != LrState::Invalid)
            .map(|l| (l.vintid(), l.priority()))
            .collect();
        assert!(got.contains(&(LPI0 + 5, 0x80)), "{got:?}");
        assert_eq!(probe_vgic(&mut g), probe_vgic(&mut lpi_vgic_from(&blob)));
    }

    fn lpi_vgic_from(blob: &[u8]) -> Vgic {
        let mut h = lpi_vgic();
        h.restore(blob).unwrap();
        h
    }

    #[test]
    fn refuses_lpi_records_that_cannot_be() {
        let blob = busy_lpis().save();
        // The LPI section: flag, 2 x (u8, u64, u64), count, then (id, record).
        let section = blob.len() - 3 * (4 + 15) - 4 - 2 * 17 - 1;
        assert_eq!(blob[section], 1);
        let count = section + 1 + 2 * 17;
        assert_eq!(blob[count], 3);
        let first = count + 4;
        assert_eq!(blob[first..first + 4], LPI0.to_le_bytes());
        let cases: [(usize, &[u8], &str); 8] = [
            (section, &[2], "LPI flag not 0/1"),
            (section + 1, &[2], "EnableLPIs not 0/1"),
            (section + 2, &[0x20], "PROPBASER bit 5"),
            (section + 10, &[0x01], "PENDBASER bit 0"),
            (count, &[0xFF, 0xFF, 0, 0], "more records than LPIs"),
            (first, &40u32.to_le_bytes(), "not an LPI"),
            (first + 19, &LPI0.to_le_bytes(), "INTIDs not ascending"),
            (first + 4 + 1 + 1 + 4, &[3], "routed to no vCPU"),
        ];
        for (at, v, why) in cases {
            let mut bad = blob.clone();
            bad[at..at + v.len()].copy_from_slice(v);
            let mut h = lpi_vgic();
            let before = h.save();
            assert_eq!(h.restore(&bad), Err(RestoreError::Malformed), "{why}");
            assert_eq!(h.save(), before, "{why}");
        }
        // A record that is not edge-triggered Group 1.
        let mut bad = blob.clone();
        bad[first + 4] &= !(flag::EDGE);
        assert_eq!(lpi_vgic().restore(&bad), Err(RestoreError::Malformed));
    }
}
