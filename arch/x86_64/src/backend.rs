//! Which virtualization extension runs partitions on this machine, decided
//! once from CPUID's vendor string and feature bits:
//!
//! | vendor | needs | back end |
//! |---|---|---|
//! | AMD (or Hygon, AMD's licensee) | SVM (CPUID 0x8000_0001 ECX bit 2), nested paging (0x8000_000A EDX bit 0) | [`Backend::Svm`] |
//! | Intel | VMX (CPUID 1 ECX bit 5), EPT and unrestricted guest (IA32_VMX_PROCBASED_CTLS2 allowed-1 bits 33, 39) | [`Backend::Vmx`] |
//! | anything else, or a missing feature | — | partitions refused with the [`Unsupported`] reason |
//!
//! The vendor decides which extension is looked at: an emulator may expose
//! the other vendor's bits (QEMU TCG's `-cpu max` is AMD with SVM), and
//! only the vendor's own extension is what that silicon implements.

/// CPUID leaf 0's vendor string (EBX, EDX, ECX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" or "HygonGenuine".
    Amd,
    /// Anything else, raw.
    Other([u8; 12]),
}

impl Vendor {
    /// The vendor from CPUID leaf 0's EBX, EDX and ECX, in that order.
    pub fn from_cpuid(ebx: u32, edx: u32, ecx: u32) -> Vendor {
        let mut name = [0u8; 12];
        name[0..4].copy_from_slice(&ebx.to_le_bytes());
        name[4..8].copy_from_slice(&edx.to_le_bytes());
        name[8..12].copy_from_slice(&ecx.to_le_bytes());
        match &name {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Other(name),
        }
    }
}

/// The feature bits the choice reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// CPUID 0x8000_0001 ECX bit 2.
    pub svm: bool,
    /// CPUID 0x8000_000A EDX bit 0.
    pub nested_paging: bool,
    /// CPUID 1 ECX bit 5.
    pub vmx: bool,
    /// Secondary controls available (IA32_VMX_PROCBASED_CTLS allowed-1
    /// bit 63) and IA32_VMX_PROCBASED_CTLS2 allowed-1 bit 33 (enable EPT).
    pub ept: bool,
    /// IA32_VMX_PROCBASED_CTLS2 allowed-1 bit 39 (unrestricted guest).
    pub unrestricted_guest: bool,
}

/// The extension partitions run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMD SVM with nested paging.
    Svm,
    /// Intel VMX with EPT.
    Vmx,
}

/// Why no back end can run partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// An AMD CPU without SVM.
    AmdWithoutSvm,
    /// An AMD CPU with SVM but no nested paging.
    AmdWithoutNestedPaging,
    /// An Intel CPU without VMX.
    IntelWithoutVmx,
    /// An Intel CPU with VMX but no EPT.
    IntelWithoutEpt,
    /// An Intel CPU with EPT but no unrestricted guest.
    IntelWithoutUnrestrictedGuest,
    /// Neither Intel nor AMD.
    UnknownVendor([u8; 12]),
}

impl core::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Unsupported::AmdWithoutSvm => f.write_str("AMD CPU without SVM (CPUID 0x8000_0001 ECX bit 2)"),
            Unsupported::AmdWithoutNestedPaging => {
                f.write_str("AMD CPU with SVM but without nested paging (CPUID 0x8000_000A EDX bit 0)")
            }
            Unsupported::IntelWithoutVmx => f.write_str("Intel CPU without VMX (CPUID 1 ECX bit 5)"),
            Unsupported::IntelWithoutEpt => f.write_str("Intel CPU with VMX but without EPT"),
            Unsupported::IntelWithoutUnrestrictedGuest => {
                f.write_str("Intel CPU with VMX and EPT but without unrestricted guest")
            }
            Unsupported::UnknownVendor(name) => match core::str::from_utf8(name) {
                Ok(text) => write!(f, "CPU vendor '{text}' is neither Intel nor AMD"),
                Err(_) => write!(f, "CPU vendor {name:02x?} is neither Intel nor AMD"),
            },
        }
    }
}

