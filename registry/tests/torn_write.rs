//! Property test: random sequences of registry updates, each subjected to a
//! simulated power cut during its metadata write — only the first `k` 512-byte
//! blocks of the slot write land, for every `k` — must always reload to the last
//! committed state: the previous one if the write was cut short, the new one if all
//! of it landed. Never a mix, never an error.

use proptest::prelude::*;
use registry::defs::{BLOCK_SIZE, DATA_OFFSET, SLOT_A_OFFSET};
use registry::{
    BootSpec, DeviceModel, DiskSpec, ExtentRole, MemDisk, Policy, Registry, Uuid, VmSpec,
};
use vdev::{BlockBackend, BlockError};

/// What the disk does with the next write to the metadata region.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Writes land; the length of the last metadata write is recorded.
    Record,
    /// The next metadata write lands only its first `k` blocks, then power is lost.
    Tear(usize),
    /// Power lost: every write and flush fails.
    Dead,
}

#[derive(Clone)]
struct TornDisk {
    inner: MemDisk,
    mode: Mode,
    last_meta_blocks: usize,
}

impl TornDisk {
    fn new(inner: MemDisk, mode: Mode) -> TornDisk {
        TornDisk {
            inner,
            mode,
            last_meta_blocks: 0,
        }
    }
}

/// Every access the registry makes is whole 512-byte blocks, as block drivers need.
fn assert_aligned(offset: u64, len: usize) {
    assert_eq!(offset % BLOCK_SIZE, 0, "unaligned offset {offset:#x}");
    assert_eq!(len as u64 % BLOCK_SIZE, 0, "partial-block length {len}");
}

fn is_metadata(offset: u64) -> bool {
    (SLOT_A_OFFSET..DATA_OFFSET).contains(&offset)
}

impl BlockBackend for TornDisk {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        assert_aligned(offset, buf.len());
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        assert_aligned(offset, data.len());
        match self.mode {
            Mode::Dead => Err(BlockError::Io),
            Mode::Tear(k) if is_metadata(offset) => {
                let n = (k * BLOCK_SIZE as usize).min(data.len());
                self.inner.write_at(offset, &data[..n])?;
                self.mode = Mode::Dead;
                Err(BlockError::Io)
            }
            _ => {
                if is_metadata(offset) {
                    self.last_meta_blocks = data.len() / BLOCK_SIZE as usize;
                }
                self.inner.write_at(offset, data)
            }
        }
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        match self.mode {
            Mode::Dead => Err(BlockError::Io),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add {
        seed: u8,
        disks: Vec<u32>,
        kernel: u32,
        uefi: bool,
    },
    SetPolicy {
        pick: usize,
        bits: u8,
    },
    Rename {
        pick: usize,
        seed: u8,
    },
    StoreKernel {
        pick: usize,
        len: u32,
        fill: u8,
    },
    Remove {
        pick: usize,
    },
    /// The hypervisor's boot-time commit: the VM's start counter goes up by one.
    Start {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), prop::collection::vec(1u32..40_000, 0..3), 1u32..20_000, any::<bool>())
            .prop_map(|(seed, disks, kernel, uefi)| Op::Add { seed, disks, kernel, uefi }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, bits)| Op::SetPolicy { pick, bits }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(pick, seed)| Op::Rename { pick, seed }),
        1 => (any::<usize>(), 0u32..20_000, any::<u8>()).prop_map(|(pick, len, fill)| Op::StoreKernel { pick, len, fill }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Start { pick }),
    ]
}

fn pick(reg: &Registry, i: usize) -> Option<Uuid> {
    let vms = reg.vms();
    (!vms.is_empty()).then(|| vms[i % vms.len()].uuid)
}

