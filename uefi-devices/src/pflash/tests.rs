//! The bank driven as EDK2's VirtNorFlashDxe drives it (32-bit accesses, every
//! command doubled for the two x16 devices), and out of sequence.

use super::*;
use vdev::{NullInterrupts, VecMemory};

const BLOCK: u64 = 0x1_0000;
const SIZE: usize = 4 * BLOCK as usize;

/// A store that keeps every committed image, and can be made to fail.
#[derive(Default, Clone)]
struct MemStore {
    commits: Vec<(Vec<u8>, Vec<core::ops::Range<usize>>)>,
    fail: bool,
}

impl FlashStore for MemStore {
    fn commit(
        &mut self,
        image: &[u8],
        dirty: &[core::ops::Range<usize>],
    ) -> Result<(), StoreError> {
        if self.fail {
            return Err(StoreError::Io);
        }
        self.commits.push((image.to_vec(), dirty.to_vec()));
        Ok(())
    }
}

fn initial() -> Vec<u8> {
    pattern(SIZE)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 | 0x80).collect()
}

/// Erase blocks of the bank the saved-state tests use: the smallest a bank may
/// have, so its blob (which holds the image) stays small enough for the
/// generic tests' every-prefix and every-bit passes.
const SAVE_BLOCK: u64 = crate::pflash::BANK_BUFFER;

/// A two-block bank for the saved-state tests.
fn small_bank() -> CfiFlash<MemStore> {
    let image = pattern(2 * SAVE_BLOCK as usize);
    CfiFlash::new(image, SAVE_BLOCK, false, MemStore::default()).unwrap()
}

fn bank(read_only: bool) -> CfiFlash<MemStore> {
    CfiFlash::new(initial(), BLOCK, read_only, MemStore::default()).unwrap()
}

/// EDK2's CREATE_DUAL_CMD.
fn dual(c: u16) -> u64 {
    (u64::from(c) << 16) | u64::from(c)
}

fn rd(f: &mut CfiFlash<MemStore>, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
    let mut mem = VecMemory::new(0, 0);
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut irq,
    };
    f.read(&mut ctx, offset, size)
}

fn wr(f: &mut CfiFlash<MemStore>, offset: u64, size: AccessSize, v: u64) -> Result<(), MmioError> {
    let mut mem = VecMemory::new(0, 0);
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut irq,
    };
    f.write(&mut ctx, offset, size, v)
}

fn command(f: &mut CfiFlash<MemStore>, offset: u64, c: u8) {
    wr(f, offset, AccessSize::Word, dual(u16::from(c))).unwrap();
}

fn status(f: &mut CfiFlash<MemStore>) -> u64 {
    command(f, 0, cmd::READ_STATUS);
    rd(f, 0, AccessSize::Word).unwrap()
}

fn word(f: &CfiFlash<MemStore>, offset: u64) -> u32 {
    let o = offset as usize;
    u32::from_le_bytes(f.image()[o..o + 4].try_into().unwrap())
}

/// EDK2's buffered write of `words` at `offset`.
fn buffered(f: &mut CfiFlash<MemStore>, offset: u64, words: &[u32]) {
    command(f, offset, cmd::BUFFERED_PROGRAM);
    assert_eq!(rd(f, offset, AccessSize::Word).unwrap(), dual(sr::READY));
    wr(f, offset, AccessSize::Word, dual(words.len() as u16 - 1)).unwrap();
    for (i, &w) in words.iter().enumerate() {
        wr(f, offset + 4 * i as u64, AccessSize::Word, u64::from(w)).unwrap();
    }
    command(f, offset, cmd::CONFIRM);
}

/// QEMU `virt`'s variable-store bank as this hypervisor gives it: the 64 MiB
/// window, of which the first four 256 KiB blocks are backed.
fn virt_vars_bank(image: Vec<u8>) -> CfiFlash<MemStore> {
    CfiFlash::with_window(
        image,
        VIRT_BANK_SIZE,
        VIRT_BLOCK_SIZE,
        false,
        MemStore::default(),
    )
    .unwrap()
}

