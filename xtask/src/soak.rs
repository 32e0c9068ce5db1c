//! `cargo xtask soak --minutes N [--reboot-every M]`: a long run of the Linux
//! guest with 2 vCPUs, not part of the suite.
//!
//! The guest command ([`guest_script`]) loops rounds of traffic: 64 KiB of
//! `/dev/urandom` written to a slot of `/dev/vda` (fsync), its SHA-256 in a
//! record beside it, the page cache dropped and the slot read back and compared;
//! a TPM2_PCR_Extend of PCR 16 through `/dev/tpm0`, its response and the new PCR
//! checked against SHA-256(old ‖ digest); two reads of `/dev/hwrng`; a line on the
//! PL011 console and one on the virtio console (`/dev/hvc0`). After M minutes of
//! guest uptime it reboots (`reboot -f`: PSCI SYSTEM_RESET, the hypervisor resets
//! the VM, which boots the same command again). A header block on the disk
//! carries the boot number and the last committed sequence number across reboots;
//! each boot first checks every slot's record names the newest sequence number
//! that went to that slot and that its data still hashes to the record.
//!
//! The host ([`check_console`]) then checks that the boots and rounds are
//! contiguous (each boot resumes at the sequence number the previous one
//! committed), every round printed on both consoles, no guest check failed, the
//! last boot's verification passed, and the hypervisor's heap use (logged at every
//! VM boot) did not grow after the first reset.

use std::time::Duration;

use crate::error::Error;
use crate::run::{run_captured, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// Prefix of the guest script's lines.
pub const PREFIX: &str = "soak: ";
/// Prefix of the hypervisor's heap line.
pub const HEAP_PREFIX: &str = "hypervisor heap: ";
/// Disk slots the rounds write in turn.
pub const SLOTS: u64 = 64;
/// Bytes of one slot.
pub const SLOT_BYTES: u64 = 64 << 10;
/// Data slots start here on `/dev/vda` (1 MiB, in slots).
pub const DATA_START_SLOTS: u64 = (1 << 20) / SLOT_BYTES;
/// Bytes of one record (`SEQ SHA256`, space padded).
pub const RECORD_BYTES: u64 = 128;
/// Records start here on `/dev/vda` (4 KiB, in records).
pub const RECORDS_START: u64 = 4096 / RECORD_BYTES;
/// The PCR each round extends (16: debug, resettable).
pub const PCR: u32 = 16;
/// Fewest boots of a soak: the heap check compares later resets with the first.
pub const MIN_BOOTS: u32 = 3;
/// Time a boot may take beyond its traffic (Linux boot under TCG, verification).
pub const BOOT_BUDGET: Duration = Duration::from_secs(240);
/// The soak's own system disk, under `target/`.
pub const SYSTEM_DISK: &str = "soak-disk.img";
/// Where the console of the last soak is kept, under `target/`.
pub const CONSOLE_LOG: &str = "soak-console.log";

/// `soak`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// minutes of traffic in all (at least one)
    #[arg(long, value_name = "N")]
    minutes: u32,
    /// minutes between reboots of the VM
    #[arg(long = "reboot-every", value_name = "M", default_value_t = 1)]
    reboot_every: u32,
    /// show the console as it arrives
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// A soak's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoakPlan {
    /// Boots of the VM (the last one powers off instead of rebooting).
    pub boots: u32,
    /// Seconds of traffic per boot.
    pub secs_per_boot: u32,
    pub verbose: bool,
}

impl SoakArgs {
    /// The plan: `minutes / reboot_every` boots, at least [`MIN_BOOTS`].
    pub fn options(&self) -> Result<SoakPlan, Error> {
        if self.minutes == 0 || self.reboot_every == 0 {
            return Err(Error::Usage(
                "soak: --minutes and --reboot-every take at least 1".into(),
            ));
        }
        Ok(SoakPlan {
            boots: (self.minutes / self.reboot_every).max(MIN_BOOTS),
            secs_per_boot: self.reboot_every * 60,
            verbose: self.verbose,
        })
    }
}

