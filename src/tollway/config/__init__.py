"""The config model, YAML loading with line-aware errors, and env interpolation."""

from tollway.config.gateway import load_config, load_config_text
from tollway.config.load import ConfigError
from tollway.config.model import Config

__all__ = ["Config", "ConfigError", "load_config", "load_config_text"]
