"""`tollway serve` as a real process: serves, `tollway spend` reads it, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    mock_port, gw_port, admin_port = free_port(), free_port(), free_port()
    mock = subprocess.Popen([sys.executable, "-m", "tollway.testing.mock_provider",
                             "--port", str(mock_port)])
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"""
server: {{host: 127.0.0.1, port: {gw_port}, drain_timeout_s: 20, admin_key: "${{ADMIN}}",
          admin: {{port: {admin_port}}}}}
providers:
  up: {{kind: openai, base_url: "http://127.0.0.1:{mock_port}/v1", api_key: "${{UPSTREAM}}"}}
models:
  m: {{provider: up, model: gpt-4o-mini, price: {{input: 1, output: 2}}}}
agents:
  a: {{team: t, keys: [sk-a]}}
""")
    env = {**os.environ, "ADMIN": "adm", "UPSTREAM": "sk-upstream-secret-value"}
    gw = subprocess.Popen([sys.executable, "-m", "tollway", "serve", "-c", str(cfg)], env=env,
                          stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models")
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        wait_http(f"http://127.0.0.1:{admin_port}/healthz")
        yield f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}", gw
    finally:
        for p in (gw, mock):
            if p.poll() is None:
                p.kill()
            p.wait(10)


def test_serve_spend_and_drain(served: tuple[str, str, subprocess.Popen[str]]) -> None:
    url, admin_url, proc = served
    headers = {"Authorization": "Bearer sk-a"}
    r = httpx.post(f"{url}/v1/chat/completions", headers=headers, json={
        "model": "m", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"

    out = subprocess.run([sys.executable, "-m", "tollway", "spend", "--by", "agent",
                          "--url", admin_url,
                          "--admin-key", "adm"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("a "))
    assert line.split()[1] == "1"  # one request
    # with only the config, spend finds the admin listener (server.admin) and the key
    cfg = Path(proc.args[-1])
    found = subprocess.run([sys.executable, "-m", "tollway", "spend", "-c", str(cfg)],
                           capture_output=True, text=True, env={
                               **{k: v for k, v in os.environ.items()
                                  if not k.startswith("TOLLWAY_")},
                               "ADMIN": "adm", "UPSTREAM": "x"})
    assert found.returncode == 0, found.stderr
    assert next(ln for ln in found.stdout.splitlines() if ln.startswith("a ")).split()[1] == "1"
    denied = subprocess.run([sys.executable, "-m", "tollway", "spend", "--url", admin_url],
                            capture_output=True, text=True)
    assert denied.returncode == 1 and "admin key" in denied.stderr

    # A slow stream is in flight when SIGTERM arrives: it must finish whole.
    received: list[str] = []
    started = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30, headers={
                **headers, "x-mock-chunk-delay-ms": "150"}, json={
                "model": "m", "stream": True,
                "messages": [{"role": "user", "content": "a slow one"}]}) as resp:
            for line in resp.iter_lines():
                received.append(line)
                started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(10)
    proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert received[-2:] == ["data: [DONE]", ""] or "data: [DONE]" in received
    assert proc.wait(30) == 0
    logs = proc.stderr.read() if proc.stderr else ""
    assert "draining" in logs
    assert "sk-upstream-secret-value" not in logs and "sk-a" not in logs
