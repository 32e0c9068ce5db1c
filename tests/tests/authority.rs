//! The reference authority partition (`guests/authority`). Booted as an
//! ordinary guest, its boot code, PL011 console and `HVC #0` work and el2 refuses
//! it the authority ABI, as it must refuse every guest that is not the authority
//! partition. Booted as the partition (`--authority`), it runs the boot sequence
//! and the `rayos>` shell over the ABI (the shell's logic is host-tested in the
//! `authority` crate).

use std::time::Duration;

use integration_tests::{boot_lock, console_tail, script};
use xtask::build::build_guests;
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_authority_image_booted_as_a_plain_guest_is_refused_the_abi() {
    let layout = Layout::detect();
    build_guests(&layout, true).unwrap_or_else(|e| panic!("building the guests failed: {e}"));
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.kernel = Some(layout.guest_image("authority"));
    o.script = Some(script(
        "authority-refused.script",
        "expect RayOS authority partition\n\
         expect rayos: the hypervisor refused the authority ABI \\(NotSupported\\)\n",
    ));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the partition did not report the refused ABI:\n{tail}"
    );
    assert!(
        !outcome.console.contains("rayos> "),
        "no shell may run without the ABI:\n{tail}"
    );
}

/// Budget of one boot of the guest beside the partition.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(300);

