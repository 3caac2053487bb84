"""PIIScanner: presidio recognizers behind gates, offline, chunked, cached; and shape annotations."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.pii import ENTITIES, PIIScanner, annotate
from processors.scanning import Finding
from processors.secret_scanner import SecretScanner
from processors.shapes import shape_of
from tests.pii_corpus import Sample, corpus, score
from tests.processors._corpus import CANARIES as CANARIES_CORPUS
from tests.processors._corpus import FORMS as FORMS_CORPUS

ROOT = Path(__file__).resolve().parents[2]
# The shared leak-test corpus, as bundled with auditlog (read as data: processors never imports auditlog).
_CANARIES = json.loads((ROOT / "auditlog" / "data" / "canaries.json").read_text("utf-8"))
VALUES: dict[str, str] = _CANARIES["values"]
# A bare name needs NER (PIIScanner(nlp=...)); every other canary is found by patterns.
PATTERN_CANARIES = {k: v for k, v in VALUES.items() if k != "unicode_name"}
HARD_NEGATIVES = [
    "deployed version 2.14.3 (build 20240102.5) to prod",
    "job 3f2b8c1e-9d4a-4f6b-8a2c-1e9d4a4f6b8a finished in 1234 ms",
    "order ORD-2024-000123 shipped, invoice INV-2024-000123 total 1234.56",
    "2024-01-02T03:04:05.123Z INFO scheduler: tick 421337",
    "listening on 0.0.0.0:8080 with 4 workers",
    "user_id=48213 opened dashboard 7 times in 30s",
]


def _forms(needle: str) -> set[str]:
    return {needle, json.dumps(needle)[1:-1], urllib.parse.quote(needle), urllib.parse.quote_plus(needle)}


FORMS = {n: _forms(n) for n in _CANARIES["needles"]}


def leaks(text: str) -> list[str]:
    """The canary needles found in ``text``, in any of find_leaks.py's forms (raw, JSON, URL-encoded)."""
    return [n for n, fs in FORMS.items() if any(f in text for f in fs)]


@pytest.fixture(scope="module")
def scanner() -> PIIScanner:
    return PIIScanner()


@pytest.fixture(scope="module")
def presidio_default() -> Any:
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    return AnalyzerEngine(nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}]))


def _no_network(*_: object, **__: object) -> None:
    raise AssertionError("network access attempted")


