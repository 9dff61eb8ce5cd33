"""Personal data with Microsoft Presidio's analyzer.

Its pattern recognizers (email, phone, card numbers with their checksum, IBAN, national ids,
IP, crypto wallets...) need no language model: the pipeline is a blank spaCy tokenizer
unless `spacy_model` names an installed pipeline package (then PERSON, LOCATION and the
other NER entities work too). Nothing is downloaded: the public-suffix list the email and
URL recognizers consult is the snapshot inside tldextract, not a fetch at first use.
Only the configured entities' recognizers run, and the phone matcher only for the
configured regions (each region is a pass of it: with Presidio's defaults it is four
fifths of the time).

Without a spaCy pipeline the analyzer's NLP step only tokenises (a blank pipeline has no
lemmas for context and no entities), which was a third of its time: the recognizers are then
called directly, as the analyzer would call them, and their overlaps resolved as it does.
And a recognizer whose entity cannot be in the text is not run at all: no email without an
`@`, no card number with fewer than 12 digits, no phone number with fewer than 6 (counted
with one `str.translate`, not a regex).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tollway.config.guardrails import PiiConfig

from .base import Finding

_LOCK = threading.Lock()
_DIGITS = str.maketrans("", "", "0123456789")
# entity -> what a text must have for it to be there: (characters, minimum digits)
_NEEDS: dict[str, tuple[tuple[str, ...], int]] = {
    "EMAIL_ADDRESS": (("@",), 0), "PHONE_NUMBER": ((), 6), "CREDIT_CARD": ((), 12),
    "US_SSN": ((), 9), "IBAN_CODE": ((), 2), "IP_ADDRESS": ((":",), 1),
}


def _offline_suffixes() -> None:
    """tldextract's module-level extractor fetches the public-suffix list on first use; ours
    reads the snapshot it ships."""
    import tldextract
    import tldextract.tldextract as impl

    if getattr(impl, "_tollway_offline", False):
        return
    impl.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    impl._tollway_offline = True  # type: ignore[attr-defined]


class PiiDetector:
    name = "pii"

    def __init__(self, cfg: PiiConfig) -> None:
        with _LOCK:
            self.analyzer = _analyzer(cfg)
        self.entities = list(cfg.entities)
        self.min_score = cfg.min_score
        self.language = cfg.language
        supported = set(self.analyzer.get_supported_entities(cfg.language))
        missing = [e for e in self.entities if e not in supported]
        if missing:
            raise ValueError(
                f"Presidio has no recognizer for {', '.join(missing)} here"
                + ("" if cfg.spacy_model else " (PERSON, LOCATION and the other NER entities "
                   "need guardrails.pii.spacy_model: an installed spaCy pipeline package)"))
        self.direct = cfg.spacy_model is None
        self.recognizers = [
            (r, [e for e in r.supported_entities if e in self.entities])
            for r in self.analyzer.registry.get_recognizers(language=cfg.language,
                                                            entities=self.entities)]

    def scan(self, text: str) -> list[Finding]:
        if not self.direct:
            results = self.analyzer.analyze(text=text, language=self.language,
                                            entities=self.entities,
                                            score_threshold=self.min_score)
        else:
            from presidio_analyzer import EntityRecognizer

            digits = len(text) - len(text.translate(_DIGITS))
            results = []
            for recognizer, entities in self.recognizers:
                wanted = [e for e in entities if _may_hold(e, text, digits)]
                if wanted:
                    results += [r for r in recognizer.analyze(text, wanted, None)
                                if r.score >= self.min_score]
            results = EntityRecognizer.remove_duplicates(results)
        return [Finding("pii", r.entity_type, r.start, r.end, float(r.score)) for r in results]


def _may_hold(entity: str, text: str, digits: int) -> bool:
    needs = _NEEDS.get(entity)
    if needs is None:
        return True
    chars, at_least = needs
    if chars and any(c in text for c in chars):
        return True
    return bool(at_least) and digits >= at_least


def _analyzer(cfg: PiiConfig) -> Any:
    for name in ("presidio-analyzer", "presidio_analyzer"):
        logging.getLogger(name).setLevel(logging.ERROR)  # it warns per unused recognizer
    _offline_suffixes()
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    model = cfg.spacy_model
    lang = cfg.language

    class _Engine(SpacyNlpEngine):  # type: ignore[misc]
        def load(self) -> None:
            # spacy.load of a package name never downloads; a missing one raises OSError
            self.nlp = {lang: spacy.load(model) if model else spacy.blank(lang)}

    engine = _Engine(models=[{"lang_code": lang, "model_name": model or "blank"}])
    try:
        engine.load()
    except OSError as e:
        raise ValueError(f"spaCy pipeline {model!r} is not installed ({e})") from None
    registry = RecognizerRegistry(supported_languages=[lang])
    registry.load_predefined_recognizers(languages=[lang], nlp_engine=engine)
    registry.remove_recognizer("PhoneRecognizer")
    registry.add_recognizer(PhoneRecognizer(supported_regions=tuple(cfg.phone_regions),
                                            supported_language=lang))
    if not model:
        registry.remove_recognizer("SpacyRecognizer")  # a blank pipeline has no entities
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=[lang])
