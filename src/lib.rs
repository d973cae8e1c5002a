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
//! - [`process`]: spawning, signalling and reaping agent processes; each
//!   agent's tree (a cgroup, else an environment marker) so daemons die with
//!   it; the keeper process that kills agent groups and trees if the
//!   supervisor is killed; the bounded console queue for agent output;
//!   which TCP ports a process tree listens on (`ports.rs`).
//! - [`health`]: readiness and liveness probes (tcp, http, exec, legacy zmq).
//! - [`supervisor`]: the runtime owner of agent state (run loop, transitions,
//!   restarts); `diagnose.rs` says what a not-ready agent listens on instead.
//! - [`control`]: the control socket (requests in, supervisor commands
//!   out), its client, the run directory lock, hot reload, `/metrics`.
//! - [`transport`]: ZeroMQ sockets: agent endpoint, error bus, `SocketPool`, wire messages.
//! - [`sdk`]: the agent side (blocking): ready, heartbeats, errors, resolve, shutdown;
//!   `async_calls.rs` adds async versions of the waiting calls (feature `async`).
//! - [`files`]: opening run-directory files without following links, and
//!   size rotation (agent logs, `errors.jsonl`).
//! - [`shutdown`]: the root cancellation token and task tracking.

pub mod check;
pub mod cli;
pub mod control;
pub mod files;
pub mod health;
pub mod manifest;
pub mod plan;
pub mod process;
pub mod sdk;
pub mod shutdown;
pub mod supervisor;
pub mod transport;
