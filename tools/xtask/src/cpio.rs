//! A writer for the cpio "newc" format, the format Linux unpacks an
//! initramfs from.
//!
//! The format, as the kernel reads it (Documentation/driver-api/
//! early-userspace/buffer-format.rst):
//!
//! ```text
//! cpio_archive := cpio_file* + cpio_trailer
//! cpio_file    := ALGN(4) + cpio_header + filename + "\0" + ALGN(4) + data
//! cpio_trailer := ALGN(4) + cpio_header + "TRAILER!!!\0" + ALGN(4)
//! ```
//!
//! The header is 110 ASCII bytes: the magic `070701`, then 13 fields of 8
//! hexadecimal digits (ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
//! devminor, rdevmajor, rdevminor, namesize including the NUL, check = 0).
//! Every header starts on a 4-byte boundary, so name and data are each
//! padded with NULs to the next multiple of 4 of the archive offset.
//! `mode` is `st_mode` (file type bits and permissions); `filesize` is zero
//! except for regular files and symlinks (whose data is the link target,
//! without a NUL). Digits are upper case, as the kernel's `gen_init_cpio`
//! writes them.
//!
//! Entries here are owned by root, have mtime 0 and numbered inodes, so the
//! same inputs always give the same bytes. Hard links and the "crc" variant
//! (`070702`) are not written.

use std::fmt;

/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";
/// Size of a newc header.
pub const HEADER_LEN: usize = 110;
/// The name of the last entry.
pub const TRAILER_NAME: &str = "TRAILER!!!";

/// File type bits of `st_mode` (Linux `<sys/stat.h>`).
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Permission and set-id bits a caller may give.
const PERMISSION_BITS: u32 = 0o7777;

/// A name the archive cannot hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// Empty, absolute, containing `..`, `.` components, empty components
    /// or a NUL, or the trailer's name.
    BadName(String),
    /// Data longer than the 32-bit `filesize` field.
    TooLarge(String),
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadName(name) => write!(
                f,
                "cpio: bad entry name {name:?} (want a relative path without '.', '..' or empty parts)"
            ),
            CpioError::TooLarge(name) => write!(f, "cpio: {name} is larger than 4 GiB"),
        }
    }
}

impl std::error::Error for CpioError {}

/// The header fields of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
    namesize: u32,
}

impl Header {
    /// The 110 header bytes (uid, gid, mtime, dev and check are zero).
    fn encode(&self) -> [u8; HEADER_LEN] {
        let fields = [
            self.ino,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            0, // mtime
            self.filesize,
            0, // devmajor
            0, // devminor
            self.rdev_major,
            self.rdev_minor,
            self.namesize,
            0, // check
        ];
        let mut text = String::from_utf8_lossy(MAGIC).into_owned();
        for field in fields {
            text.push_str(&format!("{field:08X}"));
        }
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(text.as_bytes());
        bytes
    }
}

/// A newc archive being built in memory.
///
/// Entries are written in the order they are added; the kernel creates
/// them in that order, so a directory must come before what it holds.
#[derive(Debug)]
pub struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
}

