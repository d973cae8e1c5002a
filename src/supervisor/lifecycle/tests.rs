//! Unit tests of the lifecycle through its public face (`apply`, `state`,
//! `snapshot`), driven by hand: [`Driver`] spawns with fake pids and fires
//! deadlines at their own time. Shared with the run loop's tests and the
//! property tests (`agent`, `ms`).

use nix::sys::signal::Signal;

use super::reload::definition;
use super::*;
use crate::manifest::{
    Backoff, Dependency, GiveUp, Heartbeat, Liveness, Location, Probe, Readiness, ReadinessCheck,
    RestartMode, RestartPolicy, StopPolicy,
};
use crate::process::Termination;
use crate::supervisor::event::{CommandError, Outcome, Reload, RemoteRun, ResourceSample};

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// An agent with default settings: ready 100 ms after start, restart
/// always with 100 ms x2 backoff, SIGTERM with 1 s grace.
pub fn agent(name: &str, dependencies: &[&str]) -> Agent {
    Agent {
        name: name.to_string(),
        location: Location::default(),
        host: "localhost".into(),
        address: "127.0.0.1".into(),
        command: vec!["true".into()],
        shell: false,
        image: None,
        cwd: None,
        env: Default::default(),
        port: None,
        health_check_port: None,
        ports: Vec::new(),
        dependencies: dependencies
            .iter()
            .map(|name| Dependency {
                name: name.to_string(),
                location: Location::default(),
            })
            .collect(),
        required: true,
        enabled: true,
        readiness: Readiness {
            check: ReadinessCheck::StartPeriod(ms(100)),
            timeout: Duration::from_secs(30),
            interval: ms(100),
            initial_delay: Duration::ZERO,
        },
        liveness: None,
        restart: RestartPolicy {
            mode: RestartMode::Always,
            backoff: Backoff {
                initial: ms(100),
                max: Duration::from_secs(30),
                multiplier: 2.0,
            },
            delay: Duration::ZERO,
            max_restarts: Some(5),
            within: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
            success_codes: vec![0],
            on_give_up: GiveUp::Shutdown,
        },
        heartbeat: Heartbeat {
            interval: Duration::from_secs(5),
            misses: 3,
            progress_timeout: None,
        },
        idle_stop: None,
        stop: StopPolicy {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(1),
        },
        limits: None,
        on_error: Default::default(),
        config: Default::default(),
        extra: Default::default(),
        legacy: false,
        replicas: None,
        replica: None,
        group: None,
        script: None,
    }
}

fn local(agents: Vec<Agent>) -> Vec<AgentSpec> {
    agents
        .into_iter()
        .map(|agent| AgentSpec {
            agent,
            remote: false,
        })
        .collect()
}

/// Drives a lifecycle by hand: spawns get pids 1000+agent, signals are recorded.
struct Driver {
    lifecycle: Lifecycle,
    now: Instant,
    log: Vec<Action>,
}

impl Driver {
    fn new(agents: Vec<Agent>, strategy: Strategy) -> Driver {
        Driver::from_specs(local(agents), strategy)
    }

    /// Like [`Driver::new`], with agents of other hosts among them.
    fn from_specs(specs: Vec<AgentSpec>, strategy: Strategy) -> Driver {
        let now = Instant::now();
        let mut lifecycle = Lifecycle::new(specs, strategy, false, now, Jitter::new(7));
        let actions = lifecycle.begin(now);
        let mut driver = Driver {
            lifecycle,
            now,
            log: Vec::new(),
        };
        driver.perform(actions);
        driver
    }

    fn id(&self, name: &str) -> AgentId {
        self.lifecycle.id(name).unwrap()
    }

