//! The web dashboard of a running supervisor (`supervisor dashboard`,
//! `up --dashboard ADDR`): one page, served with its script and style
//! embedded in the binary, updated live over server-sent events.
//!
//! Access: two random tokens, made at start. The operator link
//! (`/?token=OPERATOR`) may restart, stop and start agents; the viewer link
//! (`/?token=VIEWER`) only looks. Every request without a valid token gets
//! 401. An action also needs the operator token in the `X-Dashboard-Token`
//! header (a page of another origin cannot set it without a CORS preflight
//! this server never grants) and, when the browser sends `Origin`, the
//! dashboard's own origin. Every action, refused ones too, is appended to
//! `<run-dir>/dashboard-audit.jsonl` (when, role, what, result, peer).
//! Loopback addresses only, unless `--allow-remote`.
//!
//! Data: a thread holds a `watch` request on the control socket
//! (`control::protocol::Request::Watch`) and feeds each status to the model
//! task, which owns the [`model::Model`] (timeline included); a task tails
//! `<run-dir>/errors.jsonl`. The model task publishes the model and its JSON
//! on a watch channel that every HTTP handler reads. Actions and log tails
//! go to the control socket and the log files directly.
//!
//! Layout: [`model`] (the page's data, the restart timeline), this file
//! (tokens, HTTP routes, feeds, audit), `page.html` (the page).
//!
//! Owns no agent state: what it shows comes from the supervisor, what it
//! changes goes through the control socket like `supervisor restart` does.

pub mod model;

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{Client, ControlError, Request, RunDir, StatusView};
use crate::plan::Plan;
use crate::plan::draw::Layout;
use model::Model;

/// The page, its script and style inline.
const PAGE: &str = include_str!("page.html");

/// The shortest time between two events to one page.
const EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// How often the error journal is read for new records.
const ERRORS_INTERVAL: Duration = Duration::from_millis(500);

/// The header an action must carry the operator token in.
pub const TOKEN_HEADER: &str = "x-dashboard-token";

/// The audit log's file name in the run directory.
pub const AUDIT_FILE: &str = "dashboard-audit.jsonl";

/// Log bytes sent at most per log request.
const LOG_CHUNK: u64 = 256 * 1024;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind; port 0 picks a free one (the real address is in
    /// [`Links::address`]).
    pub listen: SocketAddr,
    /// Serve on an address other than loopback.
    pub allow_remote: bool,
}

/// The two links, as printed.
#[derive(Debug, Clone)]
pub struct Links {
    /// The address actually bound.
    pub address: SocketAddr,
    /// `http://ADDRESS/?token=OPERATOR`: may look and act.
    pub operator: String,
    /// `http://ADDRESS/?token=VIEWER`: may only look.
    pub viewer: String,
}

/// Why the dashboard did not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "refusing to serve the dashboard on {0}: it is not a loopback address; pass --allow-remote to serve it there"
    )]
    /// The listen address is not loopback and `allow_remote` was not given.
    Remote(SocketAddr),
    /// The listen address could not be bound (in use, no permission).
    #[error("binding the dashboard on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The bind error (or `local_addr`'s).
        #[source]
        source: std::io::Error,
    },
    /// `/dev/urandom` could not be read for the tokens, or the status feed
    /// thread could not be started.
    #[error("making the access tokens: {0}")]
    Random(std::io::Error),
}

/// Who a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The viewer link: every read route, no actions.
    Viewer,
    /// The operator link: reads and actions (`POST /api/action`).
    Operator,
}

