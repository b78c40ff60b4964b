//! Bulkhead's x86_64 code: second-level address translation.
//!
//! A partition's CPU view on x86 is a second-level table that translates
//! guest-physical to host-physical addresses: Intel's extended page tables
//! ([`ept`], used by the VMX path) or AMD's nested page tables ([`npt`], used
//! by the SVM path). Both are four-level radix trees of 512 eight-byte
//! entries per 4 KiB frame; they differ only in the entry bits. This crate
//! provides:
//!
//! - the portable inputs of a mapping: [`MemoryType`] (the configuration's
//!   memory attribute, DESIGN.md §4), [`Access`] and [`PageSize`];
//! - the VT-d second-level format ([`vtd`]), a partition's DMA view, built
//!   by the same table builder;
//! - the two entry encoders, each implementing the small [`EntryFormat`]
//!   trait, plus the EPTP value ([`ept::eptp`]) and the host PAT layout that
//!   NPT leaves index into ([`npt::HOST_PAT`]);
//! - a format-generic four-level table builder, [`SecondLevelTable`], that
//!   takes its frames from a [`FrameAllocator`] and uses 1 GiB and 2 MiB
//!   leaves wherever alignment allows;
//! - the hypervisor's own page tables: their entry format
//!   ([`paging::HostPaging`], a third format for the same builder) and
//!   what they map ([`identity::IdentityLayout`]: RAM, the image by its ELF
//!   segments, MMIO, holes).
//!
//! Nothing here touches hardware, so the whole crate runs as host unit tests;
//! the VMX/SVM code that loads EPTP or nCR3 lives elsewhere.
//!
//! Addresses are plain `u64`: `gpa` arguments are guest-physical (the table's
//! input), `hpa` arguments and table-frame addresses are host-physical.
//!
//! ```
//! use bulkhead_arch_x86_64::{Access, MemoryType, PageSize, ept, npt};
//!
//! // A 2 MiB write-back RAM leaf: read/write/execute, WB (6) with ignore-PAT, PS.
//! let attributes = ept::EptAttributes::new(MemoryType::NormalWriteBack, Access::READ_WRITE_EXECUTE)?;
//! assert_eq!(ept::leaf_entry(PageSize::Size2MiB, 0x4020_0000, attributes), 0x4020_00f7);
//!
//! // The same page as NPT device memory: P, R/W, U/S, host PAT index 3 (UC), NX.
//! let attributes = npt::NptAttributes::new(MemoryType::DeviceNGnRE, Access::READ_WRITE)?;
//! assert_eq!(npt::leaf_entry(PageSize::Size2MiB, 0x4020_0000, attributes), 0x8000_0000_4020_009f);
//!
//! // Write without read exists in neither format.
//! let write_only = Access { read: false, write: true, execute: false };
//! assert!(ept::EptAttributes::new(MemoryType::NormalWriteBack, write_only).is_err());
//! # Ok::<(), bulkhead_arch_x86_64::UnsupportedAccess>(())
//! ```

#![no_std]
// Only the bare-metal CPU code (`cpu`) may use `unsafe`; everything that
// runs as a host test stays safe.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod backend;
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
#[allow(unsafe_code)]
pub mod cpu;
pub mod decode;
pub mod ept;
pub mod exception;
pub mod exit;
pub mod guest_msr;
pub mod guest_paging;
pub mod identity;
pub mod npt;
pub mod paging;
pub mod passthrough;
pub mod svm;
pub mod table;
pub mod vmx;
pub mod vtd;

pub use ept::Ept;
pub use npt::Npt;
pub use table::{FrameAllocator, MapError, SecondLevelTable, TableOptions, UnmapError};
pub use vtd::VtdSecondLevel;

/// Bytes in the smallest page and in one table frame.
pub const PAGE_SIZE_4KIB: u64 = 1 << 12;

/// Entries in one table frame (4 KiB of 8-byte entries).
pub const ENTRIES_PER_TABLE: usize = 512;

/// Guest-physical address bits a four-level table translates: 9 bits per
/// level times four levels plus the 12-bit page offset.
pub const GUEST_ADDRESS_BITS: u32 = 48;

/// The architectural maximum of host-physical address bits (MAXPHYADDR) that
/// an entry's address field can hold: bits 51:12 in both formats.
pub const MAX_HOST_ADDRESS_BITS: u32 = 52;

/// The memory attribute of a region, as the configuration names it
/// (DESIGN.md §4). Each format turns it into its own bits: an EPT memory type
/// plus ignore-PAT, or an NPT host-PAT index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// `normal-wb`: ordinary RAM, write-back.
    NormalWriteBack,
    /// `normal-nc`: write-combining capable device memory (GPU BARs,
    /// framebuffers). Uncached by default; the guest's PAT may choose
    /// write-combining.
    NormalNonCacheable,
    /// `normal-nc` for a region that asks for write-combining outright, rather
    /// than leaving the choice to the guest's PAT.
    NormalWriteCombining,
    /// `device-ngnre`: ordinary MMIO, uncached.
    DeviceNGnRE,
    /// `device-ngnrne`: strongly ordered MMIO, uncached. x86 has no weaker
    /// uncached device type, so this encodes exactly like
    /// [`MemoryType::DeviceNGnRE`].
    DeviceNGnRnE,
}

