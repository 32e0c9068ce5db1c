//! The hypervisor's console: the physical PL011 (its registers as `tock-registers`
//! fields) or a Qualcomm GENI UART (`boards::geni_uart`: transmit polled, receive
//! by its interrupt like the PL011's), the `log` backend that writes
//! hypervisor lines to it, and the sinks that carry guest console output.
//!
//! The line discipline is `vdev::console` (host-tested): each guest source
//! assembles its line in its own buffer and takes the console lock once per line
//! (on a newline, a full buffer, the writing vCPU going idle in WFI, or a
//! hypervisor line being printed); hypervisor lines start with `[el2 LEVEL]` on a line of their
//! own, and a guest line that starts with `[el2` is printed as `|[el2`. Warning
//! and error lines, which a guest can provoke, pass a `vdev::ratelimit` token
//! bucket ([`LOG_BURST`] at once, then [`LOG_LINES_PER_SEC`]); the first line let
//! through after a hold-back says how many were suppressed.
//!
//! Console input goes through `monitor::Input` ([`pump_input`]): `Ctrl-]` enters
//! and leaves the hypervisor monitor, whose lines run at the next checkpoint
//! (`control`); in guest mode bytes wait in its bounded queue for the guest's
//! UART. The host UART is always read (its receive interrupt stays on), so the
//! escape is seen even while the guest reads nothing; bytes for a guest whose
//! queue is full are dropped and counted in a (rate-limited) warning.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1};
use arch::relax::Mutex;
use boards::geni_uart::{GeniRegs, GeniUart, Reg};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};
use vdev::console::{LineBuf, SourceId, Terminal, NEWLINE};
use vdev::ratelimit::{RateLimit, Verdict, LOG_BURST, LOG_LINES_PER_SEC, LOG_SUPPRESSED};

register_bitfields! {u32,
    /// UARTFR, the PL011 flag register (Arm PL011 TRM 3.3.3): the bits the console
    /// reads.
    UARTFR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) []
    ],
    /// UARTIMSC, the PL011 interrupt mask set/clear register (TRM 3.3.10).
    UARTIMSC [
        /// Receive timeout interrupt mask.
        RTIM OFFSET(6) NUMBITS(1) [],
        /// Receive interrupt mask.
        RXIM OFFSET(4) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 registers the console uses (TRM 3.2, register summary).
    Pl011Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x018 => fr: ReadOnly<u32, UARTFR::Register>),
        (0x01c => _reserved1),
        (0x038 => imsc: ReadWrite<u32, UARTIMSC::Register>),
        (0x03c => @END),
    }
}

/// The physical UART at `base` (0 until the device tree has named it). Not
/// `arm-pl011-uart`: its accessors are out-of-line calls, and the guest's UART
/// exit polls this UART (see docs/architecture.md).
struct Uart {
    base: usize,
    /// `None`: a PL011; else the GENI UART's driver state.
    geni: Option<GeniUart>,
}

/// The MMIO accesses `boards::geni_uart` makes to the GENI serial engine at
/// the address it holds.
struct GeniMmio(usize);

impl GeniRegs for GeniMmio {
    fn read(&mut self, reg: Reg) -> u32 {
        // SAFETY: `self.0` is the non-zero base of the GENI serial engine the device
        // tree names, whose register window `mmu::enable` identity-maps as device
        // memory (or reached with the MMU off, where every access is Device-nGnRnE);
        // every `Reg` offset is 4-byte aligned and inside the window's first 4 KiB
        // page (`boards::geni_uart` host test), which the page-granular map covers;
        // only under the `HOST` lock.
        unsafe { core::ptr::read_volatile((self.0 + reg.offset()) as *const u32) }
    }

    fn write(&mut self, reg: Reg, value: u32) {
        // SAFETY: as in `read`: an aligned register of the mapped engine window,
        // written volatile under the `HOST` lock.
        unsafe { core::ptr::write_volatile((self.0 + reg.offset()) as *mut u32, value) }
    }
}

impl Uart {
    fn regs(&self) -> Option<&Pl011Regs> {
        if self.geni.is_some() {
            return None;
        }
        // SAFETY: a non-zero `base` is the PL011 the device tree names, identity-mapped
        // as device memory (or reached with the MMU off, where every access is
        // Device-nGnRnE); the registers are accessed only with volatile accesses
        // through `tock-registers`, and only under the `HOST` lock.
        (self.base != 0).then(|| unsafe { &*(self.base as *const Pl011Regs) })
    }

