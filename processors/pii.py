"""``PIIScanner``: presidio-analyzer as a :class:`~processors.scanning.Scanner` backend, offline and fast.

Offline by default: presidio's pattern recognizers and ours, no NLP model (presidio's ``NoOpNlpEngine``
artifacts for any extra recognizer), no network: tldextract never fetches the public-suffix list and a
missing spaCy model is never downloaded. Named-entity recognition (names, places, organisations) is
switched on only by configuration, ``PIIScanner(nlp="en_core_web_sm")``, once that model is installed.

The built-in set (:data:`ENTITIES`):

=====================  =========================================================================
entity                 recognizer
=====================  =========================================================================
EMAIL_ADDRESS          presidio ``EmailRecognizer``; domain checked against tldextract's bundled
                       suffix snapshot
PHONE_NUMBER           ours: international, North American and ``0``-prefixed national formats,
                       validated with ``phonenumbers`` for presidio's default regions
CREDIT_CARD            presidio ``CreditCardRecognizer`` (Luhn checksum)
US_SSN                 presidio ``UsSsnRecognizer`` (bare 9-digit numbers need a context word)
IBAN_CODE              presidio ``IbanRecognizer`` (checksum)
IP_ADDRESS             presidio ``IpRecognizer`` (v4 and v6)
JWT, AWS_ACCESS_KEY,   ours: secrets by prefix or form; ``API_KEY`` covers GitHub, Slack, Stripe and
AWS_SECRET_KEY,        Google tokens; ``URL_CREDENTIALS`` covers ``user:pass@`` and secret query
PRIVATE_KEY,           parameters (``?token=``, ``&sig=``...); ``PASSWORD`` is a ``password=...``
BEARER_TOKEN,          assignment; ``HIGH_ENTROPY_TOKEN`` a 20+ character token mixing cases and
URL_CREDENTIALS,       digits with high entropy
API_KEY, PASSWORD,
HIGH_ENTROPY_TOKEN
=====================  =========================================================================

Left out on purpose: presidio's ``DATE_TIME``, ``URL``, ``UUID``, ``MAC_ADDRESS`` (they flag the
timestamps, links and request ids every log line carries), ``US_BANK_NUMBER``, ``US_DRIVER_LICENSE``,
``US_PASSPORT``, ``US_ITIN``, ``MEDICAL_LICENSE``, ``UK_NHS`` and ``CRYPTO`` (weak patterns that match
order numbers). Add any presidio recognizer with ``extra_recognizers=``.

The fast path, per text: a text longer than ``chunk_size`` is scanned in overlapping chunks, at most
``max_chars`` of it (the rest is reported as ``UNSCANNED``, so :meth:`PIIScanner.redact` masks it: fail
closed). Per chunk, each recognizer sits behind a gate of necessary conditions (a digit count, a length,
a substring, a stdlib trigger regex); when no gate opens, presidio is not involved at all. A pattern
recognizer whose gate opens is evaluated exactly as presidio's ``PatternRecognizer`` scores a match (same
patterns and flags, same ``validate_result`` / ``invalidate_result``, same scores and de-duplication),
without its per-call overhead; the IBAN recognizer (its own analysis), NER and extra recognizers run
through presidio's ``analyze()``. Recognizers whose matches hold no whitespace only look at the
whitespace-free runs that can match. The tests check both paths against ``analyze()``. Results are cached
in a bounded LRU keyed by a keyed BLAKE2b digest of the chunk (a per-scanner random key), never by the
text. A recognizer that raises masks its whole chunk (``SCAN_ERROR``) instead of letting it through.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from processors._encoded_forms import encoded_findings, may_hide_encoded
from processors.scanning import Finding, Scanner, mask, utf8_safe
from processors.secret_scanner import SecretScanner

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer
    from presidio_analyzer.nlp_engine import NlpArtifacts

    from processors._stages import Gate, Stage

__all__ = ["ENTITIES", "PIIScanner", "annotate"]

ENTITIES: frozenset[str] = frozenset(
    {
        "API_KEY",
        "AWS_ACCESS_KEY",
        "AWS_SECRET_KEY",
        "BEARER_TOKEN",
        "CREDIT_CARD",
        "EMAIL_ADDRESS",
        "HIGH_ENTROPY_TOKEN",
        "IBAN_CODE",
        "IP_ADDRESS",
        "JWT",
        "PASSWORD",
        "PHONE_NUMBER",
        "PERSON",
        "PRIVATE_KEY",
        "STREET_ADDRESS",
        "SUSPICIOUS_TOKEN",
        "URL_CREDENTIALS",
        "US_SSN",
    }
)
_FAIL_CLOSED = frozenset({"TRUNCATED", "UNSCANNABLE"})  # SecretScanner's: kept whatever the entities

_INSTALL_HINT = "install auditlog-pipeline[pii] to use PIIScanner"
_EXTRA_MODULES = frozenset({"presidio_analyzer", "phonenumbers", "tldextract", "regex", "spacy"})
_PEM_END = re.compile(r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# Overlapping findings merge into one span named by the most specific entity (checksummed and prefixed
# forms first, heuristics last): a card number inside an IBAN is the IBAN, an entropy run in a JWT the JWT.
_PRIORITY: dict[str, int] = {
    e: i
    for i, e in enumerate(
        (
            "UNSCANNED",
            "SCAN_ERROR",
            "UNSCANNABLE",
            "TRUNCATED",
            "PRIVATE_KEY",
            "JWT",
            "AWS_ACCESS_KEY",
            "API_KEY",
            "URL_CREDENTIALS",
            "BEARER_TOKEN",
            "EMAIL_ADDRESS",
            "IBAN_CODE",
            "CREDIT_CARD",
            "US_SSN",
            "IP_ADDRESS",
            "PHONE_NUMBER",
            "PASSWORD",
            "AWS_SECRET_KEY",
            "STREET_ADDRESS",
            "PERSON",
            "HIGH_ENTROPY_TOKEN",
            "SUSPICIOUS_TOKEN",
        )
    )
}


def _load_presidio() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The presidio side (recognizers, stages, NLP engines); a missing extra raises the install hint."""
    # tldextract reads this when first imported; our email recognizer also uses a private extractor
    # that never fetches, so this only protects code that uses tldextract's module-level default.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        from processors import _nlp, _recognizers, _stages
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] in _EXTRA_MODULES:
            raise ImportError(_INSTALL_HINT) from exc
        raise
    return _recognizers, _stages, _nlp