impl MemoryType {
    /// Whether this is one of the device (MMIO) types.
    pub const fn is_device(self) -> bool {
        matches!(self, MemoryType::DeviceNGnRE | MemoryType::DeviceNGnRnE)
    }
}

/// The accesses a guest may make through a mapping.
///
/// Both formats can express read-only, read-write, read-execute and
/// read-write-execute. Write without read and execute-only are rejected
/// (see [`UnsupportedAccess`]), as is no access at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Loads allowed.
    pub read: bool,
    /// Stores allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
}

impl Access {
    /// Read only.
    pub const READ: Access = Access { read: true, write: false, execute: false };
    /// Read and write, no execute.
    pub const READ_WRITE: Access = Access { read: true, write: true, execute: false };
    /// Read and execute, no write.
    pub const READ_EXECUTE: Access = Access { read: true, write: false, execute: true };
    /// Read, write and execute.
    pub const READ_WRITE_EXECUTE: Access = Access { read: true, write: true, execute: true };

    /// Checks the combination both formats can express: reading must be
    /// allowed. NPT has no way to say "not readable" for a present entry, and
    /// in EPT write-without-read is a misconfiguration while execute-only
    /// depends on a CPU capability (IA32_VMX_EPT_VPID_CAP bit 0), so both are
    /// refused rather than silently widened.
    ///
    /// # Errors
    /// [`UnsupportedAccess`] when `read` is false.
    pub const fn validate(self) -> Result<Access, UnsupportedAccess> {
        if self.read { Ok(self) } else { Err(UnsupportedAccess(self)) }
    }
}

/// An [`Access`] combination that a second-level format cannot express
/// exactly: write or execute without read, or no access at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsupportedAccess(pub Access);

/// The size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, a leaf in a page table (level 1).
    Size4KiB,
    /// 2 MiB, a leaf in a page directory (level 2).
    Size2MiB,
    /// 1 GiB, a leaf in a page-directory-pointer table (level 3).
    Size1GiB,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4KiB => 1 << 12,
            PageSize::Size2MiB => 1 << 21,
            PageSize::Size1GiB => 1 << 30,
        }
    }

    /// The table level whose entries are leaves of this size.
    pub const fn level(self) -> Level {
        match self {
            PageSize::Size4KiB => Level::Pt,
            PageSize::Size2MiB => Level::Pd,
            PageSize::Size1GiB => Level::Pdpt,
        }
    }
}

/// A level of the four-level table, named after the Intel SDM / AMD APM
/// table names. The root is [`Level::Pml4`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Page-map level 4 (the root), indexed by guest-physical bits 47:39.
    Pml4,
    /// Page-directory-pointer table, indexed by bits 38:30; may hold 1 GiB leaves.
    Pdpt,
    /// Page directory, indexed by bits 29:21; may hold 2 MiB leaves.
    Pd,
    /// Page table, indexed by bits 20:12; holds 4 KiB leaves.
    Pt,
}

impl Level {
    /// The lowest guest-physical bit that indexes this level: one entry here
    /// covers `1 << shift()` bytes.
    pub const fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// The entry index of `gpa` in a table of this level (9 bits).
    pub const fn index(self, gpa: u64) -> usize {
        ((gpa >> self.shift()) & 0x1ff) as usize
    }

    /// The level below this one, or `None` for [`Level::Pt`].
    pub const fn next(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    /// The size of a leaf at this level, or `None` for [`Level::Pml4`], which
    /// cannot hold leaves.
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Level::Pml4 => None,
            Level::Pdpt => Some(PageSize::Size1GiB),
            Level::Pd => Some(PageSize::Size2MiB),
            Level::Pt => Some(PageSize::Size4KiB),
        }
    }
}

/// One second-level entry format: the tiny operations the arch-neutral
/// [`SecondLevelTable`] walker needs. Implemented by [`Ept`] and [`Npt`].
pub trait EntryFormat {
    /// Validated leaf attributes, computed once per mapping request.
    type Attributes: Copy + core::fmt::Debug;

    /// The leaf attributes for `memory` with `access`.
    ///
    /// # Errors
    /// [`UnsupportedAccess`] when the format cannot express `access` exactly.
    fn attributes(memory: MemoryType, access: Access) -> Result<Self::Attributes, UnsupportedAccess>;

    /// A non-leaf entry pointing at the 4 KiB-aligned table frame `table_pa`,
    /// granting every access so that the leaf alone decides.
    fn make_table_entry(table_pa: u64) -> u64;

    /// A leaf entry of `size` mapping host-physical `pa` (aligned to `size`).
    fn make_leaf_entry(size: PageSize, pa: u64, attributes: Self::Attributes) -> u64;

    /// Whether `entry` is present (translates at all).
    fn is_present(entry: u64) -> bool;

    /// Whether the present `entry`, found in a table of `level`, is a leaf.
    fn is_leaf(level: Level, entry: u64) -> bool;

    /// The host-physical address in the present `entry` found in a table of
    /// `level`: the next table's frame, or the start of the leaf's page.
    fn address(level: Level, entry: u64) -> u64;
}
