//! The hypervisor's own address space: an identity map at EL2 (VA = PA) with 4 KiB
//! granule tables, 48-bit VAs, RAM as normal write-back memory and device regions as
//! Device-nGnRE. W^X: only the hypervisor's code is executable, and it is
//! read-only, as is its read-only data; all other memory is execute-never. The
//! guard pages around every CPU's stack ([`crate::stacks`]) are left unmapped. The
//! descriptors themselves are `arch::el2map` (host-tested). Guest RAM is reached through this map too, which is
//! why every guest-physical address is translated and bounds-checked before use.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use arch::el2map::{self, Region, ENTRIES, L1_BLOCK, L2_BLOCK, PAGE, VA_BITS};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

const L1_TABLES: usize = 4;
const L2_TABLES: usize = 64;
/// Level-3 tables: for the 4 KiB guard pages around the CPU stacks (which span at
/// most two 2 MiB blocks) and the page-granular permissions of the hypervisor's
/// code and read-only data (a block or two).
const L3_TABLES: usize = 6;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

#[repr(C)]
struct Tables {
    l0: Table,
    l1: [Table; L1_TABLES],
    l2: [Table; L2_TABLES],
    l3: [Table; L3_TABLES],
    l1_used: usize,
    l2_used: usize,
    l3_used: usize,
}

static mut TABLES: Tables = Tables {
    l0: Table([0; ENTRIES]),
    l1: [const { Table([0; ENTRIES]) }; L1_TABLES],
    l2: [const { Table([0; ENTRIES]) }; L2_TABLES],
    l3: [const { Table([0; ENTRIES]) }; L3_TABLES],
    l1_used: 0,
    l2_used: 0,
    l3_used: 0,
};

extern "C" {
    /// The image's first byte: its code starts here (el2/linker.ld).
    static __image_start: u8;
    /// The end of the code, 4 KiB aligned; read-only data follows.
    static __text_end: u8;
    /// The end of the read-only data, 4 KiB aligned; writable data follows.
    static __rodata_end: u8;
}

/// The kind of memory a region is mapped as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Normal,
    Device,
}

impl Kind {
    fn region(self) -> Region {
        match self {
            Kind::Normal => Region::ReadWrite,
            Kind::Device => Region::Device,
        }
    }
}

/// Why the map could not be built.
#[derive(Debug)]
#[allow(dead_code)] // fields are reported through Debug in the fatal log line
pub enum MapError {
    OutOfTables,
    AddressTooLarge(u64),
    /// A page to protect or guard outside every mapped region.
    NotMapped(u64),
    /// The linker did not align the code and read-only data to pages.
    Unaligned(u64),
}

fn tables() -> &'static mut Tables {
    // SAFETY: the tables are only touched by the boot CPU during `map` and `enable`,
    // before any secondary CPU runs and before the MMU reads them concurrently.
    unsafe { &mut *core::ptr::addr_of_mut!(TABLES) }
}

fn next_table(
    entry: &mut u64,
    pool: &mut [Table],
    used: &mut usize,
) -> Result<&'static mut [u64; ENTRIES], MapError> {
    if !el2map::is_valid(*entry) {
        let t = pool.get_mut(*used).ok_or(MapError::OutOfTables)?;
        *used += 1;
        *entry = el2map::table(t.0.as_ptr() as u64);
    }
    let pa = el2map::address(*entry);
    // SAFETY: `pa` came from one of our static tables (identity: VA = PA).
    Ok(unsafe { &mut *(pa as *mut [u64; ENTRIES]) })
}

/// Identity-maps `[base, base + size)` (widened to 2 MiB boundaries) as `kind`.
/// Whole aligned gigabytes use 1 GiB blocks. Overlapping calls: the later one wins.
pub fn map(base: u64, size: u64, kind: Kind) -> Result<(), MapError> {
    let start = base & !(L2_BLOCK - 1);
    let end = (base + size).next_multiple_of(L2_BLOCK);
    if end > 1 << VA_BITS {
        return Err(MapError::AddressTooLarge(end));
    }
    let region = kind.region();
    let t = tables();
    let mut addr = start;
    while addr < end {
        let l1 = next_table(
            &mut t.l0.0[el2map::index(addr, 0)],
            &mut t.l1,
            &mut t.l1_used,
        )?;
        let l1i = el2map::index(addr, 1);
        if addr.is_multiple_of(L1_BLOCK) && end - addr >= L1_BLOCK && !el2map::is_table(l1[l1i]) {
            l1[l1i] = region.block(addr);
            addr += L1_BLOCK;
            continue;
        }
        split_block(&mut l1[l1i], L2_BLOCK, &mut t.l2, &mut t.l2_used)?;
        let l2 = next_table(&mut l1[l1i], &mut t.l2, &mut t.l2_used)?;
        l2[el2map::index(addr, 2)] = region.block(addr);
        addr += L2_BLOCK;
    }
    Ok(())
}

