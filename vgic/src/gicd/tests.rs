use super::*;
use crate::config::VgicConfig;
use AccessSize::{Byte, Double, Half, Word};

fn vgic(n: usize, spis: u32) -> Vgic {
    Vgic::new(VgicConfig::simple(n, spis)).unwrap()
}

fn rd(g: &Vgic, off: u64) -> u64 {
    g.gicd_read(off, Word).unwrap()
}

fn wr(g: &mut Vgic, off: u64, v: u64) {
    g.gicd_write(off, Word, v).unwrap()
}

#[test]
fn ctlr_keeps_enables_and_reports_are_ds() {
    let mut g = vgic(1, 32);
    assert_eq!(rd(&g, gicd::CTLR), (ctlr::ARE | ctlr::DS) as u64);
    wr(&mut g, gicd::CTLR, 0xFFFF_FFFF);
    let v = rd(&g, gicd::CTLR) as u32;
    assert_eq!(
        v,
        ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1 | ctlr::ARE | ctlr::DS
    );
    assert_eq!(v & ctlr::RWP, 0);
    wr(&mut g, gicd::CTLR, 0);
    assert_eq!(
        rd(&g, gicd::CTLR) as u32,
        ctlr::ARE | ctlr::DS,
        "ARE stays RAO"
    );
}

#[test]
fn typer_describes_the_configuration() {
    let g = vgic(4, 96);
    let t = rd(&g, gicd::TYPER) as u32;
    assert_eq!(t & 0x1F, 3, "ITLinesNumber: 128 INTIDs");
    assert_eq!(t >> 5 & 7, 3, "CPUNumber");
    assert_eq!(t >> 19 & 0x1F, 9, "IDbits: 10 bits");
    assert_eq!(t & (1 << 17 | 1 << 16), 0, "no LPIs, no MBIs");
    assert_eq!(t & typer::A3V, 0);
    let g = vgic(8, 988);
    let t = rd(&g, gicd::TYPER) as u32;
    assert_eq!((t & 0x1F, t >> 5 & 7), (31, 7));
    let mut c = VgicConfig::simple(2, 32);
    c.mpidrs[1] |= 1 << 32;
    let g = Vgic::new(c).unwrap();
    assert_ne!(rd(&g, gicd::TYPER) as u32 & typer::A3V, 0);
    assert_eq!(rd(&g, gicd::TYPER) as u32 & typer::RSS, 0);
    let mut c = VgicConfig::simple(2, 32);
    c.mpidrs[1] = 16;
    let g = Vgic::new(c).unwrap();
    assert_ne!(
        rd(&g, gicd::TYPER) as u32 & typer::RSS,
        0,
        "Aff0 16 needs RS"
    );
}

#[test]
fn id_registers() {
    let mut g = vgic(1, 32);
    assert_eq!(rd(&g, gicd::IIDR) as u32 & 0xFFF, iidr::IMPLEMENTER_ARM);
    assert_eq!(rd(&g, gicd::TYPER2), 0);
    assert_eq!(rd(&g, id::PIDR2) >> 4 & 0xF, 3);
    assert_eq!(rd(&g, 0xFFFC), 0xB1);
    wr(&mut g, gicd::TYPER, 0);
    assert_eq!(rd(&g, gicd::TYPER) & 0x1F, 1, "TYPER is read-only");
}

#[test]
fn set_clear_pairs() {
    let pairs = [
        (gicd::ISENABLER, gicd::ICENABLER),
        (gicd::ISPENDR, gicd::ICPENDR),
        (gicd::ISACTIVER, gicd::ICACTIVER),
    ];
    for (set, clear) in pairs {
        let mut g = vgic(1, 64);
        wr(&mut g, set + 4, 0x8000_0001);
        wr(&mut g, set + 4, 0x0000_0100); // writing 0 bits changes nothing
        assert_eq!(rd(&g, set + 4), 0x8000_0101, "{set:#x}");
        assert_eq!(
            rd(&g, clear + 4),
            0x8000_0101,
            "{clear:#x} reads the same state"
        );
        wr(&mut g, clear + 4, 0x8000_0000);
        assert_eq!(rd(&g, set + 4), 0x101);
        assert_eq!(rd(&g, set + 8), 0, "other registers untouched");
    }
}

