//! The physical platform, read from the device tree that firmware (or QEMU) hands to
//! the hypervisor in x0.

use alloc::string::String;
use alloc::vec::Vec;

use fdt::Fdt;

use crate::board::{Board, Ecam, Uart, UartKind};

/// A physical address range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
    pub const fn overlaps(&self, other: &Range) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// How the platform's PSCI firmware is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciConduit {
    Smc,
    Hvc,
}

/// The GICv3 as the device tree describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gic {
    pub gicd: Range,
    /// Redistributor regions.
    pub gicr: Vec<Range>,
    /// INTID of the virtual-CPU-interface maintenance interrupt, if described.
    pub maintenance_intid: Option<u32>,
    /// `redistributor-stride`, when the firmware states one (else the frames'
    /// own GICR_TYPER.VLPIS tells).
    pub redistributor_stride: Option<u64>,
    /// ITS frames the firmware enables.
    pub its: Vec<Range>,
}

/// Generic-timer interrupts as INTIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerIrqs {
    pub phys_secure: u32,
    pub phys_nonsecure: u32,
    pub virt: u32,
    pub hyp: u32,
}

/// Everything the hypervisor learns from the device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The board description matching the root `compatible`, if any.
    pub board: Option<&'static Board>,
    pub model: String,
    pub memory: Vec<Range>,
    /// `/memreserve/` entries and `/reserved-memory` children.
    pub reserved: Vec<Range>,
    /// The console UART (PL011 or Qualcomm GENI): `/chosen/stdout-path` first.
    pub uart: Option<Uart>,
    pub gic: Gic,
    pub timer: TimerIrqs,
    /// MPIDR affinity values of the CPUs, in device-tree order.
    pub cpus: Vec<u64>,
    pub psci: Option<PsciConduit>,
    /// The initrd range from `/chosen`.
    pub initrd: Option<Range>,
    pub bootargs: Option<String>,
    /// virtio-mmio transports (base range and INTID), in device-tree order.
    pub virtio_mmio: Vec<(Range, Option<u32>)>,
    /// Randomness the boot loader left in `/chosen`: `rng-seed` ‖ `kaslr-seed`.
    pub seed: Seed,
    /// PCIe ECAM windows (`pci-host-ecam-generic` or the ACPI MCFG).
    pub pci_ecam: Vec<Ecam>,
    /// What the firmware left out and the board description supplied (field names).
    pub fallbacks: Vec<&'static str>,
}

/// Seed bytes from the device tree. Its `Debug` shows only the length, so a
/// logged `Platform` never prints them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Seed(pub Vec<u8>);

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Seed({} bytes)", self.0.len())
    }
}

/// Why the device tree could not describe a platform the hypervisor can run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The blob is not a valid flattened device tree.
    BadBlob,
    /// A node the hypervisor cannot run without is absent or malformed.
    Missing(&'static str),
}

