use super::*;
use alloc::string::String;
use registry::{BootSpec, DeviceModel, DiskSpec, MemDisk, Policy, VmSpec};

const MEM: u64 = 16 << 20; // 8 blocks

#[derive(Clone)]
struct Ram(Vec<Option<Vec<u8>>>);

/// `RamIo` over a disk and a `Ram`: transfers are plain copies, done at once;
/// `changed` (when set) says which pages changed since the base, per block.
struct Io<'a> {
    disk: &'a mut dyn BlockBackend,
    ram: Ram,
    changed: Option<Vec<PageBits>>,
    next: u64,
    written: u64,
    /// Bytes of RAM data written when each flush was started.
    flushes: Vec<u64>,
}

impl<'a> Io<'a> {
    fn new(disk: &'a mut dyn BlockBackend, ram: Ram) -> Self {
        Io {
            disk,
            ram,
            changed: None,
            next: 0,
            written: 0,
            flushes: Vec::new(),
        }
    }
}

impl RamImage for Io<'_> {
    fn blocks(&self) -> u32 {
        self.ram.blocks()
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.ram.block(b)
    }
}

impl RamIo for Io<'_> {
    fn disk(&mut self) -> &mut dyn BlockBackend {
        &mut *self.disk
    }
    fn start_write(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError> {
        let blk = self.ram.0[b as usize].as_ref().expect("populated");
        self.disk.write_at(at, &blk[off..off + len])?;
        self.written += len as u64;
        self.next += 1;
        Ok(self.next)
    }
    fn start_read(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError> {
        // Stale bytes where the zero pages go: `end_block` must clear them.
        let blk = self.ram.0[b as usize].get_or_insert_with(|| vec![0xee; BLOCK_SIZE]);
        self.disk.read_at(at, &mut blk[off..off + len])?;
        self.next += 1;
        Ok(self.next)
    }
    fn start_flush(&mut self) -> Result<(), BlockError> {
        self.flushes.push(self.written);
        self.disk.flush()
    }
    fn wait(&mut self, _ticket: u64) -> Result<(), BlockError> {
        Ok(())
    }
    fn restored(&self, b: u32) -> &[u8] {
        self.ram.0[b as usize]
            .as_deref()
            .unwrap_or(&[0xee; BLOCK_SIZE][..])
    }
    fn end_block(&mut self, b: u32, zero: &ZeroMap) {
        RamSink::end_block(&mut self.ram, b, zero)
    }
    fn changed(&mut self, b: u32) -> PageBits {
        match &mut self.changed {
            Some(c) => core::mem::take(&mut c[b as usize]),
            None => ALL_PAGES,
        }
    }
}

/// Suspends `ram` (no base).
fn suspend(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    input: &SuspendInput<'_>,
    ram: &Ram,
    crc: CrcAppend,
) -> Result<SuspendReport, SuspendError> {
    super::suspend(&mut Io::new(disk, ram.clone()), reg, input, None, crc)
}

impl Ram {
    fn new() -> Ram {
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..MEM as usize / BLOCK_SIZE).map(|_| None).collect();
        // Block 0: a few pages with data; block 3: all zero but touched; block 5:
        // every page has data (a pattern).
        let mut b0 = vec![0u8; BLOCK_SIZE];
        b0[0] = 1;
        b0[7 * PAGE_SIZE + 5] = 0x42;
        b0[BLOCK_SIZE - 1] = 0xff;
        blocks[0] = Some(b0);
        blocks[3] = Some(vec![0u8; BLOCK_SIZE]);
        blocks[5] = Some(
            (0..BLOCK_SIZE)
                .map(|i| (i * 7 + i / 4096) as u8 | 1)
                .collect(),
        );
        Ram(blocks)
    }
}

impl RamImage for Ram {
    fn blocks(&self) -> u32 {
        self.0.len() as u32
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.0[b as usize].as_deref()
    }
}

