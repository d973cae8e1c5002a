//! Drawing `supervisor top`: a header with the host name, the agent table
//! (the cells of `supervisor status`, state coloured), the selected agent's
//! log, the message line and the help line. Narrow terminals drop the
//! least needed columns first.
//!
//! Owns the layout and the colours; the cell texts are `cli::status`'s, the
//! state is `app.rs`'s.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Table, TableState};

use super::app::App;
use crate::cli::status;
use crate::control::AgentView;

/// The help line; kept short enough for 80 columns.
pub const HELP: &str = "↑↓ select  r restart  x stop  s start (y confirms)  / filter  esc clear  PgUp/PgDn/f log  q quit";

/// The columns shown, in order: an index into [`status::HEADERS`], or
/// [`PROGRESS`] for the heartbeat's progress payload.
const COLUMNS: [usize; 12] = [0, 2, 3, 4, 5, 6, 9, 10, 8, PROGRESS, 1, 7];

/// The progress column (after `status::row`'s eleven).
const PROGRESS: usize = 11;

/// Columns left out, in this order, until the table fits: READY IN, HOST,
/// PROGRESS, HEARTBEAT, RSS, CPU%, UPTIME.
const DROP_ORDER: [usize; 7] = [7, 1, PROGRESS, 8, 10, 9, 4];

/// Whether to colour at all (`NO_COLOR` turns it off; the selection is
/// shown reversed either way).
pub struct Colors(pub bool);

impl Colors {
    /// The colour of a state cell: green ready, yellow on the way (starting,
    /// pending, stopping), light red backing off, red failed, magenta blocked,
    /// grey otherwise; plain without colour.
    fn state(&self, state: &str) -> Style {
        if !self.0 {
            return Style::default();
        }
        let color = match state {
            "ready" => Color::Green,
            "starting" | "pending" | "stopping" => Color::Yellow,
            "backing-off" => Color::LightRed,
            "failed" => Color::Red,
            "blocked" => Color::Magenta,
            "idle" => Color::Cyan,
            _ => Color::DarkGray,
        };
        Style::default().fg(color)
    }

    /// `color` as foreground, or the plain style without colour.
    fn paint(&self, color: Color) -> Style {
        if self.0 {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }
}

/// Draws the whole screen from `app`, top to bottom: header (1 line), agent
/// table (its rows plus borders and header, at most half the screen, at
/// least 4 lines), log (the rest, at least 3), message line, help line.
/// Reads `app` only.
pub fn draw(frame: &mut Frame, app: &App, colors: &Colors) {
    let visible = app.visible();
    let table_height = (visible.len() as u16 + 3).clamp(4, (frame.area().height / 2).max(4));
    let [header, table, log, message, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_height),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(app, colors)), header);
    draw_table(frame, table, app, &visible, colors);
    draw_log(frame, log, app);
    frame.render_widget(Paragraph::new(message_line(app, colors)), message);
    frame.render_widget(
        Paragraph::new(HELP).style(Style::default().add_modifier(Modifier::DIM)),
        help,
    );
}

/// `supervisor top  host H  RUN_DIR  pid P, up T, R/N ready`, then in colour
/// whether it is shutting down, whether the last reload was refused, and
/// why the last refresh failed (the table is then stale).
fn header_line<'a>(app: &'a App, colors: &Colors) -> Line<'a> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled("supervisor top", bold),
        Span::raw("  host "),
        Span::styled(app.host.as_str(), bold),
        Span::raw(format!("  {}", app.run_dir)),
    ];
    if let Some(view) = &app.view {
        let ready = view
            .agents
            .iter()
            .filter(|agent| agent.state == "ready")
            .count();
        spans.push(Span::raw(format!(
            "  pid {}, up {}, {ready}/{} ready",
            view.supervisor_pid,
            status::seconds(Some(view.uptime_s)),
            view.agents.len()
        )));
        if view.shutting_down {
            spans.push(Span::styled(", shutting down", colors.paint(Color::Yellow)));
        }
        if !view.config_errors.is_empty() {
            spans.push(Span::styled(
                format!(
                    ", last reload refused ({} problem(s))",
                    view.config_errors.len()
                ),
                colors.paint(Color::Red),
            ));
        }
    }
    if let Some(error) = &app.stale {
        spans.push(Span::styled(
            format!("  not updated: {}", clean(error)),
            colors.paint(Color::Red),
        ));
    }
    Line::from(spans)
}