#[test]
fn private_fields_and_unimplemented_spis_are_raz_wi() {
    let mut g = vgic(1, 32);
    for base in [
        gicd::IGROUPR,
        gicd::ISENABLER,
        gicd::ISPENDR,
        gicd::ISACTIVER,
    ] {
        wr(&mut g, base, u32::MAX as u64);
        assert_eq!(rd(&g, base), 0, "{base:#x} word 0 is SGI/PPI");
        wr(&mut g, base + 8, u32::MAX as u64);
        assert_eq!(
            rd(&g, base + 8),
            0,
            "{base:#x}: INTIDs 64.. not implemented"
        );
    }
    wr(&mut g, gicd::IPRIORITYR, u32::MAX as u64);
    assert_eq!(rd(&g, gicd::IPRIORITYR), 0);
    wr(&mut g, gicd::ICFGR + 4, u32::MAX as u64);
    assert_eq!(rd(&g, gicd::ICFGR + 4), 0);
    assert_eq!(
        g.vcpus[0]
            .private
            .iter()
            .filter(|i| i.enabled || i.priority != 0)
            .count(),
        0
    );
}

#[test]
fn igroupr_writes_every_bit() {
    let mut g = vgic(1, 64);
    wr(&mut g, gicd::IGROUPR + 4, 0xFFFF_FFFF);
    wr(&mut g, gicd::IGROUPR + 4, 0x0F0F_0F0F);
    assert_eq!(rd(&g, gicd::IGROUPR + 4), 0x0F0F_0F0F);
}

#[test]
fn priority_is_byte_accessible_and_masked() {
    let mut g = vgic(1, 32);
    let base = gicd::IPRIORITYR + 32;
    wr(&mut g, base, 0x1122_33FF);
    assert_eq!(rd(&g, base), 0x1020_30F8, "5 implemented bits");
    g.gicd_write(base + 2, Byte, 0xA7).unwrap();
    assert_eq!(g.gicd_read(base + 2, Byte), Ok(0xA0));
    assert_eq!(g.gicd_read(base + 3, Byte), Ok(0x10));
    assert_eq!(rd(&g, base), 0x10A0_30F8);
    assert_eq!(g.spis[2].priority, 0xA0);
    assert!(matches!(
        g.gicd_read(base, Half),
        Err(MmioError::UnsupportedSize { .. })
    ));
    assert!(matches!(
        g.gicd_write(base, Double, 0),
        Err(MmioError::UnsupportedSize { .. })
    ));
}

#[test]
fn icfgr_sets_edge_per_spi() {
    let mut g = vgic(1, 32);
    wr(&mut g, gicd::ICFGR + 8, 0xFFFF_FFFF);
    assert_eq!(
        rd(&g, gicd::ICFGR + 8),
        0xAAAA_AAAA,
        "only Int_config bits stick"
    );
    assert!(g.spis[0].edge && g.spis[15].edge && !g.spis[16].edge);
    wr(&mut g, gicd::ICFGR + 8, 0x8);
    assert!(!g.spis[0].edge && g.spis[1].edge);
}

