//! Dependency graph of a [`Manifest`]: cycle detection, topological levels,
//! start order and critical path.
//!
//! Owns nothing at runtime: the supervisor asks a [`Plan`] who depends on
//! whom; the levels are how the order is shown and checked, never a barrier
//! (an agent starts the moment its own dependencies are ready).

pub mod draw;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::manifest::Manifest;

/// Why a manifest has no complete plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Each cycle is given in dependency order, first agent not repeated.
    #[error("dependency cycle: {}", .0.iter().map(|cycle| format_cycle(cycle)).collect::<Vec<_>>().join("; "))]
    Cycles(Vec<Vec<String>>),
}

/// `A -> B -> C -> A`: the cycle in dependency order, its first agent
/// repeated at the end; empty for an empty cycle.
///
/// ```
/// use supervisor::plan::format_cycle;
///
/// let cycle = ["api".to_string(), "db".to_string()];
/// assert_eq!(format_cycle(&cycle), "api -> db -> api");
/// assert_eq!(format_cycle(&[]), "");
/// ```
pub fn format_cycle(cycle: &[String]) -> String {
    let mut text = cycle.join(" -> ");
    if let Some(first) = cycle.first() {
        text.push_str(" -> ");
        text.push_str(first);
    }
    text
}

/// The start order of a manifest's agents.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Topological levels: level 0 has no dependencies; every agent of level
    /// n depends on at least one agent of level n-1. Names sorted in a level.
    pub levels: Vec<Vec<String>>,
    /// Defined dependencies of each agent (unknown names left out).
    dependencies: BTreeMap<String, Vec<String>>,
    /// The reverse edges: who depends on each agent.
    dependents: BTreeMap<String, Vec<String>>,
    /// Every agent in the order `up` and `reload` start them (see
    /// [`start_order`]); agents in or behind a knot last, in table order.
    start_order: Vec<String>,
}

/// The dependency graph with one node per distinct agent name (borrowed
/// from the manifest: `check` builds it for every agent).
struct Graph<'a> {
    /// One node per distinct agent name, in the manifest's table order (first
    /// definition of a duplicated name); an edge from an agent to each of its
    /// defined dependencies.
    graph: DiGraph<&'a str, ()>,
    /// Agent name -> its node in `graph`.
    index: HashMap<&'a str, NodeIndex>,
}

impl<'a> Graph<'a> {
    /// Edges go from an agent to each of its dependencies. Dependencies on
    /// undefined agents are left out (`check` reports them).
    /// A dependency on an agent with `replicas` whose instances are in
    /// the manifest (`up`, `plan`) is an edge to each instance.
    fn new(manifest: &'a Manifest) -> Graph<'a> {
        let mut instances: HashMap<&str, Vec<&str>> = HashMap::new();
        for agent in &manifest.agents {
            if let Some(replica) = &agent.replica {
                instances
                    .entry(replica.of.as_str())
                    .or_default()
                    .push(agent.name.as_str());
            }
        }
        Graph::of(
            manifest
                .agents
                .iter()
                .map(|agent| {
                    let dependencies = agent.dependencies.iter().flat_map(|d| {
                        instances
                            .get(d.name.as_str())
                            .cloned()
                            .unwrap_or_else(|| vec![d.name.as_str()])
                    });
                    (agent.name.as_str(), dependencies.collect())
                })
                .collect(),
        )
    }

    /// The graph of `(agent, its dependencies)` pairs.
    fn of(agents: Vec<(&'a str, Vec<&'a str>)>) -> Graph<'a> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::with_capacity(agents.len());
        for (name, _) in &agents {
            index.entry(*name).or_insert_with(|| graph.add_node(*name));
        }
        for (name, dependencies) in &agents {
            let from = index[name];
            for dependency in dependencies {
                if let Some(&to) = index.get(dependency)
                    && graph.find_edge(from, to).is_none()
                {
                    graph.add_edge(from, to, ());
                }
            }
        }
        Graph { graph, index }
    }

    /// Every knot (strongly connected component with more than one agent,
    /// or a self-dependency), members sorted, knots sorted by first member.
    fn knots(&self) -> Vec<Knot> {
        let mut knots: Vec<Knot> = kosaraju_scc(&self.graph)
            .into_iter()
            .filter(|component| {
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some()
            })
            .map(|component| self.knot(component))
            .collect();
        knots.sort_by(|a, b| a.members.cmp(&b.members));
        knots
    }

