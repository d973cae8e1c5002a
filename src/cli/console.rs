//! The supervisor's own lines on stderr, for people: local time, the agent,
//! what happened (`12:00:01  store     ready in 231ms`), with `warning:` and
//! `error:` marked (in colour on a terminal unless `NO_COLOR` is set). Other
//! event fields follow as `key=value`; debug and trace lines also name the
//! module. `--log-format json` keeps the structured form instead.
//!
//! Owns this layout and the colour rule ([`use_color`]); what is logged is
//! decided where it happens.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether to colour output on a stream: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn use_color(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Width of the agent column; `up` sets it to its longest agent name.
static NAME_WIDTH: AtomicUsize = AtomicUsize::new(10);

/// Sets the width the agent column is padded to (default 10), for every
/// following line.
pub fn set_name_width(width: usize) {
    NAME_WIDTH.store(width, Ordering::Relaxed);
}

/// The event formatter installed by `init_tracing` for `--log-format text`.
pub struct Human {
    /// Colour the level and agent name (ANSI); see [`use_color`].
    pub color: bool,
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let width = NAME_WIDTH.load(Ordering::Relaxed);
        write!(
            writer,
            "{}  {:<width$}  ",
            clock(std::time::SystemTime::now()),
            fields.agent
        )?;
        let (label, code) = match *metadata.level() {
            Level::ERROR => ("error: ", "31"),
            Level::WARN => ("warning: ", "33"),
            Level::INFO => ("", ""),
            _ => ("", "2"),
        };
        if self.color && !code.is_empty() {
            write!(writer, "\x1b[{code}m{label}")?;
        } else {
            write!(writer, "{label}")?;
        }
        if matches!(*metadata.level(), Level::DEBUG | Level::TRACE) {
            write!(writer, "{}: ", metadata.target())?;
        }
        write!(writer, "{}{}", fields.message, fields.rest)?;
        if self.color && !code.is_empty() {
            write!(writer, "\x1b[0m")?;
        }
        writeln!(writer)
    }
}

/// The message, the `agent` field, and every other field as ` key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    agent: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "agent" => self.agent.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "agent" => {
                let _ = write!(self.agent, "{value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

/// `HH:MM:SS` in the local time zone (from the C library, which reads
/// `TZ` and `/etc/localtime`).
fn clock(now: std::time::SystemTime) -> String {
    let seconds = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are
    // valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
        return "--:--:--".into();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_wins_over_a_terminal() {
        // SAFETY: the only test in this binary that touches NO_COLOR.
        unsafe { std::env::set_var("NO_COLOR", "1") };
        assert!(!use_color(true));
        unsafe { std::env::set_var("NO_COLOR", "") };
        assert!(use_color(true));
        assert!(!use_color(false));
        unsafe { std::env::remove_var("NO_COLOR") };
    }

    #[test]
    fn clock_is_hours_minutes_seconds() {
        let text = clock(std::time::UNIX_EPOCH + std::time::Duration::from_secs(3_723));
        assert_eq!(text.len(), 8, "{text}");
        // Every time zone offset is whole minutes: the seconds show through.
        assert!(text.ends_with(":03"), "{text}");
    }
}
