"""Config loading: errors name file, line and key; env interpolation; `tollway check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tollway.config import ConfigError, load_config, load_config_text

ROOT = Path(__file__).resolve().parents[2]


def test_root_gateway_yaml_runs_as_it_is() -> None:
    cfg = load_config(ROOT / "gateway.yaml", environ={})
    assert {"demo-gpt", "demo-claude"} <= set(cfg.models)
    assert cfg.identity.unknown_keys == "anonymous"


def test_errors_have_file_line_and_key() -> None:
    text = ("server:\n  port: 4100\n  prot: 1\nproviders:\n  p: {kind: openai}\n"
            "models:\n  m:\n    provider: q\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "g.yaml", {})
    lines = [str(p) for p in e.value.problems]
    assert "g.yaml:3: server.prot: unknown key" in lines
    assert any(s.startswith("g.yaml:5: providers.p:") and "base_url" in s for s in lines)


def test_cross_references_are_checked() -> None:
    text = ("providers:\n  p: {kind: demo}\nmodels:\n  m:\n    provider: q\n"
            "agents:\n  a: {keys: [k1]}\n  b: {keys: [k1]}\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text.replace("k1]}\n  b", "k2]}\n  b"), "g.yaml", {})
    assert str(e.value) == ("g.yaml:5: models.m.provider: model 'm' names provider 'q', which "
                            "is not under providers: (known: p)")
    fixed = text.replace("provider: q", "provider: p")
    with pytest.raises(ConfigError) as e:
        load_config_text(fixed, "g.yaml", {})
    assert "g.yaml:8: agents.b.keys[0]" in str(e.value) and "agent 'a'" in str(e.value)


def test_env_interpolation() -> None:
    text = "providers:\n  p: {kind: openai, base_url: 'http://x', api_key: '${KEY}'}\n"
    assert load_config_text(text, "g", {"KEY": "s3cret"}).providers["p"].api_key == "s3cret"
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "g", {})
    assert "g:2: providers.p.api_key: environment variable KEY is not set" in str(e.value)
    dflt = text.replace("${KEY}", "${KEY:-}")
    assert load_config_text(dflt, "g", {}).providers["p"].api_key == ""


def test_hashed_keys_must_be_well_formed() -> None:
    with pytest.raises(ConfigError) as e:
        load_config_text("agents:\n  a: {keys: ['sha256:abc']}\n", "g", {})
    assert "64 lower-case hex" in str(e.value)


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError) as e:
        load_config_text("server:\n  port: [1,\n", "g.yaml", {})
    assert e.value.problems[0].line is not None


def test_check_command(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tollway", "check", "-c", str(ROOT / "gateway.yaml")]
    ok = subprocess.run(cmd,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: nope\n")
    r = subprocess.run([sys.executable, "-m", "tollway", "check", "-c", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}:2: server.port:" in r.stderr


def test_semantic_cache_embedder_must_exist() -> None:
    text = ("providers:\n  p: {kind: demo}\nmodels:\n  m: {provider: p}\n"
            "cache:\n  semantic:\n    enabled: true\n    embedder: embed-small\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "g.yaml", {})
    assert str(e.value).startswith("g.yaml:8: cache.semantic.embedder: embedder 'embed-small' "
                                   "is neither 'local' nor a model")
    cfg = load_config_text(text.replace("embed-small", "m"), "g.yaml", {})
    assert cfg.cache.semantic.embedder == "m" and cfg.cache.enabled


@pytest.mark.parametrize(("redis", "problem"), [
    ("{url: redis://a:6379/2, cluster: true}",
     "g.yaml:6: state.redis.cluster: a Redis Cluster has only database 0, and url selects "
     "database 2"),
    ("{url: unix:///run/redis.sock, cluster: true}",
     "g.yaml:6: state.redis.cluster: a Redis Cluster is reached over TCP: url must be "
     "redis:// or rediss://, not unix://"),
    ("{url: redis://a:6379, cluster_nodes: [redis://b:6379]}",
     "g.yaml:6: state.redis.cluster_nodes: cluster_nodes are seeds of a Redis Cluster: set "
     "cluster: true"),
    ("{url: redis://a:6379, cluster: true, cluster_nodes: [redis://:pw@b:6379]}",
     "g.yaml:6: state.redis.cluster_nodes: 'redis://:pw@b:6379': a seed is "
     "redis://host:port (credentials, TLS and the database come from url)"),
    ("{url: redis://a:6379, cluster: true, cluster_nodes: [b:6379]}",
     "g.yaml:6: state.redis.cluster_nodes: 'b:6379': a seed is redis://host:port "
     "(credentials, TLS and the database come from url)"),
    ("{url: 'http://a:6379'}",
     "g.yaml:6: state.redis.url: a Redis URL starts with redis://, rediss:// or unix:// "
     "(got http://)"),
    ("{key_prefix: 'gw}1'}",
     "g.yaml:6: state.redis.key_prefix: key_prefix is written inside {...}, the hash tag "
     "Redis Cluster hashes: a brace in it would change which part of each key is hashed"),
    ("{key_prefix: ''}",
     "g.yaml:6: state.redis.key_prefix: String should have at least 1 character"),
])
def test_redis_cluster_options_are_validated(redis: str, problem: str) -> None:
    text = ("providers: {p: {kind: demo}}\nmodels: {m: {provider: p}}\nstate:\n"
            f"  backend: redis\n  on_failure: fail_open\n  redis: {redis}\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "g.yaml", {})
    assert [str(p) for p in e.value.problems] == [problem]


def test_a_cluster_from_seeds() -> None:
    cfg = load_config_text(
        "providers: {p: {kind: demo}}\nmodels: {m: {provider: p}}\nstate:\n  backend: redis\n"
        "  redis:\n    url: rediss://:pw@a:6379/0\n    cluster: true\n"
        "    cluster_nodes: [redis://b:6379, redis://10.0.0.3:7000]\n", "g.yaml", {})
    from tollway.state.redis.connect import seeds

    assert cfg.state.redis.cluster and seeds(cfg.state.redis) == [("b", 6379), ("10.0.0.3", 7000)]


def test_check_reports_every_reference_mistake_in_one_run(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("""providers:
  oai: {kind: openai, base_url: "http://x/v1", api_key: k}
