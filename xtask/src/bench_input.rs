//! `input` (issue 16): what the hypervisor's input path costs, and what the
//! authority partition costs the scheduler. Its last line is
//! `input latency_ratio=… sched_throughput_ratio=…` and the figures behind them.
//!
//! **Latency.** One pointer move from the host (QMP `input-send-event` on QEMU's
//! physical `virtio-tablet-device`) to its arrival in the guest's evdev, in guest
//! time, under the hypervisor (el2 takes it from the physical tablet and routes it
//! to the presented VM's virtio-input tablet) against QEMU's own
//! `virtio-tablet-device` given straight to the same Linux kernel and initramfs
//! on a bare `virt` (no hypervisor), in the same run, both under `-icount
//! shift=0`. The host's injection has no guest timestamp, so the guest brackets
//! it itself, on one clock: it opens the tablet's evdev node, then for each of
//! [`EVENTS`] events reads `CLOCK_REALTIME` (busybox `adjtimex`, which reports
//! the kernel's time in microseconds — its `date` has no `%N` — into a file) and
//! prints a short mark (`@I`, the shell's own `echo`); the host waits for
//! that line (`expect`) and injects one move (`qmp input-send-event`,
//! alternating between two x positions so the input core never drops it as
//! unchanged); the guest reads the packet (`dd` of one read) and prints its first
//! `struct input_event`'s time (`lat-event I SEC USEC`, via `od -t d8`), then
//! the clock it read (`time.tv_sec:`/`time.tv_usec:` lines). evdev stamps events
//! with `CLOCK_REALTIME` unless a client asks otherwise (`EVIOCSCLOCKID`, which
//! busybox cannot issue), taken when the guest's driver hands the packet to the
//! input core: its arrival. One event's latency is event time − mark time; the
//! headline is the median over all rounds' events, `latency_ratio` =
//! hypervisor / bare (the issue's target: at most 1.2); `min_latency_ratio`, of
//! the minimums, follows beside it.
//!
//! The bracket holds more than the input path, identically on both sides:
//! `adjtimex` finishing and the shell reaping it, the mark's few bytes on the
//! console, the host noticing them and its QMP round trip (host reaction time,
//! in the guest time `-icount` gives an idling guest: it follows the host's
//! clock), and QEMU queueing the event on its tablet. So each figure is an upper
//! bound of that side's input latency and the ratio is diluted towards 1 by the
//! shared part; and as the host's reaction is in it, a loaded host moves the
//! medians (a side that ran while the host was busy reads slower), where the
//! minimums (the least host reaction of each side) hold still. The mark is kept
//! short on purpose: printing the clock before the host may react (a `sed` of
//! it, or `adjtimex`'s 400 bytes on the console) put 1–2 ms of the guest's own
//! work in the bracket and read ratios of 1.06–1.2 and 2.4 for the same
//! hypervisor. The hypervisor side's bracket also holds costs of its own that are
//! not input: its exits while `adjtimex` exits, and el2 emulating the guest's
//! UART for the mark — guest exits for every byte, where bare QEMU's UART costs
//! no guest time. So the mark is the fewest bytes that name the event (`@` and
//! the index, 4–5 bytes with the line end): the earlier `lat-mark I` (12–13
//! bytes) put about 7 µs of UART exits in every hypervisor latency (measured
//! in el2) and none in the bare side's; both sides print the same mark. Both
//! sides run the same guest program and the same host
//! steps, [`ROUNDS`] rounds of one boot each, hypervisor first (alternating
//! spreads the host's load over both). The hypervisor side runs the default
//! configuration, beside the authority partition, which boots the VM hidden
//! and without input: the script first does what the shell's `present linux`
//! does (`display present linux fullscreen`, `input interactive linux on`, as
//! `monitor` lines, which go to the partition's shell), attaches the console
//! to type `go` and detaches it again (Ctrl-]: an attached shell polls the
//! guest's console every 5 ms). The partition decides where physical input may go; el2 delivers
//! each event by those decisions without waking it (docs/architecture.md,
//! "Who owns physical input").
//!
//! **Scheduler cost.** [`crate::bench_sched`]'s pinned loops in a 2-vCPU guest on
//! a 2-CPU host, with and without the authority partition beside it
//! (`--authority`), under `-icount`: the partition takes CPU time only while it
//! works (it sleeps in WFI when its console is idle), so the guest's rounds with
//! it over without are `sched_throughput_ratio` (target: at least 0.95).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bench_boot::median;
use crate::bench_sched::{self, LOOP_CS, VCPUS};
use crate::error::{tail_lines, Error};
use crate::linux_guest;
use crate::qemu::{BareLinuxConfig, QemuLine};
use crate::run::{drive, prepare, Ending, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::script::Step;
use crate::session::Session;
use crate::Layout;

/// Pointer moves measured on each side.
pub const EVENTS: u32 = 20;
/// Rounds, each a hypervisor side then a bare side (alternating spreads the
/// host's load over both).
pub const ROUNDS: u32 = 3;
/// Budget of one side (boot, script and power-off).
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// The hypervisor side's system disk, under the workspace's `target/`.
pub const SYSTEM_DISK: &str = "bench-input-system.img";
/// The two x positions the moves alternate between, and the y of every move, on
/// QEMU's absolute axes (0..=0x7fff): inside the full-screen presentation.
pub const MOVE_X: [u32; 2] = [0x2000, 0x6000];
pub const MOVE_Y: u32 = 0x4000;
/// Prefixes of the guest's lines.
/// The mark is as short as it can be and still name its event: its bytes cross
/// the guest's emulated UART inside the bracket (see the module doc).
pub const MARK: &str = "@";
pub const EVENT: &str = "lat-event ";
/// busybox `adjtimex`'s lines with the kernel's time (seconds, microseconds).
pub const TV_SEC: &str = "time.tv_sec:";
pub const TV_USEC: &str = "time.tv_usec:";
/// The latency target of the issue (hypervisor / bare, at most).
pub const LATENCY_TARGET: f64 = 1.2;

/// The guest program: find the tablet's evdev node, open it, wait for `go`, then
/// [`EVENTS`] times print a mark with the time and the time of the next packet.
pub fn guest_cmd() -> String {
    format!(
        "for e in /sys/class/input/event*;do case \"$(cat $e/device/name)\" in *ablet*) d=/tmp/${{e##*/}};\
mknod $d c $(cut -d: -f1 $e/dev) $(cut -d: -f2 $e/dev);;esac;done\n\
exec 3<$d\necho lat-ready\nread x\ni=0\n\
while [ $i -lt {EVENTS} ];do adjtimex >/tmp/a;echo {MARK}$i;\
echo \"{EVENT}$i $(dd bs=4096 count=1 <&3 2>/dev/null|od -A n -v -t d8 -N 16)\";grep time.tv /tmp/a;i=$((i+1));done\n\
echo lat-done\n"
    )
}

/// The host's steps: wait for the guest, (`present`: show the VM, so input
/// reaches it), start it, and answer each mark with one move.
pub fn script(present: bool) -> String {
    let mut s = String::from("expect lat-ready\n");
    if present {
        // The partition's `present linux`, in the monitor's words (a script's
        // `monitor` line goes to the partition's shell), then the console for
        // `go`, given back at once (Ctrl-]): an attached shell polls the guest's
        // console every 5 ms, which is the serial line's cost, not input's. The
        // guest's lines reach the serial line either way.
        s.push_str(
            "monitor display present linux fullscreen\nmonitor input interactive linux on\nattach linux\nsend go\nsend \\x1d\n",
        );
    } else {
        s.push_str("send go\n");
    }
    for i in 0..EVENTS {
        let x = MOVE_X[i as usize % 2];
        s.push_str(&format!(
            "expect {MARK}{i}\\r?\\n\n\
             qmp input-send-event {{\"events\": [{{\"type\": \"abs\", \"data\": {{\"axis\": \"x\", \"value\": {x}}}}}, {{\"type\": \"abs\", \"data\": {{\"axis\": \"y\", \"value\": {MOVE_Y}}}}}]}}\n"
        ));
    }
    s.push_str("expect lat-done\n");
    s
}

/// Each event's latency in nanoseconds (event time − mark time), by index, from
/// the guest's lines; refuses missing, duplicated or malformed lines and a
/// negative latency (the clocks would not be the same).
pub fn parse(console: &str) -> Result<Vec<i64>, String> {
    let mut marks = vec![None; EVENTS as usize];
    let mut events = vec![None; EVENTS as usize];
    // The mark being read (`@I` seen, its `adjtimex` lines not yet) and
    // its seconds.
    let mut open: Option<(usize, Option<i64>)> = None;
    for l in console.lines().map(|l| l.trim_end_matches('\r')) {
        let bad = || format!("bad line `{l}`");
        let index = |w: &str| {
            w.trim()
                .parse::<usize>()
                .ok()
                .filter(|&i| i < EVENTS as usize)
                .ok_or_else(bad)
        };
        let (i, rest, is_mark) = if let Some(r) = l.strip_prefix(MARK) {
            if open.is_some() {
                return Err(format!("`{l}` before the previous mark's time"));
            }
            open = Some((index(r)?, None));
            continue;
        } else if let Some(r) = l.trim().strip_prefix(TV_SEC) {
            match &mut open {
                Some((_, sec @ None)) => *sec = Some(r.trim().parse::<i64>().map_err(|_| bad())?),
                Some(_) => return Err(format!("a second `{TV_SEC}` in one mark: `{l}`")),
                None => {}
            }
            continue;
        } else if let Some(r) = l.trim().strip_prefix(TV_USEC) {
            let Some((i, sec)) = open.take() else {
                continue;
            };
            let sec = sec.ok_or_else(|| format!("mark {i}: `{TV_USEC}` without `{TV_SEC}`"))?;
            (i, format!("{sec} {}", r.trim()), true)
        } else if let Some(r) = l.strip_prefix(EVENT) {
            let (i, rest) = r.trim_start().split_once(' ').ok_or_else(bad)?;
            (index(i)?, rest.to_string(), false)
        } else {
            continue;
        };
        let nums: Vec<i64> = rest
            .split_whitespace()
            .map(|w| w.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let time = match nums[..] {
            [sec, usec] if (0..1_000_000).contains(&usec) => sec
                .checked_mul(1_000_000_000)
                .and_then(|s| s.checked_add(usec * 1000))
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let slot = if is_mark {
            &mut marks[i]
        } else {
            &mut events[i]
        };
        if slot.replace(time).is_some() {
            return Err(format!("line {i} twice: `{l}`"));
        }
    }
    marks
        .iter()
        .zip(&events)
        .enumerate()
        .map(|(i, pair)| match pair {
            (Some(m), Some(e)) if e >= m => Ok(e - m),
            (Some(m), Some(e)) => Err(format!(
                "event {i} at {e} ns is before its mark at {m} ns: not one clock"
            )),
            _ => Err(format!("event {i}: no mark or no event line")),
        })
        .collect()
}

/// The median of `latencies` in microseconds.
pub fn median_us(latencies: &[i64]) -> Option<f64> {
    median(
        &latencies
            .iter()
            .map(|&n| n as f64 / 1000.0)
            .collect::<Vec<_>>(),
    )
}

/// Both sides' latencies, summarized (microseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub hyp_median: f64,
    pub bare_median: f64,
    pub hyp_min: f64,
    pub bare_min: f64,
}

impl Summary {
    /// Medians and minimums of both sides' latencies (ns); `None` when a side
    /// has none.
    pub fn of(hyp: &[i64], bare: &[i64]) -> Option<Summary> {
        let min = |v: &[i64]| v.iter().min().map(|&n| n as f64 / 1000.0);
        Some(Summary {
            hyp_median: median_us(hyp)?,
            bare_median: median_us(bare)?,
            hyp_min: min(hyp)?,
            bare_min: min(bare)?,
        })
    }
}

/// The headline line from the latencies and the scheduler's rounds without and
/// with the partition: the issue's two keys, then the figures behind them.
pub fn headline(l: &Summary, without: u64, with: u64) -> String {
    format!(
        "input latency_ratio={:.2} sched_throughput_ratio={:.3} min_latency_ratio={:.2} hyp_latency_us={:.0} bare_latency_us={:.0} hyp_min_us={:.0} bare_min_us={:.0} without_rounds={without} with_rounds={with}",
        l.hyp_median / l.bare_median,
        with as f64 / without as f64,
        l.hyp_min / l.bare_min,
        l.hyp_median,
        l.bare_median,
        l.hyp_min,
        l.bare_min,
    )
}

/// QEMU arguments giving the bare guest QEMU's own tablet, driven through QMP on
/// `qmp`, under `-icount`. The tablet is modern virtio (Linux's virtio-input
/// driver refuses a legacy device; `virt`'s virtio-mmio is legacy by default).
pub fn bare_args(qmp: &Path) -> Vec<String> {
    vec![
        "-global".into(),
        "virtio-mmio.force-legacy=false".into(),
        "-device".into(),
        "virtio-tablet-device".into(),
        "-qmp".into(),
        crate::qmp::qemu_arg(qmp),
        "-icount".into(),
        "shift=0".into(),
    ]
}

/// Runs one side: spawns `line`, drives `steps` (QMP on `qmp`), and returns the
/// events' latencies.
fn side(name: &str, line: &QemuLine, steps: &[Step], qmp: &Path) -> Result<Vec<i64>, Error> {
    let _ = std::fs::remove_file(qmp);
    let start = Instant::now();
    let mut session = Session::spawn(line.command(), false, TIMEOUT)
        .map_err(|e| Error::step(format!("bench input: start QEMU ({name})"), e.to_string()))?;
    let ending = drive(&mut session, steps, Some(qmp));
    session.kill();
    let _ = std::fs::remove_file(qmp);
    let console = session.output().to_string();
    let result = match &ending {
        Ending::Exited(Some(0)) | Ending::ScriptDone => parse(&console),
        other => Err(format!("QEMU ended {other:?}")),
    }
    .and_then(|v| match linux_guest::parse_console(&console).cmd_exit {
        Some(0) | None => Ok(v),
        Some(n) => Err(format!("the guest program exited {n}")),
    });
    let lat = result.map_err(|why| {
        eprintln!(
            "\n--- {name}: last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
            tail_lines(&console, CONSOLE_TAIL_LINES)
        );
        Error::step(format!("bench input latency ({name})"), why)
    })?;
    let us: Vec<String> = lat.iter().map(|n| format!("{}", n / 1000)).collect();
    println!(
        "  {name:<10} latencies (us, in order): {} ({:.0} s run)",
        us.join(" "),
        start.elapsed().as_secs_f64()
    );
    Ok(lat)
}

/// The latency half: [`ROUNDS`] of a hypervisor side then a bare side; both
/// sides' events pooled.
fn latency(layout: &Layout) -> Result<Summary, Error> {
    let script_file = layout.out.join("bench-input.script");
    let write = |text: &str| {
        std::fs::write(&script_file, text)
            .map_err(|e| Error::io(format!("write {}", script_file.display()), e))
    };
    write(&script(true))?;
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.icount = true;
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd());
    o.script = Some(script_file.clone());
    let hyp_qmp: PathBuf = layout.out.join("bench-input-hyp.sock");
    o.qmp = Some(hyp_qmp.clone());
    let prepared = prepare(layout, &o)?;
    let bare_steps = crate::script::parse(&script(false))
        .map_err(|e| Error::step("bench input: script", e.to_string()))?;
    let bare_qmp = layout.out.join("bench-input-bare.sock");
    let bare = BareLinuxConfig {
        smp: prepared.vm.vcpus,
        mem: prepared.vm.mem,
        kernel: prepared.vm.kernel.clone(),
        initrd: prepared
            .vm
            .initrd
            .clone()
            .ok_or_else(|| Error::step("bench input", "the Linux guest has no initramfs"))?,
        append: prepared.vm.cmdline.clone(),
    };
    let mut bare_line = bare.line();
    bare_line.push(bare_args(&bare_qmp));
    eprintln!("xtask: bench input: hypervisor: {}", prepared.display());
    eprintln!("xtask: bench input: bare: {}", bare_line.display());
    println!(
        "input latency: {EVENTS} QMP pointer moves each side, host event to guest evdev in guest CLOCK_REALTIME (clock read, then a short mark the host answers), -icount shift=0"
    );
    let (mut hyp, mut base) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let prepared = if round == 0 {
            prepared.clone()
        } else {
            prepare(layout, &o)?
        };
        hyp.extend(side(
            "hypervisor",
            &prepared.line(),
            &prepared.script,
            &hyp_qmp,
        )?);
        base.extend(side("bare", &bare_line, &bare_steps, &bare_qmp)?);
    }
    let l = Summary::of(&hyp, &base).ok_or_else(|| Error::step("bench input", "no latencies"))?;
    println!(
        "  median of {} each: hypervisor {:.0} us, bare QEMU {:.0} us, ratio {:.2}",
        hyp.len(),
        l.hyp_median,
        l.bare_median,
        l.hyp_median / l.bare_median
    );
    println!(
        "  minimum: hypervisor {:.0} us, bare QEMU {:.0} us, ratio {:.2}",
        l.hyp_min,
        l.bare_min,
        l.hyp_min / l.bare_min
    );
    if l.hyp_median / l.bare_median > LATENCY_TARGET {
        println!(
            "note: latency ratio {:.2} is above the target {LATENCY_TARGET}",
            l.hyp_median / l.bare_median
        );
    }
    Ok(l)
}

