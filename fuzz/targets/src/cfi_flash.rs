//! `cfi_flash`: a CFI flash bank (writable variable store or read-only code bank)
//! driven by accesses of any offset, width and value, Intel-command-set commands at
//! any address, whole buffered programs, resets, flushes and save/restore cycles,
//! with a store that sometimes fails.
//!
//! Invariants: reads carry no bits outside the access; the image changes only by
//! clearing bits (program) or by a whole block becoming 0xFF (erase), and never in
//! the read-only bank; the store receives an image only at a commit point (the bank
//! back in read-array mode, a reset or a flush); every byte that differs from the
//! previous commit lies in the ranges the store is told are dirty; a bank left in
//! read-array mode with a working store has committed its image; a successful
//! commit leaves nothing dirty (a second flush commits nothing); a saved state
//! restores into a fresh bank that saves the same bytes.

use arbitrary::{Arbitrary, Unstructured};
use uefi_devices::pflash::{cmd, CfiFlash, FlashStore, StoreError, BANK_BUFFER, BANK_WIDTH};
use vdev::{AccessSize, MmioContext, MmioDevice, NullInterrupts, SaveRestore, VecMemory};

use crate::{Bytes, Encoder};

/// Four 4 KiB blocks (the smallest block that holds the write buffer).
const BLOCK: u64 = BANK_BUFFER;
const SIZE: usize = 4 * BLOCK as usize;

struct Store {
    commits: Vec<Vec<u8>>,
    fail: bool,
    /// The image as last committed (the initial image before any commit).
    last: Vec<u8>,
}

impl FlashStore for Store {
    fn commit(&mut self, image: &[u8], dirty: &[std::ops::Range<usize>]) -> Result<(), StoreError> {
        assert!(!dirty.is_empty(), "a commit with nothing dirty");
        assert!(
            dirty.windows(2).all(|w| w[0].end < w[1].start),
            "dirty ranges unsorted, overlapping or not coalesced"
        );
        assert!(dirty.iter().all(|r| !r.is_empty() && r.end <= SIZE));
        // Equal chunks are one memcmp (uninstrumented); only a chunk that
        // differs is walked byte by byte under coverage tracing.
        let chunk = BLOCK as usize;
        for (c, (lo, im)) in self.last.chunks(chunk).zip(image.chunks(chunk)).enumerate() {
            if lo == im {
                continue;
            }
            for (j, (old, new)) in lo.iter().zip(im).enumerate() {
                let i = c * chunk + j;
                assert!(
                    old == new || dirty.iter().any(|r| r.contains(&i)),
                    "byte {i:#x} changed outside the dirty ranges"
                );
            }
        }
        if self.fail {
            return Err(StoreError::Io);
        }
        self.commits.push(image.to_vec());
        self.last = image.to_vec();
        Ok(())
    }
}

fn bank(read_only: bool) -> CfiFlash<Store> {
    let image: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 256) as u8).collect();
    let store = Store {
        commits: Vec::new(),
        fail: false,
        last: image.clone(),
    };
    CfiFlash::new(image, BLOCK, read_only, store).expect("valid geometry")
}

/// Commands worth drawing (anything else is an unknown command).
const COMMANDS: &[u8] = &[
    cmd::READ_ARRAY,
    cmd::READ_STATUS,
    cmd::CLEAR_STATUS,
    cmd::READ_ID,
    cmd::CFI_QUERY,
    cmd::WORD_PROGRAM,
    cmd::BUFFERED_PROGRAM,
    cmd::BLOCK_ERASE,
    cmd::CONFIRM,
    cmd::LOCK_SETUP,
    cmd::LOCK_BLOCK,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u16,
        size: u8,
    },
    Write {
        offset: u16,
        size: u8,
        value: u64,
    },
    /// A command as EDK2 writes it (doubled for both devices, 32-bit).
    Command {
        offset: u16,
        pick: u8,
        raw: bool,
    },
    /// 0xE8, the count, the words, 0xD0 at `offset`.
    Buffered {
        offset: u16,
        words: Bytes,
    },
    Reset,
    Flush,
    StoreFails(bool),
    SaveRestore,
}

fn ctx_read(f: &mut CfiFlash<Store>, offset: u64, size: AccessSize) -> Option<u64> {
    let mut mem = VecMemory::new(0, 0);
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut irq,
    };
    f.read(&mut ctx, offset, size).ok()
}

fn ctx_write(f: &mut CfiFlash<Store>, offset: u64, size: AccessSize, value: u64) {
    let mut mem = VecMemory::new(0, 0);
    let mut irq = NullInterrupts;
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut irq,
    };
    let _ = f.write(&mut ctx, offset, size, value);
}

