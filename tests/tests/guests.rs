//! Several guests at once: two Linux VMs of one system disk (`cargo xtask run
//! --vm b,a`) run side by side on a 2-CPU host, each with its own RAM, vCPU,
//! disk extent and console lines; one reboots and one powers off while the
//! other runs on; monitor commands reach the VM they name.

use std::path::Path;
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use xtask::linux_guest::guest_cmd_arg;
use xtask::run::{Ending, RunOptions, LINUX_CMDLINE};
use xtask::Layout;

/// A backstop only: the run ends when both guests have powered off.
const TIMEOUT: Duration = Duration::from_secs(600);

/// The primary guest `b`: its first boot marks its disk and reboots; its second
/// reports what its disk holds, says it is ready and waits for a console line
/// (input goes to the primary guest), then powers off.
const B_CMD: &str = r#"if [ "$(head -c 5 /dev/vda)" = bboot ]; then echo "b-sees=$(head -c 5 /dev/vda)"; echo b-ready; read x; echo "b-got=$x"; else printf bboot > /dev/vda; sync; echo b-first-boot; reboot -f; fi"#;

/// Guest `a`: marks its own disk, reports what it holds, runs on for a while
/// (long enough for the script to pause and resume it), then powers off.
const A_CMD: &str = r#"echo a-up; printf aaaaa > /dev/vda; sync; echo "a-sees=$(head -c 5 /dev/vda)"; sleep 30; echo a-done"#;

fn add_vm(sys: &Path, name: &str, cmd: &str, kernel: &Path, initrd: &Path, extra: &[&str]) {
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let mut words: Vec<String> = [
        "add-vm",
        &p(sys),
        "--name",
        name,
        "--vcpus",
        "1",
        "--mem",
        "256M",
        "--kernel",
        &p(kernel),
        "--initrd",
        &p(initrd),
        "--cmdline",
        &format!("{LINUX_CMDLINE} {}", guest_cmd_arg(cmd)),
        "--disk-size",
        "1M",
    ]
    .map(String::from)
    .to_vec();
    words.extend(extra.iter().map(|w| w.to_string()));
    registry::cli::run(&words).unwrap_or_else(|e| panic!("disk {words:?}: {e}"));
}

/// A system disk under `target/NAME` with the Linux guest's kernel and initrd
/// at hand for [`add_vm`].
fn fresh_disk(name: &str, size: &str) -> (std::path::PathBuf, xtask::linux_guest::LinuxGuest) {
    let layout = Layout::detect();
    let guest = xtask::linux_guest::ensure_linux_guest(&layout.guest_cache())
        .expect("fetch and build the Linux guest");
    let dir = layout.out.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sys = dir.join("system.img");
    registry::cli::run(&[
        "create".into(),
        sys.to_string_lossy().into_owned(),
        "--size".into(),
        size.into(),
    ])
    .expect("disk create");
    (sys, guest)
}

