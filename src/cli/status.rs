//! `supervisor status`: the table of agents of a running supervisor (or
//! `--json`), once or refreshed with `--watch` (which clears the screen only
//! on a terminal). Exits 1 when a required agent has failed or is blocked
//! behind one (and no operator stopped it), 3 when no supervisor runs, else 0.
//!
//! Owns the table layout and the text of each cell ([`HEADERS`], [`row`],
//! [`progress`]), which `supervisor top` shows too; the figures come from the
//! control socket.

use std::io::IsTerminal;
use std::time::Duration;

use super::Exit;
use super::remote::{RunDirArgs, status};
use crate::control::{AgentView, StatusView};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Print the status as JSON (the control protocol's `status` object).
    #[arg(long)]
    pub json: bool,
    /// Refresh until interrupted (or until the supervisor ends: exit 3).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Seconds between refreshes with `--watch`.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub interval: f64,
    /// Per agent, the TCP ports its process tree really listens on (read
    /// from /proc), flagged where they differ from the manifest or are
    /// another agent's.
    #[arg(long, conflicts_with = "json")]
    pub ports: bool,
}

/// Prints the agents' table (or `--json`), once or every `--watch`
/// seconds. Exit 1 when a required agent failed, 3 when none runs.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    loop {
        let view = match status(&run_dir)? {
            Ok(view) => view,
            Err(exit) => return Ok(exit),
        };
        let text = if args.json {
            serde_json::to_string_pretty(&view)? + "\n"
        } else if args.ports {
            ports_table(&view)
        } else {
            table(&view)
        };
        if args.watch && !args.json && std::io::stdout().is_terminal() {
            // Clear the screen and go home, like `watch`.
            print!("\x1b[2J\x1b[H{text}");
        } else {
            print!("{text}");
        }
        if !args.watch {
            return Ok(exit_code(&view));
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
    }
}

/// 1 when a required agent has failed (or is blocked behind one), unless
/// an operator stopped it, else 0.
fn exit_code(view: &StatusView) -> Exit {
    let failed = view.agents.iter().any(|agent| {
        agent.required && !agent.held && matches!(agent.state.as_str(), "failed" | "blocked")
    });
    if failed { Exit::Problems } else { Exit::Ok }
}

/// The table's columns; [`row`] fills them in this order.
pub const HEADERS: [&str; 11] = [
    "AGENT",
    "HOST",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "LAST REASON",
    "READY IN",
    "HEARTBEAT",
    "CPU%",
    "RSS",
];

/// The status as an aligned text table, with a header line about the
/// supervisor and any refused reload.
pub fn table(view: &StatusView) -> String {
    let rows: Vec<[String; 11]> = view.agents.iter().map(row).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = format!(
        "supervisor pid {}, up {}, {}/{} ready{}\n",
        view.supervisor_pid,
        seconds(Some(view.uptime_s)),
        view.agents
            .iter()
            .filter(|agent| agent.state == "ready")
            .count(),
        view.agents.len(),
        if view.shutting_down {
            ", shutting down"
        } else {
            ""
        }
    );
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    text.push_str(&line(HEADERS.to_vec()));
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    for agent in view
        .agents
        .iter()
        .filter(|agent| !agent.degraded_by.is_empty())
    {
        let causes: Vec<&str> = agent
            .degraded_by
            .iter()
            .map(|cause| cause.message.as_str())
            .collect();
        text.push_str(&format!(
            "{}: degraded: {}\n",
            agent.name,
            causes.join("; ")
        ));
    }
    for agent in view
        .agents
        .iter()
        .filter(|agent| !agent.escaped_pids.is_empty())
    {
        let pids: Vec<String> = agent.escaped_pids.iter().map(u32::to_string).collect();
        text.push_str(&format!(
            "{}: {} process(es) left its process group (pids {}); stopped with it\n",
            agent.name,
            pids.len(),
            pids.join(", ")
        ));
    }
    if let Some(link) = &view.link {
        text.push_str(&peer_lines(link));
    }
    if view.console_dropped_lines > 0 {
        text.push_str(&format!(
            "{} output lines left off the console (it did not keep up); the logs are complete\n",
            view.console_dropped_lines
        ));
    }
    if !view.config_errors.is_empty() {
        text.push_str(&format!(
            "last reload refused ({} problem(s)); the previous configuration keeps running:\n",
            view.config_errors.len()
        ));
        for error in &view.config_errors {
            text.push_str(&format!("  {error}\n"));
        }
    }
    text
}

/// One line per peer: link state, last seen, clock offset, buffered events.
fn peer_lines(link: &crate::link::LinkSnapshot) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0);
    let mut text = format!(
        "peer link of host {} on {} ({} connection(s) refused)\n",
        link.host, link.bound, link.refused
    );
    for peer in &link.peers {
        let state = match peer.link {
            crate::link::LinkState::Waiting => "waiting",
            crate::link::LinkState::Up => "up",
            crate::link::LinkState::Unreachable => "UNREACHABLE",
        };
        let seen = peer
            .last_seen_ms
            .map(|seen| format!("{:.1}s ago", now_ms.saturating_sub(seen) as f64 / 1000.0))
            .unwrap_or_else(|| "never".into());
        let offset = peer
            .clock_offset_ms
            .map(|offset| format!("{offset:+} ms"))
            .unwrap_or_else(|| "?".into());
        text.push_str(&format!(
            "  peer {} ({}): {state}, last seen {seen}, clock offset {offset}, {} event(s) buffered, {} dropped\n",
            peer.host, peer.endpoint, peer.buffered, peer.dropped
        ));
    }
    text
}

