"""Comparing tool results for the no-progress detector: what in a result is noise.

An agent stuck retrying gets the same answer every time, but rarely byte for byte: "timeout
after 30012 ms (req 7f3a9c)" then "timeout after 30055 ms (req 91bc2e)". So before two results
are compared, what changes on every call without saying anything is replaced by a
placeholder: UUIDs, timestamps and dates, epoch times, durations, hex digests and long
tokens, prefixed ids (`req_8f2a1`, `call-7731`), ids after a word that names them (`req
7f3a`, `trace_id=...`), retry counters (`attempt 3`), IP addresses, and the values of JSON
keys that hold ids and times (`"request_id"`, `"checked_at"`, `"elapsed_ms"`).

What moves when something moves is kept: plain numbers, percentages, counts (`5%` → `100%`,
`1200 of 5000 rows`), so a poller whose job advances is never the same result twice.

A bare acknowledgement ("ok", `{"saved": true}`, an empty body) is not evidence of anything:
an agent writing twenty files gets "ok" twenty times and is working. Such a result is
`ack` and breaks a run instead of extending it; an error never is.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Python's re runs these rules at about 8 µs per KiB: past this a result is compared as it
# is (any change is progress), so no result costs more than about 0.5 ms to normalise.
NORMALISED_MAX = 4 * 1024
EXCERPT = 120
_MEMO_MAX = 4096  # fingerprints kept by the raw result's digest (a conversation is resent)
ACK_MAX = 160  # longer results are never bare acknowledgements

# JSON keys whose values are ids and times, whatever they hold: these exact names (any
# case), names ending or starting so, and camelCase ...Id / ...At / ...Ms.
_KEY_WORDS = ("id", "ids", "uuid", "guid", "ts", "time", "timestamp", "date", "datetime",
              "created", "updated", "modified", "expires", "nonce", "etag", "seq", "sequence",
              "attempt", "attempts", "retry", "retries", "request", "trace", "span", "elapsed",
              "duration", "latency", "took", "now")
_KEY_SUFFIXES = ("_id", "-id", "_at", "_ms", "_ts", "_time", "_uuid", "_seq", "_date",
                 "_seconds", "_sec", "_ns", "_us")
_KEY_PREFIXES = ("elapsed", "duration", "latency", "took", "trace", "span", "retry", "attempt",
                 "timestamp", "request_id", "requestid")
_K = "[A-Za-z0-9_.-]"
_ID_KEY = "|".join((
    f"(?i:{'|'.join(_KEY_WORDS)})",
    f"{_K}*(?i:{'|'.join(re.escape(x) for x in _KEY_SUFFIXES)})",
    f"(?i:{'|'.join(_KEY_PREFIXES)}){_K}*",
    f"{_K}*(?:Id|ID|At|Ms)"))


# One pass, one alternation: at each place the first rule that matches wins (a regex pass
# over a result costs about as much as the rules it tries, so they are tried together).
_NOISE = re.compile(r"""
 (?P<key>"(?P<k>""" + _ID_KEY + r"""
   )"\s*:\s*(?:"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))
|(?P<hash>\#\d+\b)
|\b(?=\w)(?:
  (?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
 |(?P<time>\d{4}-\d{2}-\d{2}(?:[T\x20]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?
          (?:Z|[+-]\d{2}:?\d{2})?)?
    |(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+\d{1,2}\s+[A-Z][a-z]{2}\s+\d{4}
    |\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b
    |1\d{9}(?:\.\d+)?\b|1\d{12}\b)
 |(?P<ip>\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)
 |(?P<named>(?:req(?:uest)?(?:[_-]?id)?|trace(?:[_-]?id)?|span(?:[_-]?id)?
    |correlation(?:[_-]?id)?|txn|transaction(?:[_-]?id)?|id|uuid|nonce|etag)
    (?P<sep>\s*[:=\#]?\s*)(?=[\w-]*\d)[\w-]+)
 |(?P<counter>(?:attempts?|retry|retries|retried|tries|try|seq)(?P<csep>\s*[:=\#]?\s*)\d+)
 |(?P<dur>\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|msec|millis(?:econds?)?|milliseconds?
    |s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b)
 |(?P<hex>0x[0-9a-fA-F]+\b)
 |(?P<tok>(?<![+/-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{20,}={0,2})
 |(?P<hex2>(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b|[0-9a-fA-F]{16,}\b)
 |(?P<pid>[A-Za-z][A-Za-z0-9]*[_-](?=[A-Za-z0-9]*\d)[A-Za-z0-9]{4,}\b)
)""", re.VERBOSE)
_PLAIN = {"uuid": "<uuid>", "time": "<time>", "ip": "<ip>", "dur": "<dur>", "hex": "<hex>",
          "tok": "<tok>", "hex2": "<hex>", "pid": "<id>"}


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "key":
        return f'"{m.group("k")}":"<v>"'
    if kind == "named":
        text = m.group(0)
        return text[: m.end("sep") - m.start()] + "<id>"
    if kind == "hash":
        return "#<n>"
    if kind == "counter":
        text = m.group(0)
        return text[: m.end("csep") - m.start()] + "<n>"
    return _PLAIN.get(kind or "", m.group(0))


