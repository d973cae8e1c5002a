//! The HTTP probe: a minimal HTTP/1.1 GET over a plain TCP connection.
//!
//! Owns URL parsing for probe targets and reading the status line. Only
//! `http://` is supported: health endpoints of local agents are plain HTTP,
//! and a TLS stack is not worth its weight for a status code. Written by hand
//! (rather than with an HTTP client crate) because the probe needs exactly
//! one request and the first line of the answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::health::probe::{ProbeError, connect_host};

/// A status line longer than this is not HTTP; stop reading instead of
/// buffering whatever the peer sends.
const MAX_STATUS_LINE: usize = 8 * 1024;

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

/// One HTTP probe: `GET url` answered 2xx within `timeout` (connect, send
/// and status line together). Only the status line is read; once it is,
/// the connection is reset rather than closed (see `reset_on_close`).
pub(crate) async fn probe_http(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let target = parse_url(url).map_err(|reason| ProbeError::Unsupported {
        target: url.to_string(),
        reason,
    })?;
    match tokio::time::timeout(timeout, get_status(url, &target)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(ProbeError::HttpStatus {
            url: url.to_string(),
            status,
        }),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Err(ProbeError::Timeout {
            target: url.to_string(),
            after: timeout,
        }),
    }
}

/// Sends the GET and returns the status code. Unbounded by itself; the
/// caller wraps it in the probe timeout.
async fn get_status(url: &str, target: &HttpTarget) -> Result<u16, ProbeError> {
    let mut stream = tokio::net::TcpStream::connect((connect_host(&target.host), target.port))
        .await
        .map_err(|error| ProbeError::from_io(url, "connect", error))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: supervisor-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| ProbeError::from_io(url, "send request", error))?;

    let mut buffer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") {
            break end;
        }
        if buffer.len() > MAX_STATUS_LINE {
            return Err(ProbeError::BadReply {
                target: url.to_string(),
                reason: format!("no status line in the first {MAX_STATUS_LINE} bytes"),
            });
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| ProbeError::from_io(url, "read reply", error))?;
        if read == 0 {
            // Some minimal servers end the line with a bare `\n` and close.
            if let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
                break end;
            }
            return Err(ProbeError::BadReply {
                target: url.to_string(),
                reason: if buffer.is_empty() {
                    "connection closed without a reply".to_string()
                } else {
                    "connection closed inside the status line".to_string()
                },
            });
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    reset_on_close(&stream);
    let line = String::from_utf8_lossy(&buffer[..line_end]);
    parse_status_line(line.trim_end()).ok_or_else(|| ProbeError::BadReply {
        target: url.to_string(),
        reason: format!("not an HTTP status line: {:?}", truncate(&line, 80)),
    })
}

/// Makes closing `stream` send a reset instead of a FIN, once the answer
/// is in. The agent has usually closed its side already (the request says
/// `Connection: close`), so the reset only drops its half-closed socket;
/// an orderly close instead costs another round of segments on loopback,
/// processed in the probing thread, and leaves the agent a TIME_WAIT socket
/// for a minute: 30,000 of them with 500 agents probed every second. Best
/// effort: if the option cannot be set, the close is orderly.
fn reset_on_close(stream: &tokio::net::TcpStream) {
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
}