class TestPIIScanner:
    @pytest.mark.parametrize("name", sorted(PATTERN_CANARIES))
    def test_every_pattern_canary_is_masked(self, scanner: PIIScanner, name: str) -> None:
        """Each canary value, alone and inside a sentence, leaves no needle behind."""
        value = PATTERN_CANARIES[name]
        assert [] == leaks(scanner.redact(value))
        assert [] == leaks(scanner.redact(f"failed for {value} while retrying, see logs"))

    def test_spans_become_entity_types(self, scanner: PIIScanner) -> None:
        """Detected spans are replaced by ``<ENTITY_TYPE>``; the rest of the text stays."""
        text = "mail bob.smith@example.com or call 415-555-0137, card 4111 1111 1111 1111"
        expected = "mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>, card <CREDIT_CARD>"
        assert expected == scanner.redact(text)

    @pytest.mark.parametrize("text", HARD_NEGATIVES)
    def test_hard_negatives_stay_readable(self, scanner: PIIScanner, text: str) -> None:
        """Timestamps, versions, UUIDs, order numbers, trace ids, hashes and ports are not PII."""
        assert [] == scanner.findings(text)

    def test_built_in_entities_are_documented(self, scanner: PIIScanner) -> None:
        """The scanner reports exactly the documented built-in set by default."""
        assert ENTITIES == scanner.entities

    def test_prefilter_skips_presidio_on_clean_text(self) -> None:
        """Text without any trigger never reaches a recognizer or the cache."""
        s = PIIScanner()
        s.findings("the quick brown fox jumps over the lazy dog")
        assert (1, 0, 0) == (s.prefilter_skips, s.scans, s.cache_hits)

    def test_repeated_text_hits_the_cache(self) -> None:
        """The second scan of the same text is a cache hit with the same findings."""
        s = PIIScanner()
        first = s.findings("contact bob.smith@example.com")
        assert first == s.findings("contact bob.smith@example.com")
        assert (1, 1) == (s.scans, s.cache_hits)

    def test_cache_is_keyed_by_a_digest_and_bounded(self) -> None:
        """Cache keys are 16-byte keyed digests, never the text; the cache never outgrows its size."""
        s = PIIScanner(cache_size=4)
        texts = [f"user{i}@example.com signed in" for i in range(10)]
        for t in texts:
            s.findings(t)
        keys = list(s._cache)
        assert 4 == len(keys)
        assert all(type(k) is bytes and 16 == len(k) for k in keys)
        assert not any(t.encode()[:16] in k or t[:8].encode() in k for t in texts for k in keys)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(pad=st.integers(min_value=0, max_value=700))
    def test_values_on_chunk_boundaries_are_found(self, pad: int) -> None:
        """Long text is scanned in overlapping chunks: a value anywhere, across a boundary too, is masked."""
        s = _shared(chunk_size=256, chunk_overlap=64, max_chars=4096)
        value = VALUES["email"]
        text = "x" * pad + " " + value + " " + "y " * 400
        assert [] == leaks(s.redact(text))

    def test_private_key_across_chunks_is_masked_whole(self) -> None:
        """A PEM block longer than a chunk is masked from BEGIN to END."""
        s = PIIScanner(chunk_size=256, chunk_overlap=64)
        body = "\n".join("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC" + str(i) for i in range(20))
        key = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
        assert "loaded <PRIVATE_KEY> ok" == s.redact(f"loaded {key} ok")

    def test_text_beyond_max_chars_is_masked_not_passed(self) -> None:
        """Past ``max_chars`` nothing is scanned, so nothing is shown: fail closed."""
        s = PIIScanner(chunk_size=256, chunk_overlap=64, max_chars=512)
        text = "a " * 300 + VALUES["email"]
        assert Finding("UNSCANNED", 512, len(text)) == s.findings(text)[-1]
        assert s.redact(text).endswith("<UNSCANNED>")

    def test_failing_recognizer_masks_its_chunk(self) -> None:
        """A recognizer that raises does not raise out of the scanner and does not let the text through."""
        from presidio_analyzer import EntityRecognizer

        class Broken(EntityRecognizer):
            def load(self) -> None:
                pass

            def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list[object]:
                raise RuntimeError("boom")

        s = PIIScanner(extra_recognizers=[Broken(supported_entities=["BROKEN"])])
        assert "<SCAN_ERROR>" == s.redact("anything at all")
        assert 1 == s.errors

    @settings(max_examples=60, deadline=None)
    @given(st.text(max_size=300))
    def test_never_raises_on_any_str(self, text: str) -> None:
        """Any str, surrogates included, yields findings inside the text and a str redaction."""
        s = _shared()
        found = s.findings(text)
        assert all(0 <= f.start < f.end <= len(text) for f in found)
        assert isinstance(s.redact(text), str)

    def test_restricting_entities(self) -> None:
        """``entities=`` limits what is reported."""
        s = PIIScanner(entities=["EMAIL_ADDRESS"])
        assert ["EMAIL_ADDRESS"] == [f.entity for f in s.findings("bob@example.com 415-555-0137")]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"entities": ["NOT_AN_ENTITY"]},
            {"score_threshold": 1.5},
            {"chunk_size": 10},
            {"chunk_overlap": 5000},
            {"max_chars": 10},
            {"cache_size": -1},
        ],
    )
    def test_bad_configuration_is_refused_eagerly(self, kwargs: dict[str, Any]) -> None:
        """Out-of-range arguments raise ValueError at construction."""
        with pytest.raises(ValueError):
            PIIScanner(**kwargs)

    def test_threads_share_one_scanner(self, scanner: PIIScanner) -> None:
        """Concurrent scans agree with a sequential scan."""
        texts = [f"user{i}@example.com from 203.0.113.{i % 250}" for i in range(200)]
        expected = [scanner.redact(t) for t in texts]
        results: dict[int, list[str]] = {}

        def work(n: int) -> None:
            results[n] = [scanner.redact(t) for t in texts]

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(expected == r for r in results.values())


_SHARED: dict[tuple[tuple[str, int], ...], PIIScanner] = {}


def _shared(**kwargs: int) -> PIIScanner:
    """One scanner per configuration for the whole module (hypothesis tests cannot take fixtures)."""
    key = tuple(sorted(kwargs.items()))
    if key not in _SHARED:
        _SHARED[key] = PIIScanner(**kwargs)
    return _SHARED[key]


