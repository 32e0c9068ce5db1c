//! `cargo xtask check-windows-ready --vm NAME [--disk PATH] [--accel tcg|kvm]
//! [--cpu MODEL]`:
//! each Windows 11 requirement, whether the VM on a system disk meets it and
//! what was found, one line each, then a summary; the command fails (non-zero
//! exit) when any requirement is not met. It reads the system disk only.
//!
//! The requirements (Microsoft's Windows 11 minimums, and what Windows 11 on
//! Arm needs of this hypervisor's devices): a TPM 2.0; UEFI firmware whose
//! variable store can enforce Secure Boot (authenticated variables), with
//! Secure Boot on (a PK enrolled, `SecureBootEnable` not 0, not in custom mode)
//! and Microsoft's *Windows Production PCA 2011* — the CA that signs Windows'
//! boot manager — in `db`; a CPU with the Armv8.1 atomics (FEAT_LSE); at least
//! 2 cores, 4 GiB of RAM and a 64 GiB system disk; the `windows` device model
//! (NVMe system disk, XHCI keyboard and tablet, GOP); install media (a
//! read-only guest disk holding an ISO 9660 or UDF volume).
//!
//! The logic ([`evaluate`]) works on [`VmFacts`] and is host-tested; [`gather`]
//! reads the facts from a system disk.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use registry::cli::{format_size, FileDisk};
use registry::{BootSource, DeviceModel, Registry, VmRecord};

use crate::efivars::{self, VarStore};
use crate::error::Error;
use crate::qemu::{Accel, TCG_CPU};

/// Windows 11's minimum RAM.
pub const MIN_MEMORY: u64 = 4 << 30;
/// Windows 11's minimum storage (Microsoft says 64 GB; the binary unit is the
/// stricter reading).
pub const MIN_SYSTEM_DISK: u64 = 64 << 30;
/// Windows 11's minimum number of cores.
pub const MIN_CORES: u32 = 2;
/// The CA that signs Windows' boot manager (`bootmgfw.efi`).
pub const WINDOWS_PCA_2011_CN: &str = "Microsoft Windows Production PCA 2011";
/// Its SHA-1 thumbprint, as Microsoft publishes it
/// (`580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d`).
pub const WINDOWS_PCA_2011_SHA1: [u8; 20] = [
    0x58, 0x0a, 0x6f, 0x4c, 0xc4, 0xe4, 0xb6, 0x69, 0xb9, 0xeb, 0xdc, 0x1b, 0x2b, 0x3e, 0x08, 0x7b,
    0x80, 0xd0, 0x67, 0x8d,
];

/// Where an optical-media volume descriptor set starts: sector 16 of 2 KiB.
pub const VOLUME_DESCRIPTORS_AT: usize = 32 << 10;
/// Size of one volume descriptor (and of a CD sector).
pub const VOLUME_DESCRIPTOR_SIZE: usize = 2048;
/// How many descriptors [`media_kind`] looks at.
const DESCRIPTORS_SCANNED: usize = 16;
/// Bytes of a disk [`media_kind`] needs.
pub const MEDIA_HEAD: usize = VOLUME_DESCRIPTORS_AT + DESCRIPTORS_SCANNED * VOLUME_DESCRIPTOR_SIZE;

/// What a read-only disk holds, from its volume descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// ISO 9660 (`CD001`) only.
    Iso9660,
    /// UDF (`BEA01` … `NSR02`/`NSR03`) only.
    Udf,
    /// Both (a UDF bridge disc: what Microsoft's ISOs are).
    Iso9660Udf,
}

impl MediaKind {
    pub fn describe(self) -> &'static str {
        match self {
            MediaKind::Iso9660 => "ISO 9660",
            MediaKind::Udf => "UDF",
            MediaKind::Iso9660Udf => "ISO 9660 + UDF",
        }
    }
}

/// The kind of optical-media image `head` (the first [`MEDIA_HEAD`] bytes, or
/// fewer) starts, from the standard identifiers of its volume descriptors at
/// 32 KiB (ECMA-119 `CD001`; ECMA-167 volume recognition `BEA01` then `NSR02`
/// or `NSR03`), or `None`.
pub fn media_kind(head: &[u8]) -> Option<MediaKind> {
    let ids: Vec<&[u8]> = (0..DESCRIPTORS_SCANNED)
        .map_while(|i| {
            let at = VOLUME_DESCRIPTORS_AT + i * VOLUME_DESCRIPTOR_SIZE;
            head.get(at + 1..at + 6)
        })
        .collect();
    let iso = ids.first().is_some_and(|id| *id == b"CD001");
    let udf = ids
        .iter()
        .position(|id| *id == b"BEA01")
        .is_some_and(|bea| {
            ids[bea..]
                .iter()
                .any(|id| *id == b"NSR02" || *id == b"NSR03")
        });
    match (iso, udf) {
        (true, true) => Some(MediaKind::Iso9660Udf),
        (true, false) => Some(MediaKind::Iso9660),
        (false, true) => Some(MediaKind::Udf),
        (false, false) => None,
    }
}

