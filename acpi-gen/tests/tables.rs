//! The generated tables checked from outside: the table-loader script executed the
//! way the firmware does it (allocate, link, checksum, then walk RSDP → XSDT →
//! tables), and every table disassembled by ACPICA's `iasl -d` — an independent
//! parser — with the values it decodes compared with the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use acpi_gen::config::{PlatformConfig, Redistributors, Topology, Trigger};
use acpi_gen::loader::{self, AcpiBlobs};
use acpi_gen::profile::uefi_acpi;
use acpi_gen::tables::{sig, Tables};

const TABLES_AT: u64 = 0x4780_0000;
const RSDP_AT: u64 = 0x4700_0000;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}
fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8(b[..end].to_vec()).unwrap()
}

/// Executes `etc/table-loader` as EDK2 does; returns the files at their addresses.
fn run_loader(blobs: &AcpiBlobs) -> BTreeMap<String, (u64, Vec<u8>)> {
    let files: BTreeMap<&str, &Vec<u8>> = [
        (loader::TABLES_FILE, &blobs.tables),
        (loader::RSDP_FILE, &blobs.rsdp),
    ]
    .into();
    let mut mem: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    assert_eq!(blobs.loader.len() % 128, 0);
    for cmd in blobs.loader.chunks(128) {
        match le(&cmd[0..4]) {
            1 => {
                let name = cstr(&cmd[4..60]);
                let align = le(&cmd[60..64]);
                let at = if name == loader::RSDP_FILE {
                    RSDP_AT
                } else {
                    TABLES_AT
                };
                assert_eq!(at % align, 0);
                mem.insert(name.clone(), (at, files[name.as_str()].clone()));
            }
            2 => {
                let dest = cstr(&cmd[4..60]);
                let src = cstr(&cmd[60..116]);
                let offset = le(&cmd[116..120]) as usize;
                let size = cmd[120] as usize;
                let (src_at, src_len) = (mem[&src].0, mem[&src].1.len() as u64);
                let field = &mut mem.get_mut(&dest).unwrap().1[offset..offset + size];
                let value = le(field);
                assert!(value < src_len, "pointer {value:#x} outside {src}");
                field.copy_from_slice(&(value + src_at).to_le_bytes()[..size]);
            }
            3 => {
                let file = cstr(&cmd[4..60]);
                let (offset, start, len) = (
                    le(&cmd[60..64]) as usize,
                    le(&cmd[64..68]) as usize,
                    le(&cmd[68..72]) as usize,
                );
                let bytes = &mut mem.get_mut(&file).unwrap().1;
                assert_eq!(
                    bytes[offset], 0,
                    "checksum byte not zero before ADD_CHECKSUM"
                );
                bytes[offset] = 0u8.wrapping_sub(sum(&bytes[start..start + len]));
            }
            other => panic!("unknown loader command {other}"),
        }
    }
    mem
}

/// Walks RSDP → XSDT → tables in the loaded files, checking every checksum;
/// returns each table by signature.
fn walk(mem: &BTreeMap<String, (u64, Vec<u8>)>) -> BTreeMap<[u8; 4], Vec<u8>> {
    let (_, rsdp) = &mem[loader::RSDP_FILE];
    let (base, blob) = &mem[loader::TABLES_FILE];
    assert_eq!(&rsdp[..8], sig::RSDP);
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&rsdp[..36]), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    let table_at = |addr: u64| -> Vec<u8> {
        let off = (addr - base) as usize;
        let len = le(&blob[off + 4..off + 8]) as usize;
        let t = blob[off..off + len].to_vec();
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
        t
    };
    let xsdt = table_at(le(&rsdp[24..32]));
    assert_eq!(&xsdt[..4], sig::XSDT);
    let mut out = BTreeMap::new();
    for e in xsdt[36..].chunks(8) {
        let t = table_at(le(e));
        let mut s = [0u8; 4];
        s.copy_from_slice(&t[..4]);
        if &s == sig::FADT {
            let dsdt = table_at(le(&t[140..148]));
            assert_eq!(&dsdt[..4], sig::DSDT);
            out.insert(*sig::DSDT, dsdt);
        }
        assert!(out.insert(s, t).is_none(), "table listed twice");
    }
    out.insert(*sig::XSDT, xsdt);
    out
}

fn configs() -> Vec<PlatformConfig> {
    let smt = Topology {
        sockets: 1,
        clusters: 2,
        cores: 2,
        threads: 2,
    };
    let mut per_gicc = uefi_acpi(4, None, &[0, 30, 31]);
    per_gicc.redistributors = Redistributors::PerGicc;
    vec![
        uefi_acpi(1, None, &[30, 31]),
        uefi_acpi(2, None, &[0, 30, 31]),
        uefi_acpi(4, None, &[0, 1, 30, 31]),
        uefi_acpi(8, Some(smt), &[0, 1, 2, 30, 31]),
        per_gicc,
    ]
}

