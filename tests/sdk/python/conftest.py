"""Session harness for the Python SDK suite.

Starts the stand-in upstream and Warden (the binaries cargo built, found in
$WARDEN_BIN_DIR, default `target/debug` relative to the repo root), points Warden
at the stand-in through a generated config, and hands the tests URLs, keys and a
small helper for the stand-in's control API. Both processes are stopped at the
end of the session, also when a test or the start-up itself fails; they also get
SIGTERM from the kernel if pytest dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

# Loopback only: never let an ambient proxy setting reroute test traffic.
for _var in ("NO_PROXY", "no_proxy"):
    _cur = os.environ.get(_var, "")
    os.environ[_var] = ",".join(p for p in (_cur, "127.0.0.1", "localhost") if p)

STANDIN_LINE = re.compile(r"standin listening on (http://127\.0\.0\.1:\d+)")
WARDEN_LINE = re.compile(
    r"warden listening on (http://127\.0\.0\.1:\d+) \(admin (http://127\.0\.0\.1:\d+)\)"
)

# urllib without any proxy handler (the control API is on loopback).
_URLOPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def bin_dir() -> Path:
    raw = os.environ.get("WARDEN_BIN_DIR", "target/debug")
    p = Path(raw)
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Proc:
    """A child process whose first matching stdout line announces readiness.

    All output (stdout after the ready line, and stderr) is copied to a log
    file so the pipes never fill up and failures can be diagnosed.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "w", buffering=1)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
            preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
        )
        self._reader = threading.Thread(target=self._pump, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._log.write("[stdout] " + line)
            except ValueError:  # log closed
                pass
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self._lines):
                    m = pattern.search(self._lines[seen])
                    seen += 1
                    if m:
                        return m
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        rc = self.proc.poll()
        raise RuntimeError(
            f"{self.name} did not announce readiness within {timeout}s "
            f"(exit code {rc}); argv={self.argv}\n--- log {self.log_path} ---\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 60) -> str:
        try:
            self._log.flush()
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        self._reader.join(2)
        try:
            self._log.close()
        except Exception:
            pass


def _http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _URLOPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


class Standin:
    """Client for the stand-in's control API (not under /v1)."""

    def __init__(self, url: str):
        self.url = url

    def requests(self) -> list[dict]:
        status, body = _http("GET", f"{self.url}/_standin/requests")
        assert status == 200, f"GET /_standin/requests -> {status} {body!r}"
        assert isinstance(body, list), body
        return body

    def clear(self) -> None:
        status, body = _http("DELETE", f"{self.url}/_standin/requests")
        assert status in (200, 204), f"DELETE /_standin/requests -> {status} {body!r}"

    def stats(self) -> dict:
        status, body = _http("GET", f"{self.url}/_standin/stats")
        assert status == 200, f"GET /_standin/stats -> {status} {body!r}"
        return body

    def queue_fault(self, fault: str, count: int = 1, path: Optional[str] = None) -> None:
        """Queue `fault` for the next `count` /v1 calls (only those under `path`, if given)."""
        req: dict[str, Any] = {"fault": fault, "count": count}
        if path is not None:
            req["path"] = path
        status, body = _http("POST", f"{self.url}/_standin/faults", req)
        assert 200 <= status < 300, f"POST /_standin/faults -> {status} {body!r}"

    @staticmethod
    def api_path(rec: dict) -> str:
        """A recorded request's path without query, relative to /v1 (e.g. `/chat/completions`)."""
        path = str(rec.get("path", "")).split("?")[0]
        return path[3:] if path.startswith("/v1/") else path

    def requests_to(self, path: str) -> list[dict]:
        """Recorded requests to `path` (relative to /v1, e.g. `/completions`)."""
        return [r for r in self.requests() if self.api_path(r) == path]

    def last(self, path: str) -> dict:
        reqs = self.requests_to(path)
        assert reqs, (
            f"the stand-in recorded no request to {path}; recorded paths: "
            f"{[r.get('path') for r in self.requests()]}"
        )
        return reqs[-1]

    def only(self, path: str) -> dict:
        reqs = self.requests_to(path)
        assert len(reqs) == 1, (
            f"expected exactly one upstream request to {path}, got {len(reqs)}: "
            f"{[r.get('path') for r in self.requests()]}"
        )
        return reqs[0]


@dataclass
class Gateway:
    warden_url: str
    admin_url: str
    standin_url: str
    standin_key: str
    key: str  # virtual key of `sdk-app` (end_user = required)
    trusted_key: str  # virtual key of `trusted-svc` (trusted_user_field)
    limited_key: str  # virtual key of `sdk-limited` (tier `sdk-tight`: 40 requests/minute)
    safety_secret: str
    webhook_secret: str  # OpenAI webhook signing secret (whsec_…) Warden verifies
    tmpdir: Path
    procs: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"{self.warden_url}/v1"


def _write_config(path: Path, standin_url: str, db_path: Path) -> None:
    path.write_text(
        f"""\
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body_bytes = 1048576

[upstream]
base_url = "{standin_url}/v1"
api_key_env = "WARDEN_TEST_UPSTREAM_KEY"

[storage]
url = "sqlite://{db_path}"

[identity]
safety_identifier_secret_env = "WARDEN_TEST_SAFETY_SECRET"

[[keys]]
name = "sdk-app"
secret_env = "WARDEN_TEST_KEY"
end_user = "required"

[[keys]]
name = "trusted-svc"
secret_env = "WARDEN_TEST_KEY_TRUSTED"
end_user = "optional"
trusted_user_field = true

[openai_notices]
secret_env = "WARDEN_TEST_WEBHOOK_SECRET"
warning_suspend_hours = 1
# Warden's own 429: 40 requests per minute per user, so the retry-after is 1.5 s.
[[keys]]
name = "sdk-limited"
secret_env = "WARDEN_TEST_KEY_LIMITED"
end_user = "required"
tier = "sdk-tight"

[limits.tiers.sdk-tight]
requests_per_minute = 40
"""
    )


@pytest.fixture(scope="session")
def gw() -> Any:
    bins = bin_dir()
    standin_bin, warden_bin = bins / "standin", bins / "warden"
    missing = [str(b) for b in (standin_bin, warden_bin) if not b.is_file()]
    if missing:
        raise RuntimeError(
            f"binaries not found: {missing} (set WARDEN_BIN_DIR or run `cargo build` first)"
        )

    tmpdir = Path(tempfile.mkdtemp(prefix="warden-sdk-py-"))
    keep_tmp = os.environ.get("WARDEN_SDK_KEEP_TMP") == "1"
    standin_key = "sk-standin-" + secrets.token_hex(12)
    key = "wk-sdk-app-" + secrets.token_hex(16)
    trusted_key = "wk-trusted-" + secrets.token_hex(16)
    limited_key = "wk-limited-" + secrets.token_hex(16)
    safety_secret = secrets.token_hex(32)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    base_env = dict(os.environ)
    base_env.setdefault("RUST_BACKTRACE", "1")
    # Warden must take the upstream key from the config's env var, not from here.
    base_env.pop("OPENAI_API_KEY", None)

    procs: dict[str, Proc] = {}
    failed = True
    try:
        procs["standin"] = Proc(
            "standin",
            [str(standin_bin), "--listen", "127.0.0.1:0", "--api-key", standin_key],
            base_env,
            tmpdir / "standin.log",
        )
        standin_url = procs["standin"].wait_for(STANDIN_LINE, START_TIMEOUT_S).group(1)

        cfg = tmpdir / "warden.toml"
        _write_config(cfg, standin_url, tmpdir / "warden.db")
        env = dict(base_env)
        env.update(
            WARDEN_TEST_UPSTREAM_KEY=standin_key,
            WARDEN_TEST_SAFETY_SECRET=safety_secret,
            WARDEN_TEST_KEY=key,
            WARDEN_TEST_KEY_TRUSTED=trusted_key,
            WARDEN_TEST_WEBHOOK_SECRET=webhook_secret,
            WARDEN_TEST_KEY_LIMITED=limited_key,
        )
        procs["warden"] = Proc(
            "warden",
            [str(warden_bin), "serve", "--config", str(cfg)],
            env,
            tmpdir / "warden.log",
        )
        m = procs["warden"].wait_for(WARDEN_LINE, START_TIMEOUT_S)
        g = Gateway(
            warden_url=m.group(1),
            admin_url=m.group(2),
            standin_url=standin_url,
            standin_key=standin_key,
            key=key,
            trusted_key=trusted_key,
            limited_key=limited_key,
            safety_secret=safety_secret,
            webhook_secret=webhook_secret,
            tmpdir=tmpdir,
            procs=procs,
        )
        yield g
        failed = False
    finally:
        for name in ("warden", "standin"):
            if name in procs:
                procs[name].stop()
        if failed or keep_tmp:
            # Leave the logs for diagnosis, say where they are.
            sys.stderr.write(f"\n[sdk-tests] process logs kept in {tmpdir}\n")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="session")
