//! The guest's TPM as Debian's Linux drives it: `tpm_tis_spi` over `spi_gpio`
//! on the PL061 GPIO controller (the Debian arm64 kernel has no MMIO `tpm_tis`).
//! The guest probes a TPM 2.0, reads PCRs through sysfs, extends PCR 16 with a raw
//! TPM2_PCR_Extend written to /dev/tpm0 and reads back the value the TPM spec
//! defines; a guest reboot (VM reset, _TPM_Init) brings PCR 16 back to zero.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of one run (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(120);

/// The tests' own system disk (not the developer's default one).
const SYSTEM_DISK: &str = "test-disks/tpm.img";

/// The PCR the test extends (16: the debug PCR, resettable, unused at boot).
const PCR: u32 = 16;

/// The SHA-256 digest extended into the PCR: bytes 0x01..=0x20.
fn digest() -> [u8; 32] {
    std::array::from_fn(|i| i as u8 + 1)
}

/// SHA-256(32 zero bytes ‖ digest()): PCR 16 after one extend from reset,
/// computed with an independent SHA-256 (Python's hashlib), uppercase as
/// Linux's `pcr-sha256` sysfs files print it.
const EXTENDED: &str = "0B8F4C5B6ADC4C087AB9F43AAEB6007084C264ADCAA3CB07176B792342850412";

/// A PCR at reset.
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// TPM2_PCR_Extend(PCR, SHA-256 digest) with an empty password session, as raw
/// command bytes (TPM 2.0 Part 3, §22.2).
fn extend_command(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    c.extend_from_slice(&0u32.to_be_bytes()); // commandSize, patched below
    c.extend_from_slice(&0x0000_0182u32.to_be_bytes()); // TPM_CC_PCR_Extend
    c.extend_from_slice(&pcr.to_be_bytes()); // pcrHandle
    c.extend_from_slice(&9u32.to_be_bytes()); // authorizationSize
    c.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    c.extend_from_slice(&0u16.to_be_bytes()); // nonce: empty
    c.push(0); // sessionAttributes
    c.extend_from_slice(&0u16.to_be_bytes()); // hmac: empty password
    c.extend_from_slice(&1u32.to_be_bytes()); // TPML_DIGEST_VALUES.count
    c.extend_from_slice(&0x000bu16.to_be_bytes()); // TPM_ALG_SHA256
    c.extend_from_slice(digest);
    let size = c.len() as u32;
    c[2..6].copy_from_slice(&size.to_be_bytes());
    c
}

/// The success response of PCR_Extend with one password session: header, an
/// empty parameter area, and the session's empty nonce, its attributes with
/// continueSession set (a password session always continues, TPM 2.0 Part 1
/// "Password Authorization"; swtpm answers the same) and an empty hmac.
const EXTEND_OK_RESPONSE: &str = "80020000001300000000000000000000010000";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `printf` escapes writing `bytes`.
fn printf_escapes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// Guest command: wait for the TPM, report it, extend PCR 16 through /dev/tpm0
/// (write and read on one open file, as the driver keeps the response per file)
/// and report the PCR before and after, and what busybox's sha256sum says it
/// should be.
fn probe_and_extend_cmd() -> String {
    let d = digest();
    format!(
        r#"t=/sys/class/tpm/tpm0; p=$t/pcr-sha256/{PCR}; i=0
while [ ! -e $p ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "tpm-major=$(cat $t/tpm_version_major)"
echo "pcr0=$(cat $t/pcr-sha256/0)"
echo "pcr-before=$(cat $p)"
printf '{cmd}' > /tmp/c; printf '{dig}' > /tmp/d
echo "cmd-bytes=$(wc -c < /tmp/c)"
exec 3<>/dev/tpm0; dd if=/tmp/c bs=4096 2>/dev/null >&3
echo "rsp=$(dd bs=4096 count=1 2>/dev/null <&3 | xxd -p)"; exec 3>&-
echo "pcr-after=$(cat $p)"
echo "pcr-expect=$({{ head -c 32 /dev/zero; cat /tmp/d; }} | sha256sum | cut -c1-64 | tr a-f A-F)"
"#,
        cmd = printf_escapes(&extend_command(PCR, &d)),
        dig = printf_escapes(&d),
    )
}

#[test]
fn linux_probes_the_spi_tpm_reads_and_extends_a_pcr() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.guest_cmd = Some(probe_and_extend_cmd());
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let console = &outcome.console;
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let guest = parse_console(console);
    assert!(
        guest.modules_failed.is_empty(),
        "modules failed to load: {:?}\n{tail}",
        guest.modules_failed
    );
    assert_eq!(guest.cmd_exit, Some(0), "\n{tail}");
    assert!(
        console.contains("tpm_tis_spi spi0.0: 2.0 TPM"),
        "tpm_tis_spi did not find a TPM 2.0\n{tail}"
    );
    assert_eq!(console_value(console, "tpm-major"), Some("2"), "\n{tail}");
    let pcr0 = console_value(console, "pcr0").unwrap_or_default();
    assert!(
        pcr0.len() == 64 && pcr0.bytes().all(|b| b.is_ascii_hexdigit()),
        "PCR 0 unreadable: {pcr0:?}\n{tail}"
    );
    assert_eq!(console_value(console, "pcr-before"), Some(ZERO), "\n{tail}");
    let cmd = extend_command(PCR, &digest());
    assert_eq!(
        console_value(console, "cmd-bytes"),
        Some(cmd.len().to_string().as_str()),
        "\n{tail}"
    );
    assert_eq!(
        console_value(console, "rsp"),
        Some(EXTEND_OK_RESPONSE),
        "PCR_Extend failed\n{tail}"
    );
    assert_eq!(
        console_value(console, "pcr-after"),
        Some(EXTENDED),
        "\n{tail}"
    );
    // The guest's own SHA-256 agrees.
    assert_eq!(
        console_value(console, "pcr-expect"),
        Some(EXTENDED),
        "\n{tail}"
    );
}

