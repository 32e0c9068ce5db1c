//! EFI system partitions: a FAT file system written from a list of files, either
//! as a whole-disk image (UEFI also mounts a FAT volume with no partition table)
//! or as the one partition of a GPT disk image (UEFI 2.10 §5.3 "GUID Partition
//! Table Disk Layout", §13.3 "File System Format": the ESP's type GUID is
//! `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
//!
//! The FAT writer is the `fatfs` crate, the partition table the `gpt` crate;
//! neither shells out. Images are created sparse: only the file system's
//! structures and the files' clusters are written.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One file of an ESP: its `/`-separated path from the volume's root (parent
/// directories are created) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    pub path: String,
    pub data: Vec<u8>,
}

impl EspFile {
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        EspFile {
            path: path.into(),
            data: data.into(),
        }
    }
}

/// The UEFI removable-media boot path on 64-bit Arm (UEFI 2.10 §3.5.1.1): what
/// the firmware starts from a disk that has no boot entry of its own.
pub const REMOVABLE_BOOT_PATH: &str = "EFI/BOOT/BOOTAA64.EFI";

/// One MiB: partition alignment and size granule.
pub const MIB: u64 = 1 << 20;
/// Logical block size of the GPT images.
pub const BLOCK_SIZE: u64 = 512;
/// Where the ESP starts on a GPT image, and the room left after it for the
/// backup partition table (which needs 33 blocks).
pub const GPT_ALIGN: u64 = MIB;
/// Smallest ESP [`esp_size_for`] asks for: large enough for FAT32.
pub const MIN_ESP_SIZE: u64 = FAT32_MIN_SIZE;
/// Smallest volume formatted FAT32: FAT32 needs at least 65525 clusters
/// (Microsoft "FAT: General Overview of On-Disk Format", FAT type
/// determination), 32 MiB of 512-byte clusters, plus its reserved sectors and
/// two FATs. Smaller volumes get the FAT type `fatfs` picks for their size.
pub const FAT32_MIN_SIZE: u64 = 36 * MIB;
/// Volume label of the ESPs written here (11 bytes, space padded).
pub const VOLUME_LABEL: [u8; 11] = *b"RAYOS ESP  ";

/// A size for an ESP holding `files`: their bytes plus an eighth for cluster
/// rounding, directories and the FATs, plus 4 MiB, in whole MiB, at least
/// [`MIN_ESP_SIZE`].
pub fn esp_size_for(files: &[EspFile]) -> u64 {
    let bytes: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    (bytes + bytes / 8 + 4 * MIB)
        .next_multiple_of(MIB)
        .max(MIN_ESP_SIZE)
}

/// A window `[start, start + len)` of a seekable device, seen as a device of
/// its own: how the FAT writer is pointed at a partition.
struct Region<'a, D> {
    dev: &'a mut D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Seek> Region<'_, D> {
    fn room(&self, want: usize) -> usize {
        usize::try_from(self.len.saturating_sub(self.pos)).map_or(want, |r| r.min(want))
    }
}

impl<D: Read + Seek> Read for Region<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        self.dev.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.dev.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Write + Seek> Write for Region<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.dev.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.dev.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
}

impl<D: Seek> Seek for Region<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match base {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Formats `dev` (all of it: its length is where it seeks to at its end) as a
/// FAT volume and writes `files` into it. A volume of [`FAT32_MIN_SIZE`] or
/// more is FAT32, the file system UEFI specifies for a system partition on a
/// fixed disk (UEFI 2.10 §13.3.1.1; FAT12/16 only on removable media).
pub fn write_fat<D: Read + Write + Seek>(dev: &mut D, files: &[EspFile]) -> Result<(), String> {
    let size = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("seek: {e}"))?;
    let mut options = fatfs::FormatVolumeOptions::new().volume_label(VOLUME_LABEL);
    if size >= FAT32_MIN_SIZE {
        options = options.fat_type(fatfs::FatType::Fat32);
    }
    dev.seek(SeekFrom::Start(0))
        .map_err(|e| format!("seek: {e}"))?;
    fatfs::format_volume(&mut *dev, options).map_err(|e| format!("format FAT: {e}"))?;
    dev.seek(SeekFrom::Start(0))
        .map_err(|e| format!("seek: {e}"))?;
    let fs = fatfs::FileSystem::new(&mut *dev, fatfs::FsOptions::new())
        .map_err(|e| format!("mount the new FAT volume: {e}"))?;
    {
        let root = fs.root_dir();
        for f in files {
            let path = f.path.trim_start_matches('/');
            if path.is_empty() || path.split('/').any(str::is_empty) {
                return Err(format!("`{}` is not a file path", f.path));
            }
            let mut dir = String::new();
            for part in path
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |(_, d)| d)
            {
                if !dir.is_empty() {
                    dir.push('/');
                }
                dir.push_str(part);
                root.create_dir(&dir)
                    .map_err(|e| format!("mkdir {dir}: {e}"))?;
            }
            let mut file = root
                .create_file(path)
                .map_err(|e| format!("create {path}: {e}"))?;
            file.truncate()
                .map_err(|e| format!("truncate {path}: {e}"))?;
            file.write_all(&f.data)
                .map_err(|e| format!("write {path}: {e}"))?;
        }
    }
    fs.unmount().map_err(|e| format!("unmount: {e}"))
}

