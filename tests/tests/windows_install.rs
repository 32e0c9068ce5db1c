//! Install media of the Windows-shaped VM (issue 15; `cargo xtask run
//! --profile windows --install-media PATH.iso`): the ISO is copied into the
//! `windows` VM's record as its read-only disk, and the hypervisor serves that
//! extent of the system disk as USB mass storage on the VM's xHCI, through the
//! system disk's asynchronous I/O (the bulk endpoints NAK while a request is
//! with the disk). Linux, booted the way Windows is (Secure Boot, shim → GRUB →
//! kernel from the ESP on NVMe; the firmware tries the ISO first, which has
//! no EFI boot image), finds the device on the xHCI at
//! 00:03.0 as a write-protected SCSI disk, reads the whole medium back
//! byte-identical while a second shell loop keeps printing, and cannot write
//! it; the medium is unchanged after.

use std::path::Path;
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use registry::cli::FileDisk;
use registry::{DeviceModel, Registry};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Profile, RunOptions};
use xtask::Layout;

/// A boot through the signed chain under the hypervisor (as tests/windows.rs),
/// plus an 8 MiB read through the emulated USB disk, under TCG on a shared host.
const TIMEOUT: Duration = Duration::from_secs(900);

/// The medium: an ISO 9660 image of 8 MiB (a whole number of the registry's
/// blocks, so the USB disk is exactly the ISO).
const ISO_BYTES: usize = 8 << 20;
const ISO_SECTOR: usize = 2048;

/// An ISO 9660 image: a primary volume descriptor and the set terminator at
/// sectors 16 and 17 (what `add-vm`'s media check looks for), then xorshift
/// bytes so every block differs.
fn iso() -> Vec<u8> {
    let mut img = vec![0u8; ISO_BYTES];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in img[18 * ISO_SECTOR..].iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    let sectors = (ISO_BYTES / ISO_SECTOR) as u32;
    let pvd = 16 * ISO_SECTOR;
    img[pvd] = 1;
    img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
    img[pvd + 6] = 1;
    img[pvd + 8..pvd + 40].copy_from_slice(&[b' '; 32]);
    img[pvd + 40..pvd + 72].copy_from_slice(b"RAYOS_INSTALL_MEDIA_TEST        ");
    img[pvd + 80..pvd + 84].copy_from_slice(&sectors.to_le_bytes());
    img[pvd + 84..pvd + 88].copy_from_slice(&sectors.to_be_bytes());
    img[pvd + 128..pvd + 130].copy_from_slice(&(ISO_SECTOR as u16).to_le_bytes());
    img[pvd + 130..pvd + 132].copy_from_slice(&(ISO_SECTOR as u16).to_be_bytes());
    img[pvd + 881] = 1;
    let term = 17 * ISO_SECTOR;
    img[term] = 255;
    img[term + 1..term + 6].copy_from_slice(b"CD001");
    img[term + 6] = 1;
    img
}

fn host_md5(path: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .expect("run md5sum on the host");
    assert!(out.status.success(), "md5sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum output")
        .to_string()
}