impl Default for Archive {
    fn default() -> Self {
        Archive::new()
    }
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive {
            bytes: Vec::new(),
            next_ino: 1,
        }
    }

    /// Adds a directory with permission bits `permissions` (e.g. `0o755`).
    ///
    /// # Errors
    /// When `path` is not a clean relative path.
    pub fn directory(&mut self, path: &str, permissions: u32) -> Result<(), CpioError> {
        self.entry(
            path,
            S_IFDIR | (permissions & PERMISSION_BITS),
            2,
            &[],
            (0, 0),
        )
    }

    /// Adds a regular file holding `data`.
    ///
    /// # Errors
    /// When `path` is not a clean relative path or `data` exceeds 4 GiB.
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<(), CpioError> {
        self.entry(
            path,
            S_IFREG | (permissions & PERMISSION_BITS),
            1,
            data,
            (0, 0),
        )
    }

    /// Adds a symbolic link at `path` pointing at `target`.
    ///
    /// # Errors
    /// When `path` is not a clean relative path.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.entry(path, S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0))
    }

    /// Adds a character device node with device number `major:minor`.
    ///
    /// # Errors
    /// When `path` is not a clean relative path.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.entry(
            path,
            S_IFCHR | (permissions & PERMISSION_BITS),
            1,
            &[],
            (major, minor),
        )
    }

    /// Appends the trailer and returns the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let header = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
            namesize: name_size(TRAILER_NAME),
        };
        self.push_header_and_name(&header, TRAILER_NAME);
        self.bytes
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> Result<(), CpioError> {
        check_name(path)?;
        let filesize = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.into()))?;
        let header = Header {
            ino: self.next_ino,
            mode,
            nlink,
            filesize,
            rdev_major: rdev.0,
            rdev_minor: rdev.1,
            namesize: name_size(path),
        };
        self.next_ino += 1;
        self.push_header_and_name(&header, path);
        self.bytes.extend_from_slice(data);
        self.align();
        Ok(())
    }

    fn push_header_and_name(&mut self, header: &Header, name: &str) {
        debug_assert_eq!(self.bytes.len() % 4, 0, "headers start 4-byte aligned");
        self.bytes.extend_from_slice(&header.encode());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.align();
    }

    /// Pads with NULs to the next multiple of 4.
    fn align(&mut self) {
        let padded = self.bytes.len().next_multiple_of(4);
        self.bytes.resize(padded, 0);
    }
}

/// `namesize`: the name's length including its NUL. Names are checked
/// (or constant) and far below 4 GiB.
fn name_size(name: &str) -> u32 {
    u32::try_from(name.len() + 1).unwrap_or(u32::MAX)
}

