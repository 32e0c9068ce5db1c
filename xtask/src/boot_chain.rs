//! The Secure Boot chain a distribution boots through UEFI: Debian's
//! Microsoft-signed shim, Debian-signed GRUB and Debian-signed kernel, fetched
//! with apt, and GPT disk images whose EFI system partition holds them with the
//! project's busybox initramfs.
//!
//! Cache layout (`<cache>` is `<workspace>/target/boot-chain-cache`):
//! - `shimaa64.efi`  shim (package `shim-signed`), signed by Microsoft's UEFI CA
//! - `grubaa64.efi`  monolithic GRUB (package `grub-efi-arm64-signed`), signed by Debian
//! - `vmlinuz`       the Linux guest's kernel, signed by Debian (from the guest
//!   cache's kernel package: in bookworm `linux-image-<abi>-arm64` is built by
//!   `linux-signed-arm64`, the unsigned one is `…-unsigned`)
//! - `stamp`         what the files are; written last
//!
//! Disk images (`target/boot-chain/`):
//! - `signed.img`: [`esp::REMOVABLE_BOOT_PATH`] = shim, `EFI/BOOT/grubaa64.efi`
//!   (shim starts `grubaa64.efi` from its own directory), `EFI/debian/grub.cfg`
//!   (Debian's signed GRUB carries the prefix `/EFI/debian` and sources
//!   `$prefix/grub.cfg`), `vmlinuz` and `initrd.img` at the root. The kernel
//!   command line carries no `console=`: on ACPI the SPCR table names it.
//! - `unsigned.img`: the same shim with its Authenticode signature removed as
//!   the removable-media loader, and the signed GRUB; with Secure Boot on the
//!   firmware must refuse it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::esp::{self, EspFile};
use crate::firmware::Aavmf;
use crate::linux_guest::apt;
use crate::linux_guest::cache::Stamp;
use crate::linux_guest::{self, LinuxGuest};
use crate::qemu::{QemuLine, BARE_MACHINE, TCG_CPU};
use crate::Layout;

/// The Debian package of the Microsoft-signed shim.
pub const SHIM_PACKAGE: &str = "shim-signed";
/// The Debian package of the signed GRUB images.
pub const GRUB_PACKAGE: &str = "grub-efi-arm64-signed";
/// Shim in its package.
const SHIM_IN_PACKAGE: &str = "usr/lib/shim/shimaa64.efi.signed";
/// The monolithic GRUB in its package (`gcdaa64` is the CD one, `grubnet` the
/// network one).
const GRUB_IN_PACKAGE: &str = "usr/lib/grub/arm64-efi-signed/grubaa64.efi.signed";
/// Cache file names.
const SHIM: &str = "shimaa64.efi";
const GRUB: &str = "grubaa64.efi";
const KERNEL: &str = "vmlinuz";
/// Where the guest cache keeps its kernel package (`linux_guest` cache layout).
const GUEST_KERNEL_DEB: &str = "debs/kernel.deb";

/// ESP paths of the chain.
pub const ESP_GRUB: &str = "EFI/BOOT/grubaa64.efi";
pub const ESP_GRUB_CFG: &str = "EFI/debian/grub.cfg";
pub const ESP_KERNEL: &str = "vmlinuz";
pub const ESP_INITRD: &str = "initrd.img";

/// What the chain prints on the serial console, for tests that boot it (on
/// bare QEMU here, under the hypervisor's `uefi-acpi` profile later).
pub mod marker {
    /// Shim started GRUB.
    pub const GRUB_WELCOME: &str = "Welcome to GRUB!";
    /// GRUB's prompt: it found no configuration.
    pub const GRUB_PROMPT: &str = "grub> ";
    /// Linux found Secure Boot on in the firmware's variables.
    pub const SECURE_BOOT_ENABLED: &str = "secureboot: Secure boot enabled";
    /// A regex: AAVMF's boot manager refusing an image whose signature its
    /// `db` does not accept (the device path differs between PCI and MMIO
    /// disks).
    pub const REFUSED: &str =
        r#"failed to load Boot[0-9A-F]{4} "[^"\r\n]*" from [^\r\n]*: Access Denied"#;
}

