//! The bodies of RayOS EL2's fuzz targets, one module per guest- or disk-facing parser
//! or state machine, each a plain `run(&[u8])` that panics on a broken invariant.
//!
//! The same functions run under libFuzzer (`fuzz/fuzz_targets/*.rs`, nightly,
//! `cargo xtask fuzz NAME`) and on the stable toolchain in the suite, which replays
//! every file of `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/` through them
//! (`tests/tests/fuzz_corpus.rs`). State machines decode a sequence of operations
//! from the input with [`arbitrary`]; parsers take the bytes as they are.
#![forbid(unsafe_code)]

use arbitrary::{Arbitrary, Unstructured};

pub mod boot_bundle;
pub mod cfi_flash;
pub mod crb;
pub mod fw_cfg;
pub mod gic_its;
pub mod input_script;
pub mod nv_image;
pub mod nvme;
pub mod pci_config;
pub mod registry;
pub mod seeds;
pub mod tis;
mod tpm_common;
pub mod tpm_dispatch;
pub mod vgic_mmio;
pub mod virtio_gpu;
pub mod virtio_mmio;
pub mod virtio_pci;
pub mod xhci;

/// One fuzz target: its name (the libFuzzer binary and corpus folder) and body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// What it drives, for `cargo xtask fuzz list`.
    pub about: &'static str,
}

/// Every target, in the order `cargo xtask fuzz list` prints them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "virtio_mmio",
        run: virtio_mmio::run,
        about: "virtio-mmio transport + split virtqueues (blk, rng, console) over fuzzed guest RAM",
    },
    Target {
        name: "virtio_gpu",
        run: virtio_gpu::run,
        about: "virtio-gpu command parser (control and cursor queues) through virtio-mmio, with backing in fuzzed guest RAM",
    },
    Target {
        name: "vgic_mmio",
        run: vgic_mmio::run,
        about:
            "vGIC GICD/GICR accesses, SPI/PPI/SGI inputs, flush/sync through fake list registers",
    },
    Target {
        name: "tpm_dispatch",
        run: tpm_dispatch::run,
        about: "raw TPM 2.0 command bytes into the vTPM engine",
    },
    Target {
        name: "tis",
        run: tis::run,
        about: "TPM TIS (FIFO) register access sequences",
    },
    Target {
        name: "crb",
        run: crb::run,
        about: "TPM CRB register and buffer access sequences",
    },
    Target {
        name: "nv_image",
        run: nv_image::run,
        about: "vTPM NV image decode (and re-encode round trip)",
    },
    Target {
        name: "registry",
        run: registry::run,
        about: "system-disk registry: superblock, slot payload, VM record, whole-disk open",
    },
    Target {
        name: "boot_bundle",
        run: boot_bundle::run,
        about: "boot bundle (cpio + vm.cfg) parse and write/parse round trip",
    },
    Target {
        name: "fw_cfg",
        run: fw_cfg::run,
        about: "fw_cfg registers, selectors and DMA descriptors over a small guest RAM",
    },
    Target {
        name: "cfi_flash",
        run: cfi_flash::run,
        about: "CFI flash bank commands (program, erase, lock, query) and variable-store commits",
    },
    Target {
        name: "nvme",
        run: nvme::run,
        about: "NVMe controller registers, doorbells and admin/I/O commands with PRPs over a small guest RAM and a held backend",
    },
    Target {
        name: "pci_config",
        run: pci_config::run,
        about: "PCIe root complex: ECAM configuration accesses, BAR placement, window accesses, MSI-X tables, INTx, bus-master DMA, resets",
    },
    Target {
        name: "input_script",
        run: input_script::run,
        about: "input-script parser, the script run against a simulated guest and replayed, run-record reader",
    },
    Target {
        name: "virtio_pci",
        run: virtio_pci::run,
        about: "virtio 1.2 PCI transport (blk, rng, console): common config, notifications, ISR, MSI-X vectors, bus mastering, rings in fuzzed guest RAM",
    },
    Target {
        name: "gic_its",
        run: gic_its::run,
        about: "GICv3 ITS command queue (raw and well-formed commands), registers, tables in fuzzed guest RAM, messages, LPIs through fake list registers",
    },
    Target {
        name: "xhci",
        run: xhci::run,
        about: "xHCI registers, command/transfer/event rings and TRBs, USB control requests, HID and BOT/SCSI devices, hot-plug, over a small guest RAM",
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Access sizes drawn from a byte: 1, 2, 4 or 8 bytes.
pub(crate) fn access_size(b: u8) -> vdev::AccessSize {
    vdev::AccessSize::from_log2(b & 3).unwrap_or(vdev::AccessSize::Byte)
}

/// A byte string inside an operation: a little-endian `u16` length, then that many
/// bytes (fewer if the input ends first). Unlike `Vec<u8>`'s own `Arbitrary` (which
/// takes lengths from the end of the input), it reads front to back, so seeds are
/// easy to write with [`Encoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = usize::from(u16::arbitrary(u)?).min(u.len());
        Ok(Bytes(u.bytes(n)?.to_vec()))
    }
}

/// Writes inputs in the format the targets decode with `arbitrary` (integers
/// little-endian, `bool` one byte, an enum variant as the `u32` that `arbitrary`'s
/// derive maps to it, [`Bytes`] length-prefixed): the seed corpus is written with it.
#[derive(Debug, Default, Clone)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    /// Variant `index` of an enum of `count` variants.
    pub fn variant(&mut self, index: u32, count: u32) -> &mut Self {
        assert!(index < count);
        // The derive picks `(x * count) >> 32`: the smallest such x.
        let x = ((u64::from(index) << 32).div_ceil(u64::from(count))) as u32;
        self.u32(x)
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    /// A [`Bytes`] field.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).expect("Bytes fields hold at most 64 KiB");
        self.u16(n);
        self.0.extend_from_slice(b);
        self
    }
    /// Raw bytes with no length.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Arbitrary, Debug, PartialEq)]
    enum Three {
        A(u8),
        B { x: u16, b: Bytes },
        C(bool, u64),
    }

    #[test]
    fn encoder_writes_what_arbitrary_reads() {
        let mut e = Encoder::default();
        e.variant(2, 3).bool(true).u64(0x1122_3344_5566_7788);
        e.variant(1, 3).u16(0xBEEF).bytes(b"abc");
        e.variant(0, 3).u8(9);
        let mut u = Unstructured::new(&e.0);
        assert_eq!(
            Three::arbitrary(&mut u).unwrap(),
            Three::C(true, 0x1122_3344_5566_7788)
        );
        assert_eq!(
            Three::arbitrary(&mut u).unwrap(),
            Three::B {
                x: 0xBEEF,
                b: Bytes(b"abc".to_vec())
            }
        );
        assert_eq!(Three::arbitrary(&mut u).unwrap(), Three::A(9));
        assert!(u.is_empty());
    }

    #[test]
    fn every_target_is_listed_once() {
        for (i, t) in TARGETS.iter().enumerate() {
            assert!(
                TARGETS[..i].iter().all(|o| o.name != t.name),
                "{} twice",
                t.name
            );
            assert_eq!(target(t.name).map(|f| f.about), Some(t.about));
        }
        assert!(target("nope").is_none());
    }
}
