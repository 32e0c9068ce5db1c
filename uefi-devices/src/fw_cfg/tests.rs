//! The device driven as EDK2's QemuFwCfgLib drives it (selector writes swapped to
//! big-endian, 8-byte data reads, DMA descriptors in guest RAM), and as a hostile
//! guest would.

use super::*;
use alloc::string::ToString;
use vdev::{NullInterrupts, VecMemory};

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x10_0000;
const DESC: u64 = RAM + 0x1000;
const BUF: u64 = RAM + 0x2000;

struct Guest {
    dev: FwCfg,
    mem: VecMemory,
}

fn acpi_blobs() -> acpi_gen::AcpiBlobs {
    let cfg = acpi_gen::profile::uefi_acpi(2, None, &[0, 31]);
    acpi_gen::AcpiBlobs::new(&acpi_gen::build(&cfg).unwrap())
}

fn device() -> FwCfg {
    let mut b = FwCfgBuilder::new().cpus(2);
    b.acpi(&acpi_blobs()).unwrap();
    b.bootorder(&[
        "/virtio-mmio@000000000a000000",
        "/virtio-mmio@000000000a000200",
    ])
    .unwrap();
    b.ramfb().unwrap();
    b.build()
}

impl Guest {
    fn new() -> Self {
        Guest {
            dev: device(),
            mem: VecMemory::new(RAM, RAM_SIZE),
        }
    }
    fn rd(&mut self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut irq,
        };
        self.dev.read(&mut ctx, offset, size)
    }
    fn wr(&mut self, offset: u64, size: AccessSize, v: u64) -> Result<(), MmioError> {
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut irq,
        };
        self.dev.write(&mut ctx, offset, size, v)
    }
    /// EDK2: `MmioWrite16 (Selector, SwapBytes16 (Item))`.
    fn select(&mut self, key: u16) {
        self.wr(reg::SELECTOR, AccessSize::Half, u64::from(key.swap_bytes()))
            .unwrap();
    }
    /// Reads `n` bytes through the data register, 8 at a time, then narrower.
    fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let size = match n - out.len() {
                8.. => AccessSize::Double,
                4.. => AccessSize::Word,
                2.. => AccessSize::Half,
                _ => AccessSize::Byte,
            };
            let v = self.rd(reg::DATA, size).unwrap();
            out.extend_from_slice(&v.to_le_bytes()[..size.bytes() as usize]);
        }
        out
    }
    fn descriptor(&mut self, at: u64, control: u32, length: u32, address: u64) {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&length.to_be_bytes());
        d.extend_from_slice(&address.to_be_bytes());
        self.mem.write(at, &d).unwrap();
    }
    /// One DMA operation with the descriptor at [`DESC`]; returns the control
    /// word the device left there.
    fn dma(&mut self, control: u32, length: u32, address: u64) -> u32 {
        self.descriptor(DESC, control, length, address);
        self.wr(reg::DMA, AccessSize::Double, DESC.swap_bytes())
            .unwrap();
        u32::from_be(self.mem.read_u32(DESC).unwrap().to_le())
    }
    fn dma_read_file(&mut self, select: u16, len: usize) -> Vec<u8> {
        let control = dma::SELECT | dma::READ | (u32::from(select) << dma::SELECTOR_SHIFT);
        assert_eq!(self.dma(control, len as u32, BUF), 0);
        let mut v = vec![0u8; len];
        self.mem.read(BUF, &mut v).unwrap();
        v
    }
    /// The file directory read through the data register.
    fn directory(&mut self) -> Vec<(String, u32, u16)> {
        self.select(key::FILE_DIR);
        let count = u32::from_be_bytes(self.read_bytes(4).try_into().unwrap());
        (0..count)
            .map(|_| {
                let e = self.read_bytes(DIR_ENTRY_LEN);
                let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let select = u16::from_be_bytes([e[4], e[5]]);
                let name = &e[8..];
                let end = name.iter().position(|&c| c == 0).unwrap();
                (
                    String::from_utf8(name[..end].to_vec()).unwrap(),
                    size,
                    select,
                )
            })
            .collect()
    }
    fn select_of(&mut self, name: &str) -> u16 {
        self.directory()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap()
            .2
    }
}

