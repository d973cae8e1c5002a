//! `supervisor up`: check the manifests (refusing on errors, like `check`),
//! pick the agents of this host, run them under the supervisor until
//! SIGINT/SIGTERM/SIGQUIT (or until all are ready with `--exit-when-ready`;
//! SIGHUP reloads, see `crate::shutdown::HANDLED_SIGNALS`), show a
//! progress line while starting and a summary once everything is ready.
//!
//! Also takes the run directory's lock (one supervisor per run directory),
//! serves the control socket, watches the manifests for hot reload, serves
//! `/metrics` when the manifest asks for it, and with `--detach` starts
//! itself again in the background.
//!
//! Owns the glue only: the runtime, the signal watcher and printing. The
//! decisions live in `crate::supervisor`.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;

use super::{Exit, ManifestArgs};
use crate::check::{self, CheckOptions, is_this_host, local_hostname};
use crate::control::reload::{Reloader, watch_files};
use crate::control::{Client, Request, RunDir, RunDirLock};
use crate::manifest::{Agent, Manifest, Probe, ReadinessCheck};
use crate::plan::Plan;
use crate::process::keeper::Keeper;
use crate::process::{Console, ProcessSpawner};
use crate::shutdown::{Shutdown, Signals};
use crate::supervisor::{
    self, AgentSpec, AgentState, StatusSnapshot, SupervisorHandle, format_duration,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Run the agents of this machine name (default: this machine's hostname;
    /// `localhost` and `127.0.0.1` always mean this machine).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Where logs (`logs/<agent>.log`) and run state go
    /// (default: `.supervisor/` beside the first manifest).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Do not copy agent output to the console (it still goes to the log files).
    #[arg(long)]
    pub no_console: bool,
    /// Once every agent is ready, print the summary, stop them all and exit:
    /// 0 when all became ready, else 1 naming each agent that did not, with
    /// the last lines of its log. For smoke tests and benchmarks.
    #[arg(long)]
    pub exit_when_ready: bool,
    /// With `--exit-when-ready` or `-d --wait`: give up (exit 1) when not
    /// every agent is ready after this many seconds.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
    /// With `-d`: return only once every agent is ready (exit 0), or one of
    /// them failed (exit 1, naming it, with the last lines of its log).
    #[arg(long, requires = "detach")]
    pub wait: bool,
    /// A required agent that fails does not stop the others: it is
    /// reported (as it happens, in `status`, and when `up` ends, which then
    /// exits 1). For bringing up a system where some agents are broken.
    #[arg(long)]
    pub keep_going: bool,
    /// Serve the web dashboard on this address (e.g. `127.0.0.1:8090`; port
    /// 0 picks one) and print its operator link on stdout, its viewer link
    /// on the next line. Loopback only unless `--allow-remote`.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Let `--dashboard` listen on an address other than loopback.
    #[arg(long, requires = "dashboard")]
    pub allow_remote: bool,
    /// Set an agent environment variable, over the manifest's own `env`
    /// (repeatable): `--env PYTHONPATH=$PWD`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A dotenv file whose variables are set in every agent's environment,
    /// over the manifest's own `env` (`--env` wins over it). Unlike
    /// `--env-file`, which only feeds `${VAR}` in the manifest.
    #[arg(long, value_name = "FILE")]
    pub env_override: Option<PathBuf>,
    /// Start one agent at a time in plan order, each after the previous is
    /// ready (the baseline of `scripts/bench-startup.sh`).
    #[arg(long)]
    pub sequential: bool,
    /// Also write the start-up summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Skip trying to bind this host's ports before starting.
    #[arg(long)]
    pub no_bind_check: bool,
    /// Run in the background: start again detached from the terminal
    /// (output to `<run-dir>/supervisor.log`), return once it answers on its
    /// control socket.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Do not reload when a manifest or the env file changes (`supervisor
    /// reload` still works).
    #[arg(long)]
    pub no_watch: bool,
    /// Where agents connect to the supervisor (`SUPERVISOR_ENDPOINT`), e.g.
    /// `tcp://0.0.0.0:7300` for agents on other hosts (default:
    /// `ipc://<run-dir>/agents.sock`).
    #[arg(long, value_name = "ENDPOINT")]
    pub agent_endpoint: Option<String>,
    /// Also accept the legacy system's `ERROR:` PUB messages: bind a SUB
    /// socket here (e.g. `tcp://127.0.0.1:7150`, where unmodified agents
    /// publish) and put what arrives on the error bus (`errors.jsonl`).
    #[arg(long, value_name = "ENDPOINT")]
    pub legacy_errors: Option<String>,
    /// This host's peer-link key pair (`supervisor keygen`), used when the
    /// manifests' `hosts:` give this host and another a `link_port`
    /// (default: `<run-dir>/link.key`).
    #[arg(long, value_name = "FILE", env = "SUPERVISOR_LINK_KEY")]
    pub link_key: Option<PathBuf>,
}

/// The peer link this host runs, if the manifests' `hosts:` give it one: this
/// host and at least one other with a `link_port` (the others also need a
/// `public_key`). The link listens on this host's `bind:`, else its
/// `address:` (never a wildcard unless `bind:` says so).
fn link_config(
    manifest: &Manifest,
    host: &str,
    key_file: &std::path::Path,
) -> anyhow::Result<Option<crate::link::LinkConfig>> {
    let Some(this) = manifest.host(host).filter(|this| this.link_port.is_some()) else {
        return Ok(None);
    };
    let others: Vec<_> = manifest
        .hosts
        .iter()
        .filter(|other| other.name != host && other.link_port.is_some())
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    let mut peers = Vec::new();
    for other in others {
        let Some(public_key) = &other.public_key else {
            anyhow::bail!(
                "{}: hosts.{}: a peer needs `public_key` (run `supervisor keygen` on that host)",
                other.location,
                other.name
            );
        };
        peers.push(crate::transport::peer::PeerAddress {
            name: other.name.clone(),
            endpoint: format!(
                "tcp://{}:{}",
                other.address(),
                other.link_port.expect("filtered on link_port")
            ),
            public_key: public_key.clone(),
        });
    }
    let listen = this.bind.as_deref().unwrap_or(this.address());
    let keys = crate::link::keys::read(key_file).with_context(|| {
        format!(
            "the peer link of host `{host}` needs its key pair (make it with `supervisor keygen --out {}`)",
            key_file.display()
        )
    })?;
    Ok(Some(crate::link::LinkConfig {
        host: host.to_string(),
        bind: format!(
            "tcp://{listen}:{}",
            this.link_port.expect("filtered on link_port")
        ),
        keys,
        peers,
        dependencies: Default::default(),
        logs: None,
    }))
}

/// `KEY=VALUE` of `--env`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.contains('\0') && !value.contains('\0') => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Whether `agent` runs here: on `host` when given with `--host`, else on
/// this machine.
fn runs_here(agent: &Agent, host: &str, hostname: &str, explicit_host: bool) -> bool {
    if explicit_host {
        agent.host == host || (is_this_host(host, hostname) && is_this_host(&agent.host, hostname))
    } else {
        is_this_host(&agent.host, hostname)
    }
}

/// Checks the manifests, starts this host's agents under a new supervisor
/// and runs it until a stop signal or `down` (or, with
/// `--exit-when-ready`, until everything is ready). Exit 1 when the
/// manifests have errors or a required agent failed, 2 when they cannot
/// be read.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let hostname = local_hostname();
    let host = args.host.clone().unwrap_or_else(|| hostname.clone());
    let configs = args.manifests.config_args()?;
    let options = CheckOptions {
        bind_check: !args.no_bind_check,
        this_host: host.clone(),
        ..CheckOptions::default()
    };
    let report = check::run_with(&configs, &args.manifests.load_options(), &options)
        .context("the manifest could not be read")?;
    super::check::print_problems(&report.problems);
    if report.has_errors() {
        return Ok(super::check::exit_code(&report));
    }
    let manifest = report.manifest;
    let explicit_host = args.host.is_some();
    let is_local = |agent: &Agent| runs_here(agent, &host, &hostname, explicit_host);
    let overrides = env_overrides(&args)?;
    let mut agents = select_agents(&manifest, is_local);
    override_env(&mut agents, &overrides);
    if agents.iter().all(|spec| spec.remote) {
        let hosts: BTreeSet<&str> = manifest
            .agents
            .iter()
            .map(|agent| agent.host.as_str())
            .collect();
        anyhow::bail!(
            "no enabled agent runs on host `{host}` (the manifests name: {})",
            hosts.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let run_dir = super::locate::up_run_dir(
        args.run_dir.as_deref(),
        configs.first().map(|config| config.path.as_path()),
    );
    let mut link = link_config(
        &manifest,
        &host,
        &args
            .link_key
            .clone()
            .unwrap_or_else(|| run_dir.path.join("link.key")),
    )?;
    if let Some(link) = &mut link {
        link.dependencies = agents
            .iter()
            .filter(|spec| !spec.remote)
            .map(|spec| {
                let dependencies = spec
                    .agent
                    .dependencies
                    .iter()
                    .map(|dependency| dependency.name.clone())
                    .collect();
                (spec.agent.name.clone(), dependencies)
            })
            .collect();
        // Peers' `logs` read this host's agent log files.
        let logs_dir = run_dir.clone();
        link.logs = Some(std::sync::Arc::new(move |query| {
            super::logs::serve(&logs_dir, query)
        }));
    }
    if args.detach {
        return detach(&run_dir, &args);
    }
    run_dir.create()?;
    let lock = RunDirLock::acquire(&run_dir)?;
    let _registration = super::locate::Registration::new(&run_dir);
    let logs = run_dir.logs();
    let reloader: Reloader = {
        let configs = configs.clone();
        let load = args.manifests.load_options();
        let host = host.clone();
        let overrides = overrides.clone();
        Arc::new(move || {
            // Our own agents hold their ports: no bind check on reload.
            let options = CheckOptions {
                bind_check: false,
                this_host: host.clone(),
                ..CheckOptions::default()
            };
            let report = check::run_with(&configs, &load, &options).map_err(|error| {
                error
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })?;
            let errors: Vec<String> = report
                .problems
                .iter()
                .filter(|problem| problem.is_error())
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() {
                return Err(errors);
            }
            let mut agents = select_agents(&report.manifest, |agent| {
                runs_here(agent, &host, &hostname, explicit_host)
            });
            override_env(&mut agents, &overrides);
            if agents.iter().all(|spec| spec.remote) {
                return Err(vec![format!("no enabled agent runs on host `{host}`")]);
            }
            Ok(supervisor::Reload {
                agents: Arc::new(agents),
                strategy: report.manifest.strategy,
                scaled: None,
            })
        })
    };
    let mut watched: Vec<PathBuf> = configs.iter().map(|config| config.path.clone()).collect();
    watched.extend(args.manifests.env_file.clone());
    let control = Control {
        lock,
        reloader,
        watched: (!args.no_watch).then_some(watched),
        metrics: manifest.metrics.map(|metrics| metrics.listen),
        link,
    };
    let width = agents
        .iter()
        .map(|spec| spec.agent.name.len())
        .max()
        .unwrap_or(0);
    let config = supervisor::Config {
        agents,
        strategy: manifest.strategy,
        sequential: args.sequential,
        logs: Some(logs.clone()),
        console: (!args.no_console).then(|| Console {
            width,
            color: super::console::use_color(std::io::stdout().is_terminal()),
        }),
        // The same value the manifest's `${PORT_OFFSET}` used (--env-file wins).
        port_offset: crate::manifest::Variables::new(None, args.manifests.env_file.as_deref())
            .ok()
            .and_then(|variables| variables.get("PORT_OFFSET").map(str::to_string))
            .unwrap_or_else(|| "0".into()),
        sample_interval: Some(Duration::from_secs(2)),
        keep_going: args.keep_going,
    };
    super::console::set_name_width(width);
    crate::platform::tune_allocator();
    crate::platform::raise_open_files();
    // One worker: the loop owns all agent state and every blocking job
    // (fork/exec, ZeroMQ, /proc) has its own thread, so a second worker
    // would mostly add wake-ups handing tasks between the two.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("supervisor")
        .build()
        .context("starting the async runtime")?;
    tracing::info!(host = %host, logs = %logs.display(), "starting {} agents", config.agents.iter().filter(|spec| !spec.remote).count());
    let plan = Start {
        plan: Plan::new(&Manifest {
            agents: config
                .agents
                .iter()
                .map(|spec| spec.agent.clone())
                .collect(),
            ..Manifest::default()
        })
        .context("planning the start order")?,
        readiness: config
            .agents
            .iter()
            .map(|spec| (spec.agent.name.clone(), describe(&spec.agent.readiness)))
            .collect(),
    };
    // The supervisor holds what it needs of the manifest (`config.agents`);
    // the manifest as loaded (about 1 KB an agent) need not stay for the run.
    drop(manifest);
    let (outcome, late, last) =
        runtime.block_on(supervise(config, plan.clone(), &args, control))?;
    if let (Some(path), Some(failure)) = (&args.summary_json, &outcome.failure) {
        // A required agent stopped everything: every agent's state and
        // reason as `up` ended.
        let mut json = summary(&last, &plan).json;
        json["failure"] = serde_json::Value::String(failure.to_string());
        if let Err(error) = std::fs::write(path, json.to_string()) {
            tracing::warn!(path = %path.display(), %error, "cannot write the summary");
        }
    }
    if let Some(failure) = outcome.failure {
        let tail = super::remote::log_tail(&run_dir, &failure.agent, LOG_TAIL);
        anyhow::bail!("{failure}{}", indented(&failure.agent, &tail));
    }
    if let Some(late) = late {
        eprintln!("error: {late}");
        return Ok(Exit::Problems);
    }
    // With --keep-going (or `on_give_up: keep-running`), required agents may
    // have failed while the others ran.
    let failed: Vec<_> = last
        .agents
        .iter()
        .filter(|agent| !agent.remote && agent.required && agent.state == AgentState::Failed)
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "error: {} required agent(s) failed while the others kept running:",
            failed.len()
        );
        for agent in failed {
            eprintln!(
                "  {}: {}",
                agent.name,
                agent.reason.as_deref().unwrap_or("failed")
            );
        }
        return Ok(Exit::Problems);
    }
    Ok(Exit::Ok)
}

