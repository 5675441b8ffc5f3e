//! Generates the C header with cbindgen into `OUT_DIR`, and sets the shared
//! library's SONAME and its no-unload flag.
//!
//! The checked-in include/storyflow_tasks.h is never written by a build: `make header`
//! copies the generated one there, and `make test-header` fails when the two differ
//! (tests/run_header.sh). Generating on every build keeps a cbindgen failure a build
//! failure, and costs a fraction of a second.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
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
    let bindings = cbindgen::generate_with_config(&crate_dir, config)
        .unwrap_or_else(|error| panic!("cbindgen could not generate the C header: {error}"));
    bindings.write_to_file(out_dir.join("storyflow_tasks.h"));
}
