//! Where the emulated CPUs were when a captured run timed out: a hypervisor
//! deadlock and a guest that never gets there look the same on the console, so
//! before QEMU is killed xtask asks it over QMP (`info registers -a`) what each
//! CPU was doing. A CPU at EL2 is in the hypervisor: its frame-pointer chain is
//! walked through QEMU (`xp`, physical memory — the hypervisor's own mapping is
//! the identity) and every address is named from the hypervisor's ELF symbols.
//!
//! Everything here is best effort and bounded in time: a failure becomes a line
//! of the report, never a panic.

use std::path::Path;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use crate::qmp::{json_string, Qmp};

/// The report's first line.
pub const HEADER: &str = "--- the emulated CPUs when the run timed out (QMP info registers) ---";

/// At most this many frame records are followed per CPU.
pub const MAX_FRAMES: usize = 24;

/// The whole report (connecting, stopping the machine, every read) gets this long.
pub const TIME_LIMIT: Duration = Duration::from_secs(25);

/// How long to wait for the QMP socket to accept: QEMU has been running since the
/// start of the run, so it is there or it never will be.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// One CPU of `info registers -a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// QEMU's CPU index (`CPU#n`).
    pub index: u32,
    pub pc: u64,
    /// X0 to X30.
    pub x: [u64; 31],
    pub sp: u64,
    /// The exception level and stack pointer choice: `EL2h`, `EL1h`, `EL0t`…
    pub el: String,
}

impl Cpu {
    /// Whether the CPU never ran (or was powered off and reset): PC and every
    /// general register zero.
    pub fn not_started(&self) -> bool {
        self.pc == 0 && self.x.iter().all(|&r| r == 0)
    }

    /// The exception level (0 to 3).
    pub fn level(&self) -> Option<u8> {
        self.el.as_bytes().get(2).and_then(|b| match b {
            b'0'..=b'3' => Some(b - b'0'),
            _ => None,
        })
    }
}

fn hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|_| format!("`{s}` is not a hexadecimal number"))
}

/// Parses the text of `info registers -a`: one `CPU#n` block per CPU.
pub fn parse_registers(text: &str) -> Result<Vec<Cpu>, String> {
    let mut cpus = Vec::new();
    for block in text.split("CPU#").skip(1) {
        let (first, rest) = block.split_once('\n').unwrap_or((block, ""));
        let index = first
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("bad CPU number `{}`", first.trim()))?;
        let mut pc = None;
        let mut sp = None;
        let mut el = None;
        let mut x = [None; 31];
        let mut tokens = rest.split_whitespace().peekable();
        while let Some(token) = tokens.next() {
            if let Some(v) = token.strip_prefix("PC=") {
                pc = Some(hex(v)?);
            } else if let Some(v) = token.strip_prefix("SP=") {
                sp = Some(hex(v)?);
            } else if token.starts_with("PSTATE=") {
                // `PSTATE=200003c9 --C- EL2h` (with `NS ` or `S ` before the level
                // when the CPU has EL3).
                while let Some(t) = tokens.peek() {
                    if is_el_token(t) {
                        el = Some(t.to_string());
                        break;
                    }
                    if t.contains('=') {
                        break;
                    }
                    tokens.next();
                }
            } else if let Some((name, v)) = token.split_once('=') {
                if let Some(n) = name.strip_prefix('X').and_then(|n| n.parse::<usize>().ok()) {
                    if n < 31 {
                        x[n] = Some(hex(v)?);
                    }
                }
            }
        }
        let missing = |what: &str| format!("CPU#{index}: no {what}");
        let mut regs = [0u64; 31];
        for (n, r) in x.iter().enumerate() {
            regs[n] = r.ok_or_else(|| missing(&format!("X{n:02}")))?;
        }
        cpus.push(Cpu {
            index,
            pc: pc.ok_or_else(|| missing("PC"))?,
            x: regs,
            sp: sp.ok_or_else(|| missing("SP"))?,
            el: el.ok_or_else(|| missing("exception level in PSTATE"))?,
        });
    }
    if cpus.is_empty() {
        return Err("no `CPU#` in the answer".into());
    }
    Ok(cpus)
}