/// Longest line a script sends: the guest's UART FIFO is 32 bytes and a longer
/// line typed at once loses its end.
const MAX_SEND: usize = 28;

/// A console script: extend PCR 16 from the shell, check it, `reboot -f`, and
/// check PCR 16 is back to zero in the rebooted guest.
fn reboot_script() -> String {
    let mut s = String::from("expect starting a shell\nsleep 1\n");
    let mut send = |line: &str| {
        assert!(line.len() <= MAX_SEND, "script line too long: {line}");
        s.push_str(&format!("send {line}\nsleep 0.3\n"));
    };
    send("cd /tmp");
    send("t=/sys/class/tpm/tpm0");
    send(&format!("p=$t/pcr-sha256/{PCR}"));
    send("sleep 1");
    send("cat $t/tpm_version_major");
    let cmd = hex(&extend_command(PCR, &digest()));
    for chunk in cmd.as_bytes().chunks(14) {
        send(&format!(
            "echo -n {}>>h",
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    send("xxd -r -p h>c");
    send("exec 3<>/dev/tpm0");
    send("dd if=c bs=99 >&3");
    send("dd bs=99 count=1 <&3|xxd -p");
    send("exec 3>&-");
    send("cat $p");
    s.push_str(&format!("expect (?m)^{EXTENDED}\\r?$\n"));
    s.push_str("send reboot -f\nexpect starting a shell\nsleep 1\n");
    let mut send = |line: &str| {
        assert!(line.len() <= MAX_SEND, "script line too long: {line}");
        s.push_str(&format!("send {line}\nsleep 0.3\n"));
    };
    send("p=/sys/class/tpm/tpm0");
    send(&format!("p=$p/pcr-sha256/{PCR}"));
    send("sleep 1");
    send("cat $p");
    s.push_str(&format!("expect (?m)^{ZERO}\\r?$\n"));
    s.push_str("send exit\nexpect shell exited\n");
    s
}

#[test]
fn guest_reboot_resets_the_tpm_pcrs() {
    let _boot = boot_lock();
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("tpm-reboot.script");
    std::fs::write(&script, reboot_script()).unwrap();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.smp = Some(1);
    o.script = Some(script);
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let console = &outcome.console;
    // Both boots really happened, and the extend really took effect before the
    // reset (the script waited for the extended value).
    assert!(
        console.contains("VM 'linux': resetting"),
        "the VM was not reset\n{tail}"
    );
    assert_eq!(
        console.matches("tpm_tis_spi spi0.0: 2.0 TPM").count(),
        2,
        "the TPM was not probed in both boots\n{tail}"
    );
    let after_extend = console.find(&format!("\n{EXTENDED}")).unwrap_or(usize::MAX);
    let reset = console.find("VM 'linux': resetting").unwrap_or(0);
    assert!(
        after_extend < reset,
        "PCR {PCR} was not extended before the reset\n{tail}"
    );
    assert!(
        console[reset..].contains(&format!("\n{ZERO}")),
        "PCR {PCR} is not zero after the reset\n{tail}"
    );
}

#[test]
fn extend_command_matches_the_tpm_spec_layout() {
    // 10-byte header, handle, 4-byte authorization size + 9-byte password
    // session, count, algorithm, 32-byte digest.
    let c = extend_command(PCR, &digest());
    assert_eq!(c.len(), 10 + 4 + 4 + 9 + 4 + 2 + 32);
    assert_eq!(
        u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize,
        c.len()
    );
    assert_eq!(&c[c.len() - 32..], &digest());
    assert!(reboot_script()
        .lines()
        .all(|l| !l.starts_with("send ") || l.len() <= "send ".len() + MAX_SEND));
}

/// TPM2_ReadClock (TPM 2.0 Part 3, §29.1): no handles, no sessions.
const READ_CLOCK: [u8; 10] = [0x80, 0x01, 0, 0, 0, 0x0a, 0, 0, 0x01, 0x81];

/// Guest command: print the TPM's resetCount from TPM2_ReadClock.
fn read_reset_count_cmd() -> String {
    format!(
        r#"t=/sys/class/tpm/tpm0; i=0
while [ ! -e $t ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
printf '{cmd}' > /tmp/c
exec 3<>/dev/tpm0; dd if=/tmp/c bs=4096 2>/dev/null >&3
echo "clock-rsp=$(dd bs=4096 count=1 2>/dev/null <&3 | xxd -p | tr -d '\n')"; exec 3>&-
"#,
        cmd = printf_escapes(&READ_CLOCK)
    )
}

/// resetCount from a ReadClock response: header (10), time (8), clock (8), then
/// resetCount (4), restartCount (4), safe (1).
fn reset_count(rsp_hex: &str) -> Option<u32> {
    let bytes: Vec<u8> = (0..rsp_hex.len() / 2)
        .map(|i| u8::from_str_radix(&rsp_hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes.len() != 35 || bytes[6..10] != [0, 0, 0, 0] {
        return None;
    }
    Some(u32::from_be_bytes(bytes[26..30].try_into().ok()?))
}

/// The TPM's NV image lives in the VM's record on the system disk: after a host
/// reboot the same TPM comes back, so its reset counter (bumped by every
/// Startup(CLEAR) after a power cycle) keeps counting instead of starting over.
#[test]
fn tpm_state_survives_host_reboots() {
    let _boot = boot_lock();
    let disk = Layout::detect().out.join("test-disks/tpm-nv.img");
    let mut counts = Vec::new();
    let mut issued = Vec::new();
    for boot_no in 0..2 {
        let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
        // Beside the authority partition (the default configuration).
        o.authority = true;
        o.system_disk = Some(disk.clone());
        o.fresh = boot_no == 0;
        o.guest_cmd = Some(read_reset_count_cmd());
        let outcome = boot(&o);
        let tail = console_tail(&outcome);
        assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
        let rsp = console_value(&outcome.console, "clock-rsp")
            .unwrap_or_default()
            .to_string();
        let count =
            reset_count(&rsp).unwrap_or_else(|| panic!("bad ReadClock response {rsp:?}\n{tail}"));
        counts.push(count);
        issued.push(outcome.console.contains(EK_CERTS_ISSUED));
    }
    println!("resetCount on two boots: {counts:?}");
    assert_eq!(
        counts[1],
        counts[0] + 1,
        "resetCount across a host reboot: {counts:?}"
    );
    // The TPM was certified once, when it was manufactured on the first boot.
    assert_eq!(issued, [true, false], "EK certificates issued on each boot");
    ek_certificates_chain_to_the_exported_ca(&disk);
}

/// The hypervisor's log line when it certifies a newly manufactured TPM's EKs.
const EK_CERTS_ISSUED: &str =
    "TPM: 5 EK certificate(s) issued by the system disk's vTPM manufacturer CA";

struct Counter(u8);
impl vtpm::Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}
struct Zero;
impl vtpm::TimeSource for Zero {
    fn now_ms(&self) -> u64 {
        0
    }
}

/// The EK certificates the hypervisor wrote into the VM's TPM NV image (read
/// from the system disk) verify with `openssl verify` against the CA
/// `cargo xtask disk tpm-ca` exports, and certify the EKs that TPM derives
/// from the default templates.
fn ek_certificates_chain_to_the_exported_ca(disk: &std::path::Path) {
    use registry::cli::FileDisk;
    use vtpm::ek::{pem, spki_of, EkKind};
    let ca_pem = xtask::sysdisk::tpm_ca_pem(disk).expect("disk tpm-ca");
    let mut d = FileDisk::open(disk, true).unwrap();
    let reg = registry::Registry::open(&mut d).unwrap();
    let rec = reg.vm_by_name(xtask::sysdisk::VM_NAME).unwrap();
    let image = registry::AbStore::new(rec.tpm_nv)
        .unwrap()
        .load(&mut d)
        .unwrap()
        .expect("the TPM NV image");
    let mut tpm = vtpm::Tpm::new(
        Box::new(Counter(0)),
        Box::new(Zero),
        Box::new(vtpm::MemNvStore {
            image: Some(image),
            writes: 0,
        }),
    )
    .unwrap();
    let dir = Layout::detect().out.join("test-disks/tpm-ek");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    for kind in EkKind::ALL {
        let der = tpm
            .ek_certificate(kind)
            .unwrap_or_else(|| panic!("no {kind:?} EK certificate in NV"))
            .to_vec();
        let cert = vtpm::ek::parse_certificate(&der).unwrap();
        let ek = tpm.ek_public(kind).unwrap();
        assert_eq!(
            cert.tbs_certificate.subject_public_key_info,
            spki_of(&ek).unwrap(),
            "{kind:?}: the certificate is for the TPM's EK"
        );
        let ek_file = dir.join(format!("{kind:?}.pem"));
        std::fs::write(&ek_file, pem("CERTIFICATE", &der)).unwrap();
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca_file)
            .arg(&ek_file)
            .output();
        match out {
            Err(_) => println!("openssl not installed: {kind:?} checked against the EK only"),
            Ok(o) => assert!(
                o.status.success(),
                "{kind:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }
}
