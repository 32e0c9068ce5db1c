use super::*;
use crate::efivars::build::{signature_list, store};
use crate::efivars::{
    Guid, CUSTOM_MODE_ENABLE, EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
    SECURE_BOOT_ENABLE_DISABLE, VAR_ADDED,
};

const OWNER: Guid = Guid::new(0x77fa_9abd, 0x0359, 0x4d32, [9; 8]);

/// A real certificate (the vTPM's manufacturer CA for a fixed key) standing in
/// for Microsoft's, and its thumbprint.
fn cert() -> (Vec<u8>, [u8; 20], String) {
    let ca = vtpm::ek::ManufacturerCa::new(&[7; 32], &[1; 16]).unwrap();
    let der = ca.certificate_der().to_vec();
    let cn = efivars::subject_common_name(&der).expect("the CA has a common name");
    let t = efivars::sha1_thumbprint(&der);
    (der, t, cn)
}

/// A Secure Boot store: PK, KEK and db each holding `der`, plus `extra`.
fn sb_store(der: &[u8], extra: &[(&str, Guid, u8, &[u8])], skip: &str) -> Vec<u8> {
    let list = signature_list(EFI_CERT_X509, &[(OWNER, der)]);
    let mut vars: Vec<(&str, Guid, u8, &[u8])> = vec![
        ("PK", EFI_GLOBAL_VARIABLE, VAR_ADDED, &list),
        ("KEK", EFI_GLOBAL_VARIABLE, VAR_ADDED, &list),
        ("db", EFI_IMAGE_SECURITY_DATABASE, VAR_ADDED, &list),
        (
            "SecureBootEnable",
            SECURE_BOOT_ENABLE_DISABLE,
            VAR_ADDED,
            &[1],
        ),
        ("CustomMode", CUSTOM_MODE_ENABLE, VAR_ADDED, &[0]),
    ];
    vars.retain(|v| v.0 != skip);
    vars.extend_from_slice(extra);
    store(true, &vars)
}

fn iso(udf: bool) -> Vec<u8> {
    let mut img = vec![0u8; MEDIA_HEAD];
    let mut put = |i: usize, ty: u8, id: &[u8; 5]| {
        let at = VOLUME_DESCRIPTORS_AT + i * VOLUME_DESCRIPTOR_SIZE;
        img[at] = ty;
        img[at + 1..at + 6].copy_from_slice(id);
        img[at + 6] = 1;
    };
    put(0, 1, b"CD001");
    put(1, 255, b"CD001");
    if udf {
        put(2, 0, b"BEA01");
        put(3, 0, b"NSR02");
        put(4, 0, b"TEA01");
    }
    img
}

fn ready(der: &[u8]) -> VmFacts {
    VmFacts {
        name: "win".into(),
        device_model: DeviceModel::Windows,
        firmware: true,
        vars: Some(sb_store(der, &[], "")),
        tpm_nv: 256 << 10,
        vcpus: 2,
        memory: 4 << 30,
        system_disk: Some((0, 64 << 30)),
        media: vec![MediaFacts {
            index: 1,
            len: 5 << 30,
            kind: Some(MediaKind::Iso9660Udf),
        }],
        cpu: CpuFacts {
            described: "test CPU".into(),
            lse: Some(true),
        },
    }
}

fn verdicts(f: &VmFacts) -> Vec<Check> {
    let (_, t, cn) = cert();
    evaluate_with(f, &cn, &t)
}

fn unmet(f: &VmFacts) -> Vec<&'static str> {
    verdicts(f)
        .into_iter()
        .filter(|c| !c.met)
        .map(|c| c.name)
        .collect()
}

#[test]
fn a_windows_vm_with_every_requirement_meets_them_all() {
    let (der, t, cn) = cert();
    let checks = verdicts(&ready(&der));
    assert_eq!(checks.len(), 11, "{checks:#?}");
    assert!(
        checks.iter().all(|c| c.met && c.status == "ok"),
        "{checks:#?}"
    );
    let db = checks.iter().find(|c| c.name.starts_with("db:")).unwrap();
    assert_eq!(db.found, format!("{cn} (sha1 {})", hex(&t)));
    let text = render("win", &checks);
    assert!(text.ends_with("windows-ready: VM 'win' meets all 11 requirements\n"));
    assert_eq!(text.lines().count(), 12);
}