    fn state(&self, name: &str) -> AgentState {
        self.lifecycle.state(self.id(name))
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.log.push(action.clone());
            if let Action::Spawn { agent, run } = action {
                let more = self.lifecycle.apply(
                    Event::Spawned {
                        agent,
                        run,
                        pid: 1000 + agent as u32,
                    },
                    self.now,
                );
                self.perform(more);
            }
        }
    }

    fn send(&mut self, event: Event) {
        let actions = self.lifecycle.apply(event, self.now);
        self.perform(actions);
    }

    /// Moves the clock forward, firing each deadline at its own time.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(at) = self.lifecycle.next_deadline().filter(|at| *at <= end) {
            self.now = at.max(self.now);
            self.send(Event::DeadlineReached);
        }
        self.now = end;
    }

    fn exit(&mut self, name: &str, termination: Termination) {
        let agent = self.id(name);
        let run = self.lifecycle.agents[agent].run;
        self.send(Event::Exited {
            agent,
            run,
            termination,
        });
    }

    fn take_log(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
    }

    fn signalled(&mut self) -> Vec<(String, Signal)> {
        self.take_log()
            .into_iter()
            .filter_map(|action| match action {
                Action::Signal { agent, signal, .. } => {
                    Some((self.lifecycle.spec(agent).agent.name.clone(), signal))
                }
                _ => None,
            })
            .collect()
    }

    fn spawned(&mut self) -> Vec<String> {
        self.take_log()
            .into_iter()
            .filter_map(|action| match action {
                Action::Spawn { agent, .. } => Some(self.lifecycle.spec(agent).agent.name.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn agents_start_as_soon_as_their_own_dependencies_are_ready() {
    let mut slow = agent("slow", &[]);
    slow.readiness.check = ReadinessCheck::StartPeriod(Duration::from_secs(5));
    let agents = vec![
        agent("db", &[]),
        slow,
        agent("api", &["db"]),
        agent("ui", &["api", "slow"]),
    ];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    assert_eq!(driver.spawned(), ["db", "slow"]);
    driver.advance(ms(100));
    // api does not wait for `slow`, which is in the same level as db.
    assert_eq!(driver.spawned(), ["api"]);
    driver.advance(ms(100));
    assert_eq!(driver.state("api"), AgentState::Ready);
    assert_eq!(driver.spawned(), Vec::<String>::new());
    driver.advance(Duration::from_secs(5));
    assert_eq!(driver.spawned(), ["ui"]);
    driver.advance(ms(100));
    assert!(driver.lifecycle.snapshot().all_ready_after.is_some());
}

#[test]
fn agents_start_in_the_order_of_the_plan() {
    let agents = vec![
        agent("ui", &["api"]),
        agent("db", &[]),
        agent("api", &["db"]),
        agent("free", &[]),
    ];
    let plan = crate::plan::Plan::new(&crate::manifest::Manifest {
        agents: agents.clone(),
        ..Default::default()
    })
    .unwrap();
    let lifecycle = Lifecycle::new(
        local(agents),
        Strategy::OneForOne,
        false,
        Instant::now(),
        Jitter::new(1),
    );
    let order: Vec<&str> = lifecycle
        .order()
        .iter()
        .map(|agent| lifecycle.agent_name(*agent))
        .collect();
    assert_eq!(order, plan.start_order().collect::<Vec<_>>());
    assert_eq!(order, ["db", "api", "free", "ui"]);
}

/// Agents that can start at the same moment are launched the one heading
/// the longest chain of dependents first (the spawner takes them in turn),
/// ties in start order.
#[test]
fn agents_that_start_together_launch_the_longest_chain_first() {
    let now = Instant::now();
    let agents = local(vec![
        agent("leaf", &[]),
        agent("short", &[]),
        agent("long", &[]),
        agent("after_short", &["short"]),
        agent("after_long", &["long"]),
        agent("last", &["after_long"]),
    ]);
    let mut lifecycle = Lifecycle::new(agents, Strategy::OneForOne, false, now, Jitter::new(1));
    let launched: Vec<&str> = lifecycle
        .begin(now)
        .iter()
        .filter_map(|action| match action {
            Action::Spawn { agent, .. } => Some(*agent),
            _ => None,
        })
        .map(|agent| lifecycle.agent_name(agent))
        .collect();
    assert_eq!(launched, ["long", "short", "leaf"]);
}

#[test]
fn sequential_mode_starts_one_agent_at_a_time() {
    let now = Instant::now();
    let agents = local(vec![agent("a", &[]), agent("b", &[]), agent("c", &[])]);
    let mut lifecycle = Lifecycle::new(agents, Strategy::OneForOne, true, now, Jitter::new(1));
    let actions = lifecycle.begin(now);
    assert_eq!(
        actions
            .iter()
            .filter(|action| matches!(action, Action::Spawn { .. }))
            .count(),
        1
    );
}

#[test]
fn shutdown_stops_dependents_first_and_kills_after_the_grace() {
    let agents = vec![
        agent("db", &[]),
        agent("api", &["db"]),
        agent("ui", &["api"]),
        agent("free", &[]),
    ];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.send(Event::ShutdownRequested { force: false });
    assert_eq!(
        driver.signalled(),
        [
            ("free".into(), Signal::SIGTERM),
            ("ui".into(), Signal::SIGTERM)
        ]
    );
    driver.exit("free", Termination::Signaled(15));
    driver.exit("ui", Termination::Signaled(15));
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
    // api ignores SIGTERM: SIGKILL after its grace.
    driver.advance(Duration::from_secs(1));
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGKILL)]);
    driver.exit("api", Termination::Signaled(9));
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
    driver.exit("db", Termination::Code(0));
    let log = driver.take_log();
    assert_eq!(log.last(), Some(&Action::Exit(Outcome::default())));
}

#[test]
fn a_second_stop_request_kills_at_once() {
    let agents = vec![agent("db", &[]), agent("api", &["db"])];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.send(Event::ShutdownRequested { force: false });
    driver.take_log();
    driver.send(Event::ShutdownRequested { force: true });
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGKILL)]);
    driver.exit("api", Termination::Signaled(9));
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGKILL)]);
}

#[test]
fn a_required_agent_that_is_never_ready_fails_the_run() {
    let mut db = agent("db", &[]);
    db.readiness.check = ReadinessCheck::Probe(Probe::Tcp {
        host: "127.0.0.1".into(),
        port: 1,
    });
    db.readiness.timeout = Duration::from_secs(2);
    // Not retried: the readiness miss fails it at once.
    db.restart.mode = RestartMode::Never;
    let agents = vec![db, agent("api", &["db"])];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(Duration::from_secs(2));
    // The deadline first asks what the process listens on.
    let run = driver.lifecycle.agents[driver.id("db")].run;
    assert!(
        driver
            .take_log()
            .iter()
            .any(|action| matches!(action, Action::Diagnose { run: r, .. } if *r == run)),
        "a diagnosis is asked for"
    );
    driver.send(Event::Diagnosed {
        agent: driver.id("db"),
        run,
        text: "nothing of the agent listens on 1".into(),
    });
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGKILL)]);
    driver.exit("db", Termination::Signaled(9));
    assert_eq!(driver.state("db"), AgentState::Failed);
    assert_eq!(driver.state("api"), AgentState::Stopped);
    let Some(Action::Exit(outcome)) = driver.take_log().pop() else {
        panic!("no exit")
    };
    let failure = outcome.failure.expect("a failure");
    assert_eq!(failure.agent, "db");
    assert!(
        failure
            .reason
            .contains("not ready within 2.00s: nothing of the agent listens on 1"),
        "{}",
        failure.reason
    );
}

