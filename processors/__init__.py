"""structlog processors that redact at the source: shapes, fingerprints, secret scans, safe exceptions.

A leaf package: it imports the standard library, structlog and (lazily) opentelemetry-api only.
A typical chain, last processor before the renderer::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        add_correlation_ids,
        ExceptionShaper(scanner),
        Fingerprinter(key=key, key_id="k1", fields={"user_id"}),
        ShapeRecorder(policy=FieldPolicy(), scanner=scanner),
        structlog.processors.JSONRenderer(),
    ])
"""

from processors.correlation import add_correlation_ids, bind_correlation_id, new_correlation_id
from processors.fingerprint import Fingerprinter
from processors.pii import PIIScanner
from processors.redact import RESERVED_KEYS, FieldPolicy, ShapeRecorder
from processors.scanning import Finding, Scanner, mask
from processors.secret_scanner import SecretScanner
from processors.shapes import ShapeLimits, rendered_shape, shape_of
from processors.tracebacks import ExceptionShaper, safe_exception

__all__ = [
    "RESERVED_KEYS",
    "ExceptionShaper",
    "FieldPolicy",
    "Finding",
    "Fingerprinter",
    "PIIScanner",
    "Scanner",
    "SecretScanner",
    "ShapeLimits",
    "ShapeRecorder",
    "add_correlation_ids",
    "bind_correlation_id",
    "mask",
    "new_correlation_id",
    "rendered_shape",
    "safe_exception",
    "shape_of",
]