/// One agent's cells, indexed like [`COLUMNS`].
fn cells(agent: &AgentView) -> Vec<String> {
    let mut cells: Vec<String> = status::row(agent)
        .into_iter()
        .map(|cell| clean(&cell))
        .collect();
    cells.push(clean(&status::progress(agent)));
    cells
}

/// The header text of a column index of [`COLUMNS`].
fn header_of(column: usize) -> &'static str {
    if column == PROGRESS {
        "PROGRESS"
    } else {
        status::HEADERS[column]
    }
}

/// The bordered agent table of the `visible` agents, titled with the count
/// shown and the filter; columns are dropped in [`DROP_ORDER`] until the
/// rows fit `area`'s width, the state cell is coloured and the selected row
/// is reversed with a `> ` mark.
fn draw_table(frame: &mut Frame, area: Rect, app: &App, visible: &[&AgentView], colors: &Colors) {
    let rows: Vec<Vec<String>> = visible.iter().map(|agent| cells(agent)).collect();
    let width_of = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain(std::iter::once(header_of(column).len()))
            .max()
            .unwrap_or(0) as u16
    };
    // Borders (2) and the selection mark (2), then each column and a space.
    let mut shown: Vec<usize> = COLUMNS.to_vec();
    let total = |shown: &[usize]| -> u16 {
        4 + shown
            .iter()
            .map(|column| width_of(*column) + 1)
            .sum::<u16>()
    };
    for column in DROP_ORDER {
        if total(&shown) <= area.width {
            break;
        }
        shown.retain(|kept| *kept != column);
    }
    let widths: Vec<Constraint> = shown
        .iter()
        .map(|column| Constraint::Length(width_of(*column)))
        .collect();
    let header = Row::new(shown.iter().map(|column| header_of(*column)))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let body = visible.iter().zip(&rows).map(|(agent, cells)| {
        Row::new(shown.iter().map(|column| {
            let cell = Cell::from(cells[*column].clone());
            if *column == 2 {
                cell.style(colors.state(&agent.state))
            } else {
                cell
            }
        }))
    });
    let total_agents = app.view.as_ref().map_or(0, |view| view.agents.len());
    let mut title = format!(" agents {}/{total_agents} ", visible.len());
    if !app.filter.is_empty() || app.editing_filter {
        title.push_str(&format!("filter: {}", clean(&app.filter)));
        if app.editing_filter {
            title.push('▏');
        }
        title.push(' ');
    }
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

/// The last lines of the selected agent's log that fit `area`, ending
/// `app.log_back` lines before the end, dates cut and control characters
/// made visible; the title says whether it follows new lines.
fn draw_log(frame: &mut Frame, area: Rect, app: &App) {
    let title = match &app.selected {
        None => " log ".to_string(),
        Some(agent) if app.log_back == 0 => format!(" log: {} (following) ", clean(agent)),
        Some(agent) => format!(
            " log: {} ({} lines back; f follows) ",
            clean(agent),
            app.log_back
        ),
    };
    let height = area.height.saturating_sub(2) as usize;
    let end = app.log.len().saturating_sub(app.log_back);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = app.log[start..end]
        .iter()
        .map(|line| Line::raw(clean(without_date(line))))
        .collect();
    let text = if lines.is_empty() && app.selected.is_some() {
        vec![Line::raw("(no output yet)")]
    } else {
        lines
    };
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(title)),
        area,
    );
}

/// The line under the log, first match wins: a pending confirmation, the
/// filter's help while editing it, the last message (red for errors, green
/// otherwise), or nothing.
fn message_line<'a>(app: &'a App, colors: &Colors) -> Line<'a> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    if let Some((action, agent)) = &app.pending {
        return Line::from(vec![
            Span::styled(format!("{} {}?", action.verb(), clean(agent)), bold),
            Span::raw(" press y to confirm, any other key cancels"),
        ]);
    }
    if app.editing_filter {
        return Line::raw(
            "filter: type words matching names or states; Enter keeps it, Esc clears it",
        );
    }
    match &app.message {
        Some(message) => Line::styled(
            clean(&message.text),
            colors.paint(if message.error {
                Color::Red
            } else {
                Color::Green
            }),
        ),
        None => Line::raw(""),
    }
}