#[test]
fn moving_an_entry_in_the_file_is_no_change_but_editing_it_is() {
    let spec = |line: usize, args: &[&str]| {
        let mut agent = agent("a", &[]);
        agent.location.line = line;
        agent.script = Some(crate::manifest::Script {
            path: "a.py".into(),
            location: crate::manifest::Location {
                line: line + 1,
                ..Default::default()
            },
        });
        agent.command.extend(args.iter().map(|arg| arg.to_string()));
        AgentSpec {
            agent,
            remote: false,
        }
    };
    assert_eq!(definition(&spec(3, &[])), definition(&spec(30, &[])));
    assert_ne!(
        definition(&spec(3, &[])),
        definition(&spec(3, &["--debug"]))
    );
}

#[test]
fn a_missed_readiness_deadline_is_retried_under_the_restart_policy() {
    let mut slow = agent("slow", &[]);
    slow.readiness.check = ReadinessCheck::Probe(Probe::Tcp {
        host: "127.0.0.1".into(),
        port: 1,
    });
    slow.readiness.timeout = Duration::from_secs(2);
    let mut driver = Driver::new(vec![slow], Strategy::OneForOne);
    driver.advance(Duration::from_secs(2));
    driver.take_log();
    // No diagnosis comes: it is killed after the wait anyway.
    driver.advance(DIAGNOSIS_WAIT);
    assert_eq!(driver.signalled(), [("slow".into(), Signal::SIGKILL)]);
    driver.exit("slow", Termination::Signaled(9));
    assert_eq!(driver.state("slow"), AgentState::BackingOff);
    driver.advance(Duration::from_secs(1));
    assert_eq!(driver.spawned(), ["slow"], "started again");
}

#[test]
fn an_optional_agent_failing_blocks_its_dependents_only() {
    let mut flaky = agent("flaky", &[]);
    flaky.required = false;
    flaky.restart.mode = RestartMode::Never;
    let agents = vec![flaky, agent("user", &["flaky"]), agent("other", &[])];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.exit("flaky", Termination::Code(3));
    assert_eq!(driver.state("flaky"), AgentState::Failed);
    assert_eq!(driver.state("user"), AgentState::Blocked);
    driver.advance(ms(100));
    assert_eq!(driver.state("other"), AgentState::Ready);
    assert!(!driver.lifecycle.snapshot().shutting_down);
}

#[test]
fn restarts_back_off_until_the_intensity_limit() {
    let mut crashy = agent("crashy", &[]);
    crashy.restart.max_restarts = Some(2);
    let mut driver = Driver::new(vec![crashy], Strategy::OneForOne);
    for attempt in 0..2 {
        driver.exit("crashy", Termination::Code(1));
        assert_eq!(driver.state("crashy"), AgentState::BackingOff);
        // Delays of 100 ms, then 200 ms, +-20%.
        driver.advance(ms(125 << attempt));
        assert_eq!(driver.state("crashy"), AgentState::Starting);
    }
    driver.exit("crashy", Termination::Code(1));
    assert_eq!(driver.state("crashy"), AgentState::Failed);
    let Some(Action::Exit(outcome)) = driver.take_log().pop() else {
        panic!("no exit")
    };
    assert!(outcome.failure.unwrap().reason.contains("max_restarts: 2"));
}

/// The wait the lifecycle chose for the restart of `name`, which is
/// backing off now.
fn restart_wait(driver: &Driver, name: &str) -> Duration {
    assert_eq!(driver.state(name), AgentState::BackingOff);
    let at = driver.lifecycle.next_deadline().expect("a restart is due");
    at.duration_since(driver.now)
}

#[test]
fn an_agent_killed_after_running_healthy_restarts_at_once() {
    // Issue 18: backoff counts from the last start.
    let mut driver = Driver::new(vec![agent("a", &[])], Strategy::OneForOne);
    for kill in 0..4 {
        driver.advance(Duration::from_secs(2));
        assert_eq!(driver.state("a"), AgentState::Ready, "kill {kill}");
        driver.take_log();
        driver.exit("a", Termination::Signaled(9));
        // Steps of 100, 200, 400, 800 ms are all shorter than its 2 s run.
        assert_eq!(restart_wait(&driver, "a"), Duration::ZERO, "kill {kill}");
        driver.advance(Duration::ZERO);
        assert_eq!(
            driver.spawned(),
            ["a"],
            "kill {kill}: started again at once"
        );
    }
}

#[test]
fn restart_delay_is_waited_even_after_a_healthy_run() {
    let mut cache = agent("cache", &[]);
    cache.restart.delay = Duration::from_secs(3);
    let mut driver = Driver::new(vec![cache], Strategy::OneForOne);
    driver.advance(Duration::from_secs(60));
    assert_eq!(driver.state("cache"), AgentState::Ready);
    driver.take_log();
    driver.exit("cache", Termination::Signaled(9));
    assert_eq!(restart_wait(&driver, "cache"), Duration::from_secs(3));
    driver.advance(ms(2900));
    assert!(driver.spawned().is_empty(), "started before its delay");
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["cache"]);
}

