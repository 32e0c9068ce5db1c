//! The UEFI-application entry: `rayos-el2.efi` is the same image as `rayos-el2.bin`
//! wrapped by xtask in a PE32+ header (`xtask/src/efi_image.rs`) whose entry point
//! is [`efi_pe_entry`]. UEFI firmware that runs at EL2 (Ampere's; AAVMF on QEMU
//! `virt,virtualization=on`) starts it with the MMU and caches on and boot services
//! alive. It:
//!
//! 1. applies the image's relocations where the firmware loaded it (the same code
//!    as the arm64 Image path, `boot.rs`), so Rust runs;
//! 2. checks it is at EL2 and finds the device tree in the EFI configuration
//!    table; a firmware that hands over ACPI only (Ampere's) gets its platform
//!    discovered from the tables and written as a device tree
//!    (`boards::host_dt`), so the rest of the boot is the device-tree path;
//! 3. allocates a 2 MiB-aligned copy of itself (the per-CPU stack slots must stay
//!    aligned to their size) and a hand-over block, reads the memory map and
//!    exits boot services, recording the ranges the firmware keeps;
//! 4. copies itself, cleans what the hypervisor reads to the point of coherency,
//!    turns the MMU and data cache off and joins the arm64 Image path at
//!    `el2_boot_common` with the device tree and the hand-over block, as if a
//!    Linux-style loader had started it at the copy's address.
//!
//! The guest comes from a boot bundle on the application's own file system
//! (`\EFI\rayos\bundle.cpio`, read before ExitBootServices() and handed over like
//! a `-kernel` boot's initrd), or else from the system disk (virtio).

use core::arch::global_asm;
use core::fmt::Write;

use aarch64_cpu::registers::{CurrentEL, Readable};
use boards::efi::{kept_ranges, EFI_PAGE_SIZE};
use boards::Range;
use uefi_raw::protocol::console::SimpleTextOutputProtocol;
use uefi_raw::protocol::file_system::{
    FileAttribute, FileMode, FileProtocolV1, SimpleFileSystemProtocol,
};
use uefi_raw::protocol::loaded_image::LoadedImageProtocol;
use uefi_raw::table::boot::{AllocateType, BootServices, MemoryDescriptor, MemoryType};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{guid, Guid, Handle, Status};

/// `EFI_DTB_TABLE_GUID`: the configuration table entry of a flattened device tree
/// (UEFI 2.10 / EBBR 2.1, 4.4.1).
const DTB_TABLE_GUID: Guid = guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");
/// `EFI_ACPI_20_TABLE_GUID`: the configuration table entry of the ACPI RSDP.
const ACPI_20_TABLE_GUID: Guid = guid!("8868e871-e4f1-11d3-bc22-0080c73c8881");
/// The copy's alignment: a 2 MiB boundary, as an arm64 Image loader would choose;
/// it keeps the stack slots (`stacks.rs`) aligned to their size.
const COPY_ALIGN: u64 = 2 << 20;
/// Kept ranges the hand-over block holds (one 4 KiB page with its header).
const MAX_KEPT: usize = 254;
/// The boot bundle on the application's file system (UCS-2 when opened).
const BUNDLE_PATH: &str = "\\EFI\\rayos\\bundle.cpio";
/// Largest boot bundle read from the ESP.
const MAX_BUNDLE: u64 = 1 << 30;
/// `EFI_FILE_PROTOCOL.SetPosition()`'s position for the end of the file.
const END_OF_FILE: u64 = u64::MAX;
/// Marks a hand-over block: "RAYOSEFI".
const HANDOFF_MAGIC: u64 = u64::from_le_bytes(*b"RAYOSEFI");
/// Tries of GetMemoryMap + ExitBootServices: the first may fail when an event
/// allocated memory in between (UEFI 2.10, 7.4 ExitBootServices()).
const EXIT_TRIES: usize = 2;
/// Room for descriptors the map may gain between sizing and reading it.
const MAP_SLACK_DESCRIPTORS: usize = 16;
/// SCTLR_EL2.M: the EL2 stage-1 MMU enable (Arm ARM D24.2.163).
const SCTLR_M: u64 = 1 << 0;
/// SCTLR_EL2.C: the EL2 data-cache enable.
const SCTLR_C: u64 = 1 << 2;
/// Bytes in a word, the unit of CTR_EL0's line sizes.
const WORD: u64 = 4;
/// CurrentEL.EL of EL2.
const EL2: u64 = 2;