/// The CPU the VM will run on, as far as xtask knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFacts {
    /// What the CPU is (`QEMU TCG -cpu max,…`, `host (KVM): …`).
    pub described: String,
    /// Whether it implements FEAT_LSE, or `None` when unknown.
    pub lse: Option<bool>,
}

/// Whether QEMU's CPU model `model` implements FEAT_LSE (the Armv8.1 atomics),
/// for the models xtask may use; `None` for others. `max` enables every
/// feature QEMU emulates, FEAT_LSE included; the Armv8.0 cores lack it; the
/// Armv8.2+ cores have it.
pub fn qemu_model_has_lse(model: &str) -> Option<bool> {
    match model.split(',').next().unwrap_or("") {
        "max" | "cortex-a55" | "cortex-a76" | "cortex-a710" | "neoverse-n1" | "neoverse-n2"
        | "neoverse-v1" | "a64fx" => Some(true),
        "cortex-a35" | "cortex-a53" | "cortex-a57" | "cortex-a72" => Some(false),
        _ => None,
    }
}

/// Whether `/proc/cpuinfo` text lists the `atomics` feature (Linux's name for
/// FEAT_LSE on arm64), or `None` when it has no arm64 `Features` line.
pub fn cpuinfo_has_lse(cpuinfo: &str) -> Option<bool> {
    cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("Features")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .map(|features| features.split_whitespace().any(|f| f == "atomics"))
}

/// The CPU a run with `accel` (and `run --cpu MODEL`, when given) gives the
/// VM: under TCG, QEMU's `model` or xtask's [`TCG_CPU`]; under KVM, the
/// host's CPU (`/proc/cpuinfo`).
pub fn cpu_facts(accel: Accel, model: Option<&str>) -> CpuFacts {
    match model.filter(|m| *m != "host") {
        Some(m) => CpuFacts {
            described: format!("QEMU -cpu {m}"),
            lse: qemu_model_has_lse(m),
        },
        None if accel == Accel::Tcg => CpuFacts {
            described: format!("QEMU TCG -cpu {TCG_CPU}"),
            lse: qemu_model_has_lse(TCG_CPU),
        },
        None => {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            CpuFacts {
                described: "the host's CPU (KVM -cpu host, /proc/cpuinfo)".into(),
                lse: cpuinfo_has_lse(&info),
            }
        }
    }
}

/// A read-only guest disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFacts {
    pub index: usize,
    pub len: u64,
    pub kind: Option<MediaKind>,
}

/// What the check needs to know about a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFacts {
    pub name: String,
    pub device_model: DeviceModel,
    /// The VM boots UEFI firmware (not Linux directly).
    pub firmware: bool,
    /// The variable bank image the firmware starts from, or `None` when its
    /// store was never written (an erased bank).
    pub vars: Option<Vec<u8>>,
    /// Bytes of TPM NV (0: no TPM).
    pub tpm_nv: u64,
    pub vcpus: u32,
    pub memory: u64,
    /// (index, bytes) of the first writable guest disk, the system disk.
    pub system_disk: Option<(usize, u64)>,
    pub media: Vec<MediaFacts>,
    pub cpu: CpuFacts,
}

/// One requirement's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The requirement.
    pub name: &'static str,
    pub met: bool,
    /// `ok`, `MISSING`, `too small`, `off`, `unknown`, `BAD`.
    pub status: &'static str,
    /// What was found.
    pub found: String,
}

fn check(name: &'static str, met: bool, status: &'static str, found: String) -> Check {
    Check {
        name,
        met,
        status,
        found,
    }
}

fn ok(name: &'static str, found: String) -> Check {
    check(name, true, "ok", found)
}

fn missing(name: &'static str, found: impl Into<String>) -> Check {
    check(name, false, "MISSING", found.into())
}

