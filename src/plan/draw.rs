//! Pictures of a plan, drawn by the project itself (no Graphviz): SVG for
//! `plan --format svg` and the dashboard's live graph, Mermaid for
//! `plan --format mermaid` (Markdown pages render it).
//!
//! The picture: one box per agent, one arrow per dependency (from an agent
//! to the agent it depends on, as in `--format dot`), rows by plan level
//! (level 0 on top; a level wider than [`ROW_WIDTH`] boxes wraps onto more
//! rows), boxes in a row ordered to cross fewer arrows (barycenter sweeps),
//! the critical path in a heavier orange line. Agents in a dependency knot
//! or blocked behind one go on a last row of their own, so every agent is
//! drawn.
//!
//! SVG hooks for the dashboard: every box is `<g class="node"
//! data-agent="NAME">`, every arrow `<path class="edge" data-from="AGENT"
//! data-to="DEPENDENCY">`, both with the class `critical` on the critical
//! path; the page colours boxes by adding `state-<state>` classes.
//!
//! Owns layout and rendering only; levels, dependencies and the critical
//! path come from [`super::Plan`].

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use super::Planned;

/// Boxes in one row at most; a wider level wraps.
pub const ROW_WIDTH: usize = 12;

/// Height of every box, in SVG user units (pixels at scale 1).
const BOX_HEIGHT: f64 = 30.0;
/// Vertical space between two rows of boxes, where the arrows run.
const ROW_GAP: f64 = 60.0;
/// Horizontal space between two boxes of one row.
const BOX_GAP: f64 = 24.0;
/// Empty border around the whole picture, on every side.
const MARGIN: f64 = 20.0;
/// Room on the left for the `level N` labels.
const LABEL_WIDTH: f64 = 64.0;
/// Approximate width of one character of the 12px sans-serif label.
const CHAR_WIDTH: f64 = 7.2;

/// One box, placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The agent's name, as written in the manifest (also the box's label).
    pub name: String,
    /// Plan level; `None` for agents in or behind a knot.
    pub level: Option<usize>,
    /// Left edge of the box, in SVG user units from the picture's left.
    pub x: f64,
    /// Top edge of the box, in SVG user units from the picture's top.
    pub y: f64,
    /// Box width: grows with the name's length, at least 60.
    pub width: f64,
    /// On the critical path: drawn with the heavier orange outline and the
    /// `critical` class.
    pub critical: bool,
}

/// One arrow: `from` depends on `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The dependent agent (the arrow starts at its box).
    pub from: String,
    /// The dependency (the arrow points at its box).
    pub to: String,
    /// Both ends are consecutive on the critical path.
    pub critical: bool,
}

/// Every agent and dependency, placed.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// One per agent of the plan, knot members included, in row order.
    pub nodes: Vec<Node>,
    /// One per dependency between two drawn agents.
    pub edges: Vec<Edge>,
    /// `(y, text)` of each level's label, on its first row.
    pub labels: Vec<(f64, String)>,
    /// Width of the whole picture (the SVG `width` and `viewBox`).
    pub width: f64,
    /// Height of the whole picture.
    pub height: f64,
}