    /// The [`Knot`] of one strongly connected component: members, its
    /// elementary cycles and the fewest edges that break them all.
    fn knot(&self, mut component: Vec<NodeIndex>) -> Knot {
        component.sort_by_key(|node| self.graph[*node]);
        let position: HashMap<NodeIndex, usize> = component
            .iter()
            .enumerate()
            .map(|(position, node)| (*node, position))
            .collect();
        // Adjacency inside the knot, by position, neighbours in name order.
        let adjacency: Vec<Vec<usize>> = component
            .iter()
            .map(|node| {
                let mut next: Vec<usize> = self
                    .graph
                    .neighbors(*node)
                    .filter_map(|next| position.get(&next).copied())
                    .collect();
                next.sort_unstable();
                next.dedup();
                next
            })
            .collect();
        let found = elementary_cycles(&adjacency);
        let name = |position: usize| self.graph[component[position]].to_string();
        let (break_edges, breaks_all) = fewest_edges_to_break(&adjacency, &found.cycles);
        let break_edges = break_edges
            .into_iter()
            .map(|(from, to)| (name(from), name(to)))
            .collect();
        Knot {
            members: component
                .iter()
                .map(|node| self.graph[*node].to_string())
                .collect(),
            cycles: found
                .cycles
                .iter()
                .take(MAX_LISTED_CYCLES)
                .map(|cycle| cycle.iter().map(|position| name(*position)).collect())
                .collect(),
            count: found.cycles.len(),
            counted_all: found.complete,
            break_edges,
            breaks_all,
        }
    }
}

/// Cycles of one knot listed in full; past this the knot is reported as
/// its members and the count.
pub const MAX_LISTED_CYCLES: usize = 50;
/// Cycles counted in one knot before counting stops ("more than").
const MAX_COUNTED_CYCLES: usize = 1000;
/// Steps of the cycle search in one knot before it stops (bounded time on
/// hostile graphs; the count then reads "at least").
const MAX_SEARCH_STEPS: usize = 2_000_000;

/// A strongly connected part of the dependency graph: its agents can never
/// start, because each waits (through the others) for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knot {
    /// Sorted by name.
    pub members: Vec<String>,
    /// Elementary cycles (each agent once, in dependency order, starting at
    /// its smallest name), at most [`MAX_LISTED_CYCLES`], in search order.
    pub cycles: Vec<Vec<String>>,
    /// How many elementary cycles were found (all of them if `counted_all`).
    pub count: usize,
    /// False when counting stopped at a limit (1,000 cycles, or the search
    /// step bound): `count` then reads "at least".
    pub counted_all: bool,
    /// The fewest dependency edges (`from` depends on `to`) whose removal
    /// leaves the knot without a cycle (exact for small knots, greedy for
    /// large ones).
    pub break_edges: Vec<(String, String)>,
    /// Whether removing `break_edges` really leaves no cycle (`false` when
    /// a hostile knot needed more than the search allows).
    pub breaks_all: bool,
}

/// What [`elementary_cycles`] found.
struct FoundCycles {
    /// Each cycle as vertex positions, starting at its smallest.
    cycles: Vec<Vec<usize>>,
    /// False when a bound stopped the search early.
    complete: bool,
}