fn be32(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

fn be_cells(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// GIC interrupt specifier (type, number, flags) → INTID.
fn gic_intid(kind: u32, number: u32) -> Option<u32> {
    match kind {
        0 => Some(number + 32),
        1 => Some(number + 16),
        _ => None,
    }
}

fn regs(node: fdt::node::FdtNode) -> Vec<Range> {
    node.reg()
        .map(|r| {
            r.filter_map(|m| {
                Some(Range {
                    base: m.starting_address as u64,
                    size: m.size? as u64,
                })
            })
            .collect()
        })
        .unwrap_or_default()
}

fn interrupts(node: fdt::node::FdtNode) -> Vec<u32> {
    node.property("interrupts")
        .map(|p| {
            let cells: Vec<u32> = be32(p.value).collect();
            cells
                .chunks_exact(3)
                .filter_map(|c| gic_intid(c[0], c[1]))
                .collect()
        })
        .unwrap_or_default()
}

/// FDT structure-block tokens (Devicetree Specification v0.4, 5.4.1).
mod token {
    pub const BEGIN_NODE: u32 = 1;
    pub const END_NODE: u32 = 2;
    pub const PROP: u32 = 3;
    pub const NOP: u32 = 4;
    pub const END: u32 = 9;
}
const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_HEADER_LEN: usize = 40;

fn be32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The blob with its FDT_NOP tokens removed, or `None` if it has none (or is
/// malformed: `discover` then reports it). libfdt leaves NOPs where a boot loader
/// (QEMU's `-dtb`, U-Boot) deleted a property or node in place; the `fdt` crate
/// stops reading a node's properties and children at a NOP between them and so
/// loses nodes, so discovery reads a copy without them.
pub fn without_nops(dtb: &[u8]) -> Option<Vec<u8>> {
    if be32_at(dtb, 0)? != FDT_MAGIC {
        return None;
    }
    let total = (be32_at(dtb, 4)? as usize).min(dtb.len());
    let off_struct = be32_at(dtb, 8)? as usize;
    let off_strings = be32_at(dtb, 12)? as usize;
    let off_rsvmap = be32_at(dtb, 16)? as usize;
    let size_strings = be32_at(dtb, 32)? as usize;
    let size_struct = be32_at(dtb, 36)? as usize;
    let structs = dtb.get(off_struct..off_struct.checked_add(size_struct)?)?;
    let strings = dtb.get(off_strings..off_strings.checked_add(size_strings)?)?;
    if off_struct.max(off_strings) > total {
        return None;
    }
    // The memory reservation map: 16-byte entries up to an all-zero one.
    let mut rsv_end = off_rsvmap;
    loop {
        let e = dtb.get(rsv_end..rsv_end.checked_add(16)?)?;
        rsv_end += 16;
        if e.iter().all(|&b| b == 0) {
            break;
        }
    }
    let mut out_struct = Vec::with_capacity(structs.len());
    let mut i = 0;
    let mut nops = 0;
    while i < structs.len() {
        let t = be32_at(structs, i)?;
        let len = match t {
            token::BEGIN_NODE => {
                let name_end = structs.get(i + 4..)?.iter().position(|&b| b == 0)?;
                4 + (name_end + 1).next_multiple_of(4)
            }
            token::PROP => 12 + (be32_at(structs, i + 4)? as usize).next_multiple_of(4),
            token::END_NODE | token::NOP => 4,
            token::END => 4,
            _ => return None,
        };
        let next = i.checked_add(len)?;
        if t == token::NOP {
            nops += 1;
        } else {
            out_struct.extend_from_slice(structs.get(i..next)?);
        }
        i = next;
        if t == token::END {
            break;
        }
    }
    if nops == 0 {
        return None;
    }
    let rsvmap = &dtb[off_rsvmap..rsv_end];
    let new_rsv = FDT_HEADER_LEN.next_multiple_of(8);
    let new_struct = new_rsv + rsvmap.len();
    let new_strings = new_struct + out_struct.len();
    let new_total = new_strings + strings.len();
    let mut out = Vec::with_capacity(new_total);
    out.extend_from_slice(&dtb[..FDT_HEADER_LEN]);
    out.resize(new_rsv, 0);
    out.extend_from_slice(rsvmap);
    out.extend_from_slice(&out_struct);
    out.extend_from_slice(strings);
    let u32s = |x: usize| u32::try_from(x).ok().map(u32::to_be_bytes);
    out[4..8].copy_from_slice(&u32s(new_total)?);
    out[8..12].copy_from_slice(&u32s(new_struct)?);
    out[12..16].copy_from_slice(&u32s(new_strings)?);
    out[16..20].copy_from_slice(&u32s(new_rsv)?);
    out[36..40].copy_from_slice(&u32s(out_struct.len())?);
    Some(out)
}

/// Reads the platform from a flattened device tree.
pub fn discover(dtb: &[u8]) -> Result<Platform, DiscoveryError> {
    let compacted = without_nops(dtb);
    let dtb = compacted.as_deref().unwrap_or(dtb);
    let fdt = Fdt::new(dtb).map_err(|_| DiscoveryError::BadBlob)?;
    let root = fdt.root();
    let board = Board::identify(root.compatible().all());

    let mut fallbacks = Vec::new();
    let mut memory: Vec<Range> = fdt
        .memory()
        .regions()
        .filter_map(|m| {
            Some(Range {
                base: m.starting_address as u64,
                size: m.size? as u64,
            })
        })
        .filter(|r| r.size > 0)
        .collect();
    if memory.is_empty() {
        // Snapdragon's tree leaves /memory's size to the boot loader.
        let b = board.ok_or(DiscoveryError::Missing("memory"))?;
        fallbacks.push("memory");
        memory = b.memory.to_vec();
    }

    let mut reserved: Vec<Range> = fdt
        .memory_reservations()
        .map(|r| Range {
            base: r.address() as u64,
            size: r.size() as u64,
        })
        .collect();
    if let Some(rm) = fdt.find_node("/reserved-memory") {
        for child in rm.children() {
            reserved.extend(regs(child));
        }
    }

    let uart = find_uart(&fdt);

    let gic = match fdt.find_compatible(&["arm,gic-v3"]) {
        Some(node) => gic_from(node)?,
        None => {
            let b = board.ok_or(DiscoveryError::Missing("arm,gic-v3"))?;
            fallbacks.push("gic");
            Gic {
                gicd: b.gic.gicd,
                gicr: b.gic.gicr.to_vec(),
                maintenance_intid: Some(b.gic.maintenance_intid),
                redistributor_stride: Some(b.gic.gicr_stride),
                its: b.gic.its.to_vec(),
            }
        }
    };

    let timer = match fdt.find_compatible(&["arm,armv8-timer"]) {
        Some(node) => {
            let t = interrupts(node);
            if t.len() < 4 {
                return Err(DiscoveryError::Missing("timer interrupts"));
            }
            TimerIrqs {
                phys_secure: t[0],
                phys_nonsecure: t[1],
                virt: t[2],
                hyp: t[3],
            }
        }
        None => {
            let b = board.ok_or(DiscoveryError::Missing("arm,armv8-timer"))?;
            fallbacks.push("timer");
            b.timer
        }
    };

    let cpus: Vec<u64> = fdt
        .find_node("/cpus")
        .ok_or(DiscoveryError::Missing("/cpus"))?
        .children()
        .filter(|c| c.property("device_type").and_then(|p| p.as_str()) == Some("cpu"))
        .filter_map(|c| c.property("reg").and_then(|p| be_cells(p.value)))
        .collect();
    if cpus.is_empty() {
        return Err(DiscoveryError::Missing("cpu nodes"));
    }

    let mut psci = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str())
        .and_then(|m| match m {
            "smc" => Some(PsciConduit::Smc),
            "hvc" => Some(PsciConduit::Hvc),
            _ => None,
        });

    if psci.is_none() {
        if let Some(b) = board {
            fallbacks.push("psci");
            psci = Some(b.psci);
        }
    }

    let chosen = fdt.find_node("/chosen");
    let initrd = chosen.and_then(|c| {
        let start = be_cells(c.property("linux,initrd-start")?.value)?;
        let end = be_cells(c.property("linux,initrd-end")?.value)?;
        (end > start).then_some(Range {
            base: start,
            size: end - start,
        })
    });
    let bootargs = chosen
        .and_then(|c| c.property("bootargs"))
        .and_then(|p| p.as_str())
        .map(String::from);

    // The boot loader's randomness for the OS it starts (the devicetree
    // specification's /chosen rng-seed; arm64's kaslr-seed, 8 bytes).
    let mut seed = Vec::new();
    for name in ["rng-seed", "kaslr-seed"] {
        if let Some(p) = chosen.and_then(|c| c.property(name)) {
            seed.extend_from_slice(p.value);
        }
    }

    let virtio_mmio = fdt
        .all_nodes()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"))
        })
        .filter_map(|n| Some((regs(n).into_iter().next()?, interrupts(n).first().copied())))
        .collect();

    let pci_ecam = fdt
        .all_nodes()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "pci-host-ecam-generic"))
        })
        .filter_map(|n| {
            let base = regs(n).first()?.base;
            let bus: Vec<u32> = n
                .property("bus-range")
                .map(|p| be32(p.value).collect())
                .unwrap_or_else(|| alloc::vec![0, 255]);
            let segment = n
                .property("linux,pci-domain")
                .and_then(|p| p.as_usize())
                .unwrap_or(0);
            Some(Ecam {
                base,
                segment: u16::try_from(segment).ok()?,
                bus_start: u8::try_from(*bus.first()?).ok()?,
                bus_end: u8::try_from(*bus.get(1)?).ok()?,
            })
        })
        .collect();

    Ok(Platform {
        board,
        model: String::from(root.model()),
        memory,
        reserved,
        uart,
        gic,
        timer,
        cpus,
        psci,
        initrd,
        bootargs,
        virtio_mmio,
        seed: Seed(seed),
        pci_ecam,
        fallbacks,
    })
}

