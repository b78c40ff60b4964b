//! The pure core of the GPU mediator (DESIGN.md §5): what the hypervisor
//! decides about a partition's use of the shared GPU, with no hardware
//! access. The GPU driver performs the decisions.
//!
//! ```text
//!                         vgpu::VirtualGpu (one per partition, register BAR)
//! guest BAR0 access ----> read / write(WriteContext, offset, size, value) -> WriteEffect
//!  (trapped)               |
//!   GTT window, 4/8 B  --> gtt::VirtualGtt: validate (RAM via device view + pin,
//!                          local memory via its share), or scratch
//!                          --> WriteEffect.gtt_updates: driver writes real GTT, flushes
//!   INT_*/FAULT_*/INFO --> registers (RW1C status, enable, counters)
//!   RING_TAIL          --> check ring registers --> copy [consumed, tail) (join wrap)
//!                          through GttMemory (PhysicalReader: image's RAM / local reads)
//!                          --> scan::scan over a Snapshot --> shadow batches + relocated
//!                          MI_BATCH_BUFFER_START (ShadowPlacement gives addresses)
//!                          --> WriteEffect.submission, or .rejection (INFO_SUBMIT_*)
//!
//! Submission --> sched::Scheduler (weighted round-robin over partitions)
//!            --> driver copies shadows + commands into the real ring, runs them
//!            --> on completion: VirtualGpu::complete(fault) --> HEAD, SEQNO, INT_*
//!            --> driver sets the partition's interrupt line to the returned level
//! ```
//!
//! - [`gtt::VirtualGtt`] gives the partition a GTT of its configured size
//!   that reads back what it wrote, and turns each complete entry into one
//!   entry of the partition's slice of the real GTT: the partition's own
//!   DMA-capable RAM (validated through its [`AddressSpace`](crate::address_space::AddressSpace),
//!   rule 1, and pinned in its [`PinnedPages`](crate::pinning::PinnedPages), rule 3), a page
//!   of its share of local memory ([`gtt::LocalMemory`], no pinning), or the
//!   scratch page. Guest graphics addresses are real graphics addresses:
//!   guest entry `i` maps real graphics address `(base + i) * 4096`, and
//!   the information registers tell the guest its range
//!   ([`gtt::VirtualGtt::graphics_range`]), so commands need no relocation
//!   except batch starts, which are pointed at frozen shadow copies.
//! - [`scan::scan`] accepts a run of ring commands only if every command is
//!   allowed and everything it (and every batch buffer it starts) touches
//!   lies inside the partition's [`scan::Share`].
//! - [`vgpu::VirtualGpu`] is the whole register BAR: it owns the partition's
//!   `VirtualGtt`, turns RING_TAIL writes into checked [`vgpu::Submission`]s
//!   (ring copy + shadow batches, nothing left in guest-writable memory), and
//!   keeps RING_HEAD, SEQNO and the interrupt status in step with completions.
//! - [`sched::Scheduler`] picks which partition's submission the GPU runs
//!   next, by weight.
//!
//! What the caller (the image's GPU driver and trap handler) must do:
//! - Before the partition runs, fill its real-GTT slice with
//!   [`gtt::VirtualGtt::scratch_entry`]; on a restart, call
//!   [`vgpu::VirtualGpu::reset`], [`sched::Scheduler::drop_partition`], and
//!   fill the slice again.
//! - Route every trapped BAR0 access to [`vgpu::VirtualGpu::read`] /
//!   [`vgpu::VirtualGpu::write`] with the access's size; never pre-filter.
//! - Write every [`gtt::RealGttUpdate`] returned, then invalidate the GPU's
//!   GTT caches before the partition's next submission runs; log
//!   [`gtt::EntryState::Refused`] and [`vgpu::SubmitRejection`]s
//!   (rate-limited: a guest controls how many there are).
//! - Implement [`vgpu::PhysicalReader`] (host RAM through the direct map,
//!   local memory through the driver's BAR mapping) and
//!   [`vgpu::ShadowPlacement`] (shadow-batch space in graphics memory only
//!   the hypervisor maps, e.g. a hypervisor slice of the real GTT; freed
//!   when the submission completes).
//! - For each [`vgpu::Submission`]: queue it in the scheduler; when it runs,
//!   copy each [`vgpu::ShadowBatch`] to its address, then the commands into
//!   the real ring, and submit. When the GPU finishes it (or faults on it,
//!   after the driver recovered the real ring), call
//!   [`vgpu::VirtualGpu::complete`] — completions arrive in submission
//!   order per partition — and set the partition's interrupt line to the
//!   level returned (also after every write: [`vgpu::WriteEffect::interrupt_asserted`]).
//! - Pages are unpinned as soon as an entry stops referencing them, before
//!   the caller has written the hardware. That is safe because a
//!   partition's pages are never handed to anyone else while it runs; a
//!   design that reuses pages at run time must defer the unpin until the
//!   GTT flush. Likewise a submission's data pages may be remapped by the
//!   guest while it is queued: the GPU then writes the newly mapped page of
//!   the same partition, never anyone else's.

pub mod gtt;
pub mod ppgtt;
pub mod scan;
pub mod sched;
pub mod vgpu;