impl RamSink for Ram {
    fn write_page(&mut self, b: u32, page: u32, data: &[u8]) {
        // Stale bytes where the zero pages go: `end_block` must clear them.
        let blk = self.0[b as usize].get_or_insert_with(|| vec![0xee; BLOCK_SIZE]);
        let at = page as usize * PAGE_SIZE;
        blk[at..at + PAGE_SIZE].copy_from_slice(data);
    }
    fn end_block(&mut self, b: u32, zero: &ZeroMap) {
        let blk = self.0[b as usize].get_or_insert_with(|| vec![0xee; BLOCK_SIZE]);
        for p in (0..PAGES_PER_BLOCK).filter(|&p| zero.is_zero(p)) {
            blk[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(0);
        }
    }
}

fn setup() -> (MemDisk, Registry, Uuid) {
    setup_sized(32 << 20)
}

/// A disk with room for the spare slots.
fn setup_big() -> (MemDisk, Registry, Uuid) {
    setup_sized(96 << 20)
}

fn setup_sized(bytes: usize) -> (MemDisk, Registry, Uuid) {
    let mut disk = MemDisk::new(bytes);
    let mut reg = Registry::format(&mut disk, Uuid::from_random_bytes([1; 16])).unwrap();
    let spec = VmSpec {
        name: String::from("linux"),
        vcpus: 2,
        memory_bytes: MEM,
        device_model: DeviceModel::LinuxDt,
        boot: BootSpec::Linux {
            kernel_capacity: 1 << 20,
            initrd_capacity: None,
            cmdline: String::from("console=ttyAMA0"),
        },
        disks: vec![DiskSpec {
            size: 1 << 20,
            read_only: false,
        }],
        tpm_nv_size: 64 << 10,
        policy: Policy::default(),
    };
    let id = reg
        .add_vm(&mut disk, Uuid::from_random_bytes([2; 16]), &spec)
        .unwrap();
    (disk, reg, id)
}

fn fingerprint(id: Uuid) -> Fingerprint {
    Fingerprint {
        uuid: id.0,
        vcpus: 2,
        memory_bytes: MEM,
        ram_ipa: 0x4000_0000,
        devices_crc: format::device_layout_crc(
            [("pl011", 0x900_0000u64), ("vgic", 0x800_0000)].into_iter(),
        ),
    }
}

fn vcpus(seed: u64) -> Vec<VcpuState> {
    (0..2)
        .map(|i| {
            let mut v = VcpuState::default();
            v.x[0] = seed + i;
            v.pc = 0xffff_0000_0000_1000 + i * 4;
            v.el1.cntv_cval = 1234;
            v.power = if i == 0 || seed.is_multiple_of(2) {
                Power::On
            } else {
                Power::Off
            };
            v
        })
        .collect()
}

fn devices(seed: u8) -> Vec<DeviceState> {
    vec![
        DeviceState {
            name: String::from("pl011"),
            base: 0x900_0000,
            blob: vec![seed; 40],
        },
        DeviceState {
            name: String::from("vgic"),
            base: 0x800_0000,
            blob: vec![seed ^ 0x55; 300],
        },
    ]
}

const FREQ: u64 = 62_500_000;

fn input<'a>(id: Uuid, v: &'a [VcpuState], d: &'a [DeviceState], vcount: u64) -> SuspendInput<'a> {
    SuspendInput {
        uuid: id,
        fingerprint: fingerprint(id),
        time: TimeState {
            cntfrq: FREQ,
            guest_vcount: vcount,
            host_pcount: vcount * 2,
        },
        vcpus: v,
        devices: d,
    }
}

/// Resumes from `disk` as a boot would: `Ok((vcount, vcpus, ram))` or why not.
fn boot(disk: &mut dyn BlockBackend) -> Result<(u64, Vec<VcpuState>, Ram), ColdReason> {
    let reg = Registry::open(disk).expect("the registry always opens");
    let rec = reg.vms()[0].clone();
    let blob = decide(&rec)?;
    let st = open_saved(
        disk,
        blob,
        &fingerprint(rec.uuid),
        FREQ,
        crate::crc32c_append,
    )?;
    let mut io = Io::new(disk, Ram((0..8).map(|_| None).collect()));
    restore_ram(&mut io, &st)?;
    Ok((st.header.time.guest_vcount, st.vcpus, io.ram))
}

#[test]
fn suspend_then_resume_gives_back_every_byte_and_register() {
    let (mut disk, mut reg, id) = setup();
    let ram = Ram::new();
    let (v, d) = (vcpus(10), devices(3));
    let rep = suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 777),
        &ram,
        crate::crc32c_append,
    )
    .unwrap();
    assert_eq!(rep.blocks, 3);
    assert_eq!(rep.data_pages, 3 + PAGES_PER_BLOCK as u64);
    assert_eq!(rep.zero_pages, 2 * PAGES_PER_BLOCK as u64 - 3);
    let (vcount, back, got) = boot(&mut disk).unwrap();
    assert_eq!(vcount, 777);
    assert_eq!(back, v);
    assert_eq!(got.0, ram.0);
    // Consumed: the next boot is cold.
    consume(&mut disk, &mut reg, id).unwrap();
    assert_eq!(boot(&mut disk).err(), Some(ColdReason::NoSavedState));
}

