//! How agents are started (issue 18): with a cgroup per agent the child is
//! cloned straight into its cgroup (`clone3(CLONE_INTO_CGROUP)`, the
//! default); with `SUPERVISOR_SPAWN=fork` it is forked and joins the cgroup
//! before exec.
//! Either way the agent's program is in its cgroup from its first
//! instruction: here the program is `cat /proc/self/cgroup` itself.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::{self, Fixture, Up};

const BOUND: Duration = Duration::from_secs(30);

/// Runs an agent whose program prints its own cgroup, with
/// `SUPERVISOR_SPAWN=spawn` (unset for `None`) and debug logs, and checks
/// that the line it printed is its own agent cgroup; returns the
/// supervisor's output, or `None` (after a visible skip) when the
/// supervisor could not make a cgroup here.
fn first_cgroup(test: &str, spawn: Option<&str>) -> Option<String> {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  first:
    command: ["cat", "/proc/self/cgroup"]
    restart: never
"#,
    );
    let mut command = Command::new(common::SUPERVISOR);
    command
        .args(["--log", "debug", "up", "--no-watch", "--config"])
        .arg(&manifest)
        .env_remove("SUPERVISOR_SPAWN")
        .env_remove("SUPERVISOR_CONTAINMENT");
    if let Some(spawn) = spawn {
        command.env("SUPERVISOR_SPAWN", spawn);
    }
    let mut up = Up::spawn(command, &fixture.record);
    up.wait_for_output("containment=", BOUND);
    if !up.output().contains("containment=cgroup:") {
        common::corpus::skip(
            test,
            "no cgroup v2 for agents here (needs root or a delegated cgroup)",
        );
        return None;
    }
    // The console copy of its output: `first | 0::/...`.
    up.wait_for_output("| 0::/", BOUND);
    let output = up.output();
    let line = output
        .lines()
        .find_map(|line| line.split_once("| 0::/"))
        .map(|(_, path)| format!("0::/{}", path.trim_end()))
        .expect("waited for it");
    up.signal(Signal::SIGTERM);
    let status = up.wait(BOUND);
    assert!(status.success(), "{}", up.output());
    assert!(
        line.contains("/supervisor-") && line.ends_with("/agent-first"),
        "the agent's first read of its cgroup: {line}\n{}",
        up.output()
    );
    Some(up.output())
}

#[test]
fn issue_18_an_agent_is_cloned_into_its_cgroup_by_default() {
    let Some(output) = first_cgroup(
        "issue_18_an_agent_is_cloned_into_its_cgroup_by_default",
        None,
    ) else {
        return;
    };
    assert!(
        output.contains("spawned by clone3 into its cgroup"),
        "the clone3 path was not taken:\n{output}"
    );
    assert!(!output.contains("forking and joining instead"), "{output}");
}

#[test]
fn issue_18_the_fork_fallback_still_joins_the_cgroup_before_exec() {
    let Some(output) = first_cgroup(
        "issue_18_the_fork_fallback_still_joins_the_cgroup_before_exec",
        Some("fork"),
    ) else {
        return;
    };
    assert!(
        output.contains("spawned by fork"),
        "the fork path was not taken:\n{output}"
    );
    assert!(
        !output.contains("spawned by clone3 into its cgroup"),
        "{output}"
    );
}

/// With 500 agents the supervisor holds about 3,500 descriptors: `up`
/// raises its soft open-files limit to the hard one, and each agent gets
/// the limit the supervisor was started with, both ways of spawning.
#[test]
fn agents_get_the_open_files_limit_the_supervisor_was_started_with() {
    for spawn in ["clone3", "fork"] {
        let fixture = Fixture::new();
        let manifest = fixture.manifest(
            r#"
version: 1
agents:
  limits:
    command: ["sh", "-c", "echo soft=$(ulimit -Sn)"]
    restart: never
"#,
        );
        let mut command = Command::new(common::SUPERVISOR);
        command
            .args(["up", "--no-watch", "--config"])
            .arg(&manifest)
            .env("SUPERVISOR_SPAWN", spawn);
        // SAFETY: setrlimit between fork and exec, async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = limit.rlim_max.min(1000);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
        let mut up = Up::spawn(command, &fixture.record);
        up.wait_for_output("soft=", BOUND);
        let supervisor_limits = std::fs::read_to_string(format!("/proc/{}/limits", up.pid()))
            .expect("the supervisor's limits");
        let open_files = supervisor_limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("a Max open files line")
            .split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>();
        assert_eq!(open_files[0], open_files[1], "{spawn}: {supervisor_limits}");
        up.signal(Signal::SIGTERM);
        let status = up.wait(BOUND);
        assert!(status.success(), "{}", up.output());
        assert!(
            up.output().contains("soft=1000"),
            "{spawn}: the agent did not get 1000:\n{}",
            up.output()
        );
    }
}