/// How many of a failed agent's last log lines `up` prints.
const LOG_TAIL: usize = 10;

/// `\n  last lines of store's log:\n    ...`, or nothing without lines.
fn indented(agent: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut text = format!("\n  last lines of {agent}'s log:");
    for line in lines {
        text.push_str("\n    ");
        text.push_str(line);
    }
    text
}

/// `--env-override FILE` then `--env KEY=VALUE`, in the order they apply.
fn env_overrides(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    let mut overrides = Vec::new();
    if let Some(path) = &args.env_override {
        for item in dotenvy::from_path_iter(path)
            .with_context(|| format!("reading --env-override {}", path.display()))?
        {
            overrides
                .push(item.with_context(|| format!("reading --env-override {}", path.display()))?);
        }
    }
    overrides.extend(args.env.iter().cloned());
    Ok(overrides)
}

/// Sets the overrides in every local agent's environment, over the manifest.
fn override_env(agents: &mut [AgentSpec], overrides: &[(String, String)]) {
    for spec in agents.iter_mut().filter(|spec| !spec.remote) {
        for (key, value) in overrides {
            spec.agent.env.insert(key.clone(), value.clone());
        }
    }
}

/// The enabled agents of this host, plus the agents of other hosts that they
/// depend on directly (awaited, not started): defined in a loaded manifest,
/// or declared under `hosts:`. This host's agents go by the names their
/// manifest wrote (see `manifest::names::localize`); those of other hosts by
/// their graph names, and are probed at their host's `hosts:` address.
fn select_agents(manifest: &Manifest, is_local: impl Fn(&Agent) -> bool) -> Vec<AgentSpec> {
    let local: Vec<&Agent> = manifest
        .agents
        .iter()
        .filter(|agent| agent.enabled && is_local(agent))
        .collect();
    let needed: BTreeSet<&str> = local
        .iter()
        .flat_map(|agent| {
            agent
                .dependencies
                .iter()
                .map(|dependency| dependency.name.as_str())
        })
        .collect();
    // An agent with `replicas` runs as its instances (`worker-0`, ...).
    let mut specs: Vec<AgentSpec> = local
        .iter()
        .flat_map(|agent| crate::manifest::replicas::instances(agent))
        .map(|mut agent| {
            // Probes written against this host's name go to its `hosts:` address.
            if let Some(host) = manifest.host(&agent.host) {
                aim_at(&mut agent, host.address(), false);
            }
            AgentSpec {
                agent,
                remote: false,
            }
        })
        .collect();
    for agent in manifest.agents.iter().chain(&manifest.declared) {
        if agent.enabled && !is_local(agent) && needed.contains(agent.name.as_str()) {
            let mut agent = agent.clone();
            if let Some(host) = manifest.host(&agent.host) {
                aim_at(&mut agent, host.address(), true);
            }
            specs.push(AgentSpec {
                agent,
                remote: true,
            });
        }
    }
    for agent in &manifest.agents {
        if !agent.enabled && needed.contains(agent.name.as_str()) {
            tracing::warn!(agent = %agent.name, "is disabled; agents depending on it start without it");
        }
    }
    let mut agents: Vec<Agent> = specs.iter().map(|spec| spec.agent.clone()).collect();
    crate::manifest::names::localize(&mut agents, |agent| is_local(agent));
    for (spec, agent) in specs.iter_mut().zip(agents) {
        spec.agent = agent;
    }
    specs
}