class PIIScanner:
    """Finds personal data and secrets with presidio recognizers, behind a prefilter and a cache.

    Thread-safe; never raises on a ``str``. See the module docstring for the built-in set.

    Args:
        entities: restrict detection to these entity names (default: all of :data:`ENTITIES`, plus the
            NER entities when ``nlp`` is set, plus whatever ``extra_recognizers`` support).
        score_threshold: minimum presidio score kept. Weak matches (bare 9-digit SSNs, 40-character
            base64 runs) reach it only with a context word nearby (``ssn``, ``secret``...).
        nlp: a spaCy model name (``"en_core_web_sm"``) to switch on named-entity recognition
            (``PERSON``, ``LOCATION``, ``NRP``, ``ORGANIZATION``). Runs on every text: much slower.
        extra_recognizers: more presidio recognizers; they have no trigger, so they run on every chunk.
        chunk_size: longest piece presidio sees at once (characters).
        chunk_overlap: overlap between chunks, so a value on a boundary is seen whole.
        max_chars: characters scanned per text; the rest is reported as ``UNSCANNED``.
        cache_size: entries of the results cache (0 disables it).

    Raises:
        ImportError: presidio-analyzer is not installed (``auditlog-pipeline[pii]``), or ``nlp`` names a
            spaCy model that is not installed.
        ValueError: an argument is out of range or an entity name is unknown.
    """

    __slots__ = (
        "_always",
        "_artifacts",
        "_cache",
        "_cache_size",
        "_chunk",
        "_entities",
        "_gated",
        "_key",
        "_lock",
        "_max_chars",
        "_ner",
        "_ner_entities",
        "_secrets",
        "_select",
        "_step",
        "_threshold",
        "cache_hits",
        "errors",
        "prefilter_skips",
        "scans",
    )

    def __init__(
        self,
        *,
        entities: Iterable[str] | None = None,
        score_threshold: float = 0.4,
        nlp: str | None = None,
        extra_recognizers: Sequence[EntityRecognizer] = (),
        chunk_size: int = 2048,
        chunk_overlap: int = 256,
        max_chars: int = 65536,
        cache_size: int = 4096,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError("score_threshold must be within [0, 1]")
        if chunk_size < 64:
            raise ValueError("chunk_size must be at least 64")
        if not 0 <= chunk_overlap <= chunk_size // 2:
            raise ValueError("chunk_overlap must be within [0, chunk_size / 2]")
        if max_chars < chunk_size:
            raise ValueError("max_chars must be at least chunk_size")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        recognizers, stages, engines = _load_presidio()
        ner: AnalyzerEngine | None = engines.build_ner(nlp) if nlp else None
        ner_entities: tuple[str, ...] = engines.NER_ENTITIES if nlp else ()
        known = set(ENTITIES) | set(ner_entities)
        for rec in extra_recognizers:
            known.update(rec.supported_entities)
        wanted = set(entities) if entities is not None else known
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"unknown entities: {', '.join(unknown)} (known: {', '.join(sorted(known))})")

        def stage(rec: EntityRecognizer, gate: Gate | None) -> Stage | None:
            ents = [e for e in rec.supported_entities if e in wanted]
            return stages.Stage(rec, ents, score_threshold, gate) if ents else None

        gated = [s for s in (stage(g.recognizer, g) for g in recognizers.build_gates()) if s is not None]
        # most specific first, so that heuristics can skip what a specific recognizer already covers
        gated.sort(key=lambda s: min(_PRIORITY.get(e, len(_PRIORITY)) for e in s.entities))
        self._gated: tuple[Stage, ...] = tuple(gated)
        self._select = stages.Selector(self._gated)
        always = (stage(r, None) for r in extra_recognizers)
        self._always: tuple[Stage, ...] = tuple(s for s in always if s is not None)
        self._artifacts: NlpArtifacts | None = engines.empty_artifacts() if self._always else None
        self._ner = ner if ner is not None and wanted.intersection(ner_entities) else None
        self._ner_entities = [e for e in ner_entities if e in wanted]
        self._entities = frozenset(wanted)
        self._secrets = SecretScanner()
        self._threshold = score_threshold
        self._chunk = chunk_size
        self._step = chunk_size - chunk_overlap
        self._max_chars = max_chars
        self._cache: OrderedDict[bytes, tuple[Finding, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.prefilter_skips = 0
        self.cache_hits = 0
        self.scans = 0
        self.errors = 0

    @property
    def entities(self) -> frozenset[str]:
        """The entity names this scanner reports."""
        return self._entities

    def findings(self, text: str) -> list[Finding]:
        """Return the sensitive spans of ``text``: presidio's and ``SecretScanner``'s, in every form.

        Both scanners look at ``text`` as written and, when a cheap pre-check says it has one, at its
        encoded forms (percent-escapes, zero-width characters, fullwidth letters, split digits, base64
        and hex runs: :mod:`processors._encoded_forms`); a finding there masks the original chars it
        came from. A tail beyond ``max_chars`` is one ``UNSCANNED`` span.

        Args:
            text: any str, surrogates included.

        Returns:
            The findings, merged where they overlap. Never raises: an internal error reports the whole
            text as ``SCAN_ERROR``.
        """
        try:
            out = self._plain(text)
            if may_hide_encoded(text):
                credentials = "URL_CREDENTIALS" in self._entities
                out.extend(encoded_findings(text, self._plain, credentials=credentials))
        except Exception:  # fail closed: never raise, never leak
            self.errors += 1
            return [Finding("SCAN_ERROR", 0, len(text))]
        return _resolve(out)

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding replaced by ``<ENTITY>`` (lone surrogates replaced)."""
        found = self.findings(text)
        return utf8_safe(mask(text, found) if found else text)

    def _plain(self, text: str) -> list[Finding]:
        """presidio's findings and SecretScanner's (of the wanted entities) in ``text`` as written."""
        wanted = self._entities
        out = self._presidio(text)
        out.extend(
            f for f in self._secrets.plain_findings(text) if f.entity in wanted or f.entity in _FAIL_CLOSED
        )
        return out

    def _presidio(self, text: str) -> list[Finding]:
        """presidio's findings, chunk by chunk; a tail beyond ``max_chars`` is one ``UNSCANNED`` span."""
        n = len(text)
        limit = min(n, self._max_chars)
        if limit <= self._chunk:
            out = list(self._scan(text if limit == n else text[:limit]))
        else:
            seen: set[Finding] = set()
            for start in range(0, limit, self._step):
                end = min(start + self._chunk, limit)
                for f in self._scan(text[start:end]):
                    seen.add(Finding(f.entity, f.start + start, f.end + start))
                if end == limit:
                    break
            out = _resolve(
                [self._extend_pem(text, f, limit) if f.entity == "PRIVATE_KEY" else f for f in seen]
            )
        if limit < n:
            out.append(Finding("UNSCANNED", limit, n))
        return out

    def stats(self) -> dict[str, int]:
        """Counters (approximate under threads): chunks the prefilter skipped, cache hits, scans, errors."""
        return {
            "prefilter_skips": self.prefilter_skips,
            "cache_hits": self.cache_hits,
            "scans": self.scans,
            "errors": self.errors,
        }

    @staticmethod
    def _extend_pem(text: str, f: Finding, limit: int) -> Finding:
        """A PEM block cut by a chunk boundary runs to its END line (or to the scan limit)."""
        m = _PEM_END.search(text, f.start, limit)
        return Finding(f.entity, f.start, max(f.end, m.end() if m else limit))

    def _scan(self, chunk: str) -> tuple[Finding, ...]:
        lower = chunk.lower()
        stages = self._select(chunk, lower)
        if not stages and self._ner is None and not self._always:
            self.prefilter_skips += 1
            return ()
        key = b""
        if self._cache_size:
            key = hashlib.blake2b(
                chunk.encode("utf-8", "surrogatepass"), key=self._key, digest_size=16
            ).digest()
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.cache_hits += 1
                    return hit
        self.scans += 1
        try:
            found = self._analyze(chunk, lower, stages)
        except Exception:  # fail closed: an unscannable chunk is masked whole, and not cached
            self.errors += 1
            return (Finding("SCAN_ERROR", 0, len(chunk)),)
        if self._cache_size:
            with self._lock:
                self._cache[key] = found
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return found

    def _analyze(self, chunk: str, lower: str, stages: list[Stage]) -> tuple[Finding, ...]:
        out: list[Finding] = []
        covered: list[tuple[int, int]] = []
        for stage in (*stages, *self._always):
            for e, a, b in stage.run(chunk, lower, self._artifacts, covered):
                out.append(Finding(e, a, b))
                covered.append((a, b))
        if self._ner is not None:
            results = self._ner.analyze(
                chunk, language="en", entities=self._ner_entities, score_threshold=self._threshold
            )
            out.extend(Finding(r.entity_type, int(r.start), int(r.end)) for r in results)
        return tuple(_resolve(out))


def _resolve(found: Iterable[Finding]) -> list[Finding]:
    """Merge overlapping findings into one span each, named by the highest-priority entity among them."""
    out: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if out and f.start < out[-1].end:
            last = out[-1]
            rank = _PRIORITY.get(f.entity, len(_PRIORITY))
            entity = f.entity if rank < _PRIORITY.get(last.entity, len(_PRIORITY)) else last.entity
            out[-1] = Finding(entity, last.start, max(last.end, f.end))
        else:
            out.append(f)
    return out


_MAX_ANNOTATE_ITEMS = 16


def annotate(shape: Any, value: object, scanner: Scanner) -> Any:
    """Mark, in a shape, which strings carried what: ``{"t": "str", "len": 23, "pii": ["EMAIL_ADDRESS"]}``.

    Walks ``shape`` (from :func:`processors.shapes.shape_of`) alongside ``value``: a ``str`` shape gets a
    sorted ``"pii"`` list of the entity types ``scanner`` finds in its value (no key when none); object shapes
    recurse into the keys the shape kept (folded keys stay folded), array shapes into their first
    16 items, the ``items`` shape getting the union. The shape is never mutated; no value enters the result.

    Args:
        shape: a shape as ``shape_of`` returns it (a dict, or a ``"<unshapeable:T>"`` string).
        value: the value that was shaped.
        scanner: any :class:`~processors.scanning.Scanner` (``SecretScanner``, ``PIIScanner``).

    Returns:
        The annotated shape (the same object when nothing was found).
    """
    if not isinstance(shape, Mapping):
        return shape
    kind = shape.get("t")
    if kind == "str" and type(value) is str:
        found = sorted({f.entity for f in scanner.findings(value)})
        return {**shape, "pii": found} if found else shape
    if kind == "obj" and isinstance(value, Mapping):
        keys = shape.get("keys")
        if not isinstance(keys, Mapping):
            return shape
        new = {k: annotate(sub, value[k], scanner) if k in value else sub for k, sub in keys.items()}
        changed = any(new[k] is not keys[k] for k in keys)
        return {**shape, "keys": new} if changed else shape
    if kind == "arr" and isinstance(value, list | tuple):
        items = shape.get("items")
        if not isinstance(items, Mapping):
            return shape
        merged: Any = items
        for item in value[:_MAX_ANNOTATE_ITEMS]:
            merged = _union(merged, annotate(items, item, scanner))
        return {**shape, "items": merged} if merged is not items else shape
    return shape


def _union(a: Any, b: Any) -> Any:
    """Merge the ``"pii"`` marks of two annotations of the same shape."""
    if a is b or not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return a
    out = dict(a)
    pii = sorted(set(a.get("pii", ())) | set(b.get("pii", ())))
    if pii:
        out["pii"] = pii
    for field in ("keys",):
        ka, kb = a.get(field), b.get(field)
        if isinstance(ka, Mapping) and isinstance(kb, Mapping):
            out[field] = {k: _union(v, kb.get(k, v)) for k, v in ka.items()}
    ia, ib = a.get("items"), b.get("items")
    if isinstance(ia, Mapping) and isinstance(ib, Mapping):
        out["items"] = _union(ia, ib)
    return out if out != a else a