/// The guest: waits (bounded) for the USB disk, lists the USB devices, reports
/// the disk's place, size and read-only flag and the kernel's write-protect
/// line; reads the whole medium with dd in the background while the
/// foreground loop prints `tick` lines until dd is done; then tries to write a
/// block (even with the kernel's read-only flag cleared, `sd` refuses to open a
/// write-protected disk for writing, so no SCSI WRITE is sent: the device's
/// DATA PROTECT answer is tested in `xhci`'s host tests) and reads the medium
/// again from the device.
const GUEST_CMD: &str = r#"w(){ i=0; while ! eval "$1" && [ $i -lt 200 ]; do sleep 0.2; i=$((i+1)); done; }
sd(){ ls /sys/block | grep ^sd | head -1; }
w '[ -n "$(sd)" ]'
s=$(sd)
for u in /sys/bus/usb/devices/*; do [ -f $u/product ] && echo "usbdev: $(cat $u/idVendor):$(cat $u/idProduct) $(cat $u/product)"; done
echo "sd=$s"
echo "sdpath=$(readlink /sys/block/$s)"
echo "size=$(cat /sys/block/$s/size)"
echo "ro=$(cat /sys/block/$s/ro)"
dmesg | grep -i 'write protect' | sed 's/^/wp: /'
echo read-start
(dd if=/dev/$s bs=64k 2>/dev/null | md5sum | cut -d' ' -f1 > /tmp/md5) &
p=$!
n=0; while kill -0 $p 2>/dev/null; do n=$((n+1)); echo "tick $n"; sleep 0.1; done
wait $p
echo read-end
echo "ticks=$n"
echo "md5=$(cat /tmp/md5)"
busybox blockdev --setrw /dev/$s; echo "setrw=$?"
err=$(dd if=/dev/zero of=/dev/$s bs=4096 count=1 seek=100 conv=notrunc,fsync 2>&1); echo "write_rc=$?"
echo "write_err=$err" | head -n 1
sync; echo 3 > /proc/sys/vm/drop_caches
echo "md5after=$(dd if=/dev/$s bs=64k 2>/dev/null | md5sum | cut -d' ' -f1)"
"#;

#[test]
fn install_media_on_the_system_disk_is_a_write_protected_usb_disk_read_back_byte_identical() {
    let _g = boot_lock();
    let layout = Layout::detect();
    let dir = layout.out.join("test-scripts");
    std::fs::create_dir_all(&dir).expect("create target/test-scripts");
    let iso_path = dir.join("windows-install-media.iso");
    std::fs::write(&iso_path, iso()).expect("write the ISO");
    let want = host_md5(&iso_path);
    let disk = layout.out.join("test-windows-install.img");

    let o = RunOptions {
        profile: Profile::Windows,
        system_disk: Some(disk.clone()),
        fresh: true,
        // Two vCPUs, the profile's default (with one, the firmware's NVMe
        // driver, which creates two I/O queues, finds no disk).
        smp: Some(2),
        install_media: Some(iso_path.clone()),
        guest_cmd: Some(GUEST_CMD.into()),
        ..RunOptions::headless(Default::default(), TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");

    // The hypervisor took the record's read-only disk as USB storage, not as a
    // refusal, and the guest ran to the end of its command.
    assert!(
        c.contains("(install media; xHCI at PCIe 00:03.0, port 5)"),
        "the hypervisor did not make the install media USB storage\n{tail}"
    );
    assert!(!c.contains("refused"), "\n{tail}");
    assert!(
        c.contains("as NVMe namespace 1"),
        "the system disk is not on NVMe\n{tail}"
    );
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");

    // On the bus as the storage device, a SCSI disk below the xHCI at 00:03.0,
    // exactly the ISO's size, write-protected (MODE SENSE's WP bit).
    assert!(
        c.lines()
            .any(|l| l.starts_with("usbdev: 1209:") && l.ends_with("RayOS USB Storage")),
        "no USB storage device in /sys/bus/usb/devices\n{tail}"
    );
    let path = console_value(&c, "sdpath").unwrap_or_default();
    assert!(
        path.contains("/0000:00:03.0/usb"),
        "the disk is not below the xHCI: {path}\n{tail}"
    );
    let sectors = (ISO_BYTES / 512).to_string();
    assert_eq!(
        console_value(&c, "size"),
        Some(sectors.as_str()),
        "\n{tail}"
    );
    assert_eq!(console_value(&c, "ro"), Some("1"), "\n{tail}");
    assert!(
        c.lines()
            .any(|l| l.starts_with("wp: ") && l.contains("Write Protect is on")),
        "the kernel did not see the write-protect bit\n{tail}"
    );

    // The whole medium reads back byte-identical; the other loop printed while
    // dd ran (the vCPU was never held by the disk) and ended when it did.
    assert_eq!(
        console_value(&c, "md5"),
        Some(want.as_str()),
        "the USB disk differs from the ISO\n{tail}"
    );
    let (start, end) = (
        c.find("\nread-start").expect("no read-start"),
        c.find("\nread-end")
            .unwrap_or_else(|| panic!("no read-end\n{tail}")),
    );
    let ticks = c[start..end]
        .lines()
        .filter(|l| l.starts_with("tick "))
        .count();
    eprintln!("windows_install: {ticks} tick lines while the 8 MiB medium was read");
    assert!(ticks > 0, "nothing printed while dd read\n{tail}");
    assert_eq!(
        console_value(&c, "ticks"),
        Some(ticks.to_string().as_str()),
        "\n{tail}"
    );

    // A write fails (the write-protect bit makes the kernel refuse it) and the
    // medium is unchanged.
    let rc = console_value(&c, "write_rc").unwrap_or_else(|| panic!("no write\n{tail}"));
    assert_ne!(rc, "0", "a write to the install media succeeded\n{tail}");
    eprintln!(
        "windows_install: the write: {}",
        console_value(&c, "write_err").unwrap_or_default()
    );
    assert_eq!(
        console_value(&c, "md5after"),
        Some(want.as_str()),
        "the medium changed\n{tail}"
    );
    assert!(!c.contains("data abort injected"), "\n{tail}");

    // The host: the record has the system disk and the ISO as its read-only
    // disk, the ISO's bytes in its extent.
    let mut fd = FileDisk::open(&disk, true).unwrap();
    let reg = Registry::open(&mut fd).unwrap();
    let vm = reg
        .vm_by_name(xtask::sysdisk::WINDOWS_VM_NAME)
        .unwrap_or_else(|| panic!("no windows VM on {}", disk.display()))
        .clone();
    assert_eq!(vm.device_model, DeviceModel::Windows);
    assert_eq!(vm.disks.len(), 2);
    assert!(!vm.disks[0].read_only && vm.disks[1].read_only);
    let mut back = vec![0u8; ISO_BYTES];
    registry::read_extent(&mut fd, vm.disks[1].extent, 0, &mut back).unwrap();
    assert!(back == iso(), "the ISO in the record's extent differs");
    drop(fd);
    let _ = std::fs::remove_file(&disk);
}