#[test]
fn cfi_query_and_identifier_describe_virt_flash() {
    // A fully backed 64 MiB bank and a 64 MiB window backed for 1 MiB describe
    // the same device.
    let full = CfiFlash::new(
        vec![0xffu8; VIRT_BANK_SIZE as usize],
        VIRT_BLOCK_SIZE,
        false,
        MemStore::default(),
    )
    .unwrap();
    let windowed = virt_vars_bank(vec![0xffu8; 4 * VIRT_BLOCK_SIZE as usize]);
    assert_eq!(windowed.window(), VIRT_BANK_SIZE);
    for f in [full, windowed] {
        describes_virt_flash(f);
    }
}

fn describes_virt_flash(mut f: CfiFlash<MemStore>) {
    command(&mut f, 0x55 * 4, cmd::CFI_QUERY);
    assert!(!f.read_array_mode());
    let q = |f: &mut CfiFlash<MemStore>, i: u64| rd(f, i * 4, AccessSize::Word).unwrap();
    assert_eq!(
        [q(&mut f, 0x10), q(&mut f, 0x11), q(&mut f, 0x12)],
        [b'Q', b'R', b'Y'].map(|c| dual(c.into()))
    );
    assert_eq!(q(&mut f, 0x13), dual(1), "Intel command set");
    // 32 MiB per device, 2 KiB write buffer, 256 blocks of 128 KiB per device.
    assert_eq!(q(&mut f, 0x27), dual(25));
    assert_eq!(q(&mut f, 0x2a), dual(11));
    assert_eq!(q(&mut f, 0x2c), dual(1));
    assert_eq!((q(&mut f, 0x2d), q(&mut f, 0x2e)), (dual(0xff), dual(0)));
    assert_eq!((q(&mut f, 0x2f), q(&mut f, 0x30)), (dual(0), dual(2)));
    // A 16-bit read sees one device.
    assert_eq!(
        rd(&mut f, 0x10 * 4 + 2, AccessSize::Half).unwrap(),
        u64::from(b'Q')
    );
    command(&mut f, 0, cmd::READ_ID);
    assert_eq!(q(&mut f, 0), dual(MANUFACTURER_INTEL));
    assert_eq!(q(&mut f, 1), dual(DEVICE_ID));
    assert_eq!(q(&mut f, 2), 0, "block 0 unlocked");
    command(&mut f, 0, cmd::READ_ARRAY);
    assert!(f.read_array_mode());
    assert_eq!(rd(&mut f, 0, AccessSize::Double).unwrap(), u64::MAX);
}

/// The 64 MiB window backed for 1 MiB: the whole window answers, the backed head
/// holds the image, the rest reads as erased flash in read-array mode and as the
/// mode says otherwise; the window ends at 64 MiB.
#[test]
fn a_window_beyond_its_backing_reads_as_erased_flash() {
    let backed = 4 * VIRT_BLOCK_SIZE;
    let mut f = virt_vars_bank(pattern(backed as usize));
    assert_eq!(f.image().len() as u64, backed);
    let head = u32::from_le_bytes(pattern(4)[..].try_into().unwrap());
    assert_eq!(rd(&mut f, 0, AccessSize::Word).unwrap(), u64::from(head));
    let last = u64::from(word(&f, backed - 4));
    assert_eq!(rd(&mut f, backed - 4, AccessSize::Word).unwrap(), last);
    for (offset, size) in [
        (backed, AccessSize::Double),
        (backed + 0x1234 * 4, AccessSize::Word),
        (VIRT_BANK_SIZE / 2 + 2, AccessSize::Half),
        (VIRT_BANK_SIZE - 1, AccessSize::Byte),
        (VIRT_BANK_SIZE - 8, AccessSize::Double),
    ] {
        let ones = u64::MAX >> (64 - 8 * size.bytes());
        assert_eq!(rd(&mut f, offset, size).unwrap(), ones, "{offset:#x}");
    }
    for offset in [VIRT_BANK_SIZE, VIRT_BANK_SIZE + 4] {
        assert_eq!(
            rd(&mut f, offset, AccessSize::Word),
            Err(MmioError::NoRegister { offset })
        );
        assert_eq!(
            wr(&mut f, offset, AccessSize::Word, 0),
            Err(MmioError::NoRegister { offset })
        );
    }
    // Commands work anywhere in the window; status and identifier reads there
    // answer as in the backed head (the CFI table sits at the bank's start).
    let far = VIRT_BANK_SIZE - VIRT_BLOCK_SIZE;
    command(&mut f, far, cmd::READ_STATUS);
    assert_eq!(
        rd(&mut f, far + 8, AccessSize::Word).unwrap(),
        dual(sr::READY)
    );
    command(&mut f, far, cmd::READ_ID);
    assert_eq!(
        rd(&mut f, far, AccessSize::Word).unwrap(),
        dual(MANUFACTURER_INTEL)
    );
    assert_eq!(
        rd(&mut f, far + ID_BLOCK_LOCK * 4, AccessSize::Word).unwrap(),
        0,
        "unlocked"
    );
    command(&mut f, far, cmd::CFI_QUERY);
    assert_eq!(
        rd(&mut f, 0x10 * 4, AccessSize::Word).unwrap(),
        dual(b'Q'.into())
    );
    command(&mut f, far, cmd::READ_ARRAY);
    assert_eq!(
        rd(&mut f, far, AccessSize::Word).unwrap(),
        u64::from(u32::MAX)
    );
    assert_eq!(f.image(), &pattern(backed as usize)[..]);
    assert!(f.store().commits.is_empty());
}

