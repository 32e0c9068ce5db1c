//! The guest's display end to end: the Linux guest draws a known test pattern into
//! `/dev/fb0` (its virtio-gpu's fbdev), the hypervisor's render loop composes the
//! guest's scanout as a panel into the physical display (QEMU's virtio-gpu), and a
//! `screendump` of that display (QMP) shows the pattern exactly at the panel's
//! rectangle at scale 1, the background everywhere else. Then the guest overwrites a
//! block of rows (its fbdev flushes only those rows: a damage-only recomposition),
//! and a second screendump shows the block there and the first pattern around it.
//!
//! Meanwhile the render loop composes with NEON on whichever CPU it runs, between
//! the guest's instructions: after the block the guest keeps rewriting it (a
//! composition at every frame) while busybox `awk` sums doubles, and the sum must be
//! exact, which it is not if composition leaks into the guest's FP/SIMD registers.
//!
//! The presentation commands of the monitor (`display …`) on the same guest: a
//! panel at half size (bilinear, within [`HALF_TOLERANCE`]), the overlay line,
//! hidden (pattern gone), frozen (the guest draws the block, the screen keeps the
//! pattern), unfrozen (the block appears), `display status`, refused values, and
//! `display mode`'s status line.
//!
//! Placements and the mode on a third guest: fullscreen (fitted, letterboxed) and a
//! quad, and fullscreen throttled to 2 frames/s, each screendump equal byte for byte
//! to the same scene composed on the host by the compositor's portable loops; then
//! `display mode 800 600`, after which the guest's DRM connector (probed through
//! sysfs `status`) prefers 800x600 where it preferred 640x480.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use xtask::qemu::DEFAULT_DISPLAY;
use xtask::qmp::parse_ppm;
use xtask::run::{Ending, Guest, RunOptions, LINUX_CMDLINE};
use xtask::Layout;

/// Budget of the boot and the script: a backstop against a hang, far beyond
/// what a run takes on a loaded host (every step waits for an event, none for
/// a time).
const TIMEOUT: Duration = Duration::from_secs(600);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/display-tests.img";
/// The pattern's tile: TILE_W × TILE_H pixels, repeated over the whole screen.
const TILE_W: u32 = 8;
const TILE_H: u32 = 8;
/// Line the guest prints once the pattern is in `/dev/fb0`.
const WRITTEN: &str = "pattern-written";
/// Line the guest prints once the block is in `/dev/fb0`.
const BLOCK_WRITTEN: &str = "block-written";
/// The block: guest pixels `BLOCK_X..+64` of rows `BLOCK_Y..+16`, one colour.
const BLOCK_X: u32 = 192;
const BLOCK_Y: u32 = 100;
const BLOCK_W: u32 = 64;
const BLOCK_H: u32 = 16;
const BLOCK_COLOUR: u32 = 0xff_8000;
/// The guest's floating-point sum: `i/8` for `i` in `1..=FP_TERMS`, every partial
/// sum exact in a double.
const FP_TERMS: u64 = 400_000;
/// Prefix of the line with the guest's sum.
const FP_SUM: &str = "fp-sum=";

/// Pixel (x, y) of the pattern as 0xRRGGBB: every pixel of a tile differs (red
/// names the column, green the row), so a shift by less than a tile shows, and
/// none is the background.
fn pattern(x: u32, y: u32) -> u32 {
    let (i, j) = (x % TILE_W, y % TILE_H);
    ((0x28 + 0x1c * i) << 16) | ((0x38 + 0x18 * j) << 8) | (0x48 + 0x11 * (i ^ j))
}

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

/// The guest command: detach the framebuffer console (its cursor would draw over
/// the pattern; the command line also turns the cursor off, and a second passes for
/// a blink already queued), build the frame from the tile (XRGB8888: bytes B, G, R, X) by
/// doubling files, write it to `/dev/fb0`, report, wait for a console line
/// (the script's `send go`, after its first screendump), draw the block, stay up.
fn guest_cmd(width: u32, height: u32) -> String {
    guest_cmd_with(
        width,
        height,
        "cat /sys/class/graphics/fb0/virtual_size\n",
        "read",
        &format!(
            "(while :;do dd if=y of=/dev/fb0 bs={bw} seek={at} conv=notrunc 2>/dev/null;done)&awk 'BEGIN{{for(i=1;i<={FP_TERMS};i++)s+=i/8;printf \"{FP_SUM}%.1f\\n\",s}}';kill $!\n",
            bw = BLOCK_W * 4,
            at = (BLOCK_Y * width + BLOCK_X) / BLOCK_W,
        ),
    )
}

/// Longest guest command: it travels base64-encoded on the kernel command line,
/// which arm64 kernels cut at 2048 bytes (`xtask::linux_guest::guest_cmd_arg`).
const CMD_BUDGET: usize = 1400;

