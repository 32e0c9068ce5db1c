//! The firmware side of a `uefi-acpi` VM: the two CFI flash banks of QEMU `virt`
//! and fw_cfg carrying the ACPI tables.
//!
//! - Bank 0 (the firmware code) is host memory holding the image, mapped read-only
//!   and executable at stage 2 at [`guest::FLASH0_BASE`]: the firmware runs in
//!   place without an exit. A write there is a permission fault the trap handler
//!   ignores (skips) with a log line, as QEMU's read-only flash does; past the
//!   image one zero block is mapped read-only at every 2 MiB.
//! - Bank 1 (the variable store) is a [`uefi_devices::pflash::CfiFlash`] on the MMIO
//!   bus, 64 MiB as on QEMU, of which the first [`VARS_BACKED_SIZE`] bytes are
//!   backed by the VM's store; the rest reads as erased flash and refuses program
//!   and erase (the model answers those reads: that part is never mapped). While
//!   the bank is in read-array mode its backed image is also mapped read-only
//!   at stage 2 (reads are plain memory, as the firmware's `CopyMem` with load
//!   pairs needs); a write is a permission fault that reaches the bank's command
//!   state machine through the bus. When a command takes the bank out of
//!   read-array mode the mapping is removed, so status and CFI reads trap too;
//!   when the bank returns to read-array mode (the firmware's commit point) the
//!   image is copied to the mapped memory again.
//! - fw_cfg (`uefi_devices::fw_cfg`) at [`guest::FW_CFG_BASE`] with the ACPI tables
//!   `acpi-gen` builds for the VM (through QEMU's table-loader files).
//! - The VM's TPM (`crate::tpm`, CRB interface) at the device list's `TpmCrb`
//!   window on the platform bus, when the VM has one.
//! - The PL031 real-time clock (`devices::pl031`) at [`guest::PL031_BASE`], trapped,
//!   whose time is the host's ([`HostClock`]) plus the VM's offset.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use boards::guest;
use devices::pl031::{Pl031, RtcHost};
use stage2::coherency::{Coherent, GuestRamAccess};
use stage2::Perms;
use uefi_devices::fw_cfg::{FwCfg, FwCfgBuilder};
use uefi_devices::pflash::{CfiFlash, FlashStore, StoreError, VIRT_BLOCK_SIZE};
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, Shared};

use registry::{AbError, AbStore};
use vdev::SharedBlock;

use crate::guestram::GuestRam;
use crate::sysdisk::SystemDisk;

/// Size of the variable-store bank a VM sees (its device tree and CFI query):
/// QEMU `virt`'s 64 MiB.
pub const VARS_BANK_SIZE: u64 = guest::FLASH_BANK_SIZE;

/// The backed head of the variable-store bank (its image, in the VM's record):
/// four 256 KiB blocks, room for the store, the fault-tolerant-write working
/// block and its spare that ArmVirtQemu keeps at the bank's start (0xC0000
/// bytes). Only this much so that the image fits the hypervisor heap and a
/// commit writes 1 MiB, not 64.
pub const VARS_BACKED_SIZE: u64 = 4 * VIRT_BLOCK_SIZE;

/// Granule of the code bank's host memory (stage 2 maps it with 2 MiB blocks).
const CODE_ALIGN: u64 = 2 << 20;
/// Alignment of the variable store's host memory (stage-2 pages).
const PAGE: u64 = 4096;

/// Host memory EL2 fills and the guest sees through stage 2 (identity-mapped RAM
/// taken from free physical memory for it alone).
struct HostMemory {
    pa: u64,
    len: u64,
}

impl HostMemory {
    /// Panics on a range outside this memory: callers pass only its own ranges,
    /// so this is a hypervisor bug, never guest input.
    fn check(&self, pa: u64, len: u64) {
        let ok = pa >= self.pa && pa - self.pa <= self.len && len <= self.len - (pa - self.pa);
        assert!(ok, "flash memory access {pa:#x}+{len:#x} outside its range");
    }

    /// Fills the whole range with `image` followed by `pad` bytes, cleaned to the
    /// point of coherency; the proof maps it.
    fn fill(&mut self, image: &[u8], pad: u8) -> stage2::coherency::Cleaned {
        let (pa, len) = (self.pa, self.len);
        let n = (image.len() as u64).min(len);
        Coherent::new().fill(self, pa, len, |m| {
            m.copy_in(pa, &image[..n as usize]);
            m.set(pa + n, len - n, pad);
        })
    }

