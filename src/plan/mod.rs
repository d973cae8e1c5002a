//! Dependency graph of a [`Manifest`]: cycle detection, topological levels,
//! start order and critical path.
//!
//! Owns nothing at runtime: the supervisor asks a [`Plan`] who depends on
//! whom; the levels are how the order is shown and checked, never a barrier
//! (an agent starts the moment its own dependencies are ready).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::manifest::Manifest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// Each cycle is given in dependency order, first agent not repeated.
    #[error("dependency cycle: {}", .0.iter().map(|cycle| format_cycle(cycle)).collect::<Vec<_>>().join("; "))]
    Cycles(Vec<Vec<String>>),
}

/// `A -> B -> C -> A`.
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
}

/// The dependency graph with one node per distinct agent name (borrowed
/// from the manifest: `check` builds it for every agent).
struct Graph<'a> {
    graph: DiGraph<&'a str, ()>,
    index: HashMap<&'a str, NodeIndex>,
}

impl<'a> Graph<'a> {
    /// Edges go from an agent to each of its dependencies. Dependencies on
    /// undefined agents are left out (`check` reports them).
    fn new(manifest: &'a Manifest) -> Graph<'a> {
        let mut graph = DiGraph::new();
        let mut index = HashMap::with_capacity(manifest.agents.len());
        for agent in &manifest.agents {
            index
                .entry(agent.name.as_str())
                .or_insert_with(|| graph.add_node(agent.name.as_str()));
        }
        for agent in &manifest.agents {
            let from = index[agent.name.as_str()];
            for dependency in &agent.dependencies {
                if let Some(&to) = index.get(dependency.name.as_str())
                    && graph.find_edge(from, to).is_none()
                {
                    graph.add_edge(from, to, ());
                }
            }
        }
        Graph { graph, index }
    }

    /// Every cycle (strongly connected component with more than one agent, or
    /// a self-dependency), each as a path in dependency order.
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles: Vec<Vec<String>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|component| {
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some()
            })
            .map(|component| self.cycle_path(&component))
            .collect();
        cycles.sort();
        cycles
    }

    /// A closed walk through the component that starts at its smallest name
    /// and follows dependency edges; it visits each agent of a simple cycle
    /// once. For tangled components it names a shortest cycle through the
    /// start plus the rest of the component's members.
    fn cycle_path(&self, component: &[NodeIndex]) -> Vec<String> {
        let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|node| &self.graph[**node])
            .expect("a component is never empty");
        if component.len() == 1 {
            return vec![self.graph[start].to_string()];
        }
        // Breadth-first search for the shortest way back to `start`.
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(node) = queue.pop_front() {
            let mut neighbors: Vec<NodeIndex> = self
                .graph
                .neighbors(node)
                .filter(|next| members.contains(next))
                .collect();
            neighbors.sort_by_key(|next| &self.graph[*next]);
            for next in neighbors {
                if next == start {
                    last = Some(node);
                    break 'search;
                }
                if let std::collections::btree_map::Entry::Vacant(entry) = previous.entry(next) {
                    entry.insert(node);
                    queue.push_back(next);
                }
            }
        }
        let mut path = Vec::new();
        let mut node = last.expect("a strongly connected component leads back to its start");
        while node != start {
            path.push(self.graph[node].to_string());
            node = previous[&node];
        }
        path.push(self.graph[start].to_string());
        path.reverse();
        path
    }
}

/// Every dependency cycle in the manifest (empty when there is none).
pub fn find_cycles(manifest: &Manifest) -> Vec<Vec<String>> {
    Graph::new(manifest).cycles()
}

impl Plan {
    /// Plans the manifest's agents. Fails with every cycle when there is one.
    pub fn new(manifest: &Manifest) -> Result<Plan, PlanError> {
        let graph = Graph::new(manifest);
        let cycles = graph.cycles();
        if !cycles.is_empty() {
            return Err(PlanError::Cycles(cycles));
        }
        let mut dependencies: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in graph.index.keys() {
            dependencies.entry(name.to_string()).or_default();
            dependents.entry(name.to_string()).or_default();
        }
        for edge in graph.graph.raw_edges() {
            let from = graph.graph[edge.source()].to_string();
            let to = graph.graph[edge.target()].to_string();
            dependents
                .get_mut(&to)
                .expect("every node has an entry")
                .push(from.clone());
            dependencies
                .get_mut(&from)
                .expect("every node has an entry")
                .push(to);
        }
        for list in dependencies.values_mut().chain(dependents.values_mut()) {
            list.sort();
        }
        // Level of an agent = 1 + the highest level among its dependencies.
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        let mut remaining: Vec<&str> = dependencies.keys().map(String::as_str).collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|name| {
                let deps = &dependencies[*name];
                if deps.iter().all(|dep| level.contains_key(dep.as_str())) {
                    let own = deps
                        .iter()
                        .map(|dep| level[dep.as_str()] + 1)
                        .max()
                        .unwrap_or(0);
                    level.insert(name, own);
                    false
                } else {
                    true
                }
            });
            assert!(
                remaining.len() < before,
                "an acyclic graph always makes progress"
            );
        }
        let mut levels: Vec<Vec<String>> = Vec::new();
        for (name, &depth) in &level {
            if levels.len() <= depth {
                levels.resize(depth + 1, Vec::new());
            }
            levels[depth].push((*name).to_string());
        }
        Ok(Plan {
            levels,
            dependencies,
            dependents,
        })
    }

    /// All agents in a valid start order (level by level).
    pub fn order(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().flatten().map(String::as_str)
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
        let mut finish: BTreeMap<&str, (Duration, Option<&str>)> = BTreeMap::new();
        for name in self.order() {
            let (start, via) = self
                .dependencies(name)
                .iter()
                .map(|dep| (finish[dep.as_str()].0, Some(dep.as_str())))
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