fn ramfb_bytes(addr: u64, fourcc: u32, w: u32, h: u32, stride: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&addr.to_be_bytes());
    v.extend_from_slice(&fourcc.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&stride.to_be_bytes());
    v
}

#[test]
fn signature_features_and_cpu_count_read_as_edk2_expects() {
    let mut g = Guest::new();
    g.select(key::SIGNATURE);
    assert_eq!(g.read_bytes(4), b"QEMU");
    g.select(key::ID);
    let features = u32::from_le_bytes(g.read_bytes(4).try_into().unwrap());
    assert_eq!(features, FEATURE_TRADITIONAL | FEATURE_DMA);
    // The DMA register reads "QEMU CFG" in address order; EDK2 swaps the 64-bit
    // load to compare it with 0x51454d5520434647.
    let sig = g.rd(reg::DMA, AccessSize::Double).unwrap();
    assert_eq!(sig.swap_bytes(), 0x5145_4d55_2043_4647);
    g.select(key::NB_CPUS);
    assert_eq!(g.read_bytes(2), 2u16.to_le_bytes());
}

#[test]
fn directory_lists_every_file_and_dma_and_data_reads_agree() {
    let mut g = Guest::new();
    let blobs = acpi_blobs();
    let dir = g.directory();
    let names: Vec<&str> = dir.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bootorder",
            "etc/acpi/rsdp",
            "etc/acpi/tables",
            "etc/ramfb",
            "etc/table-loader"
        ]
    );
    for (name, size, select) in dir {
        let want: Vec<u8> = match name.as_str() {
            "etc/acpi/tables" => blobs.tables.clone(),
            "etc/acpi/rsdp" => blobs.rsdp.clone(),
            "etc/table-loader" => blobs.loader.clone(),
            "etc/ramfb" => vec![0; ramfb::LEN],
            "bootorder" => {
                b"/virtio-mmio@000000000a000000\n/virtio-mmio@000000000a000200\0".to_vec()
            }
            other => panic!("unexpected file {other}"),
        };
        assert_eq!(size as usize, want.len(), "{name}");
        assert_eq!(g.dma_read_file(select, want.len()), want, "{name} by DMA");
        g.select(select);
        assert_eq!(
            g.read_bytes(want.len()),
            want,
            "{name} by the data register"
        );
        assert_eq!(g.dev.file(&name), Some(&want[..]));
    }
}

#[test]
fn reads_past_the_end_return_zeros_and_skip_stops_at_the_end() {
    let mut g = Guest::new();
    g.select(key::SIGNATURE);
    let v = g.rd(reg::DATA, AccessSize::Double).unwrap();
    assert_eq!(v.to_le_bytes(), *b"QEMU\0\0\0\0");
    assert_eq!(g.rd(reg::DATA, AccessSize::Word).unwrap(), 0);
    // DMA read past the end: the rest of the item, then zeros.
    g.mem.write(BUF, &[0xaa; 16]).unwrap();
    let control = dma::SELECT | dma::READ | (u32::from(key::SIGNATURE) << dma::SELECTOR_SHIFT);
    assert_eq!(g.dma(control, 16, BUF), 0);
    let mut b = [0u8; 16];
    g.mem.read(BUF, &mut b).unwrap();
    assert_eq!(&b, b"QEMU\0\0\0\0\0\0\0\0\0\0\0\0");
    // Skip 2 then read 2: "MU".
    let rsdp = g.select_of("etc/acpi/rsdp");
    let skip = dma::SELECT | dma::SKIP | (u32::from(rsdp) << dma::SELECTOR_SHIFT);
    assert_eq!(g.dma(skip, 2, 0), 0);
    assert_eq!(g.dma(dma::READ, 6, BUF), 0);
    let mut b = [0u8; 6];
    g.mem.read(BUF, &mut b).unwrap();
    assert_eq!(&b, b"D PTR ");
}