    fn set(&mut self, pa: u64, len: u64, byte: u8) {
        self.check(pa, len);
        // SAFETY: `check` keeps the range inside this memory, identity-mapped host
        // RAM reserved for this flash bank.
        unsafe { core::ptr::write_bytes(pa as *mut u8, byte, len as usize) };
    }
}

impl GuestRamAccess for HostMemory {
    fn dcache_line(&self) -> u64 {
        crate::guestram::dcache_line()
    }
    fn copy_in(&mut self, pa: u64, data: &[u8]) {
        self.check(pa, data.len() as u64);
        // SAFETY: as in `set`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as *mut u8, data.len()) };
    }
    fn zero(&mut self, pa: u64, len: u64) {
        self.set(pa, len, 0);
    }
    fn clean_invalidate_line(&mut self, pa: u64) {
        self.check(pa, 0);
        // SAFETY: cache maintenance by address on identity-mapped host RAM; it
        // changes no data, only writes dirty lines back and drops them.
        unsafe {
            core::arch::asm!("dc civac, {a}", a = in(reg) pa, options(nostack, preserves_flags))
        };
    }
    fn barrier(&mut self) {
        // SAFETY: a barrier only orders and completes earlier memory operations.
        unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
    }
    fn invalidate_icache(&mut self) {
        // SAFETY: invalidating instruction caches loses no data; the barriers make
        // later fetches on every CPU see memory as it now is.
        unsafe {
            core::arch::asm!(
                "ic ialluis",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    }
}

/// Where a system-disk VM's variable store persists: the disk and the two-copy
/// atomic store in its record's `firmware-vars` extent.
pub type VarsPlace = (SharedBlock<SystemDisk>, AbStore);

/// Where a variable store's commits go.
pub enum VarStore {
    /// A direct boot: the store lives as long as the hypervisor runs.
    Memory,
    /// The VM's record on the system disk: each commit replaces the stored image
    /// atomically (the other copy of the A/B pair is written and flushed first),
    /// so a power cut leaves the previous store.
    Disk {
        disk: SharedBlock<SystemDisk>,
        store: AbStore,
    },
}

impl FlashStore for VarStore {
    fn commit(
        &mut self,
        image: &[u8],
        _dirty: &[core::ops::Range<usize>],
    ) -> Result<(), StoreError> {
        match self {
            VarStore::Memory => Ok(()),
            VarStore::Disk { disk, store } => store.store(disk, image).map_err(|e| {
                log::warn!("variable store: writing it to the system disk failed: {e}");
                match e {
                    AbError::Io(vdev::BlockError::ReadOnly) => StoreError::ReadOnly,
                    _ => StoreError::Io,
                }
            }),
        }
    }
}

/// The variable-store bank: the CFI model plus its stage-2 mapping in read-array
/// mode.
pub struct VarsBank {
    flash: CfiFlash<VarStore>,
    ram: GuestRam,
    memory: HostMemory,
    mapped: bool,
}

impl VarsBank {
    /// Maps or unmaps the bank to match its mode.
    fn sync(&mut self) {
        let read_array = self.flash.read_array_mode();
        if self.mapped && !read_array {
            match self.ram.unmap_outside(guest::FLASH1_BASE, VARS_BACKED_SIZE) {
                Ok(()) => self.mapped = false,
                Err(e) => log::error!("variable store: cannot unmap it: {e:?}"),
            }
        } else if !self.mapped && read_array {
            let cleaned = self.memory.fill(self.flash.image(), 0xff);
            match self.ram.map_outside(guest::FLASH1_BASE, cleaned, Perms::R) {
                Ok(()) => self.mapped = true,
                Err(e) => log::error!("variable store: cannot map it: {e:?}"),
            }
        }
    }
}

impl MmioDevice for VarsBank {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let r = self.flash.read(ctx, offset, size);
        self.sync();
        r
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let r = self.flash.write(ctx, offset, size, value);
        self.sync();
        r
    }

    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        self.flash.reset(irq);
        self.sync();
    }
}

/// Physical address of the host's PL031 (0: none), set once at boot from the
/// host's device tree, whose node `mmu::enable` maps as device memory.
static HOST_RTC: AtomicU64 = AtomicU64::new(0);