/// A certificate as the report names it: its subject's common name (or `?`)
/// and its SHA-1 thumbprint.
type NamedCert = (String, [u8; 20]);

/// The certificates of signature-list variable `name` in `store`: (common
/// name or `?`, SHA-1 thumbprint) each; `None` when the variable is absent,
/// `Err` when it does not parse.
fn certificates(
    store: &VarStore,
    name: &str,
    vendor: efivars::Guid,
) -> Option<Result<Vec<NamedCert>, efivars::StoreError>> {
    let var = store.get(name, vendor)?;
    Some(efivars::signature_lists(&var.data).map(|lists| {
        efivars::x509_certificates(&lists)
            .map(|der| {
                (
                    efivars::subject_common_name(der).unwrap_or_else(|| "?".into()),
                    efivars::sha1_thumbprint(der),
                )
            })
            .collect()
    }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The Secure Boot lines: capable, enabled, and the certificate with
/// `thumbprint` (named `cn`) in `db`.
pub fn secure_boot_checks(
    vars: Option<&[u8]>,
    firmware: bool,
    cn: &str,
    thumbprint: &[u8; 20],
) -> [Check; 3] {
    const CAPABLE: &str = "Secure Boot capable";
    const ENABLED: &str = "Secure Boot enabled";
    const DB: &str = "db: Windows Production PCA 2011";
    if !firmware {
        return [
            missing(CAPABLE, "no UEFI firmware"),
            missing(ENABLED, "no UEFI firmware"),
            missing(DB, "no UEFI firmware"),
        ];
    }
    let Some(image) = vars else {
        let why = "the variable store was never written: the firmware starts with an empty one";
        return [
            missing(CAPABLE, why),
            check(ENABLED, false, "off", why.into()),
            missing(DB, why),
        ];
    };
    let store = match VarStore::parse(image) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("the variable store does not parse: {e}");
            return [
                check(CAPABLE, false, "BAD", why.clone()),
                check(ENABLED, false, "BAD", why.clone()),
                check(DB, false, "BAD", why),
            ];
        }
    };
    let capable = if store.authenticated {
        ok(CAPABLE, "authenticated variable store".into())
    } else {
        missing(
            CAPABLE,
            "a plain variable store: the firmware cannot enforce key updates",
        )
    };
    let count = |name: &str, vendor| match certificates(&store, name, vendor) {
        None => Err(format!("no {name}")),
        Some(Err(e)) => Err(format!("{name} does not parse ({e})")),
        Some(Ok(c)) if c.is_empty() => Err(format!("{name} holds no certificate")),
        Some(Ok(c)) => Ok(c),
    };
    let pk = count("PK", efivars::EFI_GLOBAL_VARIABLE);
    let kek = count("KEK", efivars::EFI_GLOBAL_VARIABLE);
    let db = count("db", efivars::EFI_IMAGE_SECURITY_DATABASE);
    let flag = |name, vendor| {
        store
            .get(name, vendor)
            .and_then(|v| v.data.first().copied())
    };
    let sb_enable = flag("SecureBootEnable", efivars::SECURE_BOOT_ENABLE_DISABLE);
    let custom = flag("CustomMode", efivars::CUSTOM_MODE_ENABLE);
    let mut off = Vec::new();
    for r in [&pk, &kek, &db] {
        if let Err(e) = r {
            off.push(e.clone());
        }
    }
    if sb_enable == Some(0) {
        off.push("SecureBootEnable is 0".into());
    }
    if custom.is_some_and(|c| c != 0) {
        off.push("CustomMode is on".into());
    }
    let enabled = if off.is_empty() && store.authenticated {
        let names = |r: &Result<Vec<NamedCert>, String>| match r {
            Ok(c) => c
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e.clone(),
        };
        ok(
            ENABLED,
            format!(
                "PK: {}; KEK: {}; db: {} certificate(s)",
                names(&pk),
                names(&kek),
                db.as_ref().map_or(0, Vec::len)
            ),
        )
    } else {
        if !store.authenticated {
            off.push("no authenticated variables".into());
        }
        check(ENABLED, false, "off", off.join("; "))
    };
    let db_line = match &db {
        Ok(certs) => match certs.iter().find(|(_, t)| t == thumbprint) {
            Some((name, t)) => ok(DB, format!("{name} (sha1 {})", hex(t))),
            None => {
                let named = certs.iter().any(|(n, _)| n == cn);
                let held: Vec<&str> = certs.iter().map(|(n, _)| n.as_str()).collect();
                let why = if named {
                    format!("a certificate named {cn} with another thumbprint; db holds: ")
                } else {
                    "db holds: ".to_string()
                };
                missing(DB, format!("{why}{}", held.join(", ")))
            }
        },
        Err(e) => missing(DB, e.clone()),
    };
    [capable, enabled, db_line]
}

/// Each requirement's verdict, in the order they are printed.
pub fn evaluate(f: &VmFacts) -> Vec<Check> {
    evaluate_with(f, WINDOWS_PCA_2011_CN, &WINDOWS_PCA_2011_SHA1)
}

/// [`evaluate`] with the certificate `db` must hold named by `cn` and its
/// SHA-1 `thumbprint`.
pub fn evaluate_with(f: &VmFacts, cn: &str, thumbprint: &[u8; 20]) -> Vec<Check> {
    let mut out = Vec::new();
    let tpm_interface = if f.device_model.boots_linux() {
        "TIS (device tree)"
    } else {
        "CRB (ACPI TPM2 table)"
    };
    out.push(if f.tpm_nv > 0 {
        ok(
            "TPM 2.0",
            format!(
                "vTPM 2.0 over {tpm_interface}, NV {}",
                format_size(f.tpm_nv)
            ),
        )
    } else {
        missing("TPM 2.0", "no TPM NV extent: the VM has no TPM")
    });
    out.push(if f.firmware {
        ok("UEFI firmware", "firmware boot (AAVMF in CFI flash)".into())
    } else {
        missing("UEFI firmware", "boots a Linux kernel directly")
    });
    out.extend(secure_boot_checks(
        f.vars.as_deref(),
        f.firmware,
        cn,
        thumbprint,
    ));
    const CPU: &str = "CPU: Armv8.1 atomics (LSE)";
    out.push(match f.cpu.lse {
        Some(true) => ok(CPU, format!("{}: FEAT_LSE", f.cpu.described)),
        Some(false) => missing(CPU, format!("{}: no FEAT_LSE", f.cpu.described)),
        None => check(
            CPU,
            false,
            "unknown",
            format!("{}: its features are unknown", f.cpu.described),
        ),
    });
    const CORES: &str = "cores >= 2";
    out.push(if f.vcpus >= MIN_CORES {
        ok(CORES, format!("{} vCPUs", f.vcpus))
    } else {
        check(CORES, false, "too few", format!("{} vCPU(s)", f.vcpus))
    });
    const RAM: &str = "RAM >= 4 GiB";
    let ram = format_size(f.memory);
    out.push(if f.memory >= MIN_MEMORY {
        ok(RAM, ram)
    } else {
        check(RAM, false, "too small", ram)
    });
    const DISK: &str = "system disk >= 64 GiB";
    let bus = if f.device_model == DeviceModel::Windows {
        "NVMe"
    } else {
        "virtio-blk"
    };
    out.push(match f.system_disk {
        Some((i, len)) if len >= MIN_SYSTEM_DISK => {
            ok(DISK, format!("disk{i} {} on {bus}", format_size(len)))
        }
        Some((i, len)) => check(
            DISK,
            false,
            "too small",
            format!("disk{i} {} on {bus}", format_size(len)),
        ),
        None => missing(DISK, "no writable guest disk"),
    });
    const MODEL: &str = "device model";
    out.push(if f.device_model == DeviceModel::Windows {
        ok(
            MODEL,
            "windows: NVMe system disk, XHCI keyboard + tablet, USB storage, ramfb GOP".into(),
        )
    } else {
        let has = match f.device_model {
            DeviceModel::LinuxDt => "device tree, virtio-mmio disks, no GOP",
            DeviceModel::LinuxDtNvme => "device tree, NVMe, no GOP",
            DeviceModel::UefiAcpi => "virtio-mmio disks and input Windows has no inbox driver for",
            DeviceModel::Windows => "",
        };
        check(
            MODEL,
            false,
            "wrong",
            format!(
                "{}: {has} (needs windows: NVMe, XHCI input, GOP)",
                f.device_model.as_str()
            ),
        )
    });
    const MEDIA: &str = "install media";
    out.push(match f.media.iter().find(|m| m.kind.is_some()) {
        Some(m) => ok(
            MEDIA,
            format!(
                "disk{} {} read-only, {}",
                m.index,
                format_size(m.len),
                m.kind.map_or("", MediaKind::describe)
            ),
        ),
        None if f.media.is_empty() => missing(MEDIA, "no read-only guest disk"),
        None => missing(
            MEDIA,
            format!(
                "read-only disk{} holds no ISO 9660/UDF volume",
                f.media[0].index
            ),
        ),
    });
    out
}

/// The report's text: one line per requirement and the summary line.
pub fn render(vm: &str, checks: &[Check]) -> String {
    let mut out = String::new();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let _ = writeln!(out, "{:<width$}  {:<9}  {}", c.name, c.status, c.found);
    }
    let unmet: Vec<&str> = checks.iter().filter(|c| !c.met).map(|c| c.name).collect();
    if unmet.is_empty() {
        let _ = writeln!(
            out,
            "windows-ready: VM '{vm}' meets all {} requirements",
            checks.len()
        );
    } else {
        let _ = writeln!(
            out,
            "windows-ready: VM '{vm}' does not meet {} of {} requirements: {}",
            unmet.len(),
            checks.len(),
            unmet.join(", ")
        );
    }
    out
}

