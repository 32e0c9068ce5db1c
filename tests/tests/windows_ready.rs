//! The `windows` VM definition and its readiness check, driven through the real
//! commands (`cargo xtask disk add-vm --device-model windows …`, `cargo xtask
//! check-windows-ready …`) on scratch system disks with a generated ISO 9660
//! image; no QEMU boot. Debian's AAVMF comes from `target/firmware-cache`
//! (fetched when missing), so the Secure Boot lines read Microsoft's real
//! certificates.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use registry::cli::FileDisk;
use registry::{BootSource, DeviceModel, Registry, VmRecord};
use xtask::winready::{check_windows_ready, CheckOptions, Readiness};
use xtask::Layout;

/// A fresh scratch directory under `target/`.
fn scratch(name: &str) -> PathBuf {
    let dir = Layout::detect()
        .out
        .join(format!("test-windows-ready-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small ISO 9660 image (ECMA-119): 16 system-area sectors, a primary volume
/// descriptor, the set terminator, then `payload` sectors of a pattern that
/// names its sector (so a misplaced copy shows).
fn write_iso(path: &Path, payload_sectors: usize) -> Vec<u8> {
    const SECTOR: usize = 2048;
    let sectors = 16 + 2 + payload_sectors;
    let mut img = vec![0u8; sectors * SECTOR];
    let pvd = 16 * SECTOR;
    img[pvd] = 1; // primary volume descriptor
    img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    img[pvd + 6] = 1; // version
    img[pvd + 8..pvd + 40].copy_from_slice(&[b' '; 32]); // system identifier
    img[pvd + 40..pvd + 72].copy_from_slice(b"RAYOS_TEST                      ");
    // Volume space size, both-endian.
    img[pvd + 80..pvd + 84].copy_from_slice(&(sectors as u32).to_le_bytes());
    img[pvd + 84..pvd + 88].copy_from_slice(&(sectors as u32).to_be_bytes());
    // Logical block size 2048, both-endian.
    img[pvd + 128..pvd + 130].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    img[pvd + 130..pvd + 132].copy_from_slice(&(SECTOR as u16).to_be_bytes());
    img[pvd + 881] = 1; // file structure version
    let term = 17 * SECTOR;
    img[term] = 255;
    img[term + 1..term + 6].copy_from_slice(b"CD001");
    img[term + 6] = 1;
    for s in 18..sectors {
        for (i, b) in img[s * SECTOR..(s + 1) * SECTOR].iter_mut().enumerate() {
            *b = (s as u8) ^ (i as u8);
        }
    }
    std::fs::write(path, &img).unwrap();
    img
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `cargo xtask WORDS…` through the command line's own entry point.
fn xtask(words: &[&str]) -> ExitCode {
    let args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    xtask::cli::main(&args)
}

fn record(sys: &Path, name: &str) -> Option<VmRecord> {
    let mut disk = FileDisk::open(sys, true).unwrap();
    let reg = Registry::open(&mut disk).unwrap();
    reg.vm_by_name(name).cloned()
}

fn check(sys: &Path, vm: &str) -> Readiness {
    check_windows_ready(&CheckOptions {
        vm: vm.into(),
        disk: sys.to_path_buf(),
        accel: xtask::qemu::Accel::Tcg,
        cpu: None,
    })
    .unwrap_or_else(|e| panic!("check-windows-ready --vm {vm}: {e}"))
}

fn unmet(r: &Readiness) -> Vec<&'static str> {
    r.checks.iter().filter(|c| !c.met).map(|c| c.name).collect()
}

fn line<'a>(r: &'a Readiness, name: &str) -> &'a str {
    r.text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` line in\n{}", r.text))
}

#[test]
fn add_vm_defines_a_windows_vm_that_check_windows_ready_finds_ready() {
    let dir = scratch("ok");
    let iso_path = dir.join("install.iso");
    let iso = write_iso(&iso_path, 40);
    let sys = dir.join("system.img");
    let code = xtask(&[
        "disk",
        "add-vm",
        "--device-model",
        "windows",
        "--install-media",
        &p(&iso_path),
        "--disk-size",
        "64G",
        "--name",
        "win",
        "--disk",
        &p(&sys),
    ]);
    assert_eq!(
        code,
        ExitCode::SUCCESS,
        "add-vm failed (its error is above)"
    );

    let vm = record(&sys, "win").expect("the VM is in the registry");
    assert_eq!(vm.device_model, DeviceModel::Windows);
    assert_eq!((vm.vcpus, vm.memory_bytes), (2, 4 << 30));
    assert!(!vm.tpm_nv.is_empty());
    assert!(matches!(vm.boot, BootSource::Firmware { .. }));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(
        (vm.disks[0].extent.len, vm.disks[0].read_only),
        (64 << 30, false)
    );
    assert!(vm.disks[1].read_only);
    // The install media reads back byte-identical from its extent.
    let mut disk = FileDisk::open(&sys, true).unwrap();
    let mut back = vec![0u8; iso.len()];
    registry::read_extent(&mut disk, vm.disks[1].extent, 0, &mut back).unwrap();
    assert!(back == iso, "the ISO in disk1 differs from the file");
    // The 64 GiB system disk was not written: the image stays sparse.
    let used = std::fs::metadata(&sys).unwrap().blocks() * 512;
    assert!(
        used < 1 << 30,
        "the system disk image uses {used} bytes of host space"
    );

    let r = check(&sys, "win");
    assert!(r.all_met(), "{}", r.text);
    assert_eq!(r.checks.len(), 11, "{}", r.text);
    assert!(
        line(&r, "db: Windows Production PCA 2011").contains(
            "Microsoft Windows Production PCA 2011 (sha1 580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d)"
        ),
        "{}",
        r.text
    );
    assert!(line(&r, "install media").contains("ISO 9660"), "{}", r.text);
    assert!(r
        .text
        .ends_with("windows-ready: VM 'win' meets all 11 requirements\n"));
    assert_eq!(
        xtask(&["check-windows-ready", "--vm", "win", "--disk", &p(&sys)]),
        ExitCode::SUCCESS
    );
    // The name is taken now.
    assert_ne!(
        xtask(&[
            "disk",
            "add-vm",
            "--device-model",
            "windows",
            "--name",
            "win",
            "--disk",
            &p(&sys),
        ]),
        ExitCode::SUCCESS
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vm_short_of_the_minimums_reports_each_failure_and_fails() {
    let dir = scratch("short");
    let sys = dir.join("system.img");
    let short = [
        "disk",
        "add-vm",
        "--device-model",
        "windows",
        "--name",
        "small",
        "--mem",
        "2G",
        "--tpm-nv",
        "0",
        "--disk",
        &p(&sys),
    ];
    // Refused below the minimums without --force, before anything is made.
    assert_ne!(xtask(&short), ExitCode::SUCCESS);
    assert!(!sys.exists());
    let mut forced = short.to_vec();
    forced.push("--force");
    assert_eq!(xtask(&forced), ExitCode::SUCCESS);

    let r = check(&sys, "small");
    assert_eq!(
        unmet(&r),
        ["TPM 2.0", "RAM >= 4 GiB", "install media"],
        "{}",
        r.text
    );
    assert!(line(&r, "RAM >= 4 GiB").contains("too small"), "{}", r.text);
    assert!(line(&r, "TPM 2.0").contains("MISSING"), "{}", r.text);
    assert!(line(&r, "install media").contains("MISSING"), "{}", r.text);
    assert!(r.text.ends_with(
        "windows-ready: VM 'small' does not meet 3 of 11 requirements: TPM 2.0, RAM >= 4 GiB, install media\n"
    ));
    assert_ne!(
        xtask(&["check-windows-ready", "--vm", "small", "--disk", &p(&sys)]),
        ExitCode::SUCCESS
    );

    // A uefi-acpi VM made with the generic add-vm (an empty variable store, no
    // TPM, no disk): every Secure Boot line and the device model fail too.
    let fw = dir.join("code.fd");
    std::fs::write(&fw, [0x11u8; 8192]).unwrap();
    let words: Vec<String> = [
        "add-vm",
        &p(&sys),
        "--name",
        "plain",
        "--vcpus",
        "1",
        "--mem",
        "1G",
        "--firmware",
        &p(&fw),
        "--vars-size",
        "4M",
        "--tpm-nv",
        "0",
    ]
    .map(String::from)
    .to_vec();
    registry::cli::run(&words).unwrap_or_else(|e| panic!("disk {words:?}: {e}"));
    let r = check(&sys, "plain");
    assert_eq!(
        unmet(&r),
        [
            "TPM 2.0",
            "Secure Boot capable",
            "Secure Boot enabled",
            "db: Windows Production PCA 2011",
            "cores >= 2",
            "RAM >= 4 GiB",
            "system disk >= 64 GiB",
            "device model",
            "install media"
        ],
        "{}",
        r.text
    );
    assert!(
        line(&r, "Secure Boot capable").contains("never written"),
        "{}",
        r.text
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_non_iso_file_is_refused_by_add_vm() {
    let dir = scratch("not-iso");
    let sys = dir.join("system.img");
    // A file the size of a small ISO whose descriptors are not there.
    let junk = dir.join("install.iso");
    std::fs::write(&junk, vec![0x5au8; 40 * 2048]).unwrap();
    let add = |media: &Path| {
        let words: Vec<String> = [
            "--device-model",
            "windows",
            "--name",
            "win",
            "--install-media",
            &p(media),
            "--disk",
            &p(&sys),
        ]
        .map(String::from)
        .to_vec();
        let layout = Layout::detect();
        let vm = xtask::windows::parse(&layout, &words).unwrap();
        xtask::windows::add_vm(&layout, &vm)
    };
    let e = add(&junk)
        .expect_err("a non-ISO file was accepted")
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("is not an ISO 9660 or UDF image"), "{e}");
    let e = add(&dir.join("absent.iso"))
        .expect_err("a missing file was accepted")
        .to_string();
    assert!(e.contains("absent.iso") && e.lines().count() == 1, "{e}");
    // Through the command line: a failure, and nothing was made.
    assert_ne!(
        xtask(&[
            "disk",
            "add-vm",
            "--device-model",
            "windows",
            "--name",
            "win",
            "--install-media",
            &p(&junk),
            "--disk",
            &p(&sys),
        ]),
        ExitCode::SUCCESS
    );
    assert!(!sys.exists(), "a refused add-vm created the system disk");
    let _ = std::fs::remove_dir_all(&dir);
}