#[test]
fn a_crash_loop_backs_off_exponentially_up_to_the_cap() {
    let mut crashy = agent("crashy", &[]);
    crashy.restart.max_restarts = None;
    crashy.restart.backoff.max = ms(1000);
    let mut driver = Driver::new(vec![crashy], Strategy::OneForOne);
    let nominal = [100u64, 200, 400, 800, 1000, 1000, 1000];
    for (index, step) in nominal.into_iter().enumerate() {
        // Dies 10 ms after each start: shorter than any step.
        driver.advance(ms(10));
        driver.exit("crashy", Termination::Code(1));
        let wait = restart_wait(&driver, "crashy");
        let low = ms(step * 8 / 10);
        let high = ms((step * 12 / 10).min(1000));
        assert!(
            low <= wait && wait <= high,
            "restart {index}: waits {wait:?}, not in {low:?}..{high:?}"
        );
        driver.advance(wait);
        assert_eq!(driver.state("crashy"), AgentState::Starting);
    }
}

#[test]
fn an_agent_that_ran_shorter_than_its_step_waits_the_whole_step() {
    let mut a = agent("a", &[]);
    a.restart.max_restarts = None;
    let mut driver = Driver::new(vec![a], Strategy::OneForOne);
    // Killed 1.2 s after each start: longer than its 100 ms step and the
    // crash window, so it restarts at once every time and the step stays.
    for kill in 0..6 {
        driver.advance(ms(1200));
        driver.exit("a", Termination::Signaled(9));
        assert_eq!(restart_wait(&driver, "a"), Duration::ZERO, "kill {kill}");
        driver.advance(Duration::ZERO);
    }
    // Crashes 300 ms after each start grow the step: 100, 200, 400, 800 ms.
    for _ in 0..4 {
        driver.advance(ms(300));
        driver.exit("a", Termination::Code(1));
        let wait = restart_wait(&driver, "a");
        driver.advance(wait);
    }
    // Now a 1.2 s run is shorter than its 1.6 s step (+-20%): it waits.
    driver.advance(ms(1200));
    driver.exit("a", Termination::Signaled(9));
    let wait = restart_wait(&driver, "a");
    assert!(ms(1280) <= wait && wait <= ms(1920), "{wait:?}");
}

#[test]
fn a_run_shorter_than_the_crash_window_always_waits_its_step() {
    // Ready after 100 ms, dies after 300 ms: longer than its 100 ms step,
    // but a crash all the same.
    let mut driver = Driver::new(vec![agent("a", &[])], Strategy::OneForOne);
    driver.advance(ms(300));
    assert_eq!(driver.state("a"), AgentState::Ready);
    driver.exit("a", Termination::Code(1));
    let wait = restart_wait(&driver, "a");
    assert!(ms(80) <= wait && wait <= ms(120), "{wait:?}");
}

#[test]
fn a_hung_agent_is_killed_and_restarted() {
    let mut hung = agent("hung", &[]);
    hung.liveness = Some(Liveness {
        probe: Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        },
        interval: Duration::from_secs(1),
        timeout: ms(500),
        failures: 3,
    });
    let mut driver = Driver::new(vec![hung], Strategy::OneForOne);
    driver.advance(ms(100));
    assert!(
        driver
            .take_log()
            .iter()
            .any(|action| matches!(action, Action::WatchLiveness { .. }))
    );
    let run = driver.lifecycle.agents[0].run;
    for attempt in 0..3 {
        assert_eq!(driver.state("hung"), AgentState::Ready, "attempt {attempt}");
        driver.send(Event::LivenessProbed {
            agent: 0,
            run,
            result: Err("timed out".into()),
        });
    }
    assert_eq!(driver.signalled(), [("hung".into(), Signal::SIGKILL)]);
    driver.exit("hung", Termination::Signaled(9));
    assert_eq!(driver.state("hung"), AgentState::BackingOff);
    assert!(
        driver.lifecycle.agents[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("liveness probe failed 3 times")
    );
    driver.advance(ms(125));
    assert_eq!(driver.state("hung"), AgentState::Starting);
}

#[test]
fn one_success_resets_the_liveness_count() {
    let mut agent = agent("a", &[]);
    agent.liveness = Some(Liveness {
        probe: Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        },
        interval: Duration::from_secs(1),
        timeout: ms(500),
        failures: 2,
    });
    let mut driver = Driver::new(vec![agent], Strategy::OneForOne);
    driver.advance(ms(100));
    let run = driver.lifecycle.agents[0].run;
    for result in [Err("x".to_string()), Ok(()), Err("x".to_string())] {
        driver.send(Event::LivenessProbed {
            agent: 0,
            run,
            result,
        });
    }
    assert_eq!(driver.state("a"), AgentState::Ready);
}

#[test]
fn rest_for_one_restarts_the_dependents_in_order() {
    let agents = vec![
        agent("db", &[]),
        agent("api", &["db"]),
        agent("ui", &["api"]),
        agent("free", &[]),
    ];
    let mut driver = Driver::new(agents, Strategy::RestForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.exit("db", Termination::Code(1));
    assert_eq!(driver.signalled(), [("ui".into(), Signal::SIGTERM)]);
    driver.exit("ui", Termination::Signaled(15));
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
    driver.exit("api", Termination::Signaled(15));
    assert_eq!(driver.state("api"), AgentState::Pending);
    assert_eq!(driver.state("free"), AgentState::Ready);
    driver.advance(ms(120));
    assert_eq!(driver.spawned(), ["db"]);
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["api"]);
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["ui"]);
}

