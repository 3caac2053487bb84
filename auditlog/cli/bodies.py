"""``auditlog bodies``: read, hold, release, purge, erase and reconcile captured bodies; every action is
journaled.

Each command opens the body store (``--store`` or ``AUDITLOG_BODY_STORE``) and journals into the trail
(``--journal`` or ``AUDITLOG_JOURNAL_DIR``) as a stream of its own (``cli.<host>``), next to the servers'.
Readers and operators come from the policy (``--policy`` or ``AUDITLOG_POLICY``): ``get --reader NAME``
needs ``[readers.NAME]``, and ``hold``, ``release``, ``purge`` and ``erase`` need ``--operator NAME``
declared as ``[operators.NAME]`` with ``bodies:admin`` (anything else is refused and journaled). Bodies
sealed for a reader key need ``--reader-key FILE`` (``auditlog bodies keygen``); the read is journaled
before anything is decrypted, and bodies the trail says were erased or purged are refused.
``reconcile JOURNAL --store URL`` checks that every ``body_ref`` resolves (exit 1 if any dangles).

Exit codes: 0 done, 1 refused / not found / expired / failed integrity / dangling refs, 2 bad usage.
Nothing but ``get`` prints body bytes, and ``get`` prints them only to ``--out`` or stdout as asked.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from auditlog._configure import configure
from auditlog.bodies import PolicyBodyStore, audit_sink, open_body_store, reconcile
from auditlog.cli._options import (
    cli_session,
    cli_source,
    command_with,
    fail,
    key_ring,
    keyword,
    print_summary,
)
from auditlog.policy import DEFAULT_POLICY, Policy, PolicyError
from auditlog.policy import load as load_policy
from store.bodies import (
    AccessDenied,
    BodyIntegrityError,
    BodyNotFound,
    BodyStoreError,
    BodyStoreUnavailable,
    InvalidCorrelationId,
    ReaderKey,
    from_url,
    generate_reader_key,
)
from store.exceptions import JournalError

__all__ = ["bodies_app"]

bodies_app = typer.Typer(
    help="Read, hold, release, purge and erase captured bodies; every action is journaled.",
    no_args_is_help=True,
)
_err = Console(stderr=True, highlight=False)

StoreOpt = Annotated[
    str, typer.Option("--store", envvar="AUDITLOG_BODY_STORE", help="file:///path, s3://bucket/prefix.")
]
JournalOpt = Annotated[
    Path,
    typer.Option("--journal", envvar="AUDITLOG_JOURNAL_DIR", help="Journal directory for these events."),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", envvar="AUDITLOG_POLICY", help="Policy file (its readers)."),
]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key-file", help="Key file (default: AUDITLOG_KEY or AUDITLOG_KEY_FILE)."),
]
ReaderKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--reader-key", envvar="AUDITLOG_READER_KEY", help="Reader private key (bodies sealed for a reader)."
    ),
]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", envvar="AUDITLOG_S3_ENDPOINT", help="S3-compatible endpoint.")
]
OperatorOpt = Annotated[
    str, typer.Option("--operator", help="Operator name, as declared in the policy ([operators.NAME]).")
]
CidArg = Annotated[str, typer.Argument(help="Correlation id of the body.")]


def _store_options(endpoint: str | None) -> dict[str, Any]:
    return {} if endpoint is None else {"endpoint_url": endpoint}


def _reader_key(path: Path | None) -> ReaderKey | None:
    if path is None:
        return None
    try:
        return ReaderKey.from_file(path)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot load the reader key: {type(exc).__name__}") from None


@contextmanager
def _opened(shared: dict[str, Any]) -> Iterator[PolicyBodyStore]:
    policy: Path | None = shared["policy"]
    try:
        pol: Policy = load_policy(policy) if policy else DEFAULT_POLICY
    except PolicyError as exc:
        raise fail(str(exc)) from None
    ring = key_ring(shared["key_file"])
    reader = _reader_key(shared["reader_key"])
    try:
        handle = configure(
            journal_dir=shared["journal"],
            policy=pol,
            key=ring,
            stdlib=False,
            source=cli_source(),
            session=cli_session(),
        )
    except JournalError as exc:
        raise fail(f"cannot open the journal: {exc}") from None
    try:
        try:
            bodies = open_body_store(
                shared["store"],
                handle=handle,
                policy=pol,
                outbox=False,
                reader_key=reader,
                ledger=True,
                **_store_options(shared["endpoint_url"]),
            )
        except (ValueError, ImportError, BodyStoreError) as exc:
            raise fail(str(exc)) from None
        try:
            yield bodies
        except InvalidCorrelationId as exc:
            raise fail(str(exc)) from None
        except (AccessDenied, BodyNotFound, BodyIntegrityError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}", 1) from None
        except BodyStoreUnavailable as exc:
            raise fail(f"body store unavailable: {exc}", 1) from None
        except ValueError as exc:  # purpose, reason, subject validation
            raise fail(str(exc)) from None
    finally:
        handle.shutdown()


# The options every bodies command takes after its own, declared once.
_SHARED = (
    keyword("store", StoreOpt),
    keyword("journal", JournalOpt),
    keyword("policy", PolicyOpt, None),
    keyword("key_file", KeyOpt, None),
    keyword("reader_key", ReaderKeyOpt, None),
    keyword("endpoint_url", EndpointOpt, None),
)


def _act(ctx: typer.Context, shared: dict[str, Any], call: Callable[[], Any]) -> None:
    action = call()
    with _opened(shared) as bodies:
        action(bodies)


def bodies_command(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``auditlog bodies <name>``: the function returns what to do with the opened store."""
    return command_with(bodies_app, name, _SHARED, _act)


