"""Reading gateway.yaml: the config model, with the policy files it names loaded and checked.

Kept out of `tollway.config.load`, the line-aware YAML loader, because policy files are read
with that loader too: `tollway.policy.load` imports it, and this module imports both, so the
two loaders do not import each other."""

from __future__ import annotations

from pathlib import Path

from tollway.config.load import ConfigError, Problem, load_model
from tollway.config.model import Config


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([Problem(str(p), None, "", f"cannot read: {exc.strerror}")]) from exc
    return load_config_text(text, str(p), environ, base=p.parent)


def load_config_text(text: str, file: str = "<config>", environ: dict[str, str] | None = None,
                     base: Path | None = None) -> Config:
    """The config, with the policy files it names (relative to ``base``, default the
    working directory) loaded and checked too."""
    cfg = load_model(text, file, environ, Config)
    if cfg.policies:
        # Imported here, not at the top: `tollway.policy.load` imports `tollway.config.load`,
        # which runs this package's __init__, which imports this module; imported at the
        # top, a program that imports the policy loader first would find it half-initialised.
        from tollway.policy.load import load_policies

        cfg._policy = load_policies(cfg.policies, base or Path.cwd(), environ)
    return cfg