#[test]
fn one_for_all_restarts_everyone_and_one_for_one_nobody_else() {
    let agents = vec![agent("db", &[]), agent("api", &["db"]), agent("free", &[])];
    let mut driver = Driver::new(agents.clone(), Strategy::OneForAll);
    driver.advance(ms(300));
    driver.take_log();
    driver.exit("db", Termination::Code(1));
    assert_eq!(
        driver.signalled(),
        [
            ("free".into(), Signal::SIGTERM),
            ("api".into(), Signal::SIGTERM)
        ]
    );

    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.exit("db", Termination::Code(1));
    assert_eq!(driver.signalled(), []);
    assert_eq!(driver.state("api"), AgentState::Ready);
}

#[test]
fn stale_events_of_an_old_run_are_ignored() {
    let mut driver = Driver::new(vec![agent("a", &[])], Strategy::OneForOne);
    driver.exit("a", Termination::Code(1));
    driver.advance(ms(125));
    assert_eq!(driver.state("a"), AgentState::Starting);
    driver.send(Event::Exited {
        agent: 0,
        run: 1,
        termination: Termination::Code(1),
    });
    assert_eq!(driver.state("a"), AgentState::Starting);
}

#[test]
fn everything_done_ends_the_run() {
    let mut job = agent("job", &[]);
    job.restart.mode = RestartMode::OnFailure;
    let mut driver = Driver::new(vec![job], Strategy::OneForOne);
    driver.advance(ms(100));
    driver.exit("job", Termination::Code(0));
    assert_eq!(
        driver.take_log().pop(),
        Some(Action::Exit(Outcome::default()))
    );
}

fn ids(driver: &Driver, names: &[&str]) -> Vec<AgentId> {
    names.iter().map(|name| driver.id(name)).collect()
}

#[test]
fn an_operator_stop_takes_dependents_first_and_holds_them_until_started() {
    let agents = vec![agent("db", &[]), agent("api", &["db"]), agent("free", &[])];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.send(Event::StopRequested {
        agents: ids(&driver, &["db"]),
    });
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
    driver.exit("api", Termination::Signaled(15));
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
    driver.exit("db", Termination::Signaled(15));
    assert_eq!(driver.state("db"), AgentState::Stopped);
    assert_eq!(driver.state("api"), AgentState::Stopped);
    assert_eq!(driver.state("free"), AgentState::Ready);
    driver.send(Event::StopRequested {
        agents: ids(&driver, &["free"]),
    });
    driver.exit("free", Termination::Signaled(15));
    // Everything is held: the run waits for the operator.
    assert!(
        !driver
            .take_log()
            .iter()
            .any(|action| matches!(action, Action::Exit(_)))
    );
    assert!(driver.lifecycle.snapshot().agents.iter().all(|a| a.held));
    // Starting api brings its dependency back first.
    driver.send(Event::StartRequested {
        agents: ids(&driver, &["api"]),
    });
    assert_eq!(driver.spawned(), ["db"]);
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["api"]);
    assert_eq!(driver.state("free"), AgentState::Stopped);
}

#[test]
fn an_operator_restart_replaces_one_agent_or_its_dependents_too() {
    let agents = vec![agent("db", &[]), agent("api", &["db"])];
    let mut driver = Driver::new(agents.clone(), Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.send(Event::RestartRequested {
        agents: ids(&driver, &["db"]),
        with_dependents: false,
    });
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
    driver.exit("db", Termination::Signaled(15));
    assert_eq!(driver.spawned(), ["db"]);
    assert_eq!(driver.state("api"), AgentState::Ready);
    let status = driver.lifecycle.snapshot();
    assert_eq!(status.agents[0].restarts_by_cause.get("operator"), Some(&1));

    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    driver.send(Event::RestartRequested {
        agents: ids(&driver, &["db"]),
        with_dependents: true,
    });
    assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
    driver.exit("api", Termination::Signaled(15));
    assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
    driver.exit("db", Termination::Signaled(15));
    assert_eq!(driver.spawned(), ["db"]);
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["api"]);
}

#[test]
fn a_reload_restarts_changed_agents_stops_removed_ones_and_starts_new_ones() {
    let agents = vec![
        agent("db", &[]),
        agent("api", &["db"]),
        agent("old", &[]),
        agent("same", &[]),
    ];
    let mut driver = Driver::new(agents, Strategy::OneForOne);
    driver.advance(ms(300));
    driver.take_log();
    let mut db = agent("db", &[]);
    db.env.insert("CHANGED".into(), "1".into());
    let mut same = agent("same", &[]);
    same.location.line = 42; // moved in the file: not a change
    let reload = Reload {
        agents: std::sync::Arc::new(local(vec![
            db,
            agent("api", &["db"]),
            same,
            agent("new", &["db"]),
        ])),
        strategy: Strategy::OneForOne,
        scaled: None,
    };
    let old = driver.id("old");
    let summary = driver.lifecycle.reload_summary(&reload);
    assert_eq!(summary.added, ["new"]);
    assert_eq!(summary.removed, ["old"]);
    assert_eq!(summary.changed, ["db"]);
    assert_eq!(summary.unchanged, 2);
    driver.send(Event::ReloadRequested(reload));
    let mut signalled = driver.signalled();
    signalled.sort();
    assert_eq!(
        signalled,
        [
            ("db".into(), Signal::SIGTERM),
            ("old".into(), Signal::SIGTERM)
        ]
    );
    let run = driver.lifecycle.agents[old].run;
    driver.send(Event::Exited {
        agent: old,
        run,
        termination: Termination::Signaled(15),
    });
    driver.exit("db", Termination::Signaled(15));
    assert_eq!(driver.spawned(), ["db"]);
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["new"]);
    let names: Vec<String> = driver
        .lifecycle
        .snapshot()
        .agents
        .iter()
        .map(|agent| agent.name.clone())
        .collect();
    assert_eq!(names, ["db", "api", "same", "new"]);
    assert_eq!(driver.state("api"), AgentState::Ready);
    assert_eq!(driver.lifecycle.snapshot().reloads, 1);
}