#[test]
fn policy_and_configuration_decide_cold_boots() {
    let (mut disk, mut reg, id) = setup();
    let (v, d) = (vcpus(10), devices(3));
    suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 1),
        &Ram::new(),
        crate::crc32c_append,
    )
    .unwrap();
    let rec = reg.vm(id).unwrap().clone();
    let blob = decide(&rec).unwrap();
    let mut other = fingerprint(id);
    other.vcpus = 1;
    assert_eq!(
        open_saved(&mut disk, blob, &other, FREQ, crate::crc32c_append).err(),
        Some(ColdReason::ConfigMismatch("vCPU count"))
    );
    other = fingerprint(id);
    other.devices_crc ^= 1;
    assert_eq!(
        open_saved(&mut disk, blob, &other, FREQ, crate::crc32c_append).err(),
        Some(ColdReason::ConfigMismatch("device layout"))
    );
    assert!(matches!(
        open_saved(
            &mut disk,
            blob,
            &fingerprint(id),
            FREQ / 2,
            crate::crc32c_append
        ),
        Err(ColdReason::CounterFrequency { .. })
    ));
    let mut p = rec.policy;
    p.resume_on_boot = false;
    reg.set_policy(&mut disk, id, p).unwrap();
    assert_eq!(
        decide(reg.vm(id).unwrap()).err(),
        Some(ColdReason::PolicyDisallows)
    );
}

#[test]
fn a_flipped_byte_anywhere_in_the_image_is_detected() {
    let (mut disk, mut reg, id) = setup();
    let (v, d) = (vcpus(10), devices(3));
    // Small RAM so every byte can be flipped in turn.
    let mut ram = Ram((0..8).map(|_| None).collect());
    let mut b = vec![0u8; BLOCK_SIZE];
    b[3 * PAGE_SIZE + 9] = 5;
    ram.0[2] = Some(b);
    suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 5),
        &ram,
        crate::crc32c_append,
    )
    .unwrap();
    let blob = reg.vm(id).unwrap().saved_state;
    assert!(boot(&mut disk).is_ok());
    // Every byte of the header block, the small sections and the RAM index; every
    // 61st byte of the one data page's place in block 2's slot (each flip is undone
    // before the next). The places of zero pages are never read: a flip there
    // changes nothing.
    let st = {
        let r = Registry::open(&mut disk).unwrap();
        let _ = r;
        open_saved(
            &mut disk,
            blob,
            &fingerprint(id),
            FREQ,
            crate::crc32c_append,
        )
        .unwrap()
        .header
    };
    let data = st.sections[SEC_RAM_DATA];
    assert_eq!(data.len, BLOCK_SIZE as u64);
    let page = data.offset + 3 * PAGE_SIZE as u64..data.offset + 4 * PAGE_SIZE as u64;
    for off in [
        data.offset,
        data.offset + 5 * PAGE_SIZE as u64 + 7,
        data.end() - 1,
    ] {
        let at = (blob.extent.start + off) as usize;
        disk.bytes_mut()[at] ^= 0x10;
        let (_, _, got) = boot(&mut disk).unwrap();
        disk.bytes_mut()[at] ^= 0x10;
        assert_eq!(got.0, ram.0, "a zero page's place at {off}");
    }
    let offsets = (0..blob.size)
        .filter(|&o| o < data.offset || o >= data.end() || (page.contains(&o) && o % 61 == 0));
    for off in offsets {
        let at = (blob.extent.start + off) as usize;
        disk.bytes_mut()[at] ^= 0x10;
        let r = boot(&mut disk);
        disk.bytes_mut()[at] ^= 0x10;
        assert!(
            matches!(r, Err(ColdReason::Format(_) | ColdReason::StateRefused(..))),
            "byte {off} of {}: {:?}",
            blob.size,
            r.err()
        );
    }
}

