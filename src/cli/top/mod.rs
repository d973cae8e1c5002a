//! `supervisor top`: a terminal UI for a running supervisor. The agent
//! table of `supervisor status` refreshed every `--interval`, the selected
//! agent's log following its new lines, keys to restart, stop and start the
//! selected agent (each confirmed with `y`) and to filter by name or state.
//! Keyboard only, so it works over SSH; redraws on resize.
//!
//! The terminal is always given back: on `q`, Ctrl-C, SIGINT, SIGTERM,
//! SIGHUP and SIGQUIT the loop ends and a guard restores it, and ratatui's
//! panic hook restores it before a panic message is printed. A terminal that
//! goes away (a closed SSH connection) ends the process too: see
//! `watch_for_hangup`.
//!
//! Layout: `app.rs` (state and keys, no I/O), `view.rs` (drawing). This file
//! owns the loop: the terminal, the control socket connection and reading
//! the log. The status and log data are `crate::control`'s and
//! `cli::logs`'s; the cell texts are `cli::status`'s.

mod app;
mod view;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use self::app::{App, Step};
use super::Exit;
use super::remote::{RunDirArgs, log_tail, status};
use crate::control::{Client, ControlError, Request, Response, RunDir};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Seconds between refreshes of the table and the log.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub interval: f64,
}

/// How long one control request may take before the screen says so.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest the loop sleeps in one wait for a key, so that a signal is
/// seen soon.
const KEY_WAIT: Duration = Duration::from_millis(200);

/// `supervisor top`: asks for the status once, before the screen is
/// touched (no supervisor running, or one refusing: the exit code
/// `remote::status` chose, e.g. [`Exit::NotRunning`]), refuses unless both
/// stdin and stdout are terminals ([`Exit::Usage`]), then runs the screen
/// until `q` or a stop signal and gives the terminal back ([`Exit::Ok`]).
/// Fails when that first request fails, or the terminal cannot be set up,
/// read or drawn to.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    // Not running: say so and exit 3 before taking over the screen.
    let first = match status(&run_dir)? {
        Ok(view) => view,
        Err(exit) => return Ok(exit),
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "error: `supervisor top` needs a terminal; in a pipe use `supervisor status --watch` or `status --json`"
        );
        return Ok(Exit::Usage);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGQUIT,
    ] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".to_string());
    let mut app = App::new(host, run_dir.path.display().to_string());
    app.update(first);
    let colors = view::Colors(super::console::use_color(true));

    watch_for_hangup(stop.clone());
    // Before the terminal is set up, so a half-done setup is undone too.
    let restore = Restore;
    let mut terminal = ratatui::try_init()?;
    let result = Screen {
        run_dir: &run_dir,
        client: None,
        interval: Duration::from_secs_f64(args.interval.max(0.1)),
        stop: &stop,
    }
    .run(&mut terminal, &mut app, &colors);
    drop(restore);
    result.map(|()| Exit::Ok)
}

/// crossterm's input reader loops forever, at full CPU, once its terminal
/// has hung up (it reads EOF or EIO and tries again), so the loop below
/// would never see a signal or a closed terminal. This thread ends the
/// process when the terminal has hung up, or when a stop signal came and
/// the loop has not ended, for a second.
fn watch_for_hangup(stop: Arc<AtomicBool>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let hung_up = || {
        let stdin = std::io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::empty())];
        poll(&mut fds, PollTimeout::ZERO).is_ok()
            && fds[0].revents().is_some_and(|events| {
                events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
            })
    };
    std::thread::spawn(move || {
        let mut since: Option<Instant> = None;
        loop {
            std::thread::sleep(KEY_WAIT);
            if !(stop.load(Ordering::Relaxed) || hung_up()) {
                since = None;
                continue;
            }
            let since = *since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                // Restoring a terminal that is gone fails quietly enough.
                ratatui::restore();
                std::process::exit(0);
            }
        }
    });
}