/// Johnson's algorithm over one knot (vertices `0..n`, `adjacency[v]` the
/// vertices `v` depends on): every elementary cycle, each starting at its
/// smallest vertex. Each round searches from the least vertex that still
/// lies on a cycle among the vertices not yet used as a start, within its
/// strongly connected component there, so a 50,000-agent ring costs one
/// round, not 50,000. Iterative (no deep recursion), and bounded by
/// [`MAX_COUNTED_CYCLES`] and [`MAX_SEARCH_STEPS`].
fn elementary_cycles(adjacency: &[Vec<usize>]) -> FoundCycles {
    let n = adjacency.len();
    let mut cycles = Vec::new();
    let mut steps = 0usize;
    let mut blocked = vec![false; n];
    let mut blocked_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut in_component = vec![false; n];
    let mut from = 0;
    while from < n {
        steps += n;
        let Some((start, members)) = least_strong_component(adjacency, from) else {
            break;
        };
        for &vertex in &members {
            in_component[vertex] = true;
            blocked[vertex] = false;
            blocked_by[vertex].clear();
        }
        let mut path: Vec<usize> = vec![start];
        // (vertex, next neighbour index, found a cycle below)
        let mut frames: Vec<(usize, usize, bool)> = vec![(start, 0, false)];
        blocked[start] = true;
        while let Some(frame) = frames.last_mut() {
            steps += 1;
            if steps > MAX_SEARCH_STEPS || cycles.len() >= MAX_COUNTED_CYCLES {
                return FoundCycles {
                    cycles,
                    complete: false,
                };
            }
            let (vertex, index, _) = *frame;
            if let Some(&next) = adjacency[vertex].get(index) {
                frame.1 += 1;
                if !in_component[next] {
                    continue;
                }
                if next == start {
                    cycles.push(path.clone());
                    frame.2 = true;
                } else if !blocked[next] {
                    blocked[next] = true;
                    path.push(next);
                    frames.push((next, 0, false));
                }
                continue;
            }
            let (vertex, _, found) = frames.pop().expect("a frame is on top");
            path.pop();
            if found {
                unblock(vertex, &mut blocked, &mut blocked_by);
            } else {
                for &next in adjacency[vertex].iter().filter(|next| in_component[**next]) {
                    if !blocked_by[next].contains(&vertex) {
                        blocked_by[next].push(vertex);
                    }
                }
            }
            if let Some(parent) = frames.last_mut() {
                parent.2 |= found;
            }
        }
        for &vertex in &members {
            in_component[vertex] = false;
        }
        from = start + 1;
    }
    FoundCycles {
        cycles,
        complete: true,
    }
}

/// Among the vertices `>= from`, the strongly connected components of the
/// graph they induce; returns the one with a cycle whose least vertex is
/// smallest, as (that vertex, its members). Iterative Tarjan.
fn least_strong_component(adjacency: &[Vec<usize>], from: usize) -> Option<(usize, Vec<usize>)> {
    /// `index` of a vertex the search has not reached yet.
    const UNSEEN: usize = usize::MAX;
    let n = adjacency.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_index = 0usize;
    let mut best: Option<(usize, Vec<usize>)> = None;
    for root in from..n {
        if index[root] != UNSEEN {
            continue;
        }
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        let mut frames: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&(vertex, position)) = frames.last() {
            if let Some(&next) = adjacency[vertex].get(position) {
                if let Some(frame) = frames.last_mut() {
                    frame.1 += 1;
                }
                if next < from {
                    continue;
                }
                if index[next] == UNSEEN {
                    index[next] = next_index;
                    low[next] = next_index;
                    next_index += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    frames.push((next, 0));
                } else if on_stack[next] {
                    low[vertex] = low[vertex].min(index[next]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[vertex]);
            }
            if low[vertex] != index[vertex] {
                continue;
            }
            let mut members = Vec::new();
            loop {
                let member = stack
                    .pop()
                    .expect("the component's vertices are on the stack");
                on_stack[member] = false;
                members.push(member);
                if member == vertex {
                    break;
                }
            }
            let cyclic = members.len() > 1 || adjacency[vertex].contains(&vertex);
            let least = members.iter().copied().min().unwrap_or(vertex);
            if cyclic && best.as_ref().is_none_or(|(smallest, _)| least < *smallest) {
                best = Some((least, members));
            }
        }
    }
    best
}

/// Johnson's UNBLOCK, with a work list instead of recursion: unblocks
/// `vertex` and, transitively, every vertex blocked because of it.
fn unblock(vertex: usize, blocked: &mut [bool], blocked_by: &mut [Vec<usize>]) {
    let mut work = vec![vertex];
    while let Some(vertex) = work.pop() {
        if !blocked[vertex] {
            continue;
        }
        blocked[vertex] = false;
        work.append(&mut blocked_by[vertex]);
    }
}

