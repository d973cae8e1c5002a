//! The control socket task: accepts connections on `control.sock`, reads
//! one [`Request`] per line and answers one [`Response`] per line. Status
//! comes from the supervisor's watch channel; changes go to the supervisor
//! as commands through its [`SupervisorHandle`] (each with a oneshot reply).
//!
//! Owns the listener and one task per connection. Defences: a request is at
//! most [`MAX_REQUEST_BYTES`]; a connection that sends nothing for
//! [`IDLE_TIMEOUT`] is closed; at most [`MAX_CONNECTIONS`] connections are
//! served at once (more are told "busy" and closed). A malformed request
//! gets an error response and the connection stays usable.
//!
//! Does not own the wire types ([`super::protocol`]), loading and checking
//! new manifests ([`super::reload`]) or any agent state: the status is the
//! supervisor's, and commands for agents of another host go to that host's
//! supervisor over the peer link (`crate::link`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{
    MAX_REQUEST_BYTES, ReloadView, Request, Response, StatusView, WATCH_INTERVAL,
};
use super::reload::{Reloader, reload_once};
use crate::link::Verb;
use crate::supervisor::SupervisorHandle;

/// A connection idle this long (no complete request) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 32;

/// What every connection task needs.
#[derive(Clone)]
pub struct ServerContext {
    /// Commands to the supervisor task; fails once it has ended.
    pub handle: SupervisorHandle,
    /// Loads and checks the manifests for `reload`; `None` refuses it.
    pub reloader: Option<Reloader>,
    /// Requests answered so far (read by the metrics listener).
    pub requests: Arc<AtomicU64>,
    /// The peer link's view of the other hosts (published by the link
    /// task); `None` without a link.
    pub link: Option<crate::link::LinkHandle>,
}

/// Serves `listener` until `token` is cancelled. Connection tasks are
/// spawned on `tracker` and also end with `token`.
pub async fn run(
    listener: UnixListener,
    context: ServerContext,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket: accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracker.spawn(refuse(stream));
            continue;
        };
        let context = context.clone();
        let token = token.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = serve(stream, &context) => {}
            }
            drop(slot);
        });
    }
}

/// Answers a connection over [`MAX_CONNECTIONS`] with `busy` (within a
/// second) and closes it.
async fn refuse(mut stream: UnixStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        write_response(&mut stream, &Response::error("busy: too many connections")),
    )
    .await;
}

/// One connection: request lines answered in turn until the client closes,
/// stays idle past [`IDLE_TIMEOUT`], or sends a line over
/// [`MAX_REQUEST_BYTES`] (answered with an error, then closed).
async fn serve(stream: UnixStream, context: &ServerContext) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader).take(limit).read_until(b'\n', &mut line),
        )
        .await;
        let Ok(Ok(count)) = read else {
            return; // idle too long, or a read error
        };
        if count == 0 {
            return;
        }
        if line.len() > MAX_REQUEST_BYTES || (line.last() != Some(&b'\n') && count as u64 == limit)
        {
            let refusal = Response::error(format!(
                "request larger than {MAX_REQUEST_BYTES} bytes; closing the connection"
            ));
            let _ = write_response(&mut write, &refusal).await;
            return;
        }
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Watch) => {
                context.requests.fetch_add(1, Ordering::Relaxed);
                return watch(reader, write, context).await;
            }
            Ok(request) => answer(request, context).await,
            Err(error) => Response::error(format!("malformed request: {error}")),
        };
        context.requests.fetch_add(1, Ordering::Relaxed);
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
    }
}