    fn put(&mut self, b: u8) {
        let Some(u) = self.regs() else { return };
        while u.fr.is_set(UARTFR::TXFF) {}
        u.dr.set(u32::from(b));
    }

    fn put_all(&mut self, bytes: &[u8]) {
        match (&mut self.geni, self.base) {
            (None, _) => bytes.iter().for_each(|b| self.put(*b)),
            // A stuck engine drops the output: there is no other console to say so.
            (Some(g), base) if base != 0 => {
                let _ = g.write(&mut GeniMmio(base), bytes);
            }
            (Some(_), _) => {}
        }
    }

    /// The next received byte (its error bits, above bit 7, dropped).
    fn get(&mut self) -> Option<u8> {
        if let (Some(g), base) = (&mut self.geni, self.base) {
            return (base != 0).then(|| g.read(&mut GeniMmio(base))).flatten();
        }
        let u = self.regs()?;
        if u.fr.is_set(UARTFR::RXFE) {
            return None;
        }
        Some(u.dr.get() as u8)
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for part in s.split_inclusive('\n') {
            match part.strip_suffix('\n') {
                Some(line) => {
                    self.put_all(line.as_bytes());
                    self.put_all(b"\r\n");
                }
                None => self.put_all(part.as_bytes()),
            }
        }
        Ok(())
    }
}

/// The physical UART and what is on its terminal.
struct Host {
    uart: Uart,
    term: Terminal,
    /// The receive interrupt as last programmed (`None`: not yet), so a guest
    /// polling its UART does not rewrite the mask register on every access.
    rx_interrupt: Option<bool>,
}

impl Host {
    /// Writes `bytes` of guest source `src` of console slot `slot`, each line
    /// labelled with the guest's name while several guests run.
    fn guest(&mut self, slot: usize, src: Source, bytes: &[u8]) {
        let mut label = [0u8; LABEL_MAX];
        let n = label_of(slot, &mut label);
        let Host { uart, term, .. } = self;
        term.guest_labelled(
            line_index(slot, src) as SourceId,
            &label[..n],
            bytes,
            &mut |b| uart.put_all(b),
        );
    }
}

/// Longest label a guest's lines get (`(NAME) `, the name cut to fit).
const LABEL_MAX: usize = 40;

/// Writes the label of console slot `slot` into `out`: `(NAME) ` of that
/// guest while several run (bytes outside printable ASCII as `?`, so a name
/// from a disk image cannot move the cursor; the parenthesis keeps a line from
/// starting like a hypervisor line), nothing otherwise; returns its length.
fn label_of(slot: usize, out: &mut [u8; LABEL_MAX]) -> usize {
    if !crate::guests::several() {
        return 0;
    }
    let Some(vm) = crate::guests::all().get(slot) else {
        return 0;
    };
    out[0] = b'(';
    let mut n = 1;
    for b in vm.name.bytes().take(LABEL_MAX - 3) {
        out[n] = if b.is_ascii_graphic() || b == b' ' {
            b
        } else {
            b'?'
        };
        n += 1;
    }
    out[n] = b')';
    out[n + 1] = b' ';
    n + 2
}

static HOST: Mutex<Host> = Mutex::new(Host {
    uart: Uart {
        base: 0,
        geni: None,
    },
    term: Terminal::new(),
    rx_interrupt: None,
});

/// Console slots: one per guest (its index among `guests`), and the authority
/// partition's.
pub const SLOTS: usize = crate::guests::MAX + 1;
/// The authority partition's console slot.
pub const AUTHORITY_SLOT: usize = crate::guests::MAX;

/// A guest console output source (of a console slot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The guest's PL011.
    Pl011 = 0,
    /// The guest's virtio console.
    Virtio = 1,
}

impl Source {
    const ALL: [Source; 2] = [Source::Pl011, Source::Virtio];
}

/// One source's line being assembled.
struct GuestLine {
    buf: LineBuf,
    /// The vCPU (its scheduler task, `smp::running_task`) that wrote its last
    /// byte: vCPUs share physical CPUs, so the CPU does not name it.
    writer: usize,
    /// The system counter when its last byte came ([`guest_put`]).
    at: u64,
}

impl GuestLine {
    const fn new() -> Self {
        Self {
            buf: LineBuf::new(),
            writer: usize::MAX,
            at: 0,
        }
    }