/// What the UEFI application hands to `rust_main`: the ranges the firmware keeps
/// after ExitBootServices().
#[repr(C)]
struct Handoff {
    magic: u64,
    count: u64,
    /// The boot bundle read from the ESP (size 0: none).
    bundle: Range,
    kept: [Range; MAX_KEPT],
}

const _: () = assert!(core::mem::size_of::<Handoff>() as u64 <= EFI_PAGE_SIZE);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __bss_start: u8;
    static el2_boot_common: u8;
    /// Turns the MMU and data cache off and branches to `entry` with x19 = `dtb`,
    /// x21 = `handoff` (below).
    fn efi_enter_el2(dtb: u64, handoff: u64, entry: u64) -> !;
}

global_asm!(
    r#"
    .section .text.efi, "ax"
    // The PE32+ entry point: x0 = image handle, x1 = system table (UEFI 2.10,
    // 2.3.6 AArch64 calling convention, the same as AAPCS64).
    .global efi_pe_entry
efi_pe_entry:
    stp     x29, x30, [sp, #-32]!
    mov     x29, sp
    stp     x19, x20, [sp, #16]
    mov     x19, x0
    mov     x20, x1
    bl      el2_apply_relocations
    mov     x0, x19
    mov     x1, x20
    bl      efi_main                // returns only when it refuses to start
    ldp     x19, x20, [sp, #16]
    ldp     x29, x30, [sp], #32
    ret

    .global efi_enter_el2
efi_enter_el2:
    msr     daifset, #0xf
    mov     x19, x0
    mov     x21, x1
    mrs     x3, SCTLR_EL2
    bic     x3, x3, #{sctlr_m}
    bic     x3, x3, #{sctlr_c}
    msr     SCTLR_EL2, x3
    isb
    tlbi    alle2
    dsb     nsh
    ic      iallu
    dsb     nsh
    isb
    br      x2
"#,
    sctlr_m = const SCTLR_M,
    sctlr_c = const SCTLR_C,
);

/// The firmware's text console, while boot services last.
struct Console(*mut SimpleTextOutputProtocol);

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut buf = [0u16; 64];
        let mut n = 0;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\n' {
                buf[n] = u16::from(b'\r');
                n += 1;
            }
            // UCS-2: characters beyond the BMP print as '?'.
            buf[n] = u16::try_from(u32::from(c)).unwrap_or(u16::from(b'?'));
            n += 1;
            if n >= buf.len() - 3 || chars.peek().is_none() {
                buf[n] = 0;
                // SAFETY: `self.0` is the system table's ConOut, valid while boot
                // services last (this is never called after ExitBootServices());
                // `buf` is NUL-terminated.
                // A console that fails to print has nothing better to report to.
                let _ = unsafe { ((*self.0).output_string)(self.0, buf.as_ptr()) };
                n = 0;
            }
        }
        Ok(())
    }
}

/// Rust side of [`efi_pe_entry`]: returns a status only when the hypervisor cannot
/// start (boot services are then still alive and the firmware carries on).
#[no_mangle]
extern "C" fn efi_main(image: Handle, st: *const SystemTable) -> Status {
    // SAFETY: the firmware passes its system table, valid while boot services last.
    let Some(st) = (unsafe { st.as_ref() }) else {
        return Status::INVALID_PARAMETER;
    };
    let mut con = Console(st.stdout);
    match start(image, st, &mut con) {
        Ok(never) => match never {},
        Err((status, why)) => {
            let _ = writeln!(con, "RayOS EL2: not started: {why}");
            status
        }
    }
}

