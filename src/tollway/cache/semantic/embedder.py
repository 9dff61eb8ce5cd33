"""Text embedders for the semantic cache.

Vectors are compared across processes and restarts, so every embedder is deterministic, returns
float32 rows with unit L2 norm (cosine == dot product) and names its model and version in
``name`` so stored vectors can be tied to the model that produced them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .words import WordIds

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["Embedder", "HashingEmbedder", "WordLlamaEmbedder", "normalize_rows"]

FloatMatrix = npt.NDArray[np.float32]

_BATCH_FROM = 16  # texts from which the tokenizer's batch call pays for itself
_TOKEN_CHUNK = 4096  # tokens gathered per step, so a huge prompt never builds a huge temporary


@runtime_checkable
class Embedder(Protocol):
    """What the matcher needs from a model: a fixed width, a stable name and a batch embed."""

    dim: int
    name: str

    def embed(self, texts: list[str]) -> FloatMatrix:
        """Return one float32, L2-normalised row per text (all-zero for text with no tokens)."""
        ...


def normalize_rows(matrix: npt.NDArray[Any]) -> FloatMatrix:
    """L2-normalise rows in float32; zero rows stay zero (they then match nothing)."""
    out = np.asarray(matrix, dtype=np.float32)
    if out.ndim == 1:
        out = out[None, :]
    norms = row_norms(out)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return np.ascontiguousarray(out / norms, dtype=np.float32)


def row_norms(m: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """np.linalg.norm(m, axis=1, keepdims=True), the same sums, without its ~8 us wrapper
    (it ran four times per semantic lookup)."""
    return np.sqrt(np.add.reduce(m * m, axis=1, keepdims=True))


# --------------------------------------------------------------------------------------------
# WordLlama (static token embeddings shipped inside the wheel)


class _WordLlamaModel:
    """The parts of a loaded WordLlama model that embedding needs, read-only once built."""

    __slots__ = ("matrix", "tokenizer", "words")

    def __init__(self, matrix: FloatMatrix, tokenizer: Tokenizer) -> None:
        self.matrix = matrix
        self.tokenizer = tokenizer
        self.words = WordIds.for_tokenizer(tokenizer)  # None: encode each text whole


_MODELS: dict[int, _WordLlamaModel] = {}
_MODELS_LOCK = threading.Lock()


def _import_wordllama() -> Any:
    """Import wordllama without keeping the root-logger config it installs at import time."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import wordllama  # the import runs logging.basicConfig(level=INFO)

    root.handlers[:] = handlers
    root.setLevel(level)
    return wordllama


def _load_wordllama(dim: int) -> _WordLlamaModel:
    """Load the bundled weights once per process; never touches the network."""
    model = _MODELS.get(dim)
    if model is not None:
        return model
    with _MODELS_LOCK:
        model = _MODELS.get(dim)
        if model is None:
            wordllama = _import_wordllama()
            # cache_dir must be the package dir, else the bundled files are not found.
            inference = wordllama.WordLlama.load(
                cache_dir=Path(wordllama.__file__).parent, disable_download=True, dim=dim
            )
            tokenizer = inference.tokenizer
            tokenizer.no_padding()  # we pool each text on its own; padding only costs memory
            tokenizer.no_truncation()
            matrix = np.ascontiguousarray(inference.embedding, dtype=np.float32)
            matrix.setflags(write=False)
            model = _WordLlamaModel(matrix, tokenizer)
            _MODELS[dim] = model
    return model


class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` static embeddings: mean of token vectors, about 0.05-0.3 ms.

    The model loads lazily on first use (once per process, under a lock), from the weights in
    the wheel (0.4 ships ``dim=256`` only; other widths raise FileNotFoundError, never download).
    ``embed`` only reads shared state (the tokenizer through its non-mutating ``encode``), so it
    is safe to call from several executor threads at once.
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        try:
            version = metadata.version("wordllama")
        except metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
            version = "unknown"
        self.name = f"wordllama-{version}/l2_supercat-{dim}"

    def load(self) -> None:
        """Load the model now (e.g. at startup) instead of on the first request."""
        _load_wordllama(self.dim)

    def embed(self, texts: list[str]) -> FloatMatrix:
        model = _load_wordllama(self.dim)
        matrix, vocab = model.matrix, model.matrix.shape[0]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        words = model.words
        if words is not None:
            encodings: list[list[int]] = [words.ids(t) for t in texts]
        elif len(texts) <= _BATCH_FROM:  # encode_batch's thread pool costs ~100 us a call
            encodings = [model.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
        else:
            encodings = [e.ids for e in model.tokenizer.encode_batch(
                texts, add_special_tokens=False)]
        for row, encoding in enumerate(encodings):
            ids = np.asarray(encoding, dtype=np.int64)
            if ids.size == 0:
                continue
            np.minimum(ids, vocab - 1, out=ids)  # ids are never negative
            acc = out[row]
            for start in range(0, ids.size, _TOKEN_CHUNK):
                acc += matrix[ids[start : start + _TOKEN_CHUNK]].sum(axis=0, dtype=np.float32)
        return normalize_rows(out)


# --------------------------------------------------------------------------------------------
# Hashed character n-grams (no model; tests and a no-model mode)

_SPACES = re.compile(r"\s+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser: spreads the polynomial hash over all 64 bits."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _seed(n: int) -> np.uint64:
    """A per-n seed from blake2b, so 3-, 4- and 5-grams land in independent buckets."""
    return np.uint64(int.from_bytes(hashlib.blake2b(b"ngram%d" % n, digest_size=8).digest()))


class HashingEmbedder:
    """Signed feature hashing of lower-cased character 3-5-grams into 4096 dims.

    Purely lexical (a near-duplicate detector, not a paraphrase model), but deterministic across
    processes and platforms: the hash is fixed 64-bit arithmetic in numpy, seeded by blake2b,
    never Python's randomised ``hash``.
    """

    def __init__(self, dim: int = 4096, ngrams: tuple[int, ...] = (3, 4, 5)) -> None:
        if dim <= 0 or dim & (dim - 1):
            raise ValueError("dim must be a power of two")
        self.dim = dim
        self.ngrams = ngrams
        self._shift = np.uint64(64 - (dim.bit_length() - 1))
        self._seeds = {n: _seed(n) for n in ngrams}
        self.name = f"hashing-char{min(ngrams)}-{max(ngrams)}-{dim}-v1"

    def _vector(self, text: str) -> FloatMatrix:
        clean = " " + _SPACES.sub(" ", text.lower()).strip() + " "
        codes = np.frombuffer(clean.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        vec = np.zeros(self.dim, dtype=np.float32)
        prime = np.uint64(0x100000001B3)
        with np.errstate(over="ignore"):
            for n in self.ngrams:
                count = codes.size - n + 1
                if count <= 0:
                    continue
                h = np.full(count, self._seeds[n], dtype=np.uint64)
                for j in range(n):
                    h = (h ^ codes[j : j + count]) * prime
                h = _mix64(h & _MASK64)
                buckets = (h >> self._shift).astype(np.intp)
                signs = np.where(h & np.uint64(1), np.float32(1), np.float32(-1))
                vec += np.bincount(buckets, weights=signs, minlength=self.dim).astype(np.float32)
        return vec

    def embed(self, texts: list[str]) -> FloatMatrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._vector(text)
        return normalize_rows(out)