fn enabled(node: &fdt::node::FdtNode) -> bool {
    node.property("status")
        .and_then(|p| p.as_str())
        .is_none_or(|s| s == "okay" || s == "ok")
}

/// The kind of UART a device-tree node is, by its `compatible` (no allocation:
/// usable before the hypervisor's heap exists).
pub fn uart_kind(node: &fdt::node::FdtNode) -> Option<UartKind> {
    node.compatible()?.all().find_map(|c| match c {
        "arm,pl011" | "arm,sbsa-uart" => Some(UartKind::Pl011),
        "qcom,geni-debug-uart" | "qcom,geni-uart" => Some(UartKind::QcomGeni),
        _ => None,
    })
}

/// The console: the node `/chosen/stdout-path` names (alias or path, options
/// after ':' dropped), else the first enabled PL011.
fn find_uart(fdt: &Fdt) -> Option<Uart> {
    let stdout = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("stdout-path"))
        .and_then(|p| p.as_str())
        .and_then(|s| s.split(':').next())
        .and_then(|path| {
            if path.starts_with('/') {
                fdt.find_node(path)
            } else {
                let full = fdt.find_node("/aliases")?.property(path)?.as_str()?;
                fdt.find_node(full)
            }
        });
    let node = stdout.filter(|n| uart_kind(n).is_some()).or_else(|| {
        fdt.all_nodes()
            .find(|n| uart_kind(n) == Some(UartKind::Pl011) && enabled(n))
    })?;
    Some(Uart {
        kind: uart_kind(&node)?,
        regs: regs(node).into_iter().next()?,
        intid: interrupts(node).first().copied(),
    })
}

