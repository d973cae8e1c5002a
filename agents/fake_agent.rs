//! `fake-agent`: the test agent of the integration tests and the startup
//! benchmark. Its flags choose its behaviour: how long before it is ready,
//! when it crashes and with which code, whether it ignores SIGTERM, forks a
//! grandchild, hangs or holds memory. It records `start`, `ready` and `stop` lines with
//! wall-clock timestamps to a file so tests can check the start order.
//!
//! Ready means: it listens on `--port` (or `AGENT_PORT`) on `--bind`
//! (default 127.0.0.1) and
//! answers every connection with `HTTP/1.1 200 OK` (so tcp and http probes
//! both work; HTTP/1.1 requests keep the connection open for the next one,
//! as real servers do), and/or it has written `--ready-file`.
//!
//! Owns nothing of the supervisor; it only uses what an agent sees (argv,
//! environment, signals).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    name = "fake-agent",
    about = "A configurable agent for supervisor tests"
)]
struct Args {
    /// Name used in records (default: AGENT_NAME, else `fake`).
    #[arg(long, env = "AGENT_NAME", default_value = "fake")]
    name: String,
    /// Port to listen on once ready.
    #[arg(long, env = "AGENT_PORT")]
    port: Option<u16>,
    /// Address to listen on (two-host tests listen on their namespace's address).
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Time from start to ready (`200ms`, `1s`, `2m` or seconds).
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    ready_after: Duration,
    /// Write this file when ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Exit with `--exit-code` this long after start.
    #[arg(long, value_parser = parse_duration)]
    crash_after: Option<Duration>,
    #[arg(long, default_value_t = 1)]
    exit_code: i32,
    /// Keep running on SIGTERM (only SIGKILL stops it).
    #[arg(long)]
    ignore_sigterm: bool,
    /// On SIGTERM, wait this long before exiting.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    stop_delay: Duration,
    /// Start a child process (sleeping forever) in the same process group.
    #[arg(long)]
    fork_grandchild: bool,
    /// Where to write the grandchild's pid.
    #[arg(long)]
    grandchild_pid_file: Option<PathBuf>,
    /// Stop answering connections this long after start (still listening).
    #[arg(long, value_parser = parse_duration)]
    hang_after: Option<Duration>,
    /// Append `start|ready|stop NAME UNIX_NANOS PID` lines here.
    #[arg(long, env = "FAKE_AGENT_RECORD")]
    record: Option<PathBuf>,
    /// Also record `http-connection` (the first request on a connection)
    /// and `http-request` (every request) lines.
    #[arg(long)]
    record_http: bool,
    /// Close a kept-alive HTTP connection idle this long (uvicorn: 5 s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    keep_alive_idle: Duration,
    /// Once ready, allocate and touch this many MiB and hold them (memory
    /// limit tests).
    #[arg(long, default_value_t = 0)]
    allocate_mb: usize,
    /// If this file holds a number N > 0, write N-1 and exit 1 at once
    /// (crash at start N times in a row; chaos tests).
    #[arg(long)]
    crash_at_start_file: Option<PathBuf>,
    /// Once ready, print this many lines per second to stdout (0: none).
    #[arg(long, default_value_t = 0)]
    flood_lines_per_sec: u32,
    /// Internal: be the grandchild (sleep until killed).
    #[arg(long, hide = true)]
    sleep_forever: bool,
}

/// `500ms`, `1s`, `2m`, `1.5` (seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration `{text}`"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in `{text}`")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn record(args: &Args, what: &str) {
    if let Some(path) = &args.record {
        record_line(path, &args.name, what);
    }
}

fn record_line(path: &std::path::Path, name: &str, what: &str) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0);
    let line = format!("{what} {name} {nanos} {}\n", std::process::id());
    // One write of a short line with O_APPEND: lines of concurrent agents do not interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.sleep_forever {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fake-agent: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(args));
    std::process::ExitCode::from(code as u8)
}