#[test]
fn the_firmware_configures_ramfb_through_a_dma_write() {
    let mut g = Guest::new();
    let sel = g.select_of(ramfb::FILE);
    let cfg = ramfb_bytes(RAM + 0x8_0000, ramfb::FOURCC_XRGB8888, 800, 600, 0);
    g.mem.write(BUF, &cfg).unwrap();
    let control = dma::SELECT | dma::WRITE | (u32::from(sel) << dma::SELECTOR_SHIFT);
    assert_eq!(g.dma(control, ramfb::LEN as u32, BUF), 0);
    let want = RamfbConfig {
        addr: RAM + 0x8_0000,
        fourcc: ramfb::FOURCC_XRGB8888,
        width: 800,
        height: 600,
        stride: 3200,
    };
    assert_eq!(g.dev.ramfb(), Some(want));
    // The file reads back what was written.
    assert_eq!(g.dma_read_file(sel, ramfb::LEN), cfg);
    // Reset forgets it.
    g.dev.reset(&mut NullInterrupts);
    assert_eq!(g.dev.ramfb(), None);
    assert_eq!(g.dev.file(ramfb::FILE), Some(&[0u8; ramfb::LEN][..]));
}

#[test]
fn malformed_ramfb_configurations_are_refused() {
    let bad = [
        ramfb_bytes(RAM, u32::from_le_bytes(*b"RG16"), 800, 600, 0),
        ramfb_bytes(RAM, ramfb::FOURCC_XRGB8888, 0, 600, 0),
        ramfb_bytes(
            RAM,
            ramfb::FOURCC_XRGB8888,
            800,
            ramfb::MAX_DIMENSION + 1,
            0,
        ),
        ramfb_bytes(RAM, ramfb::FOURCC_XRGB8888, 800, 600, 800 * 4 - 1),
        ramfb_bytes(u64::MAX - 100, ramfb::FOURCC_XRGB8888, 800, 600, 0),
        ramfb_bytes(0, ramfb::FOURCC_XRGB8888, 800, 600, 0),
        ramfb_bytes(RAM, ramfb::FOURCC_XRGB8888, u32::MAX, 1, 0),
    ];
    for cfg in bad {
        let mut g = Guest::new();
        let sel = g.select_of(ramfb::FILE);
        g.mem.write(BUF, &cfg).unwrap();
        let control = dma::SELECT | dma::WRITE | (u32::from(sel) << dma::SELECTOR_SHIFT);
        // The write itself succeeds (the item is writable); the device refuses
        // to use the configuration.
        assert_eq!(g.dma(control, ramfb::LEN as u32, BUF), 0);
        assert_eq!(g.dev.ramfb(), None, "{cfg:02x?}");
    }
}

#[test]
fn writes_to_read_only_items_or_past_the_end_set_the_error_bit() {
    let mut g = Guest::new();
    let ramfb_sel = g.select_of(ramfb::FILE);
    let boot = g.select_of(BOOTORDER_FILE);
    let before = g.dev.file(BOOTORDER_FILE).unwrap().to_vec();
    let w = |k: u16| dma::SELECT | dma::WRITE | (u32::from(k) << dma::SELECTOR_SHIFT);
    assert_eq!(g.dma(w(boot), 4, BUF), dma::ERROR);
    assert_eq!(g.dev.file(BOOTORDER_FILE).unwrap(), &before[..]);
    // One byte more than the item: dropped entirely.
    g.mem.write(BUF, &[0x55; 64]).unwrap();
    assert_eq!(g.dma(w(ramfb_sel), ramfb::LEN as u32 + 1, BUF), dma::ERROR);
    assert_eq!(g.dev.file(ramfb::FILE), Some(&[0u8; ramfb::LEN][..]));
    // A write to no item at all.
    assert_eq!(g.dma(w(0x3fff), 4, BUF), dma::ERROR);
    // The data register ignores writes.
    g.select(ramfb_sel);
    g.wr(reg::DATA, AccessSize::Double, u64::MAX).unwrap();
    assert_eq!(g.dev.file(ramfb::FILE), Some(&[0u8; ramfb::LEN][..]));
}