/// Serves a `watch`: the status now, then after every published change, no
/// more often than [`WATCH_INTERVAL`], until the client closes its end (or
/// stops reading) or the supervisor's loop has ended.
async fn watch(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    context: &ServerContext,
) {
    let mut status = context.handle.subscribe();
    let mut closed = [0u8; 1];
    loop {
        let view = StatusView::from_snapshot_brief(&status.borrow_and_update());
        let response = Response {
            status: Some(view),
            ..Response::ok()
        };
        if write_response(&mut write, &response).await.is_err() {
            return;
        }
        // Anything the client sends (or its end closing) ends the watch.
        tokio::select! {
            _ = reader.read(&mut closed) => return,
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        tokio::select! {
            _ = reader.read(&mut closed) => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

/// Writes one response line, giving up after [`IDLE_TIMEOUT`] (a client
/// that does not read must not hold the task).
async fn write_response(
    write: &mut (impl AsyncWriteExt + Unpin),
    response: &Response,
) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    text.push(b'\n');
    tokio::time::timeout(IDLE_TIMEOUT, write.write_all(&text))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Start, stop or restart: agents of this host go to its supervisor, agents
/// a peer reported go to that peer over the link (it owns them). A restart
/// with dependents also restarts the peers' dependents.
async fn routed(
    context: &ServerContext,
    verb: Verb,
    agents: Vec<String>,
    with_dependents: bool,
) -> Response {
    let handle = &context.handle;
    // An agent with `replicas` is named by its instances and by its own
    // name (the supervisor resolves that to every instance).
    let local: std::collections::HashSet<String> = handle
        .subscribe()
        .borrow()
        .agents
        .iter()
        .filter(|agent| !agent.remote)
        .flat_map(|agent| {
            std::iter::once(agent.name.clone())
                .chain(agent.replica.as_ref().map(|(of, _)| of.clone()))
        })
        .collect();
    let mut here = Vec::new();
    let mut away: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for agent in agents {
        match &context.link {
            Some(link) if !local.contains(&agent) => match link.owner_of(&agent) {
                Some(peer) => away.entry(peer).or_default().push(agent),
                None => here.push(agent),
            },
            _ => here.push(agent),
        }
    }
    let mut affected = Vec::new();
    let mut errors = Vec::new();
    if !here.is_empty() || away.is_empty() {
        // The runs being restarted, for the peers (they ignore the notice
        // for an agent whose newer run they already heard of).
        // The name of an agent with `replicas` goes with each instance's
        // (a peer's dependent may name either).
        let (restarted, runs): (Vec<String>, Vec<u64>) =
            match (verb, with_dependents, &context.link) {
                (Verb::Restart, true, Some(_)) => match handle.status().await {
                    Some(status) => here
                        .iter()
                        .flat_map(|name| {
                            let own = status.agents.iter().find(|agent| agent.name == *name);
                            let instances = status.agents.iter().filter(move |agent| {
                                own.is_none()
                                    && agent.replica.as_ref().is_some_and(|(of, _)| of == name)
                            });
                            std::iter::once((name.clone(), own.map_or(0, |agent| agent.run)))
                                .chain(instances.map(|agent| (agent.name.clone(), agent.run)))
                        })
                        .unzip(),
                    None => (here.clone(), Vec::new()),
                },
                _ => (here.clone(), Vec::new()),
            };
        let result = match verb {
            Verb::Start => handle.start(here.clone()).await,
            Verb::Stop => handle.stop(here.clone()).await,
            Verb::Restart | Verb::Down => handle.restart(here.clone(), with_dependents).await,
        };
        match result {
            Ok(agents) => affected.extend(agents),
            Err(error) => errors.push(error.to_string()),
        }
        if let (Verb::Restart, true, Some(link), true) =
            (verb, with_dependents, &context.link, errors.is_empty())
        {
            link.restarted_with_dependents(restarted, runs).await;
        }
    }
    if let Some(link) = &context.link {
        for (peer, agents) in away {
            match link.forward(&peer, verb, agents, with_dependents).await {
                // As the joint status names them: `HOST/NAME` only where
                // this host has an agent of the same name.
                Ok(agents) => affected.extend(agents.into_iter().map(|agent| {
                    if local.contains(&agent) {
                        format!("{peer}/{agent}")
                    } else {
                        agent
                    }
                })),
                Err(error) => errors.push(format!("host `{peer}`: {error}")),
            }
        }
    }
    match errors.len() {
        0 => Response {
            agents: affected,
            ..Response::ok()
        },
        _ => Response {
            agents: affected,
            ..Response::error(errors.join("; "))
        },
    }
}

/// Turns one request into commands and reads; never fails, answers errors.
async fn answer(request: Request, context: &ServerContext) -> Response {
    let handle = &context.handle;
    match request {
        // Served by `watch` before it gets here.
        Request::Watch => Response::error("watch is served on its own"),
        Request::Ping => Response {
            pid: Some(std::process::id()),
            ..Response::ok()
        },
        Request::Status => {
            // Fresh from the loop, so a status right after a command shows
            // its effect (published snapshots trail by up to a second);
            // the last published one if the loop has ended.
            let snapshot = match handle.status().await {
                Some(snapshot) => snapshot,
                None => handle.subscribe().borrow().clone(),
            };
            let link = context
                .link
                .as_ref()
                .map(|link| link.snapshot.borrow().clone());
            Response {
                // Off the runtime: finding escaped processes may scan /proc.
                status: tokio::task::spawn_blocking(move || {
                    let mut view = StatusView::from_snapshot(&snapshot);
                    if let Some(link) = link {
                        view.join(link);
                    }
                    view
                })
                .await
                .ok(),
                ..Response::ok()
            }
        }
        Request::Start { agents } => routed(context, Verb::Start, agents, false).await,
        Request::Stop { agents } => routed(context, Verb::Stop, agents, false).await,
        Request::Restart {
            agents,
            with_dependents,
        } => routed(context, Verb::Restart, agents, with_dependents).await,
        Request::Down { force, all_hosts } => {
            tracing::info!(force, all_hosts, "stop requested over the control socket");
            let mut errors = Vec::new();
            if let (true, Some(link)) = (all_hosts, &context.link) {
                for peer in link.peers() {
                    if let Err(error) = link.forward(&peer, Verb::Down, Vec::new(), false).await {
                        errors.push(format!("host `{peer}`: {error}"));
                    }
                }
            }
            handle.shutdown(force).await;
            match errors.is_empty() {
                true => Response::ok(),
                false => Response {
                    errors: errors.clone(),
                    ..Response::error(format!(
                        "this host goes down; {} peer host(s) did not confirm",
                        errors.len()
                    ))
                },
            }
        }
        Request::PeerLogs { host, query } => match &context.link {
            None => Response::error("this supervisor has no peer link"),
            Some(link) => match link.logs(&host, query).await {
                Ok(page) => Response {
                    logs: Some(page),
                    ..Response::ok()
                },
                Err(error) => Response::error(format!("logs of host `{host}`: {error}")),
            },
        },
        Request::Scale { agent, count } => match handle.scale(agent, count).await {
            Ok(summary) => Response {
                reload: Some(ReloadView::from(summary)),
                ..Response::ok()
            },
            Err(error) => Response::error(error.to_string()),
        },
        Request::Reload => match &context.reloader {
            None => Response::error("reload is not available"),
            Some(reloader) => match reload_once(reloader, handle, "control request").await {
                Ok(summary) => Response {
                    reload: Some(ReloadView::from(summary)),
                    ..Response::ok()
                },
                Err(errors) => Response {
                    errors: errors.clone(),
                    ..Response::error(format!(
                        "the new configuration was refused ({} problem(s)); the old one keeps running",
                        errors.len()
                    ))
                },
            },
        },
    }
}
