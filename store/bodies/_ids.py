"""Correlation-id validation: the id names files and object keys, so it must never be a path.

A valid id is 1 to 128 ASCII characters from ``[A-Za-z0-9._-]``, starts with a letter or digit and holds
no ``..``. That admits UUIDs (with or without dashes), W3C trace ids, ULIDs and most request ids, and
rejects separators, NUL, whitespace, control characters, percent-encoding and every non-ASCII look-alike
(full-width dots, fraction slashes, right-to-left overrides). Ids are never normalised: an id either is
valid as given or is refused.
"""

from __future__ import annotations

import re

from store.bodies.exceptions import InvalidCorrelationId

__all__ = ["MAX_ID_LENGTH", "validate_correlation_id"]

MAX_ID_LENGTH = 128
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)


def validate_correlation_id(correlation_id: object) -> str:
    """Return ``correlation_id`` unchanged if it is safe to use as a file name and an object key.

    Raises:
        InvalidCorrelationId: not a string, empty, longer than 128, outside the charset, or holding ``..``.
            The message describes the problem; it never repeats the id.
    """
    if type(correlation_id) is not str:
        raise InvalidCorrelationId(f"a correlation id must be a str, not {type(correlation_id).__name__}")
    if not correlation_id:
        raise InvalidCorrelationId("a correlation id cannot be empty")
    if len(correlation_id) > MAX_ID_LENGTH:
        raise InvalidCorrelationId(f"a correlation id is at most {MAX_ID_LENGTH} characters")
    if not _VALID.fullmatch(correlation_id) or ".." in correlation_id:
        raise InvalidCorrelationId(
            "a correlation id holds only [A-Za-z0-9._-], starts with a letter or digit, and has no '..'"
        )
    return correlation_id