/// Reads what [`evaluate`] needs of VM `name` from the system disk at `path`
/// (read-only).
pub fn gather(path: &Path, name: &str, cpu: CpuFacts) -> Result<VmFacts, Error> {
    let step = |d: String| Error::step("check-windows-ready", d);
    let mut disk =
        FileDisk::open(path, true).map_err(|e| step(format!("{}: {e}", path.display())))?;
    let reg = Registry::open(&mut disk).map_err(|e| step(format!("{}: {e}", path.display())))?;
    let rec: VmRecord = reg.vm_by_name(name).cloned().ok_or_else(|| {
        let names: Vec<&str> = reg.vms().iter().map(|v| v.name.as_str()).collect();
        step(format!(
            "{}: no VM named '{name}' (it has: {})",
            path.display(),
            names.join(", ")
        ))
    })?;
    let (firmware, vars) = match &rec.boot {
        BootSource::Firmware { vars, .. } => {
            let image = registry::AbStore::new(*vars)
                .map(|s| s.load(&mut disk))
                .transpose()
                .map_err(|e| step(format!("VM '{name}': its variable store: {e}")))?
                .flatten();
            (true, image)
        }
        BootSource::Linux { .. } => (false, None),
    };
    let system_disk = rec
        .disks
        .iter()
        .enumerate()
        .find(|(_, d)| !d.read_only)
        .map(|(i, d)| (i, d.extent.len));
    let mut media = Vec::new();
    for (index, d) in rec.disks.iter().enumerate().filter(|(_, d)| d.read_only) {
        let mut head = vec![0u8; MEDIA_HEAD.min(d.extent.len as usize)];
        registry::read_extent(&mut disk, d.extent, 0, &mut head)
            .map_err(|e| step(format!("VM '{name}': reading disk{index}: {e}")))?;
        media.push(MediaFacts {
            index,
            len: d.extent.len,
            kind: media_kind(&head),
        });
    }
    Ok(VmFacts {
        name: rec.name.clone(),
        device_model: rec.device_model,
        firmware,
        vars,
        tpm_nv: rec.tpm_nv.len,
        vcpus: rec.vcpus,
        memory: rec.memory_bytes,
        system_disk,
        media,
        cpu,
    })
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub checks: Vec<Check>,
    /// The printed report.
    pub text: String,
}

impl Readiness {
    pub fn all_met(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }
}

/// `check-windows-ready` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    pub vm: String,
    pub disk: PathBuf,
    pub accel: Accel,
    /// `run --cpu MODEL`'s model, when the VM will run with one.
    pub cpu: Option<String>,
}

/// Runs the check and returns the report (the command prints it and fails when
/// a requirement is not met).
pub fn check_windows_ready(o: &CheckOptions) -> Result<Readiness, Error> {
    let facts = gather(&o.disk, &o.vm, cpu_facts(o.accel, o.cpu.as_deref()))?;
    let checks = evaluate(&facts);
    let text = render(&facts.name, &checks);
    Ok(Readiness { checks, text })
}

/// The command: prints the report; an unmet requirement is an error (exit 1).
pub fn check_cli(o: &CheckOptions) -> Result<(), Error> {
    let r = check_windows_ready(o)?;
    print!("{}", r.text);
    if r.all_met() {
        Ok(())
    } else {
        let n = r.checks.iter().filter(|c| !c.met).count();
        Err(Error::step(
            "check-windows-ready",
            format!("{n} requirement(s) not met"),
        ))
    }
}

#[cfg(test)]
mod tests;
