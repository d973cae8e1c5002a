//! `supervisor check`: every check over the manifests, printed for people or
//! as JSON (`{"problems": [...]}`, shape in docs/manifest.md).
//!
//! Owns how problems are printed (order, grouping of repeated warnings, the
//! summary line) and the exit code of a report; `check-ports`, `plan` and
//! `up` print through these functions too. Does not own any check: those
//! are `crate::check`.

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
    /// Show only problems of this severity (the exit code still counts
    /// every error).
    #[arg(long, value_enum)]
    pub severity: Option<SeverityFilter>,
    /// List every warning; without it, warnings of one kind are grouped
    /// into one line with a count.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeverityFilter {
    Error,
    Warning,
}

impl SeverityFilter {
    /// Whether `problem` is shown under `--severity`.
    fn keeps(self, problem: &Problem) -> bool {
        match self {
            SeverityFilter::Error => problem.severity == Severity::Error,
            SeverityFilter::Warning => problem.severity == Severity::Warning,
        }
    }
}

/// Loads and checks the manifests and prints every problem (text or
/// `--json`). Exit 0 with warnings only, 1 with any error, 2 when a
/// manifest cannot be read at all.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let options = CheckOptions {
        bind_check: !args.no_bind_check,
        files: !args.no_file_check,
        compile: args.compile,
        running: if args.no_bind_check {
            Default::default()
        } else {
            running_agents(&args.manifests.configs)
        },
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
    let shown: Vec<Problem> = report
        .problems
        .iter()
        .filter(|problem| args.severity.is_none_or(|filter| filter.keeps(problem)))
        .cloned()
        .collect();
    if args.json {
        print_json(&shown)?;
    } else {
        print_problems_grouped(&shown, args.verbose);
        print_summary(&report);
    }
    Ok(exit_code(&report))
}

/// The agents of these manifests that a supervisor already runs (name ->
/// pid), asked of the run directory's control socket; empty when none runs
/// there or it does not answer within 2 s.
pub fn running_agents(configs: &[String]) -> std::collections::BTreeMap<String, u32> {
    let run_dir = super::locate::run_dir(None, configs);
    if run_dir.pid().is_none() {
        return Default::default();
    }
    let status = crate::control::Client::connect(&run_dir).and_then(|mut client| {
        client.request(
            &crate::control::Request::Status,
            std::time::Duration::from_secs(2),
        )
    });
    match status {
        Ok(response) => response
            .status
            .map(|status| {
                status
                    .agents
                    .into_iter()
                    .filter(|agent| !agent.remote)
                    .filter_map(|agent| Some((agent.name, agent.pid?)))
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Default::default(),
    }
}

/// 1 when any problem is an error, else 0.
pub fn exit_code(report: &Report) -> Exit {
    if report.has_errors() {
        Exit::Problems
    } else {
        Exit::Ok
    }
}

/// Loads and checks the manifests as written, without the checks of this
/// machine (ports held here, files present here): what `plan`, `export` and
/// `run-one` start from. `Err` is the exit code once an unreadable manifest
/// was reported.
pub fn load_as_written(
    configs: &[crate::manifest::ConfigArg],
    load: &crate::manifest::LoadOptions,
) -> anyhow::Result<Result<Report, Exit>> {
    let options = CheckOptions {
        bind_check: false,
        files: false,
        ..CheckOptions::default()
    };
    Ok(match check::run_with(configs, load, &options) {
        Ok(report) => Ok(report),
        Err(error) => Err(report_unreadable(error, false)?),
    })
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

/// Prints `{"problems": [...]}` on stdout, the shape of docs/manifest.md.
pub fn print_json(problems: &[Problem]) -> anyhow::Result<()> {
    let value = serde_json::json!({ "problems": problems });
    println!(
        "{}",
        serde_json::to_string_pretty(&value).context("serializing problems")?
    );
    Ok(())
}

/// `error[cycle]: file:line: message` then `  help: suggestion`, to
/// stderr, errors first, every problem on its own.
pub fn print_problems(problems: &[Problem]) {
    print_problems_grouped(problems, true);
}

/// Like [`print_problems`]; unless `verbose`, the warnings of a kind that
/// has more than `GROUP_AFTER` (3) of them are one line with their count and
/// the first of them.
pub fn print_problems_grouped(problems: &[Problem], verbose: bool) {
    let mut sorted: Vec<&Problem> = problems.iter().collect();
    // Most severe first (errors before warnings), then by place.
    sorted.sort_by(|a, b| (b.severity, &a.file, a.line).cmp(&(a.severity, &b.file, b.line)));
    let mut per_kind: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
    for problem in sorted.iter().filter(|problem| !problem.is_error()) {
        *per_kind.entry(problem.kind).or_default() += 1;
    }
    let mut grouped_printed = std::collections::HashSet::new();
    for problem in sorted {
        let count = per_kind.get(&problem.kind).copied().unwrap_or(0);
        if !verbose && !problem.is_error() && count > GROUP_AFTER {
            if grouped_printed.insert(problem.kind) {
                let kind = kind_name(problem);
                let place = match (&problem.file, problem.line) {
                    (Some(file), Some(line)) => format!("{file}:{line}: "),
                    (Some(file), None) => format!("{file}: "),
                    _ => String::new(),
                };
                eprintln!(
                    "warning[{kind}]: {count} warnings of this kind (--verbose lists them); the first: {place}{}",
                    problem.message
                );
            }
            continue;
        }
        print_one(problem);
    }
}

/// Warnings of one kind are grouped when there are more than this many.
const GROUP_AFTER: usize = 3;

/// The kind as JSON spells it (`port_conflict`), for text output.
fn kind_name(problem: &Problem) -> String {
    serde_json::to_value(problem.kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `severity[kind]: file:line: message`, then `  help: suggestion`.
fn print_one(problem: &Problem) {
    let severity = problem.severity.as_str();
    let kind = kind_name(problem);
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

/// The last line: errors, warnings, agents and files checked.
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
