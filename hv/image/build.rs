//! Links the hypervisor as a static position-independent executable, so the
//! loader can place it anywhere and apply its relative relocations.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "none" {
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        // Precompiled `core` has absolute pointers in read-only data; the
        // loader relocates before anything is write-protected.
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