/// Records the host's PL031 at `base` (its data register gives real time on
/// QEMU `virt`).
pub fn set_host_rtc(base: u64) {
    HOST_RTC.store(base, Ordering::Relaxed);
}

/// The time a guest's PL031 counts from: the host's PL031 (RTCDR, seconds since
/// the epoch) when the host has one, else the seconds since the hypervisor
/// started (logged once). A guest load changes the VM's offset, which the
/// device keeps across VM resets and which is committed to the VM's registry
/// record (a system-disk VM), so the next start of the VM begins from it. At
/// most one commit a second: a guest that loads its clock in a loop gets a
/// commit in each second it touches the device, not one per load.
pub struct HostClock {
    /// The VM's registry record (`None`: a direct boot, the offset is not kept).
    vm: Option<registry::Uuid>,
    /// The VM's offset (the record's at start).
    offset: i64,
    /// The offset changed since the last commit.
    pending: bool,
    /// The host second of the last commit.
    last_commit: Option<u32>,
}

impl HostClock {
    /// The clock of the VM `vm` (its record; `None` for a direct boot) whose
    /// guest time starts `offset` seconds ahead of the host's.
    pub fn new(vm: Option<registry::Uuid>, offset: i64) -> Self {
        Self {
            vm,
            offset,
            pending: false,
            last_commit: None,
        }
    }

    fn host_now() -> u32 {
        let base = HOST_RTC.load(Ordering::Relaxed);
        if base == 0 {
            use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
            return (CNTPCT_EL0.get() / CNTFRQ_EL0.get().max(1)) as u32;
        }
        // SAFETY: `base` is the host PL031's register window from the host's
        // device tree, identity-mapped as Device-nGnRE by `mmu::enable`; RTCDR
        // (offset 0) is a read-only 32-bit register whose read has no side effect.
        unsafe { core::ptr::read_volatile((base + devices::pl031::reg::DR) as *const u32) }
    }

    /// Commits the pending offset if none was committed in host second `now`.
    fn commit(&mut self, now: u32) {
        let Some(uuid) = self.vm else { return };
        if !self.pending || self.last_commit == Some(now) {
            return;
        }
        self.pending = false;
        self.last_commit = Some(now);
        let offset = self.offset;
        let r = crate::storage::with(|st| {
            st.registry
                .update_vm(&mut st.disk, uuid, |r| r.rtc_offset = offset)
        });
        match r {
            Some(Ok(())) => log::info!(
                "guest RTC: the VM set its clock to the host's {offset:+} s (kept in its record)"
            ),
            Some(Err(e)) => log::warn!(
                "guest RTC: the VM set its clock to the host's {offset:+} s; not kept ({e})"
            ),
            None => log::warn!(
                "guest RTC: the VM set its clock to the host's {offset:+} s; no system disk to keep it"
            ),
        }
    }
}

impl RtcHost for HostClock {
    fn now(&mut self) -> u32 {
        let now = Self::host_now();
        self.commit(now);
        now
    }

    fn offset_changed(&mut self, offset: u32) {
        // The PL031's counter wraps at 32 bits: its offset as signed seconds.
        self.offset = i64::from(offset as i32);
        if self.vm.is_none() {
            log::info!(
                "guest RTC: the VM set its clock to the host's {:+} s",
                self.offset
            );
            return;
        }
        self.pending = true;
        self.commit(Self::host_now());
    }
}

/// What a `uefi-acpi` VM has beyond the Linux machine.
pub struct Firmware {
    pub vars: Shared<VarsBank>,
    pub fw_cfg: Shared<FwCfg>,
    pub rtc: Shared<Pl031<HostClock>>,
}

/// Host memory set aside for a VM's flash banks (before the rest of free memory
/// goes to the snapshot pool).
pub struct Reserved {
    code: HostMemory,
    vars: HostMemory,
    /// One zeroed block mapped (read-only) at every block of the code bank past
    /// the image: the bank reads as zeros to its end, as on QEMU.
    zeros: HostMemory,
}

