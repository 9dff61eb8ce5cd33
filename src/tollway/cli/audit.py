"""`tollway audit verify FILE...` and `tollway audit export`: checking the audit chain."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify or export the tamper-evident audit log")
    what = audit.add_subparsers(dest="audit_command", required=True)
    verify = what.add_parser("verify", help="check the hash chain of audit files (oldest "
                                            "first: audit.jsonl.2 audit.jsonl.1 audit.jsonl)")
    verify.add_argument("files", nargs="+", metavar="FILE",
                        help="the audit files, oldest first (rotated ones before the current)")
    export = what.add_parser("export", help="write the Redis audit stream as JSON lines")
    export.add_argument("-c", "--config", default="gateway.yaml",
                        help="the gateway's config: its state.redis says which Redis holds "
                             "the stream (default: %(default)s)")
    export.add_argument("-o", "--output", required=True,
                        help="the JSON-lines file to write ('-': standard output)")


def run(args: argparse.Namespace) -> int:
    from tollway.observe.audit import RedisSink, verify

    if args.audit_command == "verify":
        try:
            ok, report = verify(args.files)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(report, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    from tollway.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sink = RedisSink(cfg.state.redis, cfg.audit.max_len)
    try:
        with open(args.output, "wb") as out:
            n = sink.export(out)
    finally:
        sink.close()
    print(f"{n} records written to {args.output}")
    return 0
