//! The UEFI-application build of the hypervisor and its boot media:
//!
//! - `target/rayos-el2.efi`: the flat image (`rayos-el2.bin`, unchanged) behind a
//!   PE32+ header for AArch64 whose entry point is el2's `efi_pe_entry`
//!   (`el2/src/efi.rs`). The `uefi` crate's `aarch64-unknown-uefi` target would
//!   build a second, different hypervisor binary; wrapping the one image keeps a
//!   single build whose every boot path runs the same code, and the PE32+ header
//!   is a few fixed fields (PE/COFF specification, "PE Format").
//! - `target/esp.img`: a FAT EFI system partition (no partition table: UEFI mounts
//!   a whole-disk FAT) holding `\EFI\rayos\rayos-el2.efi`, a `startup.nsh` that
//!   the UEFI Shell runs at boot and, for a run without a system disk, the VM's
//!   boot bundle as `\EFI\rayos\bundle.cpio` (the application reads it).
//! - `cargo xtask run --boot efi`: QEMU boots Debian's AAVMF from its flash banks
//!   at EL2 (`virtualization=on`) with the ESP on a virtio-blk PCI disk, out of
//!   the hypervisor's sight (it drives virtio-mmio devices only); AAVMF hands over
//!   a device tree only when QEMU offers no ACPI tables (`acpi=off`).

use crate::esp::EspFile;
use std::fs;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, Sym};

use crate::build::{build_hypervisor, write_atomic};
use crate::error::Error;
use crate::flat::elf_to_flat;
use crate::layout::{HYP_PACKAGE, HYP_TARGET};
use crate::Layout;

/// How QEMU starts the hypervisor (`cargo xtask run --boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Boot {
    /// QEMU loads the arm64 Image itself (`-kernel`).
    #[default]
    Kernel,
    /// AAVMF at EL2 starts `rayos-el2.efi` from the ESP.
    Efi,
}

impl std::str::FromStr for Boot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kernel" => Ok(Boot::Kernel),
            "efi" => Ok(Boot::Efi),
            other => Err(format!("--boot takes kernel or efi, not `{other}`")),
        }
    }
}

