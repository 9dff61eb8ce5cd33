"""Prompt token counts, memoised per message.

Agents resend their whole history on every step, so step 50 would re-tokenise steps 1-49.
Each message's count is kept under a key built from its content; only new messages are
encoded. Counts for models without a public tokenizer (Anthropic) are o200k counts scaled
by a per-model factor that is corrected continuously from the usage upstream reports.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import orjson

from tollway.tokens.encodings import get_encoding

PER_MESSAGE = 3  # role and separators, as in OpenAI's chat format
REPLY_PRIMING = 3
SAMPLE_FIRST = 32
SAMPLE_EVERY = 16
IMAGE_TOKENS = 765  # one high-detail 512px tile plus the base; an estimate


class TokenCounter:
    def __init__(self, memo_size: int = 50_000) -> None:
        self._memo: OrderedDict[tuple[str, Any], int] = OrderedDict()
        self._memo_size = memo_size
        self._factors: dict[str, float] = {}
        self._seen: dict[str, int] = {}  # answers per estimated model, for sample()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def count_text(self, encoding: str, text: str) -> int:
        if not text:
            return 0
        return len(get_encoding(encoding).encode_ordinary(text))

    def count_prompt(self, encoding: str, messages: list[Any], loose: list[str]) -> int:
        total = sum(self._count_loose(encoding, t) for t in loose if type(t) is str)
        if messages:
            for m in messages:
                total += self._count_message(encoding, m)
            total += REPLY_PRIMING
        return total

    def _count_loose(self, encoding: str, text: str) -> int:
        if len(text) < 64:
            return self.count_text(encoding, text)
        return self._memoised(encoding, (len(text), hash(text)), text)

    def _count_message(self, encoding: str, m: Any) -> int:
        # The memo is keyed by the content's hash (Python's, cached on the str), not the
        # content itself, so it stays small however long the conversations are.
        if isinstance(m, dict):
            content = m.get("content")
            role = m.get("role")
            if type(content) is str and len(m) <= 2 and type(role) is str:
                key: Any = (role, len(content), hash(content))
            else:
                try:
                    raw = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
                except orjson.JSONEncodeError:  # nested past orjson's limit: count, no memo
                    return self._count(encoding, m)
                key = (len(raw), hash(raw))
        else:
            try:
                raw = orjson.dumps(m)
            except orjson.JSONEncodeError:
                return self._count(encoding, m)
            key = (len(raw), hash(raw))
        return self._memoised(encoding, key, m)

    def _memoised(self, encoding: str, key: Any, value: Any) -> int:
        mkey = (encoding, key)
        memo = self._memo
        n = memo.get(mkey)
        if n is not None:
            self.hits += 1
            try:
                memo.move_to_end(mkey)
            except KeyError:
                pass
            return n
        self.misses += 1
        n = self._count(encoding, value)
        memo[mkey] = n
        if len(memo) > self._memo_size:
            memo.popitem(last=False)
        return n

    def _count(self, encoding: str, value: Any) -> int:
        if isinstance(value, str):
            return self.count_text(encoding, value)
        n = PER_MESSAGE + self.count_text(encoding, "".join(_texts(value))) + _images(value)
        if isinstance(value, dict) and value.get("name"):
            n += 1
        return n

    # --- estimates for models without a public tokenizer -------------------------------
    def factor(self, model: str, seed: float) -> float:
        return self._factors.get(model, seed)

    def sample(self, model: str) -> bool:
        """Whether this answer should calibrate the model's factor though nothing else
        needed its prompt counted: the first SAMPLE_FIRST, then one in SAMPLE_EVERY."""
        n = self._seen.get(model, 0) + 1
        self._seen[model] = n
        return n <= SAMPLE_FIRST or n % SAMPLE_EVERY == 0

    def estimate(self, model: str, seed: float, raw_count: int) -> int:
        return math.ceil(round(raw_count * self.factor(model, seed), 6))

    def calibrate(self, model: str, seed: float, raw_count: int, actual: int) -> None:
        """Move the model's factor toward what upstream really counted (EWMA)."""
        if raw_count < 16 or actual <= 0:
            return
        ratio = actual / raw_count
        if not 0.2 < ratio < 5:
            return  # a cache hit or a provider quirk, not a tokenizer ratio
        with self._lock:
            old = self._factors.get(model)
            self._factors[model] = ratio if old is None else old * 0.9 + ratio * 0.1


_NOT_READ = frozenset({"type", "id", "tool_call_id", "tool_use_id", "role", "cache_control",
                       "image_url", "source", "signature"})


def _texts(value: Any) -> list[str]:
    """Every string a message carries that the model reads (content, tool calls, results)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(item for k, item in v.items() if k not in _NOT_READ)
        elif isinstance(v, list):
            stack.extend(reversed(v))
    return out


def _images(value: Any) -> int:
    if not isinstance(value, dict):
        return 0
    content = value.get("content")
    if not isinstance(content, list):
        return 0
    return IMAGE_TOKENS * sum(1 for p in content if isinstance(p, dict)
                              and p.get("type") in ("image_url", "image", "input_image"))
