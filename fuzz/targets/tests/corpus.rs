//! Replays the fuzz corpus on the stable toolchain, as part of `cargo test`: every
//! file of `fuzz/corpus/NAME/` (the seeds and what long runs added) and of
//! `fuzz/regressions/NAME/` (inputs that once broke an invariant) goes through target
//! NAME's body, the same function the libFuzzer binary calls. A panic names the file.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs every corpus and regression file of `name`; the corpus must not be empty.
fn replay(name: &str) {
    let t = fuzz_targets::target(name).expect("no such target");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds no seeds");
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    for f in corpus.iter().chain(&regressions) {
        let data = std::fs::read(f).expect("unreadable corpus file");
        let r = std::panic::catch_unwind(|| (t.run)(&data));
        assert!(r.is_ok(), "{name}: {} broke an invariant", f.display());
    }
}

#[test]
fn every_target_has_a_replay() {
    // The tests below, by name: a target added without one fails here.
    let replayed = [
        "virtio_mmio",
        "virtio_gpu",
        "vgic_mmio",
        "tpm_dispatch",
        "tis",
        "crb",
        "nv_image",
        "registry",
        "boot_bundle",
        "fw_cfg",
        "cfi_flash",
        "nvme",
        "pci_config",
        "input_script",
        "virtio_pci",
        "gic_its",
        "xhci",
    ];
    let names: Vec<&str> = fuzz_targets::TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(names, replayed);
}

#[test]
fn virtio_mmio() {
    replay("virtio_mmio");
}

#[test]
fn virtio_gpu() {
    replay("virtio_gpu");
}

#[test]
fn vgic_mmio() {
    replay("vgic_mmio");
}

#[test]
fn tpm_dispatch() {
    replay("tpm_dispatch");
}

#[test]
fn tis() {
    replay("tis");
}

#[test]
fn crb() {
    replay("crb");
}

#[test]
fn nv_image() {
    replay("nv_image");
}

#[test]
fn registry() {
    replay("registry");
}

#[test]
fn boot_bundle() {
    replay("boot_bundle");
}

#[test]
fn fw_cfg() {
    replay("fw_cfg");
}

#[test]
fn cfi_flash() {
    replay("cfi_flash");
}

#[test]
fn nvme() {
    replay("nvme");
}

#[test]
fn pci_config() {
    replay("pci_config");
}

#[test]
fn input_script() {
    replay("input_script");
}

#[test]
fn virtio_pci() {
    replay("virtio_pci");
}

#[test]
fn xhci() {
    replay("xhci");
}

#[test]
fn gic_its() {
    replay("gic_its");
}
