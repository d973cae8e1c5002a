//! The integration tests, in one binary: one link of the crate and libzmq
//! instead of one per file. Each module is one area, with real processes,
//! sockets and signals; shared helpers and the corpus lookup are in
//! `tests/common`, fixtures in `tests/fixtures`.

#[path = "../common/mod.rs"]
mod common;

mod async_sdk;
mod breaker;
mod chaos;
mod check;
mod control;
mod corpus;
mod dashboard;
mod error_bus;
mod heartbeat;
mod hostile_agents;
mod hostile_manifests;
mod idle;
mod keepalive;
mod kubernetes;
mod legacy_agents;
mod legacy_error_bus;
mod legacy_formats;
mod legacy_runtime;
mod loader_fuzz;
mod logs;
mod metrics;
mod operator;
mod plan_draw;
mod pool;
mod probes;
mod python_sdk;
mod reload;
mod replicas;
mod restart;
mod schema;
mod sdk;
mod security;
mod shutdown;
mod spawn;
mod status;
mod top;
mod two_hosts;
mod up;
mod web_stack;