/// [`guest_cmd`] running `probe` first, waiting with `pause` between the drawings
/// and running `then` after the block; the guest then stays up for an hour, so
/// a run ends with its script (or the host's shutdown), however slow the host.
/// The command must stay under [`CMD_BUDGET`].
fn guest_cmd_with(width: u32, height: u32, probe: &str, pause: &str, then: &str) -> String {
    let mut tile = Vec::new();
    for y in 0..TILE_H {
        for x in 0..TILE_W {
            let p = pattern(x, y);
            tile.extend([p as u8, (p >> 8) as u8, (p >> 16) as u8, 0]);
        }
    }
    let tile_row = TILE_W * 4;
    let row = width * 4;
    format!(
        r#"for v in /sys/class/vtconsole/vtcon*;do grep -q 'frame buffer' $v/name&&echo 0>$v/bind;done;sleep 1
{probe}cd /tmp;echo {b64}|base64 -d>t
d(){{ cp $1 y;n=1;while [ $n -lt $2 ];do cat y y>z;mv z y;n=$((n*2));done; }}
k=0;while [ $k -lt {th} ];do dd if=t bs={tr} skip=$k count=1 2>/dev/null>x;d x {reps};dd if=y bs={row} count=1 2>/dev/null>>b;k=$((k+1));done
d b {blocks};dd if=y of=/dev/fb0 bs={block} count={blocks} 2>/dev/null
echo {WRITTEN};{pause}
printf '\000\200\377\000'>p;d p {BLOCK_W}
k={BLOCK_Y};while [ $k -lt {block_end} ];do dd if=y of=/dev/fb0 bs={block_row} seek=$(( (k*{row}+{block_off})/{block_row} )) conv=notrunc 2>/dev/null;k=$((k+1));done
echo {BLOCK_WRITTEN};{then}sleep 3600"#,
        b64 = base64(&tile),
        th = TILE_H,
        tr = tile_row,
        reps = width / TILE_W,
        row = row,
        block = row * TILE_H,
        blocks = height / TILE_H,
        block_end = BLOCK_Y + BLOCK_H,
        block_row = BLOCK_W * 4,
        block_off = BLOCK_X * 4,
    )
}

#[test]
fn the_guest_framebuffer_is_shown_as_a_panel_exactly() {
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (px, py) = vgpu::present::DEFAULT_PANEL;
    let layout = Layout::detect();
    let dump = layout.out.join("test-scripts/display-panel.ppm");
    let dump2 = layout.out.join("test-scripts/display-block.ppm");
    for f in [&dump, &dump2] {
        let _ = std::fs::remove_file(f);
    }
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration: it boots the
    // VM hidden, so the script presents it; `monitor` lines go to its shell.
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd(gw, gh));
    o.append = Some(format!("{LINUX_CMDLINE} vt.global_cursor_default=0"));
    // The render loop presents at once when the guest idles; the guest's fbdev
    // flushes its damage from a worker shortly after the write.
    o.script = Some(script(
        "display-panel.script",
        &format!(
            "expect {gw},{gh}\nexpect {WRITTEN}\nmonitor display present linux panel {px} {py} {gw} {gh}\nsleep 3\nscreendump {}\nattach linux\nsend go\nexpect {BLOCK_WRITTEN}\nsleep 3\nscreendump {}\nexpect {FP_SUM}\n",
            dump.display(),
            dump2.display()
        ),
    ));
    let outcome = boot(&o);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the guest did not draw (or the screendump failed)\n{}",
        console_tail(&outcome)
    );
    let want = format!("{FP_SUM}{}.0", FP_TERMS * (FP_TERMS + 1) / 16);
    let sums: Vec<&str> = outcome
        .console
        .lines()
        .filter_map(|l| Some(&l[l.find(FP_SUM)?..]))
        .map(str::trim_end)
        .filter(|l| !l.contains('%'))
        .collect();
    assert_eq!(
        sums,
        [want.as_str()],
        "the guest's FP sum while the display composed\n{}",
        console_tail(&outcome)
    );
    let (x0, y0) = (px as u32, py as u32);
    for (file, with_block) in [(&dump, false), (&dump2, true)] {
        let img = parse_ppm(&std::fs::read(file).expect("screendump written")).expect("a PPM");
        assert_eq!((img.width, img.height), DEFAULT_DISPLAY);
        let mut wrong = Vec::new();
        for y in 0..img.height {
            for x in 0..img.width {
                let inside = (x0..x0 + gw).contains(&x) && (y0..y0 + gh).contains(&y);
                let (gx, gy) = (x.wrapping_sub(x0), y.wrapping_sub(y0));
                let in_block = (BLOCK_X..BLOCK_X + BLOCK_W).contains(&gx)
                    && (BLOCK_Y..BLOCK_Y + BLOCK_H).contains(&gy);
                let want = match (inside, with_block && in_block) {
                    (false, _) => vgpu::present::BACKGROUND,
                    (true, true) => BLOCK_COLOUR,
                    (true, false) => pattern(gx, gy),
                };
                if img.at(x, y) != want {
                    wrong.push((x, y, img.at(x, y), want));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{}: {} pixels differ; first (x, y, got, want): {:?}",
            file.display(),
            wrong.len(),
            &wrong[..wrong.len().min(8)]
        );
    }
}

#[test]
fn the_pattern_and_background_are_distinct() {
    // The check above could not tell a missing panel from a drawn one otherwise.
    for y in 0..TILE_H {
        for x in 0..TILE_W {
            assert_ne!(pattern(x, y), vgpu::present::BACKGROUND);
            for (x2, y2) in [(x + 1, y), (x, y + 1)] {
                if x2 < TILE_W && y2 < TILE_H {
                    assert_ne!(pattern(x, y), pattern(x2, y2));
                }
            }
        }
    }
    for (name, cmd) in [
        ("guest_cmd", guest_cmd(640, 480)),
        ("presentation_cmd", presentation_cmd(640, 480)),
        ("placement_cmd", placement_cmd(640, 480)),
    ] {
        let n = cmd.len();
        assert!(n < CMD_BUDGET, "{name} fits the kernel command line: {n}");
    }
}

/// Largest per-channel difference from the exact 2×2 average allowed in the panel
/// scaled to half size (the compositor's bilinear weights are 8-bit).
const HALF_TOLERANCE: i32 = 3;
/// The overlay line of the presentation test.
const OVERLAY: &str = "RAYOS OVERLAY 42";

/// The presentation test's guest: the pattern, then (after a line on the console)
/// the block.
fn presentation_cmd(width: u32, height: u32) -> String {
    guest_cmd_with(width, height, "", "read", "")
}

/// What the panel area of a screendump should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// The guest's screen at scale 1 at the default panel, with or without the block.
    Exact { block: bool },
    /// The pattern at half size at the default panel's corner.
    Half,
    /// Nothing: background.
    Hidden,
}