#[test]
fn memory_above_the_limit_for_the_grace_restarts_the_agent() {
    let mut hog = agent("hog", &[]);
    hog.limits = Some(crate::manifest::Limits {
        memory_bytes: Some(100 * 1024 * 1024),
        cpu_percent: Some(50.0),
        grace: Duration::from_secs(1),
    });
    let mut driver = Driver::new(vec![hog], Strategy::OneForOne);
    driver.advance(ms(100));
    driver.take_log();
    let sample = |rss_mb: u64| Event::ResourcesSampled {
        samples: vec![ResourceSample {
            pid: 1000,
            cpu_percent: Some(90.0),
            rss_bytes: rss_mb * 1024 * 1024,
        }],
    };
    driver.send(sample(150));
    assert_eq!(driver.signalled(), []);
    assert_eq!(driver.lifecycle.snapshot().cpu_warnings, 1);
    driver.advance(ms(500));
    driver.send(sample(50));
    driver.advance(ms(500));
    driver.send(sample(150));
    driver.advance(ms(900));
    driver.send(sample(150));
    assert_eq!(
        driver.signalled(),
        [],
        "back under the limit restarts the grace"
    );
    driver.advance(ms(100));
    driver.send(sample(150));
    assert_eq!(driver.signalled(), [("hog".into(), Signal::SIGKILL)]);
    driver.exit("hog", Termination::Signaled(9));
    assert_eq!(driver.state("hog"), AgentState::BackingOff);
    let status = driver.lifecycle.snapshot();
    let reason = status.agents[0].reason.as_deref().unwrap();
    assert!(reason.contains("above the limit of 100 MiB"), "{reason}");
    assert_eq!(status.agents[0].restarts_by_cause.get("memory"), Some(&1));
    assert_eq!(
        status.agents[0].rss_bytes, None,
        "no figures without a process"
    );
}

/// Issue 19: reports of another host's agent can overtake each other (the
/// notice that its old run stopped arriving after its new run's READY); a
/// report about an older run than one applied is ignored, so the agent is
/// not left shown not ready while it is. Runs of a restarted owner (a new
/// epoch) count from 1 again and are applied.
#[test]
fn issue_19_a_remote_report_about_an_older_run_is_ignored() {
    let mut tts = agent("tts", &[]);
    tts.readiness.check = ReadinessCheck::Probe(Probe::Tcp {
        host: "10.0.0.1".into(),
        port: 7101,
    });
    let mut driver = Driver::from_specs(
        vec![
            AgentSpec {
                agent: tts,
                remote: true,
            },
            AgentSpec {
                agent: agent("relay", &["tts"]),
                remote: false,
            },
        ],
        Strategy::OneForOne,
    );
    assert_eq!(driver.state("tts"), AgentState::Starting);
    assert_eq!(driver.state("relay"), AgentState::Pending);
    let tts_id = driver.id("tts");
    let report = |ready: bool, epoch: u64, run: u64| Event::RemoteReported {
        agent: tts_id,
        ready,
        run: RemoteRun { epoch, run },
    };
    driver.send(report(true, 1, 1));
    assert_eq!(driver.state("tts"), AgentState::Ready);
    assert_eq!(driver.spawned(), ["relay"]);

    // Reordered: run 2's READY first, then run 1's stop notice.
    driver.send(report(true, 1, 2));
    driver.send(report(false, 1, 1));
    assert_eq!(
        driver.state("tts"),
        AgentState::Ready,
        "the stale notice of run 1 must not make run 2 not ready"
    );

    // In order: run 2 stops, run 3 is ready.
    driver.send(report(false, 1, 2));
    assert_eq!(driver.state("tts"), AgentState::BackingOff);
    driver.send(report(true, 1, 3));
    assert_eq!(driver.state("tts"), AgentState::Ready);

    // The owning supervisor restarted: a new epoch, its runs from 1.
    driver.send(report(false, 2, 1));
    assert_eq!(driver.state("tts"), AgentState::BackingOff);
    driver.send(report(true, 1, 9));
    assert_eq!(
        driver.state("tts"),
        AgentState::BackingOff,
        "a report of the owner's previous epoch is stale"
    );
    // Nothing here was restarted because of the other host.
    assert!(driver.spawned().is_empty());
}

/// `worker` with `replicas: 3, min_ready: 2`, instance i ready after
/// (i+1) × 100 ms, and `api` depending on `worker`.
fn replicated() -> Vec<Agent> {
    let mut template = agent("worker", &[]);
    template.replicas = Some(crate::manifest::Replicas {
        count: 3,
        min_ready: 2,
        port_range: false,
        health_range: false,
        location: Location::default(),
    });
    let mut agents = crate::manifest::replicas::instances(&template);
    for (index, instance) in agents.iter_mut().enumerate() {
        instance.readiness.check = ReadinessCheck::StartPeriod(ms(100 * (index as u64 + 1)));
    }
    agents.push(agent("api", &["worker"]));
    agents
}