#[test]
fn oversized_and_arch_local_selectors_select_nothing() {
    for sel in [
        0x3fff,
        key::FILE_FIRST + 5,
        key::ARCH_LOCAL,
        0xffff,
        key::WRITE_CHANNEL | 0x3fff,
    ] {
        let mut g = Guest::new();
        g.select(sel);
        assert_eq!(g.rd(reg::DATA, AccessSize::Double).unwrap(), 0, "{sel:#x}");
        g.mem.write(BUF, &[0xaa; 8]).unwrap();
        assert_eq!(g.dma(dma::READ, 8, BUF), 0);
        assert_eq!(g.mem.read_u64(BUF).unwrap(), 0);
    }
    // The write channel bit is ignored: 0x4000 is the signature.
    let mut g = Guest::new();
    g.select(key::WRITE_CHANNEL);
    assert_eq!(g.read_bytes(4), b"QEMU");
}

#[test]
fn dma_outside_guest_ram_fails_cleanly() {
    let mut g = Guest::new();
    let sel = g.select_of("etc/acpi/tables");
    let read = dma::SELECT | dma::READ | (u32::from(sel) << dma::SELECTOR_SHIFT);
    // Buffers outside RAM (below, above, straddling the end, wrapping around).
    let end = RAM + RAM_SIZE as u64;
    for (len, at) in [
        (16, 0x0900_0000),
        (16, end),
        (0x100, end - 0x80),
        (u32::MAX, BUF),
        (16, u64::MAX - 7),
    ] {
        assert_eq!(g.dma(read, len, at), dma::ERROR, "{len:#x} at {at:#x}");
        assert_eq!(
            g.rd(reg::DMA, AccessSize::Double).unwrap().swap_bytes(),
            0x5145_4d55_2043_4647
        );
    }
    // A descriptor outside RAM (e.g. at the hypervisor): nothing happens, the
    // device is still usable and RAM is untouched.
    let before = g.mem.as_bytes().to_vec();
    for desc in [0u64, 0x4000_0000 - 8, u64::MAX - 3, 0x0902_0000, end] {
        g.wr(reg::DMA, AccessSize::Double, desc.swap_bytes())
            .unwrap();
        assert_eq!(g.dev.dma_address, 0);
    }
    assert!(g.mem.as_bytes() == &before[..], "RAM changed");
    // A descriptor straddling the end of RAM: its control field (in RAM) says error.
    g.mem.write(end - 8, &[0; 8]).unwrap();
    g.wr(reg::DMA, AccessSize::Double, (end - 8).swap_bytes())
        .unwrap();
    assert_eq!(g.mem.read_u32(end - 8).unwrap(), dma::ERROR.swap_bytes());
    g.select(key::SIGNATURE);
    assert_eq!(g.read_bytes(4), b"QEMU");
}

#[test]
fn a_32_bit_dma_trigger_takes_two_halves_high_first() {
    let mut g = Guest::new();
    // Descriptor above 4 GiB is not RAM here; use the halves to reach DESC.
    let control = dma::SELECT | dma::READ | (u32::from(key::SIGNATURE) << dma::SELECTOR_SHIFT);
    g.descriptor(DESC, control, 4, BUF);
    g.wr(
        reg::DMA,
        AccessSize::Word,
        u64::from(((DESC >> 32) as u32).swap_bytes()),
    )
    .unwrap();
    g.wr(
        reg::DMA_LOW,
        AccessSize::Word,
        u64::from((DESC as u32).swap_bytes()),
    )
    .unwrap();
    assert_eq!(g.mem.read_u32(DESC).unwrap(), 0);
    let mut b = [0u8; 4];
    g.mem.read(BUF, &mut b).unwrap();
    assert_eq!(&b, b"QEMU");
}