def standin(gw: Gateway) -> Standin:
    return Standin(gw.standin_url)


@pytest.fixture(autouse=True)
def _fresh_recordings(request: pytest.FixtureRequest) -> None:
    """Forget the stand-in's recorded requests before every test that uses it."""
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").clear()


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request: pytest.FixtureRequest) -> Any:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "gw" in request.fixturenames:
        g: Gateway = request.getfixturevalue("gw")
        for name, p in g.procs.items():
            sys.stderr.write(f"\n--- tail of {name} log ---\n{p.log_tail(30)}\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


MakeClient = Callable[..., openai.OpenAI]


@pytest.fixture
def make_client(gw: Gateway) -> Any:
    """Factory: an `openai.OpenAI` client pointed at Warden.

    `user` goes into `X-Warden-User` (None: no header); `key` defaults to the
    sdk-app virtual key; other keyword arguments go to the constructor.
    """
    made: list[openai.OpenAI] = []

    def _make(user: Optional[str] = "alice", key: Optional[str] = None, **kw: Any) -> openai.OpenAI:
        headers = dict(kw.pop("default_headers", {}) or {})
        if user is not None:
            headers["X-Warden-User"] = user
        kw.setdefault("timeout", 30.0)
        c = openai.OpenAI(
            api_key=key if key is not None else gw.key,
            base_url=gw.base_url,
            default_headers=headers,
            **kw,
        )
        made.append(c)
        return c

    yield _make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client: Any) -> openai.OpenAI:
    """An SDK client for end user `alice` with the SDK's default retry policy."""
    return make_client("alice")