/// Why the application gives control back to the firmware.
type Refusal = (Status, &'static str);

fn start(
    image: Handle,
    st: &SystemTable,
    con: &mut Console,
) -> Result<core::convert::Infallible, Refusal> {
    let el = CurrentEL.read(CurrentEL::EL);
    if el != EL2 {
        return Err((
            Status::UNSUPPORTED,
            "the firmware runs this application below EL2; the hypervisor must own EL2 (on QEMU: -M virt,virtualization=on)",
        ));
    }
    // SAFETY: the configuration table is the firmware's array of
    // `number_of_configuration_table_entries` entries.
    let tables = unsafe {
        core::slice::from_raw_parts(
            st.configuration_table,
            st.number_of_configuration_table_entries,
        )
    };
    let find = |g: &Guid| {
        tables
            .iter()
            .find(|t| t.vendor_guid == *g)
            .map(|t| t.vendor_table as u64)
    };
    let bs_ref = st.boot_services;
    let dtb = match (find(&DTB_TABLE_GUID), find(&ACPI_20_TABLE_GUID)) {
        (Some(dtb), _) => dtb,
        (None, Some(rsdp)) => {
            // SAFETY: boot services are alive until `exit_boot_services` below.
            let dtb = dt_from_acpi(unsafe { &*bs_ref }, rsdp, con)?;
            let _ = writeln!(
                con,
                "RayOS EL2 UEFI application: the firmware hands over ACPI tables and no device tree; the platform they describe is written as a device tree at {dtb:#x}"
            );
            dtb
        }
        (None, None) => {
            return Err((
                Status::UNSUPPORTED,
                "the firmware hands over neither a device tree nor ACPI tables",
            ))
        }
    };
    let dtb_len = crate::dtb_slice(dtb as usize)
        .ok_or((
            Status::LOAD_ERROR,
            "the firmware's device tree has no valid header",
        ))?
        .len() as u64;
    // SAFETY: boot services are alive until `exit_boot_services` below.
    let bs = unsafe { &*st.boot_services };

    let (start, end, file_end, entry) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
        core::ptr::addr_of!(__bss_start) as u64,
        core::ptr::addr_of!(el2_boot_common) as u64,
    );
    let copy = allocate(bs, MemoryType::LOADER_CODE, end - start + COPY_ALIGN)?
        .next_multiple_of(COPY_ALIGN);
    let handoff = allocate(bs, MemoryType::LOADER_DATA, EFI_PAGE_SIZE)?;
    let bundle = read_bundle(bs, image)?;
    if let Some(b) = bundle {
        let _ = writeln!(
            con,
            "RayOS EL2 UEFI application: boot bundle {BUNDLE_PATH} ({} KiB) at {:#x}",
            b.size >> 10,
            b.base
        );
    }
    let (map, map_len) = map_buffer(bs)?;
    let _ = writeln!(
        con,
        "RayOS EL2 UEFI application at EL2: loaded at {start:#x}, device tree at {dtb:#x}; exiting boot services, the hypervisor runs at {copy:#x}"
    );

    // From here until ExitBootServices() succeeds nothing may allocate: no output.
    let mut tries = 0;
    loop {
        let (mut size, mut key, mut desc_size, mut version) = (map_len, 0usize, 0usize, 0u32);
        // SAFETY: `map` is a pool buffer of `map_len` bytes; the other pointers are
        // locals.
        let s = unsafe {
            (bs.get_memory_map)(
                &mut size,
                map as *mut MemoryDescriptor,
                &mut key,
                &mut desc_size,
                &mut version,
            )
        };
        if s != Status::SUCCESS || desc_size < core::mem::size_of::<MemoryDescriptor>() {
            return Err((s, "GetMemoryMap() failed"));
        }
        // SAFETY: `handoff` is a page allocated above for this block alone.
        let block = unsafe { &mut *(handoff as *mut Handoff) };
        let descriptors = (0..size / desc_size).map(|i| {
            // SAFETY: descriptor i lies within the `size` bytes the firmware wrote;
            // descriptors are `desc_size` apart, so each is read unaligned.
            let d = unsafe {
                core::ptr::read_unaligned((map + (i * desc_size) as u64) as *const MemoryDescriptor)
            };
            (d.ty.0, d.phys_start, d.page_count)
        });
        block.magic = HANDOFF_MAGIC;
        block.bundle = bundle.unwrap_or_default();
        block.count = kept_ranges(descriptors, &mut block.kept) as u64;
        // SAFETY: `key` is the memory map's current key; after success the firmware
        // owns nothing the hypervisor uses except what the block records.
        if unsafe { (bs.exit_boot_services)(image, key) } == Status::SUCCESS {
            break;
        }
        tries += 1;
        if tries == EXIT_TRIES {
            return Err((Status::ABORTED, "ExitBootServices() failed"));
        }
    }

    // Boot services are gone: the machine is the hypervisor's.
    // SAFETY: `copy` is a LOADER_CODE allocation of the image's size plus its
    // alignment, now owned by this program; the source is this image's own bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            copy as *mut u8,
            (file_end - start) as usize,
        )
    };
    clean_to_poc(copy, end - start);
    clean_to_poc(handoff, EFI_PAGE_SIZE);
    clean_to_poc(dtb, dtb_len);
    if let Some(b) = bundle {
        clean_to_poc(b.base, b.size);
    }
    // SAFETY: the copy is the whole image, cleaned to the point of coherency with
    // its entry at the same offset; the device tree and the hand-over block are in
    // memory the hypervisor excludes from its pool.
    unsafe { efi_enter_el2(dtb, handoff, copy + (entry - start)) }
}

