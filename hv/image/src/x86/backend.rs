//! The virtualization back end partitions run under, chosen once on the
//! boot CPU from CPUID (`bulkhead_arch_x86_64::backend::choose`: AMD with
//! SVM and nested paging runs [`svm`], Intel with VMX, EPT and
//! unrestricted guest runs [`vmx`]), and the three things that differ per
//! back end: turning it on for a CPU, the second-level table format, and
//! the run loop.

use super::partition::{CpuTable, Start, TableFormat};
use super::{svm, vmx};
use alloc::format;
use alloc::string::String;
use bulkhead_arch_x86_64::backend::{self, Backend, Features, Vendor};
use bulkhead_arch_x86_64::cpu::svm::cpuid;
use bulkhead_arch_x86_64::cpu::vmx as cpu_vmx;
use bulkhead_arch_x86_64::vmx::controls::SecondaryControls;
use bulkhead_core::partition::Partition;
use spin::Once;

/// CPUID leaves and bits the choice reads (AMD APM Vol. 3 Appendix E).
const CPUID_VENDOR: u32 = 0;
const CPUID_MAX_EXTENDED: u32 = 0x8000_0000;
const CPUID_EXTENDED_FEATURES: u32 = 0x8000_0001;
/// Fn8000_0001 ECX bit 2: SVM.
const CPUID_ECX_SVM: u32 = 1 << 2;
const CPUID_SVM_FEATURES: u32 = 0x8000_000a;
/// Fn8000_000A EDX bit 0: nested paging.
const CPUID_EDX_NESTED_PAGING: u32 = 1 << 0;

static CHOSEN: Once<Result<Backend, String>> = Once::new();

/// The back end, chosen and logged on the first call; the reason when
/// there is none.
///
/// # Errors
/// Why no back end can run partitions on this CPU.
pub fn choose() -> Result<Backend, String> {
    CHOSEN
        .call_once(|| {
            let [_, ebx, ecx, edx] = cpuid(CPUID_VENDOR, 0);
            let vendor = Vendor::from_cpuid(ebx, edx, ecx);
            let features = features(vendor);
            let chosen = backend::choose(vendor, &features);
            match &chosen {
                Ok(chosen) => log::info!("x86_64 back end: {} (CPU vendor {vendor:?}, {features:?})", name(*chosen)),
                Err(reason) => log::error!("x86_64 back end: none: {reason} ({features:?}); partitions are refused"),
            }
            chosen.map_err(|reason| format!("no virtualization back end: {reason}"))
        })
        .clone()
}

/// The feature bits of this CPU. VMX capability MSRs are read only on
/// Intel CPUs that report VMX (elsewhere they need not exist).
fn features(vendor: Vendor) -> Features {
    let max_extended = cpuid(CPUID_MAX_EXTENDED, 0)[0];
    let svm = max_extended >= CPUID_EXTENDED_FEATURES && cpuid(CPUID_EXTENDED_FEATURES, 0)[2] & CPUID_ECX_SVM != 0;
    let nested_paging =
        svm && max_extended >= CPUID_SVM_FEATURES && cpuid(CPUID_SVM_FEATURES, 0)[3] & CPUID_EDX_NESTED_PAGING != 0;
    let mut features = Features { svm, nested_paging, ..Features::default() };
    if vendor == Vendor::Intel
        && let Some(capabilities) = cpu_vmx::capabilities()
    {
        features.vmx = true;
        features.ept = capabilities.allows_secondary(SecondaryControls::ENABLE_EPT);
        features.unrestricted_guest = capabilities.allows_secondary(SecondaryControls::UNRESTRICTED_GUEST);
    }
    features
}

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Svm => "AMD SVM with nested paging",
        Backend::Vmx => "Intel VMX with EPT",
    }
}

/// What one CPU keeps of its back end once it is on.
#[derive(Clone, Copy, Debug)]
pub enum CpuBackend {
    /// SVM, with the page holding this CPU's own VMSAVE state.
    Svm(svm::CpuSvm),
    /// VMX (VMXON done; the VMCS is per vCPU).
    Vmx,
}

/// Turns the back end on for the calling CPU.
///
/// # Errors
/// Why this CPU cannot run guests, as text for the log.
pub fn enable_this_cpu(backend: Backend) -> Result<CpuBackend, String> {
    // SAFETY: the hypervisor's own tables map the local APIC uncached.
    unsafe { bulkhead_arch_x86_64::cpu::ap::LocalApic::current() }
        .set_spurious_vector(bulkhead_arch_x86_64::cpu::idt::SPURIOUS_VECTOR);
    match backend {
        Backend::Svm => svm::enable_svm().map(CpuBackend::Svm),
        Backend::Vmx => vmx::enable_vmx().map(|()| CpuBackend::Vmx),
    }
}

/// The second-level table format the back end runs partitions with.
///
/// # Errors
/// When the CPU's EPT cannot hold Bulkhead's tables.
pub fn table_format(backend: Backend) -> Result<TableFormat, String> {
    match backend {
        Backend::Svm => Ok(TableFormat::Npt),
        Backend::Vmx => vmx::ept_table_options().map(TableFormat::Ept),
    }
}

/// Runs `partition`'s vCPU on this CPU under the back end its table was
/// built for, until the partition stops.
pub fn run(partition: &mut Partition, table: &CpuTable, start: &Start, cpu: CpuBackend) {
    match (table, cpu) {
        (CpuTable::Npt(npt), CpuBackend::Svm(svm)) => svm::run(partition, npt, start, svm),
        (CpuTable::Ept(ept), CpuBackend::Vmx) => vmx::run(partition, ept, start),
        _ => {
            let reason = String::from("the partition's table was built for another back end than this CPU runs");
            log::error!("partition {}: {reason}", partition.name);
            partition.stop(bulkhead_core::partition::StopReason::Fault(reason), &mut svm::GuestConsole);
        }
    }
}
