//! Property tests of [`Lifecycle::apply`] (issue 17): random tables of
//! agents and random sequences of events (exits, readiness and liveness
//! results, heartbeats, operator commands, reloads, time steps, shutdown),
//! applied through a [`World`] of fake processes, never break the
//! invariants:
//! - a dependent is never spawned while a dependency is not `Ready`;
//! - stops that wait for dependents (shutdown, operator, strategy, reload)
//!   are signalled only when no dependent is alive (reverse dependency order);
//! - the restarts of an agent within its `within` window never exceed its
//!   `max_restarts`, and `restart: never` never backs off;
//! - no agent is both running and stopped: a live process belongs to the
//!   current run of an agent in `Starting`, `Ready` or `Stopping`, an agent
//!   never has two processes, and a stopped or failed agent shows no pid;
//! - every `Stopping` is SIGKILLed by the end of its grace, and after a
//!   shutdown every agent ends `Stopped` or `Failed` and the run ends.
//!
//! Every transition is also checked against the table of `state.rs` by
//! [`Lifecycle::transition`] itself (an illegal one panics in tests).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use nix::sys::signal::Signal;
use proptest::prelude::*;
use tokio::time::Instant;

use super::tests::{agent, ms};
use super::{AgentSpec, Lifecycle, Phase, StopIntent};
use crate::manifest::{Agent, Liveness, Probe, ReadinessCheck, RestartMode, Strategy as Restarts};
use crate::process::Termination;
use crate::supervisor::event::{Action, AgentId, Event, Reload};
use crate::supervisor::restart::Jitter;
use crate::supervisor::state::AgentState;

/// How an agent of the random table behaves and is configured.
#[derive(Debug, Clone)]
struct AgentPlan {
    /// Indices of earlier agents it depends on (so the table has no cycle).
    dependencies: Vec<usize>,
    start_period: u64,
    probed: bool,
    liveness: bool,
    mode: RestartMode,
    max_restarts: Option<u32>,
    within: u64,
    initial: u64,
    grace: u64,
    /// Ignores SIGTERM (dies on SIGKILL only).
    stubborn: bool,
    required: bool,
    /// `idle_stop` of 1 s (heartbeats then sometimes report no work).
    idle: bool,
}

fn agent_plan(index: usize) -> impl Strategy<Value = AgentPlan> {
    (
        proptest::collection::vec(0..index.max(1), 0..=index.min(3)),
        10u64..400,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RestartMode::Always),
            Just(RestartMode::OnFailure),
            Just(RestartMode::Never)
        ],
        proptest::option::of(0u32..4),
        500u64..5000,
        10u64..300,
        50u64..2000,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(
                dependencies,
                start_period,
                probed,
                liveness,
                mode,
                max_restarts,
                within,
                initial,
                grace,
                stubborn,
                required,
                idle,
            )| AgentPlan {
                dependencies: if index == 0 { Vec::new() } else { dependencies },
                start_period,
                probed,
                liveness,
                mode,
                max_restarts,
                within,
                initial,
                grace,
                stubborn,
                required,
                idle,
            },
        )
}

fn table() -> impl Strategy<Value = Vec<AgentPlan>> {
    (1usize..6).prop_flat_map(|count| (0..count).map(agent_plan).collect::<Vec<_>>())
}

