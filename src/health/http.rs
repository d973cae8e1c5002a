//! The HTTP probe: a minimal HTTP/1.1 GET over a plain TCP connection,
//! kept open between probes ([`HttpClient`]).
//!
//! Owns URL parsing for probe targets, the kept connection, and the framing
//! of a response (where its head and body end, whether the connection can
//! carry the next request); heads are parsed by `httparse`. Only `http://`
//! is supported: health endpoints of local agents are plain HTTP, and a TLS
//! stack is not worth its weight for a status code. No HTTP client crate:
//! the probe needs one request, the status code, and the end of the body,
//! with one small buffer per watched agent (issue 18: 500 agents probed
//! every second must cost under 3 % of a core).
//!
//! Does not own when probes run (`watch.rs`) or what a failure means (the
//! supervisor's lifecycle).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::health::probe::{ProbeError, connect_host};

/// The parts of an `http://` URL a GET needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    /// Host as written, without brackets for IPv6 (`127.0.0.1`, `::1`, `localhost`).
    pub host: String,
    /// The port as written, else 80.
    pub port: u16,
    /// The `Host:` header value: the authority as written (`localhost:8080`, `[::1]:80`).
    pub authority: String,
    /// Path and query, at least `/`; the fragment is dropped (never sent).
    pub path: String,
}

