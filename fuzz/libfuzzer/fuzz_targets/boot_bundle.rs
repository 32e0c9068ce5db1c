#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::boot_bundle::run(data));