/// Takes the flash banks' host memory for `fw` from `pmem`.
pub fn reserve(
    pmem: &mut boards::memmap::PhysMem,
    fw: &vmspec::Firmware,
) -> Result<Reserved, String> {
    let len = (fw.code.len() as u64).next_multiple_of(CODE_ALIGN);
    let pa = pmem
        .alloc(len, CODE_ALIGN)
        .ok_or_else(|| format!("no memory for the {} MiB firmware code bank", len >> 20))?;
    let vars_pa = pmem
        .alloc(VARS_BACKED_SIZE, PAGE)
        .ok_or_else(|| String::from("no memory for the variable store's mapping"))?;
    let zeros_pa = pmem
        .alloc(CODE_ALIGN, CODE_ALIGN)
        .ok_or_else(|| String::from("no memory for the code bank's zero block"))?;
    Ok(Reserved {
        zeros: HostMemory {
            pa: zeros_pa,
            len: CODE_ALIGN,
        },
        code: HostMemory { pa, len },
        vars: HostMemory {
            pa: vars_pa,
            len: VARS_BACKED_SIZE,
        },
    })
}

/// Builds the firmware devices of a VM whose RAM is `ram` in the memory `mem`
/// reserved for them: the code bank mapped from `fw.code` (zeros to the next
/// 2 MiB), the variable store from `fw.vars` (erased when `None`) committing to
/// `store`, the PL031 counting from `clock`, and fw_cfg with the ACPI tables of
/// `vcpus` vCPUs and the VM's devices `list` (`boards::devices::device_list`).
pub fn build(
    ram: GuestRam,
    mem: Reserved,
    fw: &vmspec::Firmware,
    store: VarStore,
    clock: HostClock,
    vcpus: u32,
    list: &[boards::devices::DeviceSpec],
) -> Result<Firmware, String> {
    let Reserved {
        mut code,
        vars,
        mut zeros,
    } = mem;
    let cleaned = code.fill(fw.code, 0);
    code.invalidate_icache();
    ram.map_outside(guest::FLASH0_BASE, cleaned, Perms::RX)
        .map_err(|e| format!("cannot map the firmware code bank: {e:?}"))?;
    // The rest of the bank: the same zero block, read-only, at each 2 MiB. Every
    // write anywhere in the bank is then a permission fault the trap handler
    // ignores (with a log line), whatever instruction made it.
    let mut at = guest::FLASH0_BASE + code.len;
    while at < guest::FLASH0_BASE + guest::FLASH_BANK_SIZE {
        let cleaned = zeros.fill(&[], 0);
        ram.map_outside(at, cleaned, Perms::R)
            .map_err(|e| format!("cannot map the code bank's tail: {e:?}"))?;
        at += CODE_ALIGN;
    }

    // The variable store: the given image (its tail beyond the backed head must
    // be erased or zero, as Debian's 64 MiB files are) or an erased bank.
    let mut image = vec![0xffu8; VARS_BACKED_SIZE as usize];
    if let Some(v) = fw.vars {
        let (head, tail) = v.split_at(v.len().min(image.len()));
        if tail.iter().any(|&b| b != 0xff && b != 0) {
            return Err(format!(
                "the variable store image has data beyond the bank's backed {} KiB",
                VARS_BACKED_SIZE >> 10
            ));
        }
        image[..head.len()].copy_from_slice(head);
    }
    let flash = CfiFlash::with_window(image, VARS_BANK_SIZE, VIRT_BLOCK_SIZE, false, store)
        .map_err(|e| format!("variable store: {e:?}"))?;
    let mut bank = VarsBank {
        flash,
        ram,
        memory: vars,
        mapped: false,
    };
    bank.sync();
    if !bank.mapped {
        return Err(String::from("cannot map the variable store"));
    }

    // fw_cfg with the ACPI tables of exactly the devices the VM has: no power
    // button yet.
    let platform = acpi_gen::profile::from_devices(vcpus, None, list)
        .ok_or_else(|| String::from("the device list has no console"))?;
    let rtc_intid = list
        .iter()
        .find(|d| d.kind == boards::devices::DeviceKind::Pl031)
        .and_then(|d| d.irq)
        .map(|i| i.intid);
    // The PL031 counts modulo 2^32 seconds.
    let initial_offset = clock.offset as i32 as u32;
    if HOST_RTC.load(Ordering::Relaxed) == 0 {
        log::warn!("guest RTC: the host has no PL031; the guest's clock starts at the epoch");
    }
    let tables = acpi_gen::build(&platform).map_err(|e| format!("ACPI tables: {e:?}"))?;
    let mut b = FwCfgBuilder::new().cpus(vcpus as u16);
    b.acpi(&acpi_gen::AcpiBlobs::new(&tables))
        .map_err(|e| format!("fw_cfg: {e:?}"))?;
    // The firmware's framebuffer (EDK2's QemuRamfbDxe gives GOP through it),
    // presented by the render loop (`display::register`).
    b.ramfb().map_err(|e| format!("fw_cfg: {e:?}"))?;
    Ok(Firmware {
        vars: Shared::new(bank),
        fw_cfg: Shared::new(b.build()),
        rtc: Shared::new(Pl031::new(clock, rtc_intid, initial_offset)),
    })
}

