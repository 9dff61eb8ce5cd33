"""Policy evaluation, merging and loading (with file and line in errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tollway.config import ConfigError, load_config_text
from tollway.config.load import load_model
from tollway.policy.load import load_policies
from tollway.policy.model import PolicyFile, PolicySet

ROOT = Path(__file__).resolve().parents[2]


def ps(*texts: str) -> PolicySet:
    return PolicySet.merge([(f"p{i}.yaml", load_model(t, f"p{i}.yaml", {}, PolicyFile))
                            for i, t in enumerate(texts)])


def test_deny_beats_allow_and_allow_lists_restrict() -> None:
    p = ps("""
rules:
  - {name: a, teams: [support], allow: {tools: ["files/*", weather]}}
  - {name: b, deny: {tools: ["files/delete_*"]}}
""")
    assert p.tool("bot", "support", "files/read").allowed
    assert p.tool("bot", "support", "weather").allowed
    assert not p.tool("bot", "support", "payments/refund").allowed
    assert "allow list of policy rule 'a'" in p.tool("bot", "support", "x").reason
    d = p.tool("bot", "support", "files/delete_all")
    assert not d.allowed and "policy rule 'b' denies tool 'files/delete_all'" in d.reason
    assert p.tool("other", "research", "payments/refund").allowed  # rule a does not apply
    assert not p.tool("other", "research", "files/delete_x").allowed  # rule b applies to all
    assert p.model("bot", "support", "gpt-4o").allowed  # no model list: unrestricted


def test_default_deny_and_merging() -> None:
    p = ps("default: deny\nrules: [{name: a, agents: ['ops-*'], allow: {tools: ['*']}}]",
           "zones: {red: ['pay/*'], yellow: ['pay/*', 'files/move']}\n"
           "approvals: {timeout_s: 30}\nmodel_tool_calls: flag",
           "approvals: {timeout_s: 60}\nmodel_tool_calls: block")
    assert p.tool("ops-1", "t", "anything").allowed
    d = p.tool("bot", "t", "anything")
    assert not d.allowed and "default: deny" in d.reason
    assert p.zone("pay/refund") == "red" and p.zone("files/move") == "yellow"
    assert p.zone("weather") == "green"
    assert p.approval_timeout_s == 30 and p.model_tool_calls == "block"


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - name: x\n    alow: {tools: [a]}\n")
    with pytest.raises(ConfigError) as e:
        load_policies(["*.yaml"], tmp_path)
    assert f"{tmp_path / 'a.yaml'}:3: rules[0].alow: unknown key" in str(e.value)
    (tmp_path / "a.yaml").write_text("rules: [{name: x, deny: {tools: [a]}}]\n")
    (tmp_path / "b.yaml").write_text("rules: [{name: x, deny: {tools: [b]}}]\n")
    with pytest.raises(ConfigError) as e:
        load_policies(["*.yaml"], tmp_path)
    assert "another rule is already named 'x'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config_text("policies: [missing.yaml]\n", "g.yaml", {}, base=tmp_path)
    assert "missing.yaml: (top level): cannot read" in str(e.value)


def test_shipped_example_loads_and_checks(tmp_path: Path) -> None:
    p = load_policies(["policies/*.yaml"], ROOT)
    assert p.files and p.zone("payments/refund") == "red"
    assert not p.tool("bot", "support", "files/delete_all").allowed
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"providers: {{p: {{kind: demo}}}}\nmodels: {{m: {{provider: p}}}}\n"
                   f"policies: [{ROOT / 'policies'}/*.yaml]\n")
    out = subprocess.run([sys.executable, "-m", "tollway", "check", "-c", str(cfg)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "policy rules from 1 file(s)" in out.stdout
    (tmp_path / "bad.yaml").write_text("model_tool_calls: sometimes\n")
    cfg.write_text(cfg.read_text().replace("/*.yaml]", f"/*.yaml, {tmp_path / 'bad.yaml'}]"))
    out = subprocess.run([sys.executable, "-m", "tollway", "check", "-c", str(cfg)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "bad.yaml:1: model_tool_calls" in out.stderr
