//! CPU instructions that make the hypervisor's bulk work fast: CRC32C with the CRC32
//! extension (checking kernels and initrds read from the system disk) and zeroing
//! memory a cache block at a time with DC ZVA (clearing guest RAM before a boot).
//! Each falls back to plain code when the CPU lacks the feature.

use core::sync::atomic::{AtomicU8, Ordering};

use arch::regs::{DCZID_EL0 as DCZID, ID_AA64ISAR0_EL1 as ISAR0};
use tock_registers::interfaces::Readable;

use crate::el1::typed_sysreg;

typed_sysreg!(
    /// DCZID_EL0: the DC ZVA block size (BS) and whether DC ZVA is prohibited (DZP).
    DczidEl0, "DCZID_EL0", DCZID::Register, r
);
typed_sysreg!(
    /// ID_AA64ISAR0_EL1 with its CRC32 field.
    IdAa64Isar0El1, "ID_AA64ISAR0_EL1", ISAR0::Register, r
);
/// Bytes in a word, the unit of DCZID_EL0.BS.
const WORD: usize = 4;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static HW_CRC: AtomicU8 = AtomicU8::new(UNKNOWN);

fn crc32c_hw(data: &[u8]) -> u32 {
    crc32c_hw_from(0, data)
}

/// CRC32C of `prev`'s data followed by `data` (`prev` = 0 for none).
fn crc32c_hw_from(prev: u32, data: &[u8]) -> u32 {
    let mut crc: u32 = !prev;
    let (words, tail) = data.split_at(data.len() & !7);
    for w in words.chunks_exact(8) {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // SAFETY: CRC32CX only computes on registers; the CPU implements the CRC32
        // extension (checked through ID_AA64ISAR0_EL1 before this runs).
        unsafe {
            core::arch::asm!(".arch_extension crc", "crc32cx {c:w}, {c:w}, {v}", c = inout(reg) crc, v = in(reg) v, options(pure, nomem, nostack))
        };
    }
    for &b in tail {
        // SAFETY: as above, one byte at a time.
        unsafe {
            core::arch::asm!(".arch_extension crc", "crc32cb {c:w}, {c:w}, {v:w}", c = inout(reg) crc, v = in(reg) u32::from(b), options(pure, nomem, nostack))
        };
    }
    !crc
}

/// CRC32C of `data`, with the CPU's CRC instructions when it has them (checked once
/// against the registry's software routine).
pub fn crc32c(data: &[u8]) -> u32 {
    match HW_CRC.load(Ordering::Relaxed) {
        YES => crc32c_hw(data),
        NO => registry::crc32c(data),
        _ => {
            const PROBE: &[u8] = b"RayOS EL2 CRC32C self-check: 123456789";
            let has = IdAa64Isar0El1.read(ISAR0::CRC32) != 0;
            let ok = has && crc32c_hw(PROBE) == registry::crc32c(PROBE);
            if has && !ok {
                log::error!(
                    "the CPU's CRC32C instructions disagree with the software CRC; using software"
                );
            }
            HW_CRC.store(if ok { YES } else { NO }, Ordering::Relaxed);
            crc32c(data)
        }
    }
}

/// CRC32C continued over more bytes (`vmstate::CrcAppend`): `crc32c_append(0, a)`
/// is `crc32c(a)`, and appending `b` to that gives the CRC32C of `a` then `b`.
pub fn crc32c_append(prev: u32, data: &[u8]) -> u32 {
    // Decides (and checks) the hardware routine once.
    let _ = crc32c(&[]);
    match HW_CRC.load(Ordering::Relaxed) {
        YES => crc32c_hw_from(prev, data),
        _ => vmstate::crc32c_append(prev, data),
    }
}

/// Zeroes `[pa, pa + len)` of identity-mapped normal memory that nothing else uses.
///
/// # Safety
/// The range must be RAM owned by the caller (not the hypervisor's image, heap or
/// stacks, and not memory a running vCPU uses).
pub unsafe fn zero(pa: usize, len: usize) {
    let dczid = DczidEl0.extract();
    let block = WORD << dczid.read(DCZID::BS);
    let start = pa.next_multiple_of(block).min(pa + len);
    let end = ((pa + len) & !(block - 1)).max(start);
    if dczid.is_set(DCZID::DZP) || end == start {
        // SAFETY: the caller owns the range.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, len) };
        return;
    }
    // SAFETY: head and tail lie inside the caller's range.
    unsafe {
        core::ptr::write_bytes(pa as *mut u8, 0, start - pa);
        core::ptr::write_bytes(end as *mut u8, 0, pa + len - end);
    }
    let mut a = start;
    while a < end {
        // SAFETY: DC ZVA zeroes the naturally aligned block at `a`, which lies inside
        // the caller's range of normal memory.
        unsafe { core::arch::asm!("dc zva, {}", in(reg) a, options(nostack)) };
        a += block;
    }
    // SAFETY: orders the zeroing before later accesses (and the guest's).
    unsafe { core::arch::asm!("dsb ish") };
}