/// The back end for a CPU of `vendor` with `features`.
///
/// # Errors
/// [`Unsupported`] naming the missing vendor or feature.
pub fn choose(vendor: Vendor, features: &Features) -> Result<Backend, Unsupported> {
    match vendor {
        Vendor::Amd if !features.svm => Err(Unsupported::AmdWithoutSvm),
        Vendor::Amd if !features.nested_paging => Err(Unsupported::AmdWithoutNestedPaging),
        Vendor::Amd => Ok(Backend::Svm),
        Vendor::Intel if !features.vmx => Err(Unsupported::IntelWithoutVmx),
        Vendor::Intel if !features.ept => Err(Unsupported::IntelWithoutEpt),
        Vendor::Intel if !features.unrestricted_guest => Err(Unsupported::IntelWithoutUnrestrictedGuest),
        Vendor::Intel => Ok(Backend::Vmx),
        Vendor::Other(name) => Err(Unsupported::UnknownVendor(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    /// CPUID leaf 0's registers for a 12-byte vendor string.
    fn registers(name: &[u8; 12]) -> (u32, u32, u32) {
        let word = |i: usize| u32::from_le_bytes([name[i], name[i + 1], name[i + 2], name[i + 3]]);
        (word(0), word(4), word(8))
    }

    #[test]
    fn vendors() {
        // "Genu" "ineI" "ntel" as the CPU returns them.
        assert_eq!(Vendor::from_cpuid(0x756e_6547, 0x4965_6e69, 0x6c65_746e), Vendor::Intel);
        let (b, d, c) = registers(b"AuthenticAMD");
        assert_eq!(Vendor::from_cpuid(b, d, c), Vendor::Amd);
        let (b, d, c) = registers(b"HygonGenuine");
        assert_eq!(Vendor::from_cpuid(b, d, c), Vendor::Amd);
        let (b, d, c) = registers(b"CentaurHauls");
        assert_eq!(Vendor::from_cpuid(b, d, c), Vendor::Other(*b"CentaurHauls"));
    }

    #[test]
    fn amd_needs_svm_and_nested_paging() {
        let full = Features { svm: true, nested_paging: true, ..Features::default() };
        assert_eq!(choose(Vendor::Amd, &full), Ok(Backend::Svm));
        assert_eq!(choose(Vendor::Amd, &Features::default()), Err(Unsupported::AmdWithoutSvm));
        let no_npt = Features { svm: true, ..Features::default() };
        assert_eq!(choose(Vendor::Amd, &no_npt), Err(Unsupported::AmdWithoutNestedPaging));
        // VMX bits on an AMD vendor string do not make it Intel.
        let odd = Features { vmx: true, ept: true, unrestricted_guest: true, ..Features::default() };
        assert_eq!(choose(Vendor::Amd, &odd), Err(Unsupported::AmdWithoutSvm));
    }

    #[test]
    fn intel_needs_vmx_ept_and_unrestricted_guest() {
        let full = Features { vmx: true, ept: true, unrestricted_guest: true, ..Features::default() };
        assert_eq!(choose(Vendor::Intel, &full), Ok(Backend::Vmx));
        assert_eq!(choose(Vendor::Intel, &Features::default()), Err(Unsupported::IntelWithoutVmx));
        let no_ept = Features { vmx: true, unrestricted_guest: true, ..Features::default() };
        assert_eq!(choose(Vendor::Intel, &no_ept), Err(Unsupported::IntelWithoutEpt));
        let no_ug = Features { vmx: true, ept: true, ..Features::default() };
        assert_eq!(choose(Vendor::Intel, &no_ug), Err(Unsupported::IntelWithoutUnrestrictedGuest));
        // SVM bits on an Intel vendor string are ignored.
        let odd = Features { svm: true, nested_paging: true, ..Features::default() };
        assert_eq!(choose(Vendor::Intel, &odd), Err(Unsupported::IntelWithoutVmx));
    }

    #[test]
    fn other_vendors_are_refused_by_name() {
        let all = Features { svm: true, nested_paging: true, vmx: true, ept: true, unrestricted_guest: true };
        let error = choose(Vendor::Other(*b"CentaurHauls"), &all).unwrap_err();
        assert_eq!(format!("{error}"), "CPU vendor 'CentaurHauls' is neither Intel nor AMD");
        assert_eq!(format!("{}", Unsupported::IntelWithoutEpt), "Intel CPU with VMX but without EPT");
    }
}
