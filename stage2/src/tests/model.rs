//! Randomised model test: sequences of map/unmap/protect on [`Stage2`] agree
//! with a plain map of 4 KiB pages on every result and on `translate`.
//! Deterministic (seeded xorshift), so a failure names its seed and step.

use alloc::collections::BTreeMap;

use super::{GIB1, KIB4, MIB2};
use crate::{Attrs, Error, Layout, MemType, Perms, SimAllocator, Stage2};

/// xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// The model: IPA page -> (PA page, attributes).
type Model = BTreeMap<u64, (u64, Attrs)>;

/// IPA window exercised by the small runs: 48 MiB straddling a 1 GiB boundary.
const SMALL: (u64, u64) = (GIB1 - 16 * MIB2, GIB1 + 8 * MIB2);
/// IPA window of the big runs: a whole aligned GiB and 16 MiB around it.
const BIG: (u64, u64) = (GIB1 - 4 * MIB2, 2 * GIB1 + 4 * MIB2);

/// How often each kind of outcome happened, to prove the run covered them.
#[derive(Default, Debug)]
struct Coverage {
    maps_ok: usize,
    maps_refused: usize,
    unmaps_flushed: usize,
    protects_ok: usize,
    protects_refused: usize,
    ranges_ok: usize,
    leaf_levels: [usize; 4],
}

fn random_attrs(r: &mut Rng) -> Attrs {
    Attrs {
        mem: if r.below(4) == 0 {
            MemType::Device
        } else {
            MemType::Normal
        },
        perms: Perms::from_bits_truncate(r.below(8) as u8),
    }
}

fn random_range(r: &mut Rng, (win_start, win_end): (u64, u64)) -> (u64, u64) {
    let pages = (win_end - win_start) / KIB4;
    let mut ipa = win_start + r.below(pages) * KIB4;
    if r.coin() {
        ipa &= !(MIB2 - 1);
    }
    if win_end - win_start > GIB1 && r.below(8) == 0 {
        return (GIB1, GIB1);
    }
    let size = match r.below(4) {
        0 => (1 + r.below(16)) * KIB4,
        1 => (1 + r.below(4)) * MIB2,
        2 => (1 + r.below(4)) * MIB2 + (1 + r.below(8)) * KIB4,
        _ => (1 + r.below(2048)) * KIB4,
    };
    let ipa = ipa.max(win_start);
    (ipa, size.min(win_end - ipa))
}

fn check(s: &Stage2, a: &mut SimAllocator, m: &Model, ipa: u64, ctx: &str, cov: &mut Coverage) {
    let got = s.translate(a, ipa);
    let page = ipa & !(KIB4 - 1);
    let want = m.get(&page).map(|&(pa, attrs)| (pa | (ipa - page), attrs));
    assert_eq!(got.map(|t| (t.pa, t.attrs)), want, "{ctx}: ipa {ipa:#x}");
    if let Some(t) = got {
        cov.leaf_levels[usize::from(t.level)] += 1;
        // A leaf maps exactly its aligned span, and the model agrees on all of it.
        let base = ipa & !(t.block_size - 1);
        let (first_pa, first_attrs) = m[&base];
        assert_eq!(
            first_pa,
            (t.pa - (ipa - base)),
            "{ctx}: block base {base:#x}"
        );
        assert_eq!(first_attrs, t.attrs, "{ctx}: block attrs {base:#x}");
        assert_eq!(first_pa % t.block_size, 0, "{ctx}: block alignment");
    }
}