/// A disk that loses power after `budget` writes: the write that hits the cut is
/// torn (its first half lands), later ones are lost.
struct CutDisk {
    inner: MemDisk,
    budget: usize,
}

impl BlockBackend for CutDisk {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        match self.budget {
            0 => Err(BlockError::Io),
            1 => {
                self.budget = 0;
                let half = (data.len() / 2).next_multiple_of(512).min(data.len());
                let _ = self.inner.write_at(offset, &data[..half]);
                Err(BlockError::Io)
            }
            _ => {
                self.budget -= 1;
                self.inner.write_at(offset, data)
            }
        }
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.budget == 0 {
            return Err(BlockError::Io);
        }
        self.inner.flush()
    }
}

struct Counting(MemDisk, usize);

impl BlockBackend for Counting {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.1 += 1;
        self.0.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.flush()
    }
}

#[test]
fn a_suspend_starts_a_flush_after_every_flush_every_bytes_of_ram_data() {
    let (mut disk, mut reg, id) = setup();
    let mut ram = Ram::new();
    ram.0[6] = Some(vec![0x77; BLOCK_SIZE]);
    let (v, d) = (vcpus(1), devices(1));
    let mut io = Io::new(&mut disk, ram.clone());
    super::suspend(
        &mut io,
        &mut reg,
        &input(id, &v, &d, 1),
        None,
        crate::crc32c_append,
    )
    .unwrap();
    // Block 0's three pages, then blocks 5 and 6 whole: one flush after each
    // whole block (each is at least FLUSH_EVERY here), none before.
    let (three, block) = (3 * PAGE_SIZE as u64, BLOCK_SIZE as u64);
    assert!(FLUSH_EVERY <= block);
    assert_eq!(io.flushes, vec![three + block, three + 2 * block]);
    // The image is whole.
    let (_, vs, got) = boot(&mut disk).unwrap();
    assert_eq!((vs, got.0), (v, ram.0));
}

#[test]
fn a_power_cut_at_any_write_leaves_the_old_image_none_or_the_new_one() {
    let (mut disk, mut reg, id) = setup();
    let ram = Ram::new();
    let (v1, d1) = (vcpus(10), devices(3));
    // An earlier image that was never resumed (both the old and the new one are
    // complete images the cut may leave).
    suspend(
        &mut disk,
        &mut reg,
        &input(id, &v1, &d1, 100),
        &ram,
        crate::crc32c_append,
    )
    .unwrap();
    let before = disk.bytes().to_vec();
    let (v2, d2) = (vcpus(20), devices(9));
    let mut ram2 = Ram::new();
    ram2.0[6] = Some(vec![0x77; BLOCK_SIZE]);
    let mut count = Counting(MemDisk::from_bytes(before.clone()), 0);
    let mut r = Registry::open(&mut count).unwrap();
    suspend(
        &mut count,
        &mut r,
        &input(id, &v2, &d2, 200),
        &ram2,
        crate::crc32c_append,
    )
    .unwrap();
    let writes = count.1;
    assert!(writes > 6, "{writes} writes");
    let (mut old, mut none, mut new) = (0, 0, 0);
    // `budget` writes: the last of them torn; `writes + 1` lets every write land.
    for budget in 0..=writes + 1 {
        let mut cut = CutDisk {
            inner: MemDisk::from_bytes(before.clone()),
            budget,
        };
        let mut r = Registry::open(&mut cut).unwrap();
        let done = suspend(
            &mut cut,
            &mut r,
            &input(id, &v2, &d2, 200),
            &ram2,
            crate::crc32c_append,
        );
        assert_eq!(done.is_ok(), budget > writes, "budget {budget}");
        match boot(&mut cut.inner) {
            Ok((100, v, got)) => {
                assert_eq!((v, got.0), (v1.clone(), ram.0.clone()));
                old += 1;
            }
            Ok((200, v, got)) => {
                assert_eq!((v, got.0), (v2.clone(), ram2.0.clone()));
                new += 1;
            }
            Ok((n, ..)) => panic!("resumed an image that was never written ({n})"),
            Err(ColdReason::NoSavedState) => none += 1,
            Err(e) => panic!("budget {budget}: a partial image was offered: {e}"),
        }
    }
    // A cut that tears the last (registry) write may still land it whole: new >= 1.
    assert!(old > 0 && none > 0 && new >= 1, "{old} {none} {new}");
}