impl Role {
    /// `viewer` or `operator`: the page's `__ROLE__` and the audit's `role`.
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// The model and its JSON, as the model task last published them.
struct Published {
    /// The model, for handlers that need its structure (graph, known agents).
    model: Model,
    /// The model serialised once per change, shared by every page and event.
    json: Arc<str>,
}

/// What every handler needs.
#[derive(Clone)]
struct App {
    /// Where the control socket, agent logs and audit log are.
    run_dir: RunDir,
    /// 32 hex digits; grants [`Role::Operator`].
    operator_token: Arc<str>,
    /// 32 hex digits; grants [`Role::Viewer`].
    viewer_token: Arc<str>,
    /// Published by the model task; closed when it ends.
    published: watch::Receiver<Arc<Published>>,
}

/// What the feeds tell the model task.
enum Input {
    /// A status from the supervisor's `watch` stream.
    Status(Box<StatusView>),
    /// The control socket could not be reached or failed, with why.
    Disconnected(String),
    /// New records of `errors.jsonl`, each parsed as JSON.
    Errors(Vec<serde_json::Value>),
}

/// Binds, starts the feeds and serves until `token` is cancelled; the tasks
/// live on `tracker` (the status feed is a thread that ends within a few
/// seconds of the cancellation). Returns the links to print.
///
/// # Errors
///
/// [`DashboardError::Remote`] for a non-loopback address without
/// `allow_remote`, [`DashboardError::Bind`] when the address cannot be
/// bound, [`DashboardError::Random`] when no tokens can be made or the
/// status feed thread cannot be started.
pub async fn start(
    run_dir: RunDir,
    options: Options,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Links, DashboardError> {
    if !options.listen.ip().is_loopback() && !options.allow_remote {
        return Err(DashboardError::Remote(options.listen));
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| DashboardError::Bind {
            address: options.listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| DashboardError::Bind {
            address: options.listen,
            source,
        })?;
    let operator_token: Arc<str> = random_token().map_err(DashboardError::Random)?.into();
    let viewer_token: Arc<str> = random_token().map_err(DashboardError::Random)?.into();
    let host = crate::check::local_hostname();
    let (inputs, inputs_receiver) = mpsc::channel(64);
    let model = Model::new(&host);
    let (publisher, published) = watch::channel(Arc::new(publish(model.clone())));
    tracker.spawn(run_model(model, inputs_receiver, publisher, token.clone()));
    {
        let (run_dir, inputs, token) = (run_dir.clone(), inputs.clone(), token.clone());
        std::thread::Builder::new()
            .name("dashboard-feed".into())
            .spawn(move || feed_status(run_dir, inputs, token))
            .map_err(DashboardError::Random)?;
    }
    tracker.spawn(feed_errors(run_dir.clone(), inputs, token.clone()));
    let app = App {
        run_dir,
        operator_token: operator_token.clone(),
        viewer_token: viewer_token.clone(),
        published,
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/api/model", get(model_json))
        .route("/api/events", get(events))
        .route("/api/graph.svg", get(graph))
        .route("/api/log", get(log_tail))
        .route("/api/action", post(action))
        .layer(axum::middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app);
    let shutdown = token.clone();
    tracker.spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
        if let Err(error) = served {
            tracing::warn!(%error, "dashboard: serving ended");
        }
    });
    let base = format!("http://{address}/?token=");
    Ok(Links {
        address,
        operator: format!("{base}{operator_token}"),
        viewer: format!("{base}{viewer_token}"),
    })
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The model with its JSON (`{}` if it cannot be serialised).
fn publish(model: Model) -> Published {
    let json = serde_json::to_string(&model)
        .unwrap_or_else(|_| "{}".to_string())
        .into();
    Published { model, json }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): the
/// timeline's clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The model task: applies the feeds' inputs, publishes after each.
async fn run_model(
    mut model: Model,
    mut inputs: mpsc::Receiver<Input>,
    publisher: watch::Sender<Arc<Published>>,
    token: CancellationToken,
) {
    let host = model.dashboard_host.clone();
    loop {
        let input = tokio::select! {
            _ = token.cancelled() => return,
            input = inputs.recv() => input,
        };
        match input {
            None => return,
            Some(Input::Status(status)) => model.status(&host, *status, now_ms()),
            Some(Input::Disconnected(why)) => model.disconnected(&host, why),
            Some(Input::Errors(records)) => model.errors(&host, records),
        }
        publisher.send_replace(Arc::new(publish(model.clone())));
    }
}

/// The status feed (a thread: the control client blocks). Holds a `watch`
/// on the control socket; reconnects every second while the supervisor
/// cannot be reached. Ends with `token` or the model task.
fn feed_status(run_dir: RunDir, inputs: mpsc::Sender<Input>, token: CancellationToken) {
    let read_timeout = Duration::from_secs(2);
    while !token.is_cancelled() {
        let mut client = match Client::connect(&run_dir) {
            Ok(client) => client,
            Err(error) => {
                if inputs
                    .blocking_send(Input::Disconnected(error.to_string()))
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut answer = client.request(&Request::Watch, Duration::from_secs(5));
        loop {
            match answer {
                Ok(response) => {
                    if let Some(status) = response.status
                        && inputs
                            .blocking_send(Input::Status(Box::new(status)))
                            .is_err()
                    {
                        return;
                    }
                }
                // Nothing changed for a while: still watching.
                Err(ControlError::Timeout(_)) => {}
                Err(error) => {
                    if inputs
                        .blocking_send(Input::Disconnected(error.to_string()))
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
            if token.is_cancelled() {
                return;
            }
            answer = client.next_response(read_timeout);
        }
    }
}

/// The error feed: new complete lines of `<run-dir>/errors.jsonl`, from its
/// last 64 KiB at the start; starts over when the file is rotated.
async fn feed_errors(run_dir: RunDir, inputs: mpsc::Sender<Input>, token: CancellationToken) {
    let path = run_dir.path.join("errors.jsonl");
    let mut offset: Option<u64> = None;
    let mut interval = tokio::time::interval(ERRORS_INTERVAL);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        let path = path.clone();
        let read = tokio::task::spawn_blocking(move || read_new_lines(&path, offset, 64 * 1024))
            .await
            .ok()
            .flatten();
        let Some((next, lines)) = read else { continue };
        offset = Some(next);
        let records: Vec<serde_json::Value> = lines
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        if !records.is_empty() && inputs.send(Input::Errors(records)).await.is_err() {
            return;
        }
    }
}

/// The complete lines of `path` after `offset` (or, without one, in its
/// last `backlog` bytes) and the offset after them. A file shorter than
/// `offset` was rotated: read from its start.
fn read_new_lines(
    path: &std::path::Path,
    offset: Option<u64>,
    backlog: u64,
) -> Option<(u64, Vec<String>)> {
    let mut file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let start = match offset {
        Some(offset) if offset <= size => offset,
        Some(_) => 0,
        None => size.saturating_sub(backlog),
    };
    // Starting mid-file without an offset: from the byte before, so a line
    // cut by the start is recognised and left out.
    let from = if offset.is_none() && start > 0 {
        start - 1
    } else {
        start
    };
    let length = (size - from).min(LOG_CHUNK);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut bytes = vec![0; length as usize];
    file.read_exact(&mut bytes).ok()?;
    let begin = if from < start {
        bytes
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(bytes.len(), |at| at + 1)
    } else {
        0
    };
    // Only whole lines; the rest is read next time.
    let end = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |at| at + 1)
        .max(begin);
    let text = String::from_utf8_lossy(&bytes[begin..end]);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    Some((from + end as u64, lines))
}

/// The `token` query parameter.
fn query_token(request: &HttpRequest) -> Option<&str> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// Equal without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// Every request: a valid token or 401; the role goes to the handler.
async fn authorize(State(app): State<App>, mut request: HttpRequest, next: Next) -> Response {
    let role = match query_token(&request) {
        Some(token) if same(token, &app.operator_token) => Role::Operator,
        Some(token) if same(token, &app.viewer_token) => Role::Viewer,
        _ => {
            return (
                StatusCode::UNAUTHORIZED,
                "401: this dashboard needs the link with its access token (printed by `supervisor dashboard`)\n",
            )
                .into_response();
        }
    };
    request.extensions_mut().insert(role);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("valid header"),
    );
    headers.insert(
        "referrer-policy",
        "no-referrer".parse().expect("valid header"),
    );
    headers.insert("x-frame-options", "DENY".parse().expect("valid header"));
    response
}

/// `GET /`: the page, told its role, under a content security policy that
/// allows only its inline script and style and requests to this server.
async fn page(axum::Extension(role): axum::Extension<Role>) -> Response {
    let html = PAGE.replace("__ROLE__", role.as_str());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'",
            ),
        ],
        html,
    )
        .into_response()
}

/// `GET /api/model`: the last published model as JSON.
async fn model_json(State(app): State<App>) -> Response {
    let json = app.published.borrow().json.clone();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

/// Server-sent events: the model now, then after every change.
async fn events(State(app): State<App>) -> impl IntoResponse {
    let receiver = app.published.clone();
    let stream =
        futures_util::stream::unfold((receiver, true), |(mut receiver, first)| async move {
            if !first {
                tokio::time::sleep(EVENT_INTERVAL).await;
                receiver.changed().await.ok()?;
            }
            let json = receiver.borrow_and_update().json.clone();
            let event = Event::default().event("model").data(json.as_ref());
            Some((Ok::<Event, Infallible>(event), (receiver, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The dependency graph of the agents in the last status, drawn by
/// `plan::draw`; the critical path weighs agents by their measured time to
/// ready (1 s before one is known).
async fn graph(State(app): State<App>) -> Response {
    let published = app.published.borrow().clone();
    let mut edges: Vec<(String, Vec<String>)> = Vec::new();
    let mut ready_time = std::collections::HashMap::new();
    for host in &published.model.hosts {
        for agent in host.status.iter().flat_map(|status| &status.agents) {
            edges.push((agent.name.clone(), agent.dependencies.clone()));
            ready_time.insert(agent.name.clone(), agent.time_to_ready_s.unwrap_or(1.0));
        }
    }
    let planned = Plan::around_knots_of_edges(&edges);
    let (path, _) = planned.plan.critical_path(|name| {
        Duration::from_secs_f64(ready_time.get(name).copied().unwrap_or(1.0).max(0.0))
    });
    let svg = Layout::new(&planned, &path).svg();
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// `GET /api/log?agent=NAME[&offset=N]`.
#[derive(Debug, Deserialize)]
struct LogQuery {
    /// The agent whose log to read; must be in the last status of this host.
    agent: String,
    /// The offset a previous answer returned; absent: the log's last 16 KiB.
    offset: Option<u64>,
}

/// The end of an agent's log (its last 16 KiB), or what was written after
/// `offset`: `{"offset": N, "lines": [...]}`.
async fn log_tail(State(app): State<App>, Query(query): Query<LogQuery>) -> Response {
    let known = {
        let published = app.published.borrow();
        published
            .model
            .has_agent(&published.model.dashboard_host, &query.agent)
    };
    if !known {
        return (StatusCode::NOT_FOUND, "no such agent\n").into_response();
    }
    let path = app.run_dir.agent_log(&query.agent);
    let offset = query.offset;
    let read = tokio::task::spawn_blocking(move || read_new_lines(&path, offset, 16 * 1024))
        .await
        .ok()
        .flatten();
    let (offset, lines) = read.unwrap_or((0, Vec::new()));
    axum::Json(serde_json::json!({ "offset": offset, "lines": lines })).into_response()
}

/// `POST /api/action` body: `{"action": "restart"|"stop"|"start", "agent": NAME}`.
#[derive(Debug, Deserialize)]
struct ActionBody {
    /// `restart`, `stop` or `start`; anything else is refused with 400.
    action: String,
    /// The agent to act on; must be in the last status of this host.
    agent: String,
}

/// `POST /api/action`: restart, stop or start one agent of this host.
/// Refused with 403 for the viewer, without the operator token in
/// [`TOKEN_HEADER`] or from another origin, 400 for an unknown action, 404
/// for an unknown agent; the supervisor's refusal is 409, a control socket
/// failure 502. Every attempt, refused or not, appends one line to
/// [`AUDIT_FILE`].
async fn action(
    State(app): State<App>,
    axum::Extension(role): axum::Extension<Role>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::Json<ActionBody>,
) -> Response {
    let ActionBody { action, agent } = body.0;
    let refusal = if role != Role::Operator {
        Some((StatusCode::FORBIDDEN, "refused: the viewer link cannot act"))
    } else if !headers
        .get(TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| same(value, &app.operator_token))
    {
        Some((StatusCode::FORBIDDEN, "refused: no operator token header"))
    } else if !same_origin(&headers) {
        Some((StatusCode::FORBIDDEN, "refused: another origin"))
    } else if !matches!(action.as_str(), "restart" | "stop" | "start") {
        Some((StatusCode::BAD_REQUEST, "refused: unknown action"))
    } else {
        let published = app.published.borrow();
        (!published
            .model
            .has_agent(&published.model.dashboard_host, &agent))
        .then_some((StatusCode::NOT_FOUND, "refused: unknown agent"))
    };
    let (status, result) = match refusal {
        Some((status, why)) => (status, why.to_string()),
        None => {
            let run_dir = app.run_dir.clone();
            let (action, agent) = (action.clone(), agent.clone());
            let answer = tokio::task::spawn_blocking(move || {
                let agents = vec![agent];
                let request = match action.as_str() {
                    "restart" => Request::Restart {
                        agents,
                        with_dependents: false,
                    },
                    "stop" => Request::Stop { agents },
                    _ => Request::Start { agents },
                };
                Client::connect(&run_dir)
                    .and_then(|mut client| client.request(&request, Duration::from_secs(10)))
            })
            .await;
            match answer {
                Ok(Ok(response)) if response.ok => (
                    StatusCode::OK,
                    format!("ok: {}", response.agents.join(", ")),
                ),
                Ok(Ok(response)) => (
                    StatusCode::CONFLICT,
                    format!("error: {}", response.error.unwrap_or_default()),
                ),
                Ok(Err(error)) => (StatusCode::BAD_GATEWAY, format!("error: {error}")),
                Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("error: {error}")),
            }
        }
    };
    let line = serde_json::json!({
        "at": crate::transport::messages::now_rfc3339(),
        "role": role.as_str(),
        "action": action,
        "agent": agent,
        "host": app.published.borrow().model.dashboard_host,
        "peer": peer.to_string(),
        "result": result,
    });
    let audit = app.run_dir.path.join(AUDIT_FILE);
    if let Err(error) = crate::files::open_append(&audit)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()))
    {
        tracing::warn!(%error, path = %audit.display(), "dashboard: cannot write the audit log");
    }
    (status, axum::Json(serde_json::json!({ "result": result }))).into_response()
}

/// No `Origin`, or the origin this request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    origin.to_str().ok() == Some(format!("http://{host}").as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lines_are_read_whole_and_rotation_starts_over() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("errors.jsonl");
        std::fs::write(&path, "old\nfirst\nsecond\npart").unwrap();
        let (offset, lines) = read_new_lines(&path, None, 12).unwrap();
        assert_eq!(lines, vec!["second"]);
        let (_, lines) = read_new_lines(&path, None, 13).unwrap();
        assert_eq!(lines, vec!["second"], "a cut line is left out");
        let (_, lines) = read_new_lines(&path, None, 17).unwrap();
        assert_eq!(lines, vec!["first", "second"]);
        std::fs::write(&path, "old\nfirst\nsecond\npartial\nthird\n").unwrap();
        let (offset, lines) = read_new_lines(&path, Some(offset), 12).unwrap();
        assert_eq!(lines, vec!["partial", "third"]);
        std::fs::write(&path, "new\n").unwrap();
        let (_, lines) = read_new_lines(&path, Some(offset), 12).unwrap();
        assert_eq!(lines, vec!["new"]);
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..31]));
    }
}