    /// Sends the line, finished or not, to the terminal.
    fn flush(&mut self, slot: usize, src: Source) {
        HOST.lock().guest(slot, src, self.buf.bytes());
        self.buf.clear();
    }
}

/// Each slot's sources' lines (index: [`line_index`]). Lock order: a line, then
/// [`HOST`].
static LINES: [Mutex<GuestLine>; SLOTS * 2] = [const { Mutex::new(GuestLine::new()) }; SLOTS * 2];

/// The index of slot `slot`'s source `src` in [`LINES`] (and its terminal source).
fn line_index(slot: usize, src: Source) -> usize {
    slot.min(SLOTS - 1) * Source::ALL.len() + src as usize
}

/// Every (slot, source) pair.
fn all_lines() -> impl Iterator<Item = (usize, Source)> {
    (0..SLOTS).flat_map(|slot| Source::ALL.into_iter().map(move |src| (slot, src)))
}

/// Points the console at the UART of `kind` at physical address `base`.
pub fn init(base: usize, kind: boards::UartKind) {
    let mut host = HOST.lock();
    host.uart.base = base;
    host.uart.geni = match kind {
        boards::UartKind::Pl011 => None,
        boards::UartKind::QcomGeni => Some(GeniUart::new()),
    };
}

/// Makes the console UART interrupt when input arrives (`on`), or stop doing so
/// while the guest has no room for more.
pub fn set_rx_interrupt(on: bool) {
    let mut host = HOST.lock();
    if host.rx_interrupt == Some(on) {
        return;
    }
    host.rx_interrupt = Some(on);
    let uart = &mut host.uart;
    if let (Some(g), base) = (&mut uart.geni, uart.base) {
        if base != 0 {
            g.set_rx_interrupt(&mut GeniMmio(base), on);
        }
        return;
    }
    if let Some(u) = host.uart.regs() {
        if on {
            u.imsc.write(UARTIMSC::RXIM::SET + UARTIMSC::RTIM::SET);
        } else {
            u.imsc.set(0);
        }
    }
}

/// Writes a hypervisor message on a line of its own: the guests' unfinished
/// lines go out first (ended with a newline).
pub fn print_line(args: fmt::Arguments) {
    flush_guest(false);
    let mut h = HOST.lock();
    let Host { uart, term, .. } = &mut *h;
    term.hypervisor_line(&mut |b| uart.put_all(b));
    let _ = uart.write_fmt(args);
    uart.put_all(NEWLINE);
}

/// Writes on the fatal path, which may have interrupted a holder of the console lock
/// on this CPU.
pub fn emergency_write(args: fmt::Arguments) {
    if HOST.is_locked() {
        // SAFETY: the fatal path never returns to the interrupted holder; interleaved
        // output is better than a deadlock that hides the cause of the fault.
        unsafe { HOST.force_unlock() };
    }
    let _ = HOST.lock().uart.write_fmt(args);
}

/// One byte of guest console output from `src`; its line goes to the terminal
/// when it ends or fills the buffer.
pub fn guest_put(slot: usize, src: Source, b: u8) {
    let mut line = LINES[line_index(slot, src)].lock();
    line.writer = crate::smp::running_task();
    line.at = CNTPCT_EL0.get();
    if line.buf.push(b) {
        let slowest = (slot == AUTHORITY_SLOT)
            .then(|| ANSWERS.lock().printed(line.buf.bytes(), CNTPCT_EL0.get()))
            .flatten();
        line.flush(slot, src);
        drop(line);
        if let Some(ticks) = slowest {
            let answers = ANSWERS.lock().answers;
            log::info!(
                "console: the authority partition answered in {} us, its slowest of {answers} answer(s) yet (typed line end to status line, system counter: guest time under -icount)",
                ticks.saturating_mul(1_000_000) / CNTFRQ_EL0.get().max(1)
            );
        }
    }
}

/// How long the authority partition's shell takes to answer a command typed on
/// the console (`monitor::answer`). Lock order: a guest line, then this.
static ANSWERS: Mutex<monitor::answer::AnswerClock> =
    Mutex::new(monitor::answer::AnswerClock::new());

/// Guest console output from `src` in one batch (a virtio transmit buffer): whole
/// lines go out as they end, the rest at the end of the batch.
pub fn guest_write(slot: usize, src: Source, bytes: &[u8]) {
    let mut line = LINES[line_index(slot, src)].lock();
    for b in bytes {
        if line.buf.push(*b) {
            line.flush(slot, src);
        }
    }
    if line.buf.partial_ready() {
        line.flush(slot, src);
    }
}