/// One thing that happens to the supervisor. Agents are picked by index
/// into the live agents (modulo their number).
#[derive(Debug, Clone)]
enum Step {
    Exit {
        agent: usize,
        code: i32,
    },
    ReadinessPassed {
        agent: usize,
    },
    Liveness {
        agent: usize,
        ok: bool,
    },
    /// `idle`: the payload says no work (`in_flight: 0`).
    Heartbeat {
        agent: usize,
        idle: bool,
    },
    /// A RESOLVE of the agent (wakes it when idle).
    Wake {
        agent: usize,
    },
    Start {
        agent: usize,
    },
    Stop {
        agent: usize,
    },
    Restart {
        agent: usize,
        with_dependents: bool,
    },
    Reload {
        agent: usize,
        kind: u8,
    },
    Advance {
        millis: u64,
    },
    DeliverExits,
    Shutdown {
        force: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..8, 0i32..3).prop_map(|(agent, code)| Step::Exit { agent, code }),
        3 => (0usize..8).prop_map(|agent| Step::ReadinessPassed { agent }),
        2 => (0usize..8, any::<bool>()).prop_map(|(agent, ok)| Step::Liveness { agent, ok }),
        2 => (0usize..8, any::<bool>()).prop_map(|(agent, idle)| Step::Heartbeat { agent, idle }),
        1 => (0usize..8).prop_map(|agent| Step::Wake { agent }),
        1 => (0usize..8).prop_map(|agent| Step::Start { agent }),
        1 => (0usize..8).prop_map(|agent| Step::Stop { agent }),
        1 => (0usize..8, any::<bool>())
            .prop_map(|(agent, with_dependents)| Step::Restart { agent, with_dependents }),
        1 => (0usize..8, 0u8..3).prop_map(|(agent, kind)| Step::Reload { agent, kind }),
        6 => (0u64..3000).prop_map(|millis| Step::Advance { millis }),
        3 => Just(Step::DeliverExits),
        1 => any::<bool>().prop_map(|force| Step::Shutdown { force }),
    ]
}

fn build(name: &str, plan: &AgentPlan, names: &[String]) -> Agent {
    let dependencies: Vec<&str> = plan
        .dependencies
        .iter()
        .map(|index| names[*index].as_str())
        .collect();
    let mut agent = agent(name, &dependencies);
    agent.readiness.check = match plan.probed {
        true => ReadinessCheck::Probe(Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        }),
        false => ReadinessCheck::StartPeriod(ms(plan.start_period)),
    };
    agent.readiness.timeout = ms(plan.start_period * 10);
    if plan.liveness {
        agent.liveness = Some(Liveness {
            probe: Probe::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            interval: Duration::from_secs(1),
            timeout: ms(500),
            failures: 2,
        });
    }
    agent.restart.mode = plan.mode;
    agent.restart.max_restarts = plan.max_restarts;
    agent.restart.within = ms(plan.within);
    agent.restart.backoff.initial = ms(plan.initial);
    agent.restart.backoff.max = ms(plan.initial * 8);
    agent.stop.grace = ms(plan.grace);
    agent.required = plan.required;
    agent.idle_stop = plan.idle.then(|| Duration::from_secs(1));
    agent
}

/// A fake process of one run.
#[derive(Debug, Clone, Copy)]
struct Process {
    run: u64,
    pid: u32,
    /// Signalled to death; its exit is pending.
    dying: bool,
}

/// The lifecycle, the processes it asked for, and what the invariants need
/// to remember.
struct World {
    lifecycle: Lifecycle,
    now: Instant,
    /// By agent: its live process (at most one).
    processes: HashMap<AgentId, Process>,
    /// Exits of signalled processes, delivered by `DeliverExits`.
    pending_exits: Vec<Event>,
    /// By agent: stubborn, restart limit, `within`, mode.
    behaviour: HashMap<String, AgentPlan>,
    /// By agent: when it entered `BackingOff`, since the last operator
    /// command or reload (which forgive restarts).
    backoffs: BTreeMap<AgentId, Vec<Instant>>,
    /// By agent: when it entered `Stopping`, and whether SIGKILL was sent since.
    stopping: HashMap<AgentId, (Instant, bool)>,
    finished: bool,
    /// The table the last configuration was built from.
    plans: Vec<(String, AgentPlan)>,
    added: usize,
}

impl World {
    fn new(plans: Vec<AgentPlan>, strategy: Restarts) -> World {
        let names: Vec<String> = (0..plans.len()).map(|index| format!("a{index}")).collect();
        let plans: Vec<(String, AgentPlan)> = names.iter().cloned().zip(plans).collect();
        let now = Instant::now();
        let lifecycle = Lifecycle::new(Self::specs(&plans), strategy, false, now, Jitter::new(3));
        let mut world = World {
            lifecycle,
            now,
            processes: HashMap::new(),
            pending_exits: Vec::new(),
            behaviour: plans.iter().cloned().collect(),
            backoffs: BTreeMap::new(),
            stopping: HashMap::new(),
            finished: false,
            plans,
            added: 0,
        };
        let actions = world.lifecycle.begin(now);
        world.after(&world.states(), actions);
        world
    }

