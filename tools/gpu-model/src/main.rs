//! `gpu-model`: run the GPU model as the ivshmem server QEMU's `ivshmem-doorbell` connects to.
fn main() {}
