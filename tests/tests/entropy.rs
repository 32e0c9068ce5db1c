//! Where guest randomness comes from, on CPUs with and without RNDR (FEAT_RNG).
//! Under `-cpu cortex-a72` (Armv8.0, like Neoverse N1/Ampere Altra: no RNDR) and
//! QEMU's firmware-less PSCI (no SMCCC TRNG) the hypervisor must take the seed
//! QEMU puts in the device tree's `/chosen/rng-seed`; the guest then has a working
//! /dev/hwrng and TPM. With that seed removed too (`-M virt,dtb-randomness=off`)
//! there is no source: the hypervisor says so, the VM gets neither TPM nor
//! virtio-rng, and it still boots.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use xtask::run::{Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(180);
/// A CPU without FEAT_RNG that QEMU can run at EL2 with a GICv3.
const CPU_WITHOUT_RNDR: &str = "cortex-a72";

/// TPM2_GetRandom(16), no sessions (TPM 2.0 Part 3, §16.1), as printf escapes.
const GET_RANDOM_16: &str = r"\x80\x01\x00\x00\x00\x0c\x00\x00\x01\x7b\x00\x10";
/// The start of its success response: TPM_ST_NO_SESSIONS, size 28, TPM_RC_SUCCESS,
/// a 16-byte TPM2B (the random bytes follow).
const GET_RANDOM_OK: &str = "80010000001c000000000010";

/// Guest command: which hwrng backs /dev/hwrng and whether two reads differ, how
/// many TPMs there are (waiting up to 60 s for `/dev/tpm0` when the device tree
/// has a TPM node), and two TPM2_GetRandom responses from /dev/tpm0.
fn probe_cmd() -> String {
    format!(
        r#"echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"
if head -c 64 /dev/hwrng > /tmp/a 2>/dev/null && head -c 64 /dev/hwrng > /tmp/b 2>/dev/null; then
  cmp -s /tmp/a /tmp/b && echo hwrng=repeats || echo hwrng=differs
else echo hwrng=unreadable; fi
i=0; [ -z "$(find /sys/firmware/devicetree/base -name 'tpm@*')" ] || while [ ! -e /dev/tpm0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "tpms=$(ls /sys/class/tpm | wc -l)"
if [ -e /dev/tpm0 ]; then
  printf '{GET_RANDOM_16}' > /tmp/c
  for n in 1 2; do
    exec 3<>/dev/tpm0; dd if=/tmp/c bs=64 2>/dev/null >&3
    echo "getrandom$n=$(dd bs=64 count=1 2>/dev/null <&3 | xxd -p | tr -d '\n')"; exec 3>&-
  done
fi
"#
    )
}

fn options(disk: &str, qemu_args: &[&str]) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.system_disk = Some(Layout::detect().out.join(disk));
    o.smp = Some(1);
    o.qemu_args = qemu_args.iter().map(|s| s.to_string()).collect();
    o.guest_cmd = Some(probe_cmd());
    o
}

/// Checks that the guest's hwrng is virtio-rng and gives fresh bytes, and that its
/// TPM answers GetRandom with two different 16-byte values.
fn assert_guest_has_entropy_and_a_tpm(c: &str, tail: &str) {
    assert_eq!(console_value(c, "rng"), Some("virtio_rng.0"), "\n{tail}");
    assert_eq!(console_value(c, "hwrng"), Some("differs"), "\n{tail}");
    assert_eq!(console_value(c, "tpms"), Some("1"), "\n{tail}");
    let r1 = console_value(c, "getrandom1").unwrap_or_default();
    let r2 = console_value(c, "getrandom2").unwrap_or_default();
    for r in [r1, r2] {
        assert!(
            r.starts_with(GET_RANDOM_OK) && r.len() == GET_RANDOM_OK.len() + 32,
            "TPM2_GetRandom failed: {r:?}\n{tail}"
        );
    }
    assert_ne!(r1, r2, "two TPM2_GetRandom answers were equal\n{tail}");
}

#[test]
fn without_rndr_the_device_tree_seed_feeds_hwrng_and_the_tpm() {
    let _boot = boot_lock();
    let o = options(
        "test-disks/entropy-dt-seed.img",
        &["-cpu", CPU_WITHOUT_RNDR],
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    assert!(
        c.contains("entropy: from the device tree's /chosen rng-seed"),
        "the device-tree seed was not chosen\n{tail}"
    );
    assert!(!c.contains("no entropy source"), "\n{tail}");
    assert_guest_has_entropy_and_a_tpm(c, &tail);
}

#[test]
fn with_rndr_the_cpu_is_the_source() {
    let _boot = boot_lock();
    // QEMU's default CPU for the tests (`max`) has FEAT_RNG; the device-tree seed
    // is there too but RNDR comes first.
    let o = options("test-disks/entropy-rndr.img", &[]);
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    assert!(
        c.contains("entropy: from the CPU's RNDR (FEAT_RNG)"),
        "RNDR was not chosen\n{tail}"
    );
    assert_guest_has_entropy_and_a_tpm(c, &tail);
}

#[test]
fn with_no_source_the_vm_boots_without_tpm_or_virtio_rng() {
    let _boot = boot_lock();
    let o = options(
        "test-disks/entropy-none.img",
        &["-cpu", CPU_WITHOUT_RNDR, "-M", "dtb-randomness=off"],
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    for line in [
        "entropy: no source (no RNDR, no SMCCC TRNG, device-tree seed 0 bytes of the 32 needed)",
        "no entropy source: the VM gets no TPM",
        "no entropy source: the VM gets no virtio-rng",
    ] {
        assert!(c.contains(line), "missing log line `{line}`\n{tail}");
    }
    assert!(!c.contains("entropy: from"), "\n{tail}");
    // The guest booted and ran its command, with no hwrng backend and no TPM.
    assert_eq!(console_value(c, "rng"), Some("none"), "\n{tail}");
    assert_eq!(console_value(c, "hwrng"), Some("unreadable"), "\n{tail}");
    assert_eq!(console_value(c, "tpms"), Some("0"), "\n{tail}");
    assert!(!c.contains("tpm_tis_spi spi0.0"), "\n{tail}");
    assert_eq!(console_value(c, "getrandom1"), None, "\n{tail}");
}
