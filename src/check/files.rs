//! Whether this machine's agents can be started as written: the working
//! directory exists, the program is found (a path, or a name on `PATH`), and
//! a `script_path` exists; with `compile`, every Python script also parses.
//! Agents of other hosts are not looked at (their files live there).
//!
//! Owns these file-system checks only; where a legacy script is looked for
//! is the loader's rule (`manifest::validate`, documented in docs/legacy.md).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::manifest::{Agent, Problem, ProblemKind};

/// Problems (all `missing_file` errors, or syntax errors with `compile`) of
/// the enabled agents `here` selects. An agent without a program is skipped
/// (validation reports it); one whose working directory is missing gets
/// only that problem, since its program and script are looked up from it.
/// A `shell: true` command is not looked up: the shell parses it.
pub fn check(agents: &[Agent], here: impl Fn(&Agent) -> bool, compile: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut scripts: Vec<(&Agent, PathBuf)> = Vec::new();
    for agent in agents.iter().filter(|agent| here(agent) && agent.enabled) {
        let Some(program) = agent
            .command
            .first()
            .filter(|program| !program.trim().is_empty())
        else {
            continue; // reported by validation
        };
        let cwd = agent.cwd.clone().unwrap_or_else(|| PathBuf::from("."));
        if !cwd.is_dir() {
            problems.push(
                Problem::error(
                    ProblemKind::MissingFile,
                    format!(
                        "agent `{}`: its working directory {} does not exist",
                        agent.name,
                        cwd.display()
                    ),
                )
                .at(&agent.location)
                .for_agent(&agent.name)
                .suggest("create it, or fix `cwd` (relative to the manifest's directory)"),
            );
            continue;
        }
        if !agent.shell && !program_found(program, &cwd, agent) {
            problems.push(
                Problem::error(
                    ProblemKind::MissingFile,
                    if program.contains('/') {
                        format!(
                            "agent `{}`: program {} does not exist or is not executable",
                            agent.name,
                            cwd.join(program).display()
                        )
                    } else {
                        format!("agent `{}`: program `{program}` is not on PATH", agent.name)
                    },
                )
                .at(&agent.location)
                .for_agent(&agent.name)
                .suggest(if program.starts_with("python") {
                    "install it, or activate the project's virtualenv before running supervisor"
                } else {
                    "install it, put it on PATH, or give its full path"
                }),
            );
        }
        if let Some(script) = &agent.script {
            let path = cwd.join(&script.path);
            if path.is_file() {
                scripts.push((agent, path));
            } else {
                let mut problem = Problem::error(
                    ProblemKind::MissingFile,
                    format!(
                        "agent `{}`: script_path {} does not exist ({})",
                        agent.name,
                        script.path,
                        path.display()
                    ),
                )
                .at(&script.location)
                .for_agent(&agent.name);
                problem = if agent.legacy && Path::new(&script.path).is_relative() {
                    problem.suggest(format!(
                        "legacy script paths are looked for from the manifest's directory and each directory above it (the legacy launcher ran from the repository root); none of them holds {}",
                        script.path
                    ))
                } else {
                    problem.suggest("fix the path (relative to the agent's `cwd`) or add the file")
                };
                problems.push(problem);
            }
        }
    }
    if compile {
        problems.extend(compile_python(&scripts));
    }
    problems
}

/// Whether `program` can be executed: a path (relative to `cwd`) to an
/// executable file, or a name found on the agent's `PATH` (its own `env`
/// first, else the supervisor's).
fn program_found(program: &str, cwd: &Path, agent: &Agent) -> bool {
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(&cwd.join(program));
    }
    let path = agent
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    std::env::split_paths(&path).any(|dir| executable(&dir.join(program)))
}

/// Parses every `.py` script with one `python3` process; a syntax error is
/// reported at the script's file and line.
fn compile_python(scripts: &[(&Agent, PathBuf)]) -> Vec<Problem> {
    let python: Vec<&(&Agent, PathBuf)> = scripts
        .iter()
        .filter(|(_, path)| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    if python.is_empty() {
        return Vec::new();
    }
    /// The parser run by `python3 -c`: one output line per script, in argument
    /// order, `ok` or `<line>\t<message>` (line 0 when Python gives none).
    const PARSE: &str = r"
import ast, sys
for path in sys.argv[1:]:
    try:
        ast.parse(open(path, 'rb').read(), path)
        print('ok')
    except SyntaxError as error:
        print(f'{error.lineno or 0}\t{error.msg}')
    except Exception as error:
        print(f'0\t{error}')
";
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(PARSE)
        .args(python.iter().map(|(_, path)| path))
        .stdin(std::process::Stdio::null())
        .output();
    let Some(output) = output.ok().filter(|output| output.status.success()) else {
        let mut problem = Problem::warning(
            ProblemKind::MissingFile,
            "--compile: python3 could not be run to parse the scripts",
        );
        problem.file = python
            .first()
            .map(|(agent, _)| agent.location.file.display().to_string());
        return vec![problem];
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut problems = Vec::new();
    for ((agent, path), line) in python.iter().zip(text.lines()) {
        if line == "ok" {
            continue;
        }
        let (number, message) = line.split_once('\t').unwrap_or(("0", line));
        let mut problem = Problem::error(
            ProblemKind::ScriptSyntax,
            format!(
                "agent `{}`: the script does not parse: {message}",
                agent.name
            ),
        )
        .for_agent(&agent.name)
        .suggest("fix the script; it would fail at start");
        problem.file = Some(path.display().to_string());
        problem.line = number.parse().ok().filter(|line| *line > 0);
        problems.push(problem);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_script_and_cwd_are_located_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ok.py"), "print('hi')\n").expect("write");
        std::fs::write(dir.path().join("bad.py"), "def f(:\n    pass\n").expect("write");
        let manifest = dir.path().join("m.yaml");
        std::fs::write(
            &manifest,
            "version: 1\nagents:\n  ok:\n    script_path: ok.py\n  bad:\n    script_path: bad.py\n  gone:\n    script_path: gone.py\n  noprog:\n    command: [no-such-program-here]\n  nodir:\n    command: [\"true\"]\n    cwd: nowhere\n",
        )
        .expect("write");
        let loaded = crate::manifest::load(
            &[crate::manifest::ConfigArg::from(manifest.as_path())],
            &Default::default(),
        )
        .expect("loads");
        let problems = check(&loaded.manifest.agents, |_| true, true);
        let of = |agent: &str| -> Vec<&Problem> {
            problems
                .iter()
                .filter(|problem| problem.agent.as_deref() == Some(agent))
                .collect()
        };
        assert!(of("ok").is_empty(), "{problems:?}");
        assert_eq!(of("gone").len(), 1, "{problems:?}");
        assert_eq!(of("gone")[0].kind, ProblemKind::MissingFile);
        assert_eq!(of("gone")[0].line, Some(8), "the script_path line");
        assert!(of("gone")[0].message.contains("gone.py"));
        assert!(of("noprog")[0].message.contains("not on PATH"));
        assert!(of("nodir")[0].message.contains("working directory"));
        let bad = of("bad");
        assert_eq!(bad.len(), 1, "{problems:?}");
        assert_eq!(bad[0].kind, ProblemKind::ScriptSyntax);
        assert_eq!(bad[0].line, Some(1));
        assert!(
            bad[0]
                .file
                .as_deref()
                .is_some_and(|file| file.ends_with("bad.py"))
        );
    }
}
