//! Turning Debian's `vmlinuz-*` into the uncompressed arm64 `Image` the
//! hypervisor's loader expects.
//!
//! Debian's arm64 `vmlinuz` has been shipped in three shapes: a plain `Image`
//! (with its EFI stub, so it starts with `MZ`), a gzip stream of one, and an EFI
//! "zboot" image whose PE header names a compressed payload. Compressed payloads are
//! expanded with the host's `gzip`, `xz` or `zstd`.

use std::io::Write;
use std::process::{Command, Stdio};

/// Offset and value of the arm64 `Image` header magic ("ARM\x64", see
/// Documentation/arch/arm64/booting.rst).
pub const ARM64_MAGIC_OFFSET: usize = 56;
/// The arm64 `Image` header magic.
pub const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
/// Gzip stream magic.
pub const GZIP_MAGIC: &[u8; 2] = b"\x1f\x8b";
/// Offsets in the EFI zboot header (drivers/firmware/efi/libstub/zboot-header.S).
pub mod zboot {
    /// PE/COFF "MZ" at offset 0.
    pub const MZ: &[u8; 2] = b"MZ";
    /// "zimg" at offset 4 marks a zboot image.
    pub const MAGIC_OFFSET: usize = 4;
    pub const MAGIC: &[u8; 4] = b"zimg";
    /// u32 LE offset of the compressed payload.
    pub const PAYLOAD_OFFSET: usize = 8;
    /// u32 LE size of the compressed payload.
    pub const PAYLOAD_SIZE: usize = 12;
    /// NUL-padded compression name ("gzip", "zstd", "xzkern", ...).
    pub const COMP_TYPE: usize = 24;
    pub const COMP_TYPE_LEN: usize = 8;
}

/// The shape the kernel arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelFormat {
    /// Already an uncompressed `Image` (with an EFI stub when it starts with "MZ").
    Image { efi_stub: bool },
    /// A gzip stream around an `Image`.
    Gzip,
    /// An EFI zboot image whose payload used the named compression.
    Zboot(String),
}

impl std::fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelFormat::Image { efi_stub: true } => {
                f.write_str("uncompressed arm64 Image with EFI stub")
            }
            KernelFormat::Image { efi_stub: false } => f.write_str("uncompressed arm64 Image"),
            KernelFormat::Gzip => f.write_str("gzip-compressed arm64 Image"),
            KernelFormat::Zboot(c) => write!(f, "EFI zboot image ({c} payload)"),
        }
    }
}

