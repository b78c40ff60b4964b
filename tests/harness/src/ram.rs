//! Checks of guest RAM after a run: what a guest left in memory, compared
//! byte for byte with what the host computes it must be.
//!
//! Scenarios with the GPU model attached (`gpu: true`) run with guest RAM in
//! a shared file (`memory-backend-file`), so once QEMU has exited the file
//! still holds every byte the partitions left. A [`RamCheck`] names a region
//! by its host-physical address (so the partition must be backed at a fixed
//! `backing = { host = ... }`: the harness cannot know where allocated RAM
//! went) and its expected contents, computed from the definitions the
//! guests use ([`bulkhead_abi::testdata`]):
//!
//! - [`Expected::Pattern`]: the isolation victim's pattern, which must
//!   survive an attack;
//! - [`Expected::FinalImage`]: `gpu-client`'s final picture, whose square
//!   colour follows from the client's graphics base. The graphics base is
//!   the hypervisor's choice (its GTT slice), so it is read from the
//!   client's first log line; the colour the client prints on its
//!   `final image at` line must agree with the rule;
//! - [`Expected::PpgttImage`]: the same for `gpu-ppgtt`'s picture (composed
//!   through its per-process page tables; its square colour is
//!   [`final_image::ppgtt_square_color`], its lines start `gpu ppgtt: `).
//!
//! File offset = host-physical address − the machine's RAM base
//! (`GpuModel::ram_base` in xtask: 0x4000_0000 on arm64 `virt`, 0 on
//! x86_64 `q35`).

use crate::scenario::Verdict;
use bulkhead_abi::testdata::{final_image, pattern};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Differing bytes listed in a failure message.
const SHOWN: usize = 4;

/// What a region must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// [`pattern::WORDS`] little-endian words [`pattern::word`]`(i)`.
    Pattern,
    /// `gpu-client`'s final image ([`final_image::pixel`]) for the
    /// graphics base that partition's log gives.
    FinalImage {
        /// The client's partition name (its log lines start `[name] `).
        partition: &'static str,
    },
    /// `gpu-ppgtt`'s final image ([`final_image::ppgtt_pixel`]) for the
    /// graphics base that partition's log gives.
    PpgttImage {
        /// The partition's name.
        partition: &'static str,
    },
}

/// How each program that leaves an image names itself in the log, and its
/// square colour and pixel rules.
struct ImageRule {
    program: &'static str,
    square: fn(u64) -> u32,
    pixel: fn(u32, u32, u64) -> u32,
}

const CLIENT_RULE: ImageRule = ImageRule { program: "gpu client", square: final_image::square_color, pixel: final_image::pixel };
const PPGTT_RULE: ImageRule =
    ImageRule { program: "gpu ppgtt", square: final_image::ppgtt_square_color, pixel: final_image::ppgtt_pixel };

/// One region of guest RAM to check after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamCheck {
    /// What it is, for the report.
    pub what: &'static str,
    /// Host-physical address of the region's first byte.
    pub host: u64,
    /// Its expected contents.
    pub expected: Expected,
}

impl RamCheck {
    /// The isolation victim's pattern, in a victim whose RAM region is
    /// backed at host-physical `ram_host`.
    pub const fn victim_pattern(ram_host: u64) -> RamCheck {
        RamCheck { what: "the victim's pattern", host: ram_host + pattern::RAM_OFFSET, expected: Expected::Pattern }
    }

    /// The final image of the `gpu-client` in `partition`, whose RAM region
    /// is backed at host-physical `ram_host`.
    pub const fn final_image(partition: &'static str, ram_host: u64) -> RamCheck {
        RamCheck {
            what: "a gpu client's final image",
            host: ram_host + final_image::RAM_OFFSET,
            expected: Expected::FinalImage { partition },
        }
    }

    /// The final image of the `gpu-ppgtt` in `partition`, whose RAM region
    /// is backed at host-physical `ram_host`.
    pub const fn ppgtt_image(partition: &'static str, ram_host: u64) -> RamCheck {
        RamCheck {
            what: "a gpu-ppgtt client's final image",
            host: ram_host + final_image::RAM_OFFSET,
            expected: Expected::PpgttImage { partition },
        }
    }