/// Parses `http://host[:port][/path][?query][#fragment]`. The error is the
/// reason, for [`ProbeError::Unsupported`].
pub(crate) fn parse_url(url: &str) -> Result<HttpTarget, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL (expected http://host[:port]/path)".to_string());
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(
            "https is not supported by the HTTP probe; use http:// or a tcp/exec probe".to_string(),
        );
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("scheme `{scheme}` is not supported (only http://)"));
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".to_string());
    }
    let (host, port) = split_authority(authority)?;
    let path = match path {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    Ok(HttpTarget {
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` -> host and port (80 when
/// absent).
fn split_authority(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in host `{authority}`"))?;
        match after {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected `{after}` after the host")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host in the URL".to_string());
    }
    let port = match port {
        None => 80,
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("invalid port `{port}`"))?,
    };
    Ok((host.to_string(), port))
}

/// Parses `HTTP/1.x SSS reason` into the status code.
pub(crate) fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_ascii_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// How many probes one connection serves; the probe after that opens a
/// fresh one. A kept connection can go on answering while the agent no
/// longer accepts new ones (a full accept queue, a wedged accept loop); a
/// fresh connection every this many probes still catches that.
pub const PROBES_PER_CONNECTION: u32 = 10;

/// A response head (status line and headers) longer than this is not a
/// health answer: stop reading instead of buffering whatever the peer sends.
const MAX_HEAD: usize = 8 * 1024;

/// The most headers a response head may have (parsed on the stack).
const MAX_HEADERS: usize = 48;

/// A body longer than this is not read to its end to reuse the connection;
/// the next probe opens a fresh one instead.
const MAX_DRAIN: u64 = 64 * 1024;

/// Room for the head of a usual health answer (uvicorn's is ~150 bytes),
/// allocated once per client and reused by every probe.
const BUFFER_CAPACITY: usize = 512;

/// Probes one URL again and again, keeping its connection open between
/// probes (HTTP/1.1 keep-alive) when the answer allows it.
///
/// Owns the kept connection and the rules for it: a connection is reused
/// only after a whole 2xx answer (head and body) was read, for at most
/// [`PROBES_PER_CONNECTION`] probes; a kept connection found closed
/// (before the first byte of the answer) is replaced by a fresh one within
/// the same probe; any failure drops it. Every connection is reset on close
/// (see [`reset_on_close`]). One client per watch task: dropping it (a
/// restarted agent's watches are new tasks) drops the connection.
pub(crate) struct HttpClient {
    /// The URL as written, for messages.
    url: String,
    /// Where to connect and what to ask, or why the URL cannot be probed.
    target: Result<HttpTarget, String>,
    /// Keep connections between probes (`false`: one probe, `Connection: close`).
    reuse: bool,
    /// The request, built once.
    request: Vec<u8>,
    /// The connection the next probe tries first.
    kept: Option<Kept>,
    /// Response bytes of the current probe; its capacity is kept.
    buffer: Vec<u8>,
}

/// A connection kept for the next probe.
struct Kept {
    stream: TcpStream,
    /// Probes this connection has answered.
    probes: u32,
}

/// How one request on one connection went.
enum Attempt {
    /// A status code (and the connection is kept if it can be).
    Answered(u16),
    /// A kept connection turned out closed before the first byte of the
    /// answer: the error, should a fresh connection fail the same way.
    Stale(ProbeError),
    /// The probe failed.
    Failed(ProbeError),
}

impl HttpClient {
    /// A client that keeps its connection between probes.
    pub(crate) fn new(url: &str) -> HttpClient {
        HttpClient::build(url, true)
    }

    /// A client for a single probe: it asks the server to close
    /// (`Connection: close`) and reads only the response head.
    pub(crate) fn once(url: &str) -> HttpClient {
        HttpClient::build(url, false)
    }

    fn build(url: &str, reuse: bool) -> HttpClient {
        let target = parse_url(url);
        let request = match &target {
            Ok(target) => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: supervisor-probe\r\nAccept: */*\r\n{}\r\n",
                target.path,
                target.authority,
                if reuse { "" } else { "Connection: close\r\n" }
            )
            .into_bytes(),
            Err(_) => Vec::new(),
        };
        HttpClient {
            url: url.to_string(),
            target,
            reuse,
            request,
            kept: None,
            buffer: Vec::new(),
        }
    }

    /// One probe: `GET url` answered 2xx within `timeout` (connect, send,
    /// response head, and a retry on a fresh connection when the kept one
    /// turned out closed, all together).
    pub(crate) async fn probe(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        if let Err(reason) = &self.target {
            return Err(ProbeError::Unsupported {
                target: self.url.clone(),
                reason: reason.clone(),
            });
        }
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(BUFFER_CAPACITY);
        }
        match self.exchange(timeout).await {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => {
                self.kept = None;
                Err(ProbeError::HttpStatus {
                    url: self.url.clone(),
                    status,
                })
            }
            Err(error) => {
                self.kept = None;
                Err(error)
            }
        }
    }

    /// Asks on the kept connection, else (or if it turned out closed) on a
    /// fresh one, and returns the status code.
    async fn exchange(&mut self, timeout: Duration) -> Result<u16, ProbeError> {
        let deadline = Instant::now() + timeout;
        if let Some(kept) = self.kept.take()
            && is_idle(&kept.stream)
        {
            match self
                .attempt(kept.stream, kept.probes, deadline, timeout)
                .await
            {
                Attempt::Answered(status) => return Ok(status),
                Attempt::Failed(error) => return Err(error),
                // Closed by the agent while idle: not a failure, ask anew.
                Attempt::Stale(_) => {}
            }
        }
        let connected = {
            let target = self.target.as_ref().expect("probe checked the target");
            tokio::time::timeout_at(
                deadline,
                TcpStream::connect((connect_host(&target.host), target.port)),
            )
            .await
        };
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ProbeError::from_io(&self.url, "connect", error)),
            Err(_elapsed) => return Err(self.timed_out(timeout)),
        };
        reset_on_close(&stream);
        match self.attempt(stream, 0, deadline, timeout).await {
            Attempt::Answered(status) => Ok(status),
            Attempt::Stale(error) | Attempt::Failed(error) => Err(error),
        }
    }

    /// Sends the request on `stream` (which has answered `probes` probes
    /// before) and reads the response head; keeps the stream for the next
    /// probe when the answer allows it.
    async fn attempt(
        &mut self,
        mut stream: TcpStream,
        probes: u32,
        deadline: Instant,
        timeout: Duration,
    ) -> Attempt {
        let kept = probes > 0;
        let stale_or_failed = |error| {
            if kept {
                Attempt::Stale(error)
            } else {
                Attempt::Failed(error)
            }
        };
        match tokio::time::timeout_at(deadline, stream.write_all(&self.request)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return stale_or_failed(ProbeError::from_io(&self.url, "send request", error));
            }
            Err(_elapsed) => return Attempt::Failed(self.timed_out(timeout)),
        }
        self.buffer.clear();
        let (status, framing, head_length) = loop {
            let read =
                match tokio::time::timeout_at(deadline, stream.read_buf(&mut self.buffer)).await {
                    Ok(read) => read,
                    Err(_elapsed) => return Attempt::Failed(self.timed_out(timeout)),
                };
            match read {
                Ok(0) if self.buffer.is_empty() => {
                    return stale_or_failed(self.bad_reply("connection closed without a reply"));
                }
                // Some minimal servers send a status line alone and close.
                Ok(0) => return self.status_line_only(),
                Ok(_) => {}
                Err(error) if self.buffer.is_empty() => {
                    return stale_or_failed(ProbeError::from_io(&self.url, "read reply", error));
                }
                Err(error) => {
                    return Attempt::Failed(ProbeError::from_io(&self.url, "read reply", error));
                }
            }
            match parse_head(&self.buffer) {
                Head::Complete {
                    status,
                    framing,
                    length,
                } => break (status, framing, length),
                // Not HTTP/1.x as httparse reads it: judge by the first line.
                Head::Invalid if self.buffer.contains(&b'\n') => return self.status_line_only(),
                Head::Invalid | Head::Partial => {}
            }
            if self.buffer.len() > MAX_HEAD {
                return Attempt::Failed(self.bad_reply(&format!(
                    "no complete response head in the first {MAX_HEAD} bytes"
                )));
            }
        };
        let reusable = self.reuse
            && framing.reusable()
            && (200..300).contains(&status)
            && probes + 1 < PROBES_PER_CONNECTION;
        if reusable
            && self
                .drain(&mut stream, framing.body, head_length, deadline)
                .await
        {
            self.kept = Some(Kept {
                stream,
                probes: probes + 1,
            });
        }
        Attempt::Answered(status)
    }

    /// The answer when all there is to go by is the first line (the
    /// connection is not kept).
    fn status_line_only(&self) -> Attempt {
        let end = self.buffer.iter().position(|&byte| byte == b'\n');
        let line = String::from_utf8_lossy(&self.buffer[..end.unwrap_or(self.buffer.len())]);
        match parse_status_line(line.trim_end()) {
            Some(status) => Attempt::Answered(status),
            None if end.is_none() => {
                Attempt::Failed(self.bad_reply("connection closed inside the status line"))
            }
            None => Attempt::Failed(self.bad_reply(&format!(
                "not an HTTP status line: {:?}",
                truncate(&line, 80)
            ))),
        }
    }

    /// Reads the body after a head of `head_length` bytes to its end,
    /// keeping nothing of it; `true` when the connection is then ready for
    /// the next request. Gives up (`false`) on a body longer than
    /// [`MAX_DRAIN`], a malformed one, extra bytes after it, or the deadline.
    async fn drain(
        &mut self,
        stream: &mut TcpStream,
        body: Body,
        head_length: usize,
        deadline: Instant,
    ) -> bool {
        match body {
            Body::UntilClose => false,
            Body::Empty => self.buffer.len() == head_length,
            Body::Length(length) => {
                let mut received = (self.buffer.len() - head_length) as u64;
                if length > MAX_DRAIN || received > length {
                    return false;
                }
                while received < length {
                    self.buffer.clear();
                    match read_more(stream, &mut self.buffer, deadline).await {
                        Some(read) => received += read,
                        None => return false,
                    }
                }
                received == length
            }
            Body::Chunked => {
                let mut decoder = ChunkedBody::default();
                self.buffer.drain(..head_length);
                let mut drained = self.buffer.len() as u64;
                loop {
                    let Ok(progress) = decoder.feed(&self.buffer) else {
                        return false;
                    };
                    self.buffer.drain(..progress.consumed);
                    if progress.done {
                        return self.buffer.is_empty();
                    }
                    // A size line or trailer that never ends.
                    if self.buffer.len() > BUFFER_CAPACITY || drained > MAX_DRAIN {
                        return false;
                    }
                    match read_more(stream, &mut self.buffer, deadline).await {
                        Some(read) => drained += read,
                        None => return false,
                    }
                }
            }
        }
    }

    fn timed_out(&self, after: Duration) -> ProbeError {
        ProbeError::Timeout {
            target: self.url.clone(),
            after,
        }
    }

    fn bad_reply(&self, reason: &str) -> ProbeError {
        ProbeError::BadReply {
            target: self.url.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Reads more of the body into `buffer`: how many bytes, or `None` at the
/// end of the connection, an error or the deadline.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>, deadline: Instant) -> Option<u64> {
    match tokio::time::timeout_at(deadline, stream.read_buf(buffer)).await {
        Ok(Ok(read)) if read > 0 => Some(read as u64),
        _ => None,
    }
}

/// Whether a kept connection is still open and quiet: the agent has not
/// closed it (EOF) nor sent anything unasked. Costs no system call while
/// the runtime has not seen the socket become readable.
fn is_idle(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

/// What a response head says about the body after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// None (204, 304, 1xx).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Whatever comes until the server closes (no length, another
    /// transfer coding, or conflicting lengths).
    UntilClose,
}

/// How a response is framed, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Where the body ends.
    pub body: Body,
    /// The server keeps the connection open: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl Framing {
    /// Whether the connection can carry the next request once this
    /// response has been read.
    pub(crate) fn reusable(&self) -> bool {
        self.keep_alive && self.body != Body::UntilClose
    }
}

/// Reads the framing of a response from its HTTP minor version (`0` or
/// `1`), status and headers (RFC 9112 section 6.3).
pub(crate) fn framing(version: u8, status: u16, headers: &[httparse::Header<'_>]) -> Framing {
    let mut close = false;
    let mut keep_alive = false;
    let mut chunked: Option<bool> = None;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    for header in headers {
        let value = std::str::from_utf8(header.value).unwrap_or("\u{0}");
        if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding applied decides whether the message ends by itself.
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u64>() {
                Ok(value) if length.is_none_or(|length| length == value) => length = Some(value),
                _ => bad_length = true,
            }
        }
    }
    let body = if status < 200 || status == 204 || status == 304 {
        Body::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Body::Chunked,
            (Some(false), _) => Body::UntilClose,
            (None, _) if bad_length => Body::UntilClose,
            (None, Some(length)) => Body::Length(length),
            (None, None) => Body::UntilClose,
        }
    };
    Framing {
        body,
        keep_alive: !close && (version >= 1 || keep_alive),
    }
}

/// A response head read so far.
enum Head {
    /// The head is complete: `length` bytes.
    Complete {
        status: u16,
        framing: Framing,
        length: usize,
    },
    /// More bytes are needed.
    Partial,
    /// Not an HTTP/1.x response head.
    Invalid,
}

fn parse_head(buffer: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => {
            let status = response.code.expect("a complete head has a status");
            let version = response.version.expect("a complete head has a version");
            Head::Complete {
                status,
                framing: framing(version, status, response.headers),
                length,
            }
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Invalid,
    }
}

/// Decodes a chunked body as it arrives, keeping nothing of it: only where
/// it is (RFC 9112 section 7.1).
#[derive(Debug, Default)]
pub(crate) struct ChunkedBody {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: this many data bytes to go.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last (empty) chunk: trailer lines up to an empty one.
    Trailer,
    /// The body has ended.
    Done,
}

/// What [`ChunkedBody::feed`] did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes of the input used; the rest must be fed again with more after it.
    pub consumed: usize,
    /// The body has ended (right after `consumed` bytes).
    pub done: bool,
}

/// A chunked body that breaks the framing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadChunk;

impl ChunkedBody {
    /// Consumes as much of `input` as can be decoded.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<Progress, BadChunk> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        self.state = if size == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return Err(BadChunk),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(end) = rest.iter().position(|&byte| byte == b'\n') else {
                        break;
                    };
                    at += end + 1;
                    if matches!(&rest[..end], b"" | b"\r") {
                        self.state = ChunkState::Done;
                    }
                }
                ChunkState::Done => break,
            }
        }
        Ok(Progress {
            consumed: at,
            done: self.state == ChunkState::Done,
        })
    }
}

/// Makes closing `stream` send a reset instead of a FIN. An orderly close
/// costs another round of segments on loopback, processed in the probing
/// thread, and leaves whichever side closed first a TIME_WAIT socket for a
/// minute: 30,000 of them with 500 agents probed every second when every
/// probe opened a connection (issue 18); a kept connection is also
/// replaced every [`PROBES_PER_CONNECTION`] probes and after any failure.
/// Set right after connecting, so every way a connection ends is a reset.
/// Best effort: if the option cannot be set, the close is orderly.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

/// At most `max_chars` characters of `text`, for error messages.
fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, authority: &str, path: &str) -> HttpTarget {
        HttpTarget {
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_plain_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:7201/health"),
            Ok(target("127.0.0.1", 7201, "127.0.0.1:7201", "/health"))
        );
        assert_eq!(
            parse_url("http://localhost"),
            Ok(target("localhost", 80, "localhost", "/"))
        );
        assert_eq!(
            parse_url("HTTP://host:8080?x=1#top"),
            Ok(target("host", 8080, "host:8080", "/?x=1"))
        );
        assert_eq!(
            parse_url("http://h/a/b?c=d#frag"),
            Ok(target("h", 80, "h", "/a/b?c=d"))
        );
        assert_eq!(
            parse_url("http://[::1]:9000/metrics"),
            Ok(target("::1", 9000, "[::1]:9000", "/metrics"))
        );
        assert_eq!(
            parse_url("http://[::1]/"),
            Ok(target("::1", 80, "[::1]", "/"))
        );
    }

    #[test]
    fn rejects_what_it_cannot_probe() {
        assert!(
            parse_url("https://host/health")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(
            parse_url("ftp://host/")
                .unwrap_err()
                .contains("scheme `ftp`")
        );
        assert!(parse_url("host:80/health").is_err());
        assert!(parse_url("http://:80/").unwrap_err().contains("no host"));
        assert!(
            parse_url("http://host:99999/")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            parse_url("http://host:/")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            parse_url("http://user:pw@host/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(parse_url("http://[::1/").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(""), None);
    }

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn http_1_1_keeps_the_connection_unless_told_to_close() {
        let length = [header("Content-Length", "3")];
        assert_eq!(
            framing(1, 200, &length),
            Framing {
                body: Body::Length(3),
                keep_alive: true
            }
        );
        let close = [header("content-length", "3"), header("Connection", "Close")];
        assert!(!framing(1, 200, &close).reusable());
        let tokens = [
            header("Content-Length", "0"),
            header("Connection", "upgrade, close"),
        ];
        assert!(!framing(1, 200, &tokens).keep_alive);
    }

    #[test]
    fn http_1_0_keeps_the_connection_only_when_it_says_so() {
        let plain = [header("Content-Length", "3")];
        assert!(!framing(0, 200, &plain).reusable());
        let kept = [
            header("Content-Length", "3"),
            header("Connection", "keep-alive"),
        ];
        assert!(framing(0, 200, &kept).reusable());
    }

    #[test]
    fn a_body_without_length_ends_at_close() {
        assert_eq!(framing(1, 200, &[]).body, Body::UntilClose);
        assert!(!framing(1, 200, &[]).reusable());
        // Another transfer coding, or lengths that disagree.
        let gzip = [header("Transfer-Encoding", "gzip")];
        assert_eq!(framing(1, 200, &gzip).body, Body::UntilClose);
        let twice = [header("Content-Length", "3"), header("Content-Length", "4")];
        assert_eq!(framing(1, 200, &twice).body, Body::UntilClose);
        let garbage = [header("Content-Length", "three")];
        assert_eq!(framing(1, 200, &garbage).body, Body::UntilClose);
        let same = [header("Content-Length", "3"), header("Content-Length", "3")];
        assert_eq!(framing(1, 200, &same).body, Body::Length(3));
    }

    #[test]
    fn chunked_wins_over_a_length() {
        let both = [
            header("Content-Length", "99"),
            header("Transfer-Encoding", "gzip, chunked"),
        ];
        assert_eq!(framing(1, 200, &both).body, Body::Chunked);
        assert!(framing(1, 200, &both).reusable());
    }

    #[test]
    fn no_content_and_not_modified_have_no_body() {
        let length = [header("Content-Length", "10")];
        assert_eq!(framing(1, 204, &[]).body, Body::Empty);
        assert_eq!(framing(1, 304, &length).body, Body::Empty);
        assert!(framing(1, 204, &[]).reusable());
    }

    #[test]
    fn heads_are_parsed_with_their_length() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        match parse_head(response) {
            Head::Complete {
                status,
                framing,
                length,
            } => {
                assert_eq!(status, 200);
                assert_eq!(framing.body, Body::Length(2));
                assert_eq!(length, response.len() - 2);
            }
            _ => panic!("a complete head"),
        }
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Head::Partial
        ));
        assert!(matches!(parse_head(b"SSH-2.0-OpenSSH\r\n"), Head::Invalid));
    }

    /// Feeds `body` to a decoder in pieces of `piece` bytes, as a reader
    /// would: unconsumed bytes are fed again with the next piece.
    fn decode_in_pieces(body: &[u8], piece: usize) -> Result<usize, BadChunk> {
        let mut decoder = ChunkedBody::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut offset = 0;
        let mut used = 0;
        loop {
            let progress = decoder.feed(&pending)?;
            pending.drain(..progress.consumed);
            used += progress.consumed;
            if progress.done {
                return Ok(used);
            }
            if offset >= body.len() {
                return Err(BadChunk);
            }
            let end = (offset + piece).min(body.len());
            pending.extend_from_slice(&body[offset..end]);
            offset = end;
        }
    }

    #[test]
    fn chunked_bodies_end_where_they_say_in_any_pieces() {
        let body = b"4\r\nWiki\r\n7;name=value\r\npedia i\r\n0\r\n\r\nNEXT";
        for piece in [1, 2, 3, 5, 64] {
            assert_eq!(
                decode_in_pieces(body, piece),
                Ok(body.len() - 4),
                "pieces of {piece}"
            );
        }
        let trailers = b"1\r\nx\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n";
        for piece in [1, 4, 100] {
            assert_eq!(decode_in_pieces(trailers, piece), Ok(trailers.len()));
        }
        let empty = b"0\r\n\r\n";
        assert_eq!(decode_in_pieces(empty, 1), Ok(empty.len()));
    }

    #[test]
    fn malformed_chunked_bodies_are_rejected() {
        assert_eq!(
            decode_in_pieces(b"zz\r\nab\r\n0\r\n\r\n", 64),
            Err(BadChunk)
        );
        // Data longer than its size.
        assert_eq!(
            decode_in_pieces(b"2\r\nabc\r\n0\r\n\r\n", 64),
            Err(BadChunk)
        );
        // Ends before the last chunk.
        assert_eq!(decode_in_pieces(b"2\r\nab\r\n", 64), Err(BadChunk));
    }
}
