#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::gic_its::run(data));
