//! The Windows-shaped VM with default settings (`cargo xtask run --profile
//! windows`: firmware with Secure Boot, ACPI, PCIe with the NVMe system disk and
//! MSIs through the GICv2m frame, xHCI with the USB keyboard and tablet, CRB TPM,
//! ramfb) suspends (`monitor vm suspend windows`) and, after a host restart
//! (`run --profile windows --vm windows`), resumes: no firmware, GRUB or kernel
//! boot; its counter goes on, and its NVMe I/O queues keep completing through
//! their interrupts.

use std::path::Path;
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use registry::cli::FileDisk;
use registry::Registry;
use xtask::boot_chain::marker::GRUB_WELCOME;
use xtask::run::{Profile, RunOptions};
use xtask::sysdisk::WINDOWS_VM_NAME;
use xtask::Layout;

/// A boot through the signed chain under the hypervisor under TCG on a shared
/// host.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// One line a second: a counter, the uptime, and how many interrupts the NVMe I/O
/// queues took so far after reading 1 MiB from the namespace past the page cache.
const COUNTER: &str = r#"i=0; while :; do i=$((i+1))
dd if=/dev/nvme0n1 of=/dev/null bs=65536 count=16 iflag=direct 2>/dev/null
t=0; while read n a b rest; do case "$rest" in *nvme0q[1-9]*) t=$((t+a+b));; esac; done < /proc/interrupts
echo "count=$i up=$(cut -d' ' -f1 /proc/uptime) irqs=$t"
sleep 1; done
"#;

#[derive(Debug, Clone, PartialEq)]
struct Tick {
    count: u64,
    uptime: f64,
    irqs: u64,
}

fn ticks(console: &str) -> Vec<Tick> {
    let re = regex::Regex::new(r"(?m)^count=(\d+) up=([\d.]+) irqs=(\d+)\r?$").unwrap();
    re.captures_iter(console)
        .map(|c| Tick {
            count: c[1].parse().unwrap(),
            uptime: c[2].parse().unwrap(),
            irqs: c[3].parse().unwrap(),
        })
        .collect()
}

/// Consecutive ticks, each after NVMe I/O completed through its interrupts.
fn assert_going_on(t: &[Tick], tail: &str) {
    for w in t.windows(2) {
        assert_eq!(w[1].count, w[0].count + 1, "{w:?}\n{tail}");
        assert!(w[1].irqs > w[0].irqs, "no NVMe interrupt in {w:?}\n{tail}");
    }
}

fn saved_state_size(disk: &Path) -> u64 {
    let mut d = FileDisk::open(disk, true).unwrap();
    let reg = Registry::open(&mut d).expect("the registry opens");
    reg.vm_by_name(WINDOWS_VM_NAME)
        .expect("the windows VM")
        .saved_state
        .size
}

#[test]
fn a_windows_vm_suspends_and_resumes_across_a_host_restart() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-windows-suspend.img");
    let first = RunOptions {
        profile: Profile::Windows,
        system_disk: Some(disk.clone()),
        fresh: true,
        smp: Some(2),
        guest_cmd: Some(COUNTER.into()),
        script: Some(script(
            "windows-suspend-1.script",
            &format!("expect (?m)^count=3 \nmonitor vm suspend {WINDOWS_VM_NAME}\n"),
        )),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let one = boot(&first);
    let tail1 = console_tail(&one);
    let got = statuses(&one.console);
    assert!(
        got.iter()
            .any(|s| s.starts_with(&format!("ok: vm {WINDOWS_VM_NAME} suspended ("))),
        "`vm suspend` did not suspend the windows VM: {got:#?}\n{tail1}"
    );
    assert_eq!(one.exit_code(), Some(0), "QEMU did not power off\n{tail1}");
    let before = ticks(&one.console);
    let last = before
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no counter\n{tail1}"));
    assert_going_on(&before, &tail1);
    assert!(saved_state_size(&disk) > 0, "no saved state committed");

    // Host restart: the VM as its record defines it.
    let want = last.count + 3;
    let second = RunOptions {
        profile: Profile::Windows,
        vm: Some(WINDOWS_VM_NAME.into()),
        system_disk: Some(disk.clone()),
        script: Some(script(
            "windows-suspend-2.script",
            &format!("expect (?m)^count={want} \n"),
        )),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let two = boot(&second);
    let tail2 = console_tail(&two);
    assert_eq!(two.verdict(), Ok(()), "start 2\n{tail2}");
    assert!(
        two.console.contains("resumed from its saved state"),
        "the hypervisor did not resume\n{tail2}"
    );
    assert!(
        !two.console.contains(GRUB_WELCOME) && !two.console.contains("Linux version "),
        "the chain booted again after resume\n{tail2}"
    );
    assert_eq!(saved_state_size(&disk), 0, "the image was not consumed");
    let after = ticks(&two.console);
    assert!(
        after.len() >= 3,
        "the counter did not go on after resume\n{tail2}"
    );
    assert_eq!(
        after[0].count,
        last.count + 1,
        "{after:?} after {last:?}\n{tail2}"
    );
    assert!(after[0].uptime > last.uptime, "uptime restarted\n{tail2}");
    assert!(
        after[0].irqs > last.irqs,
        "{after:?} after {last:?}\n{tail2}"
    );
    assert_going_on(&after, &tail2);
    let _ = std::fs::remove_file(&disk);
}
