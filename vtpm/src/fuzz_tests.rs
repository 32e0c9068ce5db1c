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

pub(crate) fn check_response(cmd: &[u8], r: &[u8]) {
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

/// A started TPM with tier-2 state: a storage primary (0x80000000), a signing
/// primary (0x80000001), an HMAC session (0x02000000), a policy session
/// (0x03000001) and an NV index (0x01500000).
fn prepared_tpm() -> Tpm {
    use crate::marshal::Writer;
    let mut t = started_tpm();
    let primary = |attrs: u32, sym: bool, scheme: bool| {
        let mut p = Writer::new();
        p.u16(0x23).u16(0x0B).u32(attrs).tpm2b(&[]);
        if sym {
            p.u16(0x06).u16(128).u16(0x43);
        } else {
            p.u16(0x10);
        }
        if scheme {
            p.u16(0x18).u16(0x0B);
        } else {
            p.u16(0x10);
        }
        p.u16(0x03).u16(0x10).tpm2b(&[]).tpm2b(&[]);
        let mut w = Writer::new();
        w.tpm2b(&[0, 0, 0, 0]).tpm2b(&p.buf).tpm2b(&[]).u32(0);
        command(cc::CREATE_PRIMARY, &[handle::OWNER], &[b""], &w.buf)
    };
    let r = t.execute(0, &primary(0x0003_0072, true, false));
    assert_eq!(crate::tests::rc_of(&r), 0);
    let r = t.execute(0, &primary(0x0004_0072, false, true));
    assert_eq!(crate::tests::rc_of(&r), 0);
    for ty in [0u8, 1] {
        let mut w = Writer::new();
        w.tpm2b(&[1; 16])
            .tpm2b(&[])
            .u8(ty)
            .u16(0x06)
            .u16(128)
            .u16(0x43)
            .u16(0x0B);
        let r = t.execute(
            0,
            &command(
                cc::START_AUTH_SESSION,
                &[handle::NULL, handle::NULL],
                &[],
                &w.buf,
            ),
        );
        assert_eq!(crate::tests::rc_of(&r), 0);
    }
    let mut nvp = Writer::new();
    nvp.u32(0x0150_0000)
        .u16(0x0B)
        .u32(0x0006_0006)
        .tpm2b(&[])
        .u16(32);
    let mut w = Writer::new();
    w.tpm2b(b"nv").tpm2b(&nvp.buf);
    let r = t.execute(
        0,
        &command(cc::NV_DEFINE_SPACE, &[handle::OWNER], &[b""], &w.buf),
    );
    assert_eq!(crate::tests::rc_of(&r), 0);
    t
}

/// Tier-2 commands to mutate, against [`prepared_tpm`]'s state.
fn tier2_seeds() -> Vec<Vec<u8>> {
    use crate::marshal::Writer;
    let w = |f: &dyn Fn(&mut Writer)| {
        let mut w = Writer::new();
        f(&mut w);
        w.buf
    };
    // A command authorized by the HMAC session (a wrong HMAC: mutations probe
    // the session checks).
    let mut hmac_cmd = command(cc::GET_RANDOM, &[], &[], &[0, 8]);
    let mut s = Writer::new();
    s.u32(0x0200_0000).tpm2b(&[2; 32]).u8(0x41).tpm2b(&[3; 32]);
    hmac_cmd[0..2].copy_from_slice(&st::SESSIONS.to_be_bytes());
    let mut body = hmac_cmd[..10].to_vec();
    body.extend((s.len() as u32).to_be_bytes());
    body.extend(&s.buf);
    body.extend(&hmac_cmd[10..]);
    let n = body.len() as u32;
    body[2..6].copy_from_slice(&n.to_be_bytes());
    hmac_cmd = body;
    alloc::vec![
        hmac_cmd,
        command(cc::READ_PUBLIC, &[0x8000_0001], &[], &[]),
        command(
            cc::SIGN,
            &[0x8000_0001],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[5; 32])
                    .u16(0x18)
                    .u16(0x0B)
                    .u16(0x8024)
                    .u32(handle::NULL)
                    .tpm2b(&[]);
            })
        ),
        command(
            cc::VERIFY_SIGNATURE,
            &[0x8000_0001],
            &[],
            &w(&|w| {
                w.tpm2b(&[5; 32])
                    .u16(0x18)
                    .u16(0x0B)
                    .tpm2b(&[1; 32])
                    .tpm2b(&[2; 32]);
            })
        ),
        command(
            cc::QUOTE,
            &[0x8000_0001],
            &[b""],
            &w(&|w| {
                w.tpm2b(b"q")
                    .u16(0x10)
                    .u32(1)
                    .pcr_selection(crate::hash::HashAlg::Sha256, 3);
            })
        ),
        command(
            cc::CREATE,
            &[0x8000_0000],
            &[b""],
            &w(&|w| {
                let mut p = Writer::new();
                p.u16(0x08)
                    .u16(0x0B)
                    .u32(0x52)
                    .tpm2b(&[])
                    .u16(0x10)
                    .tpm2b(&[]);
                w.tpm2b(&[0, 0, 0, 2, b'h', b'i'])
                    .tpm2b(&p.buf)
                    .tpm2b(&[])
                    .u32(0);
            })
        ),
        command(
            cc::LOAD,
            &[0x8000_0000],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[0, 4, 1, 2, 3, 4, 9, 9])
                    .tpm2b(&[0, 8, 0, 0x0B, 0, 0, 0, 0x52, 0, 0]);
            })
        ),
        command(cc::CONTEXT_SAVE, &[0x8000_0001], &[], &[]),
        command(
            cc::CONTEXT_LOAD,
            &[],
            &[],
            &w(&|w| {
                w.u64(1)
                    .u32(0x8000_0000)
                    .u32(handle::OWNER)
                    .tpm2b(&[0, 2, 1, 2, 3]);
            })
        ),
        command(
            cc::POLICY_PCR,
            &[0x0300_0001],
            &[],
            &w(&|w| {
                w.tpm2b(&[])
                    .u32(1)
                    .pcr_selection(crate::hash::HashAlg::Sha256, 1);
            })
        ),
        command(
            cc::POLICY_OR,
            &[0x0300_0001],
            &[],
            &w(&|w| {
                w.u32(2).tpm2b(&[0; 32]).tpm2b(&[1; 32]);
            })
        ),
        command(
            cc::POLICY_SECRET,
            &[handle::OWNER, 0x0300_0001],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[]).tpm2b(&[]).tpm2b(&[]).u32(0);
            })
        ),
        command(
            cc::NV_WRITE,
            &[0x0150_0000, 0x0150_0000],
            &[b"nv"],
            &w(&|w| {
                w.tpm2b(b"data").u16(0);
            })
        ),
        command(
            cc::NV_READ,
            &[handle::OWNER, 0x0150_0000],
            &[b""],
            &[0, 4, 0, 0]
        ),
        command(
            cc::EVICT_CONTROL,
            &[handle::OWNER, 0x8000_0001],
            &[b""],
            &0x8100_0001u32.to_be_bytes()
        ),
        command(
            cc::ECDH_ZGEN,
            &[0x8000_0000],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[0, 1, 7, 0, 1, 8]);
            })
        ),
        command(
            cc::TEST_PARMS,
            &[],
            &[],
            &[0, 0x23, 0, 0x10, 0, 0x10, 0, 3, 0, 0x10]
        ),
        command(
            cc::DICTIONARY_ATTACK_PARAMETERS,
            &[handle::LOCKOUT],
            &[b""],
            &[0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 9]
        ),
        command(cc::HASH_SEQUENCE_START, &[], &[], &[0, 0, 0, 0x0B]),
        command(
            cc::CREATE_LOADED,
            &[0x8000_0000],
            &[b""],
            &w(&|w| {
                let mut p = Writer::new();
                p.u16(0x08)
                    .u16(0x0B)
                    .u32(0x52)
                    .tpm2b(&[])
                    .u16(0x10)
                    .tpm2b(&[]);
                w.tpm2b(&[0, 0, 0, 2, b'h', b'i']).tpm2b(&p.buf);
            })
        ),
        command(cc::ECC_PARAMETERS, &[], &[], &[0, 3]),
        command(cc::ECDH_KEY_GEN, &[0x8000_0000], &[], &[]),
        command(cc::INCREMENTAL_SELF_TEST, &[], &[], &[0, 0, 0, 1, 0, 0x0B]),
        command(cc::NV_GLOBAL_WRITE_LOCK, &[handle::OWNER], &[b""], &[]),
        // Tier 3: attestation, credentials, change of authValues.
        command(
            cc::CERTIFY,
            &[0x8000_0000, 0x8000_0001],
            &[b"", b""],
            &w(&|w| {
                w.tpm2b(b"q").u16(0x10);
            })
        ),
        command(
            cc::GET_TIME,
            &[handle::ENDORSEMENT, 0x8000_0001],
            &[b"", b""],
            &w(&|w| {
                w.tpm2b(b"t").u16(0x10);
            })
        ),
        command(
            cc::MAKE_CREDENTIAL,
            &[0x8000_0000],
            &[],
            &w(&|w| {
                let mut name = alloc::vec![0, 0x0B];
                name.extend([6u8; 32]);
                w.tpm2b(&[7; 32]).tpm2b(&name);
            })
        ),
        command(
            cc::CERTIFY_CREATION,
            &[0x8000_0001, 0x8000_0000],
            &[b""],
            &w(&|w| {
                w.tpm2b(b"q")
                    .tpm2b(&[1; 32])
                    .u16(0x10)
                    .u16(st::CREATION)
                    .u32(handle::OWNER)
                    .tpm2b(&[2; 48]);
            })
        ),
        command(
            cc::ACTIVATE_CREDENTIAL,
            &[0x8000_0001, 0x8000_0000],
            &[b"", b""],
            &w(&|w| {
                let mut blob = Writer::new();
                blob.tpm2b(&[3; 32]).tpm2b(&[4; 32]);
                let mut point = Writer::new();
                point.tpm2b(&[5; 32]).tpm2b(&[6; 32]);
                w.tpm2b(&blob.buf).tpm2b(&point.buf);
            })
        ),
        command(
            cc::OBJECT_CHANGE_AUTH,
            &[0x8000_0001, 0x8000_0000],
            &[b""],
            &w(&|w| {
                w.tpm2b(b"new");
            })
        ),
        command(cc::NV_CHANGE_AUTH, &[0x0150_0000], &[b"nv"], &[0, 1, b'x']),
        command(
            cc::POLICY_COUNTER_TIMER,
            &[0x0300_0001],
            &[],
            &w(&|w| {
                w.tpm2b(&[0; 8]).u16(8).u16(7);
            })
        ),
        command(
            cc::POLICY_NV,
            &[handle::OWNER, 0x0150_0000, 0x0300_0001],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[0; 4]).u16(0).u16(0);
            })
        ),
        command(
            cc::POLICY_SIGNED,
            &[0x8000_0001, 0x0300_0001],
            &[],
            &w(&|w| {
                w.tpm2b(&[])
                    .tpm2b(&[])
                    .tpm2b(b"ref")
                    .u32(0)
                    .u16(0x18)
                    .u16(0x0B)
                    .tpm2b(&[1; 32])
                    .tpm2b(&[2; 32]);
            })
        ),
        command(
            cc::POLICY_TICKET,
            &[0x0300_0001],
            &[],
            &w(&|w| {
                w.tpm2b(&[0, 0, 0, 0, 0, 1, 0, 0])
                    .tpm2b(&[])
                    .tpm2b(&[])
                    .tpm2b(&[0, 0x0B, 1, 2])
                    .u16(st::AUTH_SIGNED)
                    .u32(handle::OWNER)
                    .tpm2b(&[3; 48]);
            })
        ),
        command(
            cc::POLICY_AUTHORIZE_NV,
            &[handle::OWNER, 0x0150_0000, 0x0300_0001],
            &[b""],
            &[]
        ),
        command(
            cc::DUPLICATE,
            &[0x8000_0001, 0x8000_0000],
            &[b""],
            &w(&|w| {
                w.tpm2b(&[]).u16(0x06).u16(128).u16(0x43);
            })
        ),
        command(
            cc::IMPORT,
            &[0x8000_0000],
            &[b""],
            &w(&|w| {
                let mut p = Writer::new();
                p.u16(0x08)
                    .u16(0x0B)
                    .u32(0x40)
                    .tpm2b(&[])
                    .u16(0x10)
                    .tpm2b(&[9; 32]);
                let mut point = Writer::new();
                point.tpm2b(&[5; 32]).tpm2b(&[6; 32]);
                w.tpm2b(&[])
                    .tpm2b(&p.buf)
                    .tpm2b(&[0, 32, 1, 2, 3])
                    .tpm2b(&point.buf)
                    .u16(0x10);
            })
        ),
        command(
            cc::NV_CERTIFY,
            &[0x8000_0001, handle::OWNER, 0x0150_0000],
            &[b"", b""],
            &w(&|w| {
                w.tpm2b(b"q").u16(0x10).u16(4).u16(0);
            })
        ),
        command(
            cc::CLOCK_SET,
            &[handle::OWNER],
            &[b""],
            &0x0000_0100_0000_0000u64.to_be_bytes()
        ),
        command(cc::CHANGE_EPS, &[handle::PLATFORM], &[b""], &[]),
        command(cc::CHANGE_PPS, &[handle::PLATFORM], &[b""], &[]),
        command(
            cc::NV_UNDEFINE_SPACE_SPECIAL,
            &[0x0150_0000, handle::PLATFORM],
            &[b"nv", b""],
            &[]
        ),
        command(
            cc::REWRAP,
            &[handle::NULL, 0x8000_0000],
            &[b""],
            &w(&|w| {
                let mut name = alloc::vec![0, 0x0B];
                name.extend([6u8; 32]);
                w.tpm2b(&[1, 2, 3, 4]).tpm2b(&name).tpm2b(&[]);
            })
        ),
        command(cc::POLICY_NAME_HASH, &[0x0300_0001], &[], &{
            let mut w = Writer::new();
            w.tpm2b(&[1; 32]);
            w.buf
        }),
        command(cc::POLICY_NV_WRITTEN, &[0x0300_0001], &[], &[1]),
        command(cc::POLICY_TEMPLATE, &[0x0300_0001], &[], &{
            let mut w = Writer::new();
            w.tpm2b(&[2; 32]);
            w.buf
        }),
        command(
            cc::POLICY_DUPLICATION_SELECT,
            &[0x0300_0001],
            &[],
            &w(&|w| {
                let mut name = alloc::vec![0, 0x0B];
                name.extend([6u8; 32]);
                w.tpm2b(&name).tpm2b(&name).u8(1);
            })
        ),
        command(cc::POLICY_PHYSICAL_PRESENCE, &[0x0300_0001], &[], &[]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_tier2_commands_never_panic(
        seed in 0usize..64,
        flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<u16>()),
        fix_size in any::<bool>(),
    ) {
        let seeds = tier2_seeds();
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
        let mut t = prepared_tpm();
        let r = t.execute(0, &c);
        check_response(&c, &r);
        let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]));
        check_response(&[], &r);
    }
}

