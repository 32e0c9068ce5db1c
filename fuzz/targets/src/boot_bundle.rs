//! `boot_bundle`: the boot bundle (a newc cpio of `vm.cfg`, `kernel`, `initrd`) that
//! hands VM definitions to the hypervisor, through `vmspec::parse_bundle`.
//!
//! Invariant: a bundle that parses is written back by `vmspec::write_bundle` as one
//! that parses to the same definition.

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(spec) = vmspec::parse_bundle(data) else {
        return;
    };
    let bytes = vmspec::write_bundle(&spec);
    assert_eq!(
        vmspec::parse_bundle(&bytes).as_ref(),
        Ok(&spec),
        "bundle write/parse round trip"
    );
}