/// Gives the terminal back (raw mode off, main screen) when dropped, on
/// every way out of the loop, `?` included.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The loop's I/O side: where the supervisor is, the kept connection to it,
/// and the refresh period. Its state for drawing is the [`App`].
struct Screen<'a> {
    /// The run directory of the supervisor shown (its control socket and logs).
    run_dir: &'a RunDir,
    /// One connection for every request; reopened after a failure (the
    /// supervisor closes idle ones after 5 s).
    client: Option<Client>,
    /// Time between status refreshes (`--interval`, at least 0.1 s).
    interval: Duration,
    /// Set by a signal handler: end the loop.
    stop: &'a AtomicBool,
}

impl Screen<'_> {
    /// The loop: refreshes the status every `interval` (and right after an
    /// action), reads the selected agent's log when the selection or the status
    /// changes, redraws only when something changed, and waits for a key at
    /// most [`KEY_WAIT`] so a stop signal is seen. Returns on `q`, Ctrl-C or a
    /// signal; fails when the terminal cannot be read or drawn to.
    fn run(
        &mut self,
        terminal: &mut ratatui::DefaultTerminal,
        app: &mut App,
        colors: &view::Colors,
    ) -> anyhow::Result<()> {
        let mut next_refresh = Instant::now();
        // Which log (agent, lines) is on screen; read again when another
        // is wanted or at each refresh.
        let mut log_shown: Option<(String, usize)> = None;
        let mut log_due = true;
        // Something changed since the last draw (drawing only then keeps
        // an idle `top` near 0% CPU).
        let mut dirty = true;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= next_refresh {
                match self.ask(&Request::Status) {
                    Ok(Response {
                        status: Some(view), ..
                    }) => app.update(view),
                    Ok(response) => app.refresh_failed(&ControlError::Protocol(
                        response
                            .error
                            .unwrap_or_else(|| "no status in the answer".to_string()),
                    )),
                    Err(error) => app.refresh_failed(&error),
                }
                log_due = true;
                dirty = true;
                next_refresh = now + self.interval;
            }
            let wanted = app.selected.clone().map(|agent| (agent, app.log_wanted()));
            if log_due || wanted != log_shown {
                match &wanted {
                    Some((agent, lines)) => app.set_log(log_tail(self.run_dir, agent, *lines)),
                    None => app.set_log(Vec::new()),
                }
                log_shown = wanted;
                log_due = false;
                dirty = true;
            }
            if dirty {
                terminal.draw(|frame| view::draw(frame, app, colors))?;
                dirty = false;
            }
            let wait = next_refresh
                .saturating_duration_since(Instant::now())
                .min(KEY_WAIT);
            if !event::poll(wait)? {
                continue;
            }
            let key = match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => key,
                // The next draw fits the new size.
                Event::Resize(..) => {
                    dirty = true;
                    continue;
                }
                _ => continue,
            };
            dirty = true;
            match app.on_key(key) {
                Step::Stay => {}
                Step::Quit => return Ok(()),
                Step::Send(action, agent) => {
                    let answer = self.ask(&action.request(&agent));
                    app.answered(action, &agent, answer);
                    next_refresh = Instant::now();
                }
            }
        }
    }

    /// One request over the kept connection, or over a new one when the
    /// supervisor had closed that one (then it did not read the request;
    /// after any other failure it may have, so it is not sent twice).
    fn ask(&mut self, request: &Request) -> Result<Response, ControlError> {
        if let Some(client) = &mut self.client {
            match client.request(request, REQUEST_TIMEOUT) {
                Ok(response) => return Ok(response),
                Err(ControlError::NotRunning { .. }) => self.client = None,
                Err(error) => {
                    self.client = None;
                    return Err(error);
                }
            }
        }
        let mut client = Client::connect(self.run_dir)?;
        let answer = client.request(request, REQUEST_TIMEOUT);
        if answer.is_ok() {
            self.client = Some(client);
        }
        answer
    }
}