    fn specs(plans: &[(String, AgentPlan)]) -> Vec<AgentSpec> {
        let names: Vec<String> = plans.iter().map(|(name, _)| name.clone()).collect();
        plans
            .iter()
            .map(|(name, plan)| AgentSpec {
                agent: build(name, plan, &names),
                remote: false,
            })
            .collect()
    }

    fn states(&self) -> Vec<AgentState> {
        (0..self.lifecycle.agents.len())
            .map(|agent| self.lifecycle.state(agent))
            .collect()
    }

    /// The live agent picked by `index`.
    fn pick(&self, index: usize) -> Option<AgentId> {
        let live: Vec<AgentId> = (0..self.lifecycle.agents.len())
            .filter(|agent| !self.lifecycle.agents[*agent].retired)
            .collect();
        (!live.is_empty()).then(|| live[index % live.len()])
    }

    fn send(&mut self, event: Event) {
        if self.finished {
            return;
        }
        let before = self.states();
        let actions = self.lifecycle.apply(event, self.now);
        self.after(&before, actions);
    }

    /// Checks the invariants on what one `apply` did, then performs its actions.
    fn after(&mut self, before: &[AgentState], actions: Vec<Action>) {
        let lifecycle = &self.lifecycle;
        for (agent, record) in lifecycle.agents.iter().enumerate() {
            let state = record.state();
            let was = before.get(agent).copied().unwrap_or(AgentState::Pending);
            if state == AgentState::BackingOff && was != AgentState::BackingOff {
                let plan = &self.behaviour[record.name()];
                assert_ne!(
                    plan.mode,
                    RestartMode::Never,
                    "{} backs off under `never`",
                    record.name()
                );
                let times = self.backoffs.entry(agent).or_default();
                times.push(self.now);
                if let Some(limit) = plan.max_restarts {
                    let within = ms(plan.within);
                    let recent = times
                        .iter()
                        .filter(|at| self.now.duration_since(**at) < within)
                        .count();
                    assert!(
                        recent as u32 <= limit,
                        "{} restarted {recent} times within {within:?} (max_restarts {limit})",
                        record.name()
                    );
                }
            }
            if state == AgentState::Stopping && was != AgentState::Stopping {
                self.stopping.insert(agent, (self.now, false));
            }
            if state != AgentState::Stopping {
                self.stopping.remove(&agent);
            }
            if matches!(state, AgentState::Stopped | AgentState::Failed) {
                assert_eq!(
                    record.phase.pid(),
                    None,
                    "{} is {state} with a pid",
                    record.name()
                );
            }
        }
        for action in &actions {
            match action {
                Action::Spawn { agent, .. } => {
                    for dependency in lifecycle.dependencies(*agent) {
                        assert_eq!(
                            lifecycle.state(*dependency),
                            AgentState::Ready,
                            "{} spawned while its dependency {} is not ready",
                            lifecycle.agent_name(*agent),
                            lifecycle.agent_name(*dependency)
                        );
                    }
                    assert!(
                        !self.processes.contains_key(agent),
                        "{} spawned with a process still alive",
                        lifecycle.agent_name(*agent)
                    );
                }
                Action::Signal { agent, signal, .. } => {
                    if let Some(entry) = self.stopping.get_mut(agent)
                        && *signal == Signal::SIGKILL
                    {
                        entry.1 = true;
                    }
                    let entered_now = before.get(*agent) != Some(&AgentState::Stopping);
                    if let Phase::Stopping { intent, .. } = &lifecycle.agents[*agent].phase
                        && entered_now
                        && !matches!(
                            intent,
                            // An idle stop leaves its dependents running.
                            StopIntent::Restart { .. }
                                | StopIntent::Idle { .. }
                                | StopIntent::Replace {
                                    after_dependents: false,
                                    ..
                                }
                        )
                    {
                        for dependent in &lifecycle.agents[*agent].dependents {
                            assert!(
                                !lifecycle.agents[*dependent].alive(),
                                "{} signalled while its dependent {} is alive",
                                lifecycle.agent_name(*agent),
                                lifecycle.agent_name(*dependent)
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        for (agent, process) in &self.processes {
            let record = &lifecycle.agents[*agent];
            assert!(
                matches!(
                    record.state(),
                    AgentState::Starting | AgentState::Ready | AgentState::Stopping
                ) && record.run == process.run,
                "{} has a live process of run {} but is {} (run {})",
                record.name(),
                process.run,
                record.state(),
                record.run
            );
        }
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Spawn { agent, run } => {
                    let pid = 10_000 + (agent as u32) * 1000 + run as u32;
                    self.processes.insert(
                        agent,
                        Process {
                            run,
                            pid,
                            dying: false,
                        },
                    );
                    self.send(Event::Spawned { agent, run, pid });
                }
                Action::Signal {
                    agent, pid, signal, ..
                } => {
                    let name = self.lifecycle.agent_name(agent).to_string();
                    let stubborn = self.behaviour[&name].stubborn;
                    if let Some(process) = self.processes.get_mut(&agent)
                        && process.pid == pid
                        && !process.dying
                        && (signal == Signal::SIGKILL || !stubborn)
                    {
                        process.dying = true;
                        self.pending_exits.push(Event::Exited {
                            agent,
                            run: process.run,
                            termination: Termination::Signaled(signal as i32),
                        });
                    }
                }
                Action::Exit(_) => self.finished = true,
                _ => {}
            }
        }
    }

    fn deliver_exits(&mut self) {
        while !self.pending_exits.is_empty() {
            for event in std::mem::take(&mut self.pending_exits) {
                if let Event::Exited { agent, .. } = &event {
                    self.processes.remove(agent);
                }
                self.send(event);
            }
        }
    }

    /// Moves the clock forward, firing each deadline at its own time;
    /// signalled processes die at once.
    fn advance(&mut self, by: Duration) {
        self.deliver_exits();
        let end = self.now + by;
        let mut fired = 0;
        while let Some(at) = self.lifecycle.next_deadline().filter(|at| *at <= end) {
            fired += 1;
            assert!(fired < 10_000, "a deadline that never clears");
            if self.finished {
                break;
            }
            self.now = at.max(self.now);
            self.send(Event::DeadlineReached);
            self.deliver_exits();
            self.check_graces();
        }
        self.now = end;
        self.check_graces();
    }

    /// Every `Stopping` is SIGKILLed by the end of its grace.
    fn check_graces(&self) {
        for (agent, (since, killed)) in &self.stopping {
            let grace = self.lifecycle.spec(*agent).agent.stop.grace;
            assert!(
                *killed || self.now.duration_since(*since) <= grace,
                "{} stopping for {:?}, past its grace of {grace:?}, without SIGKILL",
                self.lifecycle.agent_name(*agent),
                self.now.duration_since(*since)
            );
        }
    }

    fn reload(&mut self, index: usize, kind: u8) {
        let mut plans = self.plans.clone();
        let at = index % plans.len();
        match kind {
            0 => plans[at].1.start_period += 1,
            1 if plans.len() > 1 => {
                let (removed, _) = plans.remove(at);
                // Whoever depended on it loses the edge (and the indices shift).
                for (_, plan) in &mut plans {
                    plan.dependencies.retain(|dependency| *dependency != at);
                    for dependency in &mut plan.dependencies {
                        if *dependency > at {
                            *dependency -= 1;
                        }
                    }
                }
                self.behaviour.remove(&removed);
            }
            _ => {
                self.added += 1;
                let mut plan = plans[at].1.clone();
                plan.dependencies = vec![at];
                let name = format!("added{}", self.added);
                self.behaviour.insert(name.clone(), plan.clone());
                plans.push((name, plan));
            }
        }
        // A retired agent keeps its behaviour for the invariants.
        for (name, plan) in &self.plans {
            self.behaviour
                .entry(name.clone())
                .or_insert_with(|| plan.clone());
        }
        let reload = Reload {
            agents: std::sync::Arc::new(Self::specs(&plans)),
            strategy: self.lifecycle.strategy,
            scaled: None,
        };
        self.plans = plans;
        self.backoffs.clear();
        self.send(Event::ReloadRequested(reload));
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Exit { agent, code } => {
                if let Some(agent) = self.pick(agent)
                    && let Some(process) = self.processes.get(&agent).copied()
                    && !process.dying
                {
                    self.processes.remove(&agent);
                    self.send(Event::Exited {
                        agent,
                        run: process.run,
                        termination: Termination::Code(code),
                    });
                }
            }
            Step::ReadinessPassed { agent } => {
                if let Some(agent) = self.pick(agent) {
                    let run = self.lifecycle.agents[agent].run;
                    self.send(Event::ReadinessPassed { agent, run });
                }
            }
            Step::Liveness { agent, ok } => {
                if let Some(agent) = self.pick(agent) {
                    let run = self.lifecycle.agents[agent].run;
                    let result = if ok { Ok(()) } else { Err("refused".into()) };
                    self.send(Event::LivenessProbed { agent, run, result });
                }
            }
            Step::Heartbeat { agent, idle } => {
                if let Some(agent) = self.pick(agent) {
                    let run = self.lifecycle.agents[agent].run;
                    self.send(Event::HeartbeatReceived {
                        agent,
                        run,
                        payload: idle.then(|| crate::transport::HeartbeatPayload {
                            in_flight: Some(0),
                            ..Default::default()
                        }),
                    });
                }
            }
            Step::Wake { agent } => {
                if let Some(agent) = self.pick(agent) {
                    self.send(Event::WakeRequested {
                        agent,
                        by: "prop".into(),
                    });
                }
            }
            Step::Start { agent } => {
                if let Some(agent) = self.pick(agent) {
                    self.backoffs.clear();
                    self.send(Event::StartRequested {
                        agents: vec![agent],
                    });
                }
            }
            Step::Stop { agent } => {
                if let Some(agent) = self.pick(agent) {
                    self.send(Event::StopRequested {
                        agents: vec![agent],
                    });
                }
            }
            Step::Restart {
                agent,
                with_dependents,
            } => {
                if let Some(agent) = self.pick(agent) {
                    self.backoffs.clear();
                    self.send(Event::RestartRequested {
                        agents: vec![agent],
                        with_dependents,
                    });
                }
            }
            Step::Reload { agent, kind } => {
                if !self.lifecycle.shutting_down() {
                    self.reload(agent, kind);
                }
            }
            Step::Advance { millis } => self.advance(ms(millis)),
            Step::DeliverExits => self.deliver_exits(),
            Step::Shutdown { force } => self.send(Event::ShutdownRequested { force }),
        }
    }

    /// Shuts down and lets every grace run out: everything ends stopped or
    /// failed, and the run ends.
    fn finish(&mut self) {
        if self.finished {
            // Ended on its own: nothing runs, nothing is held.
            self.deliver_exits();
            for (agent, record) in self.lifecycle.agents.iter().enumerate() {
                assert!(
                    matches!(
                        record.state(),
                        AgentState::Stopped | AgentState::Failed | AgentState::Blocked
                    ),
                    "{} is {} after the run ended",
                    self.lifecycle.agent_name(agent),
                    record.state()
                );
            }
            assert!(self.processes.is_empty(), "processes outlived the run");
            return;
        }
        self.send(Event::ShutdownRequested { force: false });
        let longest = self
            .behaviour
            .values()
            .map(|plan| ms(plan.grace))
            .max()
            .unwrap_or_default();
        // Each wave of the reverse order may take a whole grace.
        for _ in 0..=self.lifecycle.agents.len() {
            self.advance(longest + ms(1));
        }
        for (agent, record) in self.lifecycle.agents.iter().enumerate() {
            assert!(
                record.state().is_final(),
                "{} is {} after the shutdown",
                self.lifecycle.agent_name(agent),
                record.state()
            );
        }
        assert!(self.finished, "the run did not end after the shutdown");
        assert!(self.processes.is_empty(), "processes outlived the shutdown");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_events_keep_the_invariants(
        plans in table(),
        strategy in prop_oneof![
            Just(Restarts::OneForOne),
            Just(Restarts::RestForOne),
            Just(Restarts::OneForAll)
        ],
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let mut world = World::new(plans, strategy);
        for step in steps {
            world.run(step);
        }
        world.finish();
    }
}