class TestFastPathMatchesPresidio:
    """Gates and the stdlib evaluation change nothing: each recognizer reports what analyze() reports."""

    def _check(self, s: PIIScanner, text: str) -> None:
        from processors._stages import select

        lower = text.lower()
        selected = select(s._gated, text, lower)
        for stage in s._gated:
            expected = sorted(stage.run_presidio(text, lower, None))
            actual = sorted(stage.run(text, lower, None)) if stage in selected else []
            assert expected == actual, stage.recognizer.name

    def test_on_the_corpus_and_canaries(self, scanner: PIIScanner) -> None:
        """Over a corpus slice, the hard negatives and the canaries, both paths agree for every recognizer."""
        texts = [s.text for s in corpus(300, seed=7)] + HARD_NEGATIVES + list(PATTERN_CANARIES.values())
        for text in texts:
            self._check(scanner, text)

    @settings(max_examples=80, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from(
                    [*PATTERN_CANARIES.values(), "ssn", "phone", "secret", " ", "=", "@", "::", "."]
                ),
                st.text(alphabet="0123456789 -.:+()/@=abcXYZ_", max_size=20),
            ),
            max_size=8,
        )
    )
    def test_on_generated_text(self, parts: list[str]) -> None:
        """Digit runs, separators and canaries glued at random: both paths agree."""
        self._check(_shared(), " ".join(parts))