/// Whether `bytes` starts with an arm64 `Image` header.
pub fn is_arm64_image(bytes: &[u8]) -> bool {
    bytes.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(ARM64_MAGIC)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Identifies what `bytes` is, without decompressing anything.
pub fn identify(bytes: &[u8]) -> Result<KernelFormat, String> {
    if bytes.get(zboot::MAGIC_OFFSET..zboot::MAGIC_OFFSET + 4) == Some(zboot::MAGIC)
        && bytes.starts_with(zboot::MZ)
    {
        let comp = bytes
            .get(zboot::COMP_TYPE..zboot::COMP_TYPE + zboot::COMP_TYPE_LEN)
            .ok_or("truncated zboot header")?;
        let comp = String::from_utf8_lossy(comp.split(|&b| b == 0).next().unwrap_or_default())
            .into_owned();
        return Ok(KernelFormat::Zboot(comp));
    }
    if is_arm64_image(bytes) {
        return Ok(KernelFormat::Image {
            efi_stub: bytes.starts_with(zboot::MZ),
        });
    }
    if bytes.starts_with(GZIP_MAGIC) {
        return Ok(KernelFormat::Gzip);
    }
    Err("kernel is neither an arm64 Image, a gzip stream nor an EFI zboot image".into())
}

/// Converts `bytes` into an uncompressed arm64 `Image`, returning it and the
/// format it arrived in. The result is checked for the `Image` magic.
pub fn to_image(bytes: Vec<u8>) -> Result<(Vec<u8>, KernelFormat), String> {
    let format = identify(&bytes)?;
    let image = match &format {
        KernelFormat::Image { .. } => bytes,
        KernelFormat::Gzip => decompress("gzip", &bytes)?,
        KernelFormat::Zboot(comp) => {
            let off = u32_at(&bytes, zboot::PAYLOAD_OFFSET).ok_or("truncated zboot header")?;
            let size = u32_at(&bytes, zboot::PAYLOAD_SIZE).ok_or("truncated zboot header")?;
            let payload = bytes
                .get(off..off + size)
                .ok_or("zboot payload out of range")?;
            let tool = match comp.as_str() {
                "gzip" => "gzip",
                "xzkern" | "lzma" => "xz",
                "zstd" | "zstd22" => "zstd",
                other => {
                    return Err(format!(
                        "zboot payload compression {other:?} is not supported"
                    ))
                }
            };
            decompress(tool, payload)?
        }
    };
    if !is_arm64_image(&image) {
        return Err(format!(
            "{format} did not expand to an arm64 Image (no ARM\\x64 magic at offset 56)"
        ));
    }
    Ok((image, format))
}

/// Expands `data` with the host tool `tool -dc` (one of
/// [`crate::setup::DECOMPRESSORS`], installed first if missing and we can).
pub fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let entry = crate::setup::DECOMPRESSORS
        .iter()
        .find(|(bin, _)| *bin == tool)
        .ok_or_else(|| format!("no decompressor `{tool}` is known"))?;
    crate::setup::ensure_tools(&[*entry], true).map_err(|e| e.to_string())?;
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run `{tool}` ({e}); install it (e.g. `apt-get install {tool}`)")
        })?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = data.to_vec();
    // Feed stdin from a thread so a full stdout pipe cannot deadlock us.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    feeder
        .join()
        .map_err(|_| format!("{tool}: writer thread panicked"))?
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{tool} -dc` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_image(efi: bool) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        if efi {
            b[..2].copy_from_slice(zboot::MZ);
        }
        b[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4].copy_from_slice(ARM64_MAGIC);
        b
    }

    #[test]
    fn identifies_plain_images() {
        assert_eq!(
            identify(&fake_image(true)).unwrap(),
            KernelFormat::Image { efi_stub: true }
        );
        assert_eq!(
            identify(&fake_image(false)).unwrap(),
            KernelFormat::Image { efi_stub: false }
        );
        let (img, fmt) = to_image(fake_image(true)).unwrap();
        assert_eq!(img, fake_image(true));
        assert_eq!(fmt, KernelFormat::Image { efi_stub: true });
    }

    #[test]
    fn identifies_zboot_and_gzip() {
        let mut z = vec![0u8; 64];
        z[..2].copy_from_slice(b"MZ");
        z[4..8].copy_from_slice(b"zimg");
        z[24..28].copy_from_slice(b"zstd");
        assert_eq!(identify(&z).unwrap(), KernelFormat::Zboot("zstd".into()));
        assert_eq!(identify(b"\x1f\x8b\x08\0rest").unwrap(), KernelFormat::Gzip);
        assert!(
            identify(b"garbage that is long enough to have offset fifty-six and more").is_err()
        );
        // A zboot header whose payload lies outside the file is refused.
        z[8..12].copy_from_slice(&1000u32.to_le_bytes());
        z[12..16].copy_from_slice(&10u32.to_le_bytes());
        assert!(to_image(z).is_err());
    }

    #[test]
    fn gzip_kernels_expand_to_images() {
        let mut child = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip is part of every Debian host");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&fake_image(true))
            .unwrap();
        let gz = child.wait_with_output().unwrap().stdout;
        let (img, fmt) = to_image(gz).unwrap();
        assert_eq!(fmt, KernelFormat::Gzip);
        assert_eq!(img, fake_image(true));
        // Gzip of something that is not an Image is refused after expanding.
        assert!(to_image(b"\x1f\x8b\x08\0corrupt".to_vec()).is_err());
    }
}