#[test]
fn accesses_the_registers_do_not_take_are_refused() {
    let mut g = Guest::new();
    use AccessSize::*;
    assert_eq!(
        g.wr(reg::SELECTOR, Word, 0),
        Err(MmioError::UnsupportedSize {
            offset: reg::SELECTOR,
            size: Word
        })
    );
    assert!(g.wr(reg::DMA, Half, 0).is_err());
    assert!(g.wr(reg::DMA + 2, Word, 0).is_err());
    assert!(g.rd(reg::DMA_LOW, Double).is_err());
    assert_eq!(g.rd(4, Word), Err(MmioError::Unaligned { offset: 4 }));
    assert_eq!(g.wr(1, Byte, 0), Err(MmioError::Unaligned { offset: 1 }));
    // Any aligned part of the DMA register reads as its part of "QEMU CFG".
    assert_eq!(g.rd(reg::DMA, Byte), Ok(u64::from(b'Q')));
    assert_eq!(
        g.rd(reg::DMA + 6, Half),
        Ok(u64::from(u16::from_le_bytes(*b"FG")))
    );
    assert_eq!(
        g.rd(reg::DMA_LOW, Word),
        Ok(u64::from(u32::from_le_bytes(*b" CFG")))
    );
    assert_eq!(
        g.rd(reg::DMA + 1, Half),
        Err(MmioError::Unaligned {
            offset: reg::DMA + 1
        })
    );
    assert_eq!(g.rd(0xa, Half), Err(MmioError::NoRegister { offset: 0xa }));
    assert_eq!(
        g.rd(reg::WINDOW, Word),
        Err(MmioError::NoRegister {
            offset: reg::WINDOW
        })
    );
    assert_eq!(g.rd(6, Word), Err(MmioError::Unaligned { offset: 6 }));
    assert_eq!(g.rd(reg::SELECTOR, Half), Ok(0));
}

#[test]
fn the_builder_refuses_bad_files() {
    let mut b = FwCfgBuilder::new();
    assert_eq!(b.add_file("", vec![]), Err(FwCfgError::BadName));
    let long: String = core::iter::repeat_n('x', FILE_NAME_LEN).collect();
    assert_eq!(b.add_file(&long, vec![]), Err(FwCfgError::BadName));
    assert_eq!(b.add_file("a\0b", vec![]), Err(FwCfgError::BadName));
    b.add_file("opt/x", vec![1]).unwrap();
    assert_eq!(b.add_file("opt/x", vec![2]), Err(FwCfgError::DuplicateName));
    let name = long[..FILE_NAME_LEN - 1].to_string();
    b.add_file(&name, vec![3]).unwrap();
    let d = b.build();
    assert_eq!(d.file(&name), Some(&[3u8][..]));
}

fn probe(d: &mut FwCfg) -> (Option<RamfbConfig>, Vec<u64>) {
    let mut mem = VecMemory::new(RAM, 0x1000);
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut irq,
    };
    let data = (0..4)
        .map(|_| d.read(&mut ctx, reg::DATA, AccessSize::Double).unwrap())
        .collect();
    (d.ramfb(), data)
}

vdev::save_restore_tests!(
    saved_state,
    make: device,
    drive: |d: &mut FwCfg| {
        let mut g = Guest { dev: d.clone(), mem: VecMemory::new(RAM, RAM_SIZE) };
        let sel = g.select_of(ramfb::FILE);
        let cfg = ramfb_bytes(RAM + 0x8_0000, ramfb::FOURCC_XRGB8888, 640, 480, 4096);
        g.mem.write(BUF, &cfg).unwrap();
        let control = dma::SELECT | dma::WRITE | (u32::from(sel) << dma::SELECTOR_SHIFT);
        assert_eq!(g.dma(control, ramfb::LEN as u32, BUF), 0);
        // Leave the tables selected part-way through, and a DMA high half set.
        let tables = g.select_of("etc/acpi/tables");
        g.select(tables);
        g.read_bytes(12);
        g.wr(reg::DMA, AccessSize::Word, 0x1200_0000).unwrap();
        *d = g.dev;
    },
    probe: probe,
);
