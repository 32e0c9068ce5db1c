//! `vgic_mmio`: the virtual GICv3 of a VM of 1..=4 vCPUs, driven by a sequence of
//! guest distributor/redistributor accesses of any offset, width and value, interrupt
//! inputs (SPI and PPI lines, SGIs from ICC_SGI1R_EL1 writes, hardware mappings), and
//! the entry/exit cycle: `flush` into a fake set of list registers, the guest acting
//! on them as the CPU interface would (acknowledge, deactivate: only the State field
//! changes), `sync` back with an EOIcount.
//!
//! Invariants after every flush: no more interrupts loaded than list registers exist,
//! the valid list registers are exactly the ones the outcome counts, no vINTID is held
//! twice (in one vCPU's list registers, and an SPI in no two vCPUs' at once), every
//! vINTID names an implemented interrupt; reads never return bits outside the access.

use arbitrary::{Arbitrary, Unstructured};
use vgic::{IchLr, ListRegisters, LrState, Vgic, VgicConfig};

/// Size of the GICD frame.
const GICD_FRAME: u64 = 0x1_0000;
/// Interrupts below this are private (SGIs and PPIs).
const SPI_FIRST: u32 = 32;
/// ICH_LR<n>_EL2.State \[63:62\].
const LR_STATE_SHIFT: u32 = 62;
const LR_STATE_MASK: u64 = 3 << LR_STATE_SHIFT;

/// A vCPU's list registers as plain memory; reaching past `count` is a vGIC bug.
struct FakeLrs(Vec<u64>);

impl ListRegisters for FakeLrs {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn read(&self, i: usize) -> u64 {
        assert!(i < self.0.len(), "vGIC read LR{i} of {}", self.0.len());
        self.0[i]
    }
    fn write(&mut self, i: usize, v: u64) {
        assert!(i < self.0.len(), "vGIC wrote LR{i} of {}", self.0.len());
        self.0[i] = v;
    }
}

#[derive(Arbitrary, Debug)]
struct Shape {
    vcpus: u8,
    spis: u8,
    priority_bits: u8,
    lrs: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    GicdRead {
        offset: u16,
        size: u8,
    },
    GicdWrite {
        offset: u16,
        size: u8,
        value: u64,
    },
    GicrRead {
        offset: u32,
        size: u8,
    },
    GicrWrite {
        offset: u32,
        size: u8,
        value: u64,
    },
    Spi {
        intid: u16,
        level: bool,
    },
    Ppi {
        vcpu: u8,
        intid: u8,
        level: bool,
    },
    Sgi {
        from: u8,
        icc_sgi1r: u64,
    },
    HwMap {
        vcpu: u8,
        vintid: u16,
        pintid: u16,
        clear: bool,
    },
    Flush {
        vcpu: u8,
    },
    Sync {
        vcpu: u8,
        eoi_count: u8,
    },
    /// The guest moves list register `lr` of `vcpu` to `state` (0..=3).
    Guest {
        vcpu: u8,
        lr: u8,
        state: u8,
    },
    Kicks,
    Reset,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(shape) = Shape::arbitrary(&mut u) else {
        return;
    };
    let n = 1 + usize::from(shape.vcpus % 4);
    let spis = [32, 64, 96, 988][usize::from(shape.spis % 4)];
    let mut cfg = VgicConfig::simple(n, spis);
    cfg.priority_bits = 4 + shape.priority_bits % 5;
    let Ok(mut v) = Vgic::new(cfg) else {
        panic!("a valid configuration was refused");
    };
    let nlrs = 1 + usize::from(shape.lrs % 16);
    let mut lrs: Vec<FakeLrs> = (0..n).map(|_| FakeLrs(vec![0; nlrs])).collect();
    let implemented = SPI_FIRST + spis;
    let gicr_size = v.gicr_region_size();

    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::GicdRead { offset, size } => {
                let size = crate::access_size(size);
                let offset = u64::from(offset) % GICD_FRAME;
                if let Ok(x) = v.gicd_read(offset, size) {
                    assert_eq!(x & !size.mask(), 0, "GICD {offset:#x} read too wide");
                }
            }
            Op::GicdWrite {
                offset,
                size,
                value,
            } => {
                let offset = u64::from(offset) % GICD_FRAME;
                let _ = v.gicd_write(offset, crate::access_size(size), value);
            }
            Op::GicrRead { offset, size } => {
                let size = crate::access_size(size);
                let offset = u64::from(offset) % gicr_size;
                if let Ok(x) = v.gicr_read(offset, size) {
                    assert_eq!(x & !size.mask(), 0, "GICR {offset:#x} read too wide");
                }
            }
            Op::GicrWrite {
                offset,
                size,
                value,
            } => {
                let offset = u64::from(offset) % gicr_size;
                let _ = v.gicr_write(offset, crate::access_size(size), value);
            }
            Op::Spi { intid, level } => {
                let _ = v.set_level(u32::from(intid), level);
            }
            Op::Ppi { vcpu, intid, level } => {
                let _ = v.set_ppi_level(usize::from(vcpu), u32::from(intid), level);
            }
            Op::Sgi { from, icc_sgi1r } => {
                let _ = v.send_sgi(usize::from(from), icc_sgi1r);
            }
            Op::HwMap {
                vcpu,
                vintid,
                pintid,
                clear,
            } => {
                let (vcpu, vintid) = (usize::from(vcpu), u32::from(vintid));
                let _ = if clear {
                    v.clear_hw_mapping(vcpu, vintid)
                } else {
                    v.set_hw_mapping(vcpu, vintid, u32::from(pintid))
                };
            }
            Op::Flush { vcpu } => {
                let i = usize::from(vcpu) % n;
                let Ok(out) = v.flush(i, &mut lrs[i]) else {
                    panic!("flush of vCPU {i} refused");
                };
                check_flush(&lrs, i, &out, implemented);
            }
            Op::Sync { vcpu, eoi_count } => {
                let i = usize::from(vcpu) % n;
                // EOIcount is a 5-bit field.
                let eoi = u32::from(eoi_count % 32);
                assert!(
                    v.sync(i, &mut lrs[i], eoi).is_ok(),
                    "sync of vCPU {i} refused"
                );
                assert!(
                    lrs[i]
                        .0
                        .iter()
                        .all(|&x| IchLr(x).state() == LrState::Invalid),
                    "sync left a list register valid"
                );
            }
            Op::Guest { vcpu, lr, state } => {
                let f = &mut lrs[usize::from(vcpu) % n];
                let k = usize::from(lr) % nlrs;
                let old = IchLr(f.0[k]).state();
                let new = guest_transition(old, state);
                f.0[k] = (f.0[k] & !LR_STATE_MASK) | (state_bits(new) << LR_STATE_SHIFT);
            }
            Op::Kicks => {
                let k = v.take_kicks();
                assert_eq!(k >> n, 0, "kick for a vCPU that does not exist: {k:#x}");
            }
            Op::Reset => {
                v.reset();
                for f in &mut lrs {
                    f.0.fill(0);
                }
            }
        }
    }
}