/// Points an agent at its host's `hosts:` address: probes aimed at the
/// host's name go there, and for an agent of another host (`remote`) also
/// probes aimed at loopback or a wildcard, and dependents reach it there.
fn aim_at(agent: &mut Agent, address: &str, remote: bool) {
    let aimed_here = |host: &str| {
        host == agent.host
            || (remote
                && matches!(
                    host,
                    "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "::" | ""
                ))
    };
    for probe in [
        match &mut agent.readiness.check {
            ReadinessCheck::Probe(probe) => Some(probe),
            _ => None,
        },
        agent.liveness.as_mut().map(|liveness| &mut liveness.probe),
    ]
    .into_iter()
    .flatten()
    {
        if let Probe::Tcp { host, .. } | Probe::Zmq { host, .. } = probe
            && aimed_here(host)
        {
            *host = address.to_string();
        }
    }
    if remote || agent.address == agent.host {
        agent.address = address.to_string();
    }
}

/// What `up` serves besides the agents.
struct Control {
    /// Held until `up` returns; dropping it removes the socket and pid file.
    lock: RunDirLock,
    reloader: Reloader,
    /// Files whose changes trigger a reload; `None` with `--no-watch`.
    watched: Option<Vec<PathBuf>>,
    metrics: Option<std::net::SocketAddr>,
    /// The peer link to the other hosts, when `hosts:` gives this host one.
    link: Option<crate::link::LinkConfig>,
}

