"""Bucket lifecycle rules set by auditlog, merged into whatever rules the bucket already has (private).

``PutBucketLifecycleConfiguration`` replaces a bucket's whole configuration: writing only our rules would
delete every rule someone else set on a shared bucket. :func:`merge_rules` reads the current rules, drops
those with the IDs being written (ours, from an earlier run) and writes the rest back with the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["aws_code", "merge_rules"]


def merge_rules(client: Any, bucket: str, rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put ``rules`` on ``bucket``, replacing rules of the same ``ID`` and keeping every other rule.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket.
        rules: lifecycle rules, each with an ``ID``.

    Returns:
        The rules now on the bucket.

    Raises:
        ValueError: a rule has no ``ID``, or two share one.
        Whatever boto3 raises for a failed request (the caller translates it).
    """
    ids = [r.get("ID") for r in rules]
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise ValueError("lifecycle rules need distinct, non-empty IDs")
    try:
        existing = list(client.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", []))
    except Exception as exc:
        if aws_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    merged = [r for r in existing if r.get("ID") not in ids] + [dict(r) for r in rules]
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": merged})
    return merged


def aws_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for any other exception)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