/// Sends every source's unfinished line to the terminal: before a hypervisor
/// line, or with `all` (also a lone `[`, `[e`, `[el`) when the machine stops. A
/// source whose buffer another CPU holds is skipped (that CPU flushes it), and so
/// is one still being written byte by byte (its last byte less than
/// [`FRESH_MS`] ago): the hypervisor line goes out first and that line whole
/// after it, rather than cut in two around it (the authority partition's status
/// lines, which scripts read, were).
pub fn flush_guest(all: bool) {
    let fresh = CNTFRQ_EL0.get() * FRESH_MS / 1000;
    let now = CNTPCT_EL0.get();
    for (slot, src) in all_lines() {
        if let Some(mut line) = LINES[line_index(slot, src)].try_lock() {
            let ready = line.buf.partial_ready() && now.wrapping_sub(line.at) >= fresh;
            if ready || (all && !line.buf.is_empty()) {
                line.flush(slot, src);
            }
        }
    }
}

/// How long after its last byte an unfinished guest line counts as still being
/// written ([`flush_guest`]).
const FRESH_MS: u64 = 20;

/// The vCPU running here went idle (WFI): sends the unfinished lines it wrote
/// (a prompt) to the terminal. Lines another vCPU is writing stay whole.
pub fn flush_idle() {
    let me = crate::smp::running_task();
    for (slot, src) in all_lines() {
        let mut line = LINES[line_index(slot, src)].lock();
        if line.writer == me && line.buf.partial_ready() {
            line.flush(slot, src);
        }
    }
}

/// Console input: the monitor's escape state machine, its line and the guest's
/// queue. Lock order: the guest's PL011, then this, then [`HOST`].
static INPUT: Mutex<monitor::Input> = Mutex::new(monitor::Input::new());
/// Bytes wait in [`INPUT`] for the guest (so a guest access to its UART, which
/// may have made room, pumps again).
static GUEST_WAITING: AtomicBool = AtomicBool::new(false);
/// Host bytes one pump takes at most: a flood of input cannot hold a CPU at EL2
/// (what is left keeps the UART's interrupt up for the next exit).
const MAX_INPUT_PER_PUMP: usize = 64;

/// Whether bytes wait for the guest's UART.
#[inline(always)]
pub fn guest_input_waiting() -> bool {
    GUEST_WAITING.load(Ordering::Relaxed)
}

/// From now on the console's reader (the authority partition) gets every typed
/// byte, the monitor's escape included (`monitor::Input::pass_escape`).
pub fn pass_escape() {
    INPUT.lock().pass_escape();
}

/// A byte typed on the host console, if any (for [`pump_input`]).
#[inline(always)]
pub fn poll_input() -> Option<u8> {
    HOST.lock().uart.get()
}

/// Takes what was typed on the host console (`first`, read by [`poll_input`],
/// and whatever follows it) through the monitor's escape state machine — showing
/// the monitor's echo and prompts, submitting finished monitor lines to
/// `control` — then moves up to `guest.len()` bytes waiting for the guest into
/// `guest`; returns how many.
pub fn pump_input(first: Option<u8>, guest: &mut [u8]) -> usize {
    let mut input = INPUT.lock();
    let mut next = first;
    for _ in 0..MAX_INPUT_PER_PUMP {
        let Some(b) = next else { break };
        show(feed(&mut input, b));
        next = HOST.lock().uart.get();
    }
    if let Some(b) = next {
        // The budget ran out with a byte in hand: it is not lost.
        show(feed(&mut input, b));
    }
    let dropped = input.take_dropped();
    if dropped > 0 {
        log::warn!("console input: {dropped} byte(s) dropped: the guest is not reading its UART");
    }
    let n = input.take_guest(guest);
    GUEST_WAITING.store(input.guest_pending() > 0, Ordering::Relaxed);
    n
}

/// One typed byte through the escape state machine; a line end for the
/// authority partition starts its answer clock.
fn feed(input: &mut monitor::Input, b: u8) -> monitor::Step {
    let step = input.feed(b);
    if step == monitor::Step::Guest
        && (b == b'\r' || b == b'\n')
        && crate::authority::get().is_some()
    {
        ANSWERS.lock().typed(CNTPCT_EL0.get());
    }
    step
}