/// TPM2_PCR_Extend(`pcr`, SHA-256 `digest`) with an empty password session
/// (TPM 2.0 Part 3, §22.2).
pub fn extend_command(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    const TPM_ST_SESSIONS: u16 = 0x8002;
    const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
    const TPM_RS_PW: u32 = 0x4000_0009;
    const TPM_ALG_SHA256: u16 = 0x000b;
    const PW_SESSION_BYTES: u32 = 9;
    let mut c = Vec::new();
    c.extend_from_slice(&TPM_ST_SESSIONS.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes()); // commandSize, patched below
    c.extend_from_slice(&TPM_CC_PCR_EXTEND.to_be_bytes());
    c.extend_from_slice(&pcr.to_be_bytes());
    c.extend_from_slice(&PW_SESSION_BYTES.to_be_bytes());
    c.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes()); // nonce: empty
    c.push(0); // sessionAttributes
    c.extend_from_slice(&0u16.to_be_bytes()); // hmac: empty password
    c.extend_from_slice(&1u32.to_be_bytes()); // TPML_DIGEST_VALUES.count
    c.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    c.extend_from_slice(digest);
    let size = c.len() as u32;
    c[2..6].copy_from_slice(&size.to_be_bytes());
    c
}

/// The success response of PCR_Extend with one password session (the session
/// continues, empty nonce and hmac).
pub const EXTEND_OK_RESPONSE: &str = "80020000001300000000000000000000010000";

/// The digest each round extends: bytes 0xa0..=0xbf.
fn digest() -> [u8; 32] {
    std::array::from_fn(|i| 0xa0 + i as u8)
}

fn printf_escapes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// The guest command (busybox sh) of a soak.
pub fn guest_script(plan: &SoakPlan) -> String {
    let d = digest();
    format!(
        r#"P='{PREFIX}'; D=/dev/vda; NS={SLOTS}; SB={SLOT_BYTES}; DS={DATA_START_SLOTS}; RB={RECORD_BYTES}; RS={RECORDS_START}
BOOTS={boots}; SECS={secs}
fail() {{ echo "${{P}}FAIL $*"; exit 1; }}
hdr() {{ printf '%-511s\n' "SOAK1 $boot $seq" | dd of=$D bs=512 count=1 conv=fsync 2>/dev/null || fail "header write"; }}
uptime_s() {{ cut -d. -f1 /proc/uptime; }}
verify() {{
  echo 3 > /proc/sys/vm/drop_caches
  s=0; used=0
  while [ $s -lt $NS ]; do
    m=$(( seq - ((seq - s) % NS + NS) % NS ))
    set -- $(dd if=$D bs=$RB skip=$((RS + s)) count=1 2>/dev/null | tr -d '\000')
    if [ $m -ge 1 ]; then
      [ "$1" = "$m" ] || fail "lost slot=$s want-seq=$m record-seq=${{1:-none}}"
      got=$(dd if=$D bs=$SB skip=$((DS + s)) count=1 2>/dev/null | sha256sum | cut -c1-64)
      [ "$got" = "$2" ] || fail "corrupt slot=$s seq=$m"
      used=$((used + 1))
    fi
    s=$((s + 1))
  done
  echo "${{P}}verify boot=$boot seq=$seq slots=$used ok"
}}
t=/sys/class/tpm/tpm0; pcr=$t/pcr-sha256/{PCR}; i=0
while [ ! -e $pcr ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -e $pcr ] || fail "no TPM"
printf '{cmd}' > /tmp/c; printf '{dig}' > /tmp/d
set -- $(dd if=$D bs=512 count=1 2>/dev/null | tr -d '\000')
if [ "$1" = SOAK1 ]; then boot=$(($2 + 1)); seq=$3; else boot=1; seq=0; fi
echo "${{P}}boot boot=$boot seq=$seq"
hdr
verify
end=$(( $(uptime_s) + SECS ))
while [ $(uptime_s) -lt $end ]; do
  n=$((seq + 1)); s=$((n % NS))
  head -c $SB /dev/urandom > /tmp/w
  sum=$(sha256sum < /tmp/w | cut -c1-64)
  dd if=/tmp/w of=$D bs=$SB seek=$((DS + s)) conv=fsync 2>/dev/null || fail "data write seq=$n"
  printf '%-127s\n' "$n $sum" | dd of=$D bs=$RB seek=$((RS + s)) conv=fsync 2>/dev/null || fail "record write seq=$n"
  seq=$n; hdr
  echo 3 > /proc/sys/vm/drop_caches
  got=$(dd if=$D bs=$SB skip=$((DS + s)) count=1 2>/dev/null | sha256sum | cut -c1-64)
  [ "$got" = "$sum" ] || fail "read-back seq=$n"
  old=$(cat $pcr)
  exec 3<>/dev/tpm0; dd if=/tmp/c bs=4096 2>/dev/null >&3
  rsp=$(dd bs=4096 count=1 2>/dev/null <&3 | xxd -p | tr -d '\n'); exec 3>&-
  [ "$rsp" = "{ok}" ] || fail "tpm response seq=$n rsp=$rsp"
  want=$({{ echo $old | xxd -r -p; cat /tmp/d; }} | sha256sum | cut -c1-64 | tr a-f A-F)
  [ "$(cat $pcr)" = "$want" ] || fail "pcr seq=$n"
  head -c 64 /dev/hwrng > /tmp/a && head -c 64 /dev/hwrng > /tmp/b || fail "hwrng read seq=$n"
  [ $(wc -c < /tmp/a) -eq 64 ] && ! cmp -s /tmp/a /tmp/b || fail "hwrng bytes seq=$n"
  echo "${{P}}hvc $n" > /dev/hvc0 || fail "hvc write seq=$n"
  echo "${{P}}round $n ok"
done
if [ $boot -ge $BOOTS ]; then
  verify
  echo "${{P}}done boots=$boot seq=$seq"
  exit 0
fi
echo "${{P}}reboot boot=$boot seq=$seq"
sync
reboot -f
sleep 60
fail "still running after reboot -f"
"#,
        boots = plan.boots,
        secs = plan.secs_per_boot,
        cmd = printf_escapes(&extend_command(PCR, &d)),
        dig = printf_escapes(&d),
        ok = EXTEND_OK_RESPONSE,
    )
}

