//! The web dashboard (issue 21) against a real supervisor with real agents:
//! tokens and roles over raw HTTP (401 without the token, actions refused to
//! the viewer link, to a request without the operator header and to another
//! origin, all audited), and in headless Chromium driven over the DevTools
//! protocol: every agent shown with its true state, a `kill -9` shown with
//! its cause (and the dependents it took along) within 2 s without reload,
//! the restart button restarting an agent. A screenshot is saved to
//! `target/dashboard-screenshot.png`. Skips visibly without `chromium`.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, SUPERVISOR, agent_of, all_ready, wait_for_status};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(30);

const MANIFEST: &str = r#"
version: 1
strategy: rest_for_one
agents:
  store:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
    restart: { policy: always, backoff: { initial: 100ms } }
  api:
    command: ["FAKE"]
    dependencies: [store]
    readiness: { start_period: 100ms }
  worker:
    command: ["FAKE"]
    dependencies: [api]
    readiness: { start_period: 100ms }
  lone:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
"#;

const NAMES: [&str; 4] = ["store", "api", "worker", "lone"];

/// A running `supervisor dashboard`, killed when dropped.
struct Dashboard {
    child: Child,
    operator: String,
    viewer: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dashboard(manifest: &Path, extra: &[&str]) -> Dashboard {
    let mut child = Command::new(SUPERVISOR)
        .args(["dashboard", "--config"])
        .arg(manifest)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start supervisor dashboard");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = sender.send((lines.next(), lines.next()));
        for _ in lines {}
    });
    let (first, second) = receiver
        .recv_timeout(BOUND)
        .expect("the dashboard's first two lines of stdout");
    let dashboard = Dashboard {
        child,
        operator: first.expect("a first line"),
        viewer: second.expect("a second line"),
    };
    assert!(
        dashboard.operator.starts_with("http://127.0.0.1:")
            && dashboard.operator.contains("/?token="),
        "first line is the operator link: {}",
        dashboard.operator
    );
    dashboard
}

/// `(address, token)` of a link.
fn split(link: &str) -> (String, String) {
    let rest = link
        .trim_start_matches("viewer (read-only): ")
        .trim_start_matches("http://");
    let (address, query) = rest.split_once("/?token=").expect("a token in the link");
    (address.to_string(), query.to_string())
}