/// Whether the knot still has a cycle once `removed` edges are gone.
fn has_cycle(adjacency: &[Vec<usize>], removed: &[(usize, usize)]) -> bool {
    // Kahn: a cycle leaves vertices with dependencies never placed.
    let n = adjacency.len();
    let mut waiting = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, nexts) in adjacency.iter().enumerate() {
        for &to in nexts {
            if !removed.contains(&(from, to)) {
                waiting[from] += 1;
                dependents[to].push(from);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|vertex| waiting[*vertex] == 0).collect();
    let mut placed = 0;
    while let Some(vertex) = ready.pop() {
        placed += 1;
        for &dependent in &dependents[vertex] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    placed < n
}

/// The fewest edges that break every cycle: exact (smallest set hitting every
/// cycle) when all cycles were found and few edges take part; otherwise
/// greedy (the edge in most cycles first), topped up until no cycle is left.
fn fewest_edges_to_break(
    adjacency: &[Vec<usize>],
    cycles: &[Vec<usize>],
) -> (Vec<(usize, usize)>, bool) {
    let cycle_edges: Vec<Vec<(usize, usize)>> = cycles
        .iter()
        .map(|cycle| {
            (0..cycle.len())
                .map(|index| (cycle[index], cycle[(index + 1) % cycle.len()]))
                .collect()
        })
        .collect();
    let mut candidates: Vec<(usize, usize)> = cycle_edges.iter().flatten().copied().collect();
    candidates.sort_unstable();
    candidates.dedup();
    let hits_all = |chosen: &[(usize, usize)]| {
        cycle_edges
            .iter()
            .all(|edges| edges.iter().any(|edge| chosen.contains(edge)))
    };
    // Exact search over small sets: sizes 1..=3 among at most 40 edges.
    if candidates.len() <= 40 {
        for size in 1..=3.min(candidates.len()) {
            let mut indices: Vec<usize> = (0..size).collect();
            loop {
                let chosen: Vec<(usize, usize)> =
                    indices.iter().map(|index| candidates[*index]).collect();
                if hits_all(&chosen) && !has_cycle(adjacency, &chosen) {
                    return (chosen, true);
                }
                // Next combination in lexicographic order.
                let mut position = size;
                while position > 0
                    && indices[position - 1] == candidates.len() - size + position - 1
                {
                    position -= 1;
                }
                if position == 0 {
                    break;
                }
                indices[position - 1] += 1;
                for next in position..size {
                    indices[next] = indices[next - 1] + 1;
                }
            }
        }
    }
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    let mut open: Vec<&Vec<(usize, usize)>> = cycle_edges.iter().collect();
    while !open.is_empty() {
        let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
        for edges in &open {
            for edge in edges.iter() {
                *counts.entry(*edge).or_default() += 1;
            }
        }
        let best = counts
            .into_iter()
            .max_by_key(|(edge, count)| (*count, std::cmp::Reverse(*edge)))
            .map(|(edge, _)| edge)
            .expect("an open cycle has edges");
        chosen.push(best);
        open.retain(|edges| !edges.contains(&best));
    }
    // Cycles past the counting bound: remove an edge of each remaining one
    // (bounded: a hostile knot gets a partial answer, not a hang).
    let mut breaks_all = false;
    for _ in 0..=MAX_TOP_UP_EDGES {
        let removed: std::collections::HashSet<(usize, usize)> = chosen.iter().copied().collect();
        match remaining_cycle_edge(adjacency, &removed) {
            Some(edge) => chosen.push(edge),
            None => {
                breaks_all = true;
                break;
            }
        }
    }
    chosen.sort_unstable();
    (chosen, breaks_all)
}

/// Edges added one by one after the greedy choice before giving up.
const MAX_TOP_UP_EDGES: usize = 200;

/// An edge of some cycle left after `removed` (the edge back into a vertex
/// that a depth-first search finds on its own path).
fn remaining_cycle_edge(
    adjacency: &[Vec<usize>],
    removed: &std::collections::HashSet<(usize, usize)>,
) -> Option<(usize, usize)> {
    let n = adjacency.len();
    // 0 unvisited, 1 on the path, 2 done.
    let mut state = vec![0u8; n];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut frames = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(frame) = frames.last_mut() {
            let (vertex, index) = *frame;
            match adjacency[vertex].get(index) {
                Some(&next) => {
                    frame.1 += 1;
                    if removed.contains(&(vertex, next)) {
                        continue;
                    }
                    match state[next] {
                        0 => {
                            state[next] = 1;
                            frames.push((next, 0));
                        }
                        1 => return Some((vertex, next)),
                        _ => {}
                    }
                }
                None => {
                    state[vertex] = 2;
                    frames.pop();
                }
            }
        }
    }
    None
}

/// Every knot of the manifest's dependency graph, with its elementary
/// cycles (empty when there is none).
pub fn find_knots(manifest: &Manifest) -> Vec<Knot> {
    Graph::new(manifest).knots()
}

/// Every listed elementary dependency cycle in the manifest, knot by knot
/// (empty when there is none).
pub fn find_cycles(manifest: &Manifest) -> Vec<Vec<String>> {
    find_knots(manifest)
        .into_iter()
        .flat_map(|knot| knot.cycles)
        .collect()
}

/// A plan of everything that can start, beside the knots that cannot.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Levels of the agents outside the knots that do not wait on one.
    pub plan: Plan,
    /// The dependency cycles, one knot per strongly connected part, sorted
    /// by first member.
    pub knots: Vec<Knot>,
    /// Agents outside the knots that depend (transitively) on one, sorted.
    pub blocked: Vec<String>,
}