/// Program and erase beyond the backing fail with the operation's failure bit
/// (no lock or sequence error), change nothing and commit nothing; the backed
/// head still programs after the status is cleared.
#[test]
fn program_and_erase_beyond_the_backing_are_refused() {
    let backed = 4 * VIRT_BLOCK_SIZE;
    let init = pattern(backed as usize);
    let mut f = virt_vars_bank(init.clone());
    let beyond = backed + 0x100;
    // Word program.
    command(&mut f, beyond, cmd::WORD_PROGRAM);
    wr(&mut f, beyond, AccessSize::Word, 0).unwrap();
    assert_eq!(
        rd(&mut f, beyond, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::PROGRAM_ERROR)
    );
    command(&mut f, 0, cmd::CLEAR_STATUS);
    // Buffered program, as EDK2 writes.
    buffered(&mut f, beyond, &[0, 0, 0, 0]);
    assert_eq!(status(&mut f), dual(sr::READY | sr::PROGRAM_ERROR));
    command(&mut f, 0, cmd::CLEAR_STATUS);
    // Block erase of the last block of the window, and of the first unbacked.
    for block in [VIRT_BANK_SIZE - VIRT_BLOCK_SIZE, backed] {
        command(&mut f, block, cmd::BLOCK_ERASE);
        command(&mut f, block, cmd::CONFIRM);
        assert_eq!(status(&mut f), dual(sr::READY | sr::ERASE_ERROR));
        command(&mut f, 0, cmd::CLEAR_STATUS);
    }
    // Unlocking there is accepted, and changes nothing either.
    command(&mut f, beyond, cmd::LOCK_SETUP);
    command(&mut f, beyond, cmd::CONFIRM);
    command(&mut f, beyond, cmd::WORD_PROGRAM);
    wr(&mut f, beyond, AccessSize::Word, 0).unwrap();
    assert_eq!(status(&mut f), dual(sr::READY | sr::PROGRAM_ERROR));
    command(&mut f, 0, cmd::CLEAR_STATUS);
    assert!(f.read_array_mode());
    assert_eq!(
        rd(&mut f, beyond, AccessSize::Word).unwrap(),
        u64::from(u32::MAX)
    );
    assert_eq!(f.image(), &init[..]);
    assert!(f.store().commits.is_empty(), "nothing to commit");
    // The last backed word still programs.
    command(&mut f, backed - 4, cmd::WORD_PROGRAM);
    wr(&mut f, backed - 4, AccessSize::Word, 0).unwrap();
    assert_eq!(status(&mut f), dual(sr::READY));
    command(&mut f, 0, cmd::READ_ARRAY);
    assert_eq!(word(&f, backed - 4), 0);
    assert_eq!(f.store().commits.len(), 1);
}