/// One HTTP/1.1 request; `(status, body)`.
fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn audit_lines(fixture: &Fixture) -> Vec<Value> {
    std::fs::read_to_string(fixture.path(".supervisor/dashboard-audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
        .collect()
}

#[test]
fn requests_without_the_token_get_401_and_only_the_operator_may_act() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(MANIFEST);
    let _up = fixture.up(&manifest, &["--no-console"]);
    wait_for_status(&manifest, "every agent ready", BOUND, |status| {
        all_ready(status, &NAMES)
    });
    let dashboard = start_dashboard(&manifest, &[]);
    let (address, operator) = split(&dashboard.operator);
    let (_, viewer) = split(&dashboard.viewer);
    assert_ne!(operator, viewer);

    for path in [
        "/",
        "/api/model",
        "/api/events",
        "/api/graph.svg",
        "/?token=wrong",
        "/?token=",
    ] {
        assert_eq!(http(&address, "GET", path, &[], "").0, 401, "{path}");
    }
    assert_eq!(http(&address, "POST", "/api/action", &[], "{}").0, 401);
    let (status, page) = http(&address, "GET", &format!("/?token={viewer}"), &[], "");
    assert_eq!(status, 200);
    assert!(
        page.contains("const role = \"viewer\""),
        "the page knows its role"
    );
    let (status, model) = http(
        &address,
        "GET",
        &format!("/api/model?token={viewer}"),
        &[],
        "",
    );
    assert_eq!(status, 200);
    let model: Value = serde_json::from_str(&model).expect("model JSON");
    let host = model["dashboard_host"]
        .as_str()
        .expect("a host name")
        .to_string();
    assert_eq!(host, supervisor::check::local_hostname());

    let restart = json!({"action": "restart", "agent": "lone"}).to_string();
    let header = [
        ("X-Dashboard-Token", operator.as_str()),
        ("Content-Type", "application/json"),
    ];
    let viewer_header = [
        ("X-Dashboard-Token", viewer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let json_only = [("Content-Type", "application/json")];
    let evil = [
        ("X-Dashboard-Token", operator.as_str()),
        ("Content-Type", "application/json"),
        ("Origin", "http://evil.example"),
    ];
    let as_viewer = http(
        &address,
        "POST",
        &format!("/api/action?token={viewer}"),
        &viewer_header,
        &restart,
    );
    assert_eq!(as_viewer.0, 403, "{as_viewer:?}");
    let no_header = http(
        &address,
        "POST",
        &format!("/api/action?token={operator}"),
        &json_only,
        &restart,
    );
    assert_eq!(no_header.0, 403, "{no_header:?}");
    let cross_origin = http(
        &address,
        "POST",
        &format!("/api/action?token={operator}"),
        &evil,
        &restart,
    );
    assert_eq!(cross_origin.0, 403, "{cross_origin:?}");
    let before = agent_of(&common::status_json(&manifest).expect("status"), "lone")["pid"].clone();
    let allowed = http(
        &address,
        "POST",
        &format!("/api/action?token={operator}"),
        &header,
        &restart,
    );
    assert_eq!(allowed.0, 200, "{allowed:?}");
    wait_for_status(
        &manifest,
        "lone restarted by the operator",
        BOUND,
        |status| {
            let lone = agent_of(status, "lone");
            lone["state"] == "ready"
                && lone["pid"] != before
                && lone["restarts_by_cause"]["operator"] == 1
        },
    );

    let audit = audit_lines(&fixture);
    let summary: Vec<(String, String)> = audit
        .iter()
        .map(|line| {
            (
                line["role"].as_str().unwrap().to_string(),
                line["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        audit.len(),
        4,
        "every action audited, refused ones too: {summary:?}"
    );
    assert_eq!(summary[0].0, "viewer");
    assert!(summary[0].1.starts_with("refused"), "{summary:?}");
    assert!(
        summary[1]
            .1
            .starts_with("refused: no operator token header"),
        "{summary:?}"
    );
    assert!(
        summary[2].1.starts_with("refused: another origin"),
        "{summary:?}"
    );
    assert_eq!(summary[3], ("operator".to_string(), "ok: lone".to_string()));
    for line in &audit {
        assert_eq!(line["action"], "restart");
        assert_eq!(line["agent"], "lone");
        assert_eq!(line["host"], host.as_str());
        assert!(
            line["at"].as_str().is_some_and(|at| at.ends_with('Z')),
            "{line}"
        );
    }
}

#[test]
fn a_remote_address_needs_allow_remote() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(MANIFEST);
    let _up = fixture.up(&manifest, &["--no-console"]);
    wait_for_status(&manifest, "every agent ready", BOUND, |status| {
        all_ready(status, &NAMES)
    });
    let output = common::cli(
        &[
            "dashboard",
            "--config",
            manifest.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        BOUND,
    );
    assert_ne!(output.code, Some(0), "{output:?}");
    assert!(output.stderr.contains("--allow-remote"), "{output:?}");
    assert!(output.stdout.is_empty(), "no link printed: {output:?}");
}

/// Headless Chromium, driven over the DevTools protocol on one websocket;
/// its process group is killed when dropped.
struct Browser {
    child: Child,
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Browser {
    /// `None` when Debian's `chromium` is not installed.
    fn open(url: &str) -> Option<Browser> {
        let program = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| Path::new(path).exists())?;
        let profile = tempfile::tempdir().expect("a profile dir");
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = sender.send(line[at..].trim().to_string());
                }
            }
        });
        let endpoint = match receiver.recv_timeout(BOUND) {
            Ok(endpoint) => endpoint,
            Err(_) => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                panic!("chromium printed no DevTools endpoint within {BOUND:?}");
            }
        };
        let (socket, _) = tungstenite::connect(endpoint.as_str()).expect("connect to DevTools");
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream.set_read_timeout(Some(BOUND)).expect("timeout");
        }
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session")
            .to_string();
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser.call("Page.navigate", json!({"url": url}));
        Some(browser)
    }

    /// One DevTools call (on the page's session once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .expect("send to DevTools");
        let deadline = Instant::now() + BOUND;
        loop {
            assert!(Instant::now() < deadline, "no DevTools answer to {method}");
            let message = self.socket.read().expect("read from DevTools");
            let tungstenite::Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method} failed: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 50 ms until it is `true`; how long that took.
    fn wait_for(&mut self, what: &str, timeout: Duration, expression: &str) -> Duration {
        let started = Instant::now();
        loop {
            if self.evaluate(expression) == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "the page did not show {what} within {timeout:?}; it shows:\n{}",
                self.evaluate("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let bytes = base64_decode(shot["data"].as_str().expect("PNG data"));
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the directory");
        std::fs::write(path, bytes).expect("write the screenshot");
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |byte: u8| match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|byte| *byte != b'=' && !byte.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (index, byte)| {
            bits | (u32::from(value(*byte)) << (18 - 6 * index))
        });
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Where test artifacts go: `target/` of this worktree.
fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join(name)
}

#[test]
fn the_page_shows_true_states_a_killed_agent_with_its_cause_and_restarts_by_button() {
    let test = "the_page_shows_true_states_a_killed_agent_with_its_cause_and_restarts_by_button";
    if !Path::new("/usr/bin/chromium").exists() && !Path::new("/usr/bin/chromium-browser").exists()
    {
        common::corpus::skip(
            test,
            "Debian's `chromium` is not installed (.ci/run installs it)",
        );
        return;
    }
    let fixture = Fixture::new();
    let manifest = fixture.manifest(MANIFEST);
    let up = fixture.up(&manifest, &["--no-console", "--dashboard", "127.0.0.1:0"]);
    up.wait_for_output("viewer (read-only): http://", BOUND);
    let operator = up
        .output()
        .lines()
        .find(|line| line.starts_with("http://127.0.0.1:"))
        .expect("the operator link on stdout")
        .to_string();
    let status = wait_for_status(&manifest, "every agent ready", BOUND, |status| {
        all_ready(status, &NAMES)
    });

    let mut browser = Browser::open(&operator).expect("chromium is installed");
    // Every agent, with the state `status` gives it.
    let expected: Vec<(String, String)> = NAMES
        .iter()
        .map(|name| {
            (
                name.to_string(),
                agent_of(&status, name)["state"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let check = format!(
        "(() => {{ const want = {}; const rows = [...document.querySelectorAll('#agents tbody tr')]; \
         return rows.length === want.length && want.every(([name, state]) => \
         rows.some((row) => row.dataset.agent === name && row.dataset.state === state \
         && row.querySelector('.state').textContent.startsWith(state))); }})()",
        serde_json::to_string(&expected).unwrap()
    );
    browser.wait_for("every agent in its true state", BOUND, &check);
    let host = supervisor::check::local_hostname();
    assert_eq!(
        browser.evaluate("document.getElementById('host').textContent"),
        json!(host)
    );
    // The graph: one box per agent coloured by state, one arrow per dependency.
    browser.wait_for(
        "the dependency graph, coloured",
        BOUND,
        "document.querySelectorAll('#graph .node.state-ready').length === 4 \
         && document.querySelectorAll('#graph .edge').length === 2",
    );
    let pids_before: Vec<Value> = NAMES
        .iter()
        .map(|name| agent_of(&status, name)["pid"].clone())
        .collect();

    // kill -9 store: its restart and cause, and the dependents it took
    // along (rest_for_one), appear without a reload.
    browser.evaluate("window.notReloaded = true");
    let store_pid = agent_of(&status, "store")["pid"]
        .as_i64()
        .expect("store's pid");
    kill(Pid::from_raw(store_pid as i32), Signal::SIGKILL).expect("kill -9 store");
    let took = browser.wait_for(
        "store's restart with its cause",
        Duration::from_secs(2),
        "[...document.querySelectorAll('#timeline li')].some((li) => li.dataset.agent === 'store' \
         && li.dataset.cause === 'signal' && /signal 9|SIGKILL/.test(li.textContent))",
    );
    eprintln!("store's restart shown {took:?} after kill -9");
    browser.wait_for(
        "api restarted because of store",
        Duration::from_secs(5),
        "[...document.querySelectorAll('#timeline li')].some((li) => li.dataset.agent === 'api' \
         && li.textContent.includes('because its dependency store restarted'))",
    );
    assert_eq!(
        browser.evaluate("window.notReloaded === true"),
        json!(true),
        "no reload"
    );
    wait_for_status(&manifest, "every agent ready again", BOUND, |status| {
        all_ready(status, &NAMES)
    });
    browser.wait_for(
        "every agent ready again",
        BOUND,
        "document.querySelectorAll('#agents tbody tr[data-state=ready]').length === 4",
    );
    // Details, the log pane and the screenshot (a test artifact).
    browser.evaluate("document.querySelector('tr[data-agent=api]').click()");
    browser.wait_for(
        "api's details",
        BOUND,
        "document.getElementById('details-name').textContent === 'api' \
         && !!document.querySelector('button[data-action=restart]')",
    );
    let screenshot = artifact("dashboard-screenshot.png");
    browser.screenshot(&screenshot);
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real PNG"
    );
    eprintln!("screenshot: {}", screenshot.display());

    // The restart button (with its confirmation) restarts `lone`.
    let lone_before = pids_before[3].clone();
    browser.evaluate("document.querySelector('tr[data-agent=lone]').click()");
    browser.wait_for(
        "lone's restart button",
        BOUND,
        "!!document.querySelector('button[data-action=restart][data-agent=lone]')",
    );
    browser
        .evaluate("document.querySelector('button[data-action=restart][data-agent=lone]').click()");
    browser.wait_for(
        "the confirmation",
        BOUND,
        "!document.getElementById('confirm').hidden \
         && document.getElementById('confirm-text').textContent.includes('lone')",
    );
    browser.evaluate("document.getElementById('confirm-yes').click()");
    wait_for_status(&manifest, "lone restarted by the button", BOUND, |status| {
        let lone = agent_of(status, "lone");
        lone["pid"] != lone_before
            && lone["restarts_by_cause"]["operator"] == 1
            && lone["state"] == "ready"
    });
    browser.wait_for(
        "lone's operator restart on the page",
        BOUND,
        "[...document.querySelectorAll('#timeline li')].some((li) => li.dataset.agent === 'lone' \
         && li.dataset.cause === 'operator')",
    );
    let audit = audit_lines(&fixture);
    assert!(
        audit.iter().any(|line| line["role"] == "operator"
            && line["action"] == "restart"
            && line["agent"] == "lone"
            && line["result"] == "ok: lone"),
        "{audit:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_supervisor_serves() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json"),
    )
    .expect("docs/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the Grafana dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            panel["datasource"]["uid"] == "${datasource}",
            "every panel uses the chosen data source"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            for (at, _) in expr.match_indices("supervisor_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|character| character.is_ascii_lowercase() || *character == '_')
                    .collect();
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");

    let fixture = Fixture::new();
    let port = common::port();
    // An SDK agent for the heartbeat figures; a restart for the restart counts.
    let echo = format!(
        "  echo:\n    command: [\"{}\", \"--bind\", \"tcp://127.0.0.1:*\"]\n    readiness: sdk\n    heartbeat: {{ interval: 200ms, misses: 5 }}\n",
        env!("CARGO_BIN_EXE_agent-echo-service")
    );
    let manifest = fixture.manifest(&format!(
        "{MANIFEST}{echo}metrics: {{ listen: \"127.0.0.1:{port}\" }}\n"
    ));
    let _up = fixture.up(&manifest, &["--no-console"]);
    let manifest_path = manifest.to_str().unwrap();
    wait_for_status(&manifest, "every agent ready", BOUND, |status| {
        all_ready(status, &NAMES)
    });
    let restart = common::cli(&["restart", "lone", "--config", manifest_path], BOUND);
    assert_eq!(restart.code, Some(0), "{restart:?}");
    wait_for_status(
        &manifest,
        "resource and heartbeat figures",
        BOUND,
        |status| {
            all_ready(status, &NAMES)
                && agent_of(status, "echo")["heartbeat_age_s"].is_number()
                && agent_of(status, "lone")["rss_bytes"].is_number()
                && agent_of(status, "lone")["cpu_percent"].is_number()
        },
    );
    let (status, scrape) = http(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    let mut served = std::collections::BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            served.insert(name.to_string());
            if kind == "counter" {
                served.insert(format!("{name}_total"));
            }
        }
    }
    let missing: Vec<&String> = queried.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not serve: {missing:?}\n{scrape}"
    );
}
