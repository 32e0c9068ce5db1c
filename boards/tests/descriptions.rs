//! Board descriptions checked against what real firmware hands over: QEMU's own
//! `virt` DTBs (2 and 4 CPUs) and ACPI tables, the upstream Linux device tree of
//! the Snapdragon X Elite (X1E80100), and Ampere Altra ACPI tables built here
//! from an AADP's published figures. A mismatch fails the test.

use boards::acpi::{self, AcpiError, Table};
use boards::board::{Ecam, AMPERE_ALTRA, QEMU_VIRT, SNAPDRAGON_X_ELITE};
use boards::discover::Range;
use boards::{crosscheck, discover, Board, Uart, UartKind};

const VIRT_2CPU: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-2cpu-max.dtb");
const VIRT_4CPU: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-4cpu-max.dtb");
const VIRT_2CPU_A72: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-2cpu.dtb");
const X1E_CRD: &[u8] = include_bytes!("../testdata/linux-6.12-x1e80100-crd.dtb");

fn no_mismatch(p: &boards::Platform, b: &Board) {
    let m = crosscheck(p, b);
    assert!(m.is_empty(), "{}: {m:#?}", b.name);
}

#[test]
fn qemu_virt_dtbs_agree_with_the_description() {
    for (dtb, n) in [(VIRT_2CPU, 2u64), (VIRT_4CPU, 4), (VIRT_2CPU_A72, 2)] {
        let p = discover(dtb).unwrap();
        assert_eq!(p.board, Some(&QEMU_VIRT));
        assert!(p.fallbacks.is_empty(), "{:?}", p.fallbacks);
        assert_eq!(p.cpus, (0..n).collect::<Vec<_>>());
        assert_eq!(
            p.gic.its.iter().map(|r| r.base).collect::<Vec<_>>(),
            [0x0808_0000]
        );
        assert_eq!(p.pci_ecam, QEMU_VIRT.pci_ecam);
        no_mismatch(&p, &QEMU_VIRT);
    }
}

#[test]
fn snapdragon_x_elite_linux_dt_agrees_with_the_description() {
    let p = discover(X1E_CRD).unwrap();
    assert_eq!(p.board, Some(&SNAPDRAGON_X_ELITE));
    // The tree's /memory has size 0 (the boot loader fills it): the description's
    // DRAM window stands in, and says so.
    assert_eq!(p.fallbacks, ["memory"]);
    assert_eq!(p.memory, SNAPDRAGON_X_ELITE.memory);
    assert_eq!(
        p.uart,
        Some(Uart {
            kind: UartKind::QcomGeni,
            regs: Range {
                base: 0x89_4000,
                size: 0x4000
            },
            intid: Some(845)
        })
    );
    assert_eq!(p.gic.redistributor_stride, Some(0x4_0000));
    // The ITS node is disabled by the firmware's tree.
    assert!(p.gic.its.is_empty());
    let mut expect = Vec::new();
    for cluster in 0..3u64 {
        for core in 0..4u64 {
            expect.push(cluster << 16 | core << 8);
        }
    }
    assert_eq!(p.cpus, expect);
    assert!(p.reserved.len() > 40);
    no_mismatch(&p, &SNAPDRAGON_X_ELITE);
}

#[test]
fn a_wrong_description_is_reported_field_by_field() {
    let p = discover(VIRT_4CPU).unwrap();
    let mut wrong = QEMU_VIRT;
    wrong.gic.gicd.base = 0x2f00_0000;
    wrong.uart.intid = Some(34);
    wrong.max_cpus = 2;
    let m = crosscheck(&p, &wrong);
    let what: Vec<&str> = m.iter().map(|m| m.what).collect();
    assert_eq!(what, ["uart.intid", "gic.gicd", "cpus"]);
    assert_eq!(
        m[1].to_string(),
        "gic.gicd: the board description says 0x2f000000, the firmware says 0x8000000; using the firmware's"
    );
    // The Snapdragon description against QEMU's tree: everything differs.
    assert!(crosscheck(&p, &SNAPDRAGON_X_ELITE).len() >= 5);
}

// ---- ACPI -------------------------------------------------------------------

const QEMU_ACPI: [&[u8]; 5] = [
    include_bytes!("../testdata/qemu-virt-acpi/APIC"),
    include_bytes!("../testdata/qemu-virt-acpi/FACP"),
    include_bytes!("../testdata/qemu-virt-acpi/GTDT"),
    include_bytes!("../testdata/qemu-virt-acpi/MCFG"),
    include_bytes!("../testdata/qemu-virt-acpi/SPCR"),
];

#[test]
fn qemu_virt_acpi_tables_agree_with_the_description() {
    let ram = [Range {
        base: 0x4000_0000,
        size: 1 << 30,
    }];
    let p = acpi::discover_acpi(&QEMU_ACPI, &ram).unwrap();
    assert_eq!(p.board, Some(&QEMU_VIRT));
    assert_eq!(p.model, "BOCHS BXPC");
    assert_eq!(p.cpus, [0, 1]);
    assert_eq!(p.gic.gicd.base, 0x0800_0000);
    assert_eq!(p.gic.gicr[0].base, 0x080a_0000);
    assert_eq!(p.gic.maintenance_intid, Some(25));
    assert_eq!(
        p.uart.map(|u| (u.kind, u.regs.base, u.intid)),
        Some((UartKind::Pl011, 0x0900_0000, Some(33)))
    );
    assert!(p.fallbacks.is_empty());
    no_mismatch(&p, &QEMU_VIRT);
}

