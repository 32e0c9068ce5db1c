//! virtio-console tests through the MMIO transport.

extern crate std;

use std::sync::{Arc, Mutex};

use super::*;
use crate::defs::mmio;
use crate::testing::TestDriver;
use vdev::AccessSize;

fn console() -> (TestDriver<Console>, Arc<Mutex<Vec<u8>>>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    let dev = Console::new(Box::new(move |b: &[u8]| {
        sink.lock().unwrap().extend_from_slice(b)
    }));
    let mut d = TestDriver::new(dev, 1 << 20);
    d.start(0);
    (d, out)
}

#[test]
fn guest_output_reaches_the_sink() {
    let (mut d, out) = console();
    let a = d.alloc(6, 1);
    let b = d.alloc(6, 1);
    d.write_mem(a, b"hello ");
    d.write_mem(b, b"world!");
    let head = d.add_chain(console::TRANSMITQ, &[(a, 6, false), (b, 6, false)]);
    d.notify(console::TRANSMITQ);
    assert_eq!(d.pop_used(console::TRANSMITQ), Some((u32::from(head), 0)));
    assert_eq!(&out.lock().unwrap()[..], b"hello world!");
    assert!(d.irq_level());
}

#[test]
fn host_input_fills_receive_buffers() {
    let (mut d, _) = console();
    // Input before the guest posts buffers waits.
    assert_eq!(d.transport.device_mut().push_input(b"abcdefghij"), 10);
    d.poll();
    assert_eq!(d.transport.device().pending_input(), 10);
    let r1 = d.alloc(4, 1);
    let r2 = d.alloc(64, 1);
    let h1 = d.add_chain(console::RECEIVEQ, &[(r1, 4, true)]);
    let h2 = d.add_chain(console::RECEIVEQ, &[(r2, 64, true)]);
    d.notify(console::RECEIVEQ);
    assert_eq!(d.pop_used(console::RECEIVEQ), Some((u32::from(h1), 4)));
    assert_eq!(d.pop_used(console::RECEIVEQ), Some((u32::from(h2), 6)));
    assert_eq!(d.read_mem(r1, 4), b"abcd");
    assert_eq!(d.read_mem(r2, 6), b"efghij");
    assert!(d.irq_level());
    d.ack_interrupts();
    // Input after buffers are posted is delivered on poll.
    let r3 = d.alloc(16, 1);
    let h3 = d.add_chain(console::RECEIVEQ, &[(r3, 16, true)]);
    d.notify(console::RECEIVEQ);
    assert_eq!(d.pop_used(console::RECEIVEQ), None);
    assert!(!d.irq_level());
    d.transport.device_mut().push_input(b"xyz");
    d.poll();
    assert_eq!(d.pop_used(console::RECEIVEQ), Some((u32::from(h3), 3)));
    assert_eq!(d.read_mem(r3, 3), b"xyz");
    assert!(d.irq_level());
}

#[test]
fn input_is_bounded() {
    let (mut d, _) = console();
    let big = alloc::vec![b'x'; INPUT_CAPACITY + 10];
    assert_eq!(d.transport.device_mut().push_input(&big), INPUT_CAPACITY);
    assert_eq!(d.transport.device_mut().push_input(b"y"), 0);
}

#[test]
fn emergency_write_and_config() {
    let (mut d, out) = console();
    assert_ne!(d.device_features() & console::F_EMERG_WRITE, 0);
    assert_eq!(d.try_read(mmio::CONFIG + 4, AccessSize::Word), Ok(1));
    d.try_write(mmio::CONFIG + 8, AccessSize::Word, u64::from(b'!'))
        .unwrap();
    assert_eq!(&out.lock().unwrap()[..], b"!");
}

#[test]
fn vm_reset_drops_input_queued_for_the_old_guest() {
    use vdev::MmioDevice;
    let (mut d, _) = console();
    d.transport.device_mut().push_input(b"old");
    MmioDevice::reset(&mut d.transport, &mut d.irq);
    assert_eq!(d.transport.device().pending_input(), 0);
    assert!(!d.irq_level());
    // A driver reset (Status = 0) keeps host input, as before.
    d.queues.clear();
    d.start(0);
    d.transport.device_mut().push_input(b"new");
    d.write_reg(mmio::STATUS, 0);
    assert_eq!(d.transport.device().pending_input(), 3);
}
