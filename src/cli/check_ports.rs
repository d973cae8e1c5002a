//! `supervisor check-ports`: the table of every port the manifests use, the
//! port problems, and `--fix`, which writes corrected copies of the files.
//!
//! Owns the port table and where fixed files are written. Does not own
//! finding conflicts or choosing replacement ports (`crate::check`, and
//! `crate::check::fix` for the text edits).

use anyhow::Context;
use serde::Serialize;

use super::check::{exit_code, print_problems, report_unreadable};
use super::{Exit, ManifestArgs};
use crate::check::{self, CheckOptions, fix};
use crate::manifest::{PortKind, Problem, ProblemKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Print `{"ports": [...], "problems": [...]}` as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write `NAME.fixed.yaml` beside each manifest with conflicting ports changed in place.
    #[arg(long)]
    pub fix: bool,
    /// With `--fix`: overwrite the manifests themselves.
    #[arg(long, requires = "fix")]
    pub in_place: bool,
    /// Do not try to bind ports to find ones already held on this machine.
    #[arg(long)]
    pub no_bind_check: bool,
}

/// One line of the port table (and one object of `--json`).
#[derive(Debug, Serialize)]
struct PortRow<'a> {
    agent: &'a str,
    field: &'a str,
    kind: &'static str,
    port: u16,
    host: &'a str,
    file: String,
    line: usize,
}

/// The problems `check-ports` shows; the others are `check`'s.
fn is_port_problem(problem: &Problem) -> bool {
    matches!(
        problem.kind,
        ProblemKind::PortConflict | ProblemKind::InvalidPort | ProblemKind::PortInUse
    )
}

/// Prints the port table and the port problems; with `--fix`, rewrites the
/// conflicting values in place. Exit 1 while conflicts are left.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let options = CheckOptions {
        bind_check: !args.no_bind_check,
        files: false,
        running: if args.no_bind_check {
            Default::default()
        } else {
            super::check::running_agents(&args.manifests.configs)
        },
        ..CheckOptions::default()
    };
    let mut report = match check::run_with(
        &args.manifests.config_args()?,
        &args.manifests.load_options(),
        &options,
    ) {
        Ok(report) => report,
        Err(error) => return report_unreadable(error, args.json),
    };
    report.problems.retain(is_port_problem);
    let mut rows: Vec<PortRow> = report
        .manifest
        .agents
        .iter()
        .flat_map(|agent| {
            agent.ports.iter().map(move |port| PortRow {
                agent: &agent.name,
                field: &port.field,
                kind: match port.kind {
                    PortKind::Explicit => "explicit",
                    PortKind::ImplicitHealth => "implicit",
                    PortKind::LegacyHttpHealth => "legacy-http",
                },
                port: port.port,
                host: &agent.host,
                file: port.location.file.display().to_string(),
                line: port.location.line,
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.host, a.port, a.agent).cmp(&(b.host, b.port, b.agent)));
    if args.json {
        let value = serde_json::json!({ "ports": rows, "problems": report.problems });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("serializing ports")?
        );
    } else {
        print_table(&rows);
        print_problems(&report.problems);
        let conflicts = report
            .problems
            .iter()
            .filter(|problem| problem.kind == ProblemKind::PortConflict)
            .count();
        println!("{} ports, {conflicts} conflicts", rows.len());
    }
    if args.fix {
        let mut configs = args.manifests.config_args()?;
        for file in fix::apply(&report.manifest, &report.fixes) {
            let target = if args.in_place {
                file.path.clone()
            } else {
                fixed_path(&file.path)
            };
            std::fs::write(&target, &file.text)
                .with_context(|| format!("writing {}", target.display()))?;
            for change in &file.changes {
                eprintln!("fixed {}: {change}", target.display());
            }
            for skipped in &file.skipped {
                eprintln!("not fixed {}: {skipped}", file.path.display());
            }
            for config in &mut configs {
                if same_file(&config.path, &file.path) {
                    config.path = target.clone();
                }
            }
        }
        if report.fixes.is_empty() {
            eprintln!("nothing to fix in place");
            return Ok(exit_code(&report));
        }
        // The exit code says whether the fixed files are free of port
        // errors: check them again.
        let mut after = match check::run_with(&configs, &args.manifests.load_options(), &options) {
            Ok(after) => after,
            Err(error) => return report_unreadable(error, args.json),
        };
        after
            .problems
            .retain(|problem| is_port_problem(problem) && problem.is_error());
        if after.problems.is_empty() {
            eprintln!("every port conflict is fixed");
        } else {
            eprintln!(
                "{} port problem(s) remain after the fix:",
                after.problems.len()
            );
            print_problems(&after.problems);
        }
        return Ok(exit_code(&after));
    }
    Ok(exit_code(&report))
}

/// The same file, however each path is spelled.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
}

/// `dir/main.yaml` -> `dir/main.fixed.yaml`.
pub fn fixed_path(path: &std::path::Path) -> std::path::PathBuf {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "manifest".into());
    let extension = path
        .extension()
        .map(|extension| extension.to_string_lossy().into_owned())
        .unwrap_or_else(|| "yaml".into());
    path.with_file_name(format!("{stem}.fixed.{extension}"))
}

/// The table, columns as wide as their widest value.
fn print_table(rows: &[PortRow]) {
    let width = |f: fn(&PortRow) -> usize, title: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let agent = width(|row| row.agent.len(), "AGENT");
    let field = width(|row| row.field.len(), "FIELD");
    let host = width(|row| row.host.len(), "HOST");
    println!(
        "{:<agent$}  {:<field$}  {:<11}  {:>5}  {:<host$}",
        "AGENT", "FIELD", "KIND", "PORT", "HOST"
    );
    for row in rows {
        println!(
            "{:<agent$}  {:<field$}  {:<11}  {:>5}  {:<host$}",
            row.agent, row.field, row.kind, row.port, row.host
        );
    }
}