/// Guest RAM of the bare-QEMU boots.
pub const BARE_MEM_MIB: u64 = 1024;

/// The signed files of the chain and the initramfs they boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChain {
    pub shim: PathBuf,
    pub grub: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_release: String,
    /// `package=version` of shim, GRUB and the kernel.
    pub packages: Vec<String>,
}

/// `target/boot-chain-cache`.
pub fn cache_dir(layout: &Layout) -> PathBuf {
    layout.out.join("boot-chain-cache")
}

/// `target/boot-chain`.
pub fn image_dir(layout: &Layout) -> PathBuf {
    layout.out.join("boot-chain")
}

/// Returns the cached chain, fetching shim and GRUB and taking the signed
/// kernel out of the Linux guest's kernel package when the cache lacks them.
pub fn ensure_signed_chain(layout: &Layout) -> Result<SignedChain, String> {
    let guest = linux_guest::ensure_linux_guest(&layout.guest_cache())?;
    let kernel_pkg = guest
        .packages
        .iter()
        .find(|p| p.starts_with("linux-image-"))
        .cloned()
        .ok_or_else(|| {
            format!(
                "the Linux guest lists no kernel package: {:?}",
                guest.packages
            )
        })?;
    let cache = cache_dir(layout);
    let source = apt::Source::from_env();
    let stamp_path = cache.join("stamp");
    let at = |name: &str| cache.join(name);
    let chain = |packages: Vec<String>, g: &LinuxGuest| SignedChain {
        shim: at(SHIM),
        grub: at(GRUB),
        kernel: at(KERNEL),
        initramfs: g.initramfs.clone(),
        kernel_release: g.kernel_release.clone(),
        packages,
    };
    if let Some(packages) = cached_packages(&cache, &source, &kernel_pkg) {
        return Ok(chain(packages, &guest));
    }

    fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let _ = fs::remove_file(&stamp_path);
    eprintln!(
        "boot-chain: fetching Debian {} {SHIM_PACKAGE} and {GRUB_PACKAGE} with apt",
        source.suite
    );
    let apt = apt::Apt::new(&layout.guest_cache().join("apt"), &source)?;
    apt.update()?;
    let mut packages = Vec::new();
    for p in [SHIM_PACKAGE, GRUB_PACKAGE] {
        let (version, _) = apt.candidate(p)?;
        packages.push(format!("{p}={version}"));
    }
    let tmp = cache.join(format!("download.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let result = (|| {
        apt.download(&packages, &tmp)?;
        let root = tmp.join("root");
        for entry in fs::read_dir(&tmp).map_err(|e| format!("read {}: {e}", tmp.display()))? {
            let p = entry.map_err(|e| e.to_string())?.path();
            if p.extension().is_some_and(|x| x == "deb") {
                apt::extract(&p, &root)?;
            }
        }
        // The kernel package is large (modules): take only its kernel.
        let deb = layout.guest_cache().join(GUEST_KERNEL_DEB);
        let vmlinuz = format!("boot/vmlinuz-{}", guest.kernel_release);
        extract_one(&deb, &vmlinuz, &root)?;
        for (from, to) in [
            (SHIM_IN_PACKAGE, SHIM),
            (GRUB_IN_PACKAGE, GRUB),
            (vmlinuz.as_str(), KERNEL),
        ] {
            let bytes = fs::read(root.join(from))
                .map_err(|e| format!("the packages have no {from}: {e}"))?;
            if authenticode_table(&bytes)?.is_none() {
                return Err(format!(
                    "{from} is not signed (its PE has no certificate table)"
                ));
            }
            apt::write(&at(to), &bytes)?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result?;
    packages.push(kernel_pkg);
    let mut stamp = Stamp::default();
    stamp.set("source", source.describe());
    stamp.set("packages", packages.join(","));
    for n in [SHIM, GRUB, KERNEL] {
        let len = fs::metadata(at(n)).map_err(|e| e.to_string())?.len();
        stamp.set(&format!("{n}_size"), len.to_string());
    }
    apt::write(&stamp_path, stamp.render().as_bytes())?;
    Ok(chain(packages, &guest))
}

/// The packages of a complete cache for `source` whose kernel is
/// `kernel_pkg` (`package=version`), or `None` when it must be fetched again:
/// no stamp, another apt source, another kernel than the Linux guest's, or a
/// file missing or of another size than stamped.
fn cached_packages(cache: &Path, source: &apt::Source, kernel_pkg: &str) -> Option<Vec<String>> {
    let s = Stamp::read(&cache.join("stamp"))?;
    let sizes_ok = [SHIM, GRUB, KERNEL].iter().all(|n| {
        fs::metadata(cache.join(n))
            .ok()
            .map(|m| m.len().to_string())
            .as_deref()
            == s.get(&format!("{n}_size"))
    });
    let packages: Vec<String> = s
        .get("packages")
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    (sizes_ok
        && s.get("source") == Some(source.describe().as_str())
        && packages.iter().any(|p| p == kernel_pkg))
    .then_some(packages)
}

/// Extracts the one file `inner` (a path without `./`) of `deb` under `dir`,
/// without unpacking the rest: `dpkg-deb --fsys-tarfile | tar -x`.
fn extract_one(deb: &Path, inner: &str, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    let tar_in = dpkg.stdout.take().ok_or("dpkg-deb has no stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .arg(format!("./{inner}"))
        .stdin(tar_in)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    let dpkg_status = dpkg.wait().map_err(|e| format!("dpkg-deb: {e}"))?;
    if !tar.status.success() || !dpkg_status.success() {
        return Err(format!(
            "extract {inner} from {}: {}",
            deb.display(),
            String::from_utf8_lossy(&tar.stderr).trim()
        ));
    }
    Ok(())
}

/// PE/COFF facts (Microsoft "PE Format" specification) needed to find and
/// remove an image's Authenticode signature.
pub mod pe {
    /// Offset of `e_lfanew` (the PE header's offset) in the MS-DOS header.
    pub const E_LFANEW: usize = 0x3c;
    /// `PE\0\0`.
    pub const SIGNATURE: &[u8; 4] = b"PE\0\0";
    /// Size of the COFF file header after the signature.
    pub const COFF_HEADER_SIZE: usize = 20;
    /// Optional-header magic of PE32+.
    pub const PE32_PLUS_MAGIC: u16 = 0x20b;
    /// Offset of `NumberOfRvaAndSizes` in the PE32+ optional header.
    pub const NUMBER_OF_RVA_AND_SIZES: usize = 108;
    /// Offset of the data directories in the PE32+ optional header.
    pub const DATA_DIRECTORIES: usize = 112;
    /// Size of one data directory (address, size).
    pub const DATA_DIRECTORY_SIZE: usize = 8;
    /// Index of the certificate table (its address is a file offset).
    pub const CERTIFICATE_TABLE: usize = 4;
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Offset in the file of the certificate-table data directory of the PE32+
/// image `b`.
fn certificate_directory(b: &[u8]) -> Result<usize, String> {
    let pe_at = u32_at(b, pe::E_LFANEW).ok_or("too short for an MS-DOS header")? as usize;
    if b.get(pe_at..pe_at + 4) != Some(&pe::SIGNATURE[..]) {
        return Err("no PE signature".into());
    }
    let opt = pe_at + 4 + pe::COFF_HEADER_SIZE;
    if u16_at(b, opt) != Some(pe::PE32_PLUS_MAGIC) {
        return Err("not a PE32+ image".into());
    }
    let count = u32_at(b, opt + pe::NUMBER_OF_RVA_AND_SIZES).ok_or("truncated optional header")?;
    if (count as usize) <= pe::CERTIFICATE_TABLE {
        return Err("the image has no certificate-table directory".into());
    }
    let dir = opt + pe::DATA_DIRECTORIES + pe::CERTIFICATE_TABLE * pe::DATA_DIRECTORY_SIZE;
    u32_at(b, dir + 4).ok_or("truncated data directories")?;
    Ok(dir)
}

/// The (file offset, size) of the PE32+ image's Authenticode certificate
/// table, or `None` when it is unsigned.
pub fn authenticode_table(b: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let dir = certificate_directory(b)?;
    let (off, len) = (
        u32_at(b, dir).unwrap_or(0) as usize,
        u32_at(b, dir + 4).unwrap_or(0) as usize,
    );
    if len == 0 {
        return Ok(None);
    }
    if off.checked_add(len).is_none_or(|end| end > b.len()) {
        return Err(format!(
            "certificate table {off:#x}+{len:#x} runs past the file ({:#x})",
            b.len()
        ));
    }
    Ok(Some((off, len)))
}

/// The PE32+ image `b` without its signature: the certificate-table directory
/// cleared and the table cut off (it is the file's tail in a signed image).
pub fn strip_signature(b: &[u8]) -> Result<Vec<u8>, String> {
    let dir = certificate_directory(b)?;
    let mut out = b.to_vec();
    if let Some((off, _)) = authenticode_table(b)? {
        out.truncate(off);
    }
    out[dir..dir + pe::DATA_DIRECTORY_SIZE].fill(0);
    Ok(out)
}

/// The GRUB configuration of the signed image: one entry booting the kernel
/// with the initramfs and `cmdline` (no `console=`: SPCR gives it).
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "# RayOS boot chain, generated by `cargo xtask` (xtask/src/boot_chain.rs).\n\
set timeout=0\n\
set default=0\n\
menuentry 'Debian signed kernel with the RayOS initramfs' {{\n\
\tlinux /{ESP_KERNEL} {cmdline}\n\
\tinitrd /{ESP_INITRD}\n\
}}\n"
    )
}

/// The two disks of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDisks {
    /// Signed shim → GRUB → kernel + initramfs.
    pub signed: PathBuf,
    /// An unsigned removable-media loader (shim without its signature) and GRUB.
    pub unsigned: PathBuf,
    pub chain: SignedChain,
}

/// The kernel command line GRUB passes for `guest_cmd` (see
/// [`linux_guest::guest_cmd_arg`]), refused when the kernel would cut it.
fn chain_cmdline(guest_cmd: Option<&str>) -> Result<String, String> {
    let cmdline = guest_cmd
        .map(linux_guest::guest_cmd_arg)
        .unwrap_or_default();
    if cmdline.len() > linux_guest::CMDLINE_MAX {
        return Err(format!(
            "the guest command needs {} characters of kernel command line; the kernel keeps {}",
            cmdline.len(),
            linux_guest::CMDLINE_MAX
        ));
    }
    Ok(cmdline)
}

/// The ESP files of the signed chain: shim as the removable-media loader,
/// GRUB, its configuration booting the kernel with `cmdline`, the kernel and
/// the initramfs.
fn signed_files(chain: &SignedChain, cmdline: &str) -> Result<Vec<EspFile>, String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    Ok(vec![
        EspFile::new(esp::REMOVABLE_BOOT_PATH, read(&chain.shim)?),
        EspFile::new(ESP_GRUB, read(&chain.grub)?),
        EspFile::new(ESP_GRUB_CFG, grub_cfg(cmdline)),
        EspFile::new(ESP_KERNEL, read(&chain.kernel)?),
        EspFile::new(ESP_INITRD, read(&chain.initramfs)?),
    ])
}

/// Writes the signed chain's disk to `path` with GRUB's configuration for
/// `guest_cmd` (the initramfs's init runs it and powers off; without, it
/// starts a shell): a `uefi-acpi` run's boot disk, written per run.
pub fn write_signed_disk(
    layout: &Layout,
    guest_cmd: Option<&str>,
    path: &Path,
) -> Result<SignedChain, String> {
    let chain = ensure_signed_chain(layout)?;
    let files = signed_files(&chain, &chain_cmdline(guest_cmd)?)?;
    esp::write_gpt_esp_image(path, esp::esp_size_for(&files), &files)?;
    Ok(chain)
}

/// Builds `target/boot-chain/{signed,unsigned}.img`. With `guest_cmd`, the
/// initramfs's init runs it and powers off (see
/// [`linux_guest::guest_cmd_arg`]); without, it starts a shell.
pub fn build_disks(layout: &Layout, guest_cmd: Option<&str>) -> Result<ChainDisks, String> {
    let dir = image_dir(layout);
    let signed = dir.join("signed.img");
    let chain = write_signed_disk(layout, guest_cmd, &signed)?;
    let read = |p: &Path| fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
    let unsigned_files = vec![
        EspFile::new(
            esp::REMOVABLE_BOOT_PATH,
            strip_signature(&read(&chain.shim)?)?,
        ),
        EspFile::new(ESP_GRUB, read(&chain.grub)?),
    ];
    let unsigned = dir.join("unsigned.img");
    esp::write_gpt_esp_image(
        &unsigned,
        esp::esp_size_for(&unsigned_files),
        &unsigned_files,
    )?;
    Ok(ChainDisks {
        signed,
        unsigned,
        chain,
    })
}

/// Copies the variable store for Secure Boot on (Microsoft keys) or off to
/// `target/boot-chain/<name>`, a fresh store for one boot.
pub fn fresh_vars(
    layout: &Layout,
    fw: &Aavmf,
    secure_boot: bool,
    name: &str,
) -> Result<PathBuf, String> {
    let to = image_dir(layout).join(name);
    let from = fw.vars_for(secure_boot);
    crate::esp::replace(&to, |tmp| {
        fs::copy(from, tmp).map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
    })?;
    Ok(to)
}

/// QEMU's own `virt` (no hypervisor) booting AAVMF from its flash banks with
/// `disk` on virtio-blk PCI: `code` read-only, `vars` written by the firmware.
/// QEMU hands AAVMF its ACPI tables, so Linux boots on ACPI.
pub fn bare_qemu_line(code: &Path, vars: &Path, disk: &Path) -> QemuLine {
    let q = |p: &Path| p.display().to_string().replace(',', ",,");
    let mut line = QemuLine::new(BARE_MACHINE);
    line.push(["-cpu", TCG_CPU]);
    line.push(["-m".to_string(), format!("{BARE_MEM_MIB}M")]);
    line.push([
        "-drive".to_string(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={}", q(code)),
        "-drive".to_string(),
        format!("if=pflash,format=raw,unit=1,file={}", q(vars)),
        "-drive".to_string(),
        format!("if=none,format=raw,id=esp,file={}", q(disk)),
        "-device".to_string(),
        "virtio-blk-pci,drive=esp".to_string(),
    ]);
    line
}

/// `cargo xtask fetch boot-chain`: fetches the chain and AAVMF, writes the
/// disks and prints how to boot them on QEMU's own `virt`.
pub fn fetch_cli(layout: &Layout) -> Result<(), crate::Error> {
    let step = |e: String| crate::Error::step("boot chain", e);
    let fw =
        crate::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
            .map_err(step)?;
    let disks = build_disks(layout, None).map_err(step)?;
    let vars = fresh_vars(layout, &fw, true, "vars.ms.fd").map_err(step)?;
    println!("shim      {}", disks.chain.shim.display());
    println!("grub      {}", disks.chain.grub.display());
    println!(
        "kernel    {} ({})",
        disks.chain.kernel.display(),
        disks.chain.kernel_release
    );
    println!("packages  {}", disks.chain.packages.join(" "));
    println!("signed    {}", disks.signed.display());
    println!("unsigned  {}", disks.unsigned.display());
    println!(
        "boot it with Secure Boot on (a fresh store: {}):\n  {}",
        vars.display(),
        bare_qemu_line(&fw.code, &vars, &disks.signed).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: MS-DOS header, PE header, optional header with 16
    /// data directories, a body, and (when `cert`) a certificate table at the end.
    fn pe_image(cert: Option<&[u8]>) -> Vec<u8> {
        let pe_at = 0x80usize;
        let opt = pe_at + 4 + pe::COFF_HEADER_SIZE;
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[pe::E_LFANEW..pe::E_LFANEW + 4].copy_from_slice(&(pe_at as u32).to_le_bytes());
        b[pe_at..pe_at + 4].copy_from_slice(pe::SIGNATURE);
        b[opt..opt + 2].copy_from_slice(&pe::PE32_PLUS_MAGIC.to_le_bytes());
        b[opt + pe::NUMBER_OF_RVA_AND_SIZES..][..4].copy_from_slice(&16u32.to_le_bytes());
        if let Some(c) = cert {
            let dir = opt + pe::DATA_DIRECTORIES + pe::CERTIFICATE_TABLE * 8;
            let off = b.len() as u32;
            b[dir..dir + 4].copy_from_slice(&off.to_le_bytes());
            b[dir + 4..dir + 8].copy_from_slice(&(c.len() as u32).to_le_bytes());
            b.extend_from_slice(c);
        }
        b
    }

    #[test]
    fn a_signature_is_found_and_stripped() {
        let signed = pe_image(Some(&[7u8; 64]));
        assert_eq!(authenticode_table(&signed).unwrap(), Some((0x400, 64)));
        let stripped = strip_signature(&signed).unwrap();
        assert_eq!(stripped.len(), 0x400);
        assert_eq!(authenticode_table(&stripped).unwrap(), None);
        assert_eq!(stripped, pe_image(None));
        // Stripping an unsigned image changes nothing.
        assert_eq!(strip_signature(&stripped).unwrap(), stripped);
    }

    #[test]
    fn broken_images_are_errors_not_panics() {
        assert!(authenticode_table(b"MZ").is_err());
        let mut not_pe = pe_image(None);
        not_pe[0x80] = b'X';
        assert!(authenticode_table(&not_pe).is_err());
        let mut past_end = pe_image(Some(&[1u8; 16]));
        past_end.truncate(0x408);
        assert!(authenticode_table(&past_end).is_err());
        assert!(strip_signature(&past_end).is_err());
    }

    #[test]
    fn the_cache_is_reused_only_when_complete_and_for_the_guest_kernel() {
        let dir =
            std::env::temp_dir().join(format!("boot-chain-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let source = apt::Source::from_env();
        let kernel = "linux-image-6.1.0-57-arm64=6.1.192-3";
        assert_eq!(cached_packages(&dir, &source, kernel), None, "no stamp");
        let mut stamp = Stamp::default();
        stamp.set("source", source.describe());
        stamp.set(
            "packages",
            format!("shim-signed=1,grub-efi-arm64-signed=2,{kernel}"),
        );
        for (i, n) in [SHIM, GRUB, KERNEL].iter().enumerate() {
            fs::write(dir.join(n), vec![0u8; 10 + i]).unwrap();
            stamp.set(&format!("{n}_size"), (10 + i).to_string());
        }
        fs::write(dir.join("stamp"), stamp.render()).unwrap();
        assert_eq!(
            cached_packages(&dir, &source, kernel).map(|p| p.len()),
            Some(3)
        );
        // The guest moved to another kernel: fetch again.
        assert_eq!(
            cached_packages(&dir, &source, "linux-image-6.1.0-58-arm64=6.1.200-1"),
            None
        );
        // A file cut short (an interrupted copy): fetch again.
        fs::write(dir.join(GRUB), b"x").unwrap();
        assert_eq!(cached_packages(&dir, &source, kernel), None);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_refusal_marker_matches_the_boot_manager_line_only_for_access_denied() {
        let re = regex::Regex::new(marker::REFUSED).unwrap();
        let line =
            "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0): ";
        assert!(re.is_match(&format!("{line}Access Denied\r\n")));
        assert!(!re.is_match(&format!("{line}Not Found\r\n")));
        let mmio = "BdsDxe: failed to load Boot0003 \"x\" from VenHw(837DCA9E-E874-4D82-B29A-23FE0E23D1E2,003E000A00000000): Access Denied";
        assert!(re.is_match(mmio));
    }

    #[test]
    fn grub_cfg_boots_the_kernel_with_the_initramfs_and_no_console_argument() {
        let cfg = grub_cfg("rayos.cmd=ZWNobw==");
        assert!(
            cfg.contains("\tlinux /vmlinuz rayos.cmd=ZWNobw==\n"),
            "{cfg}"
        );
        assert!(cfg.contains("\tinitrd /initrd.img\n"), "{cfg}");
        assert!(!cfg.contains("console="), "{cfg}");
    }
}
