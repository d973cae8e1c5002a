// Vendored from zmq-sys 0.12.0 (MIT/Apache-2.0) with one change: libzmq is
// built with its DRAFT API, for the ZMQ_IN_BATCH_SIZE / ZMQ_OUT_BATCH_SIZE
// socket options. The supervisor sets them on its agent endpoint so each of
// hundreds of agent connections holds 2 KiB read and 1 KiB write buffers
// instead of 8 KiB each (see src/transport/mod.rs, `small_batches`).
pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // Note that by default `libzmq` builds without `libsodium` by instead
    // relying on `tweetnacl`. However since this `tweetnacl` [has never been
    // audited nor is ready for production](https://github.com/zeromq/libzmq/issues/3006),
    // we link against `libsodium` to enable `ZMQ_CURVE`.
    // libzmq's C++ warnings are not ours to fix; keep build output quiet.
    if std::env::var_os("CXXFLAGS").is_none() {
        std::env::set_var("CXXFLAGS", "-w");
    }
    zeromq_src::Build::new()
        .with_libsodium(None)
        .enable_draft(true)
        .build();
}

fn main() {
    configure()
}
