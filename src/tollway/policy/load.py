"""Loading the policy files a config names (paths or globs, relative to the config file)."""

from __future__ import annotations

import glob
from pathlib import Path

from tollway.config.load import ConfigError, Problem, load_model
from tollway.policy.model import PolicyFile, PolicySet


def policy_paths(patterns: list[str], base: Path) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found = sorted(glob.glob(full))
        if not found and not glob.has_magic(pattern):
            found = [full]  # a plain path that is missing: reported by the reader
        paths += [Path(f) for f in found if Path(f) not in paths]
    return paths


def load_policies(patterns: list[str], base: Path,
                  environ: dict[str, str] | None = None) -> PolicySet:
    files: list[tuple[str, PolicyFile]] = []
    problems: list[Problem] = []
    for path in policy_paths(patterns, base):
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(Problem(str(path), None, "", f"cannot read: {exc.strerror}"))
            continue
        try:
            files.append((str(path), load_model(text, str(path), environ, PolicyFile)))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    for kind in ("rules", "guardrails"):
        names: dict[str, str] = {}
        for file, pf in files:
            for rule in getattr(pf, kind):
                if rule.name in names:
                    raise ConfigError([Problem(file, None, f"{kind}.{rule.name}",
                                               f"another rule is already named {rule.name!r} "
                                               f"(in {names[rule.name]})")])
                names[rule.name] = file
    return PolicySet.merge(files)
