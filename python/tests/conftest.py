"""Shared fixtures of the Python SDK tests: the `supervisor` binary
(SUPERVISOR_BIN, default `target/debug/supervisor` in the repository), and
`up`: a `supervisor up` on a manifest in a temporary directory, in its own
process group, with the record file its test agents append to. Every process
a test starts is killed by process group and pid when it ends, pass or fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
# Test the SDK in this tree, even when an older copy is installed.
sys.path.insert(0, str(REPO / "python"))
AGENT = Path(__file__).resolve().parent / "agents" / "sdk_agent.py"


@dataclass
class Record:
    kind: str
    name: str
    nanos: int
    pid: int
    details: List[str]


def wait_until(what: str, timeout: float, condition: Callable[[], bool]) -> None:
    """Polls `condition` every 20 ms; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` is a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="session")
def supervisor_bin() -> str:
    path = Path(os.environ.get("SUPERVISOR_BIN", REPO / "target" / "debug" / "supervisor"))
    if not path.is_file():
        pytest.fail(f"no supervisor binary at {path}: run `cargo build` or set SUPERVISOR_BIN")
    return str(path)


class Up:
    """A running `supervisor up` and the directory of its test."""

    def __init__(self, binary: str, directory: Path, manifest_text: str, extra: List[str]) -> None:
        self.directory = directory
        self.record = directory / "record.txt"
        self.run_dir = directory / ".supervisor"
        self.manifest = directory / "manifest.yaml"
        self.manifest.write_text(
            manifest_text.replace("@PYTHON@", sys.executable).replace("@AGENT@", str(AGENT))
        )
        environment = dict(os.environ)
        # The SDK under test, importable without being installed.
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "python"), environment.get("PYTHONPATH", "")]
        )
        environment.update(AGENT_RECORD=str(self.record), NO_COLOR="1")
        self._lines: List[str] = []
        self.process = subprocess.Popen(
            [binary, "--log", "info", "up", "--config", str(self.manifest), "--run-dir", str(self.run_dir), *extra],
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def records(self, kind: Optional[str] = None, name: Optional[str] = None) -> List[Record]:
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 4:
                continue
            record = Record(fields[0], fields[1], int(fields[2]), int(fields[3]), fields[4:])
            if (kind is None or record.kind == kind) and (name is None or record.name == name):
                found.append(record)
        return found

    def first(self, kind: str, name: str, timeout: float = 5.0) -> Record:
        """The first `kind` record of `name`, waiting up to `timeout` seconds
        for it: an agent writes its record after the supervisor has seen the
        event (e.g. `ready` once READY is acknowledged), so it can trail the
        supervisor's output by a moment."""
        deadline = time.monotonic() + timeout
        while not (records := self.records(kind, name)):
            if time.monotonic() > deadline:
                pytest.fail(f"no `{kind}` record for {name}: {self.records()}\n{self.output}")
            time.sleep(0.02)
        return records[0]

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {text!r}; output:\n{self.output}")
            time.sleep(0.02)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"supervisor still running after {timeout}s; output:\n{self.output}")
        self._reader.join(2)
        return code

    def errors(self) -> List[dict]:
        import json

        path = self.run_dir / "errors.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def kill_everything(self) -> None:
        for group in [self.process.pid] + [record.pid for record in self.records()]:
            for target in (-group, group):
                try:
                    os.kill(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def up(supervisor_bin: str, tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """`up(manifest_text, *extra_args)` starts a supervisor; `@PYTHON@` and
    `@AGENT@` in the text become the interpreter and the test agent's path."""
    started: List[Up] = []

    def start(manifest_text: str, *extra: str) -> Up:
        running = Up(supervisor_bin, tmp_path, manifest_text, list(extra))
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill_everything()
