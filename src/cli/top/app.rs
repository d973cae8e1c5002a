//! The state of `supervisor top` and what each key does to it: the last
//! status, the filter, the selected agent, an action waiting for its
//! confirmation, the last message, and the log lines shown.
//!
//! Owns the screen's state only; it does no I/O. Keys come in as crossterm
//! events and come out as a [`Step`] that the loop in `mod.rs` carries out
//! (a request to the supervisor, a quit), so every key is testable here.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::control::{AgentView, ControlError, Request, Response, StatusView};

/// What an operator can do to the selected agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `r`: stop the agent and start it again (`with_dependents: false`).
    Restart,
    /// `x`: stop the agent and, as `supervisor stop` does, its dependents.
    Stop,
    /// `s`: start an agent that an operator stopped (or that failed).
    Start,
}

impl Action {
    /// The lower-case verb for messages: `restart`, `stop`, `start`.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Start => "start",
        }
    }

    /// The control request for one agent (a stop takes its dependents
    /// along, as `supervisor stop` does; a restart does not).
    pub fn request(self, agent: &str) -> Request {
        let agents = vec![agent.to_string()];
        match self {
            Action::Restart => Request::Restart {
                agents,
                with_dependents: false,
            },
            Action::Stop => Request::Stop { agents },
            Action::Start => Request::Start { agents },
        }
    }
}

/// What the loop does after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep looping; the key only changed the screen's state.
    Stay,
    /// End `top` and give the terminal back (`q`, Ctrl-C, Ctrl-D).
    Quit,
    /// Send this action for this agent, then refresh.
    Send(Action, String),
}

/// The last line under the table: how the last action went, or a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line, e.g. `restart db: accepted` or the supervisor's refusal.
    pub text: String,
    /// Drawn in the error colour: the action was refused or failed.
    pub error: bool,
}

/// How many more log lines one PgUp shows.
pub const LOG_PAGE: usize = 10;

/// Everything `top` shows, changed only by [`App::on_key`], [`App::update`],
/// [`App::refresh_failed`], [`App::answered`] and [`App::set_log`]; the
/// loop in `mod.rs` calls them and [`super::view::draw`] reads the result.
#[derive(Debug, Default)]
pub struct App {
    /// The last status received; `None` before the first.
    pub view: Option<StatusView>,
    /// Why the last refresh failed (the table then shows the last status).
    pub stale: Option<String>,
    /// Words that an agent must all match, by name or state.
    pub filter: String,
    /// Keys go into `filter` (after `/`, until Enter or Esc).
    pub editing_filter: bool,
    /// The selected agent's name; kept across refreshes and filtering.
    pub selected: Option<String>,
    /// An action waiting for `y`.
    pub pending: Option<(Action, String)>,
    /// The line under the table; set by actions, confirmations and errors,
    /// cleared by Esc and `/`.
    pub message: Option<Message>,
    /// The end of the selected agent's log, oldest first.
    pub log: Vec<String>,
    /// Lines scrolled back from the end of the log; 0 follows new lines.
    pub log_back: usize,
    /// This machine's name, always on screen.
    pub host: String,
    /// The run directory, shown in the header.
    pub run_dir: String,
}

impl App {
    /// An empty screen for `host` and `run_dir`: no status yet, no filter,
    /// nothing selected.
    pub fn new(host: String, run_dir: String) -> App {
        App {
            host,
            run_dir,
            ..App::default()
        }
    }

    /// A new status: the selection stays on its agent while that agent
    /// is visible, else moves to the first visible one.
    pub fn update(&mut self, view: StatusView) {
        self.view = Some(view);
        self.stale = None;
        self.keep_selection();
    }

    /// The refresh failed; the last status stays on screen, marked stale.
    pub fn refresh_failed(&mut self, error: &ControlError) {
        self.stale = Some(error.to_string());
    }

    /// The agents that pass the filter, in the status's order.
    pub fn visible(&self) -> Vec<&AgentView> {
        let words: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        self.view
            .iter()
            .flat_map(|view| &view.agents)
            .filter(|agent| words.iter().all(|word| matches(agent, word)))
            .collect()
    }