/// An ACPI table: header (OEM "Ampere"/"Altra   ") + body, checksum fixed.
fn table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(sig);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend_from_slice(b"Ampere");
    t.extend_from_slice(b"Altra   ");
    t.extend_from_slice(&2u32.to_le_bytes());
    t.extend_from_slice(b"AMP.");
    t.extend_from_slice(&0x0100_0013u32.to_le_bytes());
    t.extend_from_slice(body);
    let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

fn le(v: &mut Vec<u8>, x: u64, n: usize) {
    v.extend_from_slice(&x.to_le_bytes()[..n]);
}

/// The AADP's MPIDRs in its MADT's order (first eight of 32, from the dump).
const AADP_MPIDRS: [u64; 8] = [
    0x10_0000, 0x18_0000, 0x16_0000, 0x1e_0000, 0x08_0000, 0x20_0000, 0x0e_0000, 0x26_0000,
];

/// Ampere Altra tables as an AADP's firmware builds them (figures from its
/// published `iasl` dump, written out independently of the description).
fn ampere_tables() -> Vec<Vec<u8>> {
    let mut madt = Vec::new();
    le(&mut madt, 0, 4); // local interrupt controller address
    le(&mut madt, 0, 4); // flags
    for (i, &mpidr) in AADP_MPIDRS.iter().enumerate() {
        let mut g = vec![0x0b, 80, 0, 0];
        le(&mut g, 0, 4); // CPU interface number
        le(&mut g, (mpidr >> 8) + i as u64, 4); // UID
        le(&mut g, 1, 4); // enabled
        le(&mut g, 0, 4); // parking protocol
        le(&mut g, 0x17, 4); // performance interrupt
        le(&mut g, 0, 8); // parked address
        le(&mut g, 0, 8); // GICC base
        le(&mut g, 0, 8); // GICV
        le(&mut g, 0, 8); // GICH
        le(&mut g, 0x19, 4); // VGIC maintenance
        le(&mut g, 0, 8); // GICR base (the GICR structure describes them)
        le(&mut g, mpidr, 8);
        g.extend_from_slice(&[0, 0]);
        le(&mut g, 0x15, 2); // SPE overflow
        assert_eq!(g.len(), 80);
        madt.extend(g);
    }
    // A disabled CPU is not counted.
    let mut off = madt[8..88].to_vec();
    off[12] = 0;
    off[68..76].copy_from_slice(&0x27_0100u64.to_le_bytes());
    madt.extend(off);
    let mut d = vec![0x0c, 24, 0, 0];
    le(&mut d, 0, 4);
    le(&mut d, 0x1001_0000_0000, 8);
    le(&mut d, 0, 4);
    d.extend_from_slice(&[3, 0, 0, 0]);
    madt.extend(d);
    let mut r = vec![0x0e, 16, 0, 0];
    le(&mut r, 0x1001_0014_0000, 8);
    le(&mut r, 0x100_0000, 4);
    madt.extend(r);
    for n in 0..8u64 {
        let mut i = vec![0x0f, 20, 0, 0];
        le(&mut i, n, 4);
        le(&mut i, 0x1001_0004_0000 + n * 0x2_0000, 8);
        le(&mut i, 0, 4);
        madt.extend(i);
    }
    let mut gtdt = Vec::new();
    le(&mut gtdt, u64::MAX, 8);
    le(&mut gtdt, 0, 4);
    for gsiv in [0x1d, 0x1e, 0x1b, 0x1a] {
        le(&mut gtdt, gsiv, 4);
        le(&mut gtdt, 0, 4);
    }
    le(&mut gtdt, u64::MAX, 8);
    le(&mut gtdt, 0, 8);
    let mut spcr = vec![3, 0, 0, 0, 0, 0x20, 0, 3];
    le(&mut spcr, 0x1000_0260_0000, 8);
    spcr.extend_from_slice(&[8, 0]);
    le(&mut spcr, 0x62, 4);
    spcr.extend_from_slice(&[7, 0, 1, 0, 2, 0]);
    spcr.resize(80 - 36, 0);
    let mut mcfg = vec![0; 8];
    for (base, seg) in [
        (0x33ff_f000_0000u64, 12u64),
        (0x37ff_f000_0000, 13),
        (0x3fff_f000_0000, 0),
        (0x23ff_f000_0000, 2),
        (0x2bff_f000_0000, 4),
        (0x2fff_f000_0000, 5),
    ] {
        le(&mut mcfg, base, 8);
        le(&mut mcfg, seg, 2);
        mcfg.extend_from_slice(&[0, 0xff, 0, 0, 0, 0]);
    }
    let mut fadt = vec![0; 276 - 36];
    fadt[129 - 36] = 1; // PSCI compliant, SMC
    vec![
        table(b"APIC", 5, &madt),
        table(b"GTDT", 3, &gtdt),
        table(b"SPCR", 2, &spcr),
        table(b"MCFG", 1, &mcfg),
        table(b"FACP", 6, &fadt),
    ]
}

