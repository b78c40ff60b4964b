//! The pure core of the GPU mediator (DESIGN.md §5): what the hypervisor
//! decides about a partition's use of the shared GPU, with no hardware
//! access. The GPU driver performs the decisions.
//!
//! ```text
//! guest GTT write (trapped) --> gtt::VirtualGtt --> RealGttUpdate --> driver writes
//!   offset, 4 or 8 bytes         validate through      (slice base      the real GTT,
//!                                the device view,       + index, value)  flushes GTT caches
//!                                pin, or scratch
//!
//! guest ring tail write ------> copy head..tail ----> scan::scan --------> driver copies the
//!                               out of guest RAM       every command and    scanned copy into the
//!                               (join a wrap)          batch inside the     shadow ring in the
//!                                                      Share                partition's slice, submits
//! ```
//!
//! - [`gtt::VirtualGtt`] gives the partition a GTT of its configured size
//!   that reads back what it wrote, and turns each complete entry into one
//!   entry of the partition's slice of the real GTT: the partition's own
//!   DMA-capable RAM (validated through its [`AddressSpace`](crate::address_space::AddressSpace),
//!   rule 1, and pinned in its [`PinnedPages`](crate::pinning::PinnedPages), rule 3), or the
//!   scratch page. Guest graphics addresses are real graphics addresses:
//!   guest entry `i` maps real graphics address `(base + i) * 4096`, and
//!   the information registers tell the guest its range
//!   ([`gtt::VirtualGtt::graphics_range`]), so commands need no relocation.
//! - [`scan::scan`] accepts a run of ring commands only if every command is
//!   allowed and everything it (and every batch buffer it starts) touches
//!   lies inside the partition's [`scan::Share`].
//!
//! What the caller (the hypervisor's GPU driver and virtual GPU) must do:
//! - Before the partition runs, fill its real-GTT slice with
//!   [`gtt::VirtualGtt::scratch_entry`]; on a restart, call
//!   [`gtt::VirtualGtt::reset`] and do that again.
//! - Write every [`gtt::RealGttUpdate`] returned, then invalidate the GPU's
//!   GTT caches before the partition's next submission; log
//!   [`gtt::EntryState::Refused`] and [`gtt::GttError`] (rate-limited: a
//!   guest controls how many there are).
//! - Pages are unpinned as soon as an entry stops referencing them, before
//!   the caller has written the hardware. That is safe because a
//!   partition's pages are never handed to anyone else while it runs; a
//!   design that reuses pages at run time must defer the unpin until the
//!   GTT flush.
//! - Scan a *copy* of the ring and submit that copy. Batch buffers stay in
//!   guest memory, which the guest can change after the scan: until the
//!   caller copies each [`scan::BatchSpan`] into shadow batch buffers (and
//!   points the copied MI_BATCH_BUFFER_START commands at them), submit only
//!   while the partition cannot write them (or accept that a batch is
//!   checked, not frozen).
//! - Give the scanner a [`scan::BatchMemory`] that reads graphics addresses
//!   through the partition's own GTT entries ([`gtt::VirtualGtt::mapped_page`]),
//!   never the real GTT as a whole.

pub mod gtt;
pub mod scan;
pub mod sched;
pub mod vgpu;
