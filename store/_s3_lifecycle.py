"""Bucket lifecycle rules set by auditlog, merged into whatever rules the bucket already has (private).

``PutBucketLifecycleConfiguration`` replaces a bucket's whole configuration: writing only our rules would
delete every rule someone else set on a shared bucket. :func:`merge_rules` reads the current rules, drops
those with the IDs being written (ours, from an earlier run) and writes the rest back with the new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["merge_rules"]

_NONE = ("NoSuchLifecycleConfiguration",)


def merge_rules(
    client: Any, bucket: str, rules: Sequence[dict[str, Any]], *, call: Callable[..., Any] | None = None
) -> list[dict[str, Any]]:
    """Put ``rules`` on ``bucket``, replacing rules of the same ``ID`` and keeping every other rule.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        rules: lifecycle rules, each with an ``ID``.
        call: ``call(what, fn, **kw)`` to run each request through (the caller's error translation);
            default: call ``fn(**kw)`` directly.

    Returns:
        The rules now on the bucket.

    Raises:
        ValueError: a rule has no ``ID``, or two share one.
        Whatever ``call`` (or boto3) raises for a failed request.
    """
    ids = [r.get("ID") for r in rules]
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("lifecycle rules need distinct, non-empty IDs")
    run = call or (lambda _what, fn, **kw: fn(**kw))
    try:
        current = run("S3 get bucket lifecycle", client.get_bucket_lifecycle_configuration, Bucket=bucket)
        existing = list(current.get("Rules", []))
    except Exception as exc:
        if _code(exc) not in _NONE:
            raise
        existing = []
    merged = [r for r in existing if r.get("ID") not in ids] + [dict(r) for r in rules]
    run(
        "S3 put bucket lifecycle",
        client.put_bucket_lifecycle_configuration,
        Bucket=bucket,
        LifecycleConfiguration={"Rules": merged},
    )
    return merged


def _code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (or of what a ``call`` wrapper raised from one)."""
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""