#[test]
fn each_resource_below_the_minimum_fails_its_line_only() {
    let (der, ..) = cert();
    let mut f = ready(&der);
    f.memory = 2 << 30;
    assert_eq!(unmet(&f), ["RAM >= 4 GiB"]);
    let mut f = ready(&der);
    f.vcpus = 1;
    assert_eq!(unmet(&f), ["cores >= 2"]);
    let mut f = ready(&der);
    f.system_disk = Some((0, (64 << 30) - 4096));
    assert_eq!(unmet(&f), ["system disk >= 64 GiB"]);
    let c = verdicts(&f);
    assert_eq!(c.iter().find(|c| !c.met).unwrap().status, "too small");
    f.system_disk = None;
    assert_eq!(unmet(&f), ["system disk >= 64 GiB"]);
    let mut f = ready(&der);
    f.tpm_nv = 0;
    assert_eq!(unmet(&f), ["TPM 2.0"]);
    let mut f = ready(&der);
    f.cpu.lse = Some(false);
    assert_eq!(unmet(&f), ["CPU: Armv8.1 atomics (LSE)"]);
    f.cpu.lse = None;
    assert_eq!(unmet(&f), ["CPU: Armv8.1 atomics (LSE)"]);
}

#[test]
fn missing_or_unrecognised_install_media_and_the_wrong_model_fail() {
    let (der, ..) = cert();
    let mut f = ready(&der);
    f.media.clear();
    assert_eq!(unmet(&f), ["install media"]);
    f.media.push(MediaFacts {
        index: 1,
        len: 1 << 20,
        kind: None,
    });
    assert_eq!(unmet(&f), ["install media"]);
    let mut f = ready(&der);
    f.device_model = DeviceModel::UefiAcpi;
    assert_eq!(unmet(&f), ["device model"]);
    let text = render("win", &verdicts(&f));
    assert!(
        text.ends_with("does not meet 1 of 11 requirements: device model\n"),
        "{text}"
    );
}

#[test]
fn a_linux_vm_fails_firmware_and_every_secure_boot_line() {
    let (der, ..) = cert();
    let mut f = ready(&der);
    f.device_model = DeviceModel::LinuxDt;
    f.firmware = false;
    f.vars = None;
    assert_eq!(
        unmet(&f),
        [
            "UEFI firmware",
            "Secure Boot capable",
            "Secure Boot enabled",
            "db: Windows Production PCA 2011",
            "device model"
        ]
    );
}

#[test]
fn secure_boot_lines_follow_the_variable_store() {
    let (der, t, cn) = cert();
    let names = |c: [Check; 3]| c.map(|c| (c.met, c.status));
    let all_ok = [(true, "ok"); 3];
    let store_ok = sb_store(&der, &[], "");
    assert_eq!(
        names(secure_boot_checks(Some(&store_ok), true, &cn, &t)),
        all_ok
    );
    // A store without the wanted certificate names what db holds.
    let other = [0u8; 20];
    let [_, _, db] = secure_boot_checks(Some(&store_ok), true, &cn, &other);
    assert_eq!((db.met, db.status), (false, "MISSING"));
    assert!(db.found.contains("with another thumbprint"), "{}", db.found);
    assert!(db.found.contains(&cn));
    // No PK: setup mode, Secure Boot off.
    let no_pk = sb_store(&der, &[], "PK");
    let [cap, en, db] = secure_boot_checks(Some(&no_pk), true, &cn, &t);
    assert!(cap.met && db.met);
    assert_eq!(
        (en.met, en.status, en.found.as_str()),
        (false, "off", "no PK")
    );
    let no_db = sb_store(&der, &[], "db");
    let [_, en, db] = secure_boot_checks(Some(&no_db), true, &cn, &t);
    assert!(!en.met && !db.met && db.found == "no db");
    // SecureBootEnable 0 or CustomMode on: off.
    let disabled = sb_store(
        &der,
        &[(
            "SecureBootEnable",
            SECURE_BOOT_ENABLE_DISABLE,
            VAR_ADDED,
            &[0],
        )],
        "SecureBootEnable",
    );
    let [_, en, _] = secure_boot_checks(Some(&disabled), true, &cn, &t);
    assert_eq!(
        (en.met, en.found.as_str()),
        (false, "SecureBootEnable is 0")
    );
    let custom = sb_store(
        &der,
        &[("CustomMode", CUSTOM_MODE_ENABLE, VAR_ADDED, &[1])],
        "CustomMode",
    );
    let [_, en, _] = secure_boot_checks(Some(&custom), true, &cn, &t);
    assert_eq!((en.met, en.found.as_str()), (false, "CustomMode is on"));
    // A plain store cannot enforce Secure Boot.
    let list = signature_list(EFI_CERT_X509, &[(OWNER, &der)]);
    let plain = store(
        false,
        &[
            ("PK", EFI_GLOBAL_VARIABLE, VAR_ADDED, &list),
            ("KEK", EFI_GLOBAL_VARIABLE, VAR_ADDED, &list),
            ("db", EFI_IMAGE_SECURITY_DATABASE, VAR_ADDED, &list),
        ],
    );
    let [cap, en, _] = secure_boot_checks(Some(&plain), true, &cn, &t);
    assert!(!cap.met && !en.met);
    // Never written, garbage, no firmware.
    let [cap, en, db] = secure_boot_checks(None, true, &cn, &t);
    assert!(!cap.met && en.status == "off" && !db.met);
    assert!(cap.found.contains("never written"));
    let [cap, ..] = secure_boot_checks(Some(&[0x5a; 8192]), true, &cn, &t);
    assert_eq!((cap.met, cap.status), (false, "BAD"));
    let [cap, ..] = secure_boot_checks(Some(&store_ok), false, &cn, &t);
    assert_eq!((cap.met, cap.found.as_str()), (false, "no UEFI firmware"));
}