    /// The bytes the region must hold; `lines` is the run's log.
    ///
    /// # Errors
    /// When the log does not give what the contents depend on, or gives
    /// something inconsistent with the rule.
    pub fn expected_bytes(&self, lines: &[String]) -> Result<Vec<u8>, String> {
        match self.expected {
            Expected::Pattern => Ok((0..pattern::WORDS).flat_map(|i| pattern::word(i).to_le_bytes()).collect()),
            Expected::FinalImage { partition } => image_bytes(&CLIENT_RULE, partition, lines),
            Expected::PpgttImage { partition } => image_bytes(&PPGTT_RULE, partition, lines),
        }
    }
}

/// The image `rule`'s program in `partition` must have left.
fn image_bytes(rule: &ImageRule, partition: &str, lines: &[String]) -> Result<Vec<u8>, String> {
    let tag = client_graphics_base(rule.program, partition, lines)?;
    if let Some(printed) = client_square_color(rule.program, partition, lines)
        && printed != (rule.square)(tag)
    {
        return Err(format!(
            "partition {partition} printed square colour {printed:#010x}, but its graphics base {tag:#x} gives {:#010x}",
            (rule.square)(tag)
        ));
    }
    Ok(rule_image_bytes(rule.pixel, tag))
}

/// The final image for graphics base `tag`, as bytes.
pub fn final_image_bytes(tag: u64) -> Vec<u8> {
    rule_image_bytes(final_image::pixel, tag)
}

/// `gpu-ppgtt`'s final image for graphics base `tag`, as bytes.
pub fn ppgtt_image_bytes(tag: u64) -> Vec<u8> {
    rule_image_bytes(final_image::ppgtt_pixel, tag)
}

fn rule_image_bytes(pixel: fn(u32, u32, u64) -> u32, tag: u64) -> Vec<u8> {
    let size = u32::from(final_image::SIZE);
    (0..size)
        .flat_map(|y| (0..size).map(move |x| (x, y)))
        .flat_map(|(x, y)| pixel(x, y, tag).to_le_bytes())
        .collect()
}

/// The graphics base from the program's `<program>: vGPU registers at ...,
/// graphics base 0x..., ...` line.
fn client_graphics_base(program: &str, partition: &str, lines: &[String]) -> Result<u64, String> {
    client_value(program, partition, lines, "graphics base ")
        .ok_or_else(|| format!("no '{program}: ... graphics base' line from partition {partition} in the log"))
}

/// The square colour the client printed on its `final image at` line
/// (`... square (32, 32)-(96, 96) 0xffrrggbb`), if it printed one.
fn client_square_color(program: &str, partition: &str, lines: &[String]) -> Option<u32> {
    let prefix = format!("[{partition}] {program}: final image at ");
    let line = lines.iter().find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))?;
    let colour = line.rsplit(' ').next()?;
    u32::from_str_radix(colour.trim().strip_prefix("0x")?, 16).ok()
}

/// The hexadecimal number after `key` on the partition's first
/// `<program>:` line that has it.
fn client_value(program: &str, partition: &str, lines: &[String], key: &str) -> Option<u64> {
    let prefix = format!("[{partition}] {program}: ");
    lines.iter().find_map(|line| {
        let (_, rest) = line.split_once(&prefix)?;
        let (_, after) = rest.split_once(key)?;
        let digits: String = after.strip_prefix("0x")?.chars().take_while(char::is_ascii_hexdigit).collect();
        u64::from_str_radix(&digits, 16).ok()
    })
}

/// Where two regions differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Bytes that differ.
    pub count: usize,
    /// The first few: `(offset, found, expected)`.
    pub first: Vec<(usize, u8, u8)>,
}

/// Compares `found` with `expected` byte for byte (a shorter `found`
/// differs in every missing byte, counted as found 0).
///
/// # Errors
/// The differing bytes.
pub fn compare(expected: &[u8], found: &[u8]) -> Result<(), Mismatch> {
    let mut mismatch = Mismatch { count: 0, first: Vec::new() };
    for (offset, &want) in expected.iter().enumerate() {
        let got = found.get(offset).copied();
        if got != Some(want) {
            mismatch.count += 1;
            if mismatch.first.len() < SHOWN {
                mismatch.first.push((offset, got.unwrap_or(0), want));
            }
        }
    }
    if mismatch.count == 0 { Ok(()) } else { Err(mismatch) }
}