#[test]
fn loader_script_links_and_checksums_every_table() {
    for cfg in configs() {
        let tables = acpi_gen::build(&cfg).unwrap();
        let blobs = AcpiBlobs::new(&tables);
        let mem = run_loader(&blobs);
        let found = walk(&mem);
        let mut want = vec![
            *sig::XSDT,
            *sig::FADT,
            *sig::DSDT,
            *sig::MADT,
            *sig::GTDT,
            *sig::SPCR,
            *sig::DBG2,
            *sig::PPTT,
            *sig::TPM2,
        ];
        want.sort();
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), want);
        // The loader's result is what relocate() produces for the same address.
        let (rsdp, blob) = tables.relocate(TABLES_AT);
        assert_eq!(mem[loader::RSDP_FILE].1, rsdp);
        assert_eq!(mem[loader::TABLES_FILE].1, blob);
    }
}

#[test]
fn every_generated_table_is_checksummed() {
    for cfg in configs() {
        let t = acpi_gen::build(&cfg).unwrap();
        assert_eq!(sum(&t.rsdp[..20]), 0);
        assert_eq!(sum(&t.rsdp), 0);
        for e in &t.entries {
            assert_eq!(sum(&t.blob[e.offset..e.offset + e.len]), 0);
            assert_eq!(le(&t.blob[e.offset + 4..e.offset + 8]) as usize, e.len);
        }
    }
}

/// `iasl`, or one clear line saying how to get it.
fn iasl() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("iasl"))
            .find(|f| f.is_file())
    });
    found.expect("iasl not found: install Debian's acpica-tools (`cargo xtask test` installs it)")
}