#[test]
fn irouter_stores_routes_and_bad_targets() {
    let mut g = vgic(2, 32);
    let r33 = gicd::IROUTER + 8 * 33;
    assert_eq!(
        g.gicd_read(r33, Double),
        Ok(0),
        "reset routes to vCPU 0 (affinity 0)"
    );
    g.gicd_write(r33, Double, 1).unwrap();
    assert_eq!(g.gicd_read(r33, Double), Ok(1));
    assert_eq!(g.route_of(g.spis[1].route), Route::One(1));
    // Nonexistent target: stored, not delivered.
    g.gicd_write(r33, Double, 0x0000_0005_0000_0001).unwrap();
    assert_eq!(g.gicd_read(r33 + 4, Word), Ok(5));
    assert_eq!(g.gicd_read(r33, Word), Ok(1));
    assert_eq!(g.route_of(g.spis[1].route), Route::Nowhere);
    // RES0 bits dropped, IRM kept.
    g.gicd_write(r33, Double, u64::MAX).unwrap();
    assert_eq!(g.gicd_read(r33, Double), Ok(Irouter::WRITABLE));
    assert_eq!(g.route_of(g.spis[1].route), Route::Any);
    // 32-bit halves.
    g.gicd_write(r33 + 4, Word, 0).unwrap();
    g.gicd_write(r33, Word, 0x1).unwrap();
    assert_eq!(g.gicd_read(r33, Double), Ok(1));
    // Private INTIDs and INTIDs past the SPIs: RAZ/WI.
    g.gicd_write(gicd::IROUTER + 8 * 5, Double, 1).unwrap();
    assert_eq!(g.gicd_read(gicd::IROUTER + 8 * 5, Double), Ok(0));
    g.gicd_write(gicd::IROUTER + 8 * 64, Double, 1).unwrap();
    assert_eq!(g.gicd_read(gicd::IROUTER + 8 * 64, Double), Ok(0));
    assert!(g.gicd_read(r33, Byte).is_err());
    assert!(g.gicd_read(r33 + 4, Double).is_err());
}

#[test]
fn reserved_is_raz_wi_and_bad_sizes_fault() {
    let mut g = vgic(1, 32);
    for off in [0x10, 0x40, 0x5000, 0x8000, 0xC000, 0xFFD0] {
        g.gicd_write(off, Word, 0xFFFF_FFFF).unwrap();
        assert_eq!(rd(&g, off), 0, "{off:#x}");
    }
    assert_eq!(
        g.gicd_read(0x5000, Double),
        Ok(0),
        "reserved accepts any width"
    );
    assert_eq!(
        g.gicd_read(gicd::CTLR, Byte),
        Err(MmioError::UnsupportedSize {
            offset: 0,
            size: Byte
        })
    );
    assert_eq!(
        g.gicd_read(gicd::CTLR, Double),
        Err(MmioError::UnsupportedSize {
            offset: 0,
            size: Double
        })
    );
    assert_eq!(
        g.gicd_read(gicd::TYPER + 2, Half),
        Err(MmioError::UnsupportedSize {
            offset: 6,
            size: Half
        })
    );
    assert_eq!(
        g.gicd_read(gicd::TYPER + 1, Half),
        Err(MmioError::Unaligned { offset: 5 })
    );
    assert_eq!(
        g.gicd_write(gicd::ISENABLER + 1, Byte, 1),
        Err(MmioError::UnsupportedSize {
            offset: 0x101,
            size: Byte
        })
    );
}

#[test]
fn legacy_registers_are_raz_wi() {
    let mut g = vgic(1, 32);
    for off in [
        gicd::ITARGETSR + 32,
        gicd::SGIR,
        gicd::SPENDSGIR,
        gicd::IGRPMODR + 4,
        gicd::NSACR + 8,
    ] {
        wr(&mut g, off, 0xFFFF_FFFF);
        assert_eq!(rd(&g, off), 0, "{off:#x}");
    }
    assert_eq!(g.gicd_read(gicd::ITARGETSR + 33, Byte), Ok(0));
}

#[test]
fn enabling_group_kicks_pending_vcpus() {
    let mut g = vgic(2, 32);
    g.set_level(32, true).unwrap();
    g.take_kicks();
    wr(&mut g, gicd::ISENABLER + 4, 1);
    assert_eq!(
        g.take_kicks(),
        0,
        "its group is still off: nothing to deliver"
    );
    wr(&mut g, gicd::CTLR, ctlr::ENABLE_GRP1 as u64);
    assert_eq!(g.take_kicks(), 0b11);
    wr(&mut g, gicd::CTLR, ctlr::ENABLE_GRP1 as u64);
    assert_eq!(g.take_kicks(), 0, "no change, no kick");
}
