"""presidio's NLP engines for :class:`processors.pii.PIIScanner`: spaCy NER when configured, none otherwise.

A spaCy model is used only when it is installed; it is never downloaded.
"""

from __future__ import annotations

from pathlib import Path

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import NlpArtifacts, NoOpNlpEngine, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

__all__ = ["NER_ENTITIES", "build_ner", "empty_artifacts"]

NER_ENTITIES: tuple[str, ...] = ("LOCATION", "NRP", "ORGANIZATION", "PERSON")


def build_ner(model: str) -> AnalyzerEngine:
    """A presidio analyzer running only spaCy's named-entity recognizer with ``model``.

    Raises:
        ImportError: the spaCy model is not installed (presidio would try to download it; we never do).
    """
    import spacy.util

    if not (spacy.util.is_package(model) or Path(model).exists()):
        raise ImportError(
            f"spaCy model {model!r} is not installed; PIIScanner never downloads models. "
            f"Install it with: python -m spacy download {model}"
        )
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=list(NER_ENTITIES)))
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def empty_artifacts() -> NlpArtifacts:
    """The artifacts of presidio's ``NoOpNlpEngine`` (no model): what recognizers get without NER."""
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
    engine.load()
    return engine.process_text("", "en")
