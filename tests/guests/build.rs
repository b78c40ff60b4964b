//! Links the test guests at the guest-physical address their configurations
//! load them to: `guest.ld` on arm64, `guest-x86_64.ld` on x86_64.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
            Ok("x86_64") => {
                // A fixed-address executable: the flat binary runs where it
                // is linked, and nothing applies relocations to it.
                println!("cargo:rustc-link-arg-bins=--no-pie");
                "guest-x86_64.ld"
            }
            _ => "guest.ld",
        };
        println!("cargo:rustc-link-arg-bins=-T{dir}/{script}");
        println!("cargo:rerun-if-changed={dir}/{script}");
    }
}