/// The last `tick=N` the guest's counting loop printed.
fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("tick="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// `cargo xtask run --authority`: the partition runs beside the guest on its own
/// stage-2 and owns the serial console. Its boot sequence finds the system
/// disk's VM running and leaves it in the background (hidden, no input);
/// `present` shows it fullscreen and interactive, `leave` hides it again (its
/// policy keeps it running), every step through the authority ABI. `host
/// shutdown` typed at `rayos>` suspends the guest; the next host boot resumes the
/// same guest, which counts on from where it stopped, and the partition again
/// leaves it in the background.
#[test]
fn the_partition_boots_the_guest_hidden_presents_it_and_resumes_it_after_a_host_reboot() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let dir = layout
        .out
        .join("tmp")
        .join(format!("authority-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str, fresh: bool| {
        let mut o = RunOptions::headless(Guest::Linux, PARTITION_TIMEOUT);
        o.authority = true;
        o.system_disk = Some(dir.join("system-disk.img"));
        o.fresh = fresh;
        o.guest_cmd = Some("i=0; while true; do i=$((i+1)); echo tick=$i; sleep 1; done".into());
        o.script = Some(script(name, text));
        let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
        let tail = console_tail(&outcome);
        (outcome, tail)
    };

    let (first, tail) = run(
        "authority-boot-1.script",
        "expect authority partition: 32 MiB RAM\n\
         expect rayos: vm linux runs in the background \\(hidden, no input\\)\n\
         expect tick=3\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         send present linux\n\
         expect ok: vm linux presented fullscreen, interactive\n\
         send display status\n\
         expect ok: display .* vm linux live fullscreen\n\
         send leave linux\n\
         expect ok: vm linux hidden; it keeps running\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         expect tick=8\n\
         send host shutdown\n\
         expect powering off\n",
        true,
    );
    assert_eq!(
        first.ending,
        Ending::Exited(Some(0)),
        "the first host boot did not end in a clean power-off\n{tail}"
    );
    assert!(
        first.console.contains("suspended"),
        "host shutdown did not suspend the guest\n{tail}"
    );
    let before = last_tick(&first.console).expect("the guest counted");

    let (second, tail) = run(
        "authority-boot-2.script",
        "expect resumed from its saved state\n\
         expect rayos: vm linux runs in the background \\(hidden, no input\\)\n\
         expect tick=\n\
         sleep 3\n",
        false,
    );
    assert_eq!(second.ending, Ending::ScriptDone, "\n{tail}");
    let after_resume: Vec<u64> = second
        .console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("tick="))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let first_after = *after_resume
        .first()
        .expect("the guest counts after the resume");
    assert!(
        first_after > before,
        "the guest started counting again ({first_after} after {before}): it was cold-booted, not resumed\n{tail}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo xtask run`'s own configuration (the partition is its default): the
/// shell owns the serial line; `attach linux` hands it to the guest's shell until
/// Ctrl-], which goes to the partition (the hypervisor no longer takes it for its
/// monitor); the guest powering off leaves the host up for the partition, whose
/// `vm start` (served on its own vCPU: no guest runs) boots the guest again; and
/// `host shutdown` ends the run. Physical input (QMP clicks on the virtio
/// tablet) while the guest is hidden goes to RayOS (`input kept`), and once it
/// is presented and interactive, to the guest instead.
#[test]
fn the_default_shell_attaches_outlives_its_guest_and_starts_it_again() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let disk = layout.out.join("test-disks/authority-default.img");
    // A tablet move to the display's middle and a left click, through QMP.
    let qmp = |events: &str| format!("qmp input-send-event {{\"events\": [{events}]}}\n");
    let click = [
        qmp(r#"{"type": "abs", "data": {"axis": "x", "value": 16384}}, {"type": "abs", "data": {"axis": "y", "value": 16384}}"#),
        qmp(r#"{"type": "btn", "data": {"down": true, "button": "left"}}"#),
        qmp(r#"{"type": "btn", "data": {"down": false, "button": "left"}}"#),
        "sleep 1\n".into(),
    ]
    .concat();
    let words = [
        "--headless",
        "--timeout",
        "300",
        "--fresh",
        "--system-disk",
        &disk.to_string_lossy(),
        "--script",
        &script(
            "authority-default.script",
            &format!("expect rayos> \n\
             expect starting a shell\n\
             send attach linux\n\
             expect attached to vm linux's console\n\
             send echo attached-$((6*7))\n\
             expect attached-42\n\
             send \\x1d\n\
             expect detached from vm linux\n\
             send vm list\n\
             expect ok: 1 vm: linux vcpus=2 state=running\n\
             {click}\
             send input kept\n\
             expect ok: rayos kept [1-9][0-9]* input event\\(s\\) no guest took: 0 key, [1-9][0-9]* pointer, 2 button, 0 other; last: button Left up\n\
             send present linux\n\
             expect ok: vm linux presented fullscreen, interactive\n\
             {click}\
             send input kept\n\
             expect ok: rayos kept\n\
             send attach linux\n\
             expect attached to vm linux's console\n\
             send exit\n\
             expect no VM left to run; the host stays up for the authority partition\n\
             send \\x1d\n\
             send vm list\n\
             expect ok: 1 vm: linux vcpus=2 state=off\n\
             send vm start linux\n\
             expect ok: vm linux started\n\
             expect starting a shell\n\
             send vm list\n\
             expect ok: 1 vm: linux vcpus=2 state=running\n\
             send host shutdown\n\
             expect powering off\n"),
        )
        .to_string_lossy(),
    ]
    .map(String::from);
    let o = xtask::run::parse_args(&words).expect("the run's options");
    assert!(o.authority, "the partition is the default");
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = outcome.console.replace('\r', "");
    // Ctrl-] never reached the hypervisor's monitor.
    assert!(!c.contains("[el2 monitor] entered"), "\n{tail}");
    // The guest booted twice: at host boot and on `vm start`.
    assert_eq!(c.matches("starting a shell").count(), 2, "\n{tail}");
    // Physical input while the guest ran hidden was RayOS's (`input kept`);
    // once it was presented and interactive the same input went to the guest.
    let kept: Vec<&str> = c
        .lines()
        .filter(|l| l.starts_with("ok: rayos kept"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}\n{tail}");
    assert_eq!(
        kept[0], kept[1],
        "input reached RayOS while the guest was presented\n{tail}"
    );
    let _ = std::fs::remove_file(&disk);
}

/// The partition beside a 2-vCPU guest spinning on both vCPUs of a 2-CPU host,
/// under `-icount` (QEMU runs the CPUs in turn, guest time is instructions): the
/// partition, scheduled above the guest, still answers its console — `vm list`
/// and `display status` come back while both loops keep spinning (the loops
/// print their progress after the answers) — each within 100 ms of guest time
/// (el2's answer clock, `monitor::answer`).
#[test]
fn the_partition_answers_while_the_guest_spins_on_every_cpu() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, PARTITION_TIMEOUT);
    o.authority = true;
    o.icount = true;
    o.smp = Some(2);
    o.host_cpus = Some(2);
    o.system_disk = Some(layout.out.join("test-disks/authority-spin.img"));
    o.fresh = true;
    o.guest_cmd = Some(
        "S='n=0; while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; n=$((n+1)); echo spin$1=$n; done'\n\
         taskset -c 0 sh -c \"$S\" x 0 & taskset -c 1 sh -c \"$S\" x 1 & wait\n"
            .into(),
    );
    o.script = Some(script(
        "authority-spin.script",
        "expect rayos> \n\
         expect spin0=2\n\
         expect spin1=\n\
         send vm list\n\
         expect ok: 1 vm: linux vcpus=2 state=running\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         expect spin0=\n\
         expect spin1=\n",
    ));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the partition did not answer under load\n{tail}"
    );
    // el2 timed each answer, from the typed line end to the status line, on the
    // counter (guest time under -icount) and reported every new slowest one.
    let times: Vec<u64> = outcome
        .console
        .lines()
        .filter_map(|l| {
            let rest = l.split("the authority partition answered in ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect();
    assert!(!times.is_empty(), "no answer time reported\n{tail}");
    let slowest = times.iter().max().copied().unwrap_or_default();
    eprintln!("the partition's answer times, each the slowest yet (us of guest time): {times:?}");
    assert!(
        slowest < 100_000,
        "the partition took {slowest} us of guest time to answer (limit 100 ms)\n{tail}"
    );
}

/// The pattern the scripts-and-capture guest draws: pixel (x, y) as 0xRRGGBB,
/// every pixel of an 8x8 tile different (red names the column, green the row).
fn pattern(x: u32, y: u32) -> u32 {
    let (i, j) = (x % 8, y % 8);
    ((0x28 + 0x1c * i) << 16) | ((0x38 + 0x18 * j) << 8) | (0x48 + 0x11 * (i ^ j))
}

/// The block `sh /tmp/block.sh` draws over the pattern: guest pixels
/// `BLOCK.0..+BLOCK.2` of rows `BLOCK.1..+BLOCK.3`, this colour.
const BLOCK: (u32, u32, u32, u32) = (192, 100, 64, 16);
const BLOCK_COLOUR: u32 = 0xff_8000;

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The region hash (`input::run::region_hash`, what `capture` prints and
/// `wait-match` compares) of `(x, y, w, h)` of a `gw` x `gh` guest screen
/// showing the pattern, with the block drawn over it or not.
fn pattern_hash(gw: u32, gh: u32, (x, y, w, h): (u32, u32, u32, u32), block: bool) -> u64 {
    let (bx, by, bw, bh) = BLOCK;
    let mut px = Vec::new();
    for row in 0..gh {
        for col in 0..gw {
            let inside = (bx..bx + bw).contains(&col) && (by..by + bh).contains(&row);
            let p = if block && inside {
                BLOCK_COLOUR
            } else {
                pattern(col, row)
            };
            px.extend([p as u8, (p >> 8) as u8, (p >> 16) as u8, 0]);
        }
    }
    let frame = input::FrameView {
        width: gw,
        height: gh,
        stride: (gw * 4) as usize,
        data: &px,
    };
    input::run::region_hash(&frame, input::script::Region { x, y, w, h }).unwrap()
}

/// The guest of the scripts-and-capture test: detaches the framebuffer console
/// (nothing draws over the pattern then) and turns tty1's echo off (what is
/// typed there is never drawn, even with a console on it), writes the pattern to `/dev/fb0`, leaves `/tmp/block.sh` to draw
/// the block, and then runs every line typed on its keyboard (tty1), its output
/// on the serial console.
fn scripts_guest_cmd(width: u32, height: u32) -> String {
    let mut tile = Vec::new();
    for y in 0..8 {
        for x in 0..8 {
            let p = pattern(x, y);
            tile.extend([p as u8, (p >> 8) as u8, (p >> 16) as u8, 0]);
        }
    }
    let (bx, by, bw, bh) = BLOCK;
    let row = width * 4;
    let c = BLOCK_COLOUR;
    format!(
        r#"for v in /sys/class/vtconsole/vtcon*;do grep -q 'frame buffer' $v/name&&echo 0>$v/bind;done;sleep 1
cd /tmp;echo {b64}|base64 -d>t
d(){{ cp $1 y;n=1;while [ $n -lt $2 ];do cat y y>z;mv z y;n=$((n*2));done; }}
k=0;while [ $k -lt 8 ];do dd if=t bs=32 skip=$k count=1 2>/dev/null>x;d x {reps};dd if=y bs={row} count=1 2>/dev/null>>b;k=$((k+1));done
d b {blocks};dd if=y of=/dev/fb0 bs={tile_rows} count={blocks} 2>/dev/null
printf '\{b0:03o}\{b1:03o}\{b2:03o}\000'>p;d p {bw};mv y k
echo 'k={by};while [ $k -lt {bend} ];do dd if=/tmp/k of=/dev/fb0 bs={brow} seek=$(( (k*{row}+{boff})/{brow} )) conv=notrunc 2>/dev/null;k=$((k+1));done;echo block-drawn'>block.sh
echo pattern-written;exec 3</dev/tty1;stty -echo <&3;echo kbd-ready
while read l <&3;do eval "$l";done"#,
        b64 = base64(&tile),
        reps = width / 8,
        row = row,
        tile_rows = row * 8,
        blocks = height / 8,
        b0 = c & 0xff,
        b1 = (c >> 8) & 0xff,
        b2 = (c >> 16) & 0xff,
        bend = by + bh,
        brow = bw * 4,
        boff = bx * 4,
    )
}

/// The partition's input scripts and captures on the Linux guest (`--authority`):
/// the guest draws a known pattern; a script defined at `rayos>` waits for the
/// whole frame to match the pattern's hash (`wait-match`, so the frame is known to
/// be there), `capture` then prints the frame's and a region's hashes, equal to
/// the pattern's computed here; a region outside the frame is refused and changes
/// nothing. A second script waits for the frame to change and types a command
/// line on the guest's keyboard: while it waits, a third is refused as busy; the
/// guest (reading tty1) draws a block when `input type` tells it, the script sees
/// the change and types `echo scripted-$((6*7))`, whose output comes out on the
/// guest's serial console, and the shell reports the script's end. A script with
/// a syntax error is refused when it is defined.
#[test]
fn scripts_type_into_the_guest_and_capture_returns_its_frame() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let full = pattern_hash(gw, gh, (0, 0, gw, gh), false);
    let region = (8, 16, 100, 50);
    let part = pattern_hash(gw, gh, region, false);
    let (bx, by, bw, bh) = BLOCK;
    let with_block = pattern_hash(gw, gh, (0, 0, gw, gh), true);
    let mut o = RunOptions::headless(Guest::Linux, SCRIPTS_TIMEOUT);
    o.authority = true;
    o.system_disk = Some(layout.out.join("test-disks/authority-scripts.img"));
    o.fresh = true;
    o.append = Some(format!(
        "{} vt.global_cursor_default=0",
        xtask::run::LINUX_CMDLINE
    ));
    let cmd = scripts_guest_cmd(gw, gh);
    assert!(cmd.len() < 1400, "the guest command is {} bytes", cmd.len());
    o.guest_cmd = Some(cmd);
    let text = format!(
        "expect rayos: vm linux runs in the background\n\
         expect kbd-ready\n\
         send present linux\n\
         expect ok: vm linux presented fullscreen, interactive\n\
         send script drawn\n\
         expect type the script\n\
         send wait-match 0 0 {gw} {gh} {full:016x} timeout 120000\n\
         send end\n\
         expect ok: script drawn saved \\(1 steps\\)\n\
         send input script linux drawn\n\
         expect ok: vm linux: script drawn started \\(1 steps\\)\n\
         expect rayos: vm linux: script drawn finished \\(1 steps\\)\n\
         send capture linux\n\
         expect ok: vm linux: captured {gw}x{gh}, {bytes} bytes, hash {full:016x}\n\
         send capture linux {rx} {ry} {rw} {rh}\n\
         expect ok: vm linux: captured {rw}x{rh} at {rx},{ry}, {rbytes} bytes, hash {part:016x}\n\
         send capture linux 600 400 100 100\n\
         expect error: vm linux: the region 600,400 100x100 is not inside its {gw}x{gh} frame; nothing changed\n\
         send capture linux {rx} {ry} {rw} {rh}\n\
         expect ok: vm linux: captured {rw}x{rh} at {rx},{ry}, {rbytes} bytes, hash {part:016x}\n\
         send script bad\n\
         expect type the script\n\
         send type \"unterminated\n\
         send end\n\
         expect error: script bad refused: line 1: BadString\n\
         send script typed\n\
         expect type the script\n\
         send wait-change {bx} {by} {bw} {bh} timeout 600000\n\
         send type \"echo scripted-$((6*7))\\\\n\"\n\
         send end\n\
         expect ok: script typed saved \\(2 steps\\)\n\
         send input script linux typed\n\
         expect ok: vm linux: script typed started \\(2 steps\\)\n\
         send input script linux hello\n\
         expect error: vm linux: busy: an input script is running on it \\(step 1 of 2\\)\n\
         send input type linux \"sh /tmp/block.sh\\\\n\"\n\
         expect ok: vm linux: 34 events: 34 delivered\n\
         expect (?s)(scripted-42.*rayos: vm linux: script typed finished \\(2 steps\\)|rayos: vm linux: script typed finished \\(2 steps\\).*scripted-42)\n\
         send capture linux {bx} {by} {bw} {bh}\n\
         expect ok: vm linux: captured {bw}x{bh} at {bx},{by}\n\
         send capture linux 0 0 {gw} {by}\n\
         expect ok: vm linux: captured {gw}x{by} at 0,0\n\
         send script blocked\n\
         expect type the script\n\
         send wait-match 0 0 {gw} {gh} {with_block:016x} timeout 120000\n\
         send end\n\
         expect ok: script blocked saved \\(1 steps\\)\n\
         send input script linux blocked\n\
         expect ok: vm linux: script blocked started \\(1 steps\\)\n\
         expect rayos: vm linux: script blocked finished \\(1 steps\\)\n\
         send capture linux\n\
         expect ok: vm linux: captured {gw}x{gh}, {bytes} bytes, hash {with_block:016x}\n\
         send frames linux\n\
         expect ok: vm linux: [1-9][0-9]* frame-ready events, last frame [1-9][0-9]* \\(damage [0-9]+,[0-9]+ [1-9][0-9]*x[1-9][0-9]*\\)\n",
        bytes = gw * gh * 4,
        rx = region.0,
        ry = region.1,
        rw = region.2,
        rh = region.3,
        rbytes = region.2 * region.3 * 4,
    );
    o.script = Some(script("authority-scripts.script", &text));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    let c = &outcome.console;
    // The busy refusal started nothing: `hello` never typed its greeting.
    assert!(!c.contains("hello from rayos"), "\n{tail}");
    assert!(c.contains("block-drawn"), "\n{tail}");
    // The command ran once, after the script that types it started.
    let started = c.find("script typed started").expect("started");
    let ran: Vec<usize> = c.match_indices("scripted-42").map(|(i, _)| i).collect();
    assert_eq!(ran.len(), 1, "\n{tail}");
    assert!(ran[0] > started, "\n{tail}");
}

/// Budget of the scripts-and-capture boot.
const SCRIPTS_TIMEOUT: Duration = Duration::from_secs(600);