/// `cargo xtask bench input`.
pub fn run_input(layout: &Layout) -> Result<String, Error> {
    let l = latency(layout)?;
    let total = |v: &[(u32, u64)]| v.iter().map(|&(_, n)| n).sum::<u64>();
    let without = bench_sched::measure(layout, VCPUS, VCPUS, false)?;
    let with = bench_sched::measure(layout, VCPUS, VCPUS, true)?;
    let (wo, w) = (total(&without), total(&with));
    println!(
        "scheduler: {VCPUS} vCPUs on {VCPUS} host CPUs, {LOOP_CS} cs of guest time per loop, -icount shift=0"
    );
    println!("  without the authority partition: rounds {without:?}, total {wo}");
    println!("  with it (idle at rayos>): rounds {with:?}, total {w}");
    Ok(headline(&l, wo, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console with every event's mark and event line, latency `lat(i)` ns
    /// (rounded to the event's microseconds).
    fn console(lat: impl Fn(u32) -> i64) -> String {
        let mut s = String::from("lat-ready\r\n[el2 INFO ] noise\r\n");
        for i in 0..EVENTS {
            let mark = 1_700_000_000_000_000_000 + i64::from(i) * 1_001_000;
            let ev = mark + lat(i);
            s.push_str(&format!(
                "{MARK}{i}\r\n{EVENT}{i}   {}   {}\r\n    {TV_SEC}  {}\r\n    {TV_USEC} {}\r\n",
                ev / 1_000_000_000,
                ev % 1_000_000_000 / 1000,
                mark / 1_000_000_000,
                mark % 1_000_000_000 / 1000
            ));
        }
        s + "lat-done\r\n"
    }

    #[test]
    fn mark_and_event_lines_give_latencies_and_the_median() {
        let lat = parse(&console(|i| 1_000_000 + i64::from(i) * 1000)).unwrap();
        assert_eq!(lat.len(), EVENTS as usize);
        assert_eq!(lat[0], 1_000_000);
        assert_eq!(lat[3], 1_003_000);
        // 20 events: the median is between the 10th and 11th.
        assert_eq!(median_us(&lat), Some(1009.5));
        assert_eq!(median_us(&[3000, 1000, 2000]), Some(2.0));
        assert_eq!(median_us(&[]), None);
    }

    #[test]
    fn missing_duplicated_malformed_and_backwards_lines_are_refused() {
        let good = console(|_| 5_000_000);
        let without = |needle: &str| {
            good.lines()
                .filter(|l| !l.starts_with(needle))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(parse(&good).is_ok());
        assert!(parse(&without("lat-event 7 ")).is_err());
        // Without `@0`, its clock lines belong to no mark.
        assert!(parse(&good.replace("@0\r\n", "")).is_err());
        let mark = |tail: &str| format!("{good}@2\n{tail}");
        // A mark repeated; one whose time never comes; one out of range.
        assert!(parse(&mark("time.tv_sec: 9\ntime.tv_usec: 1\n")).is_err());
        assert!(
            parse(&mark("")).is_ok(),
            "an unfinished last mark is ignored"
        );
        assert!(parse(&format!("{good}@2\n@3\n")).is_err());
        assert!(parse(&format!("{good}@{EVENTS}\n")).is_err());
        // Malformed clock lines.
        let fresh = good.replace("@1\r\n", "").replace("lat-event 1 ", "x");
        let one = |block: &str| parse(&format!("{fresh}\n@1\n{block}lat-event 1 1700000001 0\n"));
        assert!(one("time.tv_sec: 1700000000\ntime.tv_usec: 100\n").is_ok());
        assert!(one("time.tv_usec: 100\n").is_err());
        assert!(one("time.tv_sec: x\ntime.tv_usec: 100\n").is_err());
        assert!(one("time.tv_sec: 1\ntime.tv_sec: 1\ntime.tv_usec: 100\n").is_err());
        assert!(one("time.tv_sec: 1700000000\ntime.tv_usec: 1000000\n").is_err());
        assert!(parse(&format!(
            "{}lat-event 3 1 2000000\n",
            without("lat-event 3 ")
        ))
        .is_err());
        assert!(parse(&format!("{}lat-event 3 1\n", without("lat-event 3 "))).is_err());
        // An event before its mark: the two clocks are not one.
        let e = parse(&console(|i| if i == 4 { -1000 } else { 1000 })).unwrap_err();
        assert!(e.contains("event 4") && e.contains("not one clock"), "{e}");
    }

    #[test]
    fn the_headline_names_the_issues_keys_first() {
        let l = Summary::of(
            &[1_300_000, 1_200_000, 900_000],
            &[1_000_000, 1_100_000, 800_000, 400_000],
        )
        .unwrap();
        assert_eq!(
            l,
            Summary {
                hyp_median: 1200.0,
                bare_median: 900.0,
                hyp_min: 900.0,
                bare_min: 400.0
            }
        );
        let h = headline(&l, 900, 891);
        assert!(
            h.starts_with("input latency_ratio=1.33 sched_throughput_ratio=0.990 "),
            "{h}"
        );
        assert!(h.contains(
            "min_latency_ratio=2.25 hyp_latency_us=1200 bare_latency_us=900 hyp_min_us=900 bare_min_us=400"
        ));
        assert!(Summary::of(&[], &[1]).is_none());
    }

    #[test]
    fn the_script_answers_each_mark_with_one_move_and_parses() {
        let hyp = crate::script::parse(&script(true)).unwrap();
        let bare = crate::script::parse(&script(false)).unwrap();
        // Identical but for the hypervisor side's presentation and console
        // steps (present, interactive, attach, detach).
        assert_eq!(hyp.len(), bare.len() + 4);
        let qmps = |s: &[Step]| {
            s.iter()
                .filter(|s| matches!(s.action, crate::script::Action::Qmp { .. }))
                .count()
        };
        assert_eq!(qmps(&hyp), EVENTS as usize);
        assert_eq!(qmps(&bare), EVENTS as usize);
        let s = script(false);
        assert!(s.contains(&format!("\"value\": {}}}", MOVE_X[0])));
        assert!(s.contains(&format!("\"value\": {}}}", MOVE_X[1])));
        assert_eq!(
            bare_args(Path::new("/t/q.sock")).join(" "),
            "-global virtio-mmio.force-legacy=false -device virtio-tablet-device -qmp unix:/t/q.sock,server=on,wait=off -icount shift=0"
        );
        let c = guest_cmd();
        assert!(c.contains(&format!("-lt {EVENTS} ]")));
        assert!(linux_guest::guest_cmd_arg(&c).len() < 1700);
    }
}
