"""``configure()``: one call wires structlog, stdlib logging and the journal.

Every log line, from structlog or from stdlib ``logging`` (uvicorn's loggers included), runs through the
same processors (:mod:`auditlog.pipeline`) before anything is written::

    contextvars -> level -> logger name, timestamp -> correlation ids -> safe exception
        -> fingerprints -> shapes (policy) -> journal (keyed hash chain) [-> console, redacted]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import IO

import structlog
from structlog.typing import Processor

from auditlog.handle import AuditHandle, Reporter, Stats, current_handle, set_current
from auditlog.pipeline import (
    AuditBoundLogger,
    CallerReserved,
    EventStamper,
    Guarded,
    JournalSink,
    LoggerFactory,
    PolicyFingerprints,
    PolicyResolver,
    add_logger_name_and_timestamp,
)
from auditlog.policy import DEFAULT_POLICY, Policy
from auditlog.policy import load as load_policy
from processors import (
    ExceptionShaper,
    Fingerprinter,
    Scanner,
    SecretScanner,
    ShapeRecorder,
    add_correlation_ids,
)
from store.exceptions import KeyError_
from store.journal import JournalConfig
from store.keys import KeyRing, MasterKey, key_from_env
from store.trail import TrailWriter

__all__ = ["configure"]


def _keys(key: KeyRing | MasterKey | bytes | str | os.PathLike[str] | None) -> KeyRing:
    if isinstance(key, KeyRing):
        return key
    if isinstance(key, MasterKey):
        return KeyRing(key)
    if isinstance(key, bytes):
        return KeyRing(MasterKey(key))
    if isinstance(key, str | os.PathLike):
        return KeyRing.from_file(key)
    ring = key_from_env()
    if ring is None:
        raise KeyError_(
            "no audit key: set AUDITLOG_KEY (base64, 32 bytes) or AUDITLOG_KEY_FILE, or pass key= "
            "(create a key file with `auditlog keygen`)"
        )
    return ring


def configure(
    *,
    journal_dir: str | os.PathLike[str],
    policy: Policy | str | os.PathLike[str] | None = None,
    key: KeyRing | MasterKey | bytes | str | os.PathLike[str] | None = None,
    scanner: Scanner | None = None,
    journal_config: JournalConfig | None = None,
    source: str | None = None,
    session: str | None = None,
    console: IO[str] | None = None,
    stdlib: bool = True,
    stdlib_level: int = logging.INFO,
    capture_loggers: tuple[str, ...] = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastmcp"),
    exclusive: bool = True,
) -> AuditHandle:
    """Wire structlog, stdlib logging and the journal in one call.

    Args:
        journal_dir: the audit trail: a directory shared by every writer of the service (workers,
            forks, the CLI); this process appends to a stream of its own in it (created if missing).
        policy: a :class:`~auditlog.policy.Policy`, a path to a policy TOML file, or None for the safe
            default (level ``shape``, nothing allowlisted).
        key: the master key (a KeyRing, MasterKey, 32 raw bytes, or a key file path); None reads
            ``AUDITLOG_KEY`` / ``AUDITLOG_KEY_FILE``.
        scanner: the secret/PII scanner for messages and allowlisted values (default: SecretScanner).
        journal_config: rotation, fsync and retention settings of the journal.
        source: the writer's source recorded in its stream (default ``AUDITLOG_SOURCE``, else
            ``journal_config.source``, else the host name: a pod name under Kubernetes).
        session: a stable name for this writer's stream, so writers that run one after another continue
            one stream (the CLI: one per investigator and day); None: a stream of its own.
        console: a stream that also receives each *redacted* line (e.g. ``sys.stderr``), or None.
        stdlib: route stdlib ``logging`` (root logger and ``capture_loggers``) through the pipeline.
        stdlib_level: the level set on the root logger when ``stdlib`` is on.
        capture_loggers: loggers that do not propagate to root by default (uvicorn's, fastmcp's) and
            get the handler directly.
        exclusive: detach other handlers from the root logger and ``capture_loggers`` while configured
            (they would print raw values); ``shutdown()`` restores them.

    Returns:
        An :class:`AuditHandle`. Calling ``configure`` again shuts the previous handle down first.

    Raises:
        KeyError_: no key was given and none is in the environment.
        PolicyError: the policy file is malformed.
        JournalError: the journal directory cannot be opened.
    """
    previous = current_handle()
    if previous is not None:
        previous.shutdown()

    pol = DEFAULT_POLICY if policy is None else policy if isinstance(policy, Policy) else load_policy(policy)
    ring = _keys(key)
    scan = scanner if scanner is not None else SecretScanner()
    jconf = journal_config or JournalConfig(retention=pol.defaults.journal_retention)
    source = source or os.environ.get("AUDITLOG_SOURCE")
    if source:
        jconf = dataclasses.replace(jconf, source=source)
    journal = TrailWriter(Path(journal_dir), keys=ring, config=jconf, session=session)
    reporter = Reporter(Stats())
    fingerprinter = Fingerprinter(key=ring.active.derive("fingerprint"), key_id=ring.active.key_id, fields=())
    resolver = PolicyResolver(pol)
    sink = JournalSink(journal, reporter, console=console is not None)
    exceptions = ExceptionShaper(scan)
    fingerprints = PolicyFingerprints(fingerprinter, resolver)
    # the sink serializes with orjson; a caller's value under a reserved key is shaped, never kept
    recorder = CallerReserved(ShapeRecorder(policy=resolver, scanner=scan, render=True), resolver)
    shared: list[Processor] = [
        add_logger_name_and_timestamp,
        add_correlation_ids,
        exceptions,
        fingerprints,
        recorder,
    ]
    # structlog's contextvars and level, then `shared` up to the recorder, in one call
    chain: list[Processor] = [EventStamper(exceptions, fingerprints), recorder, sink]
    structlog.configure(
        processors=[Guarded(chain, reporter)],
        logger_factory=LoggerFactory(console),
        wrapper_class=AuditBoundLogger,
        cache_logger_on_first_use=True,
    )
    handle = AuditHandle(
        journal=journal,
        policy=pol,
        keys=ring,
        scanner=scan,
        fingerprinter=fingerprinter,
        processors=chain,
        reporter=reporter,
    )
    if stdlib:
        from auditlog.integrations.stdlib import install

        install(
            handle,
            chain=Guarded([*shared, sink], reporter),
            console=console,
            level=stdlib_level,
            loggers=capture_loggers,
            exclusive=exclusive,
        )
    set_current(handle)
    return handle