/// Starts `up` again without `--detach`, in its own session with output
/// to `<run-dir>/supervisor.log`, and returns once it answers a ping (or
/// reports that it exited).
fn detach(run_dir: &RunDir, args: &Args) -> anyhow::Result<Exit> {
    use std::os::unix::process::CommandExt;
    run_dir.create()?;
    if let Ok(mut client) = Client::connect(run_dir)
        && let Ok(response) = client.request(&Request::Ping, Duration::from_secs(2))
    {
        anyhow::bail!(
            "a supervisor is already running for run directory {} (pid {})",
            run_dir.path.display(),
            response.pid.map(|pid| pid.to_string()).unwrap_or_default()
        );
    }
    let log_path = run_dir.supervisor_log();
    let log = crate::files::open_append(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut arguments: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|argument| argument != "-d" && argument != "--detach" && argument != "--wait")
        .collect();
    if !arguments.iter().any(|argument| argument == "--no-console") {
        arguments.push("--no-console".into());
    }
    let program = std::env::current_exe().context("finding this program")?;
    let mut command = std::process::Command::new(program);
    command
        .args(&arguments)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .context("starting the background supervisor")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child
            .try_wait()
            .context("waiting for the background supervisor")?
        {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "the background supervisor exited ({status}); the end of {}:\n{}",
                log_path.display(),
                tail.join("\n")
            );
        }
        if let Ok(mut client) = Client::connect(run_dir)
            && let Ok(response) = client.request(&Request::Ping, Duration::from_secs(1))
            && response.pid == Some(child.id())
        {
            println!(
                "supervisor running in the background (pid {}); logs: {}",
                child.id(),
                log_path.display()
            );
            return if args.wait {
                wait_all_ready(run_dir, Duration::from_secs_f64(args.timeout))
            } else {
                Ok(Exit::Ok)
            };
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the background supervisor (pid {}) did not answer within 60s; see {}",
                child.id(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `up -d --wait`: polls the background supervisor until all of this
/// host's agents are ready, one cannot become ready, or `timeout` passes.
fn wait_all_ready(run_dir: &RunDir, timeout: Duration) -> anyhow::Result<Exit> {
    use super::remote::{Verdict, not_coming, status, wait_for};
    let ended = |exit: Exit| {
        if exit == Exit::NotRunning {
            // It stopped everything and exited: a required agent failed.
            let log = run_dir.supervisor_log();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "error: the background supervisor exited; the end of {}:",
                log.display()
            );
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("  {line}");
            }
            Exit::Problems
        } else {
            exit
        }
    };
    let view = match status(run_dir)? {
        Ok(view) => view,
        Err(exit) => return Ok(ended(exit)),
    };
    let names: Vec<String> = view
        .agents
        .iter()
        .filter(|agent| !agent.remote)
        .map(|agent| agent.name.clone())
        .collect();
    let started = std::time::Instant::now();
    let exit = wait_for(run_dir, &names, timeout, "ready", |agent| {
        match not_coming(agent) {
            Some(reason) if agent.required => Verdict::Failed(reason),
            // An optional agent that failed is reported, not waited for.
            Some(_) => Verdict::Done,
            None if agent.state == "ready" => Verdict::Done,
            None => Verdict::Waiting,
        }
    })?;
    let exit = ended(exit);
    if exit == Exit::Ok {
        let view = status(run_dir)?.map_err(|_| anyhow::anyhow!("the supervisor ended"))?;
        let ready = view
            .agents
            .iter()
            .filter(|agent| !agent.remote && agent.state == "ready")
            .count();
        println!(
            "{ready}/{} ready in {}",
            names.len(),
            format_duration(started.elapsed())
        );
        for agent in view.agents.iter().filter(|agent| !agent.remote) {
            if let Some(reason) = not_coming(agent) {
                println!("  {} (optional): {reason}", agent.name);
            }
        }
    }
    Ok(exit)
}