_WORDS = re.compile(r"[a-z]+")
_SUCCESS = frozenset((
    "ok", "okay", "success", "successful", "successfully", "succeeded", "done", "saved",
    "written", "wrote", "created", "updated", "deleted", "removed", "sent", "queued",
    "accepted", "applied", "completed", "complete", "true", "stored", "added",
    "acknowledged", "ack"))
_TROUBLE = frozenset((
    "error", "errors", "fail", "failed", "fails", "failure", "exception", "timeout", "timed",
    "invalid", "denied", "refused", "not", "unable", "cannot", "can", "couldn", "unavailable",
    "retry", "limit", "limited", "forbidden", "unauthorized", "missing", "no", "empty",
    "pending", "running", "waiting", "false", "null"))
_EMPTY = frozenset(("", "{}", '""', "true"))


def normalise(text: str) -> str:
    """The result with its per-call noise replaced by placeholders (see the module doc)."""
    return " ".join(_NOISE.sub(_replace, text).split())


@dataclass(frozen=True, slots=True)
class ResultPrint:
    """What a result is, for comparing: the digest of its normalised form, the start of that
    form (the evidence a halt shows), and whether it is a bare acknowledgement."""

    digest: str
    excerpt: str
    ack: bool


_memo: dict[bytes, ResultPrint] = {}
_sketches: dict[bytes, bytes] = {}


def fingerprint(text: str, error: bool = False) -> ResultPrint:
    """`error`: the result is known to be an error (an HTTP 4xx/5xx, an MCP isError, an
    Anthropic tool_result with is_error), so it is never an acknowledgement. Memoised by
    the raw text's digest: an agent resends its history with every request."""
    key = _key(text, b"e" if error else b"r")
    found = _memo.get(key)
    if found is not None:
        return found
    head, rest = text[:NORMALISED_MAX], text[NORMALISED_MAX:]
    norm = normalise(head)
    h = hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=12)
    if rest:
        h.update(b"\0" + rest.encode("utf-8", "surrogatepass"))
    excerpt = norm if len(norm) <= EXCERPT else norm[: EXCERPT - 3] + "..."
    found = ResultPrint(h.hexdigest(), excerpt, not error and _acknowledges(norm))
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    _memo[key] = found
    return found


def acknowledges(text: str, error: bool = False) -> bool:
    """Whether a result is a bare acknowledgement (only short ones can be: no need to
    normalise a long one to know)."""
    return len(text) <= ACK_MAX and fingerprint(text, error).ack


def sketch(text: str) -> bytes:
    """A digest of the words of a result made of letters only, in order (of its normalised
    part; the rest as it is): what normalising leaves alone (noise has digits or punctuation
    in it; the rare exceptions, a month's name or a unit, can only make two results count
    as different, never as the same). Two results with different sketches are different
    whatever their noise, so most results that move are told apart at C speed (a few µs a
    KiB, once per result) without the regex pass. Memoised like fingerprints."""
    key = _key(text, b"s")
    found = _sketches.get(key)
    if found is None:
        head, rest = text[:NORMALISED_MAX], text[NORMALISED_MAX:]
        words = " ".join(w for w in head.split() if w.isalpha())
        h = hashlib.blake2b(words.encode("utf-8", "surrogatepass"), digest_size=12)
        if rest:
            h.update(b"\0" + rest.encode("utf-8", "surrogatepass"))
        found = h.digest()
        if len(_sketches) >= _MEMO_MAX:
            _sketches.clear()
        _sketches[key] = found
    return found


def _key(text: str, kind: bytes) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16,
                           person=kind).digest()


def _acknowledges(norm: str) -> bool:
    if len(norm) > 80:
        return False
    low = norm.lower()
    if low in _EMPTY:
        return True
    words = set(_WORDS.findall(low))
    return bool(words & _SUCCESS) and not words & _TROUBLE
