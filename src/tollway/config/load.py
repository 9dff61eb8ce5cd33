"""YAML loading that remembers where every key was written, so errors name file, line and key."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tollway.config.model import ReferenceError_, ReferenceErrors

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a config file; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_model(text: str, file: str, environ: dict[str, str] | None, model: type[M]) -> M:
    """Any YAML-backed model, with errors naming file, line and key."""
    env = os.environ if environ is None else environ
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError([Problem(file, line, "", _yaml_message(exc, text, mark))]) from exc
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    data = _build(root, (), lines, env, problems, file) if root is not None else {}
    if problems:
        raise ConfigError(problems)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "", "the file must be a mapping")])
    # A section whose keys are all commented out is empty, not an error.
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = _problems(exc, lines, file)
        found += _references_despite(exc, data, model, lines, file)
        raise ConfigError(found) from exc


def _references_despite(exc: ValidationError, data: dict[str, Any], model: type[BaseModel],
                        lines: dict[Loc, int], file: str) -> list[Problem]:
    """The cross-section mistakes of a file that also has malformed values: pydantic only
    checks references on a model whose fields are valid, so the malformed values are taken
    out (each where it is: its key, or its list item) and the rest validated again, a few
    rounds at most; a mistake about a name that was taken out is not reported (its own
    problem is). One run of `tollway check` then reports both kinds."""
    errors = exc.errors()
    if all(isinstance((e.get("ctx") or {}).get("error"), (ReferenceError_, ReferenceErrors))
           for e in errors):
        return []  # the references were checked: the fields were all valid
    pruned = copy.deepcopy(data)
    gone: set[str] = set()
    for _ in range(4):
        locs = []
        for err in errors:
            loc = tuple(p for p in err["loc"]
                        if isinstance(p, int) or not str(p).startswith("function-"))
            if err["type"] == "missing" and loc:
                loc = loc[:-1]  # a required key is missing: its entry goes
            if len(loc) == 2 and isinstance(loc[1], str):
                gone.add(loc[1])  # a whole entry (a model, an agent) taken out
            locs.append(loc)
        # deepest and last first, so taking out a list item leaves the others' indexes
        for loc in sorted(locs, key=lambda lc: [(0, p) if isinstance(p, int) else (1, str(p))
                                              for p in lc], reverse=True):
            _drop(pruned, loc)
        try:
            model.model_validate(pruned)
            return []
        except ValidationError as again:
            found = []
            for e in again.errors():
                ctx = (e.get("ctx") or {}).get("error")
                many = ctx.errors if isinstance(ctx, ReferenceErrors) else (
                    [ctx] if isinstance(ctx, ReferenceError_) else [])
                found += [_located(r.loc, r.message, lines, file) for r in many
                          if not any(repr(n) in r.message for n in gone)]
            if found or all(isinstance((e.get("ctx") or {}).get("error"),
                                       (ReferenceError_, ReferenceErrors))
                            for e in again.errors()):
                return found
            errors = again.errors()
    return []


def _drop(data: Any, loc: Loc) -> None:
    """Remove the value at `loc` (a key of a mapping, an item of a list) if it is there."""
    if not loc:
        return
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return
    last = loc[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]


def _yaml_message(exc: yaml.YAMLError, text: str, mark: Any) -> str:
    """The parser's complaint, and what to write instead when it is the usual slip: an
    unquoted ${VAR} inside a {flow: mapping}, whose braces YAML reads as another mapping."""
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        lines = text.splitlines()
        source = lines[mark.line] if mark.line < len(lines) else ""
        at = source[mark.column:]
        if at.startswith("${") or ("flow mapping" in str(exc) and "${" in source):
            var = _ENV.search(source)
            shown = var.group(0) if var else "${VAR}"
            return (f"invalid YAML: {problem} (column {mark.column + 1}): inside {{...}} an "
                    f"environment variable must be quoted: write \"{shown}\" instead of "
                    f"{shown}")
        return f"invalid YAML: {problem} (column {mark.column + 1}): {source.strip()}"
    return f"invalid YAML: {problem}"


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], env: Any,
           problems: list[Problem], file: str) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = knode.value
            lines[(*loc, key)] = knode.start_mark.line + 1
            out[key] = _build(vnode, (*loc, key), lines, env, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*loc, i), lines, env, problems, file) for i, v in enumerate(node.value)]
    scalar = _scalar(node)
    if isinstance(scalar, str) and "${" in scalar:
        scalar = _interpolate(scalar, loc, lines, env, problems, file)
    return scalar


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _interpolate(s: str, loc: Loc, lines: dict[Loc, int], env: Any, problems: list[Problem],
                 file: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if default is not None:  # as in a shell: set but empty takes the default too
            return env.get(name) or default
        if name in env:
            return env[name]
        problems.append(Problem(file, lines.get(loc), _dotted(loc),
                                f"environment variable {name} is not set "
                                f"(write ${{{name}:-}} to make it optional)"))
        return ""
    return _ENV.sub(sub, s)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError, lines: dict[Loc, int], file: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        message = err["msg"]
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ReferenceErrors):
            problems += [_located(e.loc, e.message, lines, file) for e in ctx_err.errors]
            continue
        if isinstance(ctx_err, ReferenceError_):
            loc, message = ctx_err.loc, ctx_err.message
        elif err["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        # Pydantic adds the union tag or "function-after" to some locations; drop non-keys.
        loc = tuple(p for p in loc if isinstance(p, int) or not p.startswith("function-"))
        problems.append(_located(loc, message, lines, file))
    return problems


def _located(loc: Loc, message: str, lines: dict[Loc, int], file: str) -> Problem:
    line = None
    probe = loc
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return Problem(file, line, _dotted(loc), message)