/// Disassembles one table with `iasl -d`; returns the .dsl text.
fn disassemble(name: &str, bytes: &[u8]) -> String {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("acpi-gen-{}-{run}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dat = dir.join(format!("{name}.dat"));
    std::fs::write(&dat, bytes).unwrap();
    let out = Command::new(iasl())
        .arg("-d")
        .arg(&dat)
        .current_dir(&dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name} failed:\n{log}");
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for bad in [
        "Error",
        "Warning",
        "Invalid",
        "Incorrect",
        "Unknown",
        "**** ",
    ] {
        assert!(!log.contains(bad), "iasl -d {name}: {bad}:\n{log}");
        assert!(!dsl.contains(bad), "iasl -d {name} decoded {bad}:\n{dsl}");
    }
    dsl
}

/// The `Field : Value` lines of a data-table disassembly, in order.
fn fields(dsl: &str) -> Vec<(String, String)> {
    dsl.lines()
        .filter_map(|l| {
            // "[off dec len]  Name : Value" and the decoded flag lines below them.
            let rest = match l.find(']') {
                Some(i) if l.starts_with('[') => &l[i + 1..],
                _ if l.starts_with("  ") => l,
                _ => return None,
            };
            let (k, v) = rest.split_once(" : ")?;
            let v = v.trim();
            let v = v.split(" [").next().unwrap_or(v).trim_matches('"');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn hex(v: &str) -> u64 {
    u64::from_str_radix(v, 16).unwrap_or_else(|_| panic!("not hex: {v}"))
}

fn all(f: &[(String, String)], key: &str) -> Vec<u64> {
    f.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| hex(v))
        .collect()
}

fn one(f: &[(String, String)], key: &str) -> u64 {
    let v = all(f, key);
    assert_eq!(v.len(), 1, "{key}: {v:?}");
    v[0]
}

fn loaded_tables(cfg: &PlatformConfig) -> (Tables, BTreeMap<[u8; 4], Vec<u8>>) {
    let tables = acpi_gen::build(cfg).unwrap();
    let mem = run_loader(&AcpiBlobs::new(&tables));
    let found = walk(&mem);
    (tables, found)
}

#[test]
fn iasl_decodes_the_configured_values() {
    for cfg in configs() {
        let n = cfg.mpidrs.len();
        let (tables, t) = loaded_tables(&cfg);
        let d = |s: &[u8; 4]| fields(&disassemble(std::str::from_utf8(s).unwrap(), &t[s]));

        let madt = d(sig::MADT);
        assert_eq!(all(&madt, "ARM MPIDR"), cfg.mpidrs, "MADT MPIDRs");
        assert_eq!(
            all(&madt, "Processor UID"),
            (0..n as u64).collect::<Vec<_>>()
        );
        let gicr: Vec<u64> = (0..n as u64)
            .map(|i| cfg.gicr_base + i * cfg.gicr_stride)
            .collect();
        assert_eq!(all(&madt, "Processor Enabled"), vec![1; n]);
        assert_eq!(one(&madt, "Version"), 3);
        match cfg.redistributors {
            Redistributors::Region => {
                // GICC GICR bases zero; the GICD's base, then the GICR region.
                assert_eq!(all(&madt, "Redistributor Base Address"), vec![0; n]);
                let bases = all(&madt, "Base Address");
                assert_eq!(bases[n..], [cfg.gicd_base, cfg.gicr_base]);
                let gicr_len = *all(&madt, "Length").last().unwrap();
                assert_eq!(gicr_len, n as u64 * cfg.gicr_stride, "GICR range");
            }
            Redistributors::PerGicc => {
                assert_eq!(all(&madt, "Redistributor Base Address"), gicr);
                assert_eq!(all(&madt, "Base Address")[n..], [cfg.gicd_base]);
                let gicr_subtable = madt
                    .iter()
                    .any(|(k, v)| k == "Subtable Type" && v.starts_with("0E"));
                assert!(!gicr_subtable, "a GICR structure beside per-GICC bases");
            }
        }

        let gtdt = d(sig::GTDT);
        assert_eq!(
            one(&gtdt, "Secure EL1 Interrupt"),
            cfg.timers.secure_el1.into()
        );
        assert_eq!(
            one(&gtdt, "Non-Secure EL1 Interrupt"),
            cfg.timers.nonsecure_el1.into()
        );
        assert_eq!(
            one(&gtdt, "Virtual Timer Interrupt"),
            cfg.timers.virtual_el1.into()
        );
        assert_eq!(
            one(&gtdt, "Non-Secure EL2 Interrupt"),
            cfg.timers.nonsecure_el2.into()
        );

        let spcr = d(sig::SPCR);
        assert_eq!(one(&spcr, "Interface Type"), 3, "PL011");
        assert_eq!(one(&spcr, "Address"), cfg.uart.region.base);
        assert_eq!(one(&spcr, "Interrupt"), cfg.uart.gsiv.into());
        assert_eq!(one(&spcr, "Interrupt Type"), 8, "GIC");

        let dbg2 = d(sig::DBG2);
        assert_eq!(one(&dbg2, "Address"), cfg.uart.region.base);
        assert_eq!(one(&dbg2, "Port Subtype"), 3);
        let name = dbg2.iter().find(|(k, _)| k == "Namepath").unwrap();
        assert_eq!(name.1, "\\_SB.COM0");

        let fadt = d(sig::FADT);
        assert_eq!(one(&fadt, "Hardware Reduced (V5)"), 1);
        assert_eq!(one(&fadt, "PSCI Compliant"), 1);
        assert_eq!(one(&fadt, "Must use HVC for PSCI"), 1);
        let dsdt_at = tables
            .entries
            .iter()
            .find(|e| &e.signature == sig::DSDT)
            .unwrap();
        assert_eq!(
            all(&fadt, "DSDT Address")[1],
            TABLES_AT + dsdt_at.offset as u64
        );

        let tpm2 = d(sig::TPM2);
        assert_eq!(one(&tpm2, "Start Method"), 7, "CRB");
        let crb = cfg.tpm_crb.unwrap().base;
        assert_eq!(one(&tpm2, "Control Address"), crb + 0x40);

        let pptt = d(sig::PPTT);
        let leaves: Vec<u64> = all(&pptt, "Node is a leaf");
        let ids = all(&pptt, "ACPI Processor ID");
        let leaf_ids: Vec<u64> = ids
            .iter()
            .zip(&leaves)
            .filter(|(_, &l)| l == 1)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(
            leaf_ids,
            (0..n as u64).collect::<Vec<_>>(),
            "PPTT leaves = vCPUs"
        );
        let threads = all(&pptt, "Processor is a thread")
            .iter()
            .filter(|&&t| t == 1)
            .count();
        let want_threads = if cfg.topology.threads > 1 { n } else { 0 };
        assert_eq!(threads, want_threads);
        assert_eq!(
            all(&pptt, "Physical package")
                .iter()
                .filter(|&&p| p == 1)
                .count() as u32,
            cfg.topology.sockets
        );

        let xsdt = d(sig::XSDT);
        assert_eq!(
            xsdt.iter()
                .filter(|(k, _)| k.starts_with("ACPI Table Address"))
                .count(),
            7
        );
    }
}

/// The `Device (NAME) { ... }` blocks of a DSDT disassembly, flattened to text.
fn devices(dsl: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for l in dsl.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Device (") {
            if let Some((n, body)) = cur.take() {
                out.insert(n, body);
            }
            cur = Some((rest.trim_end_matches(')').to_string(), String::new()));
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(t);
            body.push('\n');
        }
    }
    if let Some((n, body)) = cur {
        out.insert(n, body);
    }
    out
}

fn assert_irq_device(dev: &str, hid: &str, base: u64, size: u64, gsiv: u32, trigger: Trigger) {
    assert!(dev.contains(&format!("Name (_HID, \"{hid}\"")), "{dev}");
    assert!(
        dev.contains(&format!("0x{base:08X},         // Address Base")),
        "{dev}"
    );
    assert!(
        dev.contains(&format!("0x{size:08X},         // Address Length")),
        "{dev}"
    );
    let mode = if trigger == Trigger::Edge {
        "Edge"
    } else {
        "Level"
    };
    assert!(
        dev.contains(&format!(
            "Interrupt (ResourceConsumer, {mode}, ActiveHigh, Exclusive"
        )),
        "{dev}"
    );
    assert!(dev.contains(&format!("0x{gsiv:08X},")), "{dev}");
}

#[test]
fn iasl_decodes_the_dsdt_devices() {
    for cfg in configs() {
        let (_, t) = loaded_tables(&cfg);
        let dsl = disassemble("DSDT", &t[sig::DSDT]);
        let devs = devices(&dsl);
        let cpus: Vec<_> = devs
            .values()
            .filter(|b| b.contains("\"ACPI0007\""))
            .collect();
        assert_eq!(cpus.len(), cfg.mpidrs.len());
        let u = cfg.uart;
        assert_irq_device(
            &devs["COM0"],
            "ARMH0011",
            u.region.base,
            u.region.size,
            u.gsiv,
            u.trigger,
        );
        let r = cfg.rtc.unwrap();
        assert_irq_device(
            &devs["RTC0"],
            "ARMH0031",
            r.region.base,
            r.region.size,
            r.gsiv,
            r.trigger,
        );
        let tpm = cfg.tpm_crb.unwrap();
        let tpm_dev = &devs["TPM0"];
        assert!(tpm_dev.contains("Name (_HID, \"MSFT0101\""));
        assert!(tpm_dev.contains(&format!("0x{:08X},         // Address Base", tpm.base)));
        assert!(tpm_dev.contains(&format!("0x{:08X},         // Address Length", tpm.size)));
        for (slot, v) in cfg.virtio_mmio.iter().enumerate() {
            let dev = &devs[&format!("V{slot:03X}")];
            assert_irq_device(
                dev,
                "LNRO0005",
                v.region.base,
                v.region.size,
                v.gsiv,
                v.trigger,
            );
            assert!(dev.contains("Name (_CCA, One)"));
        }
        let gsiv = cfg.power_button_gsiv.unwrap();
        let ged = &devs["GED0"];
        assert!(ged.contains("Name (_HID, \"ACPI0013\""));
        assert!(ged.contains(&format!("0x{gsiv:08X},")));
        assert!(
            ged.contains(&format!("If ((Arg0 == 0x{gsiv:02X}))")),
            "{ged}"
        );
        assert!(ged.contains("Notify (\\_SB.PWRB, 0x80)"));
        assert!(devs["PWRB"].contains("\"PNP0C0C\""));
    }
}

#[test]
fn iasl_disassembles_every_table_without_complaint() {
    let cfg = uefi_acpi(4, None, &[0, 1, 30, 31]);
    let (_, t) = loaded_tables(&cfg);
    for (s, bytes) in &t {
        disassemble(std::str::from_utf8(s).unwrap(), bytes);
    }
}

/// `(base, size)` pairs of a `reg` under a 2-cell parent.
fn reg_pairs(node: &fdt::node::FdtNode) -> Vec<(u64, u64)> {
    node.property("reg")
        .map(|p| {
            p.value
                .chunks_exact(16)
                .map(|c| (le_be(&c[..8]), le_be(&c[8..])))
                .collect()
        })
        .unwrap_or_default()
}

fn le_be(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

/// The `(base, size)` of every `Memory32Fixed` in a DSDT device body.
fn crs_windows(body: &str) -> Vec<(u64, u64)> {
    let val = |l: &str| {
        let v = l.split(',').next().unwrap().trim();
        hex(v.strip_prefix("0x").unwrap_or(v))
    };
    let lines: Vec<&str> = body.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("// Address Base"))
        .map(|(i, l)| (val(l), val(lines[i + 1])))
        .collect()
}

/// Issue 14 item 5: the device tree and the ACPI tables of a `uefi-acpi` VM
/// describe exactly the entries of its one device list
/// (`boards::devices::device_list`) — each entry's window in the DT `reg` and, for
/// the devices an OS drives through ACPI, in its DSDT `_CRS` (decoded by `iasl`),
/// with the same SPI and trigger — and nothing else besides the GIC, memory, CPUs
/// and timer.
#[test]
fn device_tree_and_acpi_describe_exactly_the_device_list() {
    use boards::devices::{device_list, DeviceKind, Profile, Trigger as DevTrigger, VmDevices};
    use boards::guest_dt::{firmware_dt, FirmwareDevices, GuestDtConfig, VirtioSlot};
    for (vcpus, slots, tpm_crb) in [
        (1u32, vec![29u64, 30, 31], true),
        (4, vec![0, 1, 29, 30, 31], true),
        (2, vec![29, 30, 31], false),
    ] {
        let list = device_list(
            Profile::UefiAcpi,
            &VmDevices {
                virtio_slots: &slots,
                tpm_spi_gpio: false,
                vars_bank_size: boards::guest::FLASH_BANK_SIZE,
                tpm_crb,
                ..Default::default()
            },
        );
        let virtio: Vec<VirtioSlot> = list
            .iter()
            .filter(|d| matches!(d.kind, DeviceKind::VirtioMmio { .. }))
            .map(|d| VirtioSlot {
                base: d.base,
                intid: d.irq.unwrap().intid,
            })
            .collect();
        let dtb = firmware_dt(
            &GuestDtConfig {
                vcpus: vcpus as usize,
                ram_base: boards::guest::RAM_BASE,
                ram_size: 256 << 20,
                bootargs: "",
                initrd: None,
                virtio_mmio: &virtio,
                tpm_tis: None,
                tpm_spi_gpio: None,
                rng_seed: None,
            },
            &FirmwareDevices::from_devices(&list).unwrap(),
        )
        .unwrap();
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let cfg = acpi_gen::profile::from_devices(vcpus, None, &list).unwrap();
        let (_, t) = loaded_tables(&cfg);
        let dsl = disassemble("DSDT", &t[sig::DSDT]);
        let devs = devices(&dsl);

        // Every entry: in the DT with its window and interrupt. The TPM's node is a
        // child of the platform bus (one address and size cell, translated by the
        // bus's `ranges` as EDK2 does).
        let mut dt_windows: Vec<(u64, u64)> = Vec::new();
        for node in fdt.all_nodes() {
            let skip = node.name.starts_with("memory") || node.name.starts_with("intc");
            if !skip {
                dt_windows.extend(reg_pairs(&node));
            }
        }
        let tpm_node = fdt.find_compatible(&["tcg,tpm-tis-mmio"]);
        if let Some(tpm) = &tpm_node {
            let be = |b: &[u8]| -> Vec<u64> {
                b.chunks_exact(4)
                    .map(|c| u64::from(u32::from_be_bytes(c.try_into().unwrap())))
                    .collect()
            };
            let reg = be(tpm.property("reg").unwrap().value);
            let bus = fdt.find_node("/platform-bus@c000000").unwrap();
            let ranges = be(bus.property("ranges").unwrap().value);
            let base = reg[0] - ranges[0] + ((ranges[1] << 32) | ranges[2]);
            dt_windows.push((base, reg[1]));
        }
        let tpm_listed = list.iter().find(|d| d.kind == DeviceKind::TpmCrb);
        assert_eq!(tpm_node.is_some(), tpm_listed.is_some(), "DT TPM node");
        let mut listed: Vec<(u64, u64)> = Vec::new();
        for d in &list {
            listed.push((d.base, d.size));
            if d.kind == DeviceKind::TpmCrb {
                // Checked through the platform bus above; polled, no interrupt.
                assert!(d.irq.is_none());
                let dev = devs
                    .values()
                    .find(|b| b.contains("Name (_HID, \"MSFT0101\""))
                    .unwrap_or_else(|| panic!("no TPM in the DSDT:\n{dsl}"));
                assert_eq!(crs_windows(dev), [(d.base, d.size)], "TPM _CRS");
                assert!(!dev.contains("Interrupt ("), "TPM _CRS has no interrupt");
                let tpm2 = t.get(sig::TPM2).expect("a TPM2 table");
                // TPM2: start method 7 (CRB) at 0x30, control area at 0x28 (base +
                // 0x40, TPM_CRB_CTRL_REQ of locality 0).
                let le32 = |o: usize| u32::from_le_bytes(tpm2[o..o + 4].try_into().unwrap());
                let le64 = |o: usize| u64::from_le_bytes(tpm2[o..o + 8].try_into().unwrap());
                assert_eq!(le32(0x30), 7, "TPM2 start method");
                assert_eq!(le64(0x28), d.base + 0x40, "TPM2 control area");
                continue;
            }
            let node = fdt
                .all_nodes()
                .find(|n| reg_pairs(n).contains(&(d.base, d.size)))
                .unwrap_or_else(|| panic!("{d:?} is not in the device tree"));
            if let Some(irq) = d.irq {
                let flags = match irq.trigger {
                    DevTrigger::Level => 4u32,
                    DevTrigger::Edge => 1,
                };
                let want: Vec<u8> = [0u32, irq.intid - 32, flags]
                    .iter()
                    .flat_map(|c| c.to_be_bytes())
                    .collect();
                assert_eq!(
                    node.property("interrupts").map(|p| p.value),
                    Some(&want[..]),
                    "{d:?}: DT interrupts"
                );
            }
            // In the DSDT: what an OS drives through ACPI (the firmware's own flash
            // and fw_cfg are not for it).
            let hid = match d.kind {
                DeviceKind::Pl011 => Some("ARMH0011"),
                DeviceKind::Pl031 => Some("ARMH0031"),
                DeviceKind::VirtioMmio { .. } => Some("LNRO0005"),
                DeviceKind::Pl061Tpm
                | DeviceKind::FwCfg
                | DeviceKind::Flash { .. }
                | DeviceKind::TpmCrb
                | DeviceKind::Pcie { .. }
                | DeviceKind::Gicv2m { .. }
                | DeviceKind::GicIts
                | DeviceKind::SimpleFramebuffer { .. } => None,
            };
            if let Some(hid) = hid {
                let dev = devs
                    .values()
                    .find(|b| crs_windows(b).contains(&(d.base, d.size)))
                    .unwrap_or_else(|| panic!("{d:?} is not in the DSDT:\n{dsl}"));
                let irq = d.irq.unwrap();
                let trigger = match irq.trigger {
                    DevTrigger::Level => Trigger::Level,
                    DevTrigger::Edge => Trigger::Edge,
                };
                assert_irq_device(dev, hid, d.base, d.size, irq.intid, trigger);
            }
        }
        // Nothing else: every DT window and every DSDT window is a list entry's.
        dt_windows.sort_unstable();
        listed.sort_unstable();
        assert_eq!(dt_windows, listed, "DT windows vs the device list");
        let mut acpi_windows: Vec<(u64, u64)> =
            devs.values().flat_map(|b| crs_windows(b)).collect();
        acpi_windows.sort_unstable();
        let acpi_listed: Vec<(u64, u64)> = list
            .iter()
            .filter(|d| {
                matches!(
                    d.kind,
                    DeviceKind::Pl011
                        | DeviceKind::Pl031
                        | DeviceKind::VirtioMmio { .. }
                        | DeviceKind::TpmCrb
                )
            })
            .map(|d| (d.base, d.size))
            .collect();
        assert_eq!(acpi_windows, acpi_listed, "DSDT windows vs the device list");
        assert_eq!(
            t.contains_key(sig::TPM2),
            tpm_listed.is_some(),
            "a TPM2 table exactly when the list has a TPM"
        );
    }
}

/// A VM with the PCI Express root complex of `boards::devices::pcie`: the
/// `windows` device model's tables, from its device list (`uefi-acpi` with the
/// root complex) as el2 builds them.
fn with_pcie() -> (PlatformConfig, acpi_gen::PcieConfig) {
    use boards::devices::{device_list, Profile, VmDevices};
    let spec = boards::devices::pcie();
    let list = device_list(
        Profile::UefiAcpi,
        &VmDevices {
            virtio_slots: &[0, 31],
            vars_bank_size: boards::guest::FLASH_BANK_SIZE,
            tpm_crb: true,
            pcie: true,
            ..Default::default()
        },
    );
    let cfg = acpi_gen::profile::from_devices(2, None, &list).unwrap();
    let p = acpi_gen::profile::pcie(&spec);
    assert_eq!(cfg.pcie, Some(p), "the list's root complex in the tables");
    (cfg, p)
}

/// `(minimum, maximum, translation)` of each address-space descriptor of a
/// disassembled `_CRS`, in order.
fn address_ranges(body: &str) -> Vec<(u64, u64, u64)> {
    let val = |l: &str| hex(l.trim().trim_start_matches("0x").split(',').next().unwrap());
    let lines: Vec<&str> = body.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("// Range Minimum"))
        .map(|(i, l)| (val(l), val(lines[i + 1]), val(lines[i + 2])))
        .collect()
}

/// The `_PRT` entries of a disassembled host bridge: `[address, pin, source, gsiv]`.
fn prt(body: &str) -> Vec<[u64; 4]> {
    let start = body.find("Name (_PRT").expect("no _PRT");
    let end = body[start..]
        .find("Method (_OSC")
        .expect("_PRT before _OSC")
        + start;
    let num = |t: &str| match t {
        "Zero" => Some(0),
        "One" => Some(1),
        _ => t.strip_prefix("0x").map(hex),
    };
    let values: Vec<u64> = body[start..end]
        .lines()
        .skip(1)
        .filter_map(|l| num(l.trim().trim_end_matches(',').trim()))
        .collect();
    values
        .chunks(4)
        .map(|c| c.try_into().expect("a _PRT entry of 4 values"))
        .collect()
}

#[test]
fn pcie_root_complex_is_in_mcfg_madt_and_dsdt() {
    let spec = boards::devices::pcie();
    let (cfg, p) = with_pcie();
    let (_, t) = loaded_tables(&cfg);

    // MCFG, read by the hypervisor's own ACPI parser and by iasl.
    let mcfg = boards::acpi::Table::parse(&t[sig::MCFG]).unwrap();
    let ecams = boards::acpi::parse_mcfg(mcfg).unwrap();
    assert_eq!(ecams.len(), 1);
    let buses = spec.ecam.size >> 20;
    assert_eq!(
        (
            ecams[0].base,
            ecams[0].segment,
            ecams[0].bus_start,
            u64::from(ecams[0].bus_end)
        ),
        (spec.ecam.base, 0, 0, buses - 1)
    );
    let f = fields(&disassemble("MCFG", &t[sig::MCFG]));
    assert_eq!(one(&f, "Base Address"), spec.ecam.base);
    assert_eq!(one(&f, "End Bus Number"), buses - 1);

    // The MADT's GIC MSI Frame: the v2m frame with its SPIs.
    let f = fields(&disassemble("APIC", &t[sig::MADT]));
    assert_eq!(one(&f, "MSI Frame ID"), 0);
    assert_eq!(one(&f, "Select SPI"), 1);
    assert_eq!(one(&f, "SPI Count"), u64::from(spec.v2m().unwrap().count));
    assert_eq!(
        one(&f, "SPI Base"),
        u64::from(spec.v2m().unwrap().first_intid)
    );
    assert_eq!(
        all(&f, "Base Address").last(),
        Some(&spec.v2m().unwrap().frame.base),
        "the frame's base"
    );

    // The DSDT's host bridge.
    let dsl = disassemble("DSDT", &t[sig::DSDT]);
    let devs = devices(&dsl);
    let pci = &devs["PCI0"];
    assert!(pci.contains("Name (_HID, EisaId (\"PNP0A08\")"), "{pci}");
    assert!(pci.contains("Name (_CID, EisaId (\"PNP0A03\")"), "{pci}");
    for n in ["_SEG", "_BBN"] {
        assert!(pci.contains(&format!("Name ({n}, Zero)")), "{pci}");
    }
    assert!(pci.contains("Name (_CCA, One)"), "{pci}");
    assert!(pci.contains("WordBusNumber (ResourceProducer"), "{pci}");
    assert!(pci.contains("DWordMemory (ResourceProducer"), "{pci}");
    assert!(pci.contains("DWordIO (ResourceProducer"), "{pci}");
    let m = spec.mmio32;
    assert_eq!(
        address_ranges(pci),
        [
            (0, buses - 1, 0),
            (m.base, m.base + m.size - 1, 0),
            (0, spec.pio.size - 1, spec.pio.base),
        ]
    );
    // INTx: every device's four pins, swizzled onto the four SPIs.
    let entries = prt(pci);
    assert_eq!(entries.len(), 32 * 4);
    for [addr, pin, source, gsiv] in entries {
        assert_eq!(addr & 0xffff, 0xffff, "any function");
        let dev = (addr >> 16) as u32;
        assert_eq!(source, 0, "a global interrupt, no link device");
        let want = spec.intx_first_intid + (dev + pin as u32) % 4;
        assert_eq!(gsiv, u64::from(want), "device {dev} pin {pin}");
        assert_eq!(gsiv, u64::from(p.intx_gsiv(dev, pin as u32)));
    }
    assert!(
        pci.contains("Method (_OSC, 4, NotSerialized)")
            && pci.contains("ToUUID (\"33db4d5b-1ff7-401c-9657-7441c03dd766\")"),
        "{pci}"
    );
    let res = &devs["RES0"];
    assert!(res.contains("EisaId (\"PNP0C02\")"), "{res}");
    assert_eq!(crs_windows(res), [(spec.ecam.base, spec.ecam.size)]);

    // A VM without a root complex has none of it.
    let (_, plain) = loaded_tables(&uefi_acpi(2, None, &[0, 31]));
    assert!(!plain.contains_key(sig::MCFG));
    let plain_dsl = disassemble("DSDT", &plain[sig::DSDT]);
    assert!(!devices(&plain_dsl).contains_key("PCI0"));
    let f = fields(&disassemble("APIC", &plain[sig::MADT]));
    assert!(all(&f, "SPI Base").is_empty());
}

#[test]
fn pcie_configurations_the_tables_cannot_carry_are_refused() {
    use acpi_gen::ConfigError;
    let (good, p) = with_pcie();
    assert_eq!(good.validate(), Ok(()));
    let with = |f: &dyn Fn(&mut acpi_gen::PcieConfig)| {
        let mut c = good.clone();
        let mut q = p;
        f(&mut q);
        c.pcie = Some(q);
        c.validate()
    };
    assert_eq!(with(&|q| q.ecam.size = 3 << 19), Err(ConfigError::BadPcie));
    assert_eq!(
        with(&|q| q.ecam.size = 512 << 20),
        Err(ConfigError::BadPcie)
    );
    assert_eq!(with(&|q| q.pio.size = 0x2_0000), Err(ConfigError::BadPcie));
    assert!(matches!(
        with(&|q| q.mmio32.base = 0xffff_0000),
        Err(ConfigError::RegionNot32Bit { .. })
    ));
    let uart = good.uart.gsiv;
    assert_eq!(
        with(&|q| q.intx_first_gsiv = uart - 1),
        Err(ConfigError::SharedInterrupt { gsiv: uart })
    );
    let frame = p.msi_frame.unwrap();
    assert_eq!(
        with(&|q| q.msi_frame = Some(acpi_gen::MsiFrame {
            spi_count: 0,
            ..frame
        })),
        Err(ConfigError::BadPcie)
    );
    assert_eq!(
        with(&|q| q.msi_frame = Some(acpi_gen::MsiFrame {
            first_spi: 1000,
            ..frame
        })),
        Err(ConfigError::BadPcie)
    );
    assert!(matches!(
        with(&|q| q.msi_frame = Some(acpi_gen::MsiFrame {
            first_spi: q.intx_first_gsiv,
            ..frame
        })),
        Err(ConfigError::SharedInterrupt { .. })
    ));
}

/// A root complex whose MSIs go to the ITS: the MADT has a GIC ITS structure (and
/// no MSI frame), and an IORT maps every requester ID onto the ITS's DeviceIDs;
/// iasl decodes both without complaint. Field offsets checked by hand too.
#[test]
fn an_its_root_complex_gets_a_madt_its_and_an_iort() {
    use acpi_gen::tables::{iort, madt};
    let spec = boards::devices::pcie_with(boards::devices::Msi::Its);
    let mut cfg = uefi_acpi(2, None, &[0, 31]);
    let p = acpi_gen::profile::pcie(&spec);
    assert_eq!(p.msi_frame, None);
    assert_eq!(p.its_base, Some(0x0808_0000));
    cfg.pcie = Some(p);
    let (_, t) = loaded_tables(&cfg);

    let dsl = disassemble("APIC", &t[sig::MADT]);
    eprintln!("{dsl}");
    let f = fields(&dsl);
    assert_eq!(one(&f, "Translation ID"), 0);
    assert!(all(&f, "Base Address").contains(&0x0808_0000));
    assert!(all(&f, "MSI Frame ID").is_empty(), "no v2m frame");
    let m = &t[sig::MADT];
    let its = m
        .windows(2)
        .position(|w| w == [madt::GIC_ITS, madt::GIC_ITS_LEN])
        .unwrap();
    assert_eq!(le(&m[its + 8..its + 16]), 0x0808_0000);

    let b = &t[sig::IORT];
    assert_eq!(sum(b), 0, "checksum");
    assert_eq!(b[8], iort::REVISION);
    assert_eq!(
        le(&b[iort::NODE_COUNT_OFFSET..iort::NODE_COUNT_OFFSET + 4]),
        2
    );
    let first = le(&b[iort::NODE_ARRAY_OFFSET_OFFSET..iort::NODE_ARRAY_OFFSET_OFFSET + 4]);
    assert_eq!(first, iort::FIRST_NODE as u64);
    // ITS group: one ITS, the MADT's ID 0.
    let g = &b[iort::FIRST_NODE..];
    assert_eq!(g[0], iort::NODE_ITS_GROUP);
    let g_len = le(&g[1..3]) as usize;
    assert_eq!(g_len, iort::ITS_GROUP_LEN);
    assert_eq!(le(&g[16..20]), 1);
    assert_eq!(le(&g[20..24]), 0);
    // Root complex: segment 0, one mapping of 0x10000 IDs onto the ITS group.
    let r = &g[g_len..];
    assert_eq!(r[0], iort::NODE_ROOT_COMPLEX);
    assert_eq!(le(&r[1..3]) as usize, r.len(), "the last node");
    assert_eq!(le(&r[8..12]), 1, "one ID mapping");
    let map = le(&r[12..16]) as usize;
    assert_eq!(le(&r[28..32]), 0, "PCI segment 0");
    let m = &r[map..map + iort::ID_MAPPING_LEN];
    assert_eq!(le(&m[0..4]), 0, "input base");
    assert_eq!(le(&m[4..8]), 0xffff, "IDs minus one");
    assert_eq!(le(&m[8..12]), 0, "output base");
    assert_eq!(le(&m[12..16]), iort::FIRST_NODE as u64, "to the ITS group");
    let dsl = disassemble("IORT", b);
    eprintln!("{dsl}");

    // A v2m root complex has no IORT and no MADT ITS.
    let (cfg, _) = with_pcie();
    let (_, t) = loaded_tables(&cfg);
    assert!(!t.contains_key(sig::IORT));
    assert!(all(
        &fields(&disassemble("APIC", &t[sig::MADT])),
        "Translation ID"
    )
    .is_empty());
    // A misaligned ITS is refused.
    let mut bad = p;
    bad.its_base = Some(0x0808_1000);
    let mut cfg = uefi_acpi(2, None, &[0, 31]);
    cfg.pcie = Some(bad);
    assert!(acpi_gen::build(&cfg).is_err());
}