/// Puts `fw`'s devices and the VM's CRB `tpm` on `bus` at the windows the VM's
/// device `list` gives them (`boards::devices::bus_entries`; the code bank is
/// stage-2 memory, not a bus device).
pub fn attach(
    bus: &mut vdev::MmioBus,
    fw: &Firmware,
    list: &[boards::devices::DeviceSpec],
    tpm: Option<&crate::tpm::GuestTpm>,
    saved: &mut alloc::vec::Vec<crate::suspend::SavedDevice>,
) -> Result<(), vdev::BusError> {
    use crate::suspend::SavedDevice;
    use boards::devices::{BusModel, DeviceKind};
    for d in boards::devices::bus_entries(list) {
        let BusModel::Device(kind) = d.model else {
            continue;
        };
        // Every firmware device's state is saved (the TPM's already is).
        let handle: Option<Box<dyn crate::suspend::DeviceHandle>> = match kind {
            DeviceKind::Flash { bank: 1 } => Some(Box::new(VarsHandle(fw.vars.clone()))),
            DeviceKind::FwCfg => Some(Box::new(fw.fw_cfg.clone())),
            DeviceKind::Pl031 => Some(Box::new(fw.rtc.clone())),
            _ => None,
        };
        let device: Box<dyn MmioDevice + Send> = match kind {
            DeviceKind::Flash { bank: 1 } => Box::new(fw.vars.clone()),
            DeviceKind::FwCfg => Box::new(fw.fw_cfg.clone()),
            DeviceKind::TpmCrb => match tpm {
                // The CRB reports its buffer's guest-physical address from the base
                // it was built with: it must be this entry's.
                Some(t) if t.interface() == (crate::tpm::Interface::Crb { base: d.base }) => {
                    t.device()
                }
                _ => {
                    log::error!(
                        "the VM's TPM is not a CRB at {:#x}: the firmware VM gets no TPM",
                        d.base
                    );
                    continue;
                }
            },
            DeviceKind::Pl031 => Box::new(fw.rtc.clone()),
            _ => continue,
        };
        bus.insert(d.name, d.base, d.size, device)?;
        if let Some(handle) = handle {
            saved.push(SavedDevice {
                name: d.name,
                base: d.base,
                handle,
            });
        }
    }
    Ok(())
}

/// The variable-store bank as a saved device: its CFI command state, saved
/// after the image's changed blocks are committed to its store (the system
/// disk), so the store holds the image that state refers to; a restored state
/// maps or unmaps the bank as its mode says (read-array mode is mapped).
pub struct VarsHandle(pub Shared<VarsBank>);

impl crate::suspend::DeviceHandle for VarsHandle {
    fn save(&self) -> alloc::vec::Vec<u8> {
        let mut bank = self.0 .0.lock();
        if bank.flash.flush().is_err() {
            log::error!(
                "variable store: committing it before saving the VM's state failed; the saved state refers to the store as last committed"
            );
        }
        vdev::SaveRestore::save(&bank.flash)
    }
    fn restore(&self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        let mut bank = self.0 .0.lock();
        vdev::SaveRestore::restore(&mut bank.flash, blob)?;
        // The restored image (a rollback's) goes to the store now, and the
        // guest's read-array mapping is filled from it again.
        if bank.flash.flush().is_err() {
            log::error!(
                "variable store: committing the restored image failed; it is retried at the next commit point"
            );
        }
        if bank.mapped {
            match bank.ram.unmap_outside(guest::FLASH1_BASE, VARS_BACKED_SIZE) {
                Ok(()) => bank.mapped = false,
                Err(e) => log::error!("variable store: cannot unmap it: {e:?}"),
            }
        }
        bank.sync();
        Ok(())
    }
}

/// Whether `ipa` is in the code bank as the device tree describes it.
pub fn in_code_bank(ipa: u64) -> bool {
    (guest::FLASH0_BASE..guest::FLASH0_BASE + guest::FLASH_BANK_SIZE).contains(&ipa)
}