impl Plan {
    /// Plans the manifest's agents; dependencies on undefined agents are left
    /// out (`check` reports them).
    ///
    /// # Errors
    ///
    /// [`PlanError::Cycles`] with every listed cycle of every knot when the
    /// dependencies have one; [`Plan::around_knots`] plans around them instead.
    pub fn new(manifest: &Manifest) -> Result<Plan, PlanError> {
        let planned = Plan::around_knots(manifest);
        if planned.knots.is_empty() {
            Ok(planned.plan)
        } else {
            Err(PlanError::Cycles(
                planned
                    .knots
                    .into_iter()
                    .flat_map(|knot| knot.cycles)
                    .collect(),
            ))
        }
    }

    /// Plans what can be planned: the levels of every agent that neither
    /// sits in a knot nor waits on one, the knots, and the agents that wait
    /// on a knot. Linear in agents and dependencies (Kahn's algorithm).
    pub fn around_knots(manifest: &Manifest) -> Planned {
        Plan::around_knots_of(Graph::new(manifest))
    }

    /// [`Plan::around_knots`] of `(agent, its dependencies)` pairs, as a
    /// running supervisor's status lists them (the dashboard's graph).
    pub fn around_knots_of_edges(agents: &[(String, Vec<String>)]) -> Planned {
        Plan::around_knots_of(Graph::of(
            agents
                .iter()
                .map(|(name, dependencies)| {
                    (
                        name.as_str(),
                        dependencies.iter().map(String::as_str).collect(),
                    )
                })
                .collect(),
        ))
    }

    /// The work of [`Plan::around_knots`] over a built graph: finds the knots,
    /// fills the dependency and dependent lists (sorted), assigns levels with
    /// Kahn's algorithm (level = 1 + the highest level among the agent's
    /// dependencies, 0 without any), lists as `blocked` the agents that never
    /// get a level and are not in a knot, and computes the start order. Agents
    /// in a knot are in neither `levels` nor `blocked`.
    fn around_knots_of(graph: Graph<'_>) -> Planned {
        let knots = graph.knots();
        let count = graph.graph.node_count();
        let mut dependencies: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in graph.index.keys() {
            dependencies.insert(name.to_string(), Vec::new());
            dependents.insert(name.to_string(), Vec::new());
        }
        let mut waiting = vec![0usize; count];
        for edge in graph.graph.raw_edges() {
            let from = graph.graph[edge.source()];
            let to = graph.graph[edge.target()];
            waiting[edge.source().index()] += 1;
            if let Some(list) = dependents.get_mut(to) {
                list.push(from.to_string());
            }
            if let Some(list) = dependencies.get_mut(from) {
                list.push(to.to_string());
            }
        }
        for list in dependencies.values_mut().chain(dependents.values_mut()) {
            list.sort();
        }
        // Level of an agent = 1 + the highest level among its dependencies.
        let mut level: Vec<Option<usize>> = vec![None; count];
        let mut ready: Vec<NodeIndex> = graph
            .graph
            .node_indices()
            .filter(|node| waiting[node.index()] == 0)
            .collect();
        while let Some(node) = ready.pop() {
            let own = graph
                .graph
                .neighbors(node)
                .filter_map(|dependency| level[dependency.index()])
                .map(|depth| depth + 1)
                .max()
                .unwrap_or(0);
            level[node.index()] = Some(own);
            for dependent in graph
                .graph
                .neighbors_directed(node, petgraph::Direction::Incoming)
            {
                waiting[dependent.index()] -= 1;
                if waiting[dependent.index()] == 0 {
                    ready.push(dependent);
                }
            }
        }
        let mut levels: Vec<Vec<String>> = Vec::new();
        let in_knot: BTreeSet<&str> = knots
            .iter()
            .flat_map(|knot| knot.members.iter().map(String::as_str))
            .collect();
        let mut blocked = Vec::new();
        for node in graph.graph.node_indices() {
            let name = graph.graph[node];
            match level[node.index()] {
                Some(depth) => {
                    if levels.len() <= depth {
                        levels.resize(depth + 1, Vec::new());
                    }
                    levels[depth].push(name.to_string());
                }
                None if !in_knot.contains(name) => blocked.push(name.to_string()),
                None => {}
            }
        }
        for level in &mut levels {
            level.sort();
        }
        blocked.sort();
        // Node indices follow the manifest's table order (first entry of a name).
        let edges: Vec<Vec<usize>> = graph
            .graph
            .node_indices()
            .map(|node| {
                graph
                    .graph
                    .neighbors(node)
                    .map(|dependency| dependency.index())
                    .collect()
            })
            .collect();
        let start_order = start_order(&edges)
            .into_iter()
            .map(|node| graph.graph[NodeIndex::new(node)].to_string())
            .collect();
        Planned {
            plan: Plan {
                levels,
                dependencies,
                dependents,
                start_order,
            },
            knots,
            blocked,
        }
    }