/// Channel `i` (0 blue .. 2 red) of an 0xRRGGBB value.
fn channel(p: u32, i: u32) -> i32 {
    ((p >> (8 * i)) & 0xff) as i32
}

/// Checks `file` against `shown` with the overlay line at the bottom; returns the
/// mismatches, described.
fn check_presentation(file: &std::path::Path, shown: Shown) -> Vec<String> {
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (x0, y0) = {
        let (x, y) = vgpu::present::DEFAULT_PANEL;
        (x as u32, y as u32)
    };
    let img = parse_ppm(&std::fs::read(file).expect("screendump written")).expect("a PPM");
    assert_eq!((img.width, img.height), DEFAULT_DISPLAY);
    let bar = compositor::text::status_bar(
        img.width,
        OVERLAY,
        vgpu::present::OVERLAY_SCALE,
        vgpu::present::OVERLAY_FG,
        vgpu::present::OVERLAY_BG,
    );
    let bar_top = img.height - bar.height;
    let mut wrong = Vec::new();
    let mut lit = 0;
    for y in 0..img.height {
        for x in 0..img.width {
            let got = img.at(x, y);
            if y >= bar_top {
                let i = (((y - bar_top) * bar.width + x) * 4) as usize;
                let want = u32::from_le_bytes(bar.data[i..i + 4].try_into().unwrap()) & 0xff_ffff;
                lit += usize::from(want == vgpu::present::OVERLAY_FG & 0xff_ffff);
                if got != want {
                    wrong.push(format!("overlay ({x}, {y}): {got:06x}, want {want:06x}"));
                }
                continue;
            }
            let (gx, gy) = (x.wrapping_sub(x0), y.wrapping_sub(y0));
            let want = match shown {
                Shown::Hidden => vgpu::present::BACKGROUND,
                Shown::Exact { block } => {
                    if gx >= gw || gy >= gh {
                        vgpu::present::BACKGROUND
                    } else if block
                        && (BLOCK_X..BLOCK_X + BLOCK_W).contains(&gx)
                        && (BLOCK_Y..BLOCK_Y + BLOCK_H).contains(&gy)
                    {
                        BLOCK_COLOUR
                    } else {
                        pattern(gx, gy)
                    }
                }
                Shown::Half => {
                    if gx >= gw / 2 || gy >= gh / 2 {
                        vgpu::present::BACKGROUND
                    } else {
                        // The centre of output pixel gx maps to guest x 2·gx + 1: the
                        // average of the four texels around it.
                        let texels = [(0, 0), (1, 0), (0, 1), (1, 1)]
                            .map(|(dx, dy)| pattern(2 * gx + dx, 2 * gy + dy));
                        let far = (0..3).any(|i| {
                            let avg =
                                texels.iter().map(|&t| channel(t, i)).sum::<i32>() as f64 / 4.0;
                            (f64::from(channel(got, i)) - avg).abs() > f64::from(HALF_TOLERANCE)
                        });
                        if far {
                            wrong.push(format!(
                                "half ({x}, {y}): {got:06x}, want the average of {texels:06x?}"
                            ));
                        }
                        continue;
                    }
                }
            };
            if got != want {
                wrong.push(format!("({x}, {y}): {got:06x}, want {want:06x}"));
            }
        }
    }
    if lit < 100 {
        wrong.push(format!("the overlay text has only {lit} lit pixels"));
    }
    wrong
}

