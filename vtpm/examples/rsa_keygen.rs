//! Times `vtpm::rsa_key::generate` for RSA 2048 and 3072 keys from a few fixed
//! candidate streams (SHA-256 of a counter and a seed), and counts how many
//! candidates each prime search drew and how many of them reached the
//! Miller-Rabin test: those with no odd prime factor below 54 (what
//! `num_bigint_dig::prime::probably_prime` trial-divides by itself) and those
//! that also survive the module's sieve (no odd prime factor below
//! `SIEVE_BOUND`, and p − 1 coprime to e).
//!
//! `cargo run --release -p vtpm --example rsa_keygen [SEEDS [BITS]]` (default 4
//! seeds, 2048 and 3072 bits).
//! A measurement aid for `docs/architecture.md`, not a test: it prints figures
//! and asserts nothing about them.

use num_bigint_dig::BigUint;
use sha2::{Digest, Sha256};
use std::time::Instant;
use vtpm::rsa_key;

/// The exponent of the default key (an `exponent` field of 0).
const E: u32 = 65537;

/// The candidate stream of seed `seed`, recording each candidate it hands out.
fn stream(seed: u32, drawn: &mut Vec<Vec<u8>>) -> impl FnMut(usize) -> Vec<u8> + '_ {
    let mut counter = 0u32;
    move |n| {
        let mut out = Vec::new();
        while out.len() < n {
            counter += 1;
            let mut h = Sha256::new();
            h.update(counter.to_be_bytes());
            h.update(seed.to_be_bytes());
            out.extend_from_slice(&h.finalize());
        }
        out.truncate(n);
        drawn.push(out.clone());
        out
    }
}

fn odd_primes_below(bound: u32) -> Vec<u32> {
    (3..bound)
        .step_by(2)
        .filter(|&n| {
            (3..)
                .step_by(2)
                .take_while(|d| d * d <= n)
                .all(|d| n % d != 0)
        })
        .collect()
}

/// How many of `drawn` (as the generator shapes them: top two bits and the
/// low bit set) reach Miller-Rabin in the old path and after the sieve.
fn mr_entries(drawn: &[Vec<u8>], small: &[u32], big: &[u32]) -> (usize, usize) {
    let (mut old, mut new) = (0, 0);
    for c in drawn {
        let mut c = c.clone();
        c[0] |= 0xC0;
        *c.last_mut().unwrap() |= 1;
        let x = BigUint::from_bytes_be(&c);
        let free_of = |ps: &[u32]| ps.iter().all(|&p| &x % p != BigUint::from(0u32));
        if free_of(small) {
            old += 1;
            let xm1 = &x - 1u32;
            if free_of(big) && &xm1 % E != BigUint::from(0u32) {
                new += 1;
            }
        }
    }
    (old, new)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seeds: u32 = args
        .next()
        .map(|s| s.parse().expect("a number of seeds"))
        .unwrap_or(4);
    let sizes: Vec<u16> = match args.next() {
        Some(b) => vec![b.parse().expect("a key size")],
        None => vec![2048, 3072],
    };
    let small = odd_primes_below(54);
    let big = odd_primes_below(rsa_key::SIEVE_BOUND as u32);
    println!("bits seed   ms  drawn  mr-old  mr-new");
    for bits in sizes {
        let mut total = 0f64;
        let (mut t_drawn, mut t_old, mut t_new) = (0, 0, 0);
        for seed in 0..seeds {
            let mut drawn = Vec::new();
            let start = Instant::now();
            let key = rsa_key::generate(bits, 0, &mut stream(seed, &mut drawn));
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let (n, _) = key.expect("an implemented size");
            total += ms;
            let (old, new) = mr_entries(&drawn, &small, &big);
            (t_drawn, t_old, t_new) = (t_drawn + drawn.len(), t_old + old, t_new + new);
            println!(
                "{bits} {seed:4} {ms:5.0} {:6} {old:7} {new:7}  n[0..4]={:02x?}",
                drawn.len(),
                &n[..4]
            );
        }
        println!(
            "{bits} mean {:5.0} {:6} {:7} {:7}",
            total / f64::from(seeds),
            t_drawn / seeds as usize,
            t_old / seeds as usize,
            t_new / seeds as usize
        );
    }
}
