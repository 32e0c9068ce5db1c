//! Writes the seed corpus: `cargo run -p fuzz-targets --example seeds -- DIR [DISK.img ...]`
//! puts each target's seeds in `DIR/NAME/seed-*`; every system-disk image given
//! (made with `cargo xtask disk`) adds registry seeds.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: seeds DIR [DISK.img ...]");
        std::process::exit(2);
    };
    for t in fuzz_targets::TARGETS {
        let d = dir.join(t.name);
        std::fs::create_dir_all(&d)?;
        for (name, bytes) in fuzz_targets::seeds::seeds(t.name) {
            std::fs::write(d.join(format!("seed-{name}")), bytes)?;
        }
    }
    for (i, img) in args.enumerate() {
        let image = std::fs::read(&img)?;
        let d = dir.join("registry");
        for (j, bytes) in fuzz_targets::seeds::registry_image(&image)
            .iter()
            .enumerate()
        {
            std::fs::write(d.join(format!("seed-disk{i}-{j}")), bytes)?;
        }
    }
    Ok(())
}
