//! `supervisor check`: every check over the manifests, printed for people or
//! as JSON (`{"problems": [...]}`, shape in docs/manifest.md).

use anyhow::Context;

use super::{Exit, ManifestArgs};
use crate::check::{self, CheckOptions, Report};
use crate::manifest::{ManifestError, Problem, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Print `{"problems": [...]}` as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not try to bind ports to find ones already held on this machine.
    #[arg(long)]
    pub no_bind_check: bool,
    /// Do not check that this machine's scripts, programs and working
    /// directories exist (for a manifest checked away from its repository).
    #[arg(long)]
    pub no_file_check: bool,
    /// Also parse every Python `script_path` of this machine's agents and
    /// report syntax errors with file and line.
    #[arg(long, conflicts_with = "no_file_check")]
    pub compile: bool,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let options = CheckOptions {
        bind_check: !args.no_bind_check,
        files: !args.no_file_check,
        compile: args.compile,
        ..CheckOptions::default()
    };
    let report = match check::run_with(
        &args.manifests.config_args()?,
        &args.manifests.load_options(),
        &options,
    ) {
        Ok(report) => report,
        Err(error) => return report_unreadable(error, args.json),
    };
    if args.json {
        print_json(&report.problems)?;
    } else {
        print_problems(&report.problems);
        print_summary(&report);
    }
    Ok(exit_code(&report))
}

/// 1 when any problem is an error, else 0.
pub fn exit_code(report: &Report) -> Exit {
    if report.has_errors() {
        Exit::Problems
    } else {
        Exit::Ok
    }
}

/// A manifest that could not be read: with `--json` its problems are printed
/// as JSON too; either way the exit code is 2.
pub fn report_unreadable(error: ManifestError, json: bool) -> anyhow::Result<Exit> {
    if json {
        print_json(&error.problems)?;
        Ok(Exit::Usage)
    } else {
        Err(error).context("the manifest could not be read")
    }
}

pub fn print_json(problems: &[Problem]) -> anyhow::Result<()> {
    let value = serde_json::json!({ "problems": problems });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).context("serializing problems")?
    );
    Ok(())
}

/// `error[cycle]: file:line: message` then `  help: suggestion`, to stderr.
pub fn print_problems(problems: &[Problem]) {
    let mut sorted: Vec<&Problem> = problems.iter().collect();
    sorted.sort_by(|a, b| (a.severity, &a.file, a.line).cmp(&(b.severity, &b.file, b.line)));
    for problem in sorted {
        let severity = match problem.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let kind = serde_json::to_value(problem.kind)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        let place = match (&problem.file, problem.line) {
            (Some(file), Some(line)) => format!("{file}:{line}: "),
            (Some(file), None) => format!("{file}: "),
            _ => String::new(),
        };
        eprintln!("{severity}[{kind}]: {place}{}", problem.message);
        if let Some(suggestion) = &problem.suggestion {
            eprintln!("  help: {suggestion}");
        }
    }
}

fn print_summary(report: &Report) {
    let errors = report
        .problems
        .iter()
        .filter(|problem| problem.is_error())
        .count();
    let warnings = report.problems.len() - errors;
    let agents = report.manifest.agents.len();
    let files: Vec<String> = report
        .manifest
        .files
        .iter()
        .map(|file| format!("{} ({})", file.path.display(), file.format))
        .collect();
    println!(
        "checked {agents} agents in {}: {errors} errors, {warnings} warnings",
        files.join(", ")
    );
}