/// The tier-2 seeds reach their handlers' success paths unmutated (so the
/// mutations start from deep inside them).
#[test]
fn tier2_seeds_mostly_succeed() {
    let seeds = tier2_seeds();
    // Before the twenty-five tier-3 seeds: TPM2_CreateLoaded, TPM2_ECC_Parameters,
    // TPM2_ECDH_KeyGen, TPM2_IncrementalSelfTest and TPM2_NV_GlobalWriteLock;
    // of the tier-3 ones, TPM2_Certify, TPM2_GetTime, TPM2_MakeCredential
    // TPM2_PolicyCounterTimer, TPM2_ClockSet, TPM2_ChangeEPS, TPM2_ChangePPS
    // TPM2_Rewrap (from TPM_RH_NULL to the storage primary) and the five
    // policy assertions PolicyNameHash … PolicyPhysicalPresence (the others need a ticket, a credential, a signature, a
    // written index or a policy session the mutations have to find).
    let n = seeds.len() - 25;
    let new = [
        n - 5,
        n - 4,
        n - 3,
        n - 2,
        n - 1,
        n,
        n + 1,
        n + 2,
        n + 7,
        n + 15,
        n + 16,
        n + 17,
        n + 19,
        n + 20,
        n + 21,
        n + 22,
        n + 23,
        n + 24,
    ];
    for i in [1usize, 2, 4, 5, 7, 9, 10, 12, 14, 16, 17, 18]
        .into_iter()
        .chain(new)
    {
        let mut t = prepared_tpm();
        let r = t.execute(0, &seeds[i]);
        assert_eq!(crate::tests::rc_of(&r), 0, "seed {i}: {r:02x?}");
    }
}
