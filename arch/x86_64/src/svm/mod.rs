//! AMD SVM: the VMCB a partition's vCPU runs from, the permission maps it
//! points at, and decoders for what the CPU writes back on #VMEXIT.
//!
//! This is the x86 path QEMU TCG can run (DESIGN.md §6: SVM with nested
//! paging, but no next-RIP save, no decode assists, no VMCB clean bits, no
//! flush-by-ASID), so nothing here relies on those features. No instruction
//! is executed here: the VMRUN/VMLOAD/VMSAVE wrappers take the VMCB these
//! modules fill.
//!
//! - [`vmcb`]: the VMCB layout (AMD APM Vol. 2 Appendix B);
//! - [`intercepts`]: its intercept vectors as typed flags;
//! - [`guest`]: filling a VMCB for a 64-bit guest with nested paging;
//! - [`exit`]: EXITCODE (Appendix C) and EXITINFO1/2/EXITINTINFO decoding;
//! - [`bitmaps`]: the I/O and MSR permission maps (§15.10, §15.11).
//!
//! Section numbers are those of the APM Vol. 2 revision 3.42 (2024).

pub mod bitmaps;
pub mod exit;
pub mod guest;
pub mod intercepts;
pub mod vmcb;