/// Reads `len` bytes at host-physical `host` from the RAM file whose first
/// byte is host-physical `ram_base`.
///
/// # Errors
/// When the address is below the RAM or the file cannot be read that far.
pub fn read_region(ram_file: &Path, ram_base: u64, host: u64, len: usize) -> Result<Vec<u8>, String> {
    let offset = host
        .checked_sub(ram_base)
        .ok_or_else(|| format!("host address {host:#x} is below the RAM base {ram_base:#x}"))?;
    let mut file = File::open(ram_file).map_err(|e| format!("cannot open {}: {e}", ram_file.display()))?;
    let mut bytes = vec![0; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read {len:#x} bytes at offset {offset:#x} of {}: {e}", ram_file.display()))?;
    Ok(bytes)
}

/// Runs every check against the RAM file; the first failing one gives the
/// verdict, naming the region, the count of differing bytes and the first
/// differing host addresses.
pub fn check_ram(checks: &[RamCheck], ram_file: &Path, ram_base: u64, lines: &[String]) -> Verdict {
    for check in checks {
        let where_ = format!("{} at host {:#x}", check.what, check.host);
        let result = check.expected_bytes(lines).and_then(|expected| {
            let found = read_region(ram_file, ram_base, check.host, expected.len())?;
            compare(&expected, &found).map_err(|m| {
                let first: Vec<String> = m
                    .first
                    .iter()
                    .map(|(offset, got, want)| format!("{:#x}: {got:#04x}, expected {want:#04x}", check.host + *offset as u64))
                    .collect();
                format!("{} of {} bytes differ, first at {}", m.count, expected.len(), first.join("; "))
            })
        });
        if let Err(reason) = result {
            return Verdict::Fail(format!("RAM check of {where_}: {reason}"));
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    const CLIENT_LOG: &str = "[bulkhead] INFO  partition a: started\n\
        [a] gpu client: vGPU registers at 0x3e000000, local memory at 0x38000000 (0x100000 bytes), graphics base 0x400000, 256 GTT entries, interrupt 90\n\
        [b] gpu client: vGPU registers at 0x3e000000, local memory at 0x38000000 (0x100000 bytes), graphics base 0x500000, 256 GTT entries, interrupt 90\n";

    /// A RAM file of `size` bytes at `ram_base` with `contents` placed at
    /// host addresses.
    fn ram_file(name: &str, size: usize, ram_base: u64, contents: &[(u64, &[u8])]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("bulkhead-ram-{}-{name}", std::process::id()));
        // Sparse: only the placed contents take space.
        let file = File::create(&path).unwrap();
        file.set_len(size as u64).unwrap();
        for (host, data) in contents {
            std::os::unix::fs::FileExt::write_all_at(&file, data, host - ram_base).unwrap();
        }
        path
    }

    #[test]
    fn equal_regions_pass_and_differences_are_counted_and_located() {
        assert_eq!(compare(b"abcdef", b"abcdef"), Ok(()));
        let m = compare(b"abcdefgh", b"aXcdYfZW").unwrap_err();
        assert_eq!(m.count, 4);
        assert_eq!(m.first, [(1, b'X', b'b'), (4, b'Y', b'e'), (6, b'Z', b'g'), (7, b'W', b'h')]);
        let short = compare(b"abc", b"a").unwrap_err();
        assert_eq!(short.count, 2);
    }

    #[test]
    fn an_intact_pattern_passes_and_a_damaged_one_fails_with_the_address() {
        let ram_base = 0x4000_0000;
        let check = RamCheck::victim_pattern(0x4000_0000);
        let mut pattern = check.expected_bytes(&[]).unwrap();
        assert_eq!(pattern.len() as u64, pattern::BYTES);
        assert_eq!(pattern[..8], pattern::word(0).to_le_bytes());
        let size = 0x100_0000;
        let good = ram_file("good", size, ram_base, &[(check.host, &pattern)]);
        assert_eq!(check_ram(&[check], &good, ram_base, &[]), Verdict::Pass);
        pattern[0x18] ^= 1;
        pattern[0x20] ^= 0xff;
        let bad = ram_file("bad", size, ram_base, &[(check.host, &pattern)]);
        let Verdict::Fail(reason) = check_ram(&[check], &bad, ram_base, &[]) else { panic!("a damaged pattern passed") };
        assert!(reason.contains("the victim's pattern at host 0x40800000"), "{reason}");
        assert!(reason.contains("2 of 1048576 bytes differ, first at 0x40800018:"), "{reason}");
        assert!(reason.contains("0x40800020:"), "{reason}");
        let _ = std::fs::remove_file(good);
        let _ = std::fs::remove_file(bad);
    }

    #[test]
    fn the_final_image_follows_the_graphics_base_in_the_log() {
        let ram_base = 0x3000_0000;
        let a = RamCheck::final_image("a", 0x3000_0000);
        let b = RamCheck::final_image("b", 0x3100_0000);
        let lines = log(CLIENT_LOG);
        let image_a = a.expected_bytes(&lines).unwrap();
        let image_b = b.expected_bytes(&lines).unwrap();
        assert_eq!(image_a, final_image_bytes(0x40_0000));
        assert_ne!(image_a, image_b, "the square colours differ");
        let corner = |image: &[u8], x: usize, y: usize| {
            let at = y * final_image::PITCH as usize + 4 * x;
            u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
        };
        assert_eq!(corner(&image_a, 0, 0), final_image::BACKGROUND);
        assert_eq!(corner(&image_a, 40, 50), final_image::square_color(0x40_0000));

        let size = 0x200_0000;
        let file = ram_file("images", size, ram_base, &[(a.host, &image_a), (b.host, &image_b)]);
        assert_eq!(check_ram(&[a, b], &file, ram_base, &lines), Verdict::Pass);
        // Swapped images: each client's square has the other's colour.
        let swapped = ram_file("swapped", size, ram_base, &[(a.host, &image_b), (b.host, &image_a)]);
        let Verdict::Fail(reason) = check_ram(&[a, b], &swapped, ram_base, &lines) else { panic!("swapped images passed") };
        assert!(reason.contains("final image at host 0x30c00000"), "{reason}");
        assert!(reason.contains("bytes differ, first at 0x30c0408"), "{reason}");
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(swapped);
    }

    #[test]
    fn a_client_missing_from_the_log_or_printing_another_colour_fails() {
        let missing = RamCheck::final_image("c", 0x3000_0000);
        assert!(missing.expected_bytes(&log(CLIENT_LOG)).unwrap_err().contains("partition c"));
        let good = format!(
            "{CLIENT_LOG}[a] gpu client: final image at 0xc00000: 128x128 32bpp pitch 512 (65536 bytes), background 0xff204060, square (32, 32)-(96, 96) {:#010x}\n",
            final_image::square_color(0x40_0000)
        );
        let a = RamCheck::final_image("a", 0x3000_0000);
        assert!(a.expected_bytes(&log(&good)).is_ok());
        let wrong = good.replace(&format!("{:#010x}", final_image::square_color(0x40_0000)), "0xff000001");
        let error = a.expected_bytes(&log(&wrong)).unwrap_err();
        assert!(error.contains("printed square colour 0xff000001"), "{error}");
    }

    #[test]
    fn the_ppgtt_image_follows_its_own_lines_and_colour() {
        let lines = log("[p] gpu ppgtt: vGPU registers at 0x10000000, local memory at 0x10200000 (0x100000 bytes), graphics base 0x600000, 256 GTT entries, interrupt 40\n");
        let check = RamCheck::ppgtt_image("p", 0x5000_0000);
        assert_eq!(check.host, 0x50c0_0000);
        let image = check.expected_bytes(&lines).unwrap();
        assert_eq!(image, ppgtt_image_bytes(0x60_0000));
        assert_ne!(image, final_image_bytes(0x60_0000), "not a gpu-client image");
        assert!(RamCheck::final_image("p", 0x5000_0000).expected_bytes(&lines).is_err(), "no gpu client line");
        let wrong = format!("{}\n[p] gpu ppgtt: final image at 0x40c00000: square 0xff000001", lines[0]);
        assert!(check.expected_bytes(&log(&wrong)).unwrap_err().contains("printed square colour 0xff000001"));
    }

    #[test]
    fn a_region_outside_the_file_fails() {
        let file = ram_file("small", 0x1000, 0, &[]);
        let error = read_region(&file, 0, 0x800, 0x1000).unwrap_err();
        assert!(error.contains("cannot read 0x1000 bytes at offset 0x800"), "{error}");
        let below = read_region(&file, 0x4000_0000, 0x1000, 4).unwrap_err();
        assert!(below.contains("below the RAM base"), "{below}");
        let _ = std::fs::remove_file(file);
    }
}