fn is_el_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 4
        && t.starts_with("EL")
        && (b'0'..=b'3').contains(&b[2])
        && matches!(b[3], b'h' | b't')
}

/// Parses the answer of `xp /2gx ADDR` (`00000000433b61e0: 0x… 0x…`): the frame
/// record at ADDR, (the caller's frame pointer, the return address).
pub fn parse_frame_record(text: &str) -> Result<(u64, u64), String> {
    let (_, values) = text
        .split_once(':')
        .ok_or_else(|| format!("unexpected xp answer `{}`", text.trim()))?;
    let words = values
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("0x"))
        .map(hex)
        .collect::<Result<Vec<_>, _>>()?;
    match words[..] {
        [fp, lr, ..] => Ok((fp, lr)),
        _ => Err(format!("xp: {}", values.trim())),
    }
}

/// How a frame-pointer walk ended early (a normal end, fp 0, gives `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The return addresses, innermost first.
    pub returns: Vec<u64>,
    /// Why the walk stopped, when it was not the end of the chain.
    pub stopped: Option<String>,
}

/// Follows the AArch64 frame records from `fp`: each is [the caller's frame
/// pointer, the return address]. Stops at fp 0, a misaligned or non-increasing
/// frame pointer, a zero return address, [`MAX_FRAMES`] records or a failed read.
pub fn walk_frames(mut fp: u64, mut read: impl FnMut(u64) -> Result<(u64, u64), String>) -> Chain {
    let mut returns = Vec::new();
    let mut stopped = None;
    while fp != 0 {
        if returns.len() == MAX_FRAMES {
            stopped = Some(format!("more than {MAX_FRAMES} frames"));
            break;
        }
        if !fp.is_multiple_of(16) {
            stopped = Some(format!("misaligned frame pointer {fp:#x}"));
            break;
        }
        let (next, lr) = match read(fp) {
            Ok(record) => record,
            Err(e) => {
                stopped = Some(format!("frame record at {fp:#x}: {e}"));
                break;
            }
        };
        if lr == 0 {
            break;
        }
        returns.push(lr);
        if next != 0 && next <= fp {
            stopped = Some(format!(
                "frame pointer {next:#x} does not grow from {fp:#x}"
            ));
            break;
        }
        fp = next;
    }
    Chain { returns, stopped }
}

/// Demangles a Rust symbol (legacy or v0) without its hash, with the
/// maintained `rustc-demangle`; any other name comes back unchanged.
pub fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// The function symbols of an ELF, for naming addresses.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// (address, rank, size, demangled name), by address; of the symbols at one
    /// address the best ranked (a function over an assembly label over a linker
    /// `__` label) comes last.
    functions: Vec<(u64, u8, u64, String)>,
    /// Where the image is linked (`__image_start`), when the ELF says.
    pub link_base: Option<u64>,
}

impl Symbols {
    /// Reads the symbol table of the ELF `data`.
    pub fn parse(data: &[u8]) -> Result<Symbols, String> {
        let file = object::File::parse(data).map_err(|e| format!("not an ELF: {e}"))?;
        let mut functions = Vec::new();
        let mut link_base = None;
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if name == "__image_start" {
                link_base = Some(sym.address());
            }
            // `$x`/`$d` are the Arm mapping symbols, not functions.
            if name.is_empty() || name.starts_with('$') || !sym.is_definition() {
                continue;
            }
            let in_text = || {
                sym.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .is_some_and(|s| s.kind() == SectionKind::Text)
            };
            let rank = match sym.kind() {
                SymbolKind::Text => 2,
                // Assembly labels (`secondary_entry`) have no type.
                SymbolKind::Unknown | SymbolKind::Label if in_text() => {
                    u8::from(!name.starts_with("__"))
                }
                _ => continue,
            };
            functions.push((sym.address(), rank, sym.size(), demangle(name)));
        }
        if functions.is_empty() {
            return Err("no function symbols".into());
        }
        functions.sort();
        Ok(Symbols {
            functions,
            link_base,
        })
    }

    /// Reads the ELF at `path`.
    pub fn load(path: &Path) -> Result<Symbols, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Symbols::parse(&data).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The function containing `addr`. A symbol without a size extends to the
    /// next one.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.functions.partition_point(|(a, ..)| *a <= addr);
        let (start, _, size, name) = self.functions.get(i.checked_sub(1)?)?;
        let end = if *size > 0 {
            start + size
        } else {
            self.functions.get(i).map_or(start + 1, |(next, ..)| *next)
        };
        (addr < end).then_some(name.as_str())
    }
}