    /// The index of the selected agent among [`App::visible`].
    pub fn selected_index(&self) -> Option<usize> {
        let selected = self.selected.as_deref()?;
        self.visible()
            .iter()
            .position(|agent| agent.name == selected)
    }

    /// Moves the selection to the first visible agent (or to none) when the
    /// selected one is no longer visible; then the log follows again.
    fn keep_selection(&mut self) {
        if self.selected_index().is_none() {
            self.selected = self.visible().first().map(|agent| agent.name.clone());
            self.log_back = 0;
        }
    }

    /// Selects the `index`-th visible agent; nothing happens past the end.
    /// A different agent's log starts following its end.
    fn select(&mut self, index: usize) {
        let name = self.visible().get(index).map(|agent| agent.name.clone());
        if name.is_some() && name != self.selected {
            self.selected = name;
            self.log_back = 0;
        }
    }

    /// One row down or up, stopping at the first and last visible agent;
    /// without a selection, the first row.
    fn move_selection(&mut self, down: bool) {
        let count = self.visible().len();
        if count == 0 {
            return;
        }
        let index = match (self.selected_index(), down) {
            (None, _) => 0,
            (Some(index), true) => (index + 1).min(count - 1),
            (Some(index), false) => index.saturating_sub(1),
        };
        self.select(index);
    }

    /// What `key` does (the help line in `view.rs` is the short form):
    /// Ctrl-C, Ctrl-D and `q` quit; with a confirmation pending, `y` sends the
    /// action and any other key cancels it; while the filter is edited, keys
    /// edit it (Enter keeps it, Esc clears it); else ↑/`k` and ↓/`j` move the
    /// selection, Home/`g` and End/`G` jump, PgUp/PgDn scroll the log by
    /// [`LOG_PAGE`] lines, `f` follows it again, `r`, `x`, `s` ask to restart,
    /// stop, start the selected agent, `/` edits the filter, Esc clears the
    /// filter and the message. An Alt+key (Esc and a key arriving together)
    /// counts as both keys.
    pub fn on_key(&mut self, key: KeyEvent) -> Step {
        if key.modifiers.contains(KeyModifiers::ALT) {
            // Esc and the next key, arriving together (typed fast, or
            // bunched by a slow SSH link), read as Alt+key: both are meant.
            let step = self.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            if step != Step::Stay {
                return step;
            }
            return self.on_key(KeyEvent::new(key.code, key.modifiers - KeyModifiers::ALT));
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'))
        {
            return Step::Quit;
        }
        if let Some((action, agent)) = self.pending.take() {
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                return Step::Send(action, agent);
            }
            self.message = Some(Message {
                text: format!("{} {agent}: cancelled", action.verb()),
                error: false,
            });
            return Step::Stay;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(character) => self.filter.push(character),
                _ => {}
            }
            self.keep_selection();
            return Step::Stay;
        }
        match key.code {
            KeyCode::Char('q') => return Step::Quit,
            KeyCode::Esc => {
                self.filter.clear();
                self.message = None;
                self.keep_selection();
            }
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.message = None;
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(false),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(true),
            KeyCode::Home | KeyCode::Char('g') => self.select(0),
            KeyCode::End | KeyCode::Char('G') => {
                self.select(self.visible().len().saturating_sub(1))
            }
            KeyCode::PageUp => self.log_back = self.log_back.saturating_add(LOG_PAGE),
            KeyCode::PageDown => self.log_back = self.log_back.saturating_sub(LOG_PAGE),
            KeyCode::Char('f') => self.log_back = 0,
            KeyCode::Char('r') => self.ask(Action::Restart),
            KeyCode::Char('x') => self.ask(Action::Stop),
            KeyCode::Char('s') => self.ask(Action::Start),
            _ => {}
        }
        Step::Stay
    }

    /// Asks for confirmation of `action` on the selected agent (the next key
    /// `y` sends it, any other cancels), or says there is nothing selected.
    fn ask(&mut self, action: Action) {
        match &self.selected {
            Some(agent) => self.pending = Some((action, agent.clone())),
            None => {
                self.message = Some(Message {
                    text: format!("nothing to {}: no agent selected", action.verb()),
                    error: true,
                })
            }
        }
    }

    /// Turns the supervisor's answer to `action` on `agent` into the message
    /// line: `accepted` (naming the other agents it took along, e.g. a stop's
    /// dependents), the refusal with every error it gave, or the request's
    /// failure.
    pub fn answered(
        &mut self,
        action: Action,
        agent: &str,
        answer: Result<Response, ControlError>,
    ) {
        let verb = action.verb();
        self.message = Some(match answer {
            Ok(response) if response.ok => {
                let along: Vec<&str> = response
                    .agents
                    .iter()
                    .map(String::as_str)
                    .filter(|name| *name != agent)
                    .collect();
                Message {
                    text: if along.is_empty() {
                        format!("{verb} {agent}: accepted")
                    } else {
                        format!("{verb} {agent}: accepted, with {}", along.join(", "))
                    },
                    error: false,
                }
            }
            Ok(response) => {
                let mut text = format!(
                    "{verb} {agent}: {}",
                    response.error.as_deref().unwrap_or("refused")
                );
                for error in &response.errors {
                    text.push_str("; ");
                    text.push_str(error);
                }
                Message { text, error: true }
            }
            Err(error) => Message {
                text: format!("{verb} {agent}: {error}"),
                error: true,
            },
        });
    }

    /// How many lines of the selected agent's log the screen may need.
    pub fn log_wanted(&self) -> usize {
        self.log_back.saturating_add(200)
    }

    /// The end of the selected agent's log; scrolling back stops at its start.
    pub fn set_log(&mut self, lines: Vec<String>) {
        self.log = lines;
        self.log_back = self.log_back.min(self.log.len().saturating_sub(1));
    }
}