#[test]
fn a_dependent_of_a_replicated_agent_waits_for_min_ready_instances() {
    let mut driver = Driver::new(replicated(), Strategy::OneForOne);
    assert_eq!(driver.spawned(), ["worker-0", "worker-1", "worker-2"]);
    driver.advance(ms(100));
    assert_eq!(
        driver.spawned(),
        Vec::<String>::new(),
        "one of two is ready"
    );
    driver.advance(ms(100));
    assert_eq!(driver.spawned(), ["api"], "two of three are ready");
    assert_eq!(driver.state("worker-2"), AgentState::Starting);
}

#[test]
fn scaling_down_stops_the_highest_index_first_and_below_min_ready_is_refused() {
    let mut driver = Driver::new(replicated(), Strategy::OneForOne);
    driver.advance(Duration::from_secs(1));
    driver.take_log();
    assert!(matches!(
        driver.lifecycle.scaled("worker", 1),
        Err(CommandError::Refused(why)) if why.contains("min_ready: 2")
    ));
    assert!(matches!(
        driver.lifecycle.scaled("api", 2),
        Err(CommandError::Refused(why)) if why.contains("no `replicas:`")
    ));
    let five = driver.lifecycle.scaled("worker", 5).expect("scale up");
    driver.send(Event::ReloadRequested(five));
    assert_eq!(driver.spawned(), ["worker-3", "worker-4"]);
    driver.advance(Duration::from_secs(1));
    let two = driver.lifecycle.scaled("worker", 2).expect("scale down");
    assert_eq!(
        driver.lifecycle.reload_summary(&two).removed,
        ["worker-2", "worker-3", "worker-4"]
    );
    driver.send(Event::ReloadRequested(two));
    // One at a time, from the top: each after the one above it exited.
    for name in ["worker-4", "worker-3", "worker-2"] {
        assert_eq!(driver.signalled(), [(name.to_string(), Signal::SIGTERM)]);
        let agent = driver
            .lifecycle
            .agents
            .iter()
            .position(|record| record.retired && record.name() == name)
            .expect("retired");
        let run = driver.lifecycle.agents[agent].run;
        driver.send(Event::Exited {
            agent,
            run,
            termination: Termination::Signaled(15),
        });
    }
    assert_eq!(driver.signalled(), Vec::<(String, Signal)>::new());
    assert_eq!(driver.state("api"), AgentState::Ready, "api kept running");
    assert_eq!(driver.lifecycle.instances_of("worker").len(), 2);
}

/// A heartbeat payload: `in_flight`, and the progress marker.
fn work(in_flight: Option<u64>, progress: u64) -> Option<crate::transport::HeartbeatPayload> {
    Some(crate::transport::HeartbeatPayload {
        in_flight,
        last_progress_ms: Some(progress),
        ..Default::default()
    })
}

impl Driver {
    fn beat(&mut self, name: &str, payload: Option<crate::transport::HeartbeatPayload>) {
        let agent = self.id(name);
        let run = self.lifecycle.agents[agent].run;
        self.send(Event::HeartbeatReceived {
            agent,
            run,
            payload,
        });
    }

    /// Heartbeats every 200 ms for `by`, each carrying `payload`.
    fn beat_for(
        &mut self,
        name: &str,
        by: Duration,
        payload: Option<crate::transport::HeartbeatPayload>,
    ) {
        let end = self.now + by;
        while self.now < end {
            self.beat(name, payload.clone());
            self.advance(ms(200).min(end - self.now));
        }
    }
}

/// `worker` (idle_stop 1 s) with a dependent `client`, both ready.
fn idle_pair() -> Driver {
    let mut worker = agent("worker", &[]);
    worker.idle_stop = Some(Duration::from_secs(1));
    let mut driver = Driver::new(
        vec![worker, agent("client", &["worker"])],
        Strategy::OneForAll,
    );
    driver.advance(ms(250));
    assert_eq!(driver.state("worker"), AgentState::Ready);
    assert_eq!(driver.state("client"), AgentState::Ready);
    driver.take_log();
    driver
}

#[test]
fn an_agent_without_work_for_idle_stop_is_stopped_gracefully_alone_and_shown_idle() {
    let mut driver = idle_pair();
    // Busy, then progress with nothing in flight: the idle clock starts at
    // the last change of `last_progress_ms`.
    driver.beat_for("worker", Duration::from_secs(3), work(Some(2), 1));
    driver.beat_for("worker", ms(600), work(Some(0), 2));
    driver.beat_for("worker", ms(200), work(Some(0), 3));
    assert_eq!(driver.signalled(), vec![]);
    let idle_from = driver.now - ms(200);
    driver.beat_for("worker", ms(790), work(Some(0), 3));
    assert_eq!(driver.state("worker"), AgentState::Ready);
    assert_eq!(driver.signalled(), vec![]);
    driver.beat_for("worker", ms(400), work(Some(0), 3));
    assert!(driver.now >= idle_from + Duration::from_secs(1));
    // Its own stop signal (not SIGKILL), and the dependent keeps running
    // (even under one_for_all).
    assert_eq!(
        driver.signalled(),
        vec![("worker".to_string(), Signal::SIGTERM)]
    );
    assert_eq!(driver.state("worker"), AgentState::Stopping);
    driver.exit("worker", Termination::Signaled(15));
    assert_eq!(driver.state("worker"), AgentState::Idle);
    assert_eq!(driver.state("client"), AgentState::Ready);
    assert_eq!(driver.signalled(), vec![]);
    let snapshot = driver.lifecycle.snapshot();
    let worker = &snapshot.agents[driver.id("worker")];
    assert_eq!(worker.reason.as_deref(), Some("idle: no work for 1.00s"));
    assert_eq!(worker.restarts, 0, "an idle stop is no crash");
    assert!(worker.restarts_by_cause.is_empty());
    // Not restarted by its policy, and the run does not end.
    driver.advance(Duration::from_secs(60));
    assert_eq!(driver.state("worker"), AgentState::Idle);
    assert_eq!(driver.spawned(), Vec::<String>::new());
    assert_eq!(driver.lifecycle.next_deadline(), None);
}