fn gic_from(node: fdt::node::FdtNode) -> Result<Gic, DiscoveryError> {
    let gic_regs = regs(node);
    let nr_gicr = node
        .property("#redistributor-regions")
        .and_then(|p| p.as_usize())
        .unwrap_or(1);
    if gic_regs.len() < 1 + nr_gicr {
        return Err(DiscoveryError::Missing("gic-v3 reg"));
    }
    let redistributor_stride = node
        .property("redistributor-stride")
        .and_then(|p| be_cells(p.value))
        .filter(|&s| s != 0);
    let its = node
        .children()
        .filter(|c| {
            c.compatible()
                .is_some_and(|cs| cs.all().any(|s| s == "arm,gic-v3-its"))
                && enabled(c)
        })
        .filter_map(|c| regs(c).into_iter().next())
        .collect();
    Ok(Gic {
        gicd: gic_regs[0],
        gicr: gic_regs[1..1 + nr_gicr].to_vec(),
        maintenance_intid: interrupts(node).first().copied(),
        redistributor_stride,
        its,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_VIRT_DTB: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-2cpu.dtb");
    /// `-M virt,virtualization=on,gic-version=3,dtb-randomness=off -cpu cortex-a72
    /// -smp 2 -m 1G`, dumped
    /// with `dumpdtb=` and packed to its blocks' size.
    const QEMU_VIRT_NO_SEED_DTB: &[u8] =
        include_bytes!("../testdata/qemu-virt-gicv3-2cpu-no-seed.dtb");

    #[test]
    fn qemu_virt_is_fully_discovered() {
        let p = discover(QEMU_VIRT_DTB).unwrap();
        assert_eq!(p.board.map(|b| b.name), Some("qemu-virt"));
        assert_eq!(p.model, "linux,dummy-virt");
        assert_eq!(
            p.memory,
            [Range {
                base: 0x4000_0000,
                size: 0x4000_0000
            }]
        );
        assert_eq!(
            p.uart,
            Some(Uart {
                kind: UartKind::Pl011,
                regs: Range {
                    base: 0x0900_0000,
                    size: 0x1000
                },
                intid: Some(33)
            })
        );
        assert_eq!(
            p.gic.gicd,
            Range {
                base: 0x0800_0000,
                size: 0x1_0000
            }
        );
        assert_eq!(
            p.gic.gicr,
            [Range {
                base: 0x080a_0000,
                size: 0xf6_0000
            }]
        );
        assert_eq!(p.gic.maintenance_intid, Some(25));
        assert_eq!(
            p.timer,
            TimerIrqs {
                phys_secure: 29,
                phys_nonsecure: 30,
                virt: 27,
                hyp: 26
            }
        );
        assert_eq!(p.cpus, [0, 1]);
        assert_eq!(p.psci, Some(PsciConduit::Smc));
        assert_eq!(p.initrd, None);
        assert_eq!(p.virtio_mmio.len(), 32);
        assert_eq!(
            p.virtio_mmio[0],
            (
                Range {
                    base: 0x0a00_0000,
                    size: 0x200
                },
                Some(48)
            )
        );
    }

    #[test]
    fn the_boot_loaders_seed_is_read_and_not_printed() {
        // QEMU's virt: a 32-byte rng-seed and an 8-byte kaslr-seed in /chosen.
        let p = discover(QEMU_VIRT_DTB).unwrap();
        assert_eq!(p.seed.0.len(), 32 + 8);
        assert!(p.seed.0.iter().any(|&b| b != 0));
        assert_eq!(alloc::format!("{:?}", p.seed), "Seed(40 bytes)");
        // The same machine with `-M virt,dtb-randomness=off`: no seed at all.
        let q = discover(QEMU_VIRT_NO_SEED_DTB).unwrap();
        assert_eq!(q.seed, Seed::default());
        assert_eq!(q.cpus, p.cpus);
    }

    /// What QEMU hands over for `-dtb FILE` (`FILE` dumped from the same machine):
    /// libfdt's edits left 54 FDT_NOP tokens, after which the `fdt` crate alone
    /// loses `/cpus` and `/chosen`.
    const WITH_NOPS: &[u8] = include_bytes!("../testdata/qemu-virt-dtb-option-with-nops.dtb");

    #[test]
    fn nop_tokens_do_not_hide_nodes() {
        let raw = Fdt::new(WITH_NOPS).unwrap();
        assert!(
            raw.find_node("/chosen").is_none(),
            "the fdt crate's limitation this works around"
        );
        let clean = without_nops(WITH_NOPS).unwrap();
        assert!(clean.len() < WITH_NOPS.len());
        assert_eq!(without_nops(&clean), None, "no NOP left");
        let p = discover(WITH_NOPS).unwrap();
        assert_eq!(
            p.cpus,
            [1, 0],
            "the swapped-MPIDR tree this blob was made from"
        );
        assert!(p.initrd.is_some());
        assert_eq!(p.board.map(|b| b.name), Some("qemu-virt"));
        // A blob without NOPs is read as it is.
        assert_eq!(without_nops(QEMU_VIRT_DTB), None);
        // Truncations are refused, never a panic.
        for n in (0..WITH_NOPS.len()).step_by(97) {
            let _ = without_nops(&WITH_NOPS[..n]);
            let _ = discover(&WITH_NOPS[..n]);
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(discover(&[0u8; 64]), Err(DiscoveryError::BadBlob));
        assert_eq!(
            discover(&QEMU_VIRT_DTB[..100]),
            Err(DiscoveryError::BadBlob)
        );
    }

    #[test]
    fn ranges() {
        let a = Range {
            base: 0x1000,
            size: 0x1000,
        };
        assert!(a.contains(0x1fff) && !a.contains(0x2000));
        assert!(a.overlaps(&Range {
            base: 0x1fff,
            size: 1
        }));
        assert!(!a.overlaps(&Range {
            base: 0x2000,
            size: 1
        }));
    }
}