/// The hypervisor's load address from its console banner (`… starting at EL2,
/// image at 0x40080000, …`), the last one when it restarted.
pub fn image_base(console: &str) -> Option<u64> {
    console
        .lines()
        .rev()
        .filter(|l| l.contains("starting at EL2"))
        .find_map(|l| {
            let (_, rest) = l.split_once("image at 0x")?;
            let digits = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
            u64::from_str_radix(&rest[..digits], 16).ok()
        })
}

/// Names addresses of a hypervisor that runs `slide` bytes above its link address.
struct Namer<'a> {
    symbols: Option<&'a Symbols>,
    slide: u64,
}

impl Namer<'_> {
    fn name(&self, addr: u64) -> &str {
        self.symbols
            .and_then(|s| s.lookup(addr.wrapping_sub(self.slide)))
            .unwrap_or("?")
    }
}

/// The report's lines for `cpus`; `read` reads a frame record (host-physical).
fn describe(
    cpus: &[Cpu],
    namer: &Namer,
    mut read: impl FnMut(u64) -> Result<(u64, u64), String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for cpu in cpus {
        let n = cpu.index;
        if cpu.not_started() {
            lines.push(format!("CPU {n}: not started / powered off"));
            continue;
        }
        let (pc, el) = (cpu.pc, &cpu.el);
        if cpu.level() != Some(2) {
            lines.push(format!("CPU {n}: {el} pc {pc:#x} (in a guest)"));
            continue;
        }
        lines.push(format!("CPU {n}: {el} pc {pc:#x} (the hypervisor)"));
        lines.push(format!("    {pc:#x} {}", namer.name(pc)));
        let chain = walk_frames(cpu.x[29], &mut read);
        // A return address names the call, the instruction before it.
        let calls: Vec<u64> = chain.returns.iter().map(|r| r.wrapping_sub(4)).collect();
        // X30 adds a caller when the function at PC has not saved it (a leaf, or a
        // prologue): it is not the first frame's and names another function of
        // the hypervisor (optimised code also uses X30 as a scratch register).
        let lr = cpu.x[30].wrapping_sub(4);
        let named = namer.name(lr) != "?" && namer.name(lr) != namer.name(pc);
        if named && calls.first() != Some(&lr) {
            lines.push(format!("    {lr:#x} {} (x30)", namer.name(lr)));
        }
        for call in calls {
            lines.push(format!("    {call:#x} {}", namer.name(call)));
        }
        if let Some(why) = chain.stopped {
            lines.push(format!("    (the frame chain stops: {why})"));
        }
    }
    lines
}

/// How long the machine runs between the report's two looks at the CPUs.
const SECOND_LOOK_AFTER: Duration = Duration::from_secs(1);

/// One line per CPU whose registers (PC, SP, X0–X30) did not change between
/// two looks [`SECOND_LOOK_AFTER`] apart: it waits for an interrupt (WFI), is
/// not being run, or (by chance: its loop's registers repeat) spins on a lock.
/// A CPU stopped inside straight-line code, not a loop, is not being run.
fn still(before: &[Cpu], after: &[Cpu]) -> Vec<String> {
    after
        .iter()
        .filter(|a| !a.not_started())
        .filter_map(|a| {
            let b = before.iter().find(|b| b.index == a.index)?;
            (b == a).then(|| {
                format!(
                    "CPU {}: registers unchanged over {} s of running (waiting in WFI, or not run by the emulator)",
                    a.index,
                    SECOND_LOOK_AFTER.as_secs()
                )
            })
        })
        .collect()
}