#[test]
fn a_window_must_hold_its_image_in_whole_blocks() {
    let image = || vec![0xffu8; 2 * BLOCK as usize];
    let store = MemStore::default;
    for window in [BLOCK, 2 * BLOCK + 4, 3 * BLOCK - BANK_BUFFER] {
        assert_eq!(
            CfiFlash::with_window(image(), window, BLOCK, false, store()).err(),
            Some(GeometryError::Invalid),
            "{window:#x}"
        );
    }
    assert!(CfiFlash::with_window(image(), 3 * BLOCK, BLOCK, false, store()).is_ok());
}

/// A bank saved waiting for the confirm of an erase beyond its backing restores
/// and refuses the erase then.
#[test]
fn an_erase_setup_beyond_the_backing_saves_and_restores() {
    let backed = 4 * VIRT_BLOCK_SIZE;
    let mut f = virt_vars_bank(pattern(backed as usize));
    command(&mut f, VIRT_BANK_SIZE - VIRT_BLOCK_SIZE, cmd::BLOCK_ERASE);
    let blob = f.save();
    let mut g = virt_vars_bank(pattern(backed as usize));
    g.restore(&blob).unwrap();
    command(&mut g, 0, cmd::CONFIRM);
    assert_eq!(status(&mut g), dual(sr::READY | sr::ERASE_ERROR));
    assert_eq!(g.image(), &pattern(backed as usize)[..]);
}

#[test]
fn word_program_clears_bits_and_commits_at_read_array() {
    let mut f = bank(false);
    let at = BLOCK + 0x40;
    let before = word(&f, at);
    command(&mut f, at, cmd::WORD_PROGRAM);
    wr(&mut f, at, AccessSize::Word, 0x0f0f_0f0f).unwrap();
    // Status mode after the program: ready, no errors, in both lanes.
    assert_eq!(rd(&mut f, 0, AccessSize::Word).unwrap(), dual(sr::READY));
    assert_eq!(word(&f, at), before & 0x0f0f_0f0f);
    assert!(
        f.store().commits.is_empty(),
        "committed before the firmware finished"
    );
    command(&mut f, 0, cmd::READ_ARRAY);
    let (image, dirty) = &f.store().commits[0];
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0], BLOCK as usize..BLOCK as usize + DIRTY_GRANULE);
    assert_eq!(&image[..], f.image());
    assert_eq!(
        rd(&mut f, at, AccessSize::Word).unwrap(),
        u64::from(before & 0x0f0f_0f0f)
    );
    // Nothing changed since: returning to read array again commits nothing.
    command(&mut f, 0, cmd::READ_STATUS);
    command(&mut f, 0, cmd::READ_ARRAY);
    assert_eq!(f.store().commits.len(), 1);
}

#[test]
fn buffered_program_and_block_erase_as_edk2_does_them() {
    let mut f = bank(false);
    // Erase block 2, then program 128 words into it.
    command(&mut f, 2 * BLOCK, cmd::BLOCK_ERASE);
    command(&mut f, 2 * BLOCK, cmd::CONFIRM);
    assert_eq!(status(&mut f), dual(sr::READY));
    assert!(f.image()[2 * BLOCK as usize..3 * BLOCK as usize]
        .iter()
        .all(|&b| b == 0xff));
    let words: Vec<u32> = (0..128).map(|i| 0x1234_0000 | i).collect();
    buffered(&mut f, 2 * BLOCK + 0x200, &words);
    assert_eq!(status(&mut f), dual(sr::READY));
    command(&mut f, 0, cmd::READ_ARRAY);
    for (i, &w) in words.iter().enumerate() {
        assert_eq!(word(&f, 2 * BLOCK + 0x200 + 4 * i as u64), w);
    }
    // Blocks 0, 1 and 3 untouched.
    let init = initial();
    assert_eq!(
        &f.image()[..2 * BLOCK as usize],
        &init[..2 * BLOCK as usize]
    );
    assert_eq!(
        &f.image()[3 * BLOCK as usize..],
        &init[3 * BLOCK as usize..]
    );
    let (image, dirty) = f.store().commits.last().unwrap();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0], 2 * BLOCK as usize..3 * BLOCK as usize);
    assert_eq!(&image[..], f.image());
}