#[test]
fn work_in_flight_queued_work_or_no_payload_is_never_idle() {
    for payload in [
        work(Some(1), 7),
        None,
        work(None, 7),
        Some(crate::transport::HeartbeatPayload {
            in_flight: Some(0),
            queue_depth: Some(3),
            ..Default::default()
        }),
    ] {
        let mut driver = idle_pair();
        driver.beat_for("worker", Duration::from_secs(5), payload.clone());
        assert_eq!(driver.state("worker"), AgentState::Ready, "{payload:?}");
        assert_eq!(driver.signalled(), vec![], "{payload:?}");
    }
    // Progress with nothing in flight, at every heartbeat: each change
    // restarts the idle clock.
    let mut driver = idle_pair();
    for marker in 0..25 {
        driver.beat("worker", work(Some(0), marker));
        driver.advance(ms(200));
    }
    assert_eq!(driver.state("worker"), AgentState::Ready);
}

/// Stops `worker` for idleness; it ends `Idle`.
fn make_idle(driver: &mut Driver) {
    driver.beat_for("worker", ms(1200), work(Some(0), 1));
    assert_eq!(driver.state("worker"), AgentState::Stopping);
    driver.exit("worker", Termination::Code(0));
    assert_eq!(driver.state("worker"), AgentState::Idle);
    driver.take_log();
}

#[test]
fn an_idle_agent_is_woken_by_a_resolve_by_start_and_by_a_dependent_that_needs_it() {
    // RESOLVE.
    let mut driver = idle_pair();
    make_idle(&mut driver);
    let worker = driver.id("worker");
    driver.send(Event::WakeRequested {
        agent: worker,
        by: "client".into(),
    });
    assert_eq!(driver.state("worker"), AgentState::Starting);
    assert_eq!(driver.spawned(), ["worker"]);
    let snapshot = driver.lifecycle.snapshot();
    assert_eq!(
        snapshot.agents[worker].reason.as_deref(),
        Some("started on demand: resolved by `client`")
    );
    driver.advance(ms(150));
    assert_eq!(driver.state("worker"), AgentState::Ready);
    assert_eq!(driver.state("client"), AgentState::Ready);
    // A fresh idle clock: busy now, so it stays.
    driver.beat_for("worker", Duration::from_secs(3), work(Some(1), 5));
    assert_eq!(driver.state("worker"), AgentState::Ready);
    // A wake of a running agent changes nothing.
    driver.send(Event::WakeRequested {
        agent: worker,
        by: "client".into(),
    });
    assert_eq!(driver.spawned(), Vec::<String>::new());

    // `supervisor start`.
    let mut driver = idle_pair();
    make_idle(&mut driver);
    let worker = driver.id("worker");
    driver.send(Event::StartRequested {
        agents: vec![worker],
    });
    assert_eq!(driver.spawned(), ["worker"]);

    // A dependent that restarts needs it.
    let mut driver = idle_pair();
    make_idle(&mut driver);
    driver.exit("client", Termination::Code(1));
    assert_eq!(driver.state("client"), AgentState::BackingOff);
    // Its restart wakes the idle worker and waits for it to be ready.
    driver.advance(ms(150));
    assert_eq!(driver.spawned(), ["worker", "client"]);
    driver.advance(ms(150));
    assert_eq!(driver.state("worker"), AgentState::Ready);
    assert_eq!(driver.state("client"), AgentState::Ready);
    let snapshot = driver.lifecycle.snapshot();
    assert_eq!(
        snapshot.agents[driver.id("worker")].reason.as_deref(),
        Some("started on demand: `client` needs it")
    );
}

#[test]
fn an_idle_agent_stops_for_good_on_shutdown_and_on_an_operator_stop() {
    let mut driver = idle_pair();
    make_idle(&mut driver);
    let worker = driver.id("worker");
    driver.send(Event::StopRequested {
        agents: vec![worker],
    });
    assert_eq!(driver.state("worker"), AgentState::Stopped);
    // A resolve does not wake an agent an operator stopped.
    driver.send(Event::WakeRequested {
        agent: worker,
        by: "client".into(),
    });
    assert_eq!(driver.state("worker"), AgentState::Stopped);

    let mut driver = idle_pair();
    make_idle(&mut driver);
    driver.send(Event::ShutdownRequested { force: false });
    assert_eq!(driver.state("worker"), AgentState::Stopped);
    assert_eq!(
        driver.signalled(),
        vec![("client".to_string(), Signal::SIGTERM)]
    );
    driver.exit("client", Termination::Signaled(15));
    assert!(
        driver
            .take_log()
            .iter()
            .any(|action| matches!(action, Action::Exit(_)))
    );
}
