//! The xHCI controller in a VM (`cargo xtask run --usb --usb-storage IMAGE`):
//! Linux finds the function at PCIe 00:03.0 by its class (0c/03/30), binds
//! `xhci_hcd` with MSI-X through the GICv2m frame, enumerates the USB HID
//! keyboard and tablet (input devices with evdev nodes) and the read-only USB
//! mass-storage image; the image reads back byte-identical; a key typed through
//! the hypervisor monitor (`input key`, through the input router) arrives in the keyboard's evdev node; the
//! storage device unplugged and plugged back through the monitor (`usb detach`,
//! `usb attach`) disappears from and comes back to the guest, reading the same;
//! an in-memory snapshot and rollback of the VM keeps the controller working;
//! with Bus Master Enable cleared by the guest the controller's DMA is refused
//! (Host Controller Error) and the hypervisor carries on.
//! One boot for all of it, beside the authority partition (its shell runs the
//! `monitor` lines).

use std::time::Duration;

use integration_tests::{boot_lock, console_tail, console_value, script};
use xtask::run::{run_captured, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(420);
/// The image's size: 4 MiB of patterned bytes.
const IMAGE_BYTES: usize = 4 << 20;

/// A deterministic image whose sectors all differ (xorshift bytes).
fn image() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..IMAGE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn host_md5(path: &std::path::Path) -> String {
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

/// The guest: waits (bounded) for each state, prints what it found. `w COND`
/// polls COND for up to 40 s; `sd` names the first SCSI disk.
const GUEST_CMD: &str = "w(){ i=0; while ! eval \"$1\" && [ $i -lt 200 ]; do sleep 0.2; i=$((i+1)); done; }; \
sd(){ ls /sys/block | grep ^sd | head -1; }; \
d=/sys/bus/pci/devices/0000:00:03.0; \
echo xhci=$(cat $d/class) driver=$(basename $(readlink $d/driver)); \
w '[ -n \"$(sd)\" ]'; \
for u in /sys/bus/usb/devices/*; do [ -f $u/product ] && echo \"usbdev: $(cat $u/idVendor):$(cat $u/idProduct) $(cat $u/product)\"; done; \
awk '/^N:/{n=$0} /^H:/{h=$0} /^B: ABS/{a=$0} /^$/{print \"input: \" n \" | \" h \" | \" a; n=h=a=\"\"}' /proc/bus/input/devices; \
echo md5a=$(md5sum < /dev/$(sd) | cut -d' ' -f1); \
ev=$(awk '/^N:/{n=$0} /^H:/{if (n ~ /Keyboard/) for(i=1;i<=NF;i++) if ($i ~ /^event/) print $i}' /proc/bus/input/devices); \
cat /dev/input/$ev > /tmp/ev & \
sleep 0.5; echo listening=$ev; \
w 'od -An -tx1 -v /tmp/ev | tr -d \" \\n\" | grep -q 01001e0001000000'; \
echo keys=$(od -An -tx1 -v /tmp/ev | tr -d ' \\n'); kill $!; \
echo detach-now; w '[ -z \"$(sd)\" ]'; echo gone=$([ -z \"$(sd)\" ] && echo yes || echo no); \
echo attach-now; w '[ -n \"$(sd)\" ]'; \
echo md5b=$(md5sum < /dev/$(sd) | cut -d' ' -f1); \
grep xhci /proc/interrupts | sed 's/^/irq: /'; \
printf '\\2' | dd of=$d/config bs=1 seek=4 conv=notrunc 2>/dev/null; \
echo bme=$(od -An -tx1 -j4 -N1 $d/config | tr -d ' '); read x; echo resumed=$x";

#[test]
fn linux_enumerates_usb_hid_and_storage_takes_monitor_keys_and_hot_plug() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let dir = layout.out.join("test-scripts");
    std::fs::create_dir_all(&dir).expect("create target/test-scripts");
    let img = dir.join("usb-storage.img");
    std::fs::write(&img, image()).expect("write the USB image");
    let want = host_md5(&img);

    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Room in the host's memory for an in-memory snapshot (as tests/snapshot.rs).
    o.mem = Some(256 << 20);
    o.usb = true;
    o.usb_storage = Some(img.clone());
    o.guest_cmd = Some(GUEST_CMD.into());
    // Beside the authority partition (the default configuration): its shell
    // runs the `monitor` lines; its boot left the VM hidden and not
    // interactive, so the keys need it presented and interactive first.
    o.authority = true;
    o.script = Some(script(
        "usb.script",
        "expect listening=event\n\
         monitor display present linux fullscreen\n\
         monitor input interactive linux on\n\
         # wrong monitor commands first: each refused, nothing changes\n\
         monitor usb attach linux\n\
         monitor input key nosuch a\n\
         # the controller's state (the root complex's PCIR) in a snapshot and back\n\
         monitor vm snapshot linux usb1\n\
         monitor vm rollback linux usb1\n\
         # 'a' (HID usage 0x04): Linux's KEY_A (30) in the keyboard's evdev\n\
         monitor input key linux a\n\
         expect detach-now\n\
         monitor usb detach linux\n\
         monitor usb detach linux\n\
         expect attach-now\n\
         monitor usb attach linux\n\
         # the guest turned Bus Master Enable off: the key's report cannot be\n\
         # written (nor any event): Host Controller Error, hypervisor intact (its\n\
         # line comes before the shell's answer, which the step waits for:\n\
         # checked after the run)\n\
         expect bme=02\n\
         monitor input key linux b\n\
         monitor vm list\n\
         attach linux\n\
         send go\n\
         expect resumed=go\n\
         expect rayos-guest: cmd exit\n\
         expect no VM left to run; the host stays up\n\
         monitor host shutdown\n",
    ));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("could not boot: {e}"));
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;

    // The function by class, bound by xhci_hcd's PCI glue.
    assert!(
        c.contains("xhci=0x0c0330 driver=xhci_hcd"),
        "no xHCI function bound at 00:03.0\n{tail}"
    );
    // Both HID devices and the storage device on the bus.
    for product in [
        "RayOS USB Keyboard",
        "RayOS USB Tablet",
        "RayOS USB Storage",
    ] {
        assert!(
            c.lines()
                .any(|l| l.starts_with("usbdev: 1209:") && l.ends_with(product)),
            "{product} not in /sys/bus/usb/devices\n{tail}"
        );
    }
    // Input devices with evdev handlers: a keyboard (kbd) and an absolute
    // pointer (ABS_X and ABS_Y: ABS=3).
    let input: Vec<&str> = c.lines().filter(|l| l.starts_with("input: ")).collect();
    let device = |name: &str| {
        input
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no input device {name}\n{}\n{tail}", input.join("\n")))
    };
    let kbd = device("RayOS USB Keyboard");
    assert!(
        kbd.contains("kbd") && kbd.contains("event"),
        "{kbd}\n{tail}"
    );
    let tablet = device("RayOS USB Tablet");
    assert!(
        tablet.contains("event") && tablet.contains("ABS=3"),
        "{tablet}\n{tail}"
    );
    // The image reads back byte-identical, before and after the hot-plug.
    assert_eq!(
        console_value(c, "md5a"),
        Some(want.as_str()),
        "USB storage differs from the image\n{tail}"
    );
    // The monitor's key: EV_KEY (1), KEY_A (0x1e), pressed (1) then released (0).
    let keys = console_value(c, "keys").unwrap_or_else(|| panic!("no key events\n{tail}"));
    let press = keys.find("01001e0001000000");
    let release = keys.find("01001e0000000000");
    assert!(
        press.is_some() && release.is_some() && press < release,
        "KEY_A press/release not in the evdev stream: {keys}\n{tail}"
    );
    // Hot-plug: each command once, refusals for the wrong ones.
    // A snapshot holds the controller; after the rollback the guest's driver
    // goes on with it (the key and the hot-plug below come after it).
    assert!(
        c.contains("ok: vm linux snapshot 'usb1' taken (memory"),
        "no snapshot of a USB VM\n{tail}"
    );
    for ok in [
        "ok: vm linux rolled back to snapshot 'usb1'",
        "ok: vm linux USB storage detached",
        "ok: vm linux USB storage attached",
    ] {
        assert_eq!(c.matches(ok).count(), 1, "{ok}\n{tail}");
    }
    for refused in [
        "error: vm linux: the device is attached already; nothing changed",
        "error: no VM named 'nosuch'",
        "error: vm linux: no device is attached there; nothing changed",
    ] {
        assert!(c.contains(refused), "{refused}\n{tail}");
    }
    assert_eq!(
        console_value(c, "gone"),
        Some("yes"),
        "the disk did not go away\n{tail}"
    );
    assert_eq!(
        console_value(c, "md5b"),
        Some(want.as_str()),
        "USB storage differs after re-attach\n{tail}"
    );
    // Bus mastering off (the guest's Command register): the controller's DMA is
    // refused, it reports a Host Controller Error; the monitor still answers and
    // the guest runs on.
    let bme = c
        .find("bme=02")
        .unwrap_or_else(|| panic!("no bme=02\n{tail}"));
    assert!(
        c[bme..].contains("xhci: host controller error"),
        "no Host Controller Error after Bus Master Enable went off\n{tail}"
    );
    // Both keys (`a` before, `b` after) went through the router: a press and a
    // release each.
    assert_eq!(
        c.matches("ok: vm linux: 2 events: 2 delivered, 0 not interactive")
            .count(),
        2,
        "\n{tail}"
    );
    assert!(
        c.lines()
            .any(|l| l.contains("ok: 1 vm: linux vcpus=") && l.contains("state=running")),
        "the monitor did not answer after the DMA refusal\n{tail}"
    );
    assert_eq!(console_value(c, "resumed"), Some("go"), "\n{tail}");
    // The controller's interrupter is an MSI through the v2m frame, and fired.
    let irq = c
        .lines()
        .find(|l| l.starts_with("irq: ") && l.contains("MSI"))
        .unwrap_or_else(|| panic!("xhci has no MSI-X vector\n{tail}"));
    let taken: u64 = irq
        .split_whitespace()
        .skip(2)
        .map_while(|f| f.parse::<u64>().ok())
        .sum();
    assert!(taken > 0, "the xhci vector never fired: {irq}\n{tail}");
}