class TestOffline:
    def test_no_connection_while_building_and_scanning(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Building a scanner and scanning every canary opens no socket and resolves no name."""
        monkeypatch.setattr(socket.socket, "connect", _no_network)
        monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
        monkeypatch.setattr(socket, "getaddrinfo", _no_network)
        s = PIIScanner()
        for value in PATTERN_CANARIES.values():
            s.redact(value)

    def test_no_connection_from_a_fresh_interpreter(self) -> None:
        """In a new process (presidio and tldextract imported for the first time), still no socket."""
        code = (
            "import socket\n"
            "def no(*a, **k): raise SystemExit('network access attempted')\n"
            "socket.socket.connect = no; socket.socket.connect_ex = no; socket.getaddrinfo = no\n"
            "from processors.pii import PIIScanner\n"
            "s = PIIScanner()\n"
            "print(s.redact('mail bob@example.com from 203.0.113.77'))\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"}
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
        )
        assert (0, "mail <EMAIL_ADDRESS> from <IP_ADDRESS>") == (proc.returncode, proc.stdout.strip()), (
            proc.stderr
        )

    def test_missing_spacy_model_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """NER with a model that is not installed fails with an install hint, without downloading it."""
        monkeypatch.setattr(socket.socket, "connect", _no_network)
        monkeypatch.setattr(socket, "getaddrinfo", _no_network)
        with pytest.raises(ImportError, match="python -m spacy download xx_no_such_model"):
            PIIScanner(nlp="xx_no_such_model")

    def test_missing_extra_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without presidio installed, building a PIIScanner names the extra to install."""
        import processors

        monkeypatch.setitem(sys.modules, "presidio_analyzer", None)
        monkeypatch.delitem(sys.modules, "processors._recognizers", raising=False)
        monkeypatch.delattr(processors, "_recognizers", raising=False)
        with pytest.raises(ImportError, match=r"install auditlog-pipeline\[pii\] to use PIIScanner"):
            PIIScanner()


class TestAnnotate:
    def test_string_shape_gets_the_entity_types(self, scanner: PIIScanner) -> None:
        """A string field carrying an email is marked, without the email."""
        value = "reach me at canary.user+7731@example.org"
        assert {"t": "str", "len": len(value), "pii": ["EMAIL_ADDRESS"]} == annotate(
            shape_of(value), value, scanner
        )

    def test_nested_objects_and_arrays(self, scanner: PIIScanner) -> None:
        """Objects recurse into kept keys; arrays mark their item shape with the union over items."""
        value = {"user": {"email": "bob@example.com", "age": 3}, "phones": ["415-555-0137", "none"]}
        out = annotate(shape_of(value), value, scanner)
        assert ["EMAIL_ADDRESS"] == out["keys"]["user"]["keys"]["email"]["pii"]
        assert "pii" not in out["keys"]["user"]["keys"]["age"]
        assert ["PHONE_NUMBER"] == out["keys"]["phones"]["items"]["pii"]

    def test_nothing_found_returns_the_same_shape(self, scanner: PIIScanner) -> None:
        """A clean value leaves the shape object untouched (no copy)."""
        value = {"a": "hello", "b": [1, 2]}
        shape = shape_of(value)
        assert shape is annotate(shape, value, scanner)

    def test_folded_keys_stay_folded(self, scanner: PIIScanner) -> None:
        """A key the shape hid is not walked, so nothing about it appears."""
        value = {"canary.user+7731@example.org": "bob@example.com", "ok": "x"}
        out = annotate(shape_of(value), value, scanner)
        assert [] == leaks(json.dumps(out))
        assert 1 == out.get("hidden_keys")

    def test_works_with_the_builtin_scanner(self) -> None:
        """Any Scanner will do."""
        value = "Bearer canary-bearer-token-0f9e8d7c6b5a"
        assert "BEARER_TOKEN" in annotate(shape_of(value), value, SecretScanner())["pii"]

    @settings(max_examples=40, deadline=None)
    @given(
        st.recursive(
            st.sampled_from(list(VALUES.values())) | st.integers() | st.text(max_size=10),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
            max_leaves=12,
        )
    )
    def test_no_value_in_an_annotated_shape(self, value: Any) -> None:
        """Whatever the value, its annotated shape holds no canary."""
        assert [] == leaks(json.dumps(annotate(shape_of(value), value, _shared()), ensure_ascii=False))


class TestCorpus:
    def test_seeded_labelled_and_large_enough(self) -> None:
        """The corpus is deterministic, has 5,000+ messages on demand, and every label points at its value."""
        big = corpus(5000)
        assert 5000 == len(big)
        assert corpus(50) == big[:50]
        assert all(0 <= a < b <= len(s.text) for s in big for _, a, b in s.spans)
        assert 0.3 < sum(s.clean for s in big) / len(big) < 0.7

    def test_recall_and_precision_at_least_presidio_default(
        self, scanner: PIIScanner, presidio_default: Any
    ) -> None:
        """On every entity both cover, PIIScanner's recall and precision are >= presidio's default's."""
        samples: list[Sample] = corpus(700, seed=11)
        ours = score(samples, lambda t: [(f.entity, f.start, f.end) for f in scanner.findings(t)])
        theirs = score(
            samples,
            lambda t: [(r.entity_type, r.start, r.end) for r in presidio_default.analyze(t, language="en")],
        )
        both = sorted(e for e in scanner.entities & set(theirs.predicted) if theirs.gold.get(e))
        assert {"CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS", "PHONE_NUMBER", "US_SSN"} <= set(
            both
        )
        worse = [
            (e, ours.recall(e), theirs.recall(e), ours.precision(e), theirs.precision(e))
            for e in both
            if (ours.recall(e) or 0) < (theirs.recall(e) or 0)
            or (ours.precision(e) or 0) < (theirs.precision(e) or 0)
        ]
        assert [] == worse


def _masked(found: list[Finding]) -> set[int]:
    return {i for f in found for i in range(f.start, f.end)}


_FORM_VALUES = sorted({*FORMS_CORPUS.values.values(), *CANARIES_CORPUS.values.values()})


class TestFindsWhatSecretScannerFinds:
    @pytest.mark.parametrize(
        "value",
        [
            "jonas.weber@postbox.test",
            "ops@build.example",
            "root@nowhere.invalid",
            "me@host.localhost",
            "password=Tr0ub4dor&3-horse!",
            "9f3c2a7be41d08c6f5a9e27d4b1c3e80",
            "Zoë Canarÿ-ßecret",
            "42 Baker Street",
        ],
    )
    def test_the_kinds_it_once_let_through(self, scanner: PIIScanner, value: str) -> None:
        """Reserved-TLD e-mails, a password, a hex session token, a name and an address are masked."""
        text = f"see {value} now"
        assert (True, False) == (SecretScanner().findings(text) != [], value in scanner.redact(text))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        parts=st.lists(
            st.sampled_from(_FORM_VALUES)
            | st.sampled_from(["user", "id", "at", "password=", "name:", "token", "-", ",", "42", "Street"]),
            min_size=1,
            max_size=8,
        ),
        sep=st.sampled_from([" ", ", ", "=", "&", "\n"]),
    )
    def test_everything_secret_scanner_masks(self, scanner: PIIScanner, parts: list[str], sep: str) -> None:
        """Over both corpora, every char SecretScanner masks, PIIScanner masks too."""
        text = sep.join(parts)
        assert set() == _masked(SecretScanner().findings(text)) - _masked(scanner.findings(text))
