//! The virtio devices every Linux guest gets besides its disk: virtio-rng (entropy
//! from the CPU's RNDR) and a virtio console whose output reaches the host console.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(120);
const SYSTEM_DISK: &str = "test-disks/virtio-devices.img";

#[test]
fn guest_sees_entropy_and_a_virtio_console() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(
        "cat /sys/bus/virtio/devices/*/device | sort | tr '\\n' ' ' | sed 's/^/ids=/'; echo; \
         echo rng=$(cat /sys/class/misc/hw_random/rng_current); \
         head -c 64 /dev/hwrng > /tmp/a; head -c 64 /dev/hwrng > /tmp/b; \
         cmp -s /tmp/a /tmp/b && echo rng-repeats || echo rng-differs; \
         echo from-the-virtio-console > /dev/hvc0"
            .into(),
    );
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("could not boot: {e}"));
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    // Device IDs: 2 = block, 3 = console, 4 = entropy.
    assert!(
        c.contains("ids=0x0002 0x0003 0x0004"),
        "virtio devices missing\n{tail}"
    );
    assert!(
        c.contains("rng=virtio_rng"),
        "hwrng is not backed by virtio-rng\n{tail}"
    );
    assert!(
        c.contains("rng-differs"),
        "two reads of the entropy device were equal\n{tail}"
    );
    assert!(
        c.lines().any(|l| l.trim_end() == "from-the-virtio-console"),
        "virtio console output did not reach the host console\n{tail}"
    );
}