/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xaa64;
/// The optional header's magic of PE32+.
pub const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_SUBSYSTEM_EFI_APPLICATION`.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// Where the PE signature starts (the DOS header's `e_lfanew` points here).
const PE_OFFSET: usize = 0x40;
/// Offset of `e_lfanew` in the DOS header.
const E_LFANEW: usize = 0x3c;
/// Section and file alignment: one 4 KiB page, so the firmware can give each
/// section its own permissions.
pub const ALIGN: u32 = 0x1000;
/// Data directories in the optional header (all empty: no imports, no base
/// relocations — the image relocates itself).
const DATA_DIRECTORIES: usize = 16;
/// Size of the PE32+ optional header with [`DATA_DIRECTORIES`].
const OPTIONAL_HEADER_SIZE: u16 = 112 + 8 * DATA_DIRECTORIES as u16;
/// COFF characteristics: executable, large-address aware, line numbers and
/// debug information stripped. Not `RELOCS_STRIPPED`: the image may be loaded
/// anywhere (it has no base relocations to apply because it applies its own).
const CHARACTERISTICS: u16 = 0x0002 | 0x0020 | 0x0004 | 0x0200;
/// Section flags: code, executable, readable.
const TEXT_FLAGS: u32 = 0x0000_0020 | 0x2000_0000 | 0x4000_0000;
/// Section flags: initialised data, readable, writable (read-only data included:
/// the image's relocations are written there at start).
const DATA_FLAGS: u32 = 0x0000_0040 | 0x4000_0000 | 0x8000_0000;

/// The symbols of the hypervisor's ELF that place the PE sections and entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfiLayout {
    /// Bytes of code from the image's start (`__text_end`).
    pub text: u64,
    /// Bytes the image spans in memory, BSS and stacks included (`__image_end`).
    pub image: u64,
    /// Offset of `efi_pe_entry`.
    pub entry: u64,
}

/// Reads [`EfiLayout`] from the ELF `data` linked at `base`.
pub fn layout_from_elf(data: &[u8], base: u64) -> Result<EfiLayout, String> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;
    let symbols = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(|e| e.to_string())?;
    let find = |name: &str| -> Result<u64, String> {
        symbols
            .iter()
            .find(|s| s.name(endian, symbols.strings()) == Ok(name.as_bytes()))
            .map(|s| s.st_value(endian))
            .and_then(|v| v.checked_sub(base))
            .ok_or_else(|| format!("the hypervisor's ELF has no symbol `{name}` above {base:#x}"))
    };
    Ok(EfiLayout {
        text: find("__text_end")?,
        image: find("__image_end")?,
        entry: find("efi_pe_entry")?,
    })
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The PE32+ file of the flat image `flat` laid out as `l`: the headers in the
/// first page, then `.text` (the code) and `.data` (everything after it, with
/// BSS and stacks as its zero-filled tail), each at the same offset in the file
/// and in memory, one page after the image base.
pub fn pe32plus(flat: &[u8], l: &EfiLayout) -> Result<Vec<u8>, String> {
    let a = u64::from(ALIGN);
    let flat_len = flat.len() as u64;
    if !l.text.is_multiple_of(a) || l.text == 0 || l.text > flat_len {
        return Err(format!(
            "code end {:#x} is not a page boundary inside the image",
            l.text
        ));
    }
    if l.entry >= l.text {
        return Err(format!("entry {:#x} is outside the code", l.entry));
    }
    if l.image < flat_len {
        return Err("the image's memory span is smaller than its file".into());
    }
    let data_file = (flat_len - l.text).next_multiple_of(a);
    let data_mem = (l.image - l.text).next_multiple_of(a);
    let size_of_image = a + l.text + data_mem;
    let size = |v: u64| u32::try_from(v).map_err(|_| format!("{v:#x} does not fit a PE32+ field"));

    let mut out = vec![0u8; (a + l.text + data_file) as usize];
    out[0..2].copy_from_slice(b"MZ");
    put32(&mut out, E_LFANEW, PE_OFFSET as u32);
    out[PE_OFFSET..PE_OFFSET + 4].copy_from_slice(b"PE\0\0");
    // COFF file header.
    let coff = PE_OFFSET + 4;
    put16(&mut out, coff, MACHINE_ARM64);
    put16(&mut out, coff + 2, 2);
    put16(&mut out, coff + 16, OPTIONAL_HEADER_SIZE);
    put16(&mut out, coff + 18, CHARACTERISTICS);
    // Optional header (PE32+).
    let opt = coff + 20;
    put16(&mut out, opt, PE32_PLUS_MAGIC);
    put32(&mut out, opt + 4, size(l.text)?); // SizeOfCode
    put32(&mut out, opt + 8, size(data_file)?); // SizeOfInitializedData
    put32(&mut out, opt + 12, size(data_mem - data_file)?); // SizeOfUninitializedData
    put32(&mut out, opt + 16, size(a + l.entry)?); // AddressOfEntryPoint
    put32(&mut out, opt + 20, ALIGN); // BaseOfCode
    put64(&mut out, opt + 24, 0); // ImageBase: anywhere
    put32(&mut out, opt + 32, ALIGN); // SectionAlignment
    put32(&mut out, opt + 36, ALIGN); // FileAlignment
    put32(&mut out, opt + 56, size(size_of_image)?); // SizeOfImage
    put32(&mut out, opt + 60, ALIGN); // SizeOfHeaders
    put16(&mut out, opt + 68, SUBSYSTEM_EFI_APPLICATION);
    put32(&mut out, opt + 108, DATA_DIRECTORIES as u32); // NumberOfRvaAndSizes
                                                         // Section table.
    let sections = opt + usize::from(OPTIONAL_HEADER_SIZE);
    let section = |out: &mut Vec<u8>, i: usize, name: &[u8; 8], vsize, rva, fsize, flags| {
        let s = sections + 40 * i;
        out[s..s + 8].copy_from_slice(name);
        put32(out, s + 8, vsize);
        put32(out, s + 12, rva);
        put32(out, s + 16, fsize);
        put32(out, s + 20, rva); // PointerToRawData: file offset = RVA
        put32(out, s + 36, flags);
    };
    section(
        &mut out,
        0,
        b".text\0\0\0",
        size(l.text)?,
        ALIGN,
        size(l.text)?,
        TEXT_FLAGS,
    );
    let data_rva = size(a + l.text)?;
    section(
        &mut out,
        1,
        b".data\0\0\0",
        size(data_mem)?,
        data_rva,
        size(data_file)?,
        DATA_FLAGS,
    );
    out[a as usize..a as usize + flat.len()].copy_from_slice(flat);
    Ok(out)
}

/// `target/rayos-el2.efi`.
pub fn efi_path(layout: &Layout) -> PathBuf {
    layout.out.join("rayos-el2.efi")
}

/// `target/esp.img`.
pub fn esp_path(layout: &Layout) -> PathBuf {
    layout.out.join("esp.img")
}

/// Builds the hypervisor and wraps it: returns `target/rayos-el2.efi`.
pub fn build_efi(layout: &Layout, quiet: bool) -> Result<PathBuf, Error> {
    build_hypervisor(layout, quiet)?;
    let elf_path = layout.release_elf(HYP_TARGET, HYP_PACKAGE);
    let data =
        fs::read(&elf_path).map_err(|e| Error::io(format!("read {}", elf_path.display()), e))?;
    let flat = elf_to_flat(&data).map_err(|source| Error::Image {
        path: elf_path.clone(),
        source,
    })?;
    let step = "rayos-el2.efi";
    let l = layout_from_elf(&data, flat.load_addr).map_err(|e| Error::step(step, e))?;
    let pe = pe32plus(&flat.bytes, &l).map_err(|e| Error::step(step, e))?;
    let out = efi_path(layout);
    write_atomic(&out, &pe)?;
    Ok(out)
}

/// Smallest ESP image: room for the application (its file is the flat image,
/// about 2 MiB) and a FAT16 file system.
pub const ESP_SIZE: u64 = 32 << 20;
/// Room the FAT structures and directories get beside the files.
const ESP_SLACK: u64 = 8 << 20;
/// Where the boot bundle lives on the ESP (`el2/src/efi.rs` reads this path).
pub const BUNDLE_PATH: [&str; 3] = ["EFI", "rayos", "bundle.cpio"];
/// Where the application lives on the ESP (the board scripts and docs name it).
pub const EFI_APP_PATH: [&str; 3] = ["EFI", "rayos", "rayos-el2.efi"];
/// What the UEFI Shell runs at start: the application on the first file system
/// (the ESP is the only FAT volume of a `--boot efi` run).
pub const STARTUP_NSH: &str = "fs0:\r\n\\EFI\\rayos\\rayos-el2.efi\r\n";

/// Writes a FAT ESP image at `path` holding `efi` at [`EFI_APP_PATH`],
/// `startup.nsh` and, if given, `bundle` at [`BUNDLE_PATH`].
pub fn write_esp(path: &Path, efi: &[u8], bundle: Option<&[u8]>) -> Result<(), Error> {
    let mut files = vec![
        EspFile::new(EFI_APP_PATH.join("/"), efi),
        EspFile::new("startup.nsh", STARTUP_NSH),
    ];
    if let Some(bundle) = bundle {
        files.push(EspFile::new(BUNDLE_PATH.join("/"), bundle));
    }
    let bytes: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let size = (bytes + ESP_SLACK).next_multiple_of(1 << 20).max(ESP_SIZE);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    crate::esp::write_fat_image(path, size, &files).map_err(|e| Error::step("ESP", e))
}

/// Builds `rayos-el2.efi` and `target/esp.img` holding it (and the boot bundle
/// at `bundle`, if given); returns the ESP's path.
pub fn build_esp(layout: &Layout, quiet: bool, bundle: Option<&Path>) -> Result<PathBuf, Error> {
    let efi = build_efi(layout, quiet)?;
    let bytes = fs::read(&efi).map_err(|e| Error::io(format!("read {}", efi.display()), e))?;
    let esp = esp_path(layout);
    let bundle = bundle
        .map(|p| fs::read(p).map_err(|e| Error::io(format!("read {}", p.display()), e)))
        .transpose()?;
    write_esp(&esp, &bytes, bundle.as_deref())?;
    Ok(esp)
}

/// The firmware and disks of a `--boot efi` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiMedia {
    /// AAVMF's code bank (read-only flash 0).
    pub code: PathBuf,
    /// This run's copy of AAVMF's empty variable store (flash 1, written by the firmware).
    pub vars: PathBuf,
    /// The ESP image.
    pub esp: PathBuf,
}

/// QEMU's `virt` machine for a `--boot efi` run: [`crate::qemu::MACHINE`] with no
/// ACPI tables, so that AAVMF hands over the device tree.
pub fn machine() -> String {
    format!("{},acpi=off", crate::qemu::MACHINE)
}

/// Drive id of the ESP.
const ESP_DRIVE_ID: &str = "esp";

/// QEMU's arguments for the firmware and the ESP (instead of `-kernel`).
pub fn qemu_args(m: &EfiMedia) -> Vec<String> {
    let q = |p: &Path| p.display().to_string().replace(',', ",,");
    vec![
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            q(&m.code)
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", q(&m.vars)),
        "-drive".into(),
        format!(
            "if=none,format=raw,readonly=on,id={ESP_DRIVE_ID},file={}",
            q(&m.esp)
        ),
        "-device".into(),
        format!("virtio-blk-pci,drive={ESP_DRIVE_ID}"),
    ]
}

/// Fetches AAVMF if needed, builds the ESP (with the boot bundle at `bundle`, if
/// given) and gives the run a fresh variable store (`target/efi-vars.fd`, so no
/// boot entry of an earlier run applies).
pub fn prepare(layout: &Layout, quiet: bool, bundle: Option<&Path>) -> Result<EfiMedia, Error> {
    let fw =
        crate::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
            .map_err(|e| Error::step("fetch AAVMF", e))?;
    let esp = build_esp(layout, quiet, bundle)?;
    let vars = layout.out.join("efi-vars.fd");
    crate::esp::replace(&vars, |tmp| {
        fs::copy(&fw.vars, tmp).map_err(|e| format!("copy {}: {e}", fw.vars.display()))
    })
    .map_err(|e| Error::step("variable store", e))?;
    Ok(EfiMedia {
        code: fw.code,
        vars,
        esp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    const L: EfiLayout = EfiLayout {
        text: 0x3000,
        image: 0x9000,
        entry: 0x148,
    };

    fn flat() -> Vec<u8> {
        (0..0x4800u32).map(|i| (i % 251) as u8).collect()
    }

    /// Reads the PE back the way a firmware loader does: DOS header → PE
    /// signature → headers → sections copied to their RVAs in a zeroed buffer of
    /// SizeOfImage.
    fn load(pe: &[u8]) -> (Vec<u8>, u32) {
        assert_eq!(&pe[..2], b"MZ");
        let pe_at = u32_at(pe, E_LFANEW) as usize;
        assert_eq!(&pe[pe_at..pe_at + 4], b"PE\0\0");
        let coff = pe_at + 4;
        assert_eq!(u16_at(pe, coff), MACHINE_ARM64);
        let nsec = u16_at(pe, coff + 2) as usize;
        let opt_size = u16_at(pe, coff + 16) as usize;
        assert_eq!(
            u16_at(pe, coff + 18) & 0x0001,
            0,
            "relocations must not be marked stripped"
        );
        let opt = coff + 20;
        assert_eq!(u16_at(pe, opt), PE32_PLUS_MAGIC);
        assert_eq!(u16_at(pe, opt + 68), SUBSYSTEM_EFI_APPLICATION);
        let entry = u32_at(pe, opt + 16);
        let image = u32_at(pe, opt + 56) as usize;
        assert_eq!(u32_at(pe, opt + 60) as usize % ALIGN as usize, 0);
        let mut mem = vec![0u8; image];
        for i in 0..nsec {
            let s = opt + opt_size + 40 * i;
            let (vsize, rva, fsize, raw) = (
                u32_at(pe, s + 8) as usize,
                u32_at(pe, s + 12) as usize,
                u32_at(pe, s + 16) as usize,
                u32_at(pe, s + 20) as usize,
            );
            assert_eq!(rva % ALIGN as usize, 0);
            assert!(rva + vsize <= image && raw + fsize <= pe.len());
            let n = fsize.min(vsize);
            mem[rva..rva + n].copy_from_slice(&pe[raw..raw + n]);
        }
        (mem, entry)
    }

    #[test]
    fn a_loader_places_the_flat_image_one_page_up_with_its_entry_and_zeroed_tail() {
        let flat = flat();
        let pe = pe32plus(&flat, &L).unwrap();
        let (mem, entry) = load(&pe);
        assert_eq!(mem.len() as u64, u64::from(ALIGN) + L.image);
        assert_eq!(u64::from(entry), u64::from(ALIGN) + L.entry);
        let at = ALIGN as usize;
        assert_eq!(&mem[at..at + flat.len()], &flat[..]);
        assert!(mem[at + flat.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn layouts_a_loader_cannot_honour_are_refused() {
        let f = flat();
        for bad in [
            EfiLayout { text: 0x2800, ..L },
            EfiLayout { entry: 0x3000, ..L },
            EfiLayout { image: 0x4000, ..L },
            EfiLayout { text: 0x5000, ..L },
        ] {
            assert!(pe32plus(&f, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boot_efi_parses_and_replaces_kernel_and_initrd_with_firmware_and_esp() {
        let o = crate::run::parse_args(&["--boot".into(), "efi".into()]).unwrap();
        assert_eq!(o.boot, Boot::Efi);
        assert_eq!(crate::run::parse_args(&[]).unwrap().boot, Boot::Kernel);
        assert!(crate::run::parse_args(&["--boot=uboot".into()]).is_err());
        let q = crate::qemu::QemuConfig {
            smp: 2,
            guest_mem: 64 << 20,
            kernel: "/t/rayos-el2.bin".into(),
            initrd: "/t/selftest.cpio".into(),
            accel: crate::qemu::Accel::Tcg,
            icount: false,
            extra_args: vec![],
            display: crate::qemu::DEFAULT_DISPLAY,
            gui: false,
            qmp: None,
            efi: Some(EfiMedia {
                code: "/fw/AAVMF_CODE.fd".into(),
                vars: "/t/efi-vars.fd".into(),
                esp: "/t/esp.img".into(),
            }),
        };
        let line = q.line().display();
        assert!(
            line.contains("-M virt,virtualization=on,gic-version=3,acpi=off "),
            "{line}"
        );
        assert!(line.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/AAVMF_CODE.fd -drive if=pflash,format=raw,unit=1,file=/t/efi-vars.fd"), "{line}");
        assert!(
            line.contains("readonly=on,id=esp,file=/t/esp.img -device virtio-blk-pci,drive=esp"),
            "{line}"
        );
        assert!(
            !line.contains("-kernel") && !line.contains("-initrd"),
            "{line}"
        );
        assert!(crate::qemu::default_devices(&q.line()).is_none(), "{line}");
    }

    #[test]
    fn the_esp_holds_the_application_and_a_startup_script_that_runs_it() {
        let dir = std::env::temp_dir().join(format!("xtask-esp-{}", std::process::id()));
        let path = dir.join("esp.img");
        let app: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let bundle: Vec<u8> = (0..40_000_000u32).map(|i| (i % 241) as u8).collect();
        write_esp(&path, &app, Some(&bundle)).unwrap();
        let img = fs::File::open(&path).unwrap();
        assert!(
            img.metadata().unwrap().len() > ESP_SIZE,
            "grown for the bundle"
        );
        let fs = fatfs::FileSystem::new(img, fatfs::FsOptions::new()).unwrap();
        let mut got = Vec::new();
        fs.root_dir()
            .open_file(&EFI_APP_PATH.join("/"))
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, app);
        let mut got = Vec::new();
        fs.root_dir()
            .open_file(&BUNDLE_PATH.join("/"))
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == bundle, "the bundle read back differs");
        let mut nsh = String::new();
        fs.root_dir()
            .open_file("startup.nsh")
            .unwrap()
            .read_to_string(&mut nsh)
            .unwrap();
        assert!(nsh.contains("\\EFI\\rayos\\rayos-el2.efi"), "{nsh}");
        drop(fs);
        fs::remove_dir_all(&dir).unwrap();
    }
}
