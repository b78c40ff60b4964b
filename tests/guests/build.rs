//! Links the test guests at the guest-physical address their configurations
//! load them to.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/guest.ld");
        println!("cargo:rerun-if-changed={dir}/guest.ld");
    }
}