#[test]
fn commands_out_of_sequence_set_the_sequence_error_and_change_nothing() {
    let init = initial();
    // Erase setup followed by something other than confirm.
    let mut f = bank(false);
    command(&mut f, BLOCK, cmd::BLOCK_ERASE);
    command(&mut f, BLOCK, cmd::READ_ARRAY);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::SEQUENCE_ERROR)
    );
    assert_eq!(f.image(), &init[..]);
    // The error stays until cleared; clear status returns to read array.
    assert_eq!(status(&mut f), dual(sr::READY | sr::SEQUENCE_ERROR));
    command(&mut f, 0, cmd::CLEAR_STATUS);
    assert!(f.read_array_mode());
    assert_eq!(status(&mut f), dual(sr::READY));

    // Buffered program: count over the buffer; data outside the buffer; no confirm.
    let mut f = bank(false);
    command(&mut f, 0, cmd::BUFFERED_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, dual(1024)).unwrap();
    assert_eq!(
        status(&mut f) & dual(sr::SEQUENCE_ERROR),
        dual(sr::SEQUENCE_ERROR)
    );
    let mut f = bank(false);
    command(&mut f, 0, cmd::BUFFERED_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, dual(1)).unwrap();
    wr(&mut f, 0, AccessSize::Word, 0).unwrap();
    wr(&mut f, BANK_BUFFER, AccessSize::Word, 0).unwrap();
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::SEQUENCE_ERROR)
    );
    let mut f = bank(false);
    command(&mut f, 0, cmd::BUFFERED_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, dual(0)).unwrap();
    wr(&mut f, 0, AccessSize::Word, 0).unwrap();
    command(&mut f, 0, cmd::READ_ARRAY);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::SEQUENCE_ERROR)
    );
    assert_eq!(f.image(), &init[..]);
    // Unknown commands and bad lock confirmations.
    let mut f = bank(false);
    command(&mut f, 0, 0x42);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::SEQUENCE_ERROR)
    );
    let mut f = bank(false);
    command(&mut f, 0, cmd::LOCK_SETUP);
    command(&mut f, 0, cmd::WORD_PROGRAM);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::SEQUENCE_ERROR)
    );
    assert!(f.store().commits.is_empty());
    assert_eq!(f.image(), &init[..]);
}

#[test]
fn accesses_outside_the_bank_or_unaligned_are_refused() {
    let mut f = bank(false);
    let end = SIZE as u64;
    assert_eq!(
        rd(&mut f, end, AccessSize::Word),
        Err(MmioError::NoRegister { offset: end })
    );
    assert_eq!(
        rd(&mut f, end - 2, AccessSize::Word),
        Err(MmioError::NoRegister { offset: end - 2 })
    );
    assert_eq!(
        rd(&mut f, u64::MAX - 3, AccessSize::Word),
        Err(MmioError::NoRegister {
            offset: u64::MAX - 3
        })
    );
    assert_eq!(
        wr(&mut f, 2, AccessSize::Word, 0),
        Err(MmioError::NoRegister { offset: 2 })
    );
    assert_eq!(
        wr(&mut f, 0, AccessSize::Double, 0),
        Err(MmioError::UnsupportedSize {
            offset: 0,
            size: AccessSize::Double
        })
    );
    assert!(f.read_array_mode());
}

#[test]
fn the_code_bank_refuses_program_and_erase() {
    let init = initial();
    let mut f = bank(true);
    command(&mut f, 0, cmd::WORD_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, 0).unwrap();
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::BLOCK_LOCKED | sr::PROGRAM_ERROR)
    );
    command(&mut f, 0, cmd::CLEAR_STATUS);
    command(&mut f, BLOCK, cmd::BLOCK_ERASE);
    command(&mut f, BLOCK, cmd::CONFIRM);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::BLOCK_LOCKED | sr::ERASE_ERROR)
    );
    command(&mut f, 0, cmd::CLEAR_STATUS);
    // Unlocking does not make it writable.
    command(&mut f, 0, cmd::LOCK_SETUP);
    command(&mut f, 0, cmd::CONFIRM);
    buffered(&mut f, 0, &[0, 0]);
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap() & dual(sr::BLOCK_LOCKED),
        dual(sr::BLOCK_LOCKED)
    );
    command(&mut f, 0, cmd::READ_ARRAY);
    assert_eq!(f.image(), &init[..]);
    assert!(f.store().commits.is_empty());
}