#[test]
fn ampere_altra_acpi_tables_agree_with_the_description() {
    let tables = ampere_tables();
    let refs: Vec<&[u8]> = tables.iter().map(Vec::as_slice).collect();
    // The UEFI memory map of a 32 GiB kit (SRAT's ranges).
    let ram = [
        Range {
            base: 0x9000_0000,
            size: 0x7000_0000,
        },
        Range {
            base: 0x801_0000_0000,
            size: 28 << 30,
        },
    ];
    let p = acpi::discover_acpi(&refs, &ram).unwrap();
    assert_eq!(p.board, Some(&AMPERE_ALTRA));
    assert_eq!(p.cpus, AADP_MPIDRS);
    assert_eq!(p.gic.its.len(), 8);
    assert_eq!(p.psci, Some(boards::PsciConduit::Smc));
    assert_eq!(
        p.pci_ecam[2],
        Ecam {
            base: 0x3fff_f000_0000,
            segment: 0,
            bus_start: 0,
            bus_end: 255
        }
    );
    assert!(p.fallbacks.is_empty());
    no_mismatch(&p, &AMPERE_ALTRA);

    // Without a GTDT the description's timer stands in, and says so; without a
    // memory map, its DRAM windows.
    let no_gtdt: Vec<&[u8]> = refs
        .iter()
        .copied()
        .filter(|t| &t[..4] != b"GTDT")
        .collect();
    let q = acpi::discover_acpi(&no_gtdt, &[]).unwrap();
    assert_eq!(q.fallbacks, ["timer", "memory"]);
    assert_eq!(q.timer, AMPERE_ALTRA.timer);
}

#[test]
fn malformed_acpi_tables_are_errors_not_panics() {
    let tables = ampere_tables();
    let madt = &tables[0];
    // Checksum.
    let mut bad = madt.clone();
    bad[40] ^= 1;
    assert_eq!(
        Table::parse(&bad).unwrap_err(),
        AcpiError::BadTable(*b"APIC")
    );
    // Length past the bytes given.
    assert!(Table::parse(&madt[..madt.len() - 1]).is_err());
    // A structure of length 0 (would loop forever) or running past the table.
    for len in [0u8, 1, 255] {
        let mut body = madt[36..].to_vec();
        body[8 + 1] = len;
        let t = table(b"APIC", 5, &body);
        assert_eq!(
            acpi::parse_madt(Table::parse(&t).unwrap()).unwrap_err(),
            AcpiError::Malformed("MADT interrupt-controller structure")
        );
    }
    // Truncated GTDT and SPCR.
    let short = table(b"GTDT", 3, &[0; 8]);
    assert!(acpi::parse_gtdt(Table::parse(&short).unwrap()).is_err());
    let short = table(b"SPCR", 2, &[3]);
    assert!(acpi::parse_spcr(Table::parse(&short).unwrap()).is_err());
    let odd = table(b"MCFG", 1, &[0; 8 + 15]);
    assert!(acpi::parse_mcfg(Table::parse(&odd).unwrap()).is_err());
    // No MADT at all.
    assert_eq!(
        acpi::discover_acpi(&[&tables[1]], &[]).unwrap_err(),
        AcpiError::Missing("MADT")
    );
    // Every prefix of every table: never a panic.
    for t in &tables {
        for n in 0..t.len() {
            let _ = Table::parse(&t[..n]);
        }
    }
}

#[test]
fn rsdp_and_xsdt_lead_to_the_tables() {
    let mut rsdp = b"RSD PTR ".to_vec();
    rsdp.push(0); // checksum (v1 part)
    rsdp.extend_from_slice(b"Ampere");
    rsdp.push(2); // revision
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // RSDT
    rsdp.extend_from_slice(&36u32.to_le_bytes()); // length
    rsdp.extend_from_slice(&0x8_1234_0000u64.to_le_bytes()); // XSDT
    rsdp.extend_from_slice(&[0, 0, 0, 0]); // extended checksum + reserved
    let s1 = rsdp[..20].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    rsdp[8] = 0u8.wrapping_sub(s1);
    let s2 = rsdp.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    rsdp[32] = 0u8.wrapping_sub(s2);
    assert_eq!(acpi::rsdp_xsdt(&rsdp), Ok(0x8_1234_0000));
    let mut broken = rsdp.clone();
    broken[24] ^= 1;
    assert_eq!(acpi::rsdp_xsdt(&broken), Err(AcpiError::BadRsdp));

    let mut body = Vec::new();
    for a in [0x1000u64, 0x2000] {
        body.extend_from_slice(&a.to_le_bytes());
    }
    let xsdt = table(b"XSDT", 1, &body);
    assert_eq!(acpi::xsdt_entries(&xsdt), Ok(vec![0x1000, 0x2000]));
}
