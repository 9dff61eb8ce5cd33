"""tollway serve | check | explain | schema | spend | audit | keys.

One module per command: `args` parses the command line and dispatches; `serve` runs the
gateway (one process), `supervisor` the processes of `serve --workers N`; `check` holds
check, explain and schema (they read the config and exit); `spend`, `audit` and `keys`
the rest.
"""

from tollway.cli.args import main

__all__ = ["main"]