/// Binds the control socket (mode 0600) before anything starts.
fn bind_socket(run_dir: &RunDir) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = run_dir.socket();
    // We hold the run directory's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    // Bound through a short name when the path is too long for `sun_path`.
    let address = run_dir.socket_address()?;
    let listener = tokio::net::UnixListener::bind(&address.path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    drop(address);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// The supervisor's outcome, and with `--exit-when-ready` why not every
/// agent became ready (a failed optional agent, or `--timeout`).
async fn supervise(
    config: supervisor::Config,
    plan: Start,
    args: &Args,
    control: Control,
) -> anyhow::Result<(supervisor::Outcome, Option<String>, StatusSnapshot)> {
    let shutdown = Shutdown::new();
    // Before any agent starts: no signal may end `up` without stopping them.
    let signals = Signals::listen().context("installing the signal handlers")?;
    let listener = bind_socket(control.lock.run_dir())?;
    let metrics_listener = match control.metrics {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the metrics listener on {address}"))?;
            let bound = listener.local_addr().unwrap_or(address);
            tracing::info!("metrics on http://{bound}/metrics");
            Some(listener)
        }
        None => None,
    };
    // Kills every agent group if this process dies without stopping them.
    let keeper = std::env::current_exe()
        .and_then(|program| Keeper::start(&program))
        .context("starting the keeper process")?;
    let spawner = ProcessSpawner::start_with_keeper(Some(keeper.link()))
        .context("starting the process spawner")?;
    // The agent endpoint and the error bus (`errors.jsonl`, `errors.sock`).
    let (fabric, fabric_link) =
        supervisor::fabric::Fabric::start(&supervisor::fabric::FabricConfig {
            agent_endpoint: args.agent_endpoint.clone(),
            legacy_errors: args.legacy_errors.clone(),
            ..supervisor::fabric::FabricConfig::in_run_dir(&control.lock.run_dir().path)
        })
        .context("starting the agent endpoint and error bus")?;
    // Before any agent runs, so the link forwards every error.
    let local_errors = control
        .link
        .as_ref()
        .map(|_| crate::link::LocalErrors::of(fabric.error_bus()));
    let (handle, task) =
        supervisor::spawn_with_fabric(config, spawner, &shutdown, Some(fabric_link));
    let link = match control.link.clone() {
        Some(config) => {
            let (link, task) = crate::link::Link::start(
                config,
                handle.clone(),
                local_errors,
                shutdown.token().child_token(),
            )
            .context("starting the peer link")?;
            shutdown.tracker().spawn(async move {
                let _ = task.await;
            });
            Some(link)
        }
        None => None,
    };
    let requests = Arc::new(AtomicU64::new(0));
    shutdown.tracker().spawn(crate::control::server::run(
        listener,
        crate::control::server::ServerContext {
            handle: handle.clone(),
            reloader: Some(control.reloader.clone()),
            requests: requests.clone(),
            link: link.clone(),
        },
        shutdown.token().child_token(),
        shutdown.tracker().clone(),
    ));
    if let Some(listen) = args.dashboard {
        let links = crate::dashboard::start(
            control.lock.run_dir().clone(),
            crate::dashboard::Options {
                listen,
                allow_remote: args.allow_remote,
            },
            shutdown.token().child_token(),
            shutdown.tracker(),
        )
        .await
        .context("starting the dashboard")?;
        super::dashboard::print_links(&links);
    }
    if let Some(files) = control.watched.clone() {
        shutdown.tracker().spawn(watch_files(
            files,
            control.reloader.clone(),
            handle.clone(),
            shutdown.token().child_token(),
        ));
    }
    if let Some(listener) = metrics_listener {
        shutdown.tracker().spawn(crate::control::metrics::run(
            listener,
            crate::control::metrics::MetricsContext {
                status: handle.subscribe(),
                control_requests: requests,
            },
            shutdown.token().child_token(),
        ));
    }
    let force = handle.clone();
    let reload = {
        let (reloader, handle) = (control.reloader.clone(), handle.clone());
        move || {
            let (reloader, handle) = (reloader.clone(), handle.clone());
            tokio::spawn(async move {
                // The outcome is logged and shown in `status` by `reload_once`.
                let _ = crate::control::reload::reload_once(&reloader, &handle, "SIGHUP").await;
            });
        }
    };
    let signals = tokio::spawn(signals.watch(
        shutdown.token().clone(),
        move || force.try_shutdown(true),
        reload,
    ));
    let progress = tokio::spawn(report_progress(
        handle.clone(),
        plan,
        Finish {
            exit_when_ready: args.exit_when_ready,
            timeout: Duration::from_secs_f64(args.timeout),
            summary_json: args.summary_json.clone(),
            run_dir: control.lock.run_dir().clone(),
        },
    ));
    let outcome = task.await.context("the supervisor task panicked")?;
    signals.abort();
    let late = progress.await.ok().flatten();
    let last = handle.subscribe().borrow().clone();
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within 5s");
    }
    fabric.stop().await;
    drop(control.lock);
    Ok((outcome, late, last))
}