/// Resumes like `boot`, also returning the base for an incremental suspend.
fn boot_base(disk: &mut dyn BlockBackend) -> (Vec<VcpuState>, Ram, Base) {
    let reg = Registry::open(disk).unwrap();
    let rec = reg.vms()[0].clone();
    let st = open_saved(
        disk,
        decide(&rec).unwrap(),
        &fingerprint(rec.uuid),
        FREQ,
        crate::crc32c_append,
    )
    .unwrap();
    let mut io = Io::new(disk, Ram((0..8).map(|_| None).collect()));
    restore_ram(&mut io, &st).unwrap();
    let base = st.base();
    (st.vcpus, io.ram, base)
}

fn set(bits: &mut PageBits, p: usize) {
    bits[p / 64] |= 1 << (p % 64);
}

/// After a resume: a page rewritten, a data page zeroed, a zero page given data,
/// a block populated; which pages changed, as dirty logging would say.
fn change(ram: &mut Ram) -> Vec<PageBits> {
    let mut changed = vec![[0u64; 8]; 8];
    let b0 = ram.0[0].as_mut().unwrap();
    b0[7 * PAGE_SIZE + 5] = 0; // page 7 now zero
    set(&mut changed[0], 7);
    b0[100 * PAGE_SIZE + 1] = 9; // page 100 now has data
    set(&mut changed[0], 100);
    set(&mut changed[0], 200); // written, still zero
    let b5 = ram.0[5].as_mut().unwrap();
    b5[3 * PAGE_SIZE] ^= 0xff;
    set(&mut changed[5], 3);
    ram.0[6] = Some(vec![0x31; BLOCK_SIZE]); // new: every page
    changed
}

#[test]
fn a_second_suspend_writes_only_changed_pages_and_resumes_exactly() {
    let (mut disk, mut reg, id) = setup_big();
    let (v, d) = (vcpus(10), devices(3));
    let first = suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 1),
        &Ram::new(),
        crate::crc32c_append,
    )
    .unwrap();
    let (_, mut ram, base) = boot_base(&mut disk);
    consume(&mut disk, &mut reg, id).unwrap();
    let changed = change(&mut ram);
    let (v2, d2) = (vcpus(20), devices(9));
    let mut io = Io::new(&mut disk, ram.clone());
    io.changed = Some(changed);
    let second = super::suspend(
        &mut io,
        &mut reg,
        &input(id, &v2, &d2, 2),
        Some(&base),
        crate::crc32c_append,
    )
    .unwrap();
    // Pages 100 of block 0 and 3 of block 5, and block 6 whole.
    assert_eq!(io.written, (2 + PAGES_PER_BLOCK) as u64 * PAGE_SIZE as u64);
    assert_eq!(second.blocks_written, 3);
    assert!(second.written < first.written);
    let (vcount, back, got) = boot(&mut disk).unwrap();
    assert_eq!((vcount, back), (2, v2.clone()));
    assert_eq!(got.0, ram.0);
    // Without the base (or with one of another extent) everything is written.
    let (_, ram3, _) = boot_base(&mut disk);
    let mut io = Io::new(&mut disk, ram3);
    let mut moved = base.clone();
    moved.extent.start += 4096;
    super::suspend(
        &mut io,
        &mut reg,
        &input(id, &v2, &d2, 3),
        Some(&moved),
        crate::crc32c_append,
    )
    .unwrap();
    assert_eq!(
        io.written,
        (3 + 2 * PAGES_PER_BLOCK) as u64 * PAGE_SIZE as u64
    );
}