/// One agent's cells, in [`HEADERS`] order; `-` where there is nothing.
pub fn row(agent: &AgentView) -> [String; 11] {
    let mut state = agent.state.clone();
    if agent.health.as_deref() == Some("degraded") {
        state.push_str(" (degraded)");
    }
    if agent.held {
        state.push_str(" (held)");
    }
    if agent.remote {
        state.push_str(" (remote)");
    }
    let mut reason = agent.reason.clone().unwrap_or_default();
    if reason.chars().count() > 48 {
        reason = reason.chars().take(47).collect::<String>() + "…";
    }
    [
        agent.name.clone(),
        agent.host.clone(),
        state,
        agent.pid.map(|pid| pid.to_string()).unwrap_or_default(),
        seconds(agent.uptime_s),
        agent.restarts.to_string(),
        reason,
        agent
            .time_to_ready_s
            .map(|took| format!("{took:.2}s"))
            .unwrap_or_default(),
        seconds(agent.heartbeat_age_s),
        agent
            .cpu_percent
            .map(|cpu| format!("{cpu:.1}"))
            .unwrap_or_default(),
        agent.rss_bytes.map(bytes).unwrap_or_default(),
    ]
}

/// The progress payload of the agent's last SDK heartbeat, in short:
/// `queue 12, in flight 2, 3s ago, files=40`; blank without one.
pub fn progress(agent: &AgentView) -> String {
    let Some(payload) = &agent.heartbeat else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(depth) = payload.queue_depth {
        parts.push(format!("queue {depth}"));
    }
    if let Some(busy) = payload.in_flight {
        parts.push(format!("in flight {busy}"));
    }
    if let Some(at) = payload.last_progress_ms {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or(at);
        let age = now.saturating_sub(at) as f64 / 1000.0;
        parts.push(format!("{} ago", seconds(Some(age))));
    }
    for (key, value) in &payload.custom {
        match value {
            serde_json::Value::String(text) => parts.push(format!("{key}={text}")),
            other => parts.push(format!("{key}={other}")),
        }
    }
    parts.join(", ")
}

/// `status --ports`: what each running agent's process tree listens on,
/// against what the manifest says.
pub fn ports_table(view: &StatusView) -> String {
    use std::collections::BTreeMap;
    // Which agent's manifest entry names each port (explicit fields first).
    let mut owner: BTreeMap<u16, (&str, &str)> = BTreeMap::new();
    for agent in view.agents.iter().filter(|agent| !agent.remote) {
        for declared in &agent.ports {
            let explicit = !declared.field.contains("implicit");
            let entry = owner
                .entry(declared.port)
                .or_insert((&agent.name, &declared.field));
            if explicit && entry.1.contains("implicit") {
                *entry = (&agent.name, &declared.field);
            }
        }
    }
    let width = view
        .agents
        .iter()
        .map(|agent| agent.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut text = format!(
        "{:<width$}  {:>7}  {:<24}  NOTES\n",
        "AGENT", "PID", "LISTENS ON"
    );
    for agent in view.agents.iter().filter(|agent| !agent.remote) {
        let Some(pid) = agent.pid else {
            text.push_str(&format!(
                "{:<width$}  {:>7}  {:<24}  {}\n",
                agent.name, "-", "-", agent.state
            ));
            continue;
        };
        let listening = crate::process::ports::listening(&crate::process::ports::tree(pid));
        let mut notes = Vec::new();
        for port in &listening {
            match owner.get(port) {
                Some((name, _)) if *name == agent.name => {}
                Some((name, field)) => notes.push(format!("{port} is {name}'s {field}")),
                None => notes.push(format!("{port} is not in the manifest")),
            }
        }
        for declared in agent
            .ports
            .iter()
            .filter(|declared| !declared.field.contains("implicit"))
        {
            if !listening.contains(&declared.port) {
                notes.push(format!(
                    "nothing listens on {} ({})",
                    declared.port, declared.field
                ));
            }
        }
        let ports: Vec<String> = listening.iter().map(u16::to_string).collect();
        let ports = if ports.is_empty() {
            "none".to_string()
        } else {
            ports.join(",")
        };
        text.push_str(&format!(
            "{:<width$}  {pid:>7}  {ports:<24}  {}\n",
            agent.name,
            if notes.is_empty() {
                "ok".to_string()
            } else {
                notes.join("; ")
            }
        ));
    }
    text
}

/// `4s`, `3m12s`, `2h05m`; blank for none.
pub fn seconds(value: Option<f64>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    let total = value.max(0.0) as u64;
    match total {
        0..60 => format!("{total}s"),
        60..3600 => format!("{}m{:02}s", total / 60, total % 60),
        _ => format!("{}h{:02}m", total / 3600, total % 3600 / 60),
    }
}

/// `12.3 MiB`.
fn bytes(value: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if value as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", value as f64 / MIB / 1024.0)
    } else {
        format!("{:.1} MiB", value as f64 / MIB)
    }
}