impl Layout {
    /// Places `planned`'s agents; `critical` is the critical path, first to
    /// start first (as `Plan::critical_path` returns it).
    pub fn new(planned: &Planned, critical: &[String]) -> Layout {
        let plan = &planned.plan;
        let on_path: BTreeSet<&str> = critical.iter().map(String::as_str).collect();
        let critical_edges: BTreeSet<(&str, &str)> = critical
            .windows(2)
            .map(|pair| (pair[1].as_str(), pair[0].as_str()))
            .collect();
        // Rows of (name, level); the knot row last.
        let mut levels: Vec<(Option<usize>, Vec<String>)> = plan
            .levels
            .iter()
            .enumerate()
            .map(|(index, names)| (Some(index), names.clone()))
            .collect();
        let stuck: Vec<String> = planned
            .knots
            .iter()
            .flat_map(|knot| knot.members.iter().cloned())
            .chain(planned.blocked.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !stuck.is_empty() {
            levels.push((None, stuck));
        }
        // The plan lists every edge between defined agents, knots included.
        let all: Vec<String> = levels.iter().flat_map(|(_, names)| names.clone()).collect();
        let mut edges = Vec::new();
        let drawn: BTreeSet<&str> = all.iter().map(String::as_str).collect();
        for name in &all {
            for target in plan.dependencies(name) {
                if drawn.contains(target.as_str()) {
                    let critical = critical_edges.contains(&(name.as_str(), target.as_str()));
                    edges.push(Edge {
                        from: name.clone(),
                        to: target.clone(),
                        critical,
                    });
                }
            }
        }
        let rows = order_rows(&levels, &edges);
        let mut nodes = Vec::with_capacity(all.len());
        let mut labels = Vec::new();
        let row_widths: Vec<f64> = rows
            .iter()
            .map(|(_, _, names)| {
                names.iter().map(|name| box_width(name)).sum::<f64>()
                    + BOX_GAP * names.len().saturating_sub(1) as f64
            })
            .collect();
        let widest = row_widths.iter().copied().fold(0.0, f64::max);
        for (row, ((level, first, names), row_width)) in rows.iter().zip(&row_widths).enumerate() {
            let y = MARGIN + row as f64 * (BOX_HEIGHT + ROW_GAP);
            if *first {
                labels.push((
                    y + BOX_HEIGHT / 2.0,
                    match level {
                        Some(level) => format!("level {level}"),
                        None => "cannot start".to_string(),
                    },
                ));
            }
            let mut x = MARGIN + LABEL_WIDTH + (widest - row_width) / 2.0;
            for name in names {
                let width = box_width(name);
                nodes.push(Node {
                    name: name.clone(),
                    level: *level,
                    x,
                    y,
                    width,
                    critical: on_path.contains(name.as_str()),
                });
                x += width + BOX_GAP;
            }
        }
        Layout {
            nodes,
            edges,
            labels,
            width: 2.0 * MARGIN + LABEL_WIDTH + widest,
            height: 2.0 * MARGIN + rows.len() as f64 * (BOX_HEIGHT + ROW_GAP) - ROW_GAP,
        }
    }

    /// The picture as a standalone SVG document: its own `<style>` (so it
    /// needs no stylesheet), the `level N` labels, the arrows (drawn first, so
    /// boxes cover their ends) and the boxes, every name escaped. Sized by
    /// [`Layout::width`] and [`Layout::height`] (at least one box high).
    pub fn svg(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="plan" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">"#,
            w = self.width,
            h = self.height.max(BOX_HEIGHT)
        );
        out.push_str(concat!(
            "<style>",
            ".plan .edge{fill:none;stroke:#8a8f98;stroke-width:1.2}",
            ".plan .edge.critical{stroke:#e8590c;stroke-width:2.5}",
            ".plan .node rect{fill:#f1f3f5;stroke:#495057;stroke-width:1}",
            ".plan .node.critical rect{stroke:#e8590c;stroke-width:2.5}",
            ".plan .node text{fill:#212529;text-anchor:middle;dominant-baseline:central}",
            ".plan .label{fill:#868e96;font-size:11px}",
            "</style>\n",
            "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" ",
            "markerWidth=\"8\" markerHeight=\"8\" markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\">",
            "<path d=\"M0,0 L10,5 L0,10 z\" fill=\"#8a8f98\"/></marker></defs>\n"
        ));
        for (y, text) in &self.labels {
            let _ = writeln!(
                out,
                r#"<text class="label" x="{MARGIN}" y="{y:.1}" dominant-baseline="central">{}</text>"#,
                escape(text)
            );
        }
        let position: HashMap<&str, &Node> = self
            .nodes
            .iter()
            .map(|node| (node.name.as_str(), node))
            .collect();
        for edge in &self.edges {
            let (Some(from), Some(to)) = (
                position.get(edge.from.as_str()),
                position.get(edge.to.as_str()),
            ) else {
                continue;
            };
            let _ = writeln!(
                out,
                r#"<path class="edge{}" data-from="{}" data-to="{}" d="{}" marker-end="url(#arrow)"/>"#,
                if edge.critical { " critical" } else { "" },
                escape(&edge.from),
                escape(&edge.to),
                curve(from, to)
            );
        }
        for node in &self.nodes {
            let _ = writeln!(
                out,
                concat!(
                    r#"<g class="node{critical}" data-agent="{name}"><title>{name}</title>"#,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h}" rx="6"/>"#,
                    r#"<text x="{tx:.1}" y="{ty:.1}">{name}</text></g>"#
                ),
                critical = if node.critical { " critical" } else { "" },
                name = escape(&node.name),
                x = node.x,
                y = node.y,
                w = node.width,
                h = BOX_HEIGHT,
                tx = node.x + node.width / 2.0,
                ty = node.y + BOX_HEIGHT / 2.0,
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// The rows: `(level, first row of its level, names in drawing order)`.
type Rows = Vec<(Option<usize>, bool, Vec<String>)>;

/// Orders each level to cross fewer arrows (a few barycenter sweeps down
/// and up, names as the tie break), then wraps wide levels into rows.
fn order_rows(levels: &[(Option<usize>, Vec<String>)], edges: &[Edge]) -> Rows {
    let mut neighbours: HashMap<&str, Vec<&str>> = HashMap::new();
    for edge in edges {
        neighbours.entry(&edge.from).or_default().push(&edge.to);
        neighbours.entry(&edge.to).or_default().push(&edge.from);
    }
    let mut order: Vec<Vec<String>> = levels.iter().map(|(_, names)| names.clone()).collect();
    let mut position: HashMap<String, f64> = HashMap::new();
    let place = |order: &[Vec<String>], position: &mut HashMap<String, f64>| {
        for names in order {
            for (index, name) in names.iter().enumerate() {
                position.insert(name.clone(), index as f64 / names.len().max(1) as f64);
            }
        }
    };
    place(&order, &mut position);
    for sweep in 0..4 {
        let indices: Vec<usize> = if sweep % 2 == 0 {
            (1..order.len()).collect()
        } else {
            (0..order.len().saturating_sub(1)).rev().collect()
        };
        for index in indices {
            // Neighbours on both adjacent rows count, so the last sweep
            // does not undo what the one before it found.
            let below = index;
            let reference: BTreeSet<&str> = [index.wrapping_sub(1), index + 1]
                .into_iter()
                .filter_map(|row| order.get(row))
                .flatten()
                .map(String::as_str)
                .collect();
            let mut keyed: Vec<(f64, String)> = order[below]
                .iter()
                .map(|name| {
                    let linked: Vec<f64> = neighbours
                        .get(name.as_str())
                        .into_iter()
                        .flatten()
                        .filter(|other| reference.contains(**other))
                        .map(|other| position[*other])
                        .collect();
                    let key = if linked.is_empty() {
                        position[name]
                    } else {
                        linked.iter().sum::<f64>() / linked.len() as f64
                    };
                    (key, name.clone())
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            order[below] = keyed.into_iter().map(|(_, name)| name).collect();
            place(std::slice::from_ref(&order[below]), &mut position);
        }
    }
    let mut rows = Vec::new();
    for ((level, _), names) in levels.iter().zip(order) {
        for (chunk, part) in names.chunks(ROW_WIDTH).enumerate() {
            rows.push((*level, chunk == 0, part.to_vec()));
        }
    }
    rows
}

/// Width of the box for `name`: its estimated text width
/// ([`CHAR_WIDTH`] per character) plus 20 of padding, at least 60.
fn box_width(name: &str) -> f64 {
    (name.chars().count() as f64 * CHAR_WIDTH + 20.0).max(60.0)
}

/// A curve from the top or bottom of `from`'s box to `to`'s: arrows point
/// at the dependency, which sits on an earlier row.
fn curve(from: &Node, to: &Node) -> String {
    let x1 = from.x + from.width / 2.0;
    let x2 = to.x + to.width / 2.0;
    let (y1, y2) = if to.y < from.y {
        (from.y, to.y + BOX_HEIGHT)
    } else if to.y > from.y {
        (from.y + BOX_HEIGHT, to.y)
    } else {
        // Same row (a knot): loop over the top.
        let top = from.y;
        return format!(
            "M{x1:.1},{top:.1} C{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{top:.1}",
            top - ROW_GAP / 2.0,
            top - ROW_GAP / 2.0
        );
    };
    let middle = (y1 + y2) / 2.0;
    format!("M{x1:.1},{y1:.1} C{x1:.1},{middle:.1} {x2:.1},{middle:.1} {x2:.1},{y2:.1}")
}

/// Text safe inside an XML element or a double-quoted attribute: the five
/// XML special characters become entities, and control characters that
/// XML 1.0 does not allow (all below U+0020 but tab, newline and carriage
/// return) become `?`.
///
/// ```
/// use supervisor::plan::draw::escape;
///
/// assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
/// assert_eq!(escape("bell\u{7}"), "bell?");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            character if (character as u32) < 0x20 && !matches!(character, '\t' | '\n' | '\r') => {
                out.push('?')
            }
            character => out.push(character),
        }
    }
    out
}

/// The same picture as a Mermaid flowchart: one subgraph per level, the
/// critical path's boxes and arrows styled.
pub fn mermaid(layout: &Layout) -> String {
    let mut out = String::from("flowchart TB\n");
    let id: HashMap<&str, String> = layout
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (node.name.as_str(), format!("n{index}")))
        .collect();
    let label = |name: &str| name.replace('"', "#quot;");
    let mut current: Option<Option<usize>> = None;
    for node in &layout.nodes {
        if current != Some(node.level) {
            if current.is_some() {
                out.push_str("  end\n");
            }
            current = Some(node.level);
            let (key, title) = match node.level {
                Some(level) => (format!("level{level}"), format!("level {level}")),
                None => ("stuck".to_string(), "cannot start".to_string()),
            };
            let _ = writeln!(out, "  subgraph {key}[\"{title}\"]");
        }
        let _ = writeln!(
            out,
            "    {}[\"{}\"]",
            id[node.name.as_str()],
            label(&node.name)
        );
    }
    if current.is_some() {
        out.push_str("  end\n");
    }
    let mut critical_links = Vec::new();
    for (index, edge) in layout.edges.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {} --> {}",
            id[edge.from.as_str()],
            id[edge.to.as_str()]
        );
        if edge.critical {
            critical_links.push(index.to_string());
        }
    }
    let critical_nodes: Vec<&str> = layout
        .nodes
        .iter()
        .filter(|node| node.critical)
        .map(|node| id[node.name.as_str()].as_str())
        .collect();
    if !critical_nodes.is_empty() {
        out.push_str("  classDef critical stroke:#e8590c,stroke-width:3px\n");
        let _ = writeln!(out, "  class {} critical", critical_nodes.join(","));
    }
    if !critical_links.is_empty() {
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:#e8590c,stroke-width:3px",
            critical_links.join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::manifest_from_edges;
    use crate::plan::Plan;

    /// The layout of a manifest made from `(agent, dependencies)` pairs, with
    /// the critical path computed as if every agent took one second.
    fn layout_of(edges: &[(&str, &[&str])]) -> Layout {
        let planned = Plan::around_knots(&manifest_from_edges(edges));
        let (path, _) = planned
            .plan
            .critical_path(|_| std::time::Duration::from_secs(1));
        Layout::new(&planned, &path)
    }

    #[test]
    fn every_agent_and_dependency_is_drawn_once_with_the_critical_path() {
        let layout = layout_of(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &[]),
        ]);
        assert_eq!(layout.nodes.len(), 5);
        assert_eq!(layout.edges.len(), 4);
        let critical: Vec<&str> = layout
            .nodes
            .iter()
            .filter(|node| node.critical)
            .map(|node| node.name.as_str())
            .collect();
        assert_eq!(critical.len(), 3, "a, one of b/c, d: {critical:?}");
        assert_eq!(layout.edges.iter().filter(|edge| edge.critical).count(), 2);
        // Rows follow levels: a dependency sits above its dependent.
        let y = |name: &str| {
            layout
                .nodes
                .iter()
                .find(|node| node.name == name)
                .unwrap()
                .y
        };
        assert!(y("a") < y("b") && y("b") < y("d"));
        let svg = layout.svg();
        assert_eq!(svg.matches("class=\"node").count(), 5);
        assert_eq!(svg.matches("class=\"edge").count(), 4);
        let text = mermaid(&layout);
        assert_eq!(text.matches(" --> ").count(), 4);
        assert!(text.contains("subgraph level2[\"level 2\"]"), "{text}");
    }

    #[test]
    fn knots_get_a_row_and_names_are_escaped() {
        let layout = layout_of(&[("x<&\"y", &["z"]), ("z", &["x<&\"y"]), ("w", &["z"])]);
        assert_eq!(layout.nodes.len(), 3);
        assert!(layout.nodes.iter().all(|node| node.level.is_none()));
        let svg = layout.svg();
        assert!(svg.contains("data-agent=\"x&lt;&amp;&quot;y\""), "{svg}");
        assert!(!svg.contains("x<&"));
    }

    #[test]
    fn wide_levels_wrap_into_rows() {
        let names: Vec<String> = (0..30).map(|index| format!("agent{index}")).collect();
        let edges: Vec<(&str, &[&str])> =
            names.iter().map(|name| (name.as_str(), &[][..])).collect();
        let layout = layout_of(&edges);
        let rows: BTreeSet<i64> = layout.nodes.iter().map(|node| node.y as i64).collect();
        assert_eq!(rows.len(), 30usize.div_ceil(ROW_WIDTH));
        assert_eq!(layout.labels.len(), 1);
    }
}
