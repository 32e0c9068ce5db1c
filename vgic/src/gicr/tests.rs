use super::*;
use crate::config::VgicConfig;
use AccessSize::{Byte, Double, Half, Word};

const SGI: u64 = gicr::SGI_BASE;

fn vgic(n: usize) -> Vgic {
    Vgic::new(VgicConfig::simple(n, 32)).unwrap()
}

fn rd(g: &Vgic, off: u64) -> u64 {
    g.gicr_read(off, Word).unwrap()
}

fn wr(g: &mut Vgic, off: u64, v: u64) {
    g.gicr_write(off, Word, v).unwrap()
}

#[test]
fn typer_numbers_and_last_bit() {
    let mut c = VgicConfig::simple(3, 32);
    c.mpidrs = [0x0, 0x1, 0x0001_0203]
        .iter()
        .map(|m| m | 1 << 31)
        .collect();
    c.mpidrs[2] |= 0x4 << 32;
    let g = Vgic::new(c).unwrap();
    for v in 0..3u64 {
        let t = g.gicr_read(v * gicr::STRIDE + gicr::TYPER, Double).unwrap();
        assert_eq!(t >> 8 & 0xFFFF, v, "Processor_Number");
        assert_eq!(
            t & gicr_typer::LAST != 0,
            v == 2,
            "Last only on the final one"
        );
        assert_eq!(t & 0b1011, 0, "no LPI support bits");
    }
    let base = 2 * gicr::STRIDE + gicr::TYPER;
    assert_eq!(
        g.gicr_read(base + 4, Word),
        Ok(0x0401_0203),
        "Aff3.Aff2.Aff1.Aff0"
    );
    assert_eq!(g.gicr_read(base, Word), Ok(2 << 8 | gicr_typer::LAST));
    assert!(g.gicr_read(base + 4, Double).is_err());
}

#[test]
fn waker_handshake() {
    let mut g = vgic(2);
    let waker = gicr::STRIDE + gicr::WAKER;
    assert_eq!(
        rd(&g, waker),
        (waker::PROCESSOR_SLEEP | waker::CHILDREN_ASLEEP) as u64
    );
    wr(&mut g, waker, 0);
    assert_eq!(
        rd(&g, waker),
        0,
        "ChildrenAsleep clears with ProcessorSleep"
    );
    assert_eq!(rd(&g, gicr::WAKER), 0b110, "other redistributors untouched");
    wr(&mut g, waker, waker::PROCESSOR_SLEEP as u64);
    assert_eq!(rd(&g, waker), 0b110);
    wr(&mut g, waker, waker::CHILDREN_ASLEEP as u64);
    assert_eq!(rd(&g, waker), 0, "ChildrenAsleep is read-only");
}

#[test]
fn id_and_ctlr() {
    let mut g = vgic(1);
    assert_eq!(rd(&g, id::PIDR2) >> 4 & 0xF, 3);
    assert_eq!(rd(&g, gicr::IIDR) as u32, iidr::VALUE);
    wr(&mut g, gicr::CTLR, 1);
    assert_eq!(rd(&g, gicr::CTLR), 0, "EnableLPIs is RAZ/WI");
}

