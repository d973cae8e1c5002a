//! `supervisor`: a supervisor and process orchestrator for multi-agent systems.
//!
//! It reads agent manifests (its own format and the legacy
//! `startup_config.yaml` formats), checks them for port conflicts and
//! dependency cycles before anything runs, starts agents in dependency order
//! and keeps them running.
//!
//! # Layout
//!
//! - [`manifest`]: YAML text -> node tree with locations -> `RawManifest`
//!   (serde) -> `validate` -> [`manifest::Manifest`]. Variables, legacy
//!   formats, problems with file:line; `convert` writes any format out as
//!   a native manifest.
//! - [`plan`]: dependency graph (petgraph), knots and their elementary
//!   cycles, topological levels (around the knots), critical path.
//! - [`check`]: every pre-flight check over a loaded manifest (duplicates,
//!   unknown dependencies, cycles, ports, scripts and programs that are not
//!   there), the in-place port fixer, and the ports held on this machine
//!   (netlink `sock_diag`, confirmed by binding).
//! - [`cli`]: clap types and one file per subcommand; the only place with
//!   `anyhow`. `locate.rs` finds the manifests and run directory a command
//!   means without `--config`; `console.rs` is the supervisor's own console
//!   lines and the colour rule; `top/` is the terminal UI (ratatui).
//! - [`export`]: a checked manifest as another system's objects
//!   (`kubernetes`: Deployments, Services, NetworkPolicies, in-pod
//!   manifests for `run-one`; `cli/run_one.rs` and `cli/wait_for.rs` are
//!   the in-pod side).
//! - [`process`]: spawning, signalling and reaping agent processes; each
//!   agent's tree (a cgroup, else an environment marker) so daemons die with
//!   it; `clone3.rs`, which clones a child straight into its cgroup; the
//!   keeper process that kills agent groups and trees if the
//!   supervisor is killed; the bounded console queue for agent output;
//!   which TCP ports a process tree listens on (`ports.rs`); resource
//!   sampling of agent process trees (`sample.rs`).
//! - [`health`]: readiness and liveness probes (tcp, http, exec, legacy zmq),
//!   the tasks that run them on a schedule (`watch.rs`), and `diagnose.rs`,
//!   which says what a not-ready agent listens on instead.
//! - [`supervisor`]: the runtime owner of agent state: the run loop
//!   (`mod.rs`), the pure lifecycle split by concern (`lifecycle/`),
//!   restart policy and backoff, the environment injected into each run;
//!   `degraded.rs` derives which ready agents are degraded, and why.
//! - [`platform`]: memory of the supervisor process itself: glibc allocator
//!   tuning, and unmapping the code pages only start-up ran.
//! - [`control`]: the control socket (requests in, supervisor commands
//!   out), its client, the run directory lock, hot reload, `/metrics`.
//! - [`dashboard`]: the web dashboard of a running supervisor (tokens,
//!   routes, live events, audit log; `page.html` embedded) and its
//!   restart timeline (`model.rs`); the graph is `plan::draw`'s.
//! - [`transport`]: ZeroMQ sockets: agent endpoint, error bus, `SocketPool`, wire messages;
//!   `breaker.rs`, the circuit breakers of the pool (reported in heartbeats);
//!   the peer link's CURVE sockets (`peer.rs`).
//! - [`link`]: the peer link between the supervisors of two (or a few)
//!   hosts: state pushed both ways, acknowledged and resent across
//!   partitions; key files (`keys.rs`, `supervisor keygen`); `logs` reads
//!   of another host carried over it (`logs.rs`).
//! - [`sdk`]: the agent side (blocking): ready, heartbeats, errors, resolve, shutdown;
//!   `async_calls.rs` adds async versions of the waiting calls (feature `async`).
//! - [`files`]: opening run-directory files without following links, and
//!   size rotation (agent logs, `errors.jsonl`).
//! - [`shutdown`]: the root cancellation token and task tracking.

pub mod check;
pub mod cli;
pub mod control;
pub mod dashboard;
pub mod export;
pub mod files;
pub mod health;
pub mod link;
pub mod manifest;
pub mod plan;
pub mod platform;
pub mod process;
pub mod sdk;
pub mod shutdown;
pub mod supervisor;
pub mod transport;