models:
  a: {provider: nope}
  b: {provider: oai, fallbacks: [zzz]}
routing:
  - {name: r1, when: {model: a}, to: missing}
budgets:
  agents: {ghost: {usd: 1, period: day}}
rate_limits:
  models: {phantom: {rpm: 1}}
""")
    out = subprocess.run([sys.executable, "-m", "tollway", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert [e.split(": ", 3)[1:3] for e in errors] == [
        [f"{cfg}:4", "models.a.provider"], [f"{cfg}:5", "models.b.fallbacks[0]"],
        [f"{cfg}:7", "routing[0].to"], [f"{cfg}:9", "budgets.agents.ghost"],
        [f"{cfg}:11", "rate_limits.models.phantom"]]  # all five, in file order
    assert out.stderr.rstrip().endswith("5 error(s)")


def test_an_unquoted_variable_in_a_flow_mapping_says_what_to_write(tmp_path: Path) -> None:
    from tollway.config.load import load_model
    from tollway.config.model import Config

    text = 'providers:\n  oai: {kind: openai, base_url: "http://x/v1", api_key: ${OAI_KEY}}\n'
    with pytest.raises(ConfigError) as e:
        load_model(text, "gateway.yaml", {"OAI_KEY": "k"}, Config)
    (p,) = e.value.problems
    assert p.line == 2 and 'write "${OAI_KEY}" instead of ${OAI_KEY}' in p.message


def test_check_reports_malformed_values_and_references_together(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("""providers:
  oai: {kind: openai, base_url: "http://x/v1", api_key: k}
models:
  a: {provider: nope}
  b: {provider: oai, fallbacks: [zzz], price: {input: "cheap"}}
routing:
  - {name: r1, when: {model: a}, to: missing}
server: {port: "not-a-port"}
""")
    out = subprocess.run([sys.executable, "-m", "tollway", "check", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    keys = [line.split(": ", 3)[2] for line in out.stderr.splitlines()
            if line.startswith("error:")]
    assert keys == ["models.a.provider", "models.b.price.input", "models.b.fallbacks[0]",
                    "routing[0].to", "server.port"]  # both kinds, one run