#[test]
fn two_guests_run_side_by_side_and_each_stops_on_its_own() {
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests", "256M");
    add_vm(&sys, "a", A_CMD, &guest.kernel, &guest.initramfs, &[]);
    add_vm(&sys, "b", B_CMD, &guest.kernel, &guest.initramfs, &[]);

    let mut o = RunOptions::headless(Default::default(), TIMEOUT);
    o.vm = Some("b,a".into());
    o.system_disk = Some(sys.clone());
    o.script = Some(script(
        "guests.script",
        "expect \\(a\\) a-sees=\n\
         monitor vm pause a\n\
         monitor vm list\n\
         monitor vm resume a\n\
         monitor vm snapshot a t1\n\
         monitor input type a \"x\"\n\
         expect (?s)(\\(b\\) b-ready.*VM 'a' powered off|VM 'a' powered off.*\\(b\\) b-ready)\n\
         monitor vm list\n\
         monitor vm pause a\n\
         send go\n\
         expect \\(b\\) b-got=go\n\
         expect no VM left to run; powering off\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = outcome.console.replace('\r', "");
    // Each guest's lines carry its name; each sees only its own disk.
    // (Read from each guest's own stream: a hypervisor line, such as the
    // monitor's, may cut a guest line in two.)
    assert!(stream(&c, "a").contains("a-sees=aaaaa"), "\n{tail}");
    assert!(stream(&c, "b").contains("b-sees=bboot"), "\n{tail}");
    assert!(stream(&c, "b").contains("b-first-boot"), "\n{tail}");
    assert!(c.contains("VM 'b': resetting"), "\n{tail}");
    // Monitor commands ran on the VM they name, while both ran and after one stopped.
    for status in [
        "ok: vm a paused (1 vCPU stopped)",
        "ok: 2 vms: b vcpus=1 state=running; a vcpus=1 state=paused",
        "ok: vm a resumed",
        "error: snapshots of vm a",
        "ok: vm a: 2 events:",
        "ok: 2 vms: b vcpus=1 state=running; a vcpus=1 state=off",
    ] {
        assert!(c.contains(status), "no `{status}`\n{tail}");
    }
    // The host stayed up for `b` after `a` powered off, and went down with it.
    let a_off = c.find("VM 'a' powered off").expect("a powered off");
    let host_up = c
        .find("VM(s) still run; the host stays up")
        .expect("host stays up");
    let b_got = c.find("(b) b-got=go").expect("b read its line");
    let last = c.find("no VM left to run; powering off").expect("host off");
    assert!(
        a_off < host_up && host_up < b_got && b_got < last,
        "\n{tail}"
    );
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}

/// What guest `name` printed, its labelled console lines run together without
/// their labels: a line the console cut in two (a hypervisor line came while
/// it was unfinished, and each piece got the label) is whole again. Look for
/// text in it, not for whole lines.
fn stream(console: &str, name: &str) -> String {
    let label = format!("({name}) ");
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(label.as_str()))
        .collect()
}

/// Guest `a` of the shutdown test counts for ever, one line a second.
const TICK_CMD: &str =
    r#"echo a-up; i=0; while true; do i=$((i+1)); echo "a-tick=$i"; sleep 1; done"#;
/// Guest `b` of the shutdown test waits for a console line.
const WAIT_CMD: &str = r#"echo b-up; read x; echo "b-got=$x""#;

/// The `a-tick=N` numbers on the console, in order.
fn ticks(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("(a) a-tick="))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `host shutdown` with two guests: the one whose policy says suspend (`a`) is
/// suspended, the other (`b`) powered off, whichever guest's vCPU runs the
/// command; the next host boot resumes `a` where it stopped (its count goes
/// on, init does not run again) and cold boots `b`.
#[test]
fn host_shutdown_suspends_or_powers_off_each_guest_and_the_next_boot_resumes_it() {
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests-shutdown", "1G");
    add_vm(&sys, "a", TICK_CMD, &guest.kernel, &guest.initramfs, &[]);
    add_vm(
        &sys,
        "b",
        WAIT_CMD,
        &guest.kernel,
        &guest.initramfs,
        &["--no-suspend-on-host-shutdown"],
    );
    let run = |n: usize| {
        let mut o = RunOptions::headless(Default::default(), TIMEOUT);
        o.vm = Some("b,a".into());
        o.system_disk = Some(sys.clone());
        o.script = Some(script(
            &format!("guests-shutdown-{n}.script"),
            "expect \\(b\\) b-up\n\
             expect \\(a\\) a-tick=\n\
             expect \\(a\\) a-tick=\n\
             monitor host shutdown\n",
        ));
        let outcome = boot(&o);
        let tail = console_tail(&outcome);
        let c = outcome.console.replace('\r', "");
        assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
        assert!(
            c.contains("ok: host shutting down: suspended a; powered off b"),
            "\n{tail}"
        );
        (c, tail)
    };
    let (first, tail) = run(1);
    assert!(first.contains("(a) a-up"), "\n{tail}");
    let before = *ticks(&first).last().expect("a ticked");
    let (second, tail) = run(2);
    assert!(
        !second.contains("(a) a-up"),
        "a booted again instead of resuming\n{tail}"
    );
    assert!(second.contains("(b) b-up"), "\n{tail}");
    let after = *ticks(&second).first().expect("a ticks after the resume");
    assert!(
        after > before && after <= before + 3,
        "a's count went from {before} to {after}\n{tail}"
    );
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}

/// Guest `a` of the partition test: its first boot marks its disk and powers
/// off; a later one says so and stays up.
const ONCE_CMD: &str = r#"if [ "$(head -c 5 /dev/vda)" = aboot ]; then echo a-again; while true; do sleep 1; done; else printf aboot > /dev/vda; sync; echo a-first; fi"#;
/// Guest `b` of the partition test stays up.
const STAY_CMD: &str = r#"echo b-up; while true; do sleep 1; done"#;

/// With the authority partition beside two guests: `a` powers off while `b`
/// runs on; the partition's `vm start a` boots it again (its disk kept), and
/// its `vm pause a` / `vm resume a` act on `a` from the vCPU of `b`, the
/// primary guest, which takes the partition's calls; `host shutdown` then
/// suspends both.
#[test]
fn the_partition_starts_a_guest_that_powered_off_while_another_runs() {
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests-partition", "1G");
    // `b` first in the registry: the partition's default VM is the primary.
    add_vm(&sys, "b", STAY_CMD, &guest.kernel, &guest.initramfs, &[]);
    add_vm(&sys, "a", ONCE_CMD, &guest.kernel, &guest.initramfs, &[]);
    let mut o = RunOptions::headless(Default::default(), TIMEOUT);
    o.vm = Some("b,a".into());
    o.system_disk = Some(sys.clone());
    o.authority = true;
    o.script = Some(script(
        "guests-partition.script",
        "expect (?s)(rayos> .*VM 'a' powered off|VM 'a' powered off.*rayos> )\n\
         send vm start a\n\
         expect ok: vm a started\n\
         expect \\(a\\) a-again\n\
         send vm pause a\n\
         expect ok: vm a paused\n\
         send vm resume a\n\
         expect ok: vm a resumed\n\
         send host shutdown\n\
         expect powering off\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = outcome.console.replace('\r', "");
    assert!(c.contains("(a) a-first"), "\n{tail}");
    assert!(c.contains("VM 'a': starting again"), "\n{tail}");
    for vm in ["a", "b"] {
        assert!(
            c.contains(&format!("VM '{vm}' suspended (host shutdown)")),
            "\n{tail}"
        );
    }
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}

/// A VM of the registry that this host boot does not start (neither chosen nor
/// autostart) is built off: `vm list` shows it off beside the running one,
/// `vm start` boots it (its start counted then, not at host boot), it runs its
/// command and powers off, and starts again on request. One whose kernel does
/// not fit its RAM (the disk's record says 16 MiB) is refused by `vm start`
/// with the reason, and the host and the other guests run on.
#[test]
fn a_vm_the_host_boot_did_not_start_starts_on_request() {
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests-held", "1G");
    add_vm(&sys, "a", STAY_CMD, &guest.kernel, &guest.initramfs, &[]);
    add_vm(
        &sys,
        "c",
        "echo c-ran-$((2*3))",
        &guest.kernel,
        &guest.initramfs,
        &[],
    );
    add_vm(
        &sys,
        "big",
        "true",
        &guest.kernel,
        &guest.initramfs,
        &["--mem", "16M"],
    );
    let mut o = RunOptions::headless(Default::default(), TIMEOUT);
    o.vm = Some("a".into());
    o.system_disk = Some(sys.clone());
    o.authority = true;
    o.script = Some(script(
        "guests-held.script",
        "expect rayos> \n\
         monitor vm list\n\
         send vm start c\n\
         expect ok: vm c started\n\
         expect \\(c\\) c-ran-6\n\
         expect VM 'c' powered off\n\
         monitor vm list\n\
         send vm start c\n\
         expect ok: vm c started\n\
         expect \\(c\\) c-ran-6\n\
         expect VM 'c' powered off\n\
         send vm start big\n\
         expect error: vm big\n\
         monitor vm list\n\
         monitor host shutdown\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = outcome.console.replace('\r', "");
    assert!(
        c.contains("VM 'c' is not started at this host boot: it is off until `vm start c`"),
        "\n{tail}"
    );
    let got = statuses(&c);
    let off = "ok: 3 vms: a vcpus=1 state=running; c vcpus=1 state=off; big vcpus=1 state=off";
    assert_eq!(
        got[..4],
        [off, "ok: vm c started", off, "ok: vm c started"],
        "\n{tail}"
    );
    assert!(
        got[4].starts_with("error: vm big: ") && got[4].contains("kernel does not load"),
        "{got:#?}\n{tail}"
    );
    assert_eq!(got[5..], [off], "\n{tail}");
    assert_eq!(stream(&c, "c").matches("c-ran-6").count(), 2, "\n{tail}");
    // The registry counted `a`'s start at host boot and `c`'s two on request.
    let mut d = registry::cli::FileDisk::open(&sys, true).unwrap();
    let reg = registry::Registry::open(&mut d).expect("the registry opens");
    let starts: Vec<(String, u64)> = reg
        .vms()
        .iter()
        .map(|v| (v.name.clone(), v.starts))
        .collect();
    assert_eq!(
        starts,
        [("a".into(), 1), ("c".into(), 2), ("big".into(), 0)],
        "\n{tail}"
    );
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}

/// A guest command that fills its 640x480 framebuffer with one colour (`bgrx`:
/// the pixel's four bytes as octal escapes, XRGB8888 in memory order), says
/// `NAME-drawn`, then runs `then` (which ends the command or stays up).
fn fill_cmd(name: &str, bgrx: &str, then: &str) -> String {
    format!(
        r#"for v in /sys/class/vtconsole/vtcon*;do grep -q 'frame buffer' $v/name&&echo 0>$v/bind;done;sleep 1
cd /tmp;f(){{ printf "$1">y;n=1;while [ $n -lt 307200 ];do cat y y>z;mv z y;n=$((n*2));done; }}
f '{bgrx}';dd if=y of=/dev/fb0 bs=1228800 count=1 2>/dev/null;echo {name}-drawn;{then}"#
    )
}

/// The frame count `display status` gives guest `vm` on `line`.
fn frames_of(line: &str, vm: &str) -> u64 {
    let at = line
        .find(&format!("vm {vm} "))
        .unwrap_or_else(|| panic!("vm {vm} missing from {line}"));
    line[at..]
        .split("frames ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count for vm {vm} in {line}"))
}

/// Two guests on one display: the render loop composes both, each at its
/// cascaded default panel, the one registered last (`a`) on top. `a` floods
/// its framebuffer with full-frame rewrites (a flush each) the whole time; `b`
/// draws again on a console line and its new frame still reaches the screen,
/// its frame count moving on beside the flood's; hiding `a` shows `b` where
/// `a` was.
#[test]
fn two_guests_share_the_display_and_a_flood_from_one_does_not_hold_the_other() {
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests-display", "256M");
    let flood = "while :;do dd if=y of=/dev/fb0 bs=1228800 count=1 2>/dev/null;done";
    let redraw = r"read x;f '\377\000\000\000';dd if=y of=/dev/fb0 bs=1228800 count=1 2>/dev/null;echo b-redrawn;sleep 3600";
    for (name, colour, then) in [
        ("b", r"\000\000\377\000", redraw),
        ("a", r"\000\377\000\000", flood),
    ] {
        let cmd = fill_cmd(name, colour, then);
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let words: Vec<String> = [
            "add-vm",
            &p(&sys),
            "--name",
            name,
            "--vcpus",
            "1",
            "--mem",
            "256M",
            "--kernel",
            &p(&guest.kernel),
            "--initrd",
            &p(&guest.initramfs),
            "--cmdline",
            &format!(
                "{LINUX_CMDLINE} vt.global_cursor_default=0 {}",
                guest_cmd_arg(&cmd)
            ),
            "--disk-size",
            "1M",
            "--no-suspend-on-host-shutdown",
        ]
        .map(String::from)
        .to_vec();
        registry::cli::run(&words).unwrap_or_else(|e| panic!("disk {words:?}: {e}"));
    }
    let layout = Layout::detect();
    let dumps = ["both", "redrawn", "hidden"]
        .map(|n| layout.out.join(format!("test-scripts/guests-{n}.ppm")));
    for f in &dumps {
        let _ = std::fs::remove_file(f);
    }
    let mut o = RunOptions::headless(Default::default(), TIMEOUT);
    o.vm = Some("b,a".into());
    o.system_disk = Some(sys.clone());
    o.script = Some(script(
        "guests-display.script",
        &format!(
            "expect (?s)(\\(a\\) a-drawn.*\\(b\\) b-drawn|\\(b\\) b-drawn.*\\(a\\) a-drawn)\n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n\
             send go\n\
             expect \\(b\\) b-redrawn\n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n\
             monitor display hide a\n\
             sleep 2\n\
             screendump {}\n\
             monitor host shutdown\n",
            dumps[0].display(),
            dumps[1].display(),
            dumps[2].display()
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = outcome.console.replace('\r', "");
    let read = |p: &Path| {
        xtask::qmp::parse_ppm(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap()
    };
    let (red, green, blue) = (0xff_0000, 0x00_ff00, 0x00_00ff);
    let background = vgpu::present::BACKGROUND & 0xff_ffff;
    // b (registered first) at the default panel, a cascaded below-right of it.
    let (bx, by) = vgpu::present::DEFAULT_PANEL;
    let (bx, by) = (bx as u32, by as u32);
    let (ax, ay) = (bx + 48, by + 36);
    let img = read(&dumps[0]);
    assert_eq!(img.at(bx + 2, by + 2), red, "b's own corner\n{tail}");
    assert_eq!(img.at(ax + 600, ay + 440), green, "a, on top\n{tail}");
    assert_eq!(img.at(ax + 10, ay + 10), green, "a over b\n{tail}");
    assert_eq!(
        img.at(bx + 2, by + 478),
        red,
        "b's bottom-left corner, left of a\n{tail}"
    );
    assert_eq!(img.at(0, 0), background, "background\n{tail}");
    // b's second drawing reached the screen while a flooded.
    let img = read(&dumps[1]);
    assert_eq!(
        img.at(bx + 2, by + 2),
        blue,
        "b redrawn beside the flood\n{tail}"
    );
    assert_eq!(img.at(ax + 10, ay + 10), green, "a still on top\n{tail}");
    let img = read(&dumps[2]);
    assert_eq!(img.at(ax + 10, ay + 10), blue, "b where a was\n{tail}");
    assert_eq!(
        img.at(ax + 600, ay + 440),
        background,
        "nothing where only a was\n{tail}"
    );
    // Each guest's frames are counted on its own; b's moved on beside the flood.
    let status: Vec<&str> = c.lines().filter(|l| l.contains("ok: display ")).collect();
    assert_eq!(status.len(), 2, "\n{tail}");
    assert!(
        frames_of(status[0], "b") > 0 && frames_of(status[0], "a") > 0,
        "{status:?}"
    );
    assert!(
        frames_of(status[1], "b") > frames_of(status[0], "b"),
        "b's frames did not move on beside a's flood: {status:?}"
    );
    assert!(
        frames_of(status[1], "a") > frames_of(status[0], "a"),
        "a's flood composed no frame: {status:?}"
    );
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}

/// Guest `NAME` of the input test records its tablet's evdev stream until it
/// holds `events` events, then dumps it (`NAME-tablet-begin` … `-end`).
fn tablet_cmd(name: &str, events: usize) -> String {
    format!(
        r#"for e in /sys/class/input/event*;do n=$(cat $e/device/name);d=/tmp/${{e##*/}};mknod $d c $(cut -d: -f1 $e/dev) $(cut -d: -f2 $e/dev);case "$n" in *ablet*) t=$d;; esac;done
cat $t>/tmp/t.bin& a=$!
until [ "$(ls -l /proc/$a/fd 2>/dev/null|grep -c /tmp/event)" = 1 ];do sleep 0.1;done
echo {name}-input-ready
until [ $(wc -c </tmp/t.bin) -ge {bytes} ];do sleep 0.2;done
sleep 2;kill $a
echo tablet-begin;od -A n -v -t x1 /tmp/t.bin;echo tablet-end
sleep 3600"#,
        bytes = events * 24
    )
}

/// Two guests as overlapping panels, `a` on top: QMP clicks on the physical
/// tablet reach the VM under the pointer — `b` where only `b` shows, `a` in
/// the overlap and where only `a` shows — each at its own mapped guest pixel,
/// and nothing of one click reaches the other VM.
#[test]
fn physical_clicks_go_to_the_guest_under_the_pointer() {
    use integration_tests::evdev::{events, left_presses, mapped, near, qmp_button, qmp_move};
    let _g = boot_lock();
    let (sys, guest) = fresh_disk("test-guests-input", "256M");
    // A click is a move (x, y, SYN) and a press and a release (each with SYN).
    const CLICK: usize = 7;
    add_vm(
        &sys,
        "b",
        &tablet_cmd("b", CLICK),
        &guest.kernel,
        &guest.initramfs,
        &["--no-suspend-on-host-shutdown"],
    );
    add_vm(
        &sys,
        "a",
        &tablet_cmd("a", 2 * CLICK),
        &guest.kernel,
        &guest.initramfs,
        &["--no-suspend-on-host-shutdown"],
    );
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    // Half-scale panels: b at (100, 100), a at (300, 200), overlapping on
    // (300..420, 200..340); a is presented last, so it is on top.
    let (pw, ph) = (gw / 2, gh / 2);
    let (b_at, a_at) = ((100, 100), (300, 200));
    let clicks = [(150, 150), (350, 250), (600, 400)];
    let click = |(x, y): (i32, i32)| {
        format!(
            "{}{}{}sleep 1\n",
            qmp_move(x, y),
            qmp_button(true),
            qmp_button(false)
        )
    };
    let mut o = RunOptions::headless(Default::default(), TIMEOUT);
    o.vm = Some("b,a".into());
    o.system_disk = Some(sys.clone());
    o.script = Some(script(
        "guests-input.script",
        &format!(
            "expect (?s)(\\(a\\) a-input-ready.*\\(b\\) b-input-ready|\\(b\\) b-input-ready.*\\(a\\) a-input-ready)\n\
             monitor display present b panel {} {} {pw} {ph}\n\
             monitor display present a panel {} {} {pw} {ph}\n\
             {}{}{}\
             expect (?s)(\\(a\\) tablet-end.*\\(b\\) tablet-end|\\(b\\) tablet-end.*\\(a\\) tablet-end)\n\
             monitor host shutdown\n\
             expect host shutdown: powering off\n",
            b_at.0,
            b_at.1,
            a_at.0,
            a_at.1,
            click(clicks[0]),
            click(clicks[1]),
            click(clicks[2]),
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    // Each guest's own lines, without their `(NAME) ` label.
    let own = |name: &str| -> String {
        let label = format!("({name}) ");
        outcome
            .console
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(label.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let presses = |name: &str| {
        let stream = events(&own(name), "tablet-begin", "tablet-end")
            .unwrap_or_else(|| panic!("{name} dumped no tablet stream\n{tail}"));
        (stream.len(), left_presses(&stream))
    };
    let at =
        |(x, y): (i32, i32), (ox, oy): (i32, i32)| (mapped(x, ox, gw, pw), mapped(y, oy, gh, ph));
    let (b_events, b_presses) = presses("b");
    let (a_events, a_presses) = presses("a");
    assert_eq!((b_events, a_events), (CLICK, 2 * CLICK), "\n{tail}");
    assert_eq!(b_presses.len(), 1, "{b_presses:?}");
    assert!(near(b_presses[0], at(clicks[0], b_at)), "{b_presses:?}");
    assert_eq!(a_presses.len(), 2, "{a_presses:?}");
    assert!(near(a_presses[0], at(clicks[1], a_at)), "{a_presses:?}");
    assert!(near(a_presses[1], at(clicks[2], a_at)), "{a_presses:?}");
    let _ = std::fs::remove_dir_all(sys.parent().unwrap());
}
