"""Numbers for the near-miss guards: digits and English number words, with their units.

"3 sentences", "three sentences" and "a 3-sentence summary" all read as ``3 sentence``;
"1,000" as ``1000``; "5 million dollars" and "$5,000,000" as ``5000000 dollar``; "1st"/"first"
as ``#1``; dates, times and versions ("2024-03-05", "10:30", "3.12") stay literal. A number's
unit is kept only from a known list, so "5 ideas" and "5 party ideas" still agree.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from .lexicon import NUMBER_ORDINALS, NUMBER_SCALES, NUMBER_UNITS, NUMBER_WORDS

__all__ = ["UNITS", "UNIT_ALIASES", "digit_numbers", "word_numbers"]

# Units and counted nouns that change what a number means ("3 sentences" vs "3 paragraphs").
# A generic "next word" rule would also split true paraphrases ("5 ideas" vs "5 party ideas").
UNITS: frozenset[str] = frozenset(
    (
        "% percentile basis point x time times k "
        # time
        "millisecond microsecond nanosecond second minute hour day week weekend month quarter "
        "year decade century night am pm "
        # length, area, mass, volume, temperature, speed, energy
        "millimeter centimeter meter kilometer inch foot yard mile acre hectare sqft "
        "milligram gram kilogram pound ounce ton tonne stone liter milliliter gallon cup "
        "tablespoon teaspoon pint quart celsius fahrenheit kelvin degree mph kph kmh knot rpm "
        "calorie kcal joule volt watt kilowatt kw kwh amp mah psi "
        # data and screens
        "bit byte kbit kbyte mbit mbyte gbit gbyte tbit tbyte pbit pbyte kibyte mibyte gibyte "
        "tibyte bps kbps mbps gbps pixel px dpi fps hz khz mhz ghz core thread "
        # money
        "dollar euro pound sterling yen cent rupee yuan franc peso bitcoin btc eth "
        # text an LLM is asked to produce
        "word sentence paragraph line page bullet character token chapter verse slide section "
        "stanza syllable"
    ).split()
)
UNIT_ALIASES: dict[str, str] = {
    "percent": "%", "pct": "%", "percentage": "%", "°c": "celsius", "c": "celsius",
    "°f": "fahrenheit", "f": "fahrenheit", "°k": "kelvin", "secs": "second", "sec": "second",
    "s": "second", "mins": "minute", "min": "minute", "hrs": "hour", "hr": "hour", "h": "hour",
    "ms": "millisecond", "msec": "millisecond", "km": "kilometer", "kilometre": "kilometer",
    "m": "meter", "metre": "meter", "cm": "centimeter", "centimetre": "centimeter",
    "mm": "millimeter", "millimetre": "millimeter", "mi": "mile", "ft": "foot", "feet": "foot",
    "inches": "inch", "yd": "yard", "kg": "kilogram", "kilo": "kilogram", "g": "gram",
    "gr": "gram", "mg": "milligram", "lb": "pound", "lbs": "pound", "oz": "ounce", "l": "liter",
    "litre": "liter", "ml": "milliliter", "usd": "dollar", "$": "dollar", "buck": "dollar",
    "eur": "euro", "€": "euro", "gbp": "sterling", "£": "sterling", "jpy": "yen", "¥": "yen",
    "char": "character", "tbsp": "tablespoon", "tsp": "teaspoon", "kilobyte": "kbyte",
    "megabyte": "mbyte", "gigabyte": "gbyte", "terabyte": "tbyte", "kilobit": "kbit",
    "megabit": "mbit", "gigabit": "gbit", "terabit": "tbit", "sentance": "sentence",
    "kilowatt-hour": "kwh", "centurie": "century", "lines": "line",
}  # fmt: skip

_NUMBER = re.compile(
    r"(?P<num>\d+(?:,\d{3})*(?:[.:/-]\d+)*)(?:(?P<ord>st|nd|rd|th)\b)?"
    r"(?:\s?(?P<pct>%)|\s?(?P<deg>°\s?[cfk])\b"
    r"|[\s-]?(?P<unit>[^\W\d_]+)(?:\s(?P<unit2>[^\W\d_]+))?)?",
    re.I,
)
_OPERATORS = "+-*/^=<>\u00d7\u00f7"
_OPERAND_START = frozenset("0123456789(")
_DATA_UNIT = re.compile(r"([kmgtp]i?)([bB])(ps|/s)?", re.I)
_SCALE_WORDS = frozenset([*NUMBER_SCALES, "dozen"])
_GLUE_WORDS = frozenset(
    "a an and or nor to of in on at for by with from into than then per the is are was were be "
    "it this that these those each every more most less fewer about".split()
)


@lru_cache(maxsize=8192)
def _unit(word: str | None) -> str | None:
    """Canonical unit after a number ("sentences" -> "sentence", "MB" -> "mbyte"), or None."""
    if not word:
        return None
    data = _DATA_UNIT.fullmatch(word)
    if data:  # case matters: MB is bytes, Mb bits
        kind = "byte" if data[2] == "B" else "bit"
        return f"{data[1].lower()}{kind}{'/s' if data[3] else ''}"
    word = word.lower()
    word = UNIT_ALIASES.get(word, word)
    if word in UNITS:
        return word
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith(("ches", "shes", "sses", "xes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    word = UNIT_ALIASES.get(word, word)
    return word if word in UNITS else None


def _skippable(word: str | None) -> bool:
    """A lower-case word that may stand between a number and its unit ("3 short paragraphs")."""
    return word is not None and word.islower() and word not in _GLUE_WORDS


def digit_numbers(text: str, operators: list[str]) -> list[str]:
    """Numbers written with digits, with their unit; arithmetic operators go to ``operators``."""
    out: list[str] = []
    has_operators = any(op in text for op in _OPERATORS if op != "-") or " - " in text
    for m in _NUMBER.finditer(text):
        start = m.start()
        if start and text[start - 1] in "0123456789.":
            continue  # the tail of something like "v1.2" already read
        num, ordinal, pct, deg, unit_word, next_word = m.groups()
        num = num.replace(",", "")
        before = text[start - 1] if start else ""
        currency = UNIT_ALIASES[before] if before and before in "$€£¥" else None
        sign_at = start - 2 if currency else start - 1
        if sign_at >= 0 and text[sign_at] in "-\u2212":
            if sign_at == 0 or text[sign_at - 1] in " (=\n":
                num = "-" + num
        scale = NUMBER_SCALES.get(unit_word.lower()) if unit_word else None
        if scale:  # "5 million dollars" == "five million dollars"
            try:
                num = str(int(Decimal(num.lstrip("-")) * scale))
            except (InvalidOperation, ValueError):
                pass
            unit = _unit(next_word)
        elif pct:
            unit = "%"
        else:
            unit = _unit(deg and deg.replace(" ", "")) or _unit(unit_word)
            if unit is None and _skippable(unit_word) and not (next_word or "x").istitle():
                unit = _unit(next_word)
        if currency and unit is None:
            unit = currency
        if ordinal:
            num = "#" + num
        out.append(f"{num} {unit}" if unit else num)
        if has_operators:
            after = text[m.end() : m.end() + 8].lstrip()
            if after[:1] and after[0] in _OPERATORS and after[1:].lstrip()[:1] in _OPERAND_START:
                operators.append(after[0])
    return out


def _extends(current: int, value: int) -> bool:
    """Whether a number word continues the running value ("twenty" + "five") or starts anew."""
    rest = current % 100
    if value < 10:
        return rest == 0 or (rest >= 20 and rest % 10 == 0)
    return rest == 0


def _read_before(word: str, previous: str) -> bool:
    """Whether ``word`` was already read: as the scale of digits ("5 million"), or as the unit
    of the number before it ("1 second", "one second")."""
    if word in _SCALE_WORDS:
        return previous[:1].isdigit()
    return word in NUMBER_ORDINALS and (previous[:1].isdigit() or previous in NUMBER_WORDS)


def _positions(words: list[str], wanted: frozenset[str]) -> list[int]:
    """Sorted indexes of the wanted words, found by ``list.index`` (a C loop) per word."""
    found: list[int] = []
    for word in wanted:
        at = -1
        try:
            while True:
                at = words.index(word, at + 1)
                found.append(at)
        except ValueError:
            pass
    return sorted(found)


def word_numbers(words: list[str]) -> list[str]:
    """Number words, combined ("twenty-five" -> 25, "two hundred" -> 200, "third" -> #3)."""
    out: list[str] = []
    i, n = 0, len(words)
    for j in _positions(words, NUMBER_WORDS.intersection(words)):
        if j < i:
            continue  # consumed by the previous run
        i = j
        if i and _read_before(words[i], words[i - 1]):
            continue
        total = current = 0
        started = ordinal = False
        value: str | None = None
        while i < n:
            w = words[i]
            if w == "half" and not started:
                value, i = "0.5", i + 1
                break
            if w in NUMBER_UNITS or w in NUMBER_ORDINALS:
                v = NUMBER_UNITS.get(w, NUMBER_ORDINALS.get(w, 0))
                if v >= 100:
                    current = max(current, 1) * v
                elif started and not _extends(current, v):
                    break
                else:
                    current += v
                started, i = True, i + 1
                if w in NUMBER_ORDINALS:
                    ordinal = True
                    break
            elif w in NUMBER_SCALES or w == "dozen":
                current = max(current, 1) * NUMBER_SCALES.get(w, 12)
                if w != "hundred" and w != "dozen":
                    total, current = total + current, 0
                started, i = True, i + 1
            elif w == "and" and started and i + 1 < n and words[i + 1] in NUMBER_UNITS:
                i += 1
            else:
                break
        if value is None:
            value = ("#" if ordinal else "") + str(total + current)
        unit = _unit(words[i]) if i < n else None
        if unit is None and i + 1 < n and _skippable(words[i]):
            unit = _unit(words[i + 1])
        out.append(f"{value} {unit}" if unit else value)
    return out