/// Creates (or replaces) the sparse file `path` of `len` bytes.
fn create_sparse(path: &Path, len: u64) -> Result<fs::File, String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    f.set_len(len)
        .map_err(|e| format!("size {}: {e}", path.display()))?;
    Ok(f)
}

/// Makes the file at `path` with `make` beside it, then renames it over `path`:
/// a machine that has the old image open (a test running at the same time)
/// keeps it whole.
pub fn replace<T>(path: &Path, make: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
    let tmp = crate::build::beside(path);
    let made = make(&tmp).and_then(|t| {
        fs::rename(&tmp, path)
            .map(|()| t)
            .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), path.display()))
    });
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// Writes a whole-disk FAT image (no partition table) of `size` bytes holding
/// `files` at `path` ([`replace`]d).
pub fn write_fat_image(path: &Path, size: u64, files: &[EspFile]) -> Result<(), String> {
    replace(path, |tmp| {
        let mut f = create_sparse(tmp, size)?;
        write_fat(&mut f, files).map_err(|e| format!("{}: {e}", path.display()))
    })
}

/// Where the ESP of a GPT image lies, in bytes from the image's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspPlacement {
    pub offset: u64,
    pub len: u64,
}

/// Writes a GPT disk image at `path` whose one partition is an ESP of
/// `esp_size` bytes (a multiple of [`BLOCK_SIZE`]) holding `files`: a
/// protective MBR, the primary and backup GPT, the ESP at [`GPT_ALIGN`].
/// ([`replace`]d).
pub fn write_gpt_esp_image(
    path: &Path,
    esp_size: u64,
    files: &[EspFile],
) -> Result<EspPlacement, String> {
    replace(path, |tmp| write_gpt_esp_image_at(tmp, esp_size, files))
}

fn write_gpt_esp_image_at(
    path: &Path,
    esp_size: u64,
    files: &[EspFile],
) -> Result<EspPlacement, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if esp_size == 0 || !esp_size.is_multiple_of(BLOCK_SIZE) {
        return Err(at(&format!(
            "ESP size {esp_size} is not a positive multiple of {BLOCK_SIZE}"
        )));
    }
    let disk_len = GPT_ALIGN + esp_size + GPT_ALIGN;
    let mut file = create_sparse(path, disk_len)?;
    let blocks = disk_len / BLOCK_SIZE;
    // The protective MBR covers the disk from LBA 1 (UEFI 2.10 §5.2.3), or all a
    // 32-bit size can say.
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(blocks - 1).unwrap_or(u32::MAX));
    mbr.overwrite_lba0(&mut file).map_err(|e| at(&e))?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, None)
        .map_err(|e| at(&e))?;
    let id = disk
        .add_partition(
            "EFI system partition",
            esp_size,
            gpt::partition_types::EFI,
            0,
            Some(GPT_ALIGN / BLOCK_SIZE),
        )
        .map_err(|e| at(&e))?;
    let part = disk
        .partitions()
        .get(&id)
        .ok_or_else(|| at(&"the new partition is not in the table"))?;
    let placement = EspPlacement {
        offset: part.first_lba * BLOCK_SIZE,
        len: (part.last_lba + 1 - part.first_lba) * BLOCK_SIZE,
    };
    let mut file = disk.write().map_err(|e| at(&e))?;
    let mut region = Region {
        dev: &mut file,
        start: placement.offset,
        len: placement.len,
        pos: 0,
    };
    write_fat(&mut region, files).map_err(|e| at(&format!("ESP: {e}")))?;
    file.sync_all().map_err(|e| at(&e))?;
    Ok(placement)
}

/// Reads the file `inner` (a `/`-separated path) from the ESP of the GPT image
/// at `path`: how tests and callers check an image without mounting it.
pub fn read_gpt_esp_file(path: &Path, inner: &str) -> Result<Vec<u8>, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let disk = gpt::GptConfig::new()
        .writable(false)
        .open(path)
        .map_err(|e| at(&e))?;
    let part = disk
        .partitions()
        .values()
        .find(|p| p.part_type_guid == gpt::partition_types::EFI)
        .ok_or_else(|| at(&"no EFI system partition"))?;
    let (offset, len) = (
        part.first_lba * BLOCK_SIZE,
        (part.last_lba + 1 - part.first_lba) * BLOCK_SIZE,
    );
    let mut file = disk.take_device();
    let region = Region {
        dev: &mut file,
        start: offset,
        len,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(region, fatfs::FsOptions::new()).map_err(|e| at(&e))?;
    let mut out = Vec::new();
    fs.root_dir()
        .open_file(inner.trim_start_matches('/'))
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(|e| at(&format!("{inner}: {e}")))?;
    Ok(out)
}

