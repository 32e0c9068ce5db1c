//! The ACPI tables travel the way a firmware guest gets them: EDK2 finds the three
//! files in fw_cfg's directory, DMAs them into memory it allocates in guest RAM,
//! runs the table-loader script there, and installs what the pointers lead to. The
//! test does the firmware's part through the device's MMIO registers and DMA only,
//! then walks RSDP → XSDT → tables in guest RAM.

use std::collections::BTreeMap;

use acpi_gen::loader::{ADD_CHECKSUM, ADD_POINTER, ALLOCATE, COMMAND_LEN, FILE_NAME_LEN};
use uefi_devices::fw_cfg::{dma, key, reg, FwCfg, FwCfgBuilder};
use vdev::{AccessSize, GuestMemory, MmioContext, MmioDevice, NullInterrupts, VecMemory};

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x40_0000;
const DESC: u64 = RAM + 0x1000;
/// Where the "firmware" allocates: a bump allocator from here.
const HEAP: u64 = RAM + 0x10_0000;

struct Firmware {
    dev: FwCfg,
    mem: VecMemory,
    heap: u64,
}

impl Firmware {
    fn mmio_write(&mut self, offset: u64, size: AccessSize, v: u64) {
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut irq,
        };
        self.dev.write(&mut ctx, offset, size, v).unwrap();
    }

    /// One DMA read of `len` bytes of item `select` to `to`.
    fn dma_read(&mut self, select: u16, len: u32, to: u64) {
        let control = dma::SELECT | dma::READ | (u32::from(select) << dma::SELECTOR_SHIFT);
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&to.to_be_bytes());
        self.mem.write(DESC, &d).unwrap();
        self.mmio_write(reg::DMA, AccessSize::Double, DESC.swap_bytes());
        assert_eq!(self.mem.read_u32(DESC).unwrap(), 0, "DMA status");
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read(at, &mut v).unwrap();
        v
    }

    /// name → (select, size) from the directory.
    fn directory(&mut self) -> BTreeMap<String, (u16, u32)> {
        let at = self.alloc(0x1000, 16);
        self.dma_read(key::FILE_DIR, 0x1000, at);
        let raw = self.read(at, 0x1000);
        let count = u32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
        raw[4..4 + count * 64]
            .chunks(64)
            .map(|e| {
                let name = &e[8..];
                let end = name.iter().position(|&c| c == 0).unwrap();
                let name = String::from_utf8(name[..end].to_vec()).unwrap();
                let size = u32::from_be_bytes(e[..4].try_into().unwrap());
                (name, (u16::from_be_bytes([e[4], e[5]]), size))
            })
            .collect()
    }

    fn alloc(&mut self, len: u64, align: u64) -> u64 {
        let at = self.heap.next_multiple_of(align.max(1));
        self.heap = at + len;
        at
    }

    /// The file `name` DMAed into freshly allocated guest memory.
    fn fetch(&mut self, dir: &BTreeMap<String, (u16, u32)>, name: &str, align: u64) -> (u64, u32) {
        let (select, size) = dir[name];
        let at = self.alloc(u64::from(size), align);
        self.dma_read(select, size, at);
        (at, size)
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn name(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap();
    String::from_utf8(b[..end].to_vec()).unwrap()
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

#[test]
fn edk2_gets_linked_checksummed_tables_through_fw_cfg_dma() {
    let cfg = acpi_gen::profile::uefi_acpi(4, None, &[0, 1, 31]);
    let tables = acpi_gen::build(&cfg).unwrap();
    let mut b = FwCfgBuilder::new().cpus(4);
    b.acpi(&acpi_gen::AcpiBlobs::new(&tables)).unwrap();
    b.ramfb().unwrap();
    let mut fw = Firmware {
        dev: b.build(),
        mem: VecMemory::new(RAM, RAM_SIZE),
        heap: HEAP,
    };
    let dir = fw.directory();
    let (script_at, script_len) = fw.fetch(&dir, "etc/table-loader", 8);
    let script = fw.read(script_at, script_len as usize);
    assert_eq!(script.len() % COMMAND_LEN, 0);
    let mut blobs: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for c in script.chunks(COMMAND_LEN) {
        let file = |at: usize| name(&c[at..at + FILE_NAME_LEN]);
        match le(&c[..4]) as u32 {
            ALLOCATE => {
                let f = file(4);
                let align = le(&c[60..64]);
                let placed = fw.fetch(&dir, &f, align);
                assert_eq!(placed.0 % align, 0);
                blobs.insert(f, placed);
            }
            ADD_POINTER => {
                let (dest, src) = (blobs[&file(4)], blobs[&file(60)]);
                let (offset, size) = (le(&c[116..120]), c[120] as usize);
                let field = dest.0 + offset;
                let value = le(&fw.read(field, size));
                assert!(value < u64::from(src.1), "pointer outside its blob");
                fw.mem
                    .write(field, &(value + src.0).to_le_bytes()[..size])
                    .unwrap();
            }
            ADD_CHECKSUM => {
                let blob = blobs[&file(4)];
                let (offset, start, len) = (le(&c[60..64]), le(&c[64..68]), le(&c[68..72]));
                let range = fw.read(blob.0 + start, len as usize);
                let byte = fw.read(blob.0 + offset, 1)[0];
                let fixed = byte.wrapping_sub(sum(&range));
                fw.mem.write(blob.0 + offset, &[fixed]).unwrap();
            }
            other => panic!("loader command {other}"),
        }
    }
    // The firmware's walk: RSDP → XSDT → each table, every checksum zero.
    let rsdp_at = blobs["etc/acpi/rsdp"].0;
    let rsdp = fw.read(rsdp_at, 36);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!((sum(&rsdp[..20]), sum(&rsdp)), (0, 0));
    let table = |fw: &Firmware, at: u64| {
        let len = le(&fw.read(at + 4, 4)) as usize;
        let t = fw.read(at, len);
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
        t
    };
    let xsdt = table(&fw, le(&rsdp[24..32]));
    assert_eq!(&xsdt[..4], b"XSDT");
    let mut seen = Vec::new();
    for e in xsdt[36..].chunks(8) {
        let t = table(&fw, le(e));
        if &t[..4] == b"FACP" {
            let dsdt = table(&fw, le(&t[140..148]));
            assert_eq!(&dsdt[..4], b"DSDT");
        }
        if &t[..4] == b"APIC" {
            // Walk the subtables: four GICCs, one GICD, one GICR region.
            let mut at = 44;
            let mut kinds = Vec::new();
            while at < t.len() {
                kinds.push(t[at]);
                at += t[at + 1] as usize;
            }
            assert_eq!(kinds, [0x0b, 0x0b, 0x0b, 0x0b, 0x0c, 0x0e]);
        }
        seen.push(String::from_utf8(t[..4].to_vec()).unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        ["APIC", "DBG2", "FACP", "GTDT", "PPTT", "SPCR", "TPM2"]
    );
    // Everything the firmware placed lies in its own allocations.
    assert!(fw.heap < RAM + RAM_SIZE as u64);
}
