"""What a request's text becomes before it is compared: four views of it, one vector.

A mean-of-tokens embedder of content words alone (what the cache used to compare) drops
question words, pronouns and word order, so short questions collapse into one bag: "What is
love?", "Do you love me?" and "How do you know you are in love?" all embed as `love`, at
cosine 1.0. The vector is now the weighted concatenation of four unit blocks, so the cosine
of two texts is the weighted mean of four cosines:

- `content`: the content words (what carries the topic; paraphrases agree here);
- `raw`: the whole text, pronouns and question words included;
- `frame`: what kind of question it is (how / why / which / when / where / who / what /
  a yes-no question / none), as a multi-hot over those groups;
- `order`: hashed bigrams of the content words, so "buy a Mac" is not "which Mac to buy".

The weights were tuned on one half of public labelled pairs and reported on the other
(`bench/semantic_eval.py`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from .content import embedding_text
from .embedder import Embedder, normalize_rows, row_norms

FloatMatrix = npt.NDArray[np.float32]

FRAMES = {  # question word -> its group
    "how": 0, "way": 0, "steps": 0,
    "why": 1, "reason": 1, "purpose": 1,
    "which": 2,
    "when": 3,
    "where": 4,
    "who": 5, "whom": 5, "whose": 5,
    "what": 6, "whats": 6,
}
WHAT = 6
OPEN = (0, 2, 3, 4, 5)  # what "what" can also be asking: a way, a choice, a time, a place...
YES_NO = frozenset("is are was were do does did can could should would will shall may "
                   "might must has have had am isn't aren't don't doesn't can't".split())
POLITE = frozenset("you u".split())  # "can you ...", "could you ...": a request, not yes-no
REQUEST = 8  # an instruction or a request ("Give me...", "Can you explain..."), or no frame
_GROUPS = 9  # 7 groups, yes-no, none
ORDER_DIM = 128
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True, slots=True)
class Recipe:
    content: float = 1.0
    raw: float = 0.7
    frame: float = 0.6
    order: float = 0.4

    @property
    def name(self) -> str:
        return f"mix-v1:{self.content:g}/{self.raw:g}/{self.frame:g}/{self.order:g}"

    def dim(self, base: int) -> int:
        return 2 * base + _GROUPS + ORDER_DIM

    def vectors(self, embedder: Embedder, texts: list[str]) -> FloatMatrix:
        """One unit vector per text (zero for a text with no words)."""
        n = len(texts)
        content = [embedding_text(t) for t in texts]
        rows = embedder.embed(content + texts)
        frames = np.zeros((n, _GROUPS), dtype=np.float32)
        orders = np.zeros((n, ORDER_DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            frame(t, frames[i])
            order(content[i], orders[i])
        out = np.concatenate([rows[:n] * self.content, rows[n:] * self.raw,
                              _unit(frames) * self.frame, _unit(orders) * self.order], axis=1)
        out[~np.any(rows[n:], axis=1)] = 0.0  # nothing to embed: matches nothing
        return normalize_rows(out)


def _unit(m: FloatMatrix) -> FloatMatrix:
    norms = row_norms(m)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return m / norms


def frame(text: str, v: FloatMatrix | None = None) -> FloatMatrix:
    """The question's kind as weights over the groups (into `v` when given). "What" is open:
    it half-matches how, which, when, where and who ("What is the speed of light?" asks
    what "How fast does light travel?" does), never why."""
    if v is None:
        v = np.zeros(_GROUPS, dtype=np.float32)
    words = [w[:-2] if w.endswith("'s") else w for w in _WORD.findall(text.lower())]
    found = False
    for w in words:
        g = FRAMES.get(w)
        if g is not None:
            v[g] = 1.0
            found = True
    if found:
        if v[WHAT]:
            for g in OPEN:
                v[g] = max(v[g], 0.5)
    elif words and words[0] in YES_NO and not (len(words) > 1 and words[1] in POLITE):
        v[7] = 1.0
    else:
        v[REQUEST] = 1.0
    return v


def order(content: str, v: FloatMatrix | None = None) -> FloatMatrix:
    """Signed hashed bigrams of the content words (`embedding_text`), into `v` if given."""
    if v is None:
        v = np.zeros(ORDER_DIM, dtype=np.float32)
    words = content.split()
    grams = [f"{a} {b}" for a, b in pairwise(words)] or words[:1]
    acc = [0.0] * ORDER_DIM  # summed in Python: a numpy element write costs ~0.5 us each
    for g in grams:
        h = zlib.crc32(g.encode("utf-8", "surrogatepass"))
        acc[h % ORDER_DIM] += 1.0 if h & 0x80000000 else -1.0
    v += np.asarray(acc, dtype=np.float32)
    return v