/// A scratch path under the system's temporary directory, private to this
/// process and `name`.
pub fn scratch_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rayos-esp-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<EspFile> {
        vec![
            EspFile::new(REMOVABLE_BOOT_PATH, b"MZ first stage".to_vec()),
            EspFile::new("EFI/BOOT/grubaa64.efi", vec![0xa5; 300_000]),
            EspFile::new("EFI/debian/grub.cfg", b"set timeout=0\n".to_vec()),
            EspFile::new(
                "vmlinuz",
                (0..2_000_000u32).map(|i| i as u8).collect::<Vec<_>>(),
            ),
        ]
    }

    #[test]
    fn a_gpt_image_has_one_esp_at_one_mib_holding_every_file() {
        let path = scratch_path("gpt.img");
        let files = files();
        let size = esp_size_for(&files);
        let placed = write_gpt_esp_image(&path, size, &files).unwrap();
        assert_eq!(
            placed,
            EspPlacement {
                offset: GPT_ALIGN,
                len: size
            }
        );
        // The partition table reads back (both headers valid) with the ESP type.
        let disk = gpt::GptConfig::new().open(&path).unwrap();
        assert!(disk.primary_header().is_ok() && disk.backup_header().is_ok());
        let parts: Vec<_> = disk.partitions().values().collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].part_type_guid, gpt::partition_types::EFI);
        // LBA 0 is a protective MBR: type 0xEE in the first record, 0x55AA.
        let raw = fs::read(&path).unwrap();
        assert_eq!(raw[446 + 4], 0xee);
        assert_eq!(&raw[510..512], &[0x55, 0xaa]);
        for f in &files {
            assert_eq!(
                read_gpt_esp_file(&path, &f.path).unwrap(),
                f.data,
                "{}",
                f.path
            );
        }
        assert!(read_gpt_esp_file(&path, "EFI/BOOT/missing.efi").is_err());
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn esps_from_the_fat32_minimum_up_are_fat32_and_smaller_volumes_still_format() {
        let files = files();
        for (size, want) in [
            (FAT32_MIN_SIZE, Some(fatfs::FatType::Fat32)),
            (FAT32_MIN_SIZE + 24 * MIB, Some(fatfs::FatType::Fat32)),
            (8 * MIB, None),
        ] {
            let mut dev = io::Cursor::new(vec![0u8; size as usize]);
            write_fat(&mut dev, &files).unwrap_or_else(|e| panic!("{size}: {e}"));
            dev.set_position(0);
            let fs = fatfs::FileSystem::new(&mut dev, fatfs::FsOptions::new()).unwrap();
            if let Some(t) = want {
                assert_eq!(fs.fat_type(), t, "{size}");
            } else {
                assert_ne!(fs.fat_type(), fatfs::FatType::Fat32, "{size}");
            }
            let mut got = Vec::new();
            fs.root_dir()
                .open_file("vmlinuz")
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, files[3].data);
        }
    }

    #[test]
    fn files_too_big_for_the_esp_are_an_error_not_a_truncated_image() {
        let path = scratch_path("small.img");
        let big = vec![EspFile::new(
            "big.bin",
            vec![1u8; (MIN_ESP_SIZE + MIB) as usize],
        )];
        let e = write_gpt_esp_image(&path, MIN_ESP_SIZE, &big).unwrap_err();
        assert!(e.contains("big.bin"), "{e}");
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn bad_paths_and_sizes_are_refused() {
        let path = scratch_path("bad.img");
        for p in ["", "EFI//x", "dir/"] {
            let e = write_gpt_esp_image(&path, MIN_ESP_SIZE, &[EspFile::new(p, b"x".to_vec())])
                .unwrap_err();
            assert!(e.contains("not a file path"), "{p}: {e}");
        }
        assert!(write_gpt_esp_image(&path, 1000, &[]).is_err());
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn a_whole_disk_fat_image_mounts_and_holds_the_files() {
        let path = scratch_path("fat.img");
        let files = files();
        write_fat_image(&path, esp_size_for(&files), &files).unwrap();
        let f = fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
        let mut got = Vec::new();
        fs.root_dir()
            .open_file(REMOVABLE_BOOT_PATH)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, files[0].data);
        drop(fs);
        let _ = fs::remove_file(&path);
    }

    #[test]
    fn the_esp_grows_with_its_files() {
        assert_eq!(esp_size_for(&[]), MIN_ESP_SIZE);
        let big = [EspFile::new("k", vec![0u8; 64 << 20])];
        let s = esp_size_for(&big);
        assert!(s >= (64 << 20) + (8 << 20) && s.is_multiple_of(MIB), "{s}");
    }
}
