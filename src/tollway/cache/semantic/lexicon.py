"""Word lists behind the near-miss guards (English only; data, no logic beyond inflection).

Kept apart from ``guards`` so the rules stay readable and the lists can grow without touching
them. Every entry is lower-case unless it is only meaningful capitalised.
"""

from __future__ import annotations

__all__ = [
    "ANTONYM_FORMS",
    "ANTONYM_PAIRS",
    "CAPITALISED_ONLY_LANGUAGES",
    "FUNCTION_WORDS",
    "LANGUAGES",
    "NUMBER_ORDINALS",
    "NUMBER_SCALES",
    "NUMBER_UNITS",
    "NUMBER_WORDS",
    "SYNONYM_GROUPS",
    "TIME_WORDS",
]

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_UNITS: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
NUMBER_UNITS.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
NUMBER_SCALES: dict[str, int] = {
    "hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 10**9, "trillion": 10**12,
}  # fmt: skip
_ORD_UNITS = (
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()
_ORD_TENS = "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split()
NUMBER_ORDINALS: dict[str, int] = {w: i for i, w in enumerate(_ORD_UNITS)}
NUMBER_ORDINALS.update({w: 20 + 10 * i for i, w in enumerate(_ORD_TENS)})
NUMBER_ORDINALS.update({"hundredth": 100, "thousandth": 1_000, "millionth": 1_000_000})
NUMBER_WORDS: frozenset[str] = frozenset(
    [*NUMBER_UNITS, *NUMBER_SCALES, *NUMBER_ORDINALS, "dozen", "half"]
)

# Ambiguous names count only when capitalised ("Go" the language, "go" the verb).
CAPITALISED_ONLY_LANGUAGES: dict[str, str] = {
    w: w.lower()
    for w in "Go C R D Dart Julia Crystal Elixir Scheme Basic Assembly Nim Zig Polish".split()
}
LANGUAGES: dict[str, str] = {
    w: w
    for w in (
        # natural languages and scripts
        "english french german spanish italian portuguese dutch russian chinese mandarin "
        "cantonese japanese korean arabic hindi bengali urdu punjabi turkish swedish "
        "norwegian danish finnish icelandic greek hebrew vietnamese thai indonesian malay tagalog "
        "filipino ukrainian czech slovak hungarian romanian bulgarian serbian croatian persian "
        "swahili latin esperanto catalan basque welsh irish gaelic yiddish tamil telugu "
        "marathi gujarati kannada malayalam amharic yoruba zulu afrikaans estonian latvian "
        "lithuanian slovenian cyrillic hiragana katakana kanji hangul pinyin romaji devanagari "
        # programming, query and markup languages
        "python javascript typescript rust java kotlin scala swift ruby php perl lua haskell "
        "ocaml fortran cobol matlab clojure erlang fsharp csharp cpp golang sql mysql postgresql "
        "postgres sqlite tsql plsql graphql bash zsh powershell shell html css scss sass "
        "json yaml toml xml csv markdown latex solidity groovy objc wasm webassembly verilog vhdl "
        "pascal delphi prolog lisp smalltalk vba"
    ).split()
}
LANGUAGES.update({
    "js": "javascript", "ts": "typescript", "golang": "go", "cpp": "c++", "csharp": "c#",
    "fsharp": "f#", "postgres": "postgresql", "farsi": "persian", "py": "python",
    "yml": "yaml", "objc": "objective-c", "md": "markdown", "webassembly": "wasm",
})  # fmt: skip

_MONTHS = "january february march april june july august september october november december"
TIME_WORDS: frozenset[str] = frozenset(
    (
        "today tomorrow yesterday tonight yesterday's tomorrow's today's last next previous "
        "ago upcoming monday tuesday wednesday thursday friday saturday sunday weekend weekday "
        "morning afternoon evening overnight midnight noon daily weekly monthly quarterly yearly "
        "annually hourly biweekly jan feb mar apr jun jul aug sep sept oct nov dec " + _MONTHS
    ).split()
)

# (side A, side B, inflect): a text with words from A only is a miss against one with words
# from B (only B, for the prepositions in/out, on/off, up/down, to/from). Verbs get their
# -s/-es/-d/-ed/-ing forms (with e-drop and doubling) generated.
ANTONYM_PAIRS: tuple[tuple[str, str, bool], ...] = (
    ("enable activate", "disable deactivate", True),
    ("include", "exclude", True),
    ("add insert append attach", "remove delete drop detach", True),
    ("create", "delete destroy", True),
    ("increase raise grow boost", "decrease reduce lower shrink", True),
    ("allow permit grant whitelist", "deny forbid block revoke blacklist prohibit", True),
    ("import", "export", True),
    ("encrypt", "decrypt", True),
    ("encode", "decode", True),
    ("compress zip", "decompress unzip extract", True),
    ("serialize serialise", "deserialize deserialise", True),
    ("upload", "download", True),
    ("start begin launch", "stop end halt terminate", True),
    ("open", "close shut", True),
    ("lock", "unlock", True),
    ("show display unhide reveal", "hide", True),
    ("buy purchase", "sell", True),
    ("accept approve", "reject decline refuse", True),
    ("install", "uninstall", True),
    ("connect", "disconnect", True),
    ("mount", "unmount", True),
    ("subscribe", "unsubscribe", True),
    ("follow", "unfollow", True),
    ("block", "unblock", True),
    ("mute", "unmute", True),
    ("pin", "unpin", True),
    ("archive", "unarchive", True),
    ("freeze", "unfreeze", True),
    ("load", "unload", True),
    ("select check", "deselect uncheck", True),
    ("push", "pull", True),
    ("send", "receive", True),
    ("read", "write", True),
    ("expand", "collapse", True),
    ("maximize maximise", "minimize minimise", True),
    ("merge join combine", "split separate", True),
    ("agree", "disagree", True),
    ("win", "lose", True),
    ("pass succeed", "fail", True),
    ("undo", "redo", True),
    ("deposit", "withdraw", True),
    ("multiply", "divide", True),
    ("add plus", "subtract minus", True),
    ("arrive", "depart leave", True),
    ("login logon signin", "logout logoff signout", False),
    ("true yes", "false", False),
    ("on", "off", False),
    ("up", "down", False),
    ("in into inside", "out outside", False),
    ("before prior earlier earliest", "after later latest", False),
    ("more greater", "less fewer", False),
    ("most max maximum maximal", "least min minimum minimal", False),
    (
        "big bigger biggest large larger largest huge",
        "small smaller smallest little tiny tinier",
        False,
    ),
    ("high higher highest", "low lower lowest", False),
    ("long longer longest", "short shorter shortest", False),
    ("fast faster fastest quick quicker quickest quickly", "slow slower slowest slowly", False),
    ("cheap cheaper cheapest inexpensive", "expensive costly pricey", False),
    ("good better best", "bad worse worst", False),
    ("old older oldest", "new newer newest", False),
    ("early", "late", False),
    ("ascending asc", "descending desc", False),
    ("public", "private", False),
    ("internal", "external", False),
    ("input inbound incoming", "output outbound outgoing", False),
    ("upper uppercase", "lower lowercase", False),
    ("horizontal horizontally", "vertical vertically", False),
    ("positive", "negative", False),
    ("left", "right", False),
    ("top", "bottom", False),
    ("above over", "below under", False),
    ("frontend front", "backend back", False),
    ("client", "server", False),
    ("sync synchronous synchronously", "async asynchronous asynchronously", False),
    ("static", "dynamic", False),
    ("mutable", "immutable", False),
    ("valid", "invalid", False),
    ("safe secure", "unsafe insecure dangerous", False),
    ("legal", "illegal", False),
    ("possible", "impossible", False),
    ("available", "unavailable", False),
    ("visible", "invisible hidden", False),
    ("online", "offline", False),
    ("light", "dark", False),
    ("hot warm", "cold cool", False),
    ("easy easier easiest simple", "hard harder hardest difficult", False),
    ("soft", "hard", False),
    ("male men man", "female women woman", False),
    ("north northern", "south southern", False),
    ("east eastern", "west western", False),
    ("past", "future", False),
    ("success successful successfully", "failure failed unsuccessful", False),
    ("profit gain", "loss", False),
    ("forward forwards", "backward backwards", False),
    ("relative", "absolute", False),
    ("simplified", "traditional", False),
    ("debit", "credit", False),
    ("lend", "borrow", True),
    ("to", "from", False),
)

_IRREGULAR = {
    "write": "wrote written", "read": "", "send": "sent", "buy": "bought", "sell": "sold",
    "hide": "hid hidden", "show": "shown", "win": "won", "lose": "lost", "begin": "began begun",
    "shut": "", "freeze": "froze frozen", "withdraw": "withdrew withdrawn", "grow": "grew grown",
    "leave": "left", "lend": "lent", "drop": "", "split": "", "undo": "undid undone",
    "redo": "redid redone",
}  # fmt: skip


def _inflections(base: str) -> set[str]:
    """Regular -s/-es/-d/-ed/-ing forms plus a few irregular ones; over-generation is harmless."""
    forms = {base, base + "s", base + "es", base + "ed", base + "ing"}
    if base.endswith("e"):
        forms |= {base + "d", base[:-1] + "ing"}
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        forms |= {base[:-1] + "ies", base[:-1] + "ied"}
    if len(base) >= 3 and base[-1] not in "aeiouwxy" and base[-2] in "aeiou":
        forms |= {base + base[-1] + "ed", base + base[-1] + "ing"}
    forms |= set(_IRREGULAR.get(base, "").split())
    return forms


def _build_forms() -> dict[str, tuple[tuple[int, int], ...]]:
    forms: dict[str, set[tuple[int, int]]] = {}
    for pair, (side_a, side_b, inflect) in enumerate(ANTONYM_PAIRS):
        for side, words in ((1, side_a), (2, side_b)):
            for word in words.split():
                for form in _inflections(word) if inflect else {word}:
                    forms.setdefault(form, set()).add((pair, side))
    # "left"/"lower" etc. are generated by several pairs; "leaves"/"lefts" noise is harmless.
    return {form: tuple(sorted(hits)) for form, hits in forms.items()}


ANTONYM_FORMS: dict[str, tuple[tuple[int, int], ...]] = _build_forms()

# Words that carry little meaning on their own: dropped before embedding and ignored by the
# substitution guard. Negations, antonyms and numbers are not here (their rules see them).
FUNCTION_WORDS: frozenset[str] = frozenset(
    (
        "a an the this that these those it its it's i i'm i've i'd me my mine myself we we're us "
        "our ours you you're your yours yourself he him his she her they them their theirs one's "
        "is are was were be been being am do does did doing done have has had having can could "
        "would should will shall may might must need ought what what's whats which who whom whose "
        "where where's when why how how's whether if so than then there there's here as and or "
        "but also just only even still yet already very really quite too much many any some "
        "of in on at for by with about into onto over under within via per through across "
        "between among to from like such using please pls kindly thanks thank hi hello hey ok okay "
        "way ways tell give me let let's lets help want wanted trying try able possible "
        "know get got go going anyone someone something anything thing things actually "
        "basically exactly simply currently"
    ).split()
)

# Words a request can swap without changing what it asks (checked after stemming); each side of
# an antonym pair is a group too ("enable"/"activate").
SYNONYM_GROUPS: tuple[str, ...] = (
    "write compose draft create generate make produce build",
    "explain describe clarify define definition meaning mean",
    "give provide suggest recommend recommendation offer list share",
    "fix repair resolve solve troubleshoot",
    "change update modify edit adjust switch alter set",
    "delete remove erase",
    "find locate look search",
    "show display view see check",
    "start begin launch",
    "use utilize employ",
    "help assist support",
    "buy purchase order",
    "choose pick select",
    "big large",
    "fast quick quickly rapid rapidly speedy",
    "error issue problem bug",
    "picture image photo",
    "locate located location",
    "learn study",
    "people person population",
    "summary summarize summarise summarization",
    "difference differ different",
    "idea suggestion",
    "speed fast",
    "leak leaking leaky",
    "leave depart",
    "car vehicle",
    "shop store",
    "email e-mail mail",
    "phone mobile",
)