/// Largest ACPI table read (a sanity bound on a header's length).
const MAX_ACPI_TABLE: usize = 1 << 20;
/// Bytes of an ACPI 2.0 RSDP.
const RSDP_V2_LEN: usize = 36;
/// Offset of the length in a System Description Table header.
const SDT_LENGTH: usize = 4;

/// The firmware's ACPI table at physical `pa`, bounded by its header's length.
fn acpi_table(pa: u64) -> Option<&'static [u8]> {
    if pa == 0 {
        return None;
    }
    // SAFETY: `pa` is a table the firmware's XSDT (or RSDP) names, identity-mapped
    // in ACPI memory while boot services last; its header's length is read first.
    let len =
        unsafe { core::ptr::read_unaligned((pa as usize + SDT_LENGTH) as *const u32) } as usize;
    // SAFETY: as above, `len` bytes bounded by MAX_ACPI_TABLE.
    (len <= MAX_ACPI_TABLE).then(|| unsafe { core::slice::from_raw_parts(pa as *const u8, len) })
}

/// Discovers the platform from the ACPI tables under the RSDP at `rsdp` and the
/// memory map, writes it as a device tree (`boards::host_dt`) into LOADER_DATA
/// pages and returns their address. Explains a failure on the console.
fn dt_from_acpi(bs: &BootServices, rsdp: u64, con: &mut Console) -> Result<u64, Refusal> {
    let bad = (
        Status::UNSUPPORTED,
        "the firmware's ACPI tables do not describe a platform the hypervisor can run on",
    );
    // The allocator of el2 in this image's (firmware-zeroed) BSS; the copy the
    // hypervisor runs from starts its own.
    crate::heap::init();
    // SAFETY: the RSDP the configuration table names: 36 bytes for ACPI 2.0+.
    let rsdp = unsafe { core::slice::from_raw_parts(rsdp as *const u8, RSDP_V2_LEN) };
    let xsdt = boards::acpi::rsdp_xsdt(rsdp)
        .ok()
        .and_then(acpi_table)
        .ok_or(bad)?;
    let entries = boards::acpi::xsdt_entries(xsdt).map_err(|e| {
        let _ = writeln!(con, "RayOS EL2: XSDT: {e:?}");
        bad
    })?;
    let tables: alloc::vec::Vec<&[u8]> = entries.into_iter().filter_map(acpi_table).collect();
    let (map, map_len) = map_buffer(bs)?;
    let (mut size, mut key, mut desc_size, mut version) = (map_len, 0usize, 0usize, 0u32);
    // SAFETY: `map` is a pool buffer of `map_len` bytes; the other pointers are locals.
    let s = unsafe {
        (bs.get_memory_map)(
            &mut size,
            map as *mut MemoryDescriptor,
            &mut key,
            &mut desc_size,
            &mut version,
        )
    };
    if s != Status::SUCCESS || desc_size < core::mem::size_of::<MemoryDescriptor>() {
        return Err((s, "GetMemoryMap() failed"));
    }
    let ram = boards::efi::ram_ranges((0..size / desc_size).map(|i| {
        // SAFETY: descriptor i lies within the `size` bytes the firmware wrote.
        let d = unsafe {
            core::ptr::read_unaligned((map + (i * desc_size) as u64) as *const MemoryDescriptor)
        };
        (d.ty.0, d.phys_start, d.page_count)
    }));
    let platform = boards::acpi::discover_acpi(&tables, &ram).map_err(|e| {
        let _ = writeln!(con, "RayOS EL2: ACPI discovery: {e:?}");
        bad
    })?;
    let dt = boards::host_dt::platform_dt(&platform).map_err(|_| {
        (
            Status::OUT_OF_RESOURCES,
            "cannot write the device tree of the ACPI platform",
        )
    })?;
    let pa = allocate(bs, MemoryType::LOADER_DATA, dt.len() as u64)?;
    // SAFETY: `pa` is a fresh allocation of at least `dt.len()` bytes.
    unsafe { core::ptr::copy_nonoverlapping(dt.as_ptr(), pa as *mut u8, dt.len()) };
    Ok(pa)
}

