//! Tests of the host CLI (feature `std`) on temporary image files.

use std::path::PathBuf;

use registry::cli::run;
use registry::cli::FileDisk;
use registry::{read_extent, BootSource, ExtentRole, Registry, SlotId, SlotStatus};

/// A temporary directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let dir = std::env::temp_dir().join(format!("registry-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    fn path(&self, f: &str) -> String {
        self.0.join(f).to_str().unwrap().to_string()
    }
    fn file(&self, f: &str, data: &[u8]) -> String {
        let p = self.path(f);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cli(words: &[&str]) -> Result<String, String> {
    run(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn open(path: &str) -> (FileDisk, Registry) {
    let mut d = FileDisk::open(std::path::Path::new(path), true).unwrap();
    let r = Registry::open(&mut d).unwrap();
    (d, r)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn create_list_inspect_empty() {
    let t = Tmp::new("empty");
    let img = t.path("sys.img");
    let out = cli(&[
        "create",
        &img,
        "--size",
        "32M",
        "--uuid",
        "11111111-2222-4333-8444-555555555555",
    ])
    .unwrap();
    assert!(
        out.contains("11111111-2222-4333-8444-555555555555"),
        "{out}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
    let list = cli(&["list", &img]).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    let inspect = cli(&["inspect", &img]).unwrap();
    assert!(inspect.contains("generation 1"), "{inspect}");
    assert!(
        inspect.contains("slot A: valid, generation 1 (active)"),
        "{inspect}"
    );
    assert!(inspect.contains("slot B: REFUSED: blank"), "{inspect}");
    assert!(inspect.contains("0 VM(s)"), "{inspect}");
    // Refuses to overwrite, and refuses a too-small disk without leaving a file.
    assert!(cli(&["create", &img]).unwrap_err().contains("exists"));
    let small = t.path("small.img");
    assert!(cli(&["create", &small, "--size", "1M"]).is_err());
    assert!(!std::path::Path::new(&small).exists());
}

#[test]
fn add_linux_vm_with_images_and_policy() {
    let t = Tmp::new("linux");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "64M"]).unwrap();
    let kernel = t.file("Image", &pattern(300_001, 1));
    let initrd = t.file("initrd", &pattern(70_000, 2));
    let out = cli(&[
        "add-vm",
        &img,
        "--name",
        "debian",
        "--vcpus",
        "2",
        "--mem",
        "512M",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--cmdline",
        "console=ttyAMA0 rdinit=/init",
        "--disk-size",
        "4M",
        "--disk-size",
        "64K:ro",
        "--autostart",
        "--no-resume-on-boot",
        "--uuid",
        "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
    ])
    .unwrap();
    assert!(
        out.contains("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
        "{out}"
    );

    let (mut d, reg) = open(&img);
    let vm = reg.vm_by_name("debian").unwrap();
    assert_eq!((vm.vcpus, vm.memory_bytes), (2, 512 << 20));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[0].extent.len, 4 << 20);
    assert!(vm.disks[1].read_only && !vm.disks[0].read_only);
    assert!(vm.policy.autostart && !vm.policy.resume_on_boot && !vm.policy.visible_on_start);
    assert_eq!(vm.tpm_nv.len, registry::cli::DEFAULT_TPM_NV_SIZE);
    assert_eq!(
        reg.read_blob(&mut d, vm.uuid, ExtentRole::Kernel).unwrap(),
        pattern(300_001, 1)
    );
    assert_eq!(
        reg.read_blob(&mut d, vm.uuid, ExtentRole::Initrd).unwrap(),
        pattern(70_000, 2)
    );

    let list = cli(&["list", &img]).unwrap();
    assert!(
        list.contains("debian") && list.contains("linux-dt") && list.contains("512M"),
        "{list}"
    );
    let inspect = cli(&["inspect", &img, "debian"]).unwrap();
    for want in [
        "cmdline       console=ttyAMA0 rdinit=/init",
        "300001 bytes",
        "checksum ok",
        "read-only",
        "schema v1",
        "autostart                  true",
        "resume_on_boot             false",
        "visible_on_start           false",
        "suspend_on_host_shutdown   true",
    ] {
        assert!(inspect.contains(want), "missing {want:?} in\n{inspect}");
    }
    assert_eq!(
        inspect,
        cli(&["inspect", &img, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"]).unwrap()
    );
    // A second VM with the same name is refused and changes nothing.
    let before = std::fs::read(&img).unwrap();
    let err = cli(&[
        "add-vm", &img, "--name", "debian", "--vcpus", "1", "--mem", "128M", "--kernel", &kernel,
    ])
    .unwrap_err();
    assert!(err.contains("name"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn add_firmware_vm_defaults_to_uefi() {
    let t = Tmp::new("uefi");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "64M"]).unwrap();
    let code = t.file("code.fd", &pattern(128 << 10, 3));
    let vars = t.file("vars.fd", &pattern(64 << 10, 4));
    cli(&[
        "add-vm",
        &img,
        "--name",
        "win",
        "--vcpus",
        "4",
        "--mem",
        "4G",
        "--firmware",
        &code,
        "--vars",
        &vars,
        "--disk-size",
        "8M",
        "--visible-on-start",
    ])
    .unwrap();
    cli(&[
        "add-vm",
        &img,
        "--name",
        "win2",
        "--vcpus",
        "4",
        "--mem",
        "4G",
        "--firmware",
        &code,
        "--vars-size",
        "1M",
        "--tpm-nv",
        "0",
    ])
    .unwrap();
    let (mut d, reg) = open(&img);
    let win = reg.vm_by_name("win").unwrap();
    assert_eq!(win.device_model, registry::DeviceModel::UefiAcpi);
    assert!(win.policy.visible_on_start);
    let BootSource::Firmware { vars, .. } = win.boot else {
        panic!("not firmware")
    };
    let back = registry::AbStore::new(vars).unwrap().load(&mut d).unwrap();
    assert_eq!(back, Some(pattern(64 << 10, 4)));
    assert_eq!(
        reg.read_blob(&mut d, win.uuid, ExtentRole::FirmwareCode)
            .unwrap(),
        pattern(128 << 10, 3)
    );
    let win2 = reg.vm_by_name("win2").unwrap();
    assert!(win2.tpm_nv.is_empty());
    let BootSource::Firmware { vars, .. } = win2.boot else {
        panic!("not firmware")
    };
    assert_eq!(vars.len, 1 << 20);
    let inspect = cli(&["inspect", &img, "win2"]).unwrap();
    assert!(
        inspect.contains("firmware-vars extent") && inspect.contains("two-copy atomic store"),
        "{inspect}"
    );
    assert!(inspect.contains("checksum ok"), "{inspect}");
}

#[test]
fn import_copies_an_image_into_a_disk() {
    let t = Tmp::new("import");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "32M"]).unwrap();
    let kernel = t.file("Image", &pattern(5000, 5));
    cli(&[
        "add-vm",
        &img,
        "--name",
        "vm",
        "--vcpus",
        "1",
        "--mem",
        "64M",
        "--kernel",
        &kernel,
        "--disk-size",
        "3M",
    ])
    .unwrap();
    let raw = t.file("disk.raw", &pattern((2 << 20) + 777, 6));
    let out = cli(&["import", &img, "vm", "--disk", "0", "--image", &raw]).unwrap();
    assert!(
        out.contains(&format!("imported {} bytes", (2 << 20) + 777)),
        "{out}"
    );
    let (mut d, reg) = open(&img);
    let e = reg.vm_by_name("vm").unwrap().disks[0].extent;
    let mut back = vec![0u8; (2 << 20) + 1024];
    read_extent(&mut d, e, 0, &mut back).unwrap();
    assert_eq!(&back[..(2 << 20) + 777], &pattern((2 << 20) + 777, 6)[..]);
    assert!(back[(2 << 20) + 777..].iter().all(|&b| b == 0));

    let big = t.file("big.raw", &vec![1u8; (3 << 20) + 1]);
    assert!(cli(&["import", &img, "vm", "--disk", "0", "--image", &big])
        .unwrap_err()
        .contains("holds"));
    assert!(cli(&["import", &img, "vm", "--disk", "1", "--image", &raw])
        .unwrap_err()
        .contains("no disk 1"));
    assert!(
        cli(&["import", &img, "nope", "--disk", "0", "--image", &raw])
            .unwrap_err()
            .contains("no VM")
    );
}

#[test]
fn set_policy_and_remove_vm() {
    let t = Tmp::new("policy");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "32M"]).unwrap();
    let kernel = t.file("Image", &pattern(5000, 7));
    cli(&[
        "add-vm", &img, "--name", "a", "--vcpus", "1", "--mem", "64M", "--kernel", &kernel,
    ])
    .unwrap();
    cli(&[
        "set-policy",
        &img,
        "a",
        "--pause-on-hide",
        "--no-suspend-on-host-shutdown",
    ])
    .unwrap();
    let (_, reg) = open(&img);
    let p = reg.vm_by_name("a").unwrap().policy;
    assert!(p.pause_on_hide && !p.suspend_on_host_shutdown && p.resume_on_boot);
    let gen = reg.generation();
    cli(&["remove-vm", &img, "a"]).unwrap();
    let (_, reg) = open(&img);
    assert!(reg.vms().is_empty());
    assert_eq!(reg.generation(), gen + 1);
    assert_eq!(reg.free_bytes(), reg.superblock().data_size);
    assert!(matches!(
        reg.slot_status(SlotId::A),
        SlotStatus::Valid { .. }
    ));
    assert!(matches!(
        reg.slot_status(SlotId::B),
        SlotStatus::Valid { .. }
    ));
}

#[test]
fn bad_invocations_and_corrupt_images_are_reported() {
    let t = Tmp::new("errors");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "32M"]).unwrap();
    let kernel = t.file("Image", &pattern(5000, 8));
    let fw = t.file("code.fd", &pattern(5000, 9));
    assert!(cli(&[]).is_err());
    assert!(cli(&["frobnicate"])
        .unwrap_err()
        .contains("unknown command"));
    assert!(
        cli(&["add-vm", &img, "--vcpus", "1", "--mem", "64M", "--kernel", &kernel])
            .unwrap_err()
            .contains("--name")
    );
    assert!(cli(&[
        "add-vm",
        &img,
        "--name",
        "x",
        "--vcpus",
        "1",
        "--mem",
        "64M",
        "--kernel",
        &kernel,
        "--firmware",
        &fw
    ])
    .unwrap_err()
    .contains("exactly one"));
    assert!(cli(&[
        "add-vm", &img, "--name", "x", "--vcpus", "1", "--mem", "64M", "--kernel", &kernel,
        "--bogus", "1"
    ])
    .unwrap_err()
    .contains("unknown option"));
    assert!(cli(&[
        "add-vm", &img, "--name", "x", "--vcpus", "1", "--mem", "3M", "--kernel", &kernel
    ])
    .unwrap_err()
    .contains("memory"));
    assert!(cli(&[
        "add-vm",
        &img,
        "--name",
        "x",
        "--vcpus",
        "1",
        "--mem",
        "64M",
        "--kernel",
        &kernel,
        "--disk-size",
        "1G"
    ])
    .unwrap_err()
    .contains("no free extent"));
    assert!(cli(&["list", &t.path("missing.img")]).is_err());

    // Corrupt both slots: inspect names each slot's problem and nothing is rewritten.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[registry::defs::SLOT_A_OFFSET as usize + 8] ^= 0xff;
    bytes[registry::defs::SLOT_B_OFFSET as usize] = 0x55;
    std::fs::write(&img, &bytes).unwrap();
    let err = cli(&["inspect", &img]).unwrap_err();
    assert!(
        err.contains("slot A header checksum mismatch") && err.contains("slot B no slot magic"),
        "{err}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), bytes);
}

#[test]
fn add_vm_records_the_msi_controller_and_disk_bus_and_list_shows_them() {
    let t = Tmp::new("pci-options");
    let img = t.path("sys.img");
    cli(&["create", &img, "--size", "64M"]).unwrap();
    let kernel = t.file("Image", &pattern(4096, 3));
    let firmware = t.file("code.fd", &pattern(4096, 4));
    let linux = |name: &str, extra: &[&str]| {
        let mut w = vec![
            "add-vm",
            &img,
            "--name",
            name,
            "--vcpus",
            "1",
            "--mem",
            "64M",
            "--kernel",
            &kernel,
            "--disk-size",
            "1M",
        ];
        w.extend_from_slice(extra);
        cli(&w)
    };
    linux("plain", &["--device-model", "linux-dt-nvme"]).unwrap();
    linux("its", &["--device-model", "linux-dt-nvme", "--msi", "its"]).unwrap();
    cli(&[
        "add-vm",
        &img,
        "--name",
        "win",
        "--vcpus",
        "1",
        "--mem",
        "64M",
        "--firmware",
        &firmware,
        "--vars-size",
        "1M",
        "--disk-size",
        "1M",
        "--device-model",
        "windows",
        "--msi",
        "its",
        "--disk-bus",
        "virtio-pci",
    ])
    .unwrap();
    // Combinations the device model cannot have, and unknown values.
    for (extra, why) in [
        (&["--msi", "its"][..], "PCI Express"),
        (
            &[
                "--device-model",
                "linux-dt-nvme",
                "--disk-bus",
                "virtio-pci",
            ][..],
            "windows",
        ),
        (
            &["--device-model", "linux-dt-nvme", "--msi", "lpi"][..],
            "v2m or its",
        ),
    ] {
        let err = linux("bad", extra).unwrap_err();
        assert!(err.contains(why), "{extra:?}: {err}");
    }
    let (_d, reg) = open(&img);
    let get = |n: &str| {
        let v = reg.vm_by_name(n).unwrap();
        (v.msi.as_str(), v.disk_bus.as_str())
    };
    assert_eq!(get("plain"), ("v2m", "nvme"));
    assert_eq!(get("its"), ("its", "nvme"));
    assert_eq!(get("win"), ("its", "virtio-pci"));
    assert!(
        reg.vm_by_name("bad").is_none(),
        "a refused add-vm adds nothing"
    );
    let list = cli(&["list", &img]).unwrap();
    let row = |n: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(n))
            .unwrap_or_else(|| panic!("{n} not listed\n{list}"))
            .to_string()
    };
    assert!(
        list.lines().next().unwrap().contains("MSI  DISK-BUS"),
        "{list}"
    );
    assert!(row("plain").contains(" v2m  nvme "), "{list}");
    assert!(row("win").contains(" its  virtio-pci "), "{list}");
    let inspect = cli(&["inspect", &img, "win"]).unwrap();
    assert!(inspect.contains("msi           its"), "{inspect}");
    assert!(inspect.contains("disk bus      virtio-pci"), "{inspect}");
}