#[test]
fn a_disk_snapshot_between_resume_and_suspend_leaves_the_base_and_dirty_log_alone() {
    let (mut disk, mut reg, id) = setup_big();
    let (v, d) = (vcpus(10), devices(3));
    suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 1),
        &Ram::new(),
        crate::crc32c_append,
    )
    .unwrap();
    let (_, mut ram, base) = boot_base(&mut disk);
    consume(&mut disk, &mut reg, id).unwrap();
    let changed = change(&mut ram);
    // A disk snapshot of the changed RAM, through the same writer.
    let (v2, d2) = (vcpus(20), devices(9));
    let mut io = Io::new(&mut disk, ram.clone());
    io.changed = Some(changed.clone());
    let (snap, _log) = crate::snapshot_disk::take(
        &mut io,
        &mut reg,
        "s",
        &input(id, &v2, &d2, 2),
        64 << 10,
        1,
        crate::crc32c_append,
    )
    .unwrap();
    // Every page with data written (no base), the dirty log not asked.
    assert_eq!(io.written, snap.image.data_pages * PAGE_SIZE as u64);
    assert_eq!(io.changed.as_ref(), Some(&changed));
    let image = reg.vm(id).unwrap().snapshots[0].image.extent;
    assert!(image.start >= base.extent.end().unwrap() || image.end().unwrap() <= base.extent.start);
    // The incremental suspend after it still writes only what changed...
    io.written = 0;
    super::suspend(
        &mut io,
        &mut reg,
        &input(id, &v2, &d2, 3),
        Some(&base),
        crate::crc32c_append,
    )
    .unwrap();
    assert_eq!(io.written, (2 + PAGES_PER_BLOCK) as u64 * PAGE_SIZE as u64);
    // ...and resumes exactly, and the snapshot's image restores the same RAM.
    let (vcount, back, got) = boot(&mut disk).unwrap();
    assert_eq!((vcount, back), (3, v2.clone()));
    assert_eq!(got.0, ram.0);
    let reg = Registry::open(&mut disk).unwrap();
    let s = crate::snapshot_disk::open(
        &mut disk,
        &reg,
        id,
        "s",
        &fingerprint(id),
        FREQ,
        crate::crc32c_append,
    )
    .unwrap();
    let mut io = Io::new(&mut disk, Ram((0..8).map(|_| None).collect()));
    restore_ram(&mut io, &s.image).unwrap();
    assert_eq!(io.ram.0, ram.0);
    assert_eq!(s.image.header.time.guest_vcount, 2);
}

#[test]
fn a_power_cut_during_an_incremental_suspend_leaves_no_image_or_the_new_one() {
    let (mut disk, mut reg, id) = setup_big();
    let (v, d) = (vcpus(10), devices(3));
    suspend(
        &mut disk,
        &mut reg,
        &input(id, &v, &d, 1),
        &Ram::new(),
        crate::crc32c_append,
    )
    .unwrap();
    let (_, mut ram, base) = boot_base(&mut disk);
    consume(&mut disk, &mut reg, id).unwrap();
    let changed = change(&mut ram);
    let before = disk.bytes().to_vec();
    let (v2, d2) = (vcpus(20), devices(9));
    let (mut none, mut new) = (0, 0);
    for budget in 0..40 {
        let mut cut = CutDisk {
            inner: MemDisk::from_bytes(before.clone()),
            budget,
        };
        let mut r = Registry::open(&mut cut).unwrap();
        let mut io = Io::new(&mut cut, ram.clone());
        io.changed = Some(changed.clone());
        let done = super::suspend(
            &mut io,
            &mut r,
            &input(id, &v2, &d2, 2),
            Some(&base),
            crate::crc32c_append,
        );
        match boot(&mut cut.inner) {
            Ok((2, back, got)) => {
                assert_eq!((back, got.0), (v2.clone(), ram.0.clone()));
                new += 1;
            }
            Ok((n, ..)) => panic!("budget {budget}: resumed image {n}"),
            Err(ColdReason::NoSavedState) => {
                assert!(done.is_err(), "budget {budget}");
                none += 1
            }
            Err(e) => panic!("budget {budget}: a partial image was offered: {e}"),
        }
    }
    assert!(none > 3 && new > 0, "{none} {new}");
}