fn dual(v: u16) -> u64 {
    (u64::from(v) << 16) | u64::from(v)
}

/// Checks how the image may have changed from `before`.
fn check_image(before: &[u8], after: &[u8], read_only: bool) {
    if read_only {
        assert!(before == after, "the read-only bank changed");
        return;
    }
    for (b, (old, new)) in before
        .chunks(BLOCK as usize)
        .zip(after.chunks(BLOCK as usize))
        .enumerate()
    {
        if old == new {
            continue;
        }
        let erased = new.iter().all(|&x| x == 0xff);
        let programmed = old.iter().zip(new).all(|(&o, &n)| n & !o == 0);
        assert!(
            erased || programmed,
            "block {b} gained bits without an erase"
        );
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> Option<CfiFlash<Store>> {
    let mut u = Unstructured::new(data);
    let read_only = bool::arbitrary(&mut u).ok()?;
    let mut f = bank(read_only);
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        let before = f.image().to_vec();
        let commits = f.store().commits.len();
        let mut commit_point = false;
        let mut checked_per_write = false;
        match op {
            // A little past the bank too: refused, not a panic.
            Op::Read { offset, size } => {
                let size = crate::access_size(size);
                let offset = u64::from(offset) % (SIZE as u64 + 0x100);
                if let Some(v) = ctx_read(&mut f, offset, size) {
                    assert_eq!(v & !size.mask(), 0, "flash {offset:#x} read too wide");
                }
            }
            Op::Write {
                offset,
                size,
                value,
            } => {
                let offset = u64::from(offset) % (SIZE as u64 + 0x100);
                ctx_write(&mut f, offset, crate::access_size(size), value);
                commit_point = f.read_array_mode();
            }
            Op::Command { offset, pick, raw } => {
                let c = if raw {
                    pick
                } else {
                    COMMANDS[usize::from(pick) % COMMANDS.len()]
                };
                let offset = (u64::from(offset) % SIZE as u64) & !(BANK_WIDTH - 1);
                ctx_write(&mut f, offset, AccessSize::Word, dual(u16::from(c)));
                commit_point = f.read_array_mode();
            }
            Op::Buffered { offset, words } => {
                let offset = (u64::from(offset) % SIZE as u64) & !(BANK_WIDTH - 1);
                let n = (words.0.len() / 4).clamp(1, (BANK_BUFFER / BANK_WIDTH) as usize);
                let mut writes = vec![
                    (offset, dual(u16::from(cmd::BUFFERED_PROGRAM))),
                    (offset, dual(n as u16 - 1)),
                ];
                for i in 0..n {
                    let w = words
                        .0
                        .get(4 * i..4 * i + 4)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
                    writes.push((offset + 4 * i as u64, u64::from(w)));
                }
                writes.push((offset, dual(u16::from(cmd::CONFIRM))));
                // A sequence that failed part-way leaves later words to be taken as
                // commands, a read array among them: a commit point too — and an
                // erase, after which later words may program the erased block: the
                // image is checked after every write, not across the whole op.
                checked_per_write = true;
                for (at, v) in writes {
                    let step = f.image().to_vec();
                    ctx_write(&mut f, at, AccessSize::Word, v);
                    check_image(&step, f.image(), read_only);
                    commit_point |= f.read_array_mode();
                }
            }
            Op::Reset => {
                f.reset(&mut NullInterrupts);
                assert!(f.read_array_mode());
                commit_point = true;
            }
            Op::Flush => {
                let ok = f.flush().is_ok();
                commit_point = true;
                if ok {
                    let n = f.store().commits.len();
                    assert!(f.flush().is_ok());
                    assert_eq!(f.store().commits.len(), n, "a second flush committed again");
                }
            }
            Op::StoreFails(fail) => set_fail(&mut f, fail),
            Op::SaveRestore => {
                let blob = f.save();
                let store = Store {
                    commits: Vec::new(),
                    fail: false,
                    last: f.image().to_vec(),
                };
                let mut fresh = CfiFlash::new(f.image().to_vec(), BLOCK, read_only, store)
                    .expect("valid geometry");
                fresh
                    .restore(&blob)
                    .expect("a saved state restores into a fresh bank");
                assert!(fresh.save() == blob, "restored state saves differently");
                assert_eq!(fresh.read_array_mode(), f.read_array_mode());
            }
        }
        if !checked_per_write {
            check_image(&before, f.image(), read_only);
        }
        let now = f.store().commits.len();
        if now > commits {
            assert!(
                commit_point,
                "the store got an image outside a commit point"
            );
            // An op of several writes may commit part-way and change the image
            // after; ending in read-array mode with a working store, the last
            // commit is the image.
            if f.read_array_mode() && !f.store().fail {
                assert!(
                    f.store().commits.last().unwrap() == f.image(),
                    "committed image is not the bank's"
                );
            }
        }
    }
    Some(f)
}

fn set_fail(f: &mut CfiFlash<Store>, fail: bool) {
    f.store_mut().fail = fail;
}

/// `Op` variants, in declaration order.
mod op {
    pub const COUNT: u32 = 8;
    pub const READ: u32 = 0;
    pub const COMMAND: u32 = 2;
    pub const BUFFERED: u32 = 3;
    pub const RESET: u32 = 4;
    pub const FLUSH: u32 = 5;
    pub const STORE_FAILS: u32 = 6;
    pub const SAVE_RESTORE: u32 = 7;
}

/// Index of a command in [`COMMANDS`].
fn pick(c: u8) -> u8 {
    COMMANDS
        .iter()
        .position(|&x| x == c)
        .expect("listed command") as u8
}

fn command(e: &mut Encoder, offset: u16, c: u8) {
    e.variant(op::COMMAND, op::COUNT)
        .u16(offset)
        .u8(pick(c))
        .bool(false);
}

/// Seeds: EDK2 writing a variable (unlock, erase, buffered program, word program,
/// read array, status polls) and probing CFI; a hostile sequence on the code bank.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut e = Encoder::default();
    e.bool(false);
    command(&mut e, 0x55 * 4, cmd::CFI_QUERY);
    for i in 0x10..0x14u16 {
        e.variant(op::READ, op::COUNT).u16(i * 4).u8(2);
    }
    command(&mut e, 0x1000, cmd::LOCK_SETUP);
    command(&mut e, 0x1000, cmd::CONFIRM);
    command(&mut e, 0x1000, cmd::BLOCK_ERASE);
    command(&mut e, 0x1000, cmd::CONFIRM);
    command(&mut e, 0, cmd::READ_STATUS);
    e.variant(op::READ, op::COUNT).u16(0).u8(2);
    let words: Vec<u8> = (0..64u8).collect();
    e.variant(op::BUFFERED, op::COUNT).u16(0x1100).bytes(&words);
    command(&mut e, 0x1200, cmd::WORD_PROGRAM);
    e.variant(1, op::COUNT).u16(0x1200).u8(2).u64(0x0f0f_0f0f);
    command(&mut e, 0, cmd::READ_ARRAY);
    e.variant(op::STORE_FAILS, op::COUNT).bool(true);
    command(&mut e, 0x2000, cmd::BLOCK_ERASE);
    command(&mut e, 0x2000, cmd::CONFIRM);
    command(&mut e, 0, cmd::READ_ARRAY);
    e.variant(op::STORE_FAILS, op::COUNT).bool(false);
    e.variant(op::SAVE_RESTORE, op::COUNT);
    e.variant(op::FLUSH, op::COUNT);
    let edk2 = e.0;

    let mut e = Encoder::default();
    e.bool(true);
    command(&mut e, 0, cmd::WORD_PROGRAM);
    e.variant(1, op::COUNT).u16(0).u8(2).u64(0);
    command(&mut e, 0x1000, cmd::BLOCK_ERASE);
    command(&mut e, 0x1000, cmd::READ_ARRAY);
    e.variant(op::COMMAND, op::COUNT).u16(0).u8(0x42).bool(true);
    e.variant(op::BUFFERED, op::COUNT)
        .u16(0xffc)
        .bytes(&[0xff; 4000]);
    e.variant(op::SAVE_RESTORE, op::COUNT);
    e.variant(op::RESET, op::COUNT);
    vec![("edk2", edk2), ("hostile", e.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edk2_seed_writes_and_commits_a_variable_block() {
        let seeds = seeds();
        let f = run_ops(&seeds[0].1).unwrap();
        // The buffered words 0..64 as bytes at 0x1100, in an erased block 1.
        assert_eq!(
            &f.image()[0x1100..0x1140],
            &(0..64u8).collect::<Vec<_>>()[..]
        );
        assert_eq!(f.image()[0x1000], 0xff);
        // Committed at the read array, the failed commit retried by the flush.
        let commits = &f.store().commits;
        assert_eq!(commits.len(), 2);
        assert!(commits[1] == f.image());
        assert!(f.image()[0x2000..0x3000].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn the_hostile_seed_leaves_the_code_bank_as_it_was() {
        let seeds = seeds();
        let f = run_ops(&seeds[1].1).unwrap();
        assert!(f.image() == bank(true).image());
        assert!(f.store().commits.is_empty());
    }
}
