//! virtio-rng tests through the MMIO transport.

use super::*;
use crate::testing::TestDriver;

/// Yields 1, 2, 3, … and fails once `fail_after` bytes were produced.
struct Counter {
    next: u8,
    left: usize,
}

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        if buf.len() > self.left {
            return Err(EntropyError);
        }
        self.left -= buf.len();
        for b in buf {
            self.next = self.next.wrapping_add(1);
            *b = self.next;
        }
        Ok(())
    }
}

fn rng(left: usize) -> TestDriver<Rng> {
    let mut d = TestDriver::new(Rng::new(Box::new(Counter { next: 0, left })), 1 << 20);
    d.start(0);
    d
}

#[test]
fn fills_every_writable_segment() {
    let mut d = rng(usize::MAX);
    let a = d.alloc(5, 1);
    let b = d.alloc(300, 1);
    let head = d.add_chain(0, &[(a, 5, true), (b, 300, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((u32::from(head), 305)));
    assert_eq!(d.read_mem(a, 5), [1, 2, 3, 4, 5]);
    assert_eq!(d.read_mem(b, 2), [6, 7]);
    assert_eq!(d.read_mem(b + 299, 1), [(305 % 256) as u8]);
}

#[test]
fn large_requests_are_capped() {
    let mut d = rng(usize::MAX);
    let a = d.alloc(MAX_BYTES_PER_REQUEST + 4096, 1);
    d.add_chain(0, &[(a, MAX_BYTES_PER_REQUEST as u32 + 4096, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((0, MAX_BYTES_PER_REQUEST as u32)));
    assert_eq!(d.read_mem(a + MAX_BYTES_PER_REQUEST, 1), [0]);
}

#[test]
fn failing_source_and_readable_only_chains_complete_empty() {
    let mut d = rng(0);
    let a = d.alloc(16, 1);
    d.add_chain(0, &[(a, 16, true)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((0, 0)));
    assert_eq!(d.read_mem(a, 16), [0; 16]);
    let mut d = rng(usize::MAX);
    d.add_chain(0, &[(a, 16, false)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((0, 0)));
    assert!(!d.transport.needs_reset());
}
