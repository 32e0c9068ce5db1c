//! SGI generation: decoding a guest's trapped ICC_SGI1R_EL1 write into target vCPUs
//! (TargetList with Aff3.Aff2.Aff1 and the range selector, or IRM broadcast to every
//! vCPU but the sender) and making the SGI pending on each.

use crate::regs::Sgi1r;
use crate::vgic::{InputError, Vgic};

impl Vgic {
    /// Handles vCPU `from` writing `icc_sgi1r` to ICC_SGI1R_EL1. Returns the set of
    /// vCPUs (bit i = vCPU i) the SGI was made pending on. Targets naming no vCPU are
    /// ignored with a log line, as the architecture drops them.
    pub fn send_sgi(&mut self, from: usize, icc_sgi1r: u64) -> Result<u64, InputError> {
        if from >= self.vcpus.len() {
            return Err(InputError::NoSuchVcpu(from));
        }
        let v = Sgi1r(icc_sgi1r);
        let mut targets = 0u64;
        if v.broadcast() {
            targets = (u64::MAX >> (64 - self.vcpus.len())) & !(1 << from);
        } else {
            let list = v.target_list();
            for bit in (0..16).filter(|b| list & (1 << b) != 0) {
                let aff = v.target_affinity(bit);
                match self.vcpu_by_affinity(aff) {
                    Some(t) => targets |= 1 << t,
                    None => log::warn!(
                        "vgic: vCPU {from} sent SGI {} to affinity {aff:#010x}, which names no vCPU",
                        v.intid()
                    ),
                }
            }
        }
        for t in (0..self.vcpus.len()).filter(|t| targets & (1 << t) != 0) {
            if self.vcpus[t].private[v.intid() as usize].set_pending() {
                self.kick_for(t, v.intid());
            }
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::VgicConfig;
    use crate::vgic::{InputError, Vgic};

    fn sgi1r(intid: u64, aff1: u64, list: u64) -> u64 {
        intid << 24 | aff1 << 16 | list
    }

    /// Four vCPUs in two clusters: Aff1.Aff0 = 0.0, 0.1, 1.0, 1.1.
    fn two_clusters() -> Vgic {
        let mut c = VgicConfig::simple(4, 32);
        c.mpidrs = [0x000, 0x001, 0x100, 0x101]
            .iter()
            .map(|m| m | 1 << 31)
            .collect();
        Vgic::new(c).unwrap()
    }

    fn pending_sgis(g: &Vgic, vcpu: usize) -> u32 {
        g.read_bits(vcpu, 0, crate::banks::BitReg::SetPending) & 0xFFFF
    }

    #[test]
    fn target_list_uses_aff1() {
        let mut g = two_clusters();
        assert_eq!(g.send_sgi(0, sgi1r(3, 1, 0b10)), Ok(0b1000));
        assert_eq!(pending_sgis(&g, 3), 1 << 3);
        assert_eq!(pending_sgis(&g, 1), 0);
        assert_eq!(g.take_kicks(), 0b1000);
        assert_eq!(g.send_sgi(2, sgi1r(5, 0, 0b11)), Ok(0b0011));
        assert_eq!(pending_sgis(&g, 0), 1 << 5);
        assert_eq!(pending_sgis(&g, 1), 1 << 5);
    }

    #[test]
    fn broadcast_excludes_sender() {
        let mut g = two_clusters();
        assert_eq!(g.send_sgi(2, 1 << 40 | 7 << 24), Ok(0b1011));
        for v in [0, 1, 3] {
            assert_eq!(pending_sgis(&g, v), 1 << 7);
        }
        assert_eq!(pending_sgis(&g, 2), 0);
    }

    #[test]
    fn absent_targets_are_ignored() {
        let mut g = two_clusters();
        // Aff0 2..15 of cluster 0, cluster 7, range selector 1, Aff2 = 1: nobody.
        assert_eq!(g.send_sgi(0, sgi1r(1, 0, 0xFFFC)), Ok(0));
        assert_eq!(g.send_sgi(0, sgi1r(1, 7, 0xFFFF)), Ok(0));
        assert_eq!(g.send_sgi(0, 1 << 44 | sgi1r(1, 0, 0x1)), Ok(0));
        assert_eq!(g.send_sgi(0, 1 << 32 | sgi1r(1, 0, 0x1)), Ok(0));
        // A partly valid list reaches the valid part.
        assert_eq!(g.send_sgi(0, sgi1r(1, 1, 0x7)), Ok(0b1100));
        assert_eq!(
            g.send_sgi(4, sgi1r(1, 0, 1)),
            Err(InputError::NoSuchVcpu(4))
        );
        assert_eq!(pending_sgis(&g, 0), 0);
    }

    #[test]
    fn range_selector_reaches_high_aff0() {
        let mut c = VgicConfig::simple(2, 32);
        c.mpidrs[1] = 1 << 31 | 17; // Aff0 = 17 = RS 1, bit 1
        let mut g = Vgic::new(c).unwrap();
        assert_eq!(g.send_sgi(0, 1 << 44 | sgi1r(2, 0, 0b10)), Ok(0b10));
        assert_eq!(pending_sgis(&g, 1), 1 << 2);
    }
}