/// `bytes` of `ty` memory from AllocatePages().
fn allocate(bs: &BootServices, ty: MemoryType, bytes: u64) -> Result<u64, Refusal> {
    let mut addr = 0u64;
    // SAFETY: AllocatePages writes the allocation's address to `addr`.
    let s = unsafe {
        (bs.allocate_pages)(
            AllocateType::ANY_PAGES,
            ty,
            bytes.div_ceil(EFI_PAGE_SIZE) as usize,
            &mut addr,
        )
    };
    if s != Status::SUCCESS {
        return Err((s, "AllocatePages() failed"));
    }
    Ok(addr)
}

/// The boot bundle from the file system the application was loaded from, in
/// LOADER_DATA pages; `None` when there is no such file (or no file system).
fn read_bundle(bs: &BootServices, image: Handle) -> Result<Option<Range>, Refusal> {
    let protocol = |handle: Handle, guid: &Guid| -> Option<*mut core::ffi::c_void> {
        let mut p = core::ptr::null_mut();
        // SAFETY: HandleProtocol writes the interface's address to `p`.
        let s = unsafe { (bs.handle_protocol)(handle, guid, &mut p) };
        (s == Status::SUCCESS && !p.is_null()).then_some(p)
    };
    let Some(li) = protocol(image, &LoadedImageProtocol::GUID) else {
        return Ok(None);
    };
    // SAFETY: the firmware's loaded-image protocol of this image.
    let device = unsafe { (*(li as *const LoadedImageProtocol)).device_handle };
    let Some(sfs) = protocol(device, &SimpleFileSystemProtocol::GUID) else {
        return Ok(None);
    };
    let sfs = sfs as *mut SimpleFileSystemProtocol;
    let mut root: *mut FileProtocolV1 = core::ptr::null_mut();
    // SAFETY: `sfs` is the device's file-system protocol; OpenVolume writes `root`.
    if unsafe { ((*sfs).open_volume)(sfs, &mut root) } != Status::SUCCESS || root.is_null() {
        return Ok(None);
    }
    let mut name = [0u16; 64];
    for (d, c) in name.iter_mut().zip(BUNDLE_PATH.encode_utf16()) {
        *d = c;
    }
    let mut file: *mut FileProtocolV1 = core::ptr::null_mut();
    // SAFETY: `root` is the open volume; `name` is NUL-terminated UCS-2.
    let opened = unsafe {
        ((*root).open)(
            root,
            &mut file,
            name.as_ptr(),
            FileMode::READ,
            FileAttribute::empty(),
        )
    };
    // SAFETY: `root` is open and no longer needed.
    let _ = unsafe { ((*root).close)(root) };
    if opened != Status::SUCCESS || file.is_null() {
        return Ok(None);
    }
    let result = read_whole(bs, file);
    // SAFETY: `file` is open and no longer needed.
    let _ = unsafe { ((*file).close)(file) };
    result.map(Some)
}

/// Reads all of the open `file` into fresh LOADER_DATA pages.
fn read_whole(bs: &BootServices, file: *mut FileProtocolV1) -> Result<Range, Refusal> {
    let mut size = 0u64;
    // SAFETY: `file` is an open file; SetPosition(END) then GetPosition gives its size.
    let s = unsafe {
        match ((*file).set_position)(file, END_OF_FILE) {
            Status::SUCCESS => ((*file).get_position)(file, &mut size),
            e => e,
        }
    };
    if s != Status::SUCCESS || size == 0 || size > MAX_BUNDLE {
        return Err((
            Status::LOAD_ERROR,
            "the boot bundle on the ESP is empty, too large or unreadable",
        ));
    }
    let base = allocate(bs, MemoryType::LOADER_DATA, size)?;
    let mut done = 0u64;
    // SAFETY: back to the start of the open file.
    if unsafe { ((*file).set_position)(file, 0) } != Status::SUCCESS {
        return Err((
            Status::LOAD_ERROR,
            "cannot rewind the boot bundle on the ESP",
        ));
    }
    while done < size {
        let mut n = (size - done) as usize;
        // SAFETY: the destination is the rest of the `size`-byte allocation above.
        let s = unsafe { ((*file).read)(file, &mut n, (base + done) as *mut core::ffi::c_void) };
        if s != Status::SUCCESS || n == 0 {
            return Err((
                Status::LOAD_ERROR,
                "reading the boot bundle from the ESP failed",
            ));
        }
        done += n as u64;
    }
    Ok(Range { base, size })
}