/// Asks QEMU (QMP socket `qmp`) where each CPU is and names the hypervisor's
/// addresses from `el2_elf`, which runs at its link address.
pub fn cpu_report(qmp: &Path, el2_elf: &Path) -> String {
    cpu_report_at(qmp, el2_elf, None)
}

/// [`cpu_report`] for a hypervisor loaded at `image_base` (see [`image_base`]).
pub fn cpu_report_at(qmp: &Path, el2_elf: &Path, image_base: Option<u64>) -> String {
    let deadline = Instant::now() + TIME_LIMIT;
    let mut lines = vec![HEADER.to_string()];
    match query(qmp, el2_elf, image_base, deadline) {
        Ok(more) => lines.extend(more),
        Err(e) => lines.push(format!("(no CPU report: {e})")),
    }
    lines.join("\n")
}

fn hmp(q: &mut Qmp, command: &str, deadline: Instant) -> Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("out of time before `{command}`"));
    }
    q.set_read_timeout(left)?;
    let answer = q.execute(
        "human-monitor-command",
        &format!("{{\"command-line\": {}}}", json_string(command)),
    )?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("`{command}`: bad JSON: {e}"))?;
    value["return"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{command}`: no text in {}", answer.trim()))
}

fn query(
    qmp: &Path,
    el2_elf: &Path,
    image_base: Option<u64>,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    // QEMU made the socket when it started, long ago: none now is none ever.
    if !qmp.exists() {
        return Err(format!("QMP socket {} does not exist", qmp.display()));
    }
    let mut q = Qmp::connect_within(qmp, CONNECT_WAIT, TIME_LIMIT / 2)?;
    let mut lines = Vec::new();
    // A first look while the machine runs, to tell a CPU that runs (a spin) from
    // one the emulator no longer runs or that waits for an interrupt.
    let running = hmp(&mut q, "info registers -a", deadline)
        .ok()
        .and_then(|t| parse_registers(&t).ok());
    std::thread::sleep(SECOND_LOOK_AFTER);
    // Stopped, the CPUs hold still while their stacks are read.
    q.set_read_timeout(deadline.saturating_duration_since(Instant::now()))?;
    if let Err(e) = q.execute("stop", "{}") {
        lines.push(format!(
            "(could not stop the machine, the CPUs keep running: {e})"
        ));
    }
    let cpus = parse_registers(&hmp(&mut q, "info registers -a", deadline)?)
        .map_err(|e| format!("info registers: {e}"))?;
    if let Some(before) = running {
        lines.extend(still(&before, &cpus));
    }
    let symbols = if cpus
        .iter()
        .any(|c| c.level() == Some(2) && !c.not_started())
    {
        match Symbols::load(el2_elf) {
            Ok(s) => Some(s),
            Err(e) => {
                lines.push(format!("(no hypervisor symbols: {e})"));
                None
            }
        }
    } else {
        None
    };
    let slide = match (image_base, symbols.as_ref().and_then(|s| s.link_base)) {
        (Some(base), Some(link)) => base.wrapping_sub(link),
        _ => 0,
    };
    let namer = Namer {
        symbols: symbols.as_ref(),
        slide,
    };
    lines.extend(describe(&cpus, &namer, |fp| {
        parse_frame_record(&hmp(&mut q, &format!("xp /2gx {fp:#x}"), deadline)?)
    }));
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `info registers -a` of a two-CPU machine as QEMU 7.2 answers it (CR LF
    /// line ends, the vector registers cut short): CPU 0 in the hypervisor, CPU 1
    /// never started.
    const REGISTERS: &str =
        "\r\nCPU#0\r\n PC=0000000040287e18 X00=0000000000000080 X01=00000000403b0794\r\n\
X02=0000000000000002 X03=0000000000000003 X04=0000000000000004\r\n\
X05=0000000000000005 X06=0000000000000006 X07=0000000000000007\r\n\
X08=0000000000000008 X09=0000000000000009 X10=000000000000000a\r\n\
X11=000000000000000b X12=000000000000000c X13=000000000000000d\r\n\
X14=000000000000000e X15=000000000000000f X16=0000000000000010\r\n\
X17=0000000000000011 X18=0000000000000012 X19=0000000000000013\r\n\
X20=0000000000000014 X21=0000000000000015 X22=0000000000000016\r\n\
X23=0000000000000017 X24=0000000000000018 X25=0000000000000019\r\n\
X26=000000000000001a X27=000000000000001b X28=000000000000001c\r\n\
X29=00000000433b61e0 X30=0000000040100044  SP=00000000433b6150\r\n\
PSTATE=200003c9 --C- EL2h  SVCR=00000000 --  BTYPE=0     FPCR=00000000 FPSR=00000000\r\n\
Q00=0000000000000000:0000000000000000 Q01=0000000000000000:0000000000000000\r\n\
\r\nCPU#1\r\n PC=0000000000000000 X00=0000000000000000 X01=0000000000000000\r\n\
X02=0000000000000000 X03=0000000000000000 X04=0000000000000000\r\n\
X05=0000000000000000 X06=0000000000000000 X07=0000000000000000\r\n\
X08=0000000000000000 X09=0000000000000000 X10=0000000000000000\r\n\
X11=0000000000000000 X12=0000000000000000 X13=0000000000000000\r\n\
X14=0000000000000000 X15=0000000000000000 X16=0000000000000000\r\n\
X17=0000000000000000 X18=0000000000000000 X19=0000000000000000\r\n\
X20=0000000000000000 X21=0000000000000000 X22=0000000000000000\r\n\
X23=0000000000000000 X24=0000000000000000 X25=0000000000000000\r\n\
X26=0000000000000000 X27=0000000000000000 X28=0000000000000000\r\n\
X29=0000000000000000 X30=0000000000000000  SP=0000000000000000\r\n\
PSTATE=400003c9 -Z-- EL2h     FPCR=00000000 FPSR=00000000\r\n\
Q00=0000000000000000:0000000000000000 Q01=0000000000000000:0000000000000000\r\n";

    #[test]
    fn a_cpu_is_still_only_when_every_register_is_the_same() {
        let cpus = parse_registers(REGISTERS).unwrap();
        assert!(
            still(&cpus, &cpus).len() == 1,
            "CPU 1 never started: not reported"
        );
        let mut moved = cpus.clone();
        moved[0].pc += 4;
        assert!(still(&cpus, &moved).is_empty());
        let mut spun = cpus.clone();
        spun[0].x[3] ^= 1;
        assert!(still(&cpus, &spun).is_empty());
        assert!(still(&cpus, &cpus)[0].starts_with("CPU 0: registers unchanged"));
    }

    #[test]
    fn info_registers_parses_per_cpu() {
        let cpus = parse_registers(REGISTERS).unwrap();
        assert_eq!(cpus.len(), 2);
        let c = &cpus[0];
        assert_eq!((c.index, c.pc, c.sp), (0, 0x4028_7e18, 0x433b_6150));
        assert_eq!((c.x[0], c.x[1], c.x[28]), (0x80, 0x403b_0794, 0x1c));
        assert_eq!((c.x[29], c.x[30]), (0x433b_61e0, 0x4010_0044));
        assert_eq!((c.el.as_str(), c.level()), ("EL2h", Some(2)));
        assert!(!c.not_started());
        assert_eq!(cpus[1].index, 1);
        assert!(cpus[1].not_started());
    }

    #[test]
    fn a_guest_level_and_a_secure_marker_parse() {
        let text = REGISTERS.replace("--C- EL2h", "--C- NS EL1h");
        assert_eq!(parse_registers(&text).unwrap()[0].el, "EL1h");
        let text = REGISTERS.replace("--C- EL2h", "nZCv EL0t");
        assert_eq!(parse_registers(&text).unwrap()[0].level(), Some(0));
    }

    #[test]
    fn a_broken_answer_is_an_error() {
        assert!(parse_registers("").is_err());
        assert!(parse_registers("Cannot access memory").is_err());
        assert!(parse_registers(&REGISTERS.replace("X17=", "X17=zz")).is_err());
        assert!(parse_registers(&REGISTERS.replace(" PC=0000000040287e18", "")).is_err());
        assert!(parse_registers(&REGISTERS.replace("EL2h  SVCR", "SVCR")).is_err());
    }

    #[test]
    fn xp_answers_parse_to_frame_records() {
        assert_eq!(
            parse_frame_record("00000000433b61e0: 0x00000000433b6200 0x0000000040123458\r\n"),
            Ok((0x433b_6200, 0x4012_3458))
        );
        assert!(parse_frame_record("0004000000000000: Cannot access memory\r\n").is_err());
        assert!(parse_frame_record("0000000040000000: 0x0000000000000001\r\n").is_err());
        assert!(parse_frame_record("").is_err());
    }

    fn memory(records: &[(u64, u64, u64)]) -> HashMap<u64, (u64, u64)> {
        records.iter().map(|&(at, fp, lr)| (at, (fp, lr))).collect()
    }

    fn walk(records: &[(u64, u64, u64)], fp: u64) -> Chain {
        let mem = memory(records);
        walk_frames(fp, |at| {
            mem.get(&at)
                .copied()
                .ok_or_else(|| "Cannot access memory".to_string())
        })
    }

    #[test]
    fn the_frame_chain_ends_at_a_zero_frame_pointer() {
        let c = walk(
            &[
                (0x1000, 0x1040, 0xa0),
                (0x1040, 0x1100, 0xb0),
                (0x1100, 0, 0xc0),
            ],
            0x1000,
        );
        assert_eq!(c.returns, [0xa0, 0xb0, 0xc0]);
        assert_eq!(c.stopped, None);
        assert_eq!(
            walk(&[], 0),
            Chain {
                returns: vec![],
                stopped: None
            }
        );
    }

    #[test]
    fn the_frame_chain_stops_at_bad_frame_pointers_and_reads() {
        // Misaligned.
        let c = walk(&[(0x1000, 0x1048, 0xa0)], 0x1000);
        assert_eq!(c.returns, [0xa0]);
        assert!(c.stopped.unwrap().contains("misaligned"));
        // Not growing (a loop).
        let c = walk(&[(0x1000, 0x1040, 0xa0), (0x1040, 0x1000, 0xb0)], 0x1000);
        assert_eq!(c.returns, [0xa0, 0xb0]);
        assert!(c.stopped.unwrap().contains("does not grow"));
        // Unreadable.
        let c = walk(&[(0x1000, 0x2000, 0xa0)], 0x1000);
        assert_eq!(c.returns, [0xa0]);
        assert!(c.stopped.unwrap().contains("Cannot access memory"));
        // A zero return address ends it quietly.
        let c = walk(&[(0x1000, 0x2000, 0)], 0x1000);
        assert_eq!(
            c,
            Chain {
                returns: vec![],
                stopped: None
            }
        );
    }

    #[test]
    fn the_frame_chain_is_bounded() {
        let records: Vec<_> = (0..100u64)
            .map(|i| (0x1000 + i * 16, 0x1010 + i * 16, i + 1))
            .collect();
        let c = walk(&records, 0x1000);
        assert_eq!(c.returns.len(), MAX_FRAMES);
        assert!(c.stopped.unwrap().contains("more than"));
    }

    #[test]
    fn legacy_rust_symbols_demangle() {
        assert_eq!(
            demangle("_ZN14num_bigint_dig7biguint5monty10montgomery17h0123456789abcdefE"),
            "num_bigint_dig::biguint::monty::montgomery"
        );
        assert_eq!(
            demangle("_ZN100_$LT$der..bytes_owned..BytesOwned$u20$as$u20$core..convert..From$LT$der..bytes_ref..BytesRef$GT$$GT$4from17hefcf4170fa7ca619E"),
            "<der::bytes_owned::BytesOwned as core::convert::From<der::bytes_ref::BytesRef>>::from"
        );
        assert_eq!(
            demangle("_ZN4core3ptr51drop_in_place$LT$$RF$mut$u20$$u5b$u8$u5d$$C$u32$GT$17h39f07f110e2cb1c0E"),
            "core::ptr::drop_in_place<&mut [u8],u32>"
        );
        // Not mangled, or not legacy mangling: unchanged.
        assert_eq!(demangle("el2_exception"), "el2_exception");
        assert_eq!(demangle("_ZN3foo"), "_ZN3foo");
        assert_eq!(demangle("_ZN99fooE"), "_ZN99fooE");
        // No hash: every segment kept.
        assert_eq!(demangle("_ZN3foo3barE"), "foo::bar");
    }

    #[test]
    fn v0_symbols_demangle() {
        // From the hypervisor's ELF (its precompiled `alloc` and `core`).
        assert_eq!(
            demangle("_RNvXs0_NvMs_NtNtCscjbO91n7lbb_5alloc3ffi5c_strNtBa_7CString3newReNtB5_11SpecNewImpl13spec_new_impl"),
            "<&str as <alloc::ffi::c_str::CString>::new::SpecNewImpl>::spec_new_impl"
        );
        assert_eq!(
            demangle("_RNvXs1g_NtCs3g5Gb6bJpu0_4core3fmtRDNtB6_5DebugEL_Bx_3fmtB8_"),
            "<&dyn core::fmt::Debug as core::fmt::Debug>::fmt"
        );
        assert_eq!(
            demangle("_RINvNtCs3g5Gb6bJpu0_4core9panicking13assert_failedjjEB4_"),
            "core::panicking::assert_failed::<usize, usize>"
        );
        // Closures (`0` is an empty name, `s_` the second closure) and a constant.
        assert_eq!(
            demangle("_RINvNtCsgEmfK2I1SDS_4core3ptr13drop_in_placeNCNCINvCs3mSbOeLENLV_4test28test_main_with_exit_callbackNCNvBN_9test_main0Es_00EBN_"),
            "core::ptr::drop_in_place::<test::test_main_with_exit_callback<test::test_main::{closure#0}>::{closure#1}::{closure#0}>"
        );
        assert_eq!(
            demangle("_RINvNtCsgEmfK2I1SDS_4core6escape14escape_unicodeKja_EB4_"),
            "core::escape::escape_unicode::<10>"
        );
        assert_eq!(
            demangle("_RINvCs3mSbOeLENLV_4test28___rust_begin_short_backtraceINtNtCsgEmfK2I1SDS_4core6result6ResultuNtNtCslNYArtu3iFV_5alloc6string6StringEFEBQ_EB2_"),
            "test::__rust_begin_short_backtrace::<core::result::Result<(), alloc::string::String>, fn() -> core::result::Result<(), alloc::string::String>>"
        );
    }

    /// A relocatable ELF with three functions (one without a size) and a mapping
    /// symbol, all in `.text` at address 0.
    fn tiny_elf() -> Vec<u8> {
        use object::write::{Object, Symbol, SymbolSection};
        use object::{
            Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolScope,
        };
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Aarch64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0u8; 0x400], 16);
        let mut add = |name: &str, value: u64, size: u64, kind: SymbolKind| {
            obj.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value,
                size,
                kind,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            });
        };
        add("$x", 0x0, 0, SymbolKind::Text);
        // An assembly entry point and the linker's label at the same address: by name
        // the label sorts last, so only its rank makes the entry point win.
        add("Entry", 0x0, 0, SymbolKind::Label);
        add("__image_start", 0x0, 0, SymbolKind::Label);
        add("$d", 0x40, 0, SymbolKind::Label);
        add(
            "_ZN3el24main4spin17h0000000000000001E",
            0x100,
            0x40,
            SymbolKind::Text,
        );
        add(
            "_ZN3el24main3run17h0000000000000002E",
            0x200,
            0x80,
            SymbolKind::Text,
        );
        add("vectors", 0x300, 0, SymbolKind::Text);
        add(
            "_ZN3el24main3end17h0000000000000003E",
            0x380,
            0x10,
            SymbolKind::Text,
        );
        obj.write().unwrap()
    }

    #[test]
    fn addresses_are_named_by_the_containing_function() {
        let s = Symbols::parse(&tiny_elf()).unwrap();
        assert_eq!(s.lookup(0x100), Some("el2::main::spin"));
        assert_eq!(s.lookup(0x13c), Some("el2::main::spin"));
        assert_eq!(s.lookup(0x140), None);
        assert_eq!(s.lookup(0x27f), Some("el2::main::run"));
        // Sizeless: up to the next symbol.
        assert_eq!(s.lookup(0x37c), Some("vectors"));
        assert_eq!(s.lookup(0x384), Some("el2::main::end"));
        assert_eq!(s.lookup(0x390), None);
        // A label without a type names the code up to the next symbol; the
        // mapping symbol `$d` does not end it.
        assert_eq!(s.lookup(0x0), Some("Entry"));
        assert_eq!(s.lookup(0x80), Some("Entry"));
        assert_eq!(s.lookup(0xff), Some("Entry"));
        assert_eq!(s.link_base, Some(0));
        assert!(Symbols::parse(b"not an elf").is_err());
    }

    #[test]
    fn the_report_names_the_hypervisor_chain_and_skips_guests() {
        let symbols = Symbols::parse(&tiny_elf()).unwrap();
        let namer = Namer {
            symbols: Some(&symbols),
            slide: 0x4000_0000,
        };
        let mut cpus = parse_registers(REGISTERS).unwrap();
        // CPU 0 spins in `spin`, called from `run` (x30, not yet saved), whose
        // frame record says it was called from `end`.
        cpus[0].pc = 0x4000_0110;
        cpus[0].x[30] = 0x4000_0204;
        cpus[0].x[29] = 0x8000;
        let mut guest = cpus[0].clone();
        guest.index = 2;
        guest.el = "EL1h".into();
        guest.pc = 0xffff_8000_0800_0000;
        cpus.push(guest);
        // CPU 3 is in `run` with X30 a scratch value and no frame chain.
        let mut scratch = cpus[0].clone();
        scratch.index = 3;
        scratch.pc = 0x4000_0220;
        scratch.x[30] = 0x20;
        scratch.x[29] = 0;
        cpus.push(scratch);
        let mem = memory(&[(0x8000, 0, 0x4000_0388)]);
        let lines = describe(&cpus, &namer, |at| {
            mem.get(&at).copied().ok_or_else(|| "no".into())
        });
        assert_eq!(
            lines,
            [
                "CPU 0: EL2h pc 0x40000110 (the hypervisor)",
                "    0x40000110 el2::main::spin",
                "    0x40000200 el2::main::run (x30)",
                "    0x40000384 el2::main::end",
                "CPU 1: not started / powered off",
                "CPU 2: EL1h pc 0xffff800008000000 (in a guest)",
                "CPU 3: EL2h pc 0x40000220 (the hypervisor)",
                "    0x40000220 el2::main::run",
            ]
        );
    }

    #[test]
    fn the_banner_gives_the_load_address() {
        let console = "[el2 0.000] RayOS EL2 0.1 starting at EL2, image at 0x40080000, DTB at 0x48000000\n\
[el2 3.000] RayOS EL2 0.1 starting at EL2, image at 0x7e000000, DTB at 0x48000000\nguest image at 0x1\n";
        assert_eq!(image_base(console), Some(0x7e00_0000));
        assert_eq!(image_base("no banner"), None);
    }

    #[test]
    fn no_socket_is_one_line_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("hang-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = cpu_report(&dir.join("absent.sock"), &dir.join("absent.elf"));
        let _ = std::fs::remove_dir_all(&dir);
        let lines: Vec<_> = report.lines().collect();
        assert_eq!(lines.len(), 2, "{report}");
        assert_eq!(lines[0], HEADER);
        assert!(
            lines[1].starts_with("(no CPU report: QMP socket"),
            "{report}"
        );
        assert!(lines[1].contains("absent.sock"), "{report}");
    }
}