/// What a soak's console shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakReport {
    pub boots: u32,
    /// Rounds completed (the last sequence number).
    pub rounds: u64,
    /// Heap in use (KiB) at each VM boot, in order.
    pub heap_kib: Vec<u64>,
    /// Everything wrong, one line each; empty when the soak passed.
    pub problems: Vec<String>,
}

fn kv<'a>(rest: &'a str, key: &str) -> Option<&'a str> {
    rest.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Checks a soak's console against its plan.
pub fn check_console(console: &str, plan: &SoakPlan) -> SoakReport {
    let mut r = SoakReport::default();
    let mut hvc: Vec<u64> = Vec::new();
    let mut verified_final = false;
    let mut done = false;
    let mut boot_seen = 0u32;
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(i) = line.find(HEAP_PREFIX) {
            let used = line[i + HEAP_PREFIX.len()..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok());
            match used {
                Some(kib) => r.heap_kib.push(kib),
                None => r.problems.push(format!("unreadable heap line `{line}`")),
            }
            continue;
        }
        let Some(i) = line.find(PREFIX) else { continue };
        let rest = &line[i + PREFIX.len()..];
        let num = |key: &str| kv(rest, key).and_then(|v| v.parse::<u64>().ok());
        let word = rest.split_whitespace().next().unwrap_or("");
        match word {
            "boot" => {
                let (Some(b), Some(s)) = (num("boot"), num("seq")) else {
                    r.problems.push(format!("bad line `{line}`"));
                    continue;
                };
                if b != u64::from(boot_seen) + 1 {
                    r.problems
                        .push(format!("boot {b} follows boot {boot_seen}"));
                }
                if s != r.rounds {
                    r.problems.push(format!(
                        "boot {b} resumed at sequence {s}, but {} rounds were committed",
                        r.rounds
                    ));
                }
                boot_seen = b as u32;
                verified_final = false;
            }
            "round" => match rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                Some(n) if n == r.rounds + 1 && rest.ends_with(" ok") => r.rounds = n,
                _ => r
                    .problems
                    .push(format!("round out of order after {}: `{line}`", r.rounds)),
            },
            "hvc" => match rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                Some(n) => hvc.push(n),
                None => r.problems.push(format!("bad line `{line}`")),
            },
            "verify" => {
                if num("boot") != Some(u64::from(boot_seen)) || num("seq") != Some(r.rounds) {
                    r.problems.push(format!(
                        "verification at boot {boot_seen} after {} rounds says `{rest}`",
                        r.rounds
                    ));
                }
                verified_final = rest.ends_with(" ok");
            }
            "done" => done = true,
            "FAIL" => r.problems.push(format!("guest: {rest}")),
            _ => {}
        }
    }
    r.boots = boot_seen;
    if r.boots != plan.boots {
        r.problems
            .push(format!("{} boots, the plan was {}", r.boots, plan.boots));
    }
    if !done || !verified_final {
        r.problems
            .push("the last boot did not finish with a passing verification".into());
    }
    if r.rounds == 0 {
        r.problems.push("no round of traffic completed".into());
    }
    let want: Vec<u64> = (1..=r.rounds).collect();
    if hvc != want {
        let missing = want.iter().filter(|n| !hvc.contains(n)).count();
        r.problems.push(format!(
            "virtio console: {} lines for {} rounds ({missing} missing)",
            hvc.len(),
            r.rounds
        ));
    }
    // One heap line at VM creation, then one per boot. The first boot may
    // allocate for good (device state set up on first use); from the first
    // reset on, use must not grow.
    let per_boot = r.heap_kib.iter().skip(1).copied().collect::<Vec<_>>();
    if per_boot.len() != r.boots as usize {
        r.problems.push(format!(
            "{} heap lines at boots for {} boots",
            per_boot.len(),
            r.boots
        ));
    } else if let Some((&base, later)) = per_boot.get(1..).and_then(|s| s.split_first()) {
        if let Some(&max) = later.iter().max().filter(|&&m| m > base) {
            r.problems.push(format!(
                "hypervisor heap grew from {base} KiB at the first reset to {max} KiB"
            ));
        }
    }
    r
}