/// What `report_progress` does once agents are ready, or are not in time.
struct Finish {
    exit_when_ready: bool,
    /// With `exit_when_ready`: give up after this long.
    timeout: Duration,
    summary_json: Option<PathBuf>,
    run_dir: RunDir,
}

/// Prints a progress line while agents start (at most once a second, and on
/// each new ready agent), then the summary once all are ready. With
/// `--exit-when-ready` it then stops everything, and returns why not every
/// local agent became ready (with their last log lines), if one did not.
async fn report_progress(handle: SupervisorHandle, plan: Start, finish: Finish) -> Option<String> {
    let mut status = handle.subscribe();
    let mut last_line = String::new();
    let mut last_print = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::now() + finish.timeout;
    loop {
        let snapshot = status.borrow_and_update().clone();
        if snapshot.shutting_down {
            return None;
        }
        if snapshot.all_ready_after.is_some() {
            let summary = summary(&snapshot, &plan);
            crate::process::console::print_stderr(&summary.text);
            // Start-up is over: the code only it ran need not stay mapped.
            match crate::platform::release_start_up_pages() {
                Ok(bytes) => tracing::debug!(bytes, "released the start-up pages"),
                Err(error) => tracing::debug!(%error, "cannot release the start-up pages"),
            }
            let late = not_ready(&snapshot, &finish.run_dir)
                .filter(|_| finish.exit_when_ready)
                .map(|list| format!("not every agent became ready:{list}"));
            write_summary(&finish, summary.json, late.as_deref());
            if finish.exit_when_ready {
                handle.shutdown(false).await;
            }
            return late;
        }
        let line = progress_line(&snapshot);
        let ready_changed = line.split(';').next() != last_line.split(';').next();
        if line != last_line && (ready_changed || last_print.elapsed() >= Duration::from_secs(1)) {
            crate::process::console::print_stderr(&format!("{line}\n"));
            last_line = line;
            last_print = tokio::time::Instant::now();
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() {
                return None;
            },
            () = tokio::time::sleep_until(deadline), if finish.exit_when_ready => {
                // The status as it is now, before the stop rewrites reasons.
                let snapshot = handle.subscribe().borrow().clone();
                let missing = not_ready(&snapshot, &finish.run_dir).unwrap_or_default();
                let late = format!(
                    "not every agent was ready within {} (--timeout):{missing}",
                    format_duration(finish.timeout)
                );
                write_summary(&finish, summary(&snapshot, &plan).json, Some(&late));
                handle.shutdown(false).await;
                return Some(late);
            }
        }
    }
}