/// Accepts `a/b/c` style names: relative, no empty, `.` or `..` parts.
fn check_name(path: &str) -> Result<(), CpioError> {
    let clean = !path.is_empty()
        && path != TRAILER_NAME
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if clean {
        Ok(())
    } else {
        Err(CpioError::BadName(path.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: (mode, nlink, rdev, name, data).
    type Parsed = (u32, u32, (u32, u32), String, Vec<u8>);

    /// A small reader, independent of the writer, following the grammar.
    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let hex = |at: usize| {
            let text = std::str::from_utf8(&bytes[at..at + 8]).unwrap();
            u32::from_str_radix(text, 16).unwrap()
        };
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(at % 4, 0, "header at {at} is 4-byte aligned");
            assert_eq!(&bytes[at..at + 6], MAGIC);
            let field = |index: usize| hex(at + 6 + 8 * index);
            let (mode, nlink, filesize) = (field(1), field(4), field(6) as usize);
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            assert_eq!(field(12), 0, "check is zero in newc");
            let name_at = at + HEADER_LEN;
            assert_eq!(bytes[name_at + namesize - 1], 0, "name ends in NUL");
            let name = String::from_utf8(bytes[name_at..name_at + namesize - 1].to_vec()).unwrap();
            let data_at = (name_at + namesize).next_multiple_of(4);
            assert!(bytes[name_at + namesize..data_at].iter().all(|&b| b == 0));
            let data = bytes[data_at..data_at + filesize].to_vec();
            at = (data_at + filesize).next_multiple_of(4);
            if name == TRAILER_NAME {
                assert_eq!(at, bytes.len(), "nothing after the trailer");
                return entries;
            }
            entries.push((mode, nlink, rdev, name, data));
        }
    }

    #[test]
    fn one_file_archive_has_exact_bytes() {
        let mut archive = Archive::new();
        archive.file("init", 0o755, b"hi\n").unwrap();
        let bytes = archive.finish();
        let fields = |values: [&str; 13]| values.concat();
        let expected = [
            "070701",
            // ino, mode 0100755, uid, gid, nlink, mtime, filesize 3, devmajor,
            // devminor, rdevmajor, rdevminor, namesize 5 ("init\0"), check.
            &fields([
                "00000001", "000081ED", "00000000", "00000000", "00000001", "00000000", "00000003",
                "00000000", "00000000", "00000000", "00000000", "00000005", "00000000",
            ]),
            "init\0",
            "\0",     // 110 + 5 = 115, padded to 116
            "hi\n\0", // data at 116, 3 bytes padded to 120
            "070701",
            // The trailer: all zero but nlink 1 and namesize 11.
            &fields([
                "00000000", "00000000", "00000000", "00000000", "00000001", "00000000", "00000000",
                "00000000", "00000000", "00000000", "00000000", "0000000B", "00000000",
            ]),
            "TRAILER!!!\0",
            "\0\0\0", // 120 + 110 + 11 = 241, padded to 244
        ]
        .concat();
        assert_eq!(String::from_utf8_lossy(&bytes), expected);
        assert_eq!(bytes.len(), 244);
    }

    #[test]
    fn header_is_110_bytes_of_magic_and_13_hex_fields() {
        let header = Header {
            ino: 0x12ac,
            mode: 0o40755,
            nlink: 2,
            filesize: 0,
            rdev_major: 5,
            rdev_minor: 1,
            namesize: 4,
        };
        let bytes = header.encode();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(&bytes[..6], MAGIC);
        assert_eq!(&bytes[6..14], b"000012AC");
        assert_eq!(&bytes[14..22], b"000041ED");
        assert_eq!(&bytes[38..46], b"00000002");
        assert_eq!(&bytes[78..86], b"00000005");
        assert_eq!(&bytes[86..94], b"00000001");
        assert_eq!(&bytes[94..102], b"00000004");
        assert_eq!(&bytes[102..110], b"00000000");
    }

    #[test]
    fn every_name_and_data_length_keeps_4_byte_alignment() {
        let mut archive = Archive::new();
        let mut expected = Vec::new();
        for length in 1..=9 {
            let name = "n".repeat(length);
            let data = vec![b'x'; length];
            archive.file(&name, 0o644, &data).unwrap();
            expected.push((name, data));
        }
        let bytes = archive.finish();
        assert_eq!(bytes.len() % 4, 0);
        let parsed = parse(&bytes);
        let got: Vec<_> = parsed.into_iter().map(|(_, _, _, n, d)| (n, d)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn directories_symlinks_and_devices_are_encoded_by_mode() {
        let mut archive = Archive::new();
        archive.directory("bin", 0o755).unwrap();
        archive.symlink("bin/sh", "/bin/busybox").unwrap();
        archive.char_device("dev/console", 0o600, 5, 1).unwrap();
        archive.file("etc/x", 0o100_644, b"").unwrap();
        let parsed = parse(&archive.finish());
        assert_eq!(
            parsed,
            [
                (0o040_755, 2, (0, 0), "bin".to_string(), vec![]),
                (
                    0o120_777,
                    1,
                    (0, 0),
                    "bin/sh".into(),
                    b"/bin/busybox".to_vec()
                ),
                (0o020_600, 1, (5, 1), "dev/console".into(), vec![]),
                // File type bits in the permissions are ignored.
                (0o100_644, 1, (0, 0), "etc/x".into(), vec![]),
            ]
        );
    }

    #[test]
    fn the_trailer_ends_an_empty_archive() {
        let bytes = Archive::new().finish();
        assert_eq!(bytes.len(), 124, "110 + 11 bytes of name, padded to 4");
        assert_eq!(&bytes[110..121], b"TRAILER!!!\0");
        assert!(parse(&bytes).is_empty());
    }

    #[test]
    fn inodes_are_distinct_and_start_at_one() {
        let mut archive = Archive::new();
        archive.directory("a", 0o755).unwrap();
        archive.directory("a/b", 0o755).unwrap();
        let bytes = archive.finish();
        let second = 112; // 110 + "a\0", already aligned, no data
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[second + 6..second + 14], b"00000002");
    }

    #[test]
    fn bad_names_are_refused() {
        let mut archive = Archive::new();
        for name in [
            "",
            "/init",
            "a//b",
            "a/./b",
            "../x",
            "a/",
            "TRAILER!!!",
            "a\0b",
        ] {
            assert_eq!(
                archive.file(name, 0o644, b""),
                Err(CpioError::BadName(name.into())),
                "{name:?}"
            );
        }
        assert_eq!(archive.finish().len(), 124, "nothing was written");
    }
}
