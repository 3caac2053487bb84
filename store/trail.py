"""The audit trail: one directory, one chained stream per writer, signed checkpoints of every stream's head.

A trail is a directory::

    trail.json                    the trail's identity: a random trail_id, MAC'd (created once)
    checkpoints.jsonl             append-only, hash-chained, Ed25519-signed heads of every stream
    streams/<stream-id>/          one writer's stream: a journal directory exactly as store.journal
        journal.lock                describes it (its own lock, chained segments, seals, recovery,
        00000001.jsonl              retention); writers never share a lock, so they never wait for
        00000001.seal.json          each other
        ...

Streams. A :class:`TrailWriter` opens its own stream: ``<source>.<instance>``, where ``source`` is
``JournalConfig.source`` (the host name by default, or e.g. a pod name) reduced to ``[A-Za-z0-9._-]`` and
64 characters, and ``instance`` is ``<pid>-<start time in ms>-<6 random hex>``, unique for the writer's
life. Never parse the name: every segment header carries ``trail_id``, ``stream``, ``source`` and
``instance`` (``source`` as configured, unreduced), and :func:`list_streams` reads them for you. Each
stream's chain (``seq`` and ``mac``) is independent and starts at 1; ``(stream, seq)`` names a record.

Checkpoints. Each line of ``checkpoints.jsonl`` records one stream's head: ``{trail_id, stream, source,
instance, state, last_seq, last_mac, segment, recovered, ts}`` with ``state`` ``"opened"`` (written once
the stream's first header is on disk), ``"head"`` (every ``checkpoint_interval`` seconds, by the writer's
checkpoint thread, when the stream moved; the stream is synced first, so a head is never ahead of the disk)
or ``"sealed"`` (at :meth:`TrailWriter.close`, or by :func:`recover_stale`). Lines are numbered (``n``),
chained (``prev``: the SHA-256 of the line before) and signed with the Ed25519 key derived from the master
key (:meth:`store.keys.MasterKey.signing_key`, the evidence-pack key), with ``kid`` and ``pub`` (the
public key's digest); writers append under a brief ``flock`` of the log (see :mod:`store._checkpoints`).

Verification. :func:`verify_trail` verifies every stream with :func:`store.journal.verify`, the log (chain,
numbering, signatures, one trail id), that every stream the log names exists and still reaches the newest
head recorded for it (the record at that seq has that MAC), that every stream on disk is named by the log
and belongs to this trail, and, given an ``anchor`` (an older copy of the log kept elsewhere), that the
local log extends it. So deleting a stream, cutting a stream's newest segments and seals, rolling the
directory back (with an anchor), or swapping in another trail or stream made with the same key is reported,
naming the stream, segment and seq. Records written after a stream's last checkpoint are covered only by
its chain and seals (see the limits in :mod:`store.journal`): shorten ``checkpoint_interval`` and ship the
log to narrow that window.

Processes and lifecycle. A :class:`TrailWriter` inherited across ``fork()`` keeps working: the child
forgets the parent's stream (it closes its copies of the descriptors without unlocking anything, so the
parent keeps its lock) and opens a stream of its own on its first write; what the parent wrote stays in the
parent's stream. :meth:`TrailWriter.close` seals the stream; live writers are closed by an ``atexit`` hook,
and unless told otherwise the first writer replaces a default SIGTERM disposition with one that raises
``SystemExit`` so that atexit runs. The host (gunicorn, uvicorn, your own loop) must exit normally for the
last segment to be sealed; after a ``SIGKILL``, ``os._exit()`` or a power loss, the stream is *stale* (its
lock is free, its last segment unsealed) and the next :class:`TrailWriter` opening the trail, or
:func:`recover_stale`, recovers and seals it, on the record. A stream whose lock is held is never touched.

Errors. As :mod:`store.journal`: :class:`~store.exceptions.JournalError` (an ``OSError``) and
:class:`~store.exceptions.JournalCorrupt`; :func:`verify_trail` turns everything it reads into problems.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from store._checkpoints import STREAMS_DIR, append_checkpoint, ensure_trail, public_digest
from store._journal_types import JournalConfig, JournalStats
from store._streams import iter_trail_records, list_streams, new_instance, recover_stale, safe_source
from store._trail_types import StaleRecovery, StreamInfo, StreamReport, TrailProblem, TrailReport
from store._trail_verify import verify_trail
from store.exceptions import JournalError
from store.journal import JournalWriter
from store.keys import KeyRing

__all__ = [
    "StaleRecovery",
    "StreamInfo",
    "StreamReport",
    "TrailProblem",
    "TrailReport",
    "TrailWriter",
    "iter_trail_records",
    "list_streams",
    "recover_stale",
    "verify_trail",
]

_OPEN_ATTEMPTS = 3  # a fresh stream name collides only with a concurrent lock probe; retry with another


class TrailWriter:
    """Appends records to this writer's own stream of a trail directory. Thread-safe and fork-safe.

    Opening creates the trail if needed (``trail.json``, ``streams/``), recovers stale streams (see
    :func:`recover_stale`; :attr:`recovered` says what), opens a new stream and checkpoints it.

    Args:
        directory: the trail directory.
        keys: the key ring (the active key chains the stream and signs checkpoints).
        config: rotation, fsync and retention of the stream, and its ``source``.
        clock: the wall clock.
        checkpoint_interval: seconds between head checkpoints (when the stream moved); ``None``: only at
            open and close.
        recover: recover and seal stale streams on open.
        seal_on_sigterm: if SIGTERM still has its default disposition (and this is the main thread),
            make it raise ``SystemExit`` so atexit seals the stream.
        session: a stable instance name: the stream ``<source>.<session>`` is continued if a writer before
            this one sealed it (a CLI investigator's commands, one after another, share one stream);
            while another writer holds it, a new stream opens instead.

    Raises:
        ValueError: ``checkpoint_interval`` is not a positive number.
        JournalError: the trail cannot be created or the stream cannot be opened.
        JournalCorrupt: ``trail.json`` cannot be trusted.
    """

    __slots__ = (
        "__weakref__",
        "_checkpoint_errors",
        "_clock",
        "_closed",
        "_config",
        "_dir",
        "_eager",
        "_info",
        "_interval",
        "_journal",
        "_keys",
        "_lock",
        "_moved",
        "_pid",
        "_recovered",
        "_session",
        "_signer",
        "_stop",
        "_thread",
        "_trail_id",
    )

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keys: KeyRing,
        config: JournalConfig | None = None,
        clock: Callable[[], float] = time.time,
        checkpoint_interval: float | None = 60.0,
        recover: bool = True,
        seal_on_sigterm: bool = True,
        session: str | None = None,
    ) -> None:
        ci = checkpoint_interval
        if ci is not None and (type(ci) not in (int, float) or not 0 < ci < float("inf")):
            raise ValueError("checkpoint_interval must be a positive number of seconds or None")
        self._dir = Path(directory)
        self._keys = keys
        self._config = config if config is not None else JournalConfig()
        self._clock = clock
        self._interval = checkpoint_interval
        self._lock = threading.Lock()
        self._closed = False
        self._checkpoint_errors = 0
        self._moved = -1
        self._eager = False
        self._session = safe_source(session) if session else None
        signing = keys.active.signing_key()
        self._signer = (keys.active.key_id, signing, public_digest(signing))
        try:
            (self._dir / STREAMS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create trail directory {self._dir}: {exc.strerror}") from exc
        self._trail_id = ensure_trail(self._dir, keys, created=clock(), durable=self._durable)
        rec: tuple[StaleRecovery, ...] = ()
        if recover:
            rec = tuple(recover_stale(self._dir, keys, config=self._config, clock=clock))
        self._recovered = rec
        self._journal: JournalWriter | None = None
        self._info: StreamInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._open_stream()
        _live.add(self)
        if seal_on_sigterm:
            _seal_on_sigterm()

    @property
    def _durable(self) -> bool:
        return self._config.fsync != "never"

    # -- the hot path ----------------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> int:
        """Append one record to this writer's stream and return its ``seq`` (see ``JournalWriter.append``).

        Raises:
            JournalError: as :meth:`store.journal.JournalWriter.append`, or the writer is closed.
        """
        journal = self._journal
        if journal is None:
            journal = self._reopen()
        seq = journal.append(record)
        if self._eager:
            journal.seal()
        return seq

    def append_owned(self, record: dict[str, Any]) -> int:
        """:meth:`append` for a dict the caller hands over (``seq`` is added to it in place).

        Raises:
            JournalError: as :meth:`append`.
        """
        journal = self._journal
        if journal is None:
            journal = self._reopen()
        seq = journal.append_owned(record)
        if self._eager:
            journal.seal()
        return seq

    def quiesce(self) -> None:
        """The process has stopped serving and may end at any moment: seal the stream's segment now, and
        every record appended from here on as soon as it is written, so the stream is complete however the
        process then ends (a server that re-raises SIGTERM with its default action runs no atexit hook).

        The middleware calls this when the server's lifespan shuts down; :meth:`resume` undoes it when a
        lifespan starts again.

        Raises:
            JournalError: the seal cannot be written.
        """
        self._eager = True
        journal = self._journal
        if journal is not None:
            journal.seal()
        self._checkpoint("head")

    def resume(self) -> None:
        """Serving again (a new lifespan): records go on into the stream's segments as usual."""
        self._eager = False

    # -- streams ---------------------------------------------------------------------------------------

    def _open_stream(self) -> JournalWriter:
        """Open a new stream and checkpoint it (the caller holds the lock, or is the constructor)."""
        source = self._config.source
        err: JournalError | None = None
        for _ in range(_OPEN_ATTEMPTS):
            # A session names the stream: it continues one a writer before it sealed (a CLI investigator's
            # commands, one after another); busy (another command at the same time), a new one opens.
            instance = self._session or new_instance(self._clock)
            self._session = None
            stream = f"{safe_source(source)}.{instance}"
            path = self._dir / STREAMS_DIR / stream
            labels = {"trail_id": self._trail_id, "stream": stream, "instance": instance}
            try:
                journal = JournalWriter(
                    path, keys=self._keys, config=self._config, clock=self._clock, labels=labels
                )
            except JournalError as exc:
                err = exc
                continue
            self._journal = journal
            self._info = StreamInfo(
                stream=stream,
                source=source,
                instance=instance,
                trail_id=self._trail_id,
                path=path,
                state="open",
            )
            self._checkpoint("opened")
            if self._interval is not None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=_checkpointer,
                    args=(weakref.ref(self), self._stop, self._interval),
                    name="auditlog-trail-checkpoint",
                    daemon=True,
                )
                self._thread.start()
            return journal
        assert err is not None
        raise err

    def _reopen(self) -> JournalWriter:
        """In a forked child, on the first write: open the child's own stream."""
        with self._lock:
            if self._closed:
                raise JournalError(f"trail writer for {self._dir} is closed")
            if self._journal is None:
                self._open_stream()
            assert self._journal is not None
            return self._journal

    def _checkpoint(self, state: str) -> None:
        """Append a checkpoint of the stream's (synced) head; a failure is counted, never raised."""
        journal, info = self._journal, self._info
        if journal is None or info is None:
            return
        try:
            segment, seq, mac = journal._synced_head() if state != "sealed" else journal._head()
            fields = {
                "trail_id": self._trail_id,
                "stream": info.stream,
                "source": info.source,
                "instance": info.instance,
                "state": state,
                "last_seq": seq,
                "last_mac": mac.hex(),
                "segment": segment,
                "recovered": False,
                "ts": self._clock(),
            }
            append_checkpoint(self._dir, self._signer, fields, durable=self._durable)
            self._moved = seq
        except JournalError:
            self._checkpoint_errors += 1

    def checkpoint(self) -> None:
        """Checkpoint the stream's head now (the background thread does it every ``checkpoint_interval``)."""
        with self._lock:
            if not self._closed:
                self._checkpoint("head")

    def _background_checkpoint(self) -> None:
        with self._lock:
            journal = self._journal
            if not self._closed and journal is not None and journal._head()[1] != self._moved:
                self._checkpoint("head")

    # -- public controls -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Sync everything this writer wrote so far (see ``JournalWriter.flush``).

        Raises:
            JournalError: the sync failed.
        """
        journal = self._journal
        if journal is not None:
            journal.flush()

    def rotate(self) -> None:
        """Seal the stream's active segment and start a new one.

        Raises:
            JournalError: as :meth:`store.journal.JournalWriter.rotate`.
        """
        journal = self._journal
        if journal is None:
            journal = self._reopen()
        journal.rotate()

    def close(self) -> None:
        """Seal the stream, checkpoint it as ``sealed`` and stop the checkpoint thread. Idempotent.

        Raises:
            JournalError: the seal cannot be written (the next writer recovers the stream).
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _live.discard(self)
            journal = self._journal
            if journal is None:
                return
            journal.close()
            self._checkpoint("sealed")

    def _forget_after_fork(self) -> None:
        """In a forked child: forget the parent's stream (its journal disowned itself); open one on write."""
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()
        if not self._closed:
            self._journal = None
            self._info = None
            self._moved = -1
        self._pid = os.getpid()

    # -- introspection ---------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The trail directory."""
        return self._dir

    @property
    def trail_id(self) -> str:
        """The trail's id (from ``trail.json``)."""
        return self._trail_id

    @property
    def stream(self) -> StreamInfo | None:
        """This writer's stream (``None`` in a forked child before its first write)."""
        return self._info

    @property
    def config(self) -> JournalConfig:
        """The stream's configuration."""
        return self._config

    @property
    def recovered(self) -> tuple[StaleRecovery, ...]:
        """The stale streams this writer recovered and sealed when it opened."""
        return self._recovered

    @property
    def checkpoint_errors(self) -> int:
        """Checkpoints that could not be written (the stream itself is unaffected)."""
        return self._checkpoint_errors

    @property
    def stats(self) -> JournalStats:
        """Counters of this writer's current stream (a forked child counts from its own stream)."""
        journal = self._journal
        if journal is None:
            return JournalStats(records=0, bytes=0, segments=0, write_errors=0)
        return journal.stats

    def __enter__(self) -> TrailWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        stream = self._info.stream if self._info is not None else None
        return f"TrailWriter({str(self._dir)!r}, stream={stream!r})"


def _checkpointer(ref: weakref.ref[TrailWriter], stop: threading.Event, interval: float) -> None:
    """The checkpoint thread: every ``interval`` seconds, checkpoint the stream's head if it moved."""
    while not stop.wait(interval):
        writer = ref()
        if writer is None:
            return
        writer._background_checkpoint()
        del writer


_live: weakref.WeakSet[TrailWriter] = weakref.WeakSet()
_sigterm_installed = False


def _close_all() -> None:
    """At interpreter exit: seal every live writer's stream."""
    for writer in list(_live):
        with contextlib.suppress(JournalError):
            writer.close()


def _forget_after_fork() -> None:
    for writer in list(_live):
        writer._forget_after_fork()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _seal_on_sigterm() -> None:
    """Make a default SIGTERM exit through ``SystemExit`` (so atexit seals); leave any other handler alone."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            _sigterm_installed = True


atexit.register(_close_all)
os.register_at_fork(after_in_child=_forget_after_fork)