/// `--summary-json`: the summary, with `failure` when not all became ready.
fn write_summary(finish: &Finish, mut json: serde_json::Value, failure: Option<&str>) {
    let Some(path) = &finish.summary_json else {
        return;
    };
    if let Some(failure) = failure {
        json["failure"] = serde_json::Value::String(failure.to_string());
    }
    if let Err(error) = std::fs::write(path, json.to_string()) {
        tracing::warn!(path = %path.display(), %error, "cannot write the summary");
    }
}

/// One paragraph per local agent that is not ready: state, reason and the
/// last lines of its log; `None` when all are ready.
fn not_ready(snapshot: &StatusSnapshot, run_dir: &RunDir) -> Option<String> {
    let mut text = String::new();
    for agent in snapshot
        .agents
        .iter()
        .filter(|agent| !agent.remote && agent.state != AgentState::Ready)
    {
        text.push_str(&format!("\n  {}: {}", agent.name, agent.state));
        if let Some(reason) = &agent.reason {
            text.push_str(&format!(" ({reason})"));
        }
        let tail = super::remote::log_tail(run_dir, &agent.name, LOG_TAIL);
        text.push_str(&indented(&agent.name, &tail).replace('\n', "\n  "));
    }
    (!text.is_empty()).then_some(text)
}

/// `starting: 3/7 ready; probing db; waiting: api (db), ui (api)`.
fn progress_line(snapshot: &StatusSnapshot) -> String {
    let local: Vec<_> = snapshot
        .agents
        .iter()
        .filter(|agent| !agent.remote)
        .collect();
    let ready = local
        .iter()
        .filter(|agent| agent.state == AgentState::Ready)
        .count();
    let mut line = format!("starting: {ready}/{} ready", local.len());
    let probing: Vec<&str> = snapshot
        .agents
        .iter()
        .filter(|agent| agent.state == AgentState::Starting)
        .map(|agent| agent.name.as_str())
        .collect();
    if !probing.is_empty() {
        line.push_str(&format!("; starting {}", abbreviate(&probing)));
    }
    let waiting: Vec<String> = snapshot
        .agents
        .iter()
        .filter(|agent| agent.state == AgentState::Pending)
        .map(|agent| match agent.waiting_on.is_empty() {
            true => agent.name.clone(),
            false => format!("{} ({})", agent.name, agent.waiting_on.join(", ")),
        })
        .collect();
    if !waiting.is_empty() {
        let names: Vec<&str> = waiting.iter().map(String::as_str).collect();
        line.push_str(&format!("; waiting: {}", abbreviate(&names)));
    }
    line
}

