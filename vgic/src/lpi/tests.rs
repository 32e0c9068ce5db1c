use super::*;
use crate::regs::{gicr, lpi_tables};
use crate::VgicConfig;
use vdev::AccessSize::{Double, Word};
use vdev::VecMemory;

fn lpi_vgic() -> Vgic {
    let mut g = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
    g.enable_lpi_support();
    g
}

#[test]
fn propbaser_and_pendbaser_keep_their_fields_until_lpis_are_enabled() {
    let mut g = lpi_vgic();
    let rd1 = gicr::STRIDE;
    g.gicr_write(rd1 + gicr::PROPBASER, Double, u64::MAX)
        .unwrap();
    let prop = g.gicr_read(rd1 + gicr::PROPBASER, Double).unwrap();
    assert_eq!(
        prop,
        lpi_tables::PROP_ID_BITS_MASK | lpi_tables::PROP_PA_MASK | lpi_tables::ATTR_MASK
    );
    g.gicr_write(rd1 + gicr::PENDBASER, Double, u64::MAX)
        .unwrap();
    let pend = g.gicr_read(rd1 + gicr::PENDBASER, Double).unwrap();
    assert_eq!(pend & lpi_tables::PEND_PTZ, 0, "PTZ reads 0");
    assert_eq!(pend, lpi_tables::PEND_PA_MASK | lpi_tables::ATTR_MASK);
    // 32-bit halves, as a 32-bit guest writes them.
    g.gicr_write(gicr::PROPBASER, Word, 0x4001_000D).unwrap();
    g.gicr_write(gicr::PROPBASER + 4, Word, 0).unwrap();
    assert_eq!(g.gicr_read(gicr::PROPBASER, Double).unwrap(), 0x4001_000D);
    assert_eq!(
        g.gicr_read(rd1 + gicr::PROPBASER, Double).unwrap(),
        prop,
        "per RD"
    );
    // EnableLPIs freezes them; CES lets it be cleared again.
    g.gicr_write(gicr::CTLR, Word, 1).unwrap();
    assert!(g.lpis_enabled(0) && !g.lpis_enabled(1));
    g.gicr_write(gicr::PROPBASER, Double, 0).unwrap();
    assert_eq!(g.gicr_read(gicr::PROPBASER, Double).unwrap(), 0x4001_000D);
    g.gicr_write(gicr::CTLR, Word, 0).unwrap();
    assert!(!g.lpis_enabled(0));
    // Reset keeps LPI support but not the registers.
    g.reset();
    assert!(g.has_lpis());
    assert_eq!(g.gicr_read(gicr::PROPBASER, Double).unwrap(), 0);
}

#[test]
fn lpi_requests_are_validated() {
    let mut plain = Vgic::new(VgicConfig::simple(1, 64)).unwrap();
    assert_eq!(plain.set_lpi_pending(8192, 0), Err(LpiError::NoLpis));
    let mut g = lpi_vgic();
    assert_eq!(g.set_lpi_pending(8191, 0), Err(LpiError::NotLpi(8191)));
    assert_eq!(g.set_lpi_pending(16384, 0), Err(LpiError::NotLpi(16384)));
    assert_eq!(g.set_lpi_pending(8192, 2), Err(LpiError::NoSuchVcpu(2)));
    assert_eq!(g.set_lpi_pending(8192, 0), Err(LpiError::Disabled(0)));
    let mem = VecMemory::new(0x4000_0000, 0x1_0000);
    assert_eq!(g.refresh_lpi(8192, 5, &mem), Err(LpiError::NoSuchVcpu(5)));
    assert_eq!(g.move_all_lpis(0, 7), Err(LpiError::NoSuchVcpu(7)));
}

/// Clearing EnableLPIs drops the LPIs pending there; LPIs above PROPBASER.IDbits
/// read as disabled.
#[test]
fn disabling_lpis_drops_pending_ones_and_idbits_bound_the_table() {
    let mut g = lpi_vgic();
    let mut mem = VecMemory::new(0x4000_0000, 0x1_0000);
    mem.write(0x4000_0000, &[0xFF; 0x2000]).unwrap();
    // IDbits 12: 13 INTID bits, no LPI in the table.
    g.gicr_write(gicr::PROPBASER, Double, 0x4000_0000 | 12)
        .unwrap();
    g.refresh_lpi(8192, 0, &mem).unwrap();
    assert!(!g.irq(0, 8192).unwrap().enabled);
    g.gicr_write(gicr::PROPBASER, Double, 0x4000_0000 | 13)
        .unwrap();
    g.gicr_write(gicr::CTLR, Word, 1).unwrap();
    g.refresh_lpi(8192, 0, &mem).unwrap();
    assert!(g.irq(0, 8192).unwrap().enabled);
    g.set_lpi_pending(8192, 0).unwrap();
    assert!(g.irq(0, 8192).unwrap().pending());
    g.gicr_write(gicr::CTLR, Word, 0).unwrap();
    assert!(!g.irq(0, 8192).unwrap().pending());
}