#[test]
fn locked_blocks_refuse_until_unlocked() {
    let mut f = bank(false);
    command(&mut f, BLOCK, cmd::LOCK_SETUP);
    command(&mut f, BLOCK, cmd::LOCK_BLOCK);
    command(&mut f, BLOCK, cmd::READ_ID);
    assert_eq!(
        rd(&mut f, BLOCK + 2 * 4, AccessSize::Word).unwrap(),
        dual(1)
    );
    command(&mut f, BLOCK, cmd::WORD_PROGRAM);
    wr(&mut f, BLOCK, AccessSize::Word, 0).unwrap();
    assert_eq!(
        rd(&mut f, 0, AccessSize::Word).unwrap(),
        dual(sr::READY | sr::BLOCK_LOCKED | sr::PROGRAM_ERROR)
    );
    assert_eq!(
        word(&f, BLOCK),
        u32::from_le_bytes(initial()[BLOCK as usize..][..4].try_into().unwrap())
    );
    command(&mut f, 0, cmd::CLEAR_STATUS);
    command(&mut f, BLOCK, cmd::LOCK_SETUP);
    command(&mut f, BLOCK, cmd::CONFIRM);
    command(&mut f, BLOCK, cmd::WORD_PROGRAM);
    wr(&mut f, BLOCK, AccessSize::Word, 0).unwrap();
    assert_eq!(status(&mut f), dual(sr::READY));
    assert_eq!(word(&f, BLOCK), 0);
}

#[test]
fn a_power_cut_mid_write_leaves_the_previous_store() {
    let mut f = bank(false);
    // A committed variable write.
    command(&mut f, 0, cmd::WORD_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, 0x1111_1111).unwrap();
    command(&mut f, 0, cmd::READ_ARRAY);
    let committed = f.store().commits.last().unwrap().0.clone();
    // An unrelated write in flight when the power goes: an erase done and a
    // buffered program half-way, the bank never back in read-array mode.
    command(&mut f, 3 * BLOCK, cmd::BLOCK_ERASE);
    command(&mut f, 3 * BLOCK, cmd::CONFIRM);
    command(&mut f, 3 * BLOCK, cmd::BUFFERED_PROGRAM);
    wr(&mut f, 3 * BLOCK, AccessSize::Word, dual(15)).unwrap();
    for i in 0..8 {
        wr(&mut f, 3 * BLOCK + 4 * i, AccessSize::Word, 0).unwrap();
    }
    let store = f.store().clone();
    drop(f);
    assert_eq!(store.commits.len(), 1);
    // The next boot's bank, from what the store holds: the committed write, not
    // the interrupted one.
    let mut again = CfiFlash::new(
        store.commits[0].0.clone(),
        BLOCK,
        false,
        MemStore::default(),
    )
    .unwrap();
    assert_eq!(again.image(), &committed[..]);
    assert_eq!(
        rd(&mut again, 0, AccessSize::Word).unwrap(),
        u64::from(word(&again, 0))
    );
    assert_eq!(
        word(&again, 0),
        u32::from_le_bytes(initial()[..4].try_into().unwrap()) & 0x1111_1111
    );
    assert_eq!(
        &again.image()[3 * BLOCK as usize..],
        &initial()[3 * BLOCK as usize..]
    );
}

