//! Fuzz-style property tests: random and mutated command bytes never panic the
//! engine and always get a well-formed response; random MMIO traffic never
//! panics the TIS or CRB front ends.

extern crate std;

use crate::defs::{cc, handle, st, su};
use crate::engine::Tpm;
use crate::tests::{command, new_tpm, startup, SharedNv, TestClock};
use alloc::vec::Vec;
use proptest::prelude::*;
use vdev::{AccessSize, MmioContext, MmioDevice, NullInterrupts, VecMemory};

fn check_response(cmd: &[u8], r: &[u8]) {
    assert!(r.len() >= 10, "short response to {cmd:02x?}");
    let size = u32::from_be_bytes(r[2..6].try_into().unwrap()) as usize;
    assert_eq!(size, r.len());
    let tag = u16::from_be_bytes([r[0], r[1]]);
    let code = u32::from_be_bytes(r[6..10].try_into().unwrap());
    if code != 0 {
        assert_eq!(r.len(), 10);
        assert!(tag == st::NO_SESSIONS || tag == st::RSP_COMMAND);
    } else {
        assert!(tag == st::NO_SESSIONS || tag == st::SESSIONS);
        assert!(r.len() <= crate::defs::limits::MAX_RESPONSE_SIZE);
    }
}

fn started_tpm() -> Tpm {
    let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    t
}

/// Valid commands to mutate, covering every handler.
fn seeds() -> Vec<Vec<u8>> {
    let mut ev = Vec::from(3u16.to_be_bytes());
    ev.extend(b"abc");
    let mut ext = Vec::from(1u32.to_be_bytes());
    ext.extend(0x000Bu16.to_be_bytes());
    ext.extend([9u8; 32]);
    alloc::vec![
        command(cc::GET_RANDOM, &[], &[], &[0, 16]),
        command(
            cc::GET_CAPABILITY,
            &[],
            &[],
            &[0, 0, 0, 6, 0, 0, 1, 0, 0, 0, 0, 64]
        ),
        command(
            cc::PCR_READ,
            &[],
            &[],
            &[0, 0, 0, 1, 0, 0x0B, 3, 0xFF, 0xFF, 0xFF]
        ),
        command(cc::PCR_EXTEND, &[7], &[b""], &ext),
        command(cc::PCR_EVENT, &[8], &[b""], &ev),
        command(cc::PCR_RESET, &[16], &[b""], &[]),
        command(
            cc::PCR_ALLOCATE,
            &[handle::PLATFORM],
            &[b""],
            &[0, 0, 0, 1, 0, 4, 3, 0xFF, 0xFF, 0xFF]
        ),
        command(
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            &[b""],
            &[0, 1, 7]
        ),
        command(
            cc::HIERARCHY_CONTROL,
            &[handle::PLATFORM],
            &[b""],
            &[0x40, 0, 0, 1, 1]
        ),
        command(cc::HASH, &[], &[], &[0, 1, 0x41, 0, 0x0B, 0x40, 0, 0, 1]),
        command(cc::STIR_RANDOM, &[], &[], &[0, 1, 2]),
        command(cc::SHUTDOWN, &[], &[], &[0, 1]),
        command(cc::READ_CLOCK, &[], &[], &[]),
        command(cc::FLUSH_CONTEXT, &[], &[], &[0x80, 0, 0, 0]),
        command(cc::SELF_TEST, &[], &[], &[1]),
        command(cc::GET_TEST_RESULT, &[], &[], &[]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_get_well_formed_errors(bytes in proptest::collection::vec(any::<u8>(), 0..64), loc in 0u8..6) {
        let mut t = started_tpm();
        let r = t.execute(loc, &bytes);
        check_response(&bytes, &r);
    }

    #[test]
    fn mutated_commands_never_panic(
        seed in 0usize..16,
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<u16>()),
        fix_size in any::<bool>(),
        loc in 0u8..5,
    ) {
        let seeds = seeds();
        let mut c = seeds[seed % seeds.len()].clone();
        for (at, x) in flips {
            let n = c.len();
            c[at as usize % n] ^= x;
        }
        if let Some(cut) = cut {
            c.truncate(cut as usize % (c.len() + 1));
        }
        if fix_size && c.len() >= 6 {
            let n = c.len() as u32;
            c[2..6].copy_from_slice(&n.to_be_bytes());
        }
        let mut t = started_tpm();
        let r = t.execute(loc, &c);
        check_response(&c, &r);
        // The TPM still works afterwards.
        let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]));
        check_response(&[], &r);
    }

    #[test]
    fn random_mmio_traffic_never_panics(ops in proptest::collection::vec((any::<bool>(), 0u64..0x5100, 0u8..4, any::<u64>()), 0..200)) {
        let mut tis = crate::tis::Tis::new(started_tpm(), Some(5));
        let mut crb = crate::crb::Crb::new(started_tpm(), 0x0C00_0000, Some(6));
        let mut mem = VecMemory::new(0, 0);
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext { vcpu: 0, mem: &mut mem, irq: &mut irq };
        for (write, off, sz, v) in ops {
            let size = AccessSize::from_log2(sz).unwrap();
            for dev in [&mut tis as &mut dyn MmioDevice, &mut crb] {
                if write {
                    let _ = dev.write(&mut ctx, off, size, v);
                } else {
                    let _ = dev.read(&mut ctx, off, size);
                }
            }
        }
    }
}