    /// All agents in a valid start order (level by level).
    pub fn order(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().flatten().map(String::as_str)
    }

    /// Every agent in the order the supervisor starts them when several can
    /// start at once (and stops them, reversed): [`start_order`] over the
    /// manifest's table order.
    pub fn start_order(&self) -> impl Iterator<Item = &str> {
        self.start_order.iter().map(String::as_str)
    }

    /// The defined dependencies of `name` (empty for unknown names).
    pub fn dependencies(&self, name: &str) -> &[String] {
        self.dependencies
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The agents that depend directly on `name`.
    pub fn dependents(&self, name: &str) -> &[String] {
        self.dependents.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `name` and everything that depends on it, transitively, in start order.
    pub fn with_dependents(&self, name: &str) -> Vec<String> {
        let mut found = BTreeSet::from([name.to_string()]);
        let mut stack = vec![name.to_string()];
        while let Some(next) = stack.pop() {
            for dependent in self.dependents(&next) {
                if found.insert(dependent.clone()) {
                    stack.push(dependent.clone());
                }
            }
        }
        self.order()
            .filter(|agent| found.contains(*agent))
            .map(str::to_string)
            .collect()
    }

    /// The longest chain of dependencies, weighting each agent by `estimate`
    /// (its expected time to become ready), with the chain's total length.
    /// Returned from the first agent to start to the last.
    pub fn critical_path(&self, estimate: impl Fn(&str) -> Duration) -> (Vec<String>, Duration) {
        self.critical_path_without(|_| false, estimate)
    }

    /// [`Plan::critical_path`] as if the `skipped` agents (disabled ones)
    /// were not there: they are not started, and whoever depends on them
    /// starts without waiting for them.
    pub fn critical_path_without(
        &self,
        skipped: impl Fn(&str) -> bool,
        estimate: impl Fn(&str) -> Duration,
    ) -> (Vec<String>, Duration) {
        let mut finish: BTreeMap<&str, (Duration, Option<&str>)> = BTreeMap::new();
        for name in self.order().filter(|name| !skipped(name)) {
            let (start, via) = self
                .dependencies(name)
                .iter()
                .filter_map(|dep| {
                    finish
                        .get(dep.as_str())
                        .map(|(time, _)| (*time, Some(dep.as_str())))
                })
                .max_by_key(|(time, _)| *time)
                .unwrap_or((Duration::ZERO, None));
            finish.insert(name, (start + estimate(name), via));
        }
        let Some((&last, &(total, _))) = finish.iter().max_by_key(|(_, (time, _))| *time) else {
            return (Vec::new(), Duration::ZERO);
        };
        let mut path = vec![last.to_string()];
        let mut node = last;
        while let Some(via) = finish[node].1 {
            path.push(via.to_string());
            node = via;
        }
        path.reverse();
        (path, total)
    }
}

/// The start order of a table of agents (`dependencies[agent]` lists the
/// indices `agent` depends on): the order of passes over the table, each pass
/// taking in table order every agent whose dependencies were all taken before
/// (in an earlier pass or earlier in this one). Dependencies come first, ties
/// keep table order, and an agent listed before what it depends on moves one
/// pass later. Agents in a cycle, or waiting on one, come last in table
/// order (`check` refuses cycles before anything starts).
///
/// The one owner of this order: [`Plan::start_order`] and the supervisor's
/// lifecycle (which keeps retired agents in its table) both call it. Linear
/// in agents and edges: an agent's pass is the largest over its dependencies
/// of their pass, plus one for a dependency listed after it, found in
/// topological order, rather than by running the passes.
///
/// ```
/// use supervisor::plan::start_order;
///
/// // 0 depends on 1 (listed after it), 2 depends on nothing,
/// // 3 and 4 depend on each other (a cycle).
/// let table = [vec![1], vec![], vec![], vec![4], vec![3]];
/// assert_eq!(start_order(&table), [1, 2, 0, 3, 4]);
/// ```
pub fn start_order(dependencies: &[Vec<usize>]) -> Vec<usize> {
    let count = dependencies.len();
    let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (agent, list) in dependencies.iter().enumerate() {
        for dependency in list {
            dependents[*dependency].push(agent);
        }
    }
    let mut pass: Vec<Option<usize>> = vec![None; count];
    let mut ready: Vec<usize> = (0..count).filter(|agent| waiting[*agent] == 0).collect();
    while let Some(agent) = ready.pop() {
        let own = dependencies[agent]
            .iter()
            .filter_map(|dependency| {
                pass[*dependency].map(|of| of + usize::from(*dependency > agent))
            })
            .max()
            .unwrap_or(0);
        pass[agent] = Some(own);
        for dependent in &dependents[agent] {
            waiting[*dependent] -= 1;
            if waiting[*dependent] == 0 {
                ready.push(*dependent);
            }
        }
    }
    let mut order: Vec<usize> = (0..count).filter(|agent| pass[*agent].is_some()).collect();
    order.sort_by_key(|agent| (pass[*agent], *agent));
    order.extend((0..count).filter(|agent| pass[*agent].is_none()));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::manifest_from_edges;

    #[test]
    fn levels_follow_dependencies() {
        let manifest = manifest_from_edges(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &[]),
        ]);
        let plan = Plan::new(&manifest).unwrap();
        assert_eq!(plan.levels, vec![vec!["a", "e"], vec!["b", "c"], vec!["d"]]);
        assert_eq!(plan.dependents("a"), ["b", "c"]);
        assert_eq!(plan.with_dependents("b"), ["b", "d"]);
    }