Action = Callable[[PolicyBodyStore], None]


@bodies_command("get")
def _get(
    correlation_id: CidArg,
    reader: Annotated[str, typer.Option("--reader", help="Reader name, as declared in the policy.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why: a ticket or incident id (journaled).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the body here (0600), not stdout.")] = None,
) -> Action:
    """Read one body as READER for PURPOSE. The read is journaled (body.read) before any byte is shown.

    CID is a request's correlation id (the response's x-correlation-id) or a body key (CID.SPAN). A
    correlation id with several bodies (a trace of several requests) lists their keys: pass one.
    """

    def act(bodies: PolicyBodyStore) -> None:
        key = correlation_id
        if "." not in key:
            found = bodies.keys_for(key)
            if len(found) > 1:
                raise fail(f"{len(found)} bodies for {key}; pass one of: {', '.join(found)}")
            key = found[0] if found else key
        data = bodies.get(key, reader=reader, purpose=purpose)
        if out is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _err.print(f"wrote {len(data)} bytes to {out}", markup=False)

    return act


@bodies_command("purge")
def _purge(operator: OperatorOpt) -> Action:
    """Delete every expired body that is not on legal hold (journaled as body.purged)."""

    def act(bodies: PolicyBodyStore) -> None:
        r = bodies.purge_expired(operator=operator)
        typer.echo(
            f"scanned {r.scanned}, purged {r.purged}, kept on hold {r.held}, unreadable {r.unreadable}"
        )

    return act


@bodies_command("erase")
def _erase(
    operator: OperatorOpt,
    subject: Annotated[str, typer.Option("--subject", help="Data subject id, or '-' to read it from stdin.")],
    reason: Annotated[
        str | None, typer.Option("--reason", help="The erasure request's ticket id (journaled).")
    ] = None,
) -> Action:
    """Crypto-shred every body of a data subject (journaled as body.erased, with a keyed fingerprint)."""
    if subject == "-":
        subject = sys.stdin.readline().rstrip("\n")

    def act(bodies: PolicyBodyStore) -> None:
        r = bodies.erase(subject=subject, reason=reason, operator=operator)
        typer.echo(f"erased {r.erased} bodies; kept {r.held} on legal hold")
        for cid in r.held_ids:
            typer.echo(f"  on hold: {cid}")

    return act