/// Replaces a valid block descriptor `entry` by a table of 512 descriptors of
/// `size` bytes each (blocks at level 2, pages at level 3) with the same
/// attributes; an entry that is already a table (or invalid) is left alone.
fn split_block(
    entry: &mut u64,
    size: u64,
    pool: &mut [Table],
    used: &mut usize,
) -> Result<(), MapError> {
    if !el2map::is_valid(*entry) || el2map::is_table(*entry) {
        return Ok(());
    }
    let old = *entry;
    *entry = 0;
    let table = next_table(entry, pool, used)?;
    for (i, e) in table.iter_mut().enumerate() {
        *e = el2map::split(old, i, size);
    }
    Ok(())
}

/// Maps the 4 KiB page at `addr` as `region`, or leaves it invalid with `None`
/// (a guard page: any access faults at EL2), splitting the blocks that map it.
/// Only before the MMU is turned on.
fn set_page(addr: u64, region: Option<Region>) -> Result<(), MapError> {
    let t = tables();
    let l0 = &mut t.l0.0[el2map::index(addr, 0)];
    if !el2map::is_valid(*l0) {
        return Err(MapError::NotMapped(addr));
    }
    let l1 = next_table(l0, &mut t.l1, &mut t.l1_used)?;
    let l1e = &mut l1[el2map::index(addr, 1)];
    if !el2map::is_valid(*l1e) {
        return Err(MapError::NotMapped(addr));
    }
    split_block(l1e, L2_BLOCK, &mut t.l2, &mut t.l2_used)?;
    let l2 = next_table(l1e, &mut t.l2, &mut t.l2_used)?;
    let l2e = &mut l2[el2map::index(addr, 2)];
    if !el2map::is_valid(*l2e) {
        return Err(MapError::NotMapped(addr));
    }
    split_block(l2e, PAGE, &mut t.l3, &mut t.l3_used)?;
    let l3 = next_table(l2e, &mut t.l3, &mut t.l3_used)?;
    l3[el2map::index(addr, 3)] = region.map_or(0, |r| r.page(addr));
    Ok(())
}

/// Maps every page of `[start, end)` (page-aligned) as `region`.
fn protect(start: u64, end: u64, region: Region) -> Result<(), MapError> {
    if let Some(bad) = [start, end].into_iter().find(|a| !a.is_multiple_of(PAGE)) {
        return Err(MapError::Unaligned(bad));
    }
    (start..end)
        .step_by(PAGE as usize)
        .try_for_each(|page| set_page(page, Some(region)))
}

/// The image's code `[start, end)` and read-only data `[end, rodata_end)`.
pub fn image_text_rodata() -> (u64, u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__text_end) as u64,
        core::ptr::addr_of!(__rodata_end) as u64,
    )
}

/// MAIR_EL2 attribute indices: `el2map::MAIR_DEVICE` (0) = Device-nGnRE,
/// `el2map::MAIR_NORMAL` (1) = Normal WB RA/WA. SCTLR_EL2.WXN makes every writable
/// page execute-never whatever its descriptor says, a second guard: the map already
/// never makes a page both writable and executable.
fn program_and_enable() {
    const _: () = assert!(el2map::MAIR_DEVICE == 0 && el2map::MAIR_NORMAL == 1);
    let parange = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(u64::from(64 - VA_BITS))
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::PS.val(parange),
    );
    TTBR0_EL2.set_baddr(tables().l0.0.as_ptr() as u64);
    barrier::dsb(barrier::ISHST);
    // SAFETY: invalidating all EL2 TLB entries before turning translation on is
    // required by the architecture and has no other effect.
    unsafe { core::arch::asm!("tlbi alle2", "dsb ish", "isb") };
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::SA::Enable
            + SCTLR_EL2::WXN::Enable,
    );
    barrier::isb(barrier::SY);
}

/// Builds the identity map for `ram` and `devices` (W^X: the image's code
/// executable and read-only, its read-only data read-only, everything else
/// execute-never), leaves every page of `guards` unmapped, and turns on the MMU
/// and caches.
pub fn enable(
    ram: &[(u64, u64)],
    devices: &[(u64, u64)],
    guards: impl Iterator<Item = u64>,
) -> Result<(), MapError> {
    for &(b, s) in devices {
        map(b, s, Kind::Device)?;
    }
    for &(b, s) in ram {
        map(b, s, Kind::Normal)?;
    }
    let (text, text_end, rodata_end) = image_text_rodata();
    protect(text, text_end, Region::Text)?;
    protect(text_end, rodata_end, Region::ReadOnly)?;
    for page in guards {
        set_page(page, None)?;
    }
    program_and_enable();
    Ok(())
}

/// Turns on the MMU of a secondary CPU with the boot CPU's tables.
pub fn enable_secondary() {
    program_and_enable();
}

/// Tables used, for the boot log: (level-1, level-2, level-3).
pub fn usage() -> (usize, usize, usize) {
    let t = tables();
    (t.l1_used, t.l2_used, t.l3_used)
}