/// The soak script's path in the initramfs (it is too long for the kernel
/// command line that carries `--guest-cmd`).
pub const SCRIPT: &str = "soak.sh";

/// The Linux guest's initramfs followed by a second newc archive holding the
/// script (the kernel unpacks concatenated archives in turn).
fn soak_initramfs(layout: &Layout, plan: &SoakPlan) -> Result<std::path::PathBuf, Error> {
    let g = crate::linux_guest::ensure_linux_guest(&layout.guest_cache())
        .map_err(|e| Error::step("linux guest", e))?;
    let mut bytes = std::fs::read(&g.initramfs)
        .map_err(|e| Error::io(format!("read {}", g.initramfs.display()), e))?;
    let mut w = crate::linux_guest::cpio::CpioWriter::new(Vec::new());
    w.file(SCRIPT, 0o755, guest_script(plan).as_bytes())
        .map_err(|e| Error::io("soak initramfs", e))?;
    bytes.extend(w.finish().map_err(|e| Error::io("soak initramfs", e))?);
    let path = layout.out.join("soak-initramfs.cpio");
    std::fs::write(&path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

/// `cargo xtask soak`.
pub fn soak_cli(layout: &Layout, plan: &SoakPlan) -> Result<(), Error> {
    let secs = u64::from(plan.boots) * (u64::from(plan.secs_per_boot) + BOOT_BUDGET.as_secs());
    let mut o = RunOptions::headless(Guest::Linux, Duration::from_secs(secs));
    o.smp = Some(2);
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.fresh = true;
    o.quiet = !plan.verbose;
    o.initrd = Some(soak_initramfs(layout, plan)?);
    o.guest_cmd = Some(format!("sh /{SCRIPT}"));
    eprintln!(
        "xtask soak: {} boots of {} s of traffic each (2 vCPUs), at most {secs} s",
        plan.boots, plan.secs_per_boot
    );
    let outcome = run_captured(layout, &o)?;
    let log = layout.out.join(CONSOLE_LOG);
    std::fs::write(&log, &outcome.console)
        .map_err(|e| Error::io(format!("write {}", log.display()), e))?;
    let mut report = check_console(&outcome.console, plan);
    if let Err(e) = outcome.verdict() {
        report.problems.push(format!("run: {e}"));
    }
    for p in &report.problems {
        eprintln!("xtask soak: {p}");
    }
    let heap: Vec<String> = report.heap_kib.iter().map(|k| k.to_string()).collect();
    let ok = report.problems.is_empty();
    if !ok {
        eprintln!("{}", outcome.console_tail(CONSOLE_TAIL_LINES));
    }
    println!(
        "soak minutes={:.1} boots={} rounds={} heap_kib={} console={} result={}",
        outcome.elapsed.as_secs_f64() / 60.0,
        report.boots,
        report.rounds,
        heap.join(","),
        log.display(),
        if ok { "ok" } else { "FAILED" }
    );
    if ok {
        Ok(())
    } else {
        Err(Error::step(
            "soak",
            format!(
                "{} problem(s), first: {}",
                report.problems.len(),
                report.problems[0]
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: SoakPlan = SoakPlan {
        boots: 3,
        secs_per_boot: 60,
        verbose: false,
    };

    /// A console of a good 3-boot soak with rounds per boot and heap values.
    fn console(rounds: &[u64], heap: &[u64]) -> String {
        let mut c = format!(
            "[el2 INFO ] hypervisor heap: {} KiB of 8192 KiB in use\n",
            heap[0]
        );
        let mut seq = 0;
        for (b, n) in rounds.iter().enumerate() {
            let b = b + 1;
            c += &format!(
                "[el2 INFO ] hypervisor heap: {} KiB of 8192 KiB in use\n",
                heap[b]
            );
            c += &format!(
                "soak: boot boot={b} seq={seq}\r\nsoak: verify boot={b} seq={seq} slots=3 ok\n"
            );
            for _ in 0..*n {
                seq += 1;
                c += &format!("soak: hvc {seq}\nsoak: round {seq} ok\n");
            }
            if b == rounds.len() {
                c += &format!(
                    "soak: verify boot={b} seq={seq} slots=3 ok\nsoak: done boots={b} seq={seq}\n"
                );
            } else {
                c += &format!("soak: reboot boot={b} seq={seq}\n");
            }
        }
        c
    }

    #[test]
    fn a_good_soak_passes() {
        let r = check_console(&console(&[2, 3, 2], &[100, 110, 120, 120]), &PLAN);
        assert_eq!(r.problems, Vec::<String>::new());
        assert_eq!((r.boots, r.rounds), (3, 7));
        assert_eq!(r.heap_kib, [100, 110, 120, 120]);
    }

    #[test]
    fn heap_growth_after_the_first_reset_fails() {
        let r = check_console(&console(&[2, 3, 2], &[100, 110, 120, 124]), &PLAN);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("heap grew from 120 KiB")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_lost_round_a_missing_console_line_or_a_guest_failure_fails() {
        let good = console(&[2, 3, 2], &[1, 1, 1, 1]);
        // The second boot resumes one round short: a write was lost.
        let lost = good.replace("soak: boot boot=2 seq=2", "soak: boot boot=2 seq=1");
        assert!(!check_console(&lost, &PLAN).problems.is_empty());
        let no_hvc = good.replace("soak: hvc 4\n", "");
        assert!(check_console(&no_hvc, &PLAN)
            .problems
            .iter()
            .any(|p| p.contains("1 missing")));
        let failed = good.replace("soak: round 5 ok", "soak: FAIL read-back seq=5");
        assert!(check_console(&failed, &PLAN).problems.len() >= 2);
        let short = console(&[2, 3], &[1, 1, 1]);
        assert!(check_console(&short, &PLAN)
            .problems
            .iter()
            .any(|p| p.contains("2 boots")));
        let unverified = good.replace("soak: done", "soak: nearly done");
        assert!(!check_console(&unverified, &PLAN).problems.is_empty());
    }

    #[test]
    fn the_plan_has_at_least_three_boots_and_refuses_zero() {
        let a = |m, r| SoakArgs {
            minutes: m,
            reboot_every: r,
            verbose: false,
        };
        assert_eq!(a(5, 1).options().unwrap().boots, 5);
        assert_eq!(a(2, 1).options().unwrap().boots, 3);
        assert_eq!(a(10, 2).options().unwrap().secs_per_boot, 120);
        assert!(matches!(a(0, 1).options(), Err(Error::Usage(_))));
        assert!(matches!(a(5, 0).options(), Err(Error::Usage(_))));
    }

    #[test]
    fn the_extend_command_is_well_formed() {
        let c = extend_command(PCR, &digest());
        assert_eq!(
            u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize,
            c.len()
        );
        assert_eq!(&c[c.len() - 32..], &digest());
        let s = guest_script(&PLAN);
        assert!(s.contains("BOOTS=3; SECS=60") && s.contains("reboot -f"));
    }
}