/// Erases one character on the terminal.
const ERASE: &[u8] = b"\x08 \x08";
/// The monitor's prompt and echo as a source of the [`Terminal`]: a guest line
/// arriving while the operator types starts on a line of its own, and a prompt
/// after a guest's unfinished line starts on one too.
const MONITOR_SOURCE: SourceId = (SLOTS * Source::ALL.len()) as SourceId;

/// Writes the monitor's prompt or echo through the terminal.
fn monitor_out(bytes: &[u8]) {
    let mut h = HOST.lock();
    let Host { uart, term, .. } = &mut *h;
    term.guest(MONITOR_SOURCE, bytes, &mut |b| uart.put_all(b));
}

/// Shows what one typed byte did.
fn show(step: monitor::Step) {
    use monitor::Step;
    match step {
        Step::Guest | Step::GuestDropped | Step::Ignored => {}
        Step::Entered => {
            print_line(format_args!(
                "{} entered; type help; Ctrl-] returns to the guest",
                monitor::LINE_PREFIX
            ));
            prompt();
        }
        Step::Left => {
            monitor_out(NEWLINE);
            print_line(format_args!(
                "{} left; back to the guest",
                monitor::LINE_PREFIX
            ));
        }
        Step::Echo(b) => monitor_out(&[b]),
        Step::Erase => monitor_out(ERASE),
        Step::Kill(n) => (0..n).for_each(|_| monitor_out(ERASE)),
        Step::Empty => {
            monitor_out(NEWLINE);
            prompt();
        }
        Step::Overlong => {
            monitor_out(NEWLINE);
            print_status(&monitor::Status::error(&alloc::format!(
                "line longer than {} characters refused",
                monitor::LINE_MAX
            )));
            prompt();
        }
        Step::Line(line) => {
            monitor_out(NEWLINE);
            if crate::control::submit(line) {
                // Run it at this CPU's next checkpoint: take an interrupt exit soon.
                crate::irq::kick(MPIDR_EL1.get());
            } else {
                print_status(&monitor::Status::error(
                    "busy: earlier commands are still waiting to run; nothing done",
                ));
                prompt();
            }
        }
    }
}

/// Shows the monitor's prompt on a line of its own.
fn prompt() {
    monitor_out(monitor::PROMPT.as_bytes());
}

fn print_status(status: &monitor::Status) {
    print_line(format_args!("{} {status}", monitor::LINE_PREFIX));
}

/// Prints a monitor command's status line, then the prompt if the operator is
/// still in the monitor.
pub fn monitor_status(status: &monitor::Status) {
    print_status(status);
    if INPUT.lock().mode() == monitor::input::Mode::Monitor {
        prompt();
    }
}

/// Guest output sink for the emulated PL011.
/// A VM's PL011 output, to its console slot.
pub struct GuestConsole(pub usize);

impl devices::CharSink for GuestConsole {
    fn put(&mut self, byte: u8) {
        guest_put(self.0, Source::Pl011, byte);
    }
}

/// Milliseconds per token of [`LIMIT`].
const LOG_PERIOD_MS: u64 = 1000 / LOG_LINES_PER_SEC;
/// The token bucket of warning and error lines, on a millisecond clock.
static LIMIT: Mutex<RateLimit> = Mutex::new(RateLimit::new(LOG_BURST, LOG_PERIOD_MS));

/// Milliseconds of the system counter.
fn now_ms() -> u64 {
    let freq = CNTFRQ_EL0.get().max(1);
    (u128::from(CNTPCT_EL0.get()) * 1000 / u128::from(freq)) as u64
}

static LOGGER: Logger = Logger;
static VERBOSE: AtomicBool = AtomicBool::new(false);
/// Messages dropped because the console was not ready.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info || VERBOSE.load(Ordering::Relaxed)
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if HOST.lock().uart.base == 0 {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if r.level() <= log::Level::Warn {
            let verdict = LIMIT.lock().check(now_ms());
            match verdict {
                Verdict::Drop => return,
                Verdict::Print { suppressed: 0 } => {}
                Verdict::Print { suppressed } => print_line(format_args!(
                    "[el2 {:<5}] {suppressed} {LOG_SUPPRESSED} (more than {LOG_LINES_PER_SEC}/s)",
                    log::Level::Warn
                )),
            }
        }
        print_line(format_args!("[el2 {:<5}] {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

/// Installs the logger; `verbose` enables debug and trace lines.
pub fn init_log(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}
