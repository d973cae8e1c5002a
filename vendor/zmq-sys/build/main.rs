// Vendored from zmq-sys 0.12.0 (MIT/Apache-2.0) with three changes:
// - libzmq is built with its DRAFT API, for the ZMQ_IN_BATCH_SIZE /
//   ZMQ_OUT_BATCH_SIZE socket options. The supervisor sets them on its agent
//   endpoint so each of hundreds of agent connections holds 2 KiB read and
//   1 KiB write buffers instead of 8 KiB each (see src/transport/mod.rs,
//   `small_batches`).
// - CURVE (encryption and authentication, used by the peer link between
//   two hosts' supervisors: src/link/) is compiled in when libsodium's
//   static library and headers are found (Debian: `libsodium-dev`; or
//   SODIUM_LIB_DIR + SODIUM_INCLUDE_DIR). Without them libzmq builds as
//   before and the peer link refuses to start, saying so.
// - libzmq's compile-time config.hpp is replaced by build/zmq_config.hpp
//   (force-included), whose message pipes allocate 16 messages at a time
//   instead of 256: 1 KiB chunks instead of 16 KiB, of which every pipe that
//   keeps receiving ends up with two resident (see that file).
pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // Note that by default `libzmq` builds without `libsodium` by instead
    // relying on `tweetnacl`. However since this `tweetnacl` [has never been
    // audited nor is ready for production](https://github.com/zeromq/libzmq/issues/3006),
    // we link against `libsodium` to enable `ZMQ_CURVE`.
    // libzmq's C++ warnings are not ours to fix; keep build output quiet.
    println!("cargo:rerun-if-changed=build/zmq_config.hpp");
    println!("cargo:rerun-if-env-changed=CXXFLAGS");
    println!("cargo:rerun-if-env-changed=CPATH");
    let given = std::env::var("CXXFLAGS").unwrap_or_else(|_| "-w".to_string());
    // cc splits CXXFLAGS at whitespace, so the file goes there by name only
    // and its directory by CPATH (searched like -I; a clone path with a
    // space in it stays whole).
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build");
    let mut search = vec![directory];
    if let Some(existing) = std::env::var_os("CPATH") {
        search.extend(std::env::split_paths(&existing));
    }
    std::env::set_var(
        "CPATH",
        std::env::join_paths(search).expect("zmq-sys: the build directory's path holds a ':'"),
    );
    std::env::set_var("CXXFLAGS", format!("{given} -include zmq_config.hpp"));
    println!("cargo:rerun-if-env-changed=SODIUM_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SODIUM_INCLUDE_DIR");
    let sodium = libsodium();
    if let Some(sodium) = &sodium {
        // zeromq-src prints this path with Debug quotes, which cargo cannot
        // use; say it plainly.
        println!(
            "cargo:rustc-link-search=native={}",
            sodium.lib_dir().display()
        );
    }
    zeromq_src::Build::new()
        .with_libsodium(sodium)
        .enable_draft(true)
        .build();
}

/// Where libsodium's static library and headers are, if installed.
fn libsodium() -> Option<zeromq_src::LibLocation> {
    use std::path::PathBuf;
    let given = |name: &str| std::env::var_os(name).map(PathBuf::from);
    if let (Some(lib), Some(include)) = (given("SODIUM_LIB_DIR"), given("SODIUM_INCLUDE_DIR")) {
        return Some(zeromq_src::LibLocation::new(lib, include));
    }
    let include = ["/usr/include", "/usr/local/include"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("sodium.h").is_file())?;
    let lib = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|dir| dir.join("libsodium.a").is_file())?;
    println!("cargo:rerun-if-changed={}", lib.join("libsodium.a").display());
    Some(zeromq_src::LibLocation::new(lib, include))
}

fn main() {
    configure()
}