/// Applies `op`; `Ok(false)` when the op does not apply (no VM to pick, name taken…).
fn apply(
    reg: &mut Registry,
    disk: &mut TornDisk,
    op: &Op,
    step: usize,
) -> Result<bool, registry::RegistryError> {
    match op {
        Op::Add {
            seed,
            disks,
            kernel,
            uefi,
        } => {
            let name = format!("vm-{step}-{seed}");
            let boot = if *uefi {
                BootSpec::Firmware {
                    code_capacity: u64::from(*kernel),
                    vars_capacity: 8192,
                }
            } else {
                BootSpec::Linux {
                    kernel_capacity: u64::from(*kernel),
                    initrd_capacity: None,
                    cmdline: format!("root=/dev/vda seed={seed}"),
                }
            };
            let spec = VmSpec {
                name,
                vcpus: u32::from(seed % 8) + 1,
                memory_bytes: (u64::from(*seed) + 1) << 21,
                device_model: if *uefi {
                    DeviceModel::UefiAcpi
                } else {
                    DeviceModel::LinuxDt
                },
                boot,
                disks: disks
                    .iter()
                    .map(|&s| DiskSpec {
                        size: u64::from(s),
                        read_only: s % 2 == 0,
                    })
                    .collect(),
                tpm_nv_size: if seed % 2 == 0 { 4096 } else { 0 },
                policy: Policy::default(),
            };
            let mut bytes = [*seed; 16];
            bytes[..8].copy_from_slice(&(step as u64).to_le_bytes());
            match reg.add_vm(disk, Uuid::from_random_bytes(bytes), &spec) {
                Err(registry::RegistryError::NoSpace { .. }) => Ok(false),
                other => other.map(|_| true),
            }
        }
        Op::SetPolicy { pick: p, bits } => {
            let Some(id) = pick(reg, *p) else {
                return Ok(false);
            };
            let mut policy = Policy::default();
            for (i, name) in registry::policy::POLICY_FIELDS.iter().enumerate() {
                policy.set(name, bits & (1 << i) != 0);
            }
            reg.set_policy(disk, id, policy).map(|()| true)
        }
        Op::Rename { pick: p, seed } => {
            let Some(id) = pick(reg, *p) else {
                return Ok(false);
            };
            let name = format!("renamed-{step}-{seed}");
            reg.update_vm(disk, id, |r| r.name = name).map(|()| true)
        }
        Op::StoreKernel { pick: p, len, fill } => {
            let Some(id) = pick(reg, *p) else {
                return Ok(false);
            };
            let role = if reg.vm(id).unwrap().blob(ExtentRole::Kernel).is_some() {
                ExtentRole::Kernel
            } else {
                ExtentRole::FirmwareCode
            };
            let cap = reg.vm(id).unwrap().blob(role).unwrap().extent.len;
            let data = vec![*fill; (u64::from(*len)).min(cap) as usize];
            reg.store_blob(disk, id, role, &data).map(|()| true)
        }
        Op::Remove { pick: p } => {
            let Some(id) = pick(reg, *p) else {
                return Ok(false);
            };
            reg.remove_vm(disk, id).map(|_| true)
        }
        Op::Start { pick: p } => {
            let Some(id) = pick(reg, *p) else {
                return Ok(false);
            };
            reg.update_vm(disk, id, |r| r.starts += 1).map(|()| true)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn torn_metadata_writes_reload_to_a_committed_state(
        ops in prop::collection::vec((op(), any::<Option<prop::sample::Index>>()), 1..20)
    ) {
        let mut disk = TornDisk::new(MemDisk::new((2 << 20) + (512 << 10)), Mode::Record);
        let mut reg = Registry::format(&mut disk, Uuid::from_random_bytes([0x42; 16])).unwrap();
        for (step, (op, continue_torn)) in ops.iter().enumerate() {
            // The full update, to learn the new state and how many blocks it writes.
            let mut full_disk = disk.clone();
            let mut full_reg = reg.clone();
            if !apply(&mut full_reg, &mut full_disk, op, step).unwrap() {
                continue;
            }
            let blocks = full_disk.last_meta_blocks;
            prop_assert!(blocks >= 1);
            prop_assert_eq!(full_reg.generation(), reg.generation() + 1);
            let mut torn_states = Vec::new();
            for k in 0..=blocks {
                let mut d = TornDisk::new(disk.inner.clone(), Mode::Tear(k));
                let mut r = reg.clone();
                prop_assert!(apply(&mut r, &mut d, op, step).is_err(), "a cut write must report an error");
                prop_assert_eq!(r.vms(), reg.vms(), "a failed update must not change the in-memory state");
                let mut inner = d.inner;
                let reopened = Registry::open(&mut inner);
                prop_assert!(reopened.is_ok(), "k={} of {}: {:?}", k, blocks, reopened.err());
                let reopened = reopened.unwrap();
                let is_old = reopened.vms() == reg.vms() && reopened.generation() == reg.generation();
                let is_new = reopened.vms() == full_reg.vms() && reopened.generation() == full_reg.generation();
                if k == 0 {
                    prop_assert!(is_old, "nothing landed: expected the previous state");
                } else if k < blocks {
                    // Usually the previous state; the new one only if the blocks that
                    // did not land already held exactly the new bytes (e.g. zeros).
                    prop_assert!(is_old || is_new, "k={} of {}: a mix of states", k, blocks);
                } else {
                    prop_assert_eq!(reopened.vms(), full_reg.vms(), "all {} blocks landed: expected the new state", blocks);
                    prop_assert_eq!(reopened.generation(), full_reg.generation());
                }
                torn_states.push((inner, reopened));
            }
            // Go on from the committed update, or from one of the torn disks (whose
            // inactive slot now holds a partial write the next commit must replace).
            match continue_torn {
                Some(ix) => {
                    let (inner, reopened) = torn_states.swap_remove(ix.index(torn_states.len()));
                    disk = TornDisk::new(inner, Mode::Record);
                    reg = reopened;
                }
                None => {
                    disk = full_disk;
                    reg = full_reg;
                }
            }
            prop_assert_eq!(&Registry::open(&mut disk.inner).unwrap(), &reg);
        }
    }
}