    /// The passes [`start_order`] stands for, run as written (quadratic).
    fn start_order_by_passes(dependencies: &[Vec<usize>]) -> Vec<usize> {
        let mut placed = vec![false; dependencies.len()];
        let mut order = Vec::new();
        loop {
            let before = order.len();
            for (agent, list) in dependencies.iter().enumerate() {
                if !placed[agent] && list.iter().all(|dependency| placed[*dependency]) {
                    placed[agent] = true;
                    order.push(agent);
                }
            }
            if order.len() == before {
                break;
            }
        }
        order.extend((0..dependencies.len()).filter(|agent| !placed[*agent]));
        order
    }

    #[test]
    fn start_order_takes_passes_over_the_table_dependencies_first() {
        // db, api <- db, free: api follows db in the same pass.
        assert_eq!(start_order(&[vec![], vec![0], vec![]]), [0, 1, 2]);
        // ui <- api <- db written backwards: one pass each.
        assert_eq!(start_order(&[vec![1], vec![2], vec![]]), [2, 1, 0]);
        // A cycle (1 <-> 2) and what waits on it (3) come last, in table order.
        assert_eq!(
            start_order(&[vec![], vec![2], vec![1], vec![1], vec![0]]),
            [0, 4, 1, 2, 3]
        );
        let manifest = manifest_from_edges(&[("ui", &["api"]), ("db", &[]), ("api", &["db"])]);
        let plan = Plan::new(&manifest).unwrap();
        assert_eq!(plan.start_order().collect::<Vec<_>>(), ["db", "api", "ui"]);
    }

    proptest::proptest! {
        #[test]
        fn start_order_is_the_order_of_the_passes(
            edges in proptest::collection::vec(proptest::collection::vec(0usize..12, 0..4), 1..12)
        ) {
            let count = edges.len();
            let dependencies: Vec<Vec<usize>> = edges
                .into_iter()
                .map(|list| {
                    let mut list: Vec<usize> = list.into_iter().map(|to| to % count).collect();
                    list.sort_unstable();
                    list.dedup();
                    list
                })
                .collect();
            proptest::prop_assert_eq!(start_order(&dependencies), start_order_by_passes(&dependencies));
        }
    }

