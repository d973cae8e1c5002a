//! `supervisor plan`: the start order (topological levels), each agent's
//! dependencies, the critical path; `--format svg` and `mermaid` for a
//! picture drawn without Graphviz (`crate::plan::draw`), `dot` for Graphviz,
//! `json` for machines.
//! With dependency cycles it still shows the levels of everything outside
//! the knots, then the knots and the agents blocked behind them; disabled
//! agents are marked and left off the critical path.
//!
//! Owns the three output formats and the readiness estimates used for the
//! critical path's length. Does not own the plan itself (`crate::plan`).

use std::time::Duration;

use anyhow::Context;

use super::check::{load_as_written, print_problems};
use super::{Exit, ManifestArgs};
use crate::manifest::{Agent, ReadinessCheck};
use crate::plan::draw::{self, Layout};
use crate::plan::{Plan, format_cycle};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Dot,
    Json,
    /// A standalone SVG picture: rows by level, the critical path in orange.
    Svg,
    /// A Mermaid flowchart (renders in Markdown pages).
    Mermaid,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Expected time to ready of agents whose readiness is a probe or the SDK
    /// (agents with only a start period use that), for the critical path length.
    #[arg(long, default_value = "1s", value_parser = parse_estimate)]
    pub estimate: Duration,
}

fn parse_estimate(text: &str) -> Result<Duration, String> {
    crate::manifest::raw::parse_duration(text)
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 500ms, 2s)"))
}

/// How long an agent is expected to take to become ready.
fn estimate(agent: Option<&Agent>, probe_estimate: Duration) -> Duration {
    match agent.map(|agent| (&agent.readiness.check, agent.readiness.initial_delay)) {
        Some((ReadinessCheck::StartPeriod(period), delay)) => *period + delay,
        Some((_, delay)) => probe_estimate.max(delay),
        None => probe_estimate,
    }
}

/// Prints the start plan (text, `dot` or `json`). Exit 1 when the
/// manifests have errors (the plan is printed as far as it can be).
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let report = match load_as_written(
        &args.manifests.config_args()?,
        &args.manifests.load_options(),
    )? {
        Ok(report) => report,
        Err(exit) => return Ok(exit),
    };
    // As `up` runs them: an agent with `replicas` as its instances.
    let manifest = &crate::manifest::replicas::expand_manifest(&report.manifest);
    let planned = Plan::around_knots(manifest);
    let plan = &planned.plan;
    // By name, built once (`Manifest::agent` searches the list).
    let mut by_name: std::collections::HashMap<&str, &Agent> =
        std::collections::HashMap::with_capacity(manifest.agents.len());
    for agent in &manifest.agents {
        by_name.entry(agent.name.as_str()).or_insert(agent);
    }
    let agent = |name: &str| by_name.get(name).copied();
    let disabled = |name: &str| agent(name).is_some_and(|agent| !agent.enabled);
    // As `up` does: a disabled agent is not started, and whoever depends on
    // it starts without it, so it takes no time on the critical path.
    let (path, length) =
        plan.critical_path_without(disabled, |name| estimate(agent(name), args.estimate));
    let disabled_names: Vec<&str> = plan.order().filter(|name| disabled(name)).collect();
    match args.format {
        Format::Dot => print!("{}", dot(plan)),
        Format::Svg => print!("{}", Layout::new(&planned, &path).svg()),
        Format::Mermaid => print!("{}", draw::mermaid(&Layout::new(&planned, &path))),
        Format::Json => {
            let value = serde_json::json!({
                "levels": plan.levels,
                "dependencies": plan.order().map(|name| (name.to_string(), serde_json::json!(plan.dependencies(name)))).collect::<serde_json::Map<String, serde_json::Value>>(),
                "disabled": disabled_names,
                "knots": planned.knots.iter().map(|knot| serde_json::json!({
                    "members": knot.members,
                    "cycles": knot.cycles,
                    "cycle_count": knot.count,
                    "counted_all": knot.counted_all,
                })).collect::<Vec<_>>(),
                "blocked": planned.blocked,
                "critical_path": path,
                "critical_path_seconds": length.as_secs_f64(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&value).context("serializing the plan")?
            );
        }
        Format::Text => {
            for (index, level) in plan.levels.iter().enumerate() {
                println!("level {index}:");
                for name in level {
                    let deps = plan.dependencies(name);
                    let host = agent(name).map(|agent| agent.host.as_str()).unwrap_or("?");
                    let mark = if disabled(name) {
                        " (disabled: not started; dependents start without it)"
                    } else {
                        ""
                    };
                    if deps.is_empty() {
                        println!("  {name} [{host}]{mark}");
                    } else {
                        println!("  {name} [{host}] <- {}{mark}", deps.join(", "));
                    }
                }
            }
            for knot in &planned.knots {
                println!(
                    "knot (cannot start: {} cycles): {}",
                    if knot.counted_all {
                        knot.count.to_string()
                    } else {
                        format!("at least {}", knot.count)
                    },
                    knot.members.join(", ")
                );
                for cycle in &knot.cycles {
                    println!("  {}", format_cycle(cycle));
                }
            }
            if !planned.blocked.is_empty() {
                println!("blocked (wait on a knot): {}", planned.blocked.join(", "));
            }
            println!(
                "critical path ({} agents, about {:.1}s with readiness estimates): {}",
                path.len(),
                length.as_secs_f64(),
                path.join(" -> ")
            );
        }
    }
    if report.has_errors() || !planned.knots.is_empty() {
        print_problems(&report.problems);
        return Ok(Exit::Problems);
    }
    Ok(Exit::Ok)
}

/// Graphviz: an edge from each agent to each of its dependencies, one rank per level.
fn dot(plan: &Plan) -> String {
    let mut out = String::from("digraph plan {\n  rankdir=BT;\n  node [shape=box];\n");
    for level in &plan.levels {
        let names: Vec<String> = level.iter().map(|name| format!("{name:?}")).collect();
        out.push_str(&format!("  {{ rank=same; {}; }}\n", names.join("; ")));
    }
    for name in plan.order() {
        for dependency in plan.dependencies(name) {
            out.push_str(&format!("  {name:?} -> {dependency:?};\n"));
        }
    }
    out.push_str("}\n");
    out
}