@bodies_command("hold")
def _hold(
    correlation_id: CidArg,
    operator: OperatorOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (a case or ticket id; journaled).")],
) -> Action:
    """Put a legal hold on a body: it outlives its retention until released (journaled as body.held)."""

    def act(bodies: PolicyBodyStore) -> None:
        info = bodies.hold(correlation_id, reason=reason, operator=operator)
        typer.echo(f"{info.correlation_id}: on hold")

    return act


@bodies_command("release")
def _release(
    correlation_id: CidArg,
    operator: OperatorOpt,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the hold ends (a case or ticket id; journaled).")
    ] = None,
) -> Action:
    """Lift a legal hold (journaled as body.released); an expired body goes at the next purge."""

    def act(bodies: PolicyBodyStore) -> None:
        info = bodies.release(correlation_id, reason=reason, operator=operator)
        state = "expired, purged at the next purge" if info.expired else "retention running"
        typer.echo(f"{info.correlation_id}: released ({state})")

    return act


@bodies_app.command("reconcile")
def _reconcile(
    journal: Annotated[Path, typer.Argument(help="The trail whose body_refs to check.")],
    store: StoreOpt,
    key_file: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    outbox: Annotated[
        list[Path] | None,
        typer.Option("--outbox", help="An outbox whose unshipped bodies count as pending (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check that every body_ref resolves: stored, dropped / lost (with a reason), purged or erased.

    Exit 1 if any ref dangles (resolves to nothing).
    """
    ring = key_ring(key_file)
    try:
        bodies = from_url(store, keys=ring, **_store_options(endpoint_url))
        report = reconcile(journal, bodies, outboxes=outbox or ())
    except (ValueError, ImportError, BodyStoreError, JournalError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}", 1) from None
    print_summary("body refs", report.as_dict(), as_json)
    if report.dangling:
        raise typer.Exit(1)


@bodies_app.command("keygen")
def _keygen(
    out: Annotated[Path, typer.Option("--out", help="Where to write the reader private key (0600).")],
) -> None:
    """Make a reader key pair: the private key goes to --out (keep it off app servers); the public key is
    printed, for the app's configuration (reader_public_key)."""
    try:
        public = generate_reader_key(out)
    except FileExistsError:
        raise fail(f"{out} exists; refusing to overwrite a key") from None
    typer.echo(public)


@bodies_app.command("ship")
def _ship(
    outbox: Annotated[Path, typer.Argument(help="The outbox directory the app servers append to.")],
    store: StoreOpt,
    journal: JournalOpt,
    key_file: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Ship what is there, then exit.")] = False,
    nice: Annotated[
        int, typer.Option("--nice", help="Niceness to add, so the app servers keep the CPU (0-19).")
    ] = 10,
) -> None:
    """Deliver an outbox's packs to the store (a sidecar for servers run with OutboxConfig(ship=False)).

    body.stored and body.lost are journaled into the trail as this command's own stream. Runs until
    SIGTERM / Ctrl-C unless --once; exit 1 if --once left packs behind.
    """
    import signal
    import threading

    from store.bodies import BodyOutbox

    ring = key_ring(key_file)
    if nice > 0:
        with contextlib.suppress(OSError):
            os.nice(min(nice, 19))
    try:
        handle = configure(journal_dir=journal, key=ring, stdlib=False, source=cli_source())
    except JournalError as exc:
        raise fail(f"cannot open the journal: {exc}") from None
    try:
        try:
            bodies = open_body_store(store, handle=handle, outbox=False, **_store_options(endpoint_url))
        except (ValueError, ImportError, BodyStoreError) as exc:
            raise fail(str(exc)) from None
        box = BodyOutbox(bodies.store, outbox, audit=audit_sink(handle), start=False)
        if once:
            box.ship_once()
            left = box.pending_packs()
            typer.echo(f"stored {box.stats.stored}; packs left {left}")
            if left:
                raise typer.Exit(1)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        box.start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        box.close()
    finally:
        handle.shutdown()