async fn run(args: Args) -> i32 {
    let started = tokio::time::Instant::now();
    record(&args, "start");
    if let Some(path) = &args.crash_at_start_file {
        let left: u32 = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        if left > 0 {
            let _ = std::fs::write(path, format!("{}\n", left - 1));
            eprintln!(
                "fake-agent {}: crashing at start ({} more to go)",
                args.name,
                left - 1
            );
            record(&args, "crash");
            return 1;
        }
    }
    let mut flood = tokio::time::interval(Duration::from_millis(10));
    let flood_per_tick = args.flood_lines_per_sec.div_ceil(100);
    println!(
        "fake-agent {} started (pid {})",
        args.name,
        std::process::id()
    );
    let _grandchild = if args.fork_grandchild {
        fork_grandchild(&args)
    } else {
        None
    };
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        eprintln!("fake-agent: cannot watch SIGTERM");
        return 2;
    };
    let never = Duration::from_secs(365 * 24 * 3600);
    let crash_at = started + args.crash_after.unwrap_or(never);
    let hang_at = started + args.hang_after.unwrap_or(never);
    let ready = tokio::time::sleep_until(started + args.ready_after);
    tokio::pin!(ready);
    let server = std::sync::Arc::new(HttpServer {
        hang_at,
        keep_alive_idle: args.keep_alive_idle,
        record: args
            .record_http
            .then(|| args.record.clone().map(|path| (path, args.name.clone())))
            .flatten(),
    });
    let mut listener: Option<tokio::net::TcpListener> = None;
    let mut is_ready = false;
    let mut _held_memory: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = &mut ready, if !is_ready => {
                is_ready = true;
                if let Some(port) = args.port {
                    match tokio::net::TcpListener::bind((args.bind.as_str(), port)).await {
                        Ok(bound) => listener = Some(bound),
                        Err(error) => {
                            eprintln!("fake-agent {}: cannot listen on {port}: {error}", args.name);
                            return 3;
                        }
                    }
                }
                if let Some(path) = &args.ready_file {
                    let _ = std::fs::write(path, b"ready\n");
                }
                record(&args, "ready");
                println!("fake-agent {} ready", args.name);
                if args.allocate_mb > 0 {
                    // Written, not just reserved, so it counts as resident.
                    _held_memory = vec![1u8; args.allocate_mb * 1024 * 1024];
                    println!("fake-agent {}: holding {} MiB", args.name, args.allocate_mb);
                }
            }
            _ = flood.tick(), if is_ready && flood_per_tick > 0 => {
                for line in 0..flood_per_tick {
                    println!("fake-agent {} flood line {line} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", args.name);
                }
            }
            accepted = accept(&listener) => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer(stream, server.clone()));
                }
            }
            _ = tokio::time::sleep_until(crash_at) => {
                eprintln!("fake-agent {}: crashing with code {}", args.name, args.exit_code);
                record(&args, "crash");
                return args.exit_code;
            }
            _ = terminate.recv() => {
                if args.ignore_sigterm {
                    println!("fake-agent {}: ignoring SIGTERM", args.name);
                    continue;
                }
                record(&args, "stop");
                tokio::time::sleep(args.stop_delay).await;
                println!("fake-agent {}: stopped", args.name);
                return 0;
            }
        }
    }
}

async fn accept(
    listener: &Option<tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How the agent answers HTTP, shared by its connections.
struct HttpServer {
    /// From then on, nothing is answered, on new and kept connections alike.
    hang_at: tokio::time::Instant,
    /// A kept connection idle this long is closed.
    keep_alive_idle: Duration,
    /// `--record-http`: the record file and the agent's name.
    record: Option<(PathBuf, String)>,
}

/// The answer to a request that keeps the connection.
const KEPT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
/// The answer that closes it.
const CLOSING: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// Answers requests on one connection as HTTP/1.1 servers do: 200 with a
/// length, and the connection kept for the next request unless the request
/// asks to close (`Connection: close`, or HTTP/1.0 without keep-alive); a
/// kept connection idle for `--keep-alive-idle` is closed. A connection
/// whose first request does not arrive within 200 ms (a tcp probe, a bare
/// connect) is answered 200 and closed all the same.
async fn answer(mut stream: tokio::net::TcpStream, server: std::sync::Arc<HttpServer>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut requests = 0u64;
    loop {
        let wait = if requests == 0 {
            Duration::from_millis(200)
        } else {
            server.keep_alive_idle
        };
        let until = tokio::time::Instant::now() + wait;
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break Some(end + 4);
            }
            if buffer.len() > 16 * 1024 {
                return;
            }
            match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
                Ok(Ok(read)) if read > 0 => buffer.extend_from_slice(&chunk[..read]),
                _ => break None,
            }
        };
        if tokio::time::Instant::now() >= server.hang_at {
            // Hung: keep the connection open and never answer.
            std::future::pending::<()>().await
        }
        let Some(head_end) = head_end else {
            if requests == 0 {
                let _ = stream.write_all(CLOSING).await;
                let _ = stream.shutdown().await;
            }
            return;
        };
        requests += 1;
        if let Some((path, name)) = &server.record {
            if requests == 1 {
                record_line(path, name, "http-connection");
            }
            record_line(path, name, "http-request");
        }
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        buffer.drain(..head_end);
        let close = head.contains("\r\nconnection: close")
            || (head
                .split("\r\n")
                .next()
                .is_some_and(|line| line.ends_with("http/1.0"))
                && !head.contains("\r\nconnection: keep-alive"));
        if close {
            let _ = stream.write_all(CLOSING).await;
            let _ = stream.shutdown().await;
            return;
        }
        if stream.write_all(KEPT).await.is_err() {
            return;
        }
    }
}

fn fork_grandchild(args: &Args) -> Option<std::process::Child> {
    let exe = std::env::current_exe().ok()?;
    let child = std::process::Command::new(exe)
        .arg("--sleep-forever")
        .stdin(std::process::Stdio::null())
        .spawn()
        .ok()?;
    println!("fake-agent {}: grandchild {}", args.name, child.id());
    if let Some(path) = &args.grandchild_pid_file {
        let _ = std::fs::write(path, child.id().to_string());
    }
    Some(child)
}