#[test]
fn sgi_frame_banks_are_per_vcpu() {
    let mut g = vgic(2);
    let r1 = gicr::STRIDE + SGI;
    wr(&mut g, r1 + gicr::ISENABLER0, 0x0800_0002);
    assert_eq!(rd(&g, r1 + gicr::ISENABLER0), 0x0800_0002);
    assert_eq!(rd(&g, r1 + gicr::ICENABLER0), 0x0800_0002);
    assert_eq!(rd(&g, SGI + gicr::ISENABLER0), 0, "vCPU 0 untouched");
    wr(&mut g, r1 + gicr::ICENABLER0, 2);
    assert_eq!(rd(&g, r1 + gicr::ISENABLER0), 0x0800_0000);
    wr(&mut g, r1 + gicr::ISPENDR0, 0x10);
    assert_eq!(rd(&g, r1 + gicr::ICPENDR0), 0x10);
    wr(&mut g, r1 + gicr::ICPENDR0, 0x10);
    assert_eq!(rd(&g, r1 + gicr::ISPENDR0), 0);
    wr(&mut g, r1 + gicr::ISACTIVER0, 1 << 27);
    assert_eq!(rd(&g, r1 + gicr::ICACTIVER0), 1 << 27);
    wr(&mut g, r1 + gicr::ICACTIVER0, 1 << 27);
    assert_eq!(rd(&g, r1 + gicr::ISACTIVER0), 0);
    wr(&mut g, r1 + gicr::IGROUPR0, u32::MAX as u64);
    assert_eq!(rd(&g, r1 + gicr::IGROUPR0), u32::MAX as u64);
    assert_eq!(rd(&g, SGI + gicr::IGROUPR0), 0);
}

#[test]
fn sgi_frame_priorities_bytewise() {
    let mut g = vgic(1);
    g.gicr_write(SGI + gicr::IPRIORITYR0 + 27, Byte, 0x80)
        .unwrap();
    assert_eq!(rd(&g, SGI + gicr::IPRIORITYR0 + 24), 0x8000_0000);
    wr(&mut g, SGI + gicr::IPRIORITYR0, 0xFFEE_DDCC);
    assert_eq!(g.gicr_read(SGI + gicr::IPRIORITYR0 + 1, Byte), Ok(0xD8));
    assert!(g.gicr_read(SGI + gicr::IPRIORITYR0, Half).is_err());
    // Past IPRIORITYR7: reserved.
    wr(&mut g, SGI + gicr::IPRIORITYR_END, u32::MAX as u64);
    assert_eq!(rd(&g, SGI + gicr::IPRIORITYR_END), 0);
}

#[test]
fn icfgr0_is_read_only_edge_icfgr1_configurable() {
    let mut g = vgic(1);
    assert_eq!(rd(&g, SGI + gicr::ICFGR0), 0xAAAA_AAAA);
    wr(&mut g, SGI + gicr::ICFGR0, 0);
    assert_eq!(rd(&g, SGI + gicr::ICFGR0), 0xAAAA_AAAA);
    assert_eq!(rd(&g, SGI + gicr::ICFGR1), 0, "PPIs reset level");
    wr(&mut g, SGI + gicr::ICFGR1, 0x2 << 22);
    assert_eq!(rd(&g, SGI + gicr::ICFGR1), 0x2 << 22);
    assert!(g.vcpus[0].private[27].edge);
}

#[test]
fn reserved_and_absent_frames_are_raz_wi() {
    let mut g = vgic(2);
    for off in [
        0x10,
        0x70,
        0x78,
        SGI + 0x84,
        SGI + 0x800,
        SGI + gicr::IGRPMODR0,
    ] {
        wr(&mut g, off, u32::MAX as u64);
        assert_eq!(rd(&g, off), 0, "{off:#x}");
    }
    // Third redistributor frame of a 2-vCPU VM.
    wr(&mut g, 2 * gicr::STRIDE + gicr::WAKER, 0);
    assert_eq!(rd(&g, 2 * gicr::STRIDE + gicr::WAKER), 0);
    assert_eq!(rd(&g, gicr::STRIDE + gicr::WAKER), 0b110);
    assert_eq!(
        g.gicr_read(gicr::WAKER, Byte),
        Err(MmioError::UnsupportedSize {
            offset: 0x14,
            size: Byte
        })
    );
    assert_eq!(
        g.gicr_read(gicr::TYPER + 2, Half),
        Err(MmioError::UnsupportedSize {
            offset: 0xA,
            size: Half
        })
    );
    assert_eq!(
        g.gicr_read(0x3, Half),
        Err(MmioError::Unaligned { offset: 3 })
    );
}