fn run(seed: u64, parange: u8, steps: usize, win: (u64, u64)) -> Coverage {
    let (win_start, win_end) = win;
    let mut cov = Coverage::default();
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut a = SimAllocator::new();
    let layout = Layout::from_parange(parange, 48).unwrap();
    let mut s = Stage2::new(&mut a, layout, 1).unwrap();
    let mut m = Model::new();
    if win == BIG {
        // Start from one 1 GiB block for the random edits to split.
        let attrs = Attrs::normal(Perms::RW);
        s.map(&mut a, GIB1, 2 * GIB1, GIB1, attrs).unwrap();
        for p in (GIB1..2 * GIB1).step_by(KIB4 as usize) {
            m.insert(p, (p + GIB1, attrs));
        }
    }
    for step in 0..steps {
        let (ipa, size) = random_range(&mut r, win);
        let end = ipa + size;
        let ctx = alloc::format!("seed {seed} step {step}");
        let present = m.range(ipa..end).count() as u64;
        match r.below(3) {
            0 => {
                let mut pa = r.below(64) * MIB2;
                pa += if r.coin() {
                    ipa % MIB2
                } else {
                    r.below(512) * KIB4
                };
                if size == GIB1 && r.coin() {
                    pa = r.below(4) * GIB1;
                }
                let attrs = random_attrs(&mut r);
                let res = s.map(&mut a, ipa, pa, size, attrs);
                if present > 0 {
                    assert_eq!(res, Err(Error::AlreadyMapped), "{ctx}");
                    cov.maps_refused += 1;
                } else {
                    assert_eq!(res, Ok(()), "{ctx}");
                    cov.maps_ok += 1;
                    for p in (ipa..end).step_by(KIB4 as usize) {
                        m.insert(p, (pa + (p - ipa), attrs));
                    }
                }
            }
            1 => {
                let f = s.unmap(&mut a, ipa, size).unwrap();
                assert_eq!(f.needed(), present > 0, "{ctx}");
                cov.unmaps_flushed += usize::from(f.needed());
                if let Some(fr) = f.range() {
                    let first = *m.range(ipa..end).next().unwrap().0;
                    let last = *m.range(ipa..end).next_back().unwrap().0;
                    assert!(fr.start <= first && last + KIB4 <= fr.end, "{ctx}");
                }
                let gone: alloc::vec::Vec<u64> = m.range(ipa..end).map(|(k, _)| *k).collect();
                for p in gone {
                    m.remove(&p);
                }
            }
            _ => {
                let attrs = random_attrs(&mut r);
                let res = s.protect(&mut a, ipa, size, attrs);
                if present * KIB4 != size {
                    assert_eq!(res, Err(Error::NotMapped), "{ctx}");
                    cov.protects_refused += 1;
                } else {
                    let f = res.unwrap();
                    cov.protects_ok += 1;
                    let mut changed = false;
                    for (&p, v) in m.range_mut(ipa..end) {
                        if v.1 != attrs {
                            changed = true;
                            let fr = f.range().unwrap_or(0..0);
                            assert!(fr.contains(&p), "{ctx}: flush misses {p:#x}");
                        }
                        v.1 = attrs;
                    }
                    assert!(!changed || f.needed(), "{ctx}");
                }
            }
        }
        assert_eq!(a.bad_ops(), 0, "{ctx}");
        // No empty non-root table, no leaked or dangling table.
        let reachable = s.reachable_tables(&mut a);
        assert_eq!(reachable, Some(a.live_tables()), "{ctx}");
        // Edges of the operation and random samples.
        for probe in [ipa.wrapping_sub(KIB4), ipa, end - KIB4, end] {
            if (win_start..win_end).contains(&probe) {
                check(&s, &mut a, &m, probe, &ctx, &mut cov);
            }
        }
        for _ in 0..32 {
            let probe = win_start + r.below(win_end - win_start);
            check(&s, &mut a, &m, probe, &ctx, &mut cov);
        }
        // translate_range agrees with the model on a random buffer.
        let start = win_start + r.below(win_end - win_start);
        let len = 1 + r.below(6 * KIB4);
        let need = Perms::from_bits_truncate(r.below(8) as u8);
        let want = (start..start + len)
            .step_by(KIB4 as usize)
            .chain(core::iter::once(start + len - 1))
            .map(|b| {
                m.get(&(b & !(KIB4 - 1)))
                    .filter(|(_, at)| at.mem == MemType::Normal && at.perms.contains(need))
                    .map(|(pa, _)| (pa + (b & (KIB4 - 1))).wrapping_sub(b - start))
            })
            .try_fold(None, |acc: Option<u64>, x| match (acc, x) {
                (_, None) => Err(()),
                (None, Some(p)) => Ok(Some(p)),
                (Some(p), Some(q)) if p == q => Ok(Some(p)),
                _ => Err(()),
            })
            .ok()
            .flatten();
        assert_eq!(
            s.translate_range(&mut a, start, len, need),
            want,
            "{ctx}: range {start:#x}+{len:#x}"
        );
        cov.ranges_ok += usize::from(want.is_some());
        if step % 40 == 39 && win == SMALL {
            for p in (win_start..win_end).step_by(KIB4 as usize) {
                check(&s, &mut a, &m, p, &ctx, &mut cov);
            }
        }
    }
    // Leak check: only the root survives unmapping everything.
    let _ = s.unmap(&mut a, win_start, win_end - win_start).unwrap();
    assert_eq!(a.live_tables(), layout.concat, "seed {seed}");
    s.destroy(&mut a);
    assert_eq!(a.live_tables(), 0);
    assert_eq!(a.bad_ops(), 0);
    cov
}

/// Adds up coverage and checks every kind of outcome happened.
fn assert_covered(runs: impl Iterator<Item = Coverage>, block_level: usize) {
    let mut t = Coverage::default();
    for c in runs {
        t.maps_ok += c.maps_ok;
        t.maps_refused += c.maps_refused;
        t.unmaps_flushed += c.unmaps_flushed;
        t.protects_ok += c.protects_ok;
        t.protects_refused += c.protects_refused;
        t.ranges_ok += c.ranges_ok;
        for l in 0..4 {
            t.leaf_levels[l] += c.leaf_levels[l];
        }
    }
    assert!(t.maps_ok > 5 && t.maps_refused > 5, "{t:?}");
    assert!(t.unmaps_flushed > 5, "{t:?}");
    assert!(t.protects_ok > 5 && t.protects_refused > 5, "{t:?}");
    assert!(t.ranges_ok > 5, "{t:?}");
    assert!(
        t.leaf_levels[3] > 0 && t.leaf_levels[block_level] > 0,
        "{t:?}"
    );
}

#[test]
fn random_ops_match_page_model_level1_start() {
    assert_covered((0..6).map(|seed| run(seed, 0b0010, 160, SMALL)), 2);
}

#[test]
fn random_ops_match_page_model_level0_start() {
    assert_covered((100..104).map(|seed| run(seed, 0b0101, 160, SMALL)), 2);
}

#[test]
fn random_ops_match_page_model_level2_start() {
    assert_covered((200..204).map(|seed| run(seed, 0b0000, 160, SMALL)), 2);
}

#[test]
fn random_ops_match_page_model_gib_blocks() {
    assert_covered((300..302).map(|seed| run(seed, 0b0010, 48, BIG)), 1);
}
