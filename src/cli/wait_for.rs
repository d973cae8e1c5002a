//! `supervisor wait-for TARGET...`: wait until each target answers its
//! readiness check (the init containers of `export kubernetes`, and the
//! exec probes for legacy ZMQ health). Targets: `tcp://HOST:PORT` (or
//! `HOST:PORT`), `http://HOST:PORT/PATH` (2xx), `zmq://HOST:PORT` (the
//! legacy health request, docs/legacy.md). One probe attempt is
//! `crate::health::probe`; this file owns the retry loop and its messages.

use std::time::Duration;

use anyhow::Context;

use super::Exit;
use crate::manifest::Probe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `tcp://HOST:PORT`, `HOST:PORT`, `http://HOST:PORT/PATH` or `zmq://HOST:PORT`.
    #[arg(required = true, value_parser = parse_target)]
    pub targets: Vec<Probe>,
    /// Give up (exit 1) when not every target answered after this many seconds.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
    /// Time between attempts.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub interval: f64,
    /// No line while waiting (for probes); the failure is still printed.
    #[arg(long)]
    pub quiet: bool,
}

/// A target as a manifest probe.
pub fn parse_target(text: &str) -> Result<Probe, String> {
    let host_port = |rest: &str| -> Result<(String, u16), String> {
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}`: no port (HOST:PORT)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("`{text}`: `{port}` is not a port (1-65535)"))?;
        if host.is_empty() {
            return Err(format!("`{text}`: no host"));
        }
        Ok((host.trim_matches(['[', ']']).to_string(), port))
    };
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(Probe::Http { url: text.into() });
    }
    if let Some(rest) = text.strip_prefix("zmq://") {
        let (host, port) = host_port(rest)?;
        return Ok(Probe::Zmq { host, port });
    }
    let rest = text.strip_prefix("tcp://").unwrap_or(text);
    if rest.contains("://") {
        return Err(format!(
            "`{text}`: unknown scheme (tcp://, http://, https://, zmq://)"
        ));
    }
    let (host, port) = host_port(rest)?;
    Ok(Probe::Tcp { host, port })
}

fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Tcp { host, port } => format!("tcp://{host}:{port}"),
        Probe::Http { url } => url.clone(),
        Probe::Zmq { host, port } => format!("zmq://{host}:{port}"),
        Probe::Exec { command } => command.join(" "),
    }
}

/// Lines while waiting come at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(5);

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(wait(args))
}

async fn wait(args: Args) -> anyhow::Result<Exit> {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let interval = Duration::from_secs_f64(args.interval).max(Duration::from_millis(10));
    for target in &args.targets {
        let name = describe(target);
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            let attempt = interval.max(Duration::from_millis(500)).min(
                deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(100)),
            );
            let error = match crate::health::probe(target, attempt).await {
                Ok(()) => {
                    if !args.quiet {
                        eprintln!(
                            "ready: {name} (after {:.1}s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    break;
                }
                Err(error) => error,
            };
            let now = tokio::time::Instant::now();
            if now + interval > deadline {
                eprintln!(
                    "error: gave up waiting for {name} after {:.0}s (--timeout {}): {error}",
                    started.elapsed().as_secs_f64(),
                    args.timeout
                );
                return Ok(Exit::Problems);
            }
            if !args.quiet && last_report.is_none_or(|at| now - at >= REPORT_EVERY) {
                eprintln!(
                    "waiting for {name}: {error} ({:.0}s of {}s)",
                    started.elapsed().as_secs_f64(),
                    args.timeout
                );
                last_report = Some(now);
            }
            tokio::time::sleep_until(now + interval).await;
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_scheme() {
        assert_eq!(
            parse_target("store.default.svc:17200"),
            Ok(Probe::Tcp {
                host: "store.default.svc".into(),
                port: 17200
            })
        );
        assert_eq!(
            parse_target("zmq://a:5571"),
            Ok(Probe::Zmq {
                host: "a".into(),
                port: 5571
            })
        );
        assert!(matches!(
            parse_target("http://a:1/x"),
            Ok(Probe::Http { .. })
        ));
        assert!(parse_target("a").unwrap_err().contains("no port"));
        assert!(parse_target("a:0").is_err());
        assert!(
            parse_target("udp://a:1")
                .unwrap_err()
                .contains("unknown scheme")
        );
    }
}