#[test]
fn presentation_commands_scale_hide_freeze_and_overlay() {
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (px, py) = vgpu::present::DEFAULT_PANEL;
    let layout = Layout::detect();
    let dir = layout.out.join("test-scripts");
    let dumps = [
        "present-half",
        "present-hidden",
        "present-frozen",
        "present-unfrozen",
    ]
    .map(|n| dir.join(format!("{n}.ppm")));
    for f in &dumps {
        let _ = std::fs::remove_file(f);
    }
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration: it boots the
    // VM hidden, so the script presents it; `monitor` lines go to its shell.
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(presentation_cmd(gw, gh));
    o.append = Some(format!("{LINUX_CMDLINE} vt.global_cursor_default=0"));
    let (hw, hh) = (gw / 2, gh / 2);
    o.script = Some(script(
        "display-present.script",
        &format!(
            "expect {WRITTEN}\n\
             sleep 3\n\
             monitor display overlay {OVERLAY}\n\
             monitor display present linux panel {px} {py} {hw} {hh}\n\
             sleep 2\n\
             screendump {half}\n\
             monitor display hide linux\n\
             sleep 2\n\
             screendump {hidden}\n\
             monitor display present linux panel {px} {py} {gw} {gh}\n\
             monitor display freeze linux\n\
             attach linux\n\
             send go\n\
             expect {BLOCK_WRITTEN}\n\
             sleep 3\n\
             screendump {frozen}\n\
             monitor display unfreeze linux\n\
             sleep 2\n\
             screendump {unfrozen}\n\
             monitor display status\n\
             monitor display throttle linux 0\n\
             monitor display present nosuch fullscreen\n\
             monitor display mode linux 800 600\n",
            half = dumps[0].display(),
            hidden = dumps[1].display(),
            frozen = dumps[2].display(),
            unfrozen = dumps[3].display(),
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    for (file, shown) in dumps.iter().zip([
        Shown::Half,
        Shown::Hidden,
        Shown::Exact { block: false },
        Shown::Exact { block: true },
    ]) {
        let wrong = check_presentation(file, shown);
        assert!(
            wrong.is_empty(),
            "{} ({shown:?}): {} pixels differ; first: {:?}",
            file.display(),
            wrong.len(),
            &wrong[..wrong.len().min(8)]
        );
    }
    let statuses = monitor_answers(&outcome.console);
    let (dw, dh) = DEFAULT_DISPLAY;
    assert_eq!(
        statuses,
        [
            format!("ok: overlay shows '{OVERLAY}'"),
            format!("ok: vm linux presented as a panel {hw}x{hh} at ({px}, {py})"),
            "ok: vm linux hidden".into(),
            format!("ok: vm linux presented as a panel {gw}x{gh} at ({px}, {py})"),
            "ok: vm linux frozen (its last frame stays)".into(),
            "ok: vm linux live again".into(),
            format!(
                "ok: display {dw}x{dh}; vm linux live panel {px} {py} {gw}x{gh} (virtual monitor {gw}x{gh}); overlay '{OVERLAY}'"
            ),
            "error: vm linux: frame rate 0 is not within 1..=1000; nothing changed".into(),
            "error: no VM named 'nosuch' (see `vm list`)".into(),
            "ok: vm linux virtual monitor mode 800x600 (guest notified)".into(),
        ],
        "\n{tail}"
    );
}

/// The connector of the guest's virtio-gpu in sysfs.
const CONNECTOR: &str = "/sys/class/drm/card0-Virtual-1";
/// The mode `display mode` gives the guest.
const NEW_MODE: (u32, u32) = (800, 600);
/// The quad of the placement test: the output points of the guest screen's corners
/// (top-left, top-right, bottom-right, bottom-left), a panel turned away on its
/// right.
const QUAD: [(i32, i32); 4] = [(200, 100), (900, 180), (880, 560), (220, 700)];

/// The guest of the placement test: the pattern, then its connector's preferred
/// mode before and, polling with a forced probe once a console line says the host
/// changed the virtual monitor's mode, after.
fn placement_cmd(width: u32, height: u32) -> String {
    let (mw, mh) = NEW_MODE;
    let wait = format!(
        "echo mode0=$(head -1 {CONNECTOR}/modes);read x;i=0;while [ $i -lt 120 ];do echo detect>{CONNECTOR}/status;m=$(head -1 {CONNECTOR}/modes);[ \"$m\" = {mw}x{mh} ]&&break;sleep 1;i=$((i+1));done;echo mode1=$m;"
    );
    guest_cmd_with(width, height, "", &wait, "")
}

/// What the render loop shows for the pattern placed at `placement` with `filter`
/// (the presenter's choice for that placement), composed on the host by the
/// compositor library with its portable loops: the hypervisor's frame must equal it
/// byte for byte (its NEON kernels give the same bytes, its placement the same
/// geometry).
fn expected_frame(placement: compositor::Placement, filter: compositor::Filter) -> Vec<u32> {
    use compositor::{Frame, Layer, PixelFormat, Scene, Surface};
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (dw, dh) = DEFAULT_DISPLAY;
    let pixels: Vec<u8> = (0..gh)
        .flat_map(|y| (0..gw).map(move |x| pattern(x, y)))
        .flat_map(u32::to_le_bytes)
        .collect();
    let surface = Surface::new(&pixels, gw, gh, gw as usize * 4, PixelFormat::Xrgb8888)
        .expect("the pattern is a valid surface");
    let mut layer = Layer::new(surface, 0, 0);
    layer.placement = placement;
    layer.filter = filter;
    let scene = Scene {
        background: vgpu::present::BACKGROUND,
        layers: vec![layer],
    };
    let mut out = vec![0u8; (dw * dh * 4) as usize];
    let mut frame = Frame::new(&mut out, dw, dh, dw as usize * 4, PixelFormat::Xrgb8888)
        .expect("a valid frame");
    let report = compositor::compose_full(&scene, &mut frame);
    assert!(report.skipped.is_empty(), "{report:?}");
    out.chunks_exact(4)
        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & 0xff_ffff)
        .collect()
}

/// The screendump `file` against `want` (0xRRGGBB per pixel, row-major).
fn compare_dump(file: &std::path::Path, want: &[u32]) -> Vec<String> {
    let img = parse_ppm(&std::fs::read(file).expect("screendump written")).expect("a PPM");
    assert_eq!((img.width, img.height), DEFAULT_DISPLAY);
    let mut wrong = Vec::new();
    for y in 0..img.height {
        for x in 0..img.width {
            let w = want[(y * img.width + x) as usize];
            if img.at(x, y) != w {
                wrong.push(format!("({x}, {y}): {:06x}, want {w:06x}", img.at(x, y)));
            }
        }
    }
    wrong
}

#[test]
fn fullscreen_and_quad_placements_and_the_guest_mode_change() {
    use compositor::{Filter, Placement, Rect, Transform};
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (dw, dh) = DEFAULT_DISPLAY;
    let (mw, mh) = NEW_MODE;
    let layout = Layout::detect();
    let dir = layout.out.join("test-scripts");
    let dumps =
        ["place-fullscreen", "place-quad", "place-throttled"].map(|n| dir.join(format!("{n}.ppm")));
    for f in &dumps {
        let _ = std::fs::remove_file(f);
    }
    let quad = QUAD
        .iter()
        .map(|(x, y)| format!("{x} {y}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration: it boots the
    // VM hidden, so the script presents it; `monitor` lines go to its shell.
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(placement_cmd(gw, gh));
    o.append = Some(format!("{LINUX_CMDLINE} vt.global_cursor_default=0"));
    o.script = Some(script(
        "display-place.script",
        &format!(
            "expect {WRITTEN}\n\
             sleep 3\n\
             monitor display present linux fullscreen\n\
             sleep 2\n\
             screendump {full}\n\
             monitor display present linux quad {quad}\n\
             sleep 2\n\
             screendump {quad_dump}\n\
             monitor display present linux fullscreen\n\
             monitor display throttle linux 2\n\
             sleep 3\n\
             screendump {throttled}\n\
             monitor display mode linux {mw} {mh}\n\
             attach linux\n\
             send go\n\
             expect mode1=\n\
             monitor display status\n",
            full = dumps[0].display(),
            quad_dump = dumps[1].display(),
            throttled = dumps[2].display(),
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");

    // Fullscreen: fitted (the 4:3 screen in the 16:10 display: full height, centred
    // with background bars left and right), scaled bilinearly.
    let fit = Rect::fit(gw, gh, Rect::new(0, 0, dw, dh)).expect("fits");
    assert_eq!((fit.h, fit.y), (dh, 0), "{fit:?}");
    assert!(fit.x > 0 && fit.w < dw, "{fit:?}: letterboxed");
    let full = expected_frame(Placement::Scaled(fit), Filter::Bilinear);
    for (x, y) in [(0, 0), (fit.x as u32 - 1, dh / 2), (dw - 1, dh - 1)] {
        assert_eq!(
            full[(y * dw + x) as usize],
            vgpu::present::BACKGROUND,
            "bar ({x}, {y})"
        );
    }
    let quad_t = Transform::from_quad(gw, gh, QUAD).expect("a proper quad");
    let quad_frame = expected_frame(Placement::Transform(quad_t), Filter::Bilinear);
    for (file, want) in [
        (&dumps[0], &full),
        (&dumps[1], &quad_frame),
        (&dumps[2], &full),
    ] {
        let wrong = compare_dump(file, want);
        assert!(
            wrong.is_empty(),
            "{}: {} pixels differ; first: {:?}\n{tail}",
            file.display(),
            wrong.len(),
            &wrong[..wrong.len().min(8)]
        );
    }

    // The guest saw its virtual monitor change: its connector's preferred mode.
    let line = |key: &str| {
        outcome
            .console
            .lines()
            .filter_map(|l| Some(l[l.find(key)?..].trim_end().to_string()))
            .find(|l| !l.contains('$'))
    };
    assert_eq!(
        line("mode0=").as_deref(),
        Some(&*format!("mode0={gw}x{gh}")),
        "\n{tail}"
    );
    assert_eq!(
        line("mode1=").as_deref(),
        Some(&*format!("mode1={mw}x{mh}")),
        "\n{tail}"
    );
    let statuses = monitor_answers(&outcome.console);
    let points = QUAD
        .iter()
        .map(|(x, y)| format!("({x}, {y})"))
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        statuses,
        [
            "ok: vm linux presented fullscreen".to_string(),
            format!("ok: vm linux presented as a quad {points}"),
            "ok: vm linux presented fullscreen".into(),
            "ok: vm linux throttled to 2 frames/s".into(),
            format!("ok: vm linux virtual monitor mode {mw}x{mh} (guest notified)"),
            format!(
                "ok: display {dw}x{dh}; vm linux throttled 2 fps fullscreen (virtual monitor {mw}x{mh}); overlay none"
            ),
        ],
        "\n{tail}"
    );
}

/// The status lines (`ok: …`, `error: …`) on `console`, a `display status`
/// line without its frame count and time (they vary; see [`frames_of`]).
fn monitor_answers(console: &str) -> Vec<String> {
    statuses(console)
        .into_iter()
        .map(|s| frames_of(s).map_or(s.to_string(), |(head, _, _)| head))
        .collect()
}

/// A `display status` answer's head, frames composed for the VM and the
/// hypervisor's counter time in microseconds (`…; frames N at T us[; …]`).
fn frames_of(status: &str) -> Option<(String, u64, u64)> {
    let (head, tail) = status.rsplit_once("; frames ")?;
    let (n, rest) = tail.split_once(" at ")?;
    // A linear framebuffer's part may follow (`…; framebuffer …`).
    let (us, _) = rest.split_once(" us")?;
    Some((head.to_string(), n.parse().ok()?, us.parse().ok()?))
}

/// Host seconds each rate is measured over (the figures are the hypervisor's).
const MEASURE_SECS: u32 = 6;

/// Most frames a presentation throttled to `fps` may compose in `us`
/// microseconds: ceil(T·fps) + 1 (one at each end of the interval).
fn throttle_bound(fps: u64, us: u64) -> u64 {
    (us * fps).div_ceil(1_000_000) + 1
}

#[test]
fn a_throttle_bounds_the_frames_of_a_guest_flooding_flushes() {
    // The guest rewrites `/dev/fb0` in a loop (its fbdev flushes as often as it
    // can); `display status` reports the frames composed for it and
    // the hypervisor's counter time. Throttled to 2 frames/s, the frames between two
    // status lines are at most ceil(T·2) + 1 for the T between them; throttled to
    // 60, the same measurement counts more than that bound (so the flood is fast
    // enough for the first bound to mean something), and at most ceil(T·60) + 1.
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let layout = Layout::detect();
    let (px, py) = vgpu::present::DEFAULT_PANEL;
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration: it boots the
    // VM hidden, so the script presents it; `monitor` lines go to its shell.
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    // One `dd` writing the whole framebuffer 64 bytes at a time, again and again:
    // the pages it dirties keep the fbdev's deferred flush (every 50 ms) busy,
    // where a `dd` started per block flushes only as often as busybox can fork.
    let flood = "(while :;do dd if=/dev/zero of=/dev/fb0 bs=64 2>/dev/null;done)&";
    o.guest_cmd = Some(guest_cmd_with(gw, gh, "", "sleep 1", flood));
    o.append = Some(format!("{LINUX_CMDLINE} vt.global_cursor_default=0"));
    o.script = Some(script(
        "display-throttle.script",
        &format!(
            "expect {BLOCK_WRITTEN}\n\
             monitor display present linux panel {px} {py} {gw} {gh}\n\
             monitor display throttle linux 2\n\
             sleep 1\n\
             monitor display status\n\
             sleep {MEASURE_SECS}\n\
             monitor display status\n\
             monitor display throttle linux 60\n\
             sleep 1\n\
             monitor display status\n\
             sleep {MEASURE_SECS}\n\
             monitor display status\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    let samples: Vec<(u64, u64)> = statuses(&outcome.console)
        .into_iter()
        .filter_map(frames_of)
        .map(|(_, n, us)| (n, us))
        .collect();
    assert_eq!(samples.len(), 4, "{samples:?}\n{tail}");
    let delta = |a: usize| {
        let ((n0, t0), (n1, t1)) = (samples[a], samples[a + 1]);
        assert!(n1 >= n0 && t1 > t0, "{samples:?}");
        (n1 - n0, t1 - t0)
    };
    let (slow, slow_us) = delta(0);
    let (fast, fast_us) = delta(2);
    eprintln!(
        "throttled to 2: {slow} frames in {slow_us} us; to 60: {fast} frames in {fast_us} us"
    );
    assert!(slow >= 1, "{samples:?}\n{tail}");
    assert!(
        slow <= throttle_bound(2, slow_us),
        "2 frames/s: {slow} frames in {slow_us} us\n{tail}"
    );
    assert!(
        fast > throttle_bound(2, fast_us),
        "60 frames/s: {fast} frames in {fast_us} us, no faster than 2/s\n{tail}"
    );
    assert!(
        fast <= throttle_bound(60, fast_us),
        "60 frames/s: {fast} frames in {fast_us} us\n{tail}"
    );
}

/// Where the simple-framebuffer test presents the guest's framebuffer.
const FB_PANEL: (u32, u32) = (200, 100);

/// Checks a screendump for the guest's screen (with or without the block) unscaled
/// at `at`, the background elsewhere; returns the mismatches.
fn check_exact_at(file: &std::path::Path, at: (u32, u32), with_block: bool) -> Vec<String> {
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let img = parse_ppm(&std::fs::read(file).expect("screendump written")).expect("a PPM");
    assert_eq!((img.width, img.height), DEFAULT_DISPLAY);
    let mut wrong = Vec::new();
    for y in 0..img.height {
        for x in 0..img.width {
            let (gx, gy) = (x.wrapping_sub(at.0), y.wrapping_sub(at.1));
            let in_block = (BLOCK_X..BLOCK_X + BLOCK_W).contains(&gx)
                && (BLOCK_Y..BLOCK_Y + BLOCK_H).contains(&gy);
            let want = if gx >= gw || gy >= gh {
                vgpu::present::BACKGROUND
            } else if with_block && in_block {
                BLOCK_COLOUR
            } else {
                pattern(gx, gy)
            };
            if img.at(x, y) != want {
                wrong.push(format!("({x}, {y}): {:06x}, want {want:06x}", img.at(x, y)));
            }
        }
    }
    wrong
}

/// The Linux guest run with `rayos.fb=simple` gets a device-tree
/// `simple-framebuffer` (Debian's built-in `simplefb` binds it as `/dev/fb0`,
/// named `simple`) in RAM the hypervisor write-protects at stage 2. The guest draws
/// the pattern into it with plain stores — no flush, no device — and
/// `display present linux panel` shows it exactly at scale 1; the block of 16 rows
/// then appears, and `display status` says everything recomposed since the status
/// before lay within the full-width strip of rows whose pages the block's writes
/// touched (rows 99..117 of the framebuffer: `vgpu::linear`'s page → row mapping),
/// not the whole panel.
#[test]
fn the_simple_framebuffer_is_tracked_by_stage_2_and_recomposed_where_written() {
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    assert_eq!((gw, gh), boards::devices::SIMPLE_FB_MODE);
    let layout = Layout::detect();
    let dump = layout.out.join("test-scripts/simplefb-pattern.ppm");
    let dump2 = layout.out.join("test-scripts/simplefb-block.ppm");
    for f in [&dump, &dump2] {
        let _ = std::fs::remove_file(f);
    }
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration: it boots the
    // VM hidden, so the script presents it; `monitor` lines go to its shell.
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd_with(
        gw,
        gh,
        "echo fbname=$(cat /sys/class/graphics/fb0/name)\n",
        "read",
        "",
    ));
    o.append = Some(format!(
        "{LINUX_CMDLINE} vt.global_cursor_default=0 {}",
        boards::devices::SIMPLE_FB_OPTION
    ));
    let (px, py) = FB_PANEL;
    o.script = Some(script(
        "display-simplefb.script",
        &format!(
            "expect fbname=simple\n\
             expect {WRITTEN}\n\
             monitor display present linux panel {px} {py} {gw} {gh}\n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n\
             attach linux\n\
             send go\n\
             expect {BLOCK_WRITTEN}\n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n",
            dump.display(),
            dump2.display()
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the guest did not draw into its simple framebuffer\n{tail}"
    );
    for (file, block) in [(&dump, false), (&dump2, true)] {
        let wrong = check_exact_at(file, FB_PANEL, block);
        assert!(
            wrong.is_empty(),
            "{}: {} pixels differ; first: {:?}\n{tail}",
            file.display(),
            wrong.len(),
            &wrong[..wrong.len().min(8)]
        );
    }
    let statuses: Vec<&str> = statuses(&outcome.console)
        .into_iter()
        .filter(|s| s.starts_with("ok: display "))
        .collect();
    assert_eq!(statuses.len(), 2, "two display status lines\n{tail}");
    // The block's writes: 256 bytes at x = BLOCK_X of rows BLOCK_Y.., 2560-byte
    // rows, so their pages' rows (the framebuffer is 2 MiB-aligned).
    let stride = u64::from(gw) * 4;
    let geometry = vgpu::FbGeometry {
        base: 0,
        width: gw,
        height: gh,
        stride: stride as u32,
        format: vgpu::defs::format::B8G8R8X8_UNORM,
    };
    let first = (u64::from(BLOCK_Y) * stride + u64::from(BLOCK_X) * 4) / 4096;
    let last =
        (u64::from(BLOCK_Y + BLOCK_H - 1) * stride + u64::from(BLOCK_X + BLOCK_W) * 4 - 1) / 4096;
    let dirty = first as usize..last as usize + 1;
    let rows = geometry.rows_of(core::slice::from_ref(&dirty));
    assert_eq!(rows.len(), 1);
    let (r0, r1) = (rows[0].start, rows[0].end);
    assert!(r1 - r0 < 24, "a strip, not the panel: rows {r0}..{r1}");
    let want = format!("within {px},{} {gw}x{}", py + r0, r1 - r0);
    let second = statuses[1];
    assert!(
        second.contains(&format!("framebuffer {gw}x{gh} at 0x")) && second.ends_with(&want),
        "after the block, recomposed only {want}: {second}\n{tail}"
    );
    assert!(
        !second.contains(": 0 damage rects"),
        "the block was composed: {second}"
    );
}

/// `(KiB written, incremental)` of the last suspend the hypervisor logged.
fn last_suspend(console: &str) -> Option<(u64, bool)> {
    let re = regex::Regex::new(r"' suspended: (\d+) KiB written( \(incremental\))?,").unwrap();
    let c = re.captures_iter(console).last()?;
    Some((c[1].parse().unwrap(), c.get(2).is_some()))
}

/// The framebuffer's dirty log and incremental suspend's share the stage-2 write
/// faults but not their bitmaps: a VM with the simple framebuffer draws the pattern
/// and is suspended (`host shutdown`); resumed, it draws the block — shown on the
/// display, so the render loop took those pages — and is suspended again, which
/// must be incremental; resumed once more, the display shows the pattern with the
/// block, read back from the incremental image: the render loop's takes did not
/// clear suspend's marks of the block's pages.
#[test]
fn a_resumed_vm_with_a_simple_framebuffer_still_suspends_incrementally() {
    let _boot = boot_lock();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (px, py) = vgpu::present::DEFAULT_PANEL;
    let panel = (px as u32, py as u32);
    let layout = Layout::detect();
    let dir = layout
        .out
        .join("tmp")
        .join(format!("display-fb-suspend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("system-disk.img");
    let (resumed_dump, again_dump) = (dir.join("resumed.ppm"), dir.join("again.ppm"));
    let run = |name: &str, text: String, fresh: bool| {
        let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
        // Beside the authority partition: it boots (or resumes) the VM hidden,
        // so the scripts present it; `host shutdown` goes to its shell.
        o.authority = true;
        o.system_disk = Some(disk.clone());
        o.fresh = fresh;
        o.smp = Some(1);
        o.guest_cmd = Some(guest_cmd_with(
            gw,
            gh,
            "echo fbname=$(cat /sys/class/graphics/fb0/name)\n",
            "read",
            "",
        ));
        o.append = Some(format!(
            "{LINUX_CMDLINE} vt.global_cursor_default=0 {}",
            boards::devices::SIMPLE_FB_OPTION
        ));
        o.script = Some(script(name, &text));
        let out = boot(&o);
        let tail = console_tail(&out);
        assert_eq!(
            out.exit_code(),
            Some(0),
            "{name}: QEMU did not power off\n{tail}"
        );
        out
    };
    let first = run(
        "fb-suspend-1.script",
        format!("expect fbname=simple\nexpect {WRITTEN}\nmonitor host shutdown\n"),
        true,
    );
    let (full, inc) = last_suspend(&first.console)
        .unwrap_or_else(|| panic!("no suspend\n{}", console_tail(&first)));
    assert!(!inc, "the first suspend cannot be incremental");
    let second = run(
        "fb-suspend-2.script",
        format!(
            "expect resumed from its saved state\nexpect runs in the background\nmonitor display present linux panel {px} {py} {gw} {gh}\nattach linux\nsend go\nexpect {BLOCK_WRITTEN}\nsleep 3\nscreendump {}\nmonitor host shutdown\n",
            resumed_dump.display()
        ),
        false,
    );
    let tail = console_tail(&second);
    assert!(
        second.console.contains("resumed from its saved state"),
        "the hypervisor did not resume\n{tail}"
    );
    let (part, inc) = last_suspend(&second.console).expect("second suspend line");
    assert!(inc, "the second suspend was not incremental\n{tail}");
    assert!(
        part * 4 < full,
        "second suspend {part} KiB, first {full} KiB\n{tail}"
    );
    let wrong = check_exact_at(&resumed_dump, panel, true);
    assert!(
        wrong.is_empty(),
        "after the resume: {} pixels differ; first: {:?}\n{tail}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
    let third = run(
        "fb-suspend-3.script",
        format!(
            "expect resumed from its saved state\nexpect runs in the background\nmonitor display present linux panel {px} {py} {gw} {gh}\nsleep 5\nscreendump {}\nmonitor host shutdown\n",
            again_dump.display()
        ),
        false,
    );
    let tail = console_tail(&third);
    let wrong = check_exact_at(&again_dump, panel, true);
    assert!(
        wrong.is_empty(),
        "from the incremental image: {} pixels differ; first: {:?}\n{tail}",
        wrong.len(),
        &wrong[..wrong.len().min(8)]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