    #[test]
    fn cycles_of_every_length_are_found_in_order() {
        let manifest = manifest_from_edges(&[
            ("self", &["self"]),
            ("x", &["y"]),
            ("y", &["x"]),
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["d"]),
            ("d", &["a"]),
            ("free", &["a"]),
        ]);
        let cycles = find_cycles(&manifest);
        assert_eq!(
            cycles,
            vec![vec!["a", "b", "c", "d"], vec!["self"], vec!["x", "y"]]
        );
        assert_eq!(format_cycle(&cycles[0]), "a -> b -> c -> d -> a");
        assert!(matches!(Plan::new(&manifest), Err(PlanError::Cycles(found)) if found.len() == 3));
    }

    #[test]
    fn every_elementary_cycle_of_a_knot_is_listed() {
        // A knot of five where a shortest-cycle report named only three.
        let manifest = manifest_from_edges(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "d"]),
            ("d", &["e"]),
            ("e", &["b"]),
        ]);
        let knots = find_knots(&manifest);
        assert_eq!(knots.len(), 1);
        assert_eq!(knots[0].members, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            knots[0].cycles,
            vec![vec!["a", "b", "c"], vec!["b", "c", "d", "e"]]
        );
        assert_eq!((knots[0].count, knots[0].counted_all), (2, true));
        assert_eq!(knots[0].break_edges, [("b".to_string(), "c".to_string())]);
    }

    #[test]
    fn levels_outside_the_knots_are_still_planned() {
        let manifest = manifest_from_edges(&[
            ("base", &[]),
            ("x", &["y", "base"]),
            ("y", &["x"]),
            ("after", &["x"]),
            ("free", &["base"]),
        ]);
        let planned = Plan::around_knots(&manifest);
        assert_eq!(planned.plan.levels, vec![vec!["base"], vec!["free"]]);
        assert_eq!(planned.knots.len(), 1);
        assert_eq!(planned.knots[0].members, ["x", "y"]);
        assert_eq!(planned.blocked, ["after"]);
    }

    #[test]
    fn a_fifty_thousand_deep_chain_plans_in_linear_time() {
        let mut text = String::from("version: 1\nagents:\n");
        for index in 0..50_000 {
            text.push_str(&format!("  - name: a{index}\n    command: [\"true\"]\n"));
            if index > 0 {
                text.push_str(&format!("    dependencies: [a{}]\n", index - 1));
            }
        }
        let manifest = crate::manifest::load_str(
            std::path::Path::new("chain.yaml"),
            &text,
            &crate::manifest::LoadOptions {
                environment: Some(HashMap::new()),
                ..Default::default()
            },
        )
        .unwrap()
        .manifest;
        let started = std::time::Instant::now();
        let plan = Plan::new(&manifest).unwrap();
        assert_eq!(plan.levels.len(), 50_000);
        let (path, _) = plan.critical_path(|_| Duration::from_secs(1));
        assert_eq!(path.len(), 50_000);
        // Quadratic work would take minutes in a debug build.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_fifty_thousand_agent_ring_is_one_knot_without_deep_recursion() {
        let edges: Vec<(String, Vec<String>)> = (0..50_000)
            .map(|index| {
                (
                    format!("a{index}"),
                    vec![format!("a{}", (index + 1) % 50_000)],
                )
            })
            .collect();
        let borrowed: Vec<(&str, Vec<&str>)> = edges
            .iter()
            .map(|(name, deps)| (name.as_str(), deps.iter().map(String::as_str).collect()))
            .collect();
        let slices: Vec<(&str, &[&str])> = borrowed
            .iter()
            .map(|(name, deps)| (*name, deps.as_slice()))
            .collect();
        let manifest = manifest_from_edges(&slices);
        let knots = find_knots(&manifest);
        assert_eq!(knots.len(), 1);
        assert_eq!(knots[0].count, 1);
        assert_eq!(knots[0].cycles[0].len(), 50_000);
        assert_eq!(knots[0].break_edges.len(), 1);
    }

    #[test]
    fn unknown_dependencies_are_left_out_of_the_graph() {
        let manifest = manifest_from_edges(&[("a", &["ghost"])]);
        let plan = Plan::new(&manifest).unwrap();
        assert_eq!(plan.levels, vec![vec!["a"]]);
    }

    #[test]
    fn critical_path_is_the_longest_weighted_chain() {
        let manifest = manifest_from_edges(&[
            ("a", &[]),
            ("b", &["a"]),
            ("slow", &[]),
            ("c", &["b", "slow"]),
        ]);
        let plan = Plan::new(&manifest).unwrap();
        let weight = |name: &str| Duration::from_secs(if name == "slow" { 10 } else { 1 });
        let (path, total) = plan.critical_path(weight);
        assert_eq!(path, ["slow", "c"]);
        assert_eq!(total, Duration::from_secs(11));
    }
}
