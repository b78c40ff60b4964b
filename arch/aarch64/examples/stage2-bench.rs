//! Benchmark: building partition stage-2 tables on the host.
//!
//! For each layout, builds the table with blocks where alignment allows and,
//! as the baseline measured in the same run, with 4 KiB pages only; prints
//! the table pages per GiB mapped and the build time (median of several
//! runs), and the ratios against the baseline. Run with
//! `cargo xtask bench`.

use bulkhead_arch_aarch64::stage2::{S2Access, S2MemoryType, Stage2Geometry, Stage2Table};
use std::time::{Duration, Instant};

const RUNS: usize = 15;
const RWX: S2Access = S2Access { read: true, write: true, execute: true };
const GIB: u64 = 1 << 30;

struct Layout {
    name: &'static str,
    /// (IPA, host address, size) of each region.
    regions: &'static [(u64, u64, u64)],
}

const LAYOUTS: &[Layout] = &[
    Layout { name: "1 GiB, 1 GiB-aligned", regions: &[(0x4000_0000, 0x8000_0000, GIB)] },
    Layout { name: "4 GiB, 1 GiB-aligned", regions: &[(0x1_0000_0000, 0x1_0000_0000, 4 * GIB)] },
    Layout { name: "1 GiB, 2 MiB-aligned host", regions: &[(0x4000_0000, 0x8020_0000, GIB)] },
    Layout { name: "256 MiB, 4 KiB-aligned host", regions: &[(0x4000_0000, 0x8000_1000, 256 << 20)] },
    Layout {
        name: "demo partition (16 MiB + 3 x 1 MiB)",
        regions: &[
            (0x4000_0000, 0x4800_0000, 16 << 20),
            (0x8000_0000, 0x4900_0000, 1 << 20),
            (0x8010_0000, 0x4910_0000, 1 << 20),
            (0x8020_0000, 0x4920_0000, 1 << 20),
        ],
    },
];

fn build(layout: &Layout, pages_only: bool) -> (usize, Duration) {
    let limit = layout.regions.iter().map(|&(ipa, _, size)| ipa + size).max().unwrap_or(0);
    let geometry = Stage2Geometry::for_limit(limit, 48).expect("layouts fit 48 bits");
    let mut times = Vec::with_capacity(RUNS);
    let mut pages = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut table = Stage2Table::new(geometry);
        for &(ipa, pa, size) in layout.regions {
            let result = if pages_only {
                table.map_pages(ipa, pa, size, S2MemoryType::NormalWriteBack, RWX)
            } else {
                table.map(ipa, pa, size, S2MemoryType::NormalWriteBack, RWX)
            };
            result.expect("benchmark layouts are valid");
        }
        times.push(start.elapsed());
        pages = table.table_pages();
    }
    times.sort();
    (pages, times[RUNS / 2])
}

fn main() {
    println!("stage-2 table build on the host (aarch64-paging, 4 KiB granule), median of {RUNS} runs");
    println!("baseline: the same layout mapped with 4 KiB pages only, in the same run");
    println!(
        "{:<38} {:>8} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "layout", "pages", "pages/GiB", "time", "baseline", "page ratio", "time ratio"
    );
    for layout in LAYOUTS {
        let mapped: u64 = layout.regions.iter().map(|r| r.2).sum();
        let gib = mapped as f64 / GIB as f64;
        let (pages, time) = build(layout, false);
        let (base_pages, base_time) = build(layout, true);
        println!(
            "{:<38} {:>8} {:>10.1} {:>12?} {:>12?} {:>10.4} {:>10.4}",
            layout.name,
            pages,
            pages as f64 / gib,
            time,
            base_time,
            pages as f64 / base_pages as f64,
            time.as_secs_f64() / base_time.as_secs_f64()
        );
    }
}