#[test]
fn a_failed_commit_is_retried_at_the_next_commit_point() {
    let mut f = bank(false);
    f.store.fail = true;
    command(&mut f, BLOCK, cmd::WORD_PROGRAM);
    wr(&mut f, BLOCK, AccessSize::Word, 0).unwrap();
    command(&mut f, 0, cmd::READ_ARRAY);
    assert!(f.store().commits.is_empty());
    f.store.fail = false;
    command(&mut f, 2 * BLOCK, cmd::WORD_PROGRAM);
    wr(&mut f, 2 * BLOCK, AccessSize::Word, 0).unwrap();
    command(&mut f, 0, cmd::READ_ARRAY);
    let b = BLOCK as usize;
    assert_eq!(
        f.store().commits[0].1,
        [b..b + DIRTY_GRANULE, 2 * b..2 * b + DIRTY_GRANULE]
    );
    // A reset is a commit point too.
    command(&mut f, 0, cmd::WORD_PROGRAM);
    wr(&mut f, 0, AccessSize::Word, 0).unwrap();
    f.reset(&mut NullInterrupts);
    assert_eq!(f.store().commits.len(), 2);
    assert!(f.read_array_mode());
}

/// The image as the store last took it.
fn stored(f: &CfiFlash<MemStore>) -> Vec<u8> {
    f.store()
        .commits
        .last()
        .map_or_else(|| pattern(f.image().len()), |(image, _)| image.clone())
}

fn probe(f: &mut CfiFlash<MemStore>) -> Vec<u64> {
    // Reads in the current mode, then status and the lock bits through ID mode,
    // then the image as the store holds it after a flush.
    let mut v: Vec<u64> = (0..4)
        .map(|i| rd(f, i * 4, AccessSize::Word).unwrap())
        .collect();
    v.push(u64::from(f.read_array_mode()));
    f.flush().unwrap();
    v.extend(stored(f).chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    }));
    v
}

/// A rollback puts the image back: a bank restored from a blob saved before a
/// block was erased and programmed holds the old contents again, marks what
/// changed dirty, and its store gets exactly those granules at the next commit
/// point. A version-1 blob (command state only) restores and keeps the image.
#[test]
fn restore_puts_the_saved_image_back_and_commits_what_changed() {
    let mut f = bank(false);
    let saved = f.save();
    command(&mut f, BLOCK, cmd::BLOCK_ERASE);
    command(&mut f, BLOCK, cmd::CONFIRM);
    command(&mut f, 0, cmd::READ_ARRAY);
    let erased = f.image().to_vec();
    assert_ne!(erased, initial());
    let commits = f.store().commits.len();
    f.restore(&saved).unwrap();
    assert_eq!(f.image(), &initial()[..]);
    command(&mut f, 0, cmd::READ_ARRAY);
    assert_eq!(f.store().commits.len(), commits + 1);
    let b = BLOCK as usize;
    let ranges = &f.store().commits[commits].1;
    assert_eq!(ranges.len(), 1, "only the erased block");
    assert_eq!(ranges[0], b..2 * b, "only the erased block");
    assert_eq!(stored(&f), initial());
    // Version 1: the header's version and no image.
    let mut v1 = saved[..saved.len() - 4 - initial().len()].to_vec();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let mut g = bank(false);
    command(&mut g, BLOCK, cmd::BLOCK_ERASE);
    command(&mut g, BLOCK, cmd::CONFIRM);
    g.restore(&v1).unwrap();
    assert!(g.read_array_mode());
    assert_eq!(g.image(), &erased[..], "a version-1 blob keeps the image");
}

vdev::save_restore_tests!(
    saved_state,
    make: small_bank,
    drive: |f: &mut CfiFlash<MemStore>| {
        // Erase block 1, then lock it, then a buffered program in block 0 left
        // waiting for its confirm.
        command(f, SAVE_BLOCK, cmd::BLOCK_ERASE);
        command(f, SAVE_BLOCK, cmd::CONFIRM);
        command(f, SAVE_BLOCK, cmd::LOCK_SETUP);
        command(f, SAVE_BLOCK, cmd::LOCK_BLOCK);
        command(f, SAVE_BLOCK, cmd::BLOCK_ERASE);
        command(f, SAVE_BLOCK, cmd::CONFIRM);
        command(f, 0, cmd::BUFFERED_PROGRAM);
        wr(f, 0, AccessSize::Word, dual(3)).unwrap();
        wr(f, 0, AccessSize::Word, 0x1234).unwrap();
        wr(f, 4, AccessSize::Word, 0x5678).unwrap();
    },
    probe: probe,
);