/// What the guest's CPU interface can do to a list register: acknowledge
/// (pending → active), deactivate (active → invalid, pending+active → pending), or
/// both at once between two exits.
fn guest_transition(old: LrState, pick: u8) -> LrState {
    match (old, pick % 3) {
        (LrState::Pending, 0) => LrState::Active,
        (LrState::Pending, 1) => LrState::Invalid,
        (LrState::Active, _) => LrState::Invalid,
        (LrState::PendingActive, 0) => LrState::Pending,
        (LrState::PendingActive, 1) => LrState::Active,
        (s, _) => s,
    }
}

fn state_bits(s: LrState) -> u64 {
    u64::from(s.pending()) | u64::from(s.active()) << 1
}

fn check_flush(lrs: &[FakeLrs], vcpu: usize, out: &vgic::FlushOutcome, implemented: u32) {
    let mine = &lrs[vcpu].0;
    assert!(
        out.loaded <= mine.len(),
        "{} loaded into {} LRs",
        out.loaded,
        mine.len()
    );
    assert!(out.loaded_pending <= out.loaded);
    let valid: Vec<IchLr> = mine
        .iter()
        .map(|&x| IchLr(x))
        .filter(|l| l.state() != LrState::Invalid)
        .collect();
    assert_eq!(
        valid.len(),
        out.loaded,
        "outcome does not count the valid LRs"
    );
    let pending = valid.iter().filter(|l| l.state().pending()).count();
    assert_eq!(pending, out.loaded_pending, "pending LRs miscounted");
    for (i, l) in valid.iter().enumerate() {
        assert!(
            l.vintid() < implemented,
            "LR holds unimplemented {}",
            l.vintid()
        );
        assert!(
            valid[..i].iter().all(|o| o.vintid() != l.vintid()),
            "vINTID {} in two LRs",
            l.vintid()
        );
        if l.vintid() >= SPI_FIRST {
            for (j, other) in lrs.iter().enumerate() {
                if j != vcpu {
                    assert!(
                        other.0.iter().all(|&x| {
                            let o = IchLr(x);
                            o.state() == LrState::Invalid || o.vintid() != l.vintid()
                        }),
                        "SPI {} loaded on vCPUs {vcpu} and {j}",
                        l.vintid()
                    );
                }
            }
        }
    }
}