#[test]
fn optical_media_is_recognised_by_its_volume_descriptors() {
    assert_eq!(media_kind(&iso(false)), Some(MediaKind::Iso9660));
    assert_eq!(media_kind(&iso(true)), Some(MediaKind::Iso9660Udf));
    let mut udf_only = iso(true);
    udf_only[VOLUME_DESCRIPTORS_AT + 1..VOLUME_DESCRIPTORS_AT + 6].copy_from_slice(b"XXXXX");
    assert_eq!(media_kind(&udf_only), Some(MediaKind::Udf));
    // BEA01 without an NSR descriptor is not UDF.
    let mut bea_only = udf_only.clone();
    let nsr = VOLUME_DESCRIPTORS_AT + 3 * VOLUME_DESCRIPTOR_SIZE;
    bea_only[nsr + 1..nsr + 6].copy_from_slice(b"XXXXX");
    assert_eq!(media_kind(&bea_only), None);
    assert_eq!(media_kind(&vec![0; MEDIA_HEAD]), None);
    assert_eq!(media_kind(b"short"), None);
    // Cut right after the first descriptor's identifier: still ISO 9660.
    assert_eq!(
        media_kind(&iso(false)[..VOLUME_DESCRIPTORS_AT + 6]),
        Some(MediaKind::Iso9660)
    );
}

#[test]
fn lse_comes_from_the_cpu_model_or_cpuinfo() {
    assert_eq!(qemu_model_has_lse(TCG_CPU), Some(true));
    assert_eq!(cpu_facts(Accel::Tcg, None).lse, Some(true));
    // `run --cpu MODEL` overrides the model, under TCG and KVM alike.
    assert_eq!(cpu_facts(Accel::Tcg, Some("cortex-a72")).lse, Some(false));
    assert_eq!(cpu_facts(Accel::Kvm, Some("cortex-a76")).lse, Some(true));
    assert!(cpu_facts(Accel::Kvm, Some("host"))
        .described
        .contains("host"));
    assert_eq!(qemu_model_has_lse("cortex-a57"), Some(false));
    assert_eq!(qemu_model_has_lse("neoverse-n1,pauth=off"), Some(true));
    assert_eq!(qemu_model_has_lse("some-future-cpu"), None);
    let arm =
        "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp\n";
    assert_eq!(cpuinfo_has_lse(arm), Some(true));
    let a72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n";
    assert_eq!(cpuinfo_has_lse(a72), Some(false));
    assert_eq!(cpuinfo_has_lse("flags\t\t: fpu vme sse2\n"), None);
}
