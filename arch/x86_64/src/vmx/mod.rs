//! Intel VMX: the data a VMX root-mode hypervisor hands to VMWRITE, VMXON
//! and the bitmaps it points the CPU at, and decoders for what VMREAD gives
//! back on a VM exit.
//!
//! QEMU TCG does not emulate VMX (DESIGN.md §6), so this path is written to
//! the Intel SDM and checked by host unit tests of its encodings only. No
//! instruction is executed here: the VMXON/VMLAUNCH/VMREAD/VMWRITE wrappers
//! (`cpu::vmx`) take the values these modules compute.
//!
//! - [`controls`]: the capability MSRs and the VM-execution, VM-exit and
//!   VM-entry control values derived from them (SDM Vol. 3D Appendix A);
//! - [`capabilities`]: the MSR values one CPU reports and Bulkhead's
//!   control choices, [`capabilities::VmxControls::for_partition`];
//! - [`vmcs`]: VMCS field encodings (Appendix B) and the CR0/CR4 fixed bits;
//! - [`guest`]: [`guest::VmcsWrites`], the plan of VMWRITEs that sets up a
//!   64-bit guest;
//! - [`exit`]: basic exit reasons (Appendix C) and exit-qualification
//!   decoding;
//! - [`bitmaps`]: the I/O and MSR bitmaps;
//! - [`enable`]: IA32_FEATURE_CONTROL, the CR0/CR4 values VMXON needs, the
//!   VMXON region / VMCS checks and the EPT/VPID capability MSR;
//! - [`status`]: VMX instruction failures (CF/ZF) and VM-instruction error
//!   numbers;
//! - [`event`]: exception injection, IDT-vectoring re-injection and the
//!   interruptibility state after an emulated instruction;
//! - [`translate`]: exit-information fields to the neutral
//!   [`crate::exit::Exit`].
//!
//! The instructions themselves (VMXON, VMCLEAR, VMPTRLD, VMREAD, VMWRITE,
//! INVEPT, VMLAUNCH/VMRESUME) are in `cpu::vmx`, built only for the
//! bare-metal target.
//!
//! Section numbers are those of the SDM since its 2023 renumbering (VMCS in
//! chapter 25, VM entries 27, VM exits 28, EPT 29, VMM programming 32);
//! editions before that number each of these chapters one lower.

/// Defines a `u32` flags newtype with named single-bit constants, used for
/// VMX controls and SVM intercept vectors (no external `bitflags` crate is a
/// dependency of this crate).
macro_rules! bit_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$flag_meta:meta])* const $flag:ident = $bit:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #[repr(transparent)]
        pub struct $name(u32);

        impl $name {
            $( $(#[$flag_meta])* pub const $flag: $name = $name(1 << $bit); )*

            /// Every flag this type names, with its name, lowest bit first.
            pub const NAMED: &'static [(&'static str, $name)] = &[$((stringify!($flag), $name(1 << $bit))),*];

            /// The union of every named flag.
            pub const ALL: $name = $name(0 $(| (1 << $bit))*);

            /// No flags.
            pub const fn empty() -> $name {
                $name(0)
            }

            /// The raw value.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// A value from raw bits, keeping bits this type does not name.
            pub const fn from_bits_retain(bits: u32) -> $name {
                $name(bits)
            }

            /// Whether every flag of `other` is set in `self`.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// The flags set in either.
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }

            /// The name of the flag at `bit`, if this type names one.
            pub fn bit_name(bit: u32) -> Option<&'static str> {
                Self::NAMED.iter().find(|(_, flag)| flag.0 == 1u32.checked_shl(bit).unwrap_or(0)).map(|(name, _)| *name)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, other: $name) -> $name {
                self.union(other)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, other: $name) {
                self.0 |= other.0;
            }
        }
    };
}

pub(crate) use bit_flags;

pub mod bitmaps;
pub mod capabilities;
pub mod controls;
pub mod enable;
pub mod event;
pub mod exit;
pub mod guest;
pub mod status;
pub mod translate;
pub mod vmcs;
