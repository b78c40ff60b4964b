//! Bulkhead's test GPU: a gen8-style GPU model (register BAR with the global GTT in its upper
//! half, local memory, one blitter engine fed by a ring) that runs as a host process and is
//! attached to QEMU as the server of an `ivshmem-doorbell` device. It is the hardware the
//! hypervisor's GPU driver and mediator are tested against; see the README's "GPU model"
//! section and [`regs`] for the interface.

pub mod command;
pub mod gpu;
pub mod ivshmem;
pub mod memory;
pub mod ppgtt;
pub mod regs;
pub mod shm;