/// An agent matches a filter word when its name contains it or its state
/// starts with it (`fail` finds failed agents).
fn matches(agent: &AgentView, word: &str) -> bool {
    agent.name.to_lowercase().contains(word) || agent.state.starts_with(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, state: &str) -> AgentView {
        serde_json::from_value(serde_json::json!({
            "name": name, "host": "localhost", "state": state, "remote": false,
            "required": true, "held": false, "pid": 7, "uptime_s": 1.0,
            "restarts": 0, "restarts_by_cause": {}, "reason": null,
            "ready_at_s": null, "time_to_ready_s": null, "heartbeat_age_s": null,
            "cpu_percent": null, "rss_bytes": null, "waiting_on": []
        }))
        .expect("an agent view")
    }

    fn view(agents: &[(&str, &str)]) -> StatusView {
        StatusView {
            supervisor_pid: 1,
            uptime_s: 1.0,
            all_ready_s: None,
            shutting_down: false,
            reloads: 0,
            config_errors: Vec::new(),
            console_dropped_lines: 0,
            link: None,
            agents: agents
                .iter()
                .map(|(name, state)| agent(name, state))
                .collect(),
        }
    }

    /// A key press without modifiers.
    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// Presses one key per character of `text`.
    fn type_text(app: &mut App, text: &str) {
        for character in text.chars() {
            app.on_key(key(KeyCode::Char(character)));
        }
    }

    /// The names of the visible agents, in order.
    fn names(app: &App) -> Vec<&str> {
        app.visible()
            .iter()
            .map(|agent| agent.name.as_str())
            .collect()
    }

    #[test]
    fn the_selection_moves_within_the_visible_agents_and_survives_refreshes() {
        let mut app = App::new("host".into(), "run".into());
        app.update(view(&[
            ("db", "ready"),
            ("api", "ready"),
            ("web", "failed"),
        ]));
        assert_eq!(app.selected.as_deref(), Some("db"));
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Char('j')));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected.as_deref(), Some("web"), "stops at the last");
        app.on_key(key(KeyCode::Char('k')));
        assert_eq!(app.selected.as_deref(), Some("api"));
        // The same agent stays selected when the order changes.
        app.update(view(&[
            ("api", "starting"),
            ("db", "ready"),
            ("web", "failed"),
        ]));
        assert_eq!(app.selected_index(), Some(0));
        // It goes away: the first agent is selected.
        app.update(view(&[("db", "ready"), ("web", "failed")]));
        assert_eq!(app.selected.as_deref(), Some("db"));
    }

    #[test]
    fn the_filter_matches_names_and_states_and_esc_clears_it() {
        let mut app = App::new("host".into(), "run".into());
        app.update(view(&[
            ("db", "ready"),
            ("api", "ready"),
            ("web", "failed"),
        ]));
        app.on_key(key(KeyCode::Char('/')));
        type_text(&mut app, "fail");
        assert_eq!(names(&app), ["web"]);
        assert_eq!(app.selected.as_deref(), Some("web"));
        // While typing, action keys are text.
        assert_eq!(app.pending, None);
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Backspace));
        type_text(&mut app, "A");
        assert_eq!(names(&app), ["api"], "case-insensitive, by name");
        app.on_key(key(KeyCode::Enter));
        assert!(!app.editing_filter);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Step::Quit);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(names(&app), ["db", "api", "web"]);
        app.on_key(key(KeyCode::Char('/')));
        type_text(&mut app, "ready d");
        assert_eq!(names(&app), ["db"], "every word must match");
        app.on_key(key(KeyCode::Esc));
        assert!(app.filter.is_empty() && !app.editing_filter);
        // Esc and `/` bunched into Alt+/ by the terminal: both happen.
        app.on_key(key(KeyCode::Char('/')));
        type_text(&mut app, "web");
        app.on_key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::ALT));
        assert!(
            app.editing_filter && app.filter.is_empty(),
            "{:?}",
            app.filter
        );
    }

    #[test]
    fn actions_need_a_confirmation_key() {
        let mut app = App::new("host".into(), "run".into());
        app.update(view(&[("db", "ready"), ("api", "ready")]));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.on_key(key(KeyCode::Char('r'))), Step::Stay);
        assert_eq!(app.pending, Some((Action::Restart, "api".to_string())));
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            Step::Send(Action::Restart, "api".to_string())
        );
        assert_eq!(app.pending, None);
        app.on_key(key(KeyCode::Char('x')));
        assert_eq!(app.on_key(key(KeyCode::Char('n'))), Step::Stay);
        assert_eq!(app.pending, None);
        assert!(app.message.as_ref().unwrap().text.contains("cancelled"));
        app.on_key(key(KeyCode::Char('s')));
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            Step::Send(Action::Start, "api".to_string())
        );
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Step::Quit
        );
    }

    #[test]
    fn answers_become_messages() {
        let mut app = App::new("host".into(), "run".into());
        let accepted = Response {
            agents: vec!["db".into(), "api".into()],
            ..Response::ok()
        };
        app.answered(Action::Stop, "db", Ok(accepted));
        let message = app.message.clone().unwrap();
        assert_eq!(message.text, "stop db: accepted, with api");
        assert!(!message.error);
        app.answered(
            Action::Start,
            "nope",
            Ok(Response::error("unknown agent(s): nope")),
        );
        let message = app.message.clone().unwrap();
        assert_eq!(message.text, "start nope: unknown agent(s): nope");
        assert!(message.error);
    }

    #[test]
    fn scrolling_back_stops_at_the_start_of_the_log() {
        let mut app = App::new("host".into(), "run".into());
        app.update(view(&[("db", "ready")]));
        for _ in 0..5 {
            app.on_key(key(KeyCode::PageUp));
        }
        app.set_log((0..20).map(|index| index.to_string()).collect());
        assert_eq!(app.log_back, 19);
        app.on_key(key(KeyCode::PageDown));
        assert_eq!(app.log_back, 9);
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(app.log_back, 0);
    }
}
