//! The hypervisor's own address space: an identity map at EL2 (VA = PA) with 4 KiB
//! granule tables, 48-bit VAs, RAM as normal write-back memory and device regions as
//! Device-nGnRE, execute-never; the guard pages around every CPU's stack
//! ([`crate::stacks`]) are left unmapped. Guest RAM is reached through this map too, which is
//! why every guest-physical address is translated and bounds-checked before use.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

/// Descriptor bits of the EL2 stage-1 regime (Arm ARM D8.3).
mod desc {
    pub const VALID: u64 = 1 << 0;
    pub const TABLE: u64 = 1 << 1;
    pub const BLOCK: u64 = 0;
    /// A level-3 descriptor: bits [1:0] = 0b11.
    pub const PAGE: u64 = VALID | TABLE;
    pub const ATTR_DEVICE: u64 = 0 << 2;
    pub const ATTR_NORMAL: u64 = 1 << 2;
    /// AP[1]: RES1 in the single-privilege EL2 regime.
    pub const AP_RES1: u64 = 1 << 6;
    pub const SH_INNER: u64 = 0b11 << 8;
    pub const AF: u64 = 1 << 10;
    pub const XN: u64 = 1 << 54;
    pub const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
}

const ENTRIES: usize = 512;
const L1_BLOCK: u64 = 1 << 30;
const L2_BLOCK: u64 = 1 << 21;
const L1_TABLES: usize = 4;
const L2_TABLES: usize = 64;
/// Level-3 tables, for the 4 KiB guard pages around the CPU stacks (which span at
/// most two 2 MiB blocks).
const L3_TABLES: usize = 4;
const PAGE: u64 = 1 << 12;

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

/// The kind of memory a region is mapped as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Normal,
    Device,
}

impl Kind {
    fn attrs(self) -> u64 {
        match self {
            Kind::Normal => desc::ATTR_NORMAL | desc::SH_INNER | desc::AF | desc::AP_RES1,
            Kind::Device => desc::ATTR_DEVICE | desc::AF | desc::AP_RES1 | desc::XN,
        }
    }
}

/// Why the map could not be built.
#[derive(Debug)]
#[allow(dead_code)] // fields are reported through Debug in the fatal log line
pub enum MapError {
    OutOfTables,
    AddressTooLarge(u64),
    /// A guard page outside every mapped region.
    NotMapped(u64),
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
    if *entry & desc::VALID == 0 {
        let t = pool.get_mut(*used).ok_or(MapError::OutOfTables)?;
        *used += 1;
        *entry = (t.0.as_ptr() as u64) | desc::VALID | desc::TABLE;
    }
    let pa = *entry & desc::ADDR_MASK;
    // SAFETY: `pa` came from one of our static tables (identity: VA = PA).
    Ok(unsafe { &mut *(pa as *mut [u64; ENTRIES]) })
}

/// Identity-maps `[base, base + size)` (widened to 2 MiB boundaries) as `kind`.
/// Whole aligned gigabytes use 1 GiB blocks. Overlapping calls: the later one wins.
pub fn map(base: u64, size: u64, kind: Kind) -> Result<(), MapError> {
    let start = base & !(L2_BLOCK - 1);
    let end = (base + size).next_multiple_of(L2_BLOCK);
    if end > 1 << 48 {
        return Err(MapError::AddressTooLarge(end));
    }
    let t = tables();
    let mut addr = start;
    while addr < end {
        let l0i = (addr >> 39) as usize & (ENTRIES - 1);
        let l1 = next_table(&mut t.l0.0[l0i], &mut t.l1, &mut t.l1_used)?;
        let l1i = (addr >> 30) as usize & (ENTRIES - 1);
        if addr.is_multiple_of(L1_BLOCK) && end - addr >= L1_BLOCK && l1[l1i] & desc::TABLE == 0 {
            l1[l1i] = addr | desc::VALID | desc::BLOCK | kind.attrs();
            addr += L1_BLOCK;
            continue;
        }
        split_block(
            &mut l1[l1i],
            L2_BLOCK,
            desc::BLOCK,
            &mut t.l2,
            &mut t.l2_used,
        )?;
        let l2 = next_table(&mut l1[l1i], &mut t.l2, &mut t.l2_used)?;
        let l2i = (addr >> 21) as usize & (ENTRIES - 1);
        l2[l2i] = addr | desc::VALID | desc::BLOCK | kind.attrs();
        addr += L2_BLOCK;
    }
    Ok(())
}

/// Replaces a valid block descriptor `entry` by a table of 512 descriptors of
/// `size` bytes each (`kind_bits`: BLOCK at level 2, PAGE at level 3) with the same
/// attributes; an entry that is already a table (or invalid) is left alone.
fn split_block(
    entry: &mut u64,
    size: u64,
    kind_bits: u64,
    pool: &mut [Table],
    used: &mut usize,
) -> Result<(), MapError> {
    if *entry & (desc::VALID | desc::TABLE) != desc::VALID {
        return Ok(());
    }
    let old = *entry;
    *entry = 0;
    let table = next_table(entry, pool, used)?;
    let base = old & desc::ADDR_MASK & !(size * ENTRIES as u64 - 1);
    let attrs = old & !desc::ADDR_MASK & !(desc::VALID | desc::TABLE);
    for (i, e) in table.iter_mut().enumerate() {
        *e = (base + i as u64 * size) | desc::VALID | kind_bits | attrs;
    }
    Ok(())
}

/// Makes the 4 KiB page at `addr` invalid (a guard page: any access faults at
/// EL2), splitting the blocks that map it. Only before the MMU is turned on.
fn unmap_page(addr: u64) -> Result<(), MapError> {
    let t = tables();
    let l0 = &mut t.l0.0[(addr >> 39) as usize & (ENTRIES - 1)];
    if *l0 & desc::VALID == 0 {
        return Err(MapError::NotMapped(addr));
    }
    let l1 = next_table(l0, &mut t.l1, &mut t.l1_used)?;
    let l1e = &mut l1[(addr >> 30) as usize & (ENTRIES - 1)];
    if *l1e & desc::VALID == 0 {
        return Err(MapError::NotMapped(addr));
    }
    split_block(l1e, L2_BLOCK, desc::BLOCK, &mut t.l2, &mut t.l2_used)?;
    let l2 = next_table(l1e, &mut t.l2, &mut t.l2_used)?;
    let l2e = &mut l2[(addr >> 21) as usize & (ENTRIES - 1)];
    if *l2e & desc::VALID == 0 {
        return Err(MapError::NotMapped(addr));
    }
    split_block(l2e, PAGE, desc::PAGE, &mut t.l3, &mut t.l3_used)?;
    let l3 = next_table(l2e, &mut t.l3, &mut t.l3_used)?;
    l3[(addr >> 12) as usize & (ENTRIES - 1)] = 0;
    Ok(())
}

/// MAIR_EL2 attribute indices: 0 = Device-nGnRE, 1 = Normal WB RA/WA.
fn program_and_enable() {
    let parange = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(16)
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
            + SCTLR_EL2::SA::Enable,
    );
    barrier::isb(barrier::SY);
}

/// Builds the identity map for `ram` and `devices`, leaves every page of `guards`
/// unmapped, and turns on the MMU and caches.
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
    for page in guards {
        unmap_page(page)?;
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
