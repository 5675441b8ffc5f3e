//! Generates include/storyflow_tasks.h with cbindgen, and sets the shared
//! library's SONAME and its no-unload flag.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        // The worker thread runs library code for as long as the process
        // lives; an unload (dlclose) must never pull that code away.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libstoryflow_tasks.so.{major}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    match cbindgen::generate_with_config(&crate_dir, config) {
        Ok(bindings) => {
            bindings.write_to_file(crate_dir.join("include/storyflow_tasks.h"));
        }
        // A syntax error in the sources is reported by rustc itself, more clearly.
        Err(error) => println!("cargo:warning=cbindgen could not generate the header: {error}"),
    }
}