/// Up to five names, then "and N more".
fn abbreviate(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// The summary printed once everything is ready.
struct Summary {
    /// For the console.
    text: String,
    /// Written to `--summary-json`.
    json: serde_json::Value,
}

/// What the summary needs besides the status: the start order, and how
/// each agent's readiness is checked.
#[derive(Debug, Clone)]
struct Start {
    plan: Plan,
    readiness: std::collections::BTreeMap<String, String>,
}

/// `zmq health 127.0.0.1:8200`, `tcp 127.0.0.1:7200`, `sdk`, `running 1s`.
fn describe(readiness: &crate::manifest::Readiness) -> String {
    match &readiness.check {
        ReadinessCheck::Probe(Probe::Zmq { host, port }) => format!("zmq health {host}:{port}"),
        ReadinessCheck::Probe(Probe::Tcp { host, port }) => format!("tcp {host}:{port}"),
        ReadinessCheck::Probe(Probe::Http { url }) => format!("http {url}"),
        ReadinessCheck::Probe(Probe::Exec { command }) => format!("exec {}", command.join(" ")),
        ReadinessCheck::Sdk => "sdk".into(),
        ReadinessCheck::StartPeriod(period) => format!("running {}", format_duration(*period)),
    }
}

/// Time to all-ready, each agent's ready time, and the critical path weighted
/// by the measured start-to-ready times.
fn summary(snapshot: &StatusSnapshot, start: &Start) -> Summary {
    let total = snapshot.all_ready_after.unwrap_or_default();
    let seconds = |duration: Option<Duration>| duration.map(|value| value.as_secs_f64());
    let (path, length) = start.plan.critical_path(|name| {
        snapshot
            .agents
            .iter()
            .find(|agent| agent.name == name)
            .and_then(|agent| agent.time_to_ready)
            .unwrap_or_default()
    });
    let ready = snapshot
        .agents
        .iter()
        .filter(|agent| agent.ready_at.is_some())
        .count();
    let mut text = String::new();
    let width = snapshot
        .agents
        .iter()
        .map(|agent| agent.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    text.push_str(&format!(
        "  {:<width$}  {:>9}  {:>9}  state\n",
        "agent", "ready at", "took"
    ));
    let mut agents = snapshot.agents.clone();
    agents.sort_by_key(|agent| agent.ready_at.unwrap_or(Duration::MAX));
    let mut json_agents = serde_json::Map::new();
    for agent in &agents {
        let show = |duration: Option<Duration>| {
            duration.map(format_duration).unwrap_or_else(|| "-".into())
        };
        let mut state = agent.state.to_string();
        if let Some(reason) = agent.reason.as_ref().filter(|_| agent.ready_at.is_none()) {
            state.push_str(&format!(" ({reason})"));
        }
        text.push_str(&format!(
            "  {:<width$}  {:>9}  {:>9}  {state}\n",
            agent.name,
            show(agent.ready_at),
            show(agent.time_to_ready)
        ));
        json_agents.insert(
            agent.name.clone(),
            serde_json::json!({
                "state": agent.state.as_str(),
                "ready_at_s": seconds(agent.ready_at),
                "time_to_ready_s": seconds(agent.time_to_ready),
                "restarts": agent.restarts,
                "reason": agent.reason,
                "readiness": start.readiness.get(&agent.name),
                "waiting_on": agent.waiting_on,
            }),
        );
    }
    text.push_str(&format!(
        "critical path: {} ({})\n",
        path.join(" -> "),
        format_duration(length)
    ));
    // The closing line.
    let missing: Vec<&str> = agents
        .iter()
        .filter(|agent| agent.ready_at.is_none())
        .map(|agent| agent.name.as_str())
        .collect();
    if missing.is_empty() {
        text.push_str(&format!(
            "all ready: {ready}/{} agents in {}\n",
            agents.len(),
            format_duration(total)
        ));
    } else {
        text.push_str(&format!(
            "{ready}/{} ready in {}; not ready: {}\n",
            agents.len(),
            format_duration(total),
            missing.join(", ")
        ));
    }
    let json = serde_json::json!({
        "all_ready_s": total.as_secs_f64(),
        "ready": ready,
        "agents_total": snapshot.agents.len(),
        "critical_path": path,
        "critical_path_s": length.as_secs_f64(),
        "agents": json_agents,
    });
    Summary { text, json }
}
