//! The reference authority partition's image (`guests/authority`), booted as an
//! ordinary guest — el2 does not load it as the authority partition yet: its boot
//! code, PL011 console and `HVC #0` work, and el2 refuses it the authority ABI,
//! as it must refuse every guest that is not the authority partition (the shell
//! itself is host-tested in the `authority` crate).

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