/// A pool buffer large enough for the memory map, and its size.
fn map_buffer(bs: &BootServices) -> Result<(u64, usize), Refusal> {
    let (mut size, mut key, mut desc_size, mut version) = (0usize, 0usize, 0usize, 0u32);
    // SAFETY: with a zero size the firmware only writes the sizes it needs; its
    // status is BUFFER_TOO_SMALL, the expected answer.
    let _ = unsafe {
        (bs.get_memory_map)(
            &mut size,
            core::ptr::null_mut(),
            &mut key,
            &mut desc_size,
            &mut version,
        )
    };
    // The buffer's own allocation may split a free range: room for more.
    let len =
        size + MAP_SLACK_DESCRIPTORS * desc_size.max(core::mem::size_of::<MemoryDescriptor>());
    let mut buf: *mut u8 = core::ptr::null_mut();
    // SAFETY: AllocatePool writes the buffer's address to `buf`.
    let s = unsafe { (bs.allocate_pool)(MemoryType::LOADER_DATA, len, &mut buf) };
    if s != Status::SUCCESS || buf.is_null() {
        return Err((s, "AllocatePool() for the memory map failed"));
    }
    Ok((buf as u64, len))
}

/// Writes back and invalidates the data cache over `[base, base + len)` to the
/// point of coherency, so it reads the same with the MMU and caches off.
fn clean_to_poc(base: u64, len: u64) {
    let line =
        WORD << ((crate::el1::read_sysreg!("CTR_EL0") >> CTR_DMINLINE_SHIFT) & CTR_DMINLINE_MASK);
    let mut a = base & !(line - 1);
    while a < base + len {
        // SAFETY: cache maintenance by address changes no data; the range is
        // identity-mapped memory this program owns or reads.
        unsafe {
            core::arch::asm!("dc civac, {a}", a = in(reg) a, options(nostack, preserves_flags))
        };
        a += line;
    }
    // SAFETY: a barrier only completes the maintenance above.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// CTR_EL0.DminLine: log2 of the smallest data-cache line, in words.
const CTR_DMINLINE_SHIFT: u64 = 16;
const CTR_DMINLINE_MASK: u64 = 0xf;

/// The boot bundle the UEFI application read from the ESP (`handoff` as in
/// [`reserved`]).
pub fn bundle(handoff: usize) -> Option<Range> {
    if handoff == 0 {
        return None;
    }
    // SAFETY: as in `reserved`: the hand-over block, only read.
    let b = unsafe { &*(handoff as *const Handoff) };
    (b.magic == HANDOFF_MAGIC && b.bundle.size != 0).then_some(b.bundle)
}

/// The memory `rust_main` must leave alone when the UEFI application started it
/// (`handoff` is the block's address; 0 on an arm64 Image boot): the block itself
/// and the ranges the firmware keeps.
pub fn reserved(handoff: usize) -> impl Iterator<Item = Range> {
    let block = (handoff != 0).then(|| {
        // SAFETY: `efi_enter_el2` passed the address of the hand-over block it
        // wrote, in memory excluded from the pool (below); it is only read.
        unsafe { &*(handoff as *const Handoff) }
    });
    let kept = match block {
        Some(b) if b.magic == HANDOFF_MAGIC && b.count as usize <= MAX_KEPT => {
            let kept = &b.kept[..b.count as usize];
            log::info!(
                "started by UEFI: {} range(s) the firmware keeps after ExitBootServices ({} KiB) stay out of the memory pool",
                kept.len(),
                kept.iter().map(|r| r.size >> 10).sum::<u64>()
            );
            kept
        }
        Some(_) => crate::fatal(format_args!(
            "the UEFI hand-over block at {handoff:#x} is malformed"
        )),
        None => &[],
    };
    block
        .map(|_| Range {
            base: handoff as u64,
            size: EFI_PAGE_SIZE,
        })
        .into_iter()
        .chain(kept.iter().copied())
}