/// `12:00:01.123Z hello` for `2026-12-07T12:00:01.123Z hello`: the date
/// takes room and is almost always today.
fn without_date(line: &str) -> &str {
    match crate::process::log::parse_timestamp(line.as_bytes()) {
        Some(_) => &line[11..],
        None => line,
    }
}

/// Text from agents (log lines, exit reasons) with control characters,
/// escape sequences among them, made visible instead of sent to the
/// terminal; tabs become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '\t' => ' ',
            control if control.is_control() => '�',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::control::StatusView;

    fn view() -> StatusView {
        let agent = |name: &str, state: &str, reason: Option<&str>| {
            serde_json::from_value::<AgentView>(serde_json::json!({
                "name": name, "host": "localhost", "state": state, "remote": false,
                "required": true, "held": false, "pid": 4242, "uptime_s": 75.0,
                "restarts": 2, "restarts_by_cause": {}, "reason": reason,
                "ready_at_s": null, "time_to_ready_s": 0.25, "heartbeat_age_s": 0.5,
                "cpu_percent": 1.5, "rss_bytes": 10485760, "waiting_on": [],
                "heartbeat": {"queue_depth": 12, "in_flight": 2}
            }))
            .expect("an agent view")
        };
        StatusView {
            supervisor_pid: 99,
            uptime_s: 80.0,
            all_ready_s: None,
            shutting_down: false,
            reloads: 0,
            config_errors: Vec::new(),
            console_dropped_lines: 0,
            link: None,
            agents: vec![
                agent("store", "ready", None),
                agent("api", "failed", Some("exited with code 1: \x1b[31mboom")),
            ],
        }
    }

    /// Draws `app` (in colour) on an in-memory terminal of `width` x `height`
    /// and returns the screen's text, one line per row.
    fn render(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a terminal");
        terminal
            .draw(|frame| draw(frame, app, &Colors(true)))
            .expect("draw");
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_screen_shows_host_table_log_and_help() {
        let mut app = App::new("box-7".into(), "/srv/run".into());
        app.update(view());
        app.set_log(vec![
            "2026-12-07T12:00:01.123Z hello".into(),
            "no stamp \x1b[2J".into(),
        ]);
        let screen = render(&app, 160, 20);
        assert!(screen.contains("host box-7"), "{screen}");
        assert!(screen.contains("pid 99, up 1m20s, 1/2 ready"), "{screen}");
        for column in [
            "AGENT",
            "STATE",
            "PID",
            "RESTARTS",
            "LAST REASON",
            "CPU%",
            "RSS",
            "HEARTBEAT",
            "PROGRESS",
        ] {
            assert!(screen.contains(column), "{column}: {screen}");
        }
        let store = screen
            .lines()
            .find(|line| line.contains("> store"))
            .expect("store selected");
        assert!(
            store.contains("ready") && store.contains("4242") && store.contains("10.0 MiB"),
            "{store}"
        );
        assert!(store.contains("queue 12, in flight 2"), "{store}");
        assert!(
            screen.contains("exited with code 1: �[31mboom"),
            "escape made visible: {screen}"
        );
        assert!(screen.contains("log: store (following)"), "{screen}");
        assert!(screen.contains("12:00:01.123Z hello"), "{screen}");
        assert!(!screen.contains("2026-12-07T"), "{screen}");
        assert!(screen.contains("r restart"), "{screen}");
    }

    #[test]
    fn a_narrow_screen_drops_columns_but_keeps_state_and_reason() {
        let mut app = App::new("box-7".into(), "/srv/run".into());
        app.update(view());
        let screen = render(&app, 80, 20);
        assert!(!screen.contains("READY IN"), "{screen}");
        assert!(!screen.contains("PROGRESS"), "{screen}");
        assert!(
            screen.contains("STATE") && screen.contains("LAST REASON"),
            "{screen}"
        );
        assert!(screen.contains("failed"), "{screen}");
    }
}
