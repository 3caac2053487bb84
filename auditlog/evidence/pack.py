"""Evidence packs: the audit data of a time range, mapped to SOC 2 controls, signed with Ed25519.

A pack is a zip archive::

    manifest.json            what is inside: SHA-256 and size of every other member, the range, the
                             source, the policy reference, the chain result, and the Ed25519 public key
    manifest.sig             the Ed25519 signature of manifest.json's exact bytes (base64)
    events.parquet           every record in the range (the columns of auditlog.lake.layout.COLUMNS)
    controls/CC6.1_access_decisions.csv      allowed / denied per tool and route, reasons, scopes
    controls/CC6.1_body_reads.csv            who read which stored body, and why
    controls/CC7.2_monitoring_coverage.csv   records per day and source, segments, active hours
    controls/CC7.3_denials.csv               refused calls and reads
    controls/CC7.3_anomalies.csv             rate spikes, denial bursts, first-seen tools
    controls/CC7.4_incident_timelines.csv    full timelines of the incidents' correlation ids
    chain_verification.json  the journal chain result for every segment in range, and each compacted
                             batch's manifest MAC and Parquet SHA-256
    policy.json              the policy snapshot and its SHA-256; policies seen in the events
    retention.json           journal and body retention settings
    charts/*.svg             events per day, denials per tool, body reads per reader
    report.md, report.html   all of the above for a human reader

The signing key is derived from the master key (``master.derive("evidence")`` as an Ed25519 seed), so one
deployment signs with one stable key whose fingerprint can be published; :func:`verify_pack` checks the
signature with the key inside the pack and, given ``public_key``, that it is the expected signer. The
export runs its queries through :class:`~auditlog.investigate.Investigation` (each journaled as
``query.run``) and journals itself as ``evidence.export``.

Errors::

    EvidenceError
    └── PackInvalid (ValueError)   the archive is unreadable or not a pack (verify_pack reports the rest)
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from auditlog.evidence import report as _report
from auditlog.evidence._chain import chain_document, digest
from auditlog.investigate import AuditSink, Investigation, Sources, TimeArg, parse_time

if TYPE_CHECKING:
    from auditlog.policy import Policy
    from store.keys import KeyRing

__all__ = [
    "CONTROLS",
    "EvidenceError",
    "MAX_MEMBER_BYTES",
    "PACK_FORMAT",
    "PackCheck",
    "PackInvalid",
    "PackProblem",
    "PackReport",
    "export",
    "signer_public_key",
    "verify_pack",
]

PACK_FORMAT = "auditlog.evidence.pack/1"
CONTROLS: Mapping[str, tuple[str, ...]] = {"soc2": ("CC6.1", "CC7.2", "CC7.3", "CC7.4")}


class EvidenceError(Exception):
    """Base class of errors raised by evidence packs."""


class PackInvalid(EvidenceError, ValueError):
    """The file is not a readable evidence pack."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PackReport:
    """What :func:`export` wrote: the pack, its SHA-256, the signer's key fingerprint, and counts (records
    in all, and per stream: ``source.instance`` of each writer)."""

    path: Path
    sha256: str
    signer: str
    events: int
    streams: Mapping[str, int]
    members: tuple[str, ...]
    chain_ok: bool
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PackProblem:
    """One finding of :func:`verify_pack`: the member it concerns and what is wrong."""

    member: str
    reason: str

    def __str__(self) -> str:
        return f"{self.member}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PackCheck:
    """The result of :func:`verify_pack`. ``ok`` means signature and every member's SHA-256 check out."""

    ok: bool
    signer: str | None
    members: tuple[str, ...]
    problems: tuple[PackProblem, ...]


Progress = Callable[[str, int, int], None]


def _stream_counts(events: Path) -> dict[str, int]:
    """Records per stream in an events file, read a batch of one column at a time (bounded memory)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for batch in pq.ParquetFile(events).iter_batches(columns=["stream"], batch_size=1 << 16):
        for row in pc.value_counts(batch.column(0)).to_pylist():
            name = str(row["values"])
            counts[name] = counts.get(name, 0) + int(row["counts"])
    return dict(sorted(counts.items()))


def _signing_key(keys: KeyRing) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(keys.active.derive("evidence"))


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw


def signer_public_key(keys: KeyRing) -> tuple[str, str]:
    """The evidence signing key of a key ring: ``(public key as base64, SHA-256 fingerprint hex)``."""
    raw = _raw_public(_signing_key(keys).public_key())
    return base64.b64encode(raw).decode("ascii"), hashlib.sha256(raw).hexdigest()


def export(
    source: Sources,
    out: str | Path,
    *,
    since: TimeArg,
    until: TimeArg,
    audit: AuditSink | None = None,
    keys: KeyRing | None = None,
    policy: Policy | None = None,
    journal: str | Path | None = None,
    controls: str = "soc2",
    incidents: Sequence[str] = (),
    investigator: str | None = None,
    progress: Progress | None = None,
    s3_client: Any = None,
    cache_dir: str | Path | None = None,
    memory_limit: str = "1GB",
) -> PackReport:
    """Build a signed evidence pack for ``[since, until]``.

    Args:
        source: as for :class:`~auditlog.investigate.Investigation` (a journal directory, a layout root,
            s3://, or several of them read as one: the pack then holds every stream of all of them).
        out: the pack to write (``.zip``); an existing file is replaced.
        since: start of the range (required).
        until: end of the range (required).
        audit: where ``query.run`` and ``evidence.export`` go (default: the configured handle).
        keys: the key ring (default: the audit handle's): signs the pack, checks chains and manifests.
        policy: the policy to snapshot (default: the audit handle's policy).
        journal: the journal directory whose chain is verified (default: ``source`` when it is one; with
            several sources, each verifies its own and ``journal`` must be None).
        controls: the control framework (``"soc2"``).
        memory_limit: DuckDB's memory limit for the export's queries (events stream in batches).
        incidents: correlation ids whose timelines go into CC7.4 (default: those of the denials).
        investigator: who exports (default: the OS user).
        progress: ``progress(stage, done, total)``.
        s3_client: for ``s3://`` sources.
        cache_dir: for ``s3://`` sources.

    Returns:
        A :class:`PackReport`.

    Raises:
        ValueError: an unknown control framework, or ``journal`` with several sources.
        auditlog.investigate.QueryError: the source cannot be queried, or the journal refused an event.
        EvidenceError: no key ring, or the pack cannot be written.
    """
    started = time.monotonic()
    if controls not in CONTROLS:
        raise ValueError(f"unknown controls {controls!r}; known: {', '.join(CONTROLS)}")
    lo, hi = parse_time(since, name="since"), parse_time(until, name="until")
    if lo is None or hi is None:
        raise EvidenceError("an evidence pack needs both since and until")
    steps = ["events", "controls", "chain", "report", "sign"]

    def step(name: str) -> None:
        if progress is not None:
            progress(name, steps.index(name), len(steps))

    with Investigation(
        source,
        audit=audit,
        keys=keys,
        investigator=investigator,
        s3_client=s3_client,
        cache_dir=cache_dir,
        memory_limit=memory_limit,
        max_rows=10_000_000,  # the control tables of a long range; events stream (write_events)
        timeout=None,
    ) as inv:
        ring = keys if keys is not None else inv.keys
        if ring is None:
            raise EvidenceError(
                "an evidence pack is signed: pass keys= or an audit handle from auditlog.configure"
            )
        sink = inv.audit
        pol = policy if policy is not None else getattr(sink, "policy", None)
        with tempfile.TemporaryDirectory(prefix="auditlog-pack-") as tmp:
            work = Path(tmp)
            step("events")
            # streamed: memory stays bounded however many events the range holds
            n_events, segments = inv.write_events(lo, hi, work / "events.parquet")
            streams = _stream_counts(work / "events.parquet")
            step("controls")
            tables, charts = _report.control_tables(inv, lo, hi, incidents)
            for name, table in tables.items():
                (work / "controls").mkdir(exist_ok=True)
                (work / "controls" / f"{name}.csv").write_bytes(_report.to_csv(table.columns, table.rows))
            step("chain")
            chain = chain_document(inv, ring, journal, segments, lo, hi)
            (work / "chain_verification.json").write_bytes(orjson.dumps(chain, option=orjson.OPT_INDENT_2))
            policy_doc = _report.policy_document(pol, inv, lo, hi)
            (work / "policy.json").write_bytes(orjson.dumps(policy_doc, option=orjson.OPT_INDENT_2))
            (work / "retention.json").write_bytes(
                orjson.dumps(_report.retention_settings(pol), option=orjson.OPT_INDENT_2)
            )
            step("report")
            public_b64, fingerprint = signer_public_key(ring)
            (work / "charts").mkdir()
            for chart in charts:
                (work / chart.file).write_text(_report.bar_chart_svg(chart), encoding="utf-8")
            meta = {
                "source": inv.source,
                "since": lo.isoformat(),
                "until": hi.isoformat(),
                "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "investigator": inv.investigator,
                "signer": fingerprint,
                "events": n_events,
                "streams": streams,
            }
            sections = _report.sections(
                meta, tables, charts, chain, policy_doc, _report.retention_settings(pol), controls
            )
            title = f"Evidence pack: {controls.upper()} ({', '.join(CONTROLS[controls])})"
            (work / "report.md").write_text(_report.render_markdown(title, sections), encoding="utf-8")
            (work / "report.html").write_text(_report.render_html(title, sections), encoding="utf-8")
            step("sign")
            members = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
            manifest = {
                "format": PACK_FORMAT,
                **meta,
                "controls": {"framework": controls, "ids": list(CONTROLS[controls])},
                "policy": {"id": policy_doc.get("id"), "hash": policy_doc.get("hash")},
                "chain_ok": chain["ok"],
                "signature": {
                    "algorithm": "Ed25519",
                    "public_key": public_b64,
                    "fingerprint": fingerprint,
                    "file": "manifest.sig",
                },
                "files": {m: digest(work / m) for m in members},
            }
            manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
            signature = base64.b64encode(_signing_key(ring).sign(manifest_bytes))
            target = Path(out)
            partial = target.with_name(target.name + ".partial")
            try:
                with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr("manifest.json", manifest_bytes)
                    zf.writestr("manifest.sig", signature + b"\n")
                    for m in members:
                        zf.write(work / m, m)
                pack_sha = digest(partial)["sha256"]
            except OSError as exc:
                partial.unlink(missing_ok=True)
                raise EvidenceError(f"cannot write the pack {target}: {exc.strerror}") from exc
        event = {
            "kind": "evidence.export",
            "actor": {"subject": inv.investigator},
            "action": {"name": "export", "method": controls, "target": inv.catalog.kind},
            "outcome": {"status": "ok", "duration_ms": round((time.monotonic() - started) * 1000, 3)},
            "evidence": {
                "since": lo.isoformat(),
                "until": hi.isoformat(),
                "events": n_events,
                "pack_sha256": pack_sha,
                "signer": fingerprint,
                "chain_ok": chain["ok"],
            },
        }
        if not sink.emit(event):
            partial.unlink(missing_ok=True)
            raise EvidenceError("the audit journal did not take evidence.export, so no pack was written")
        partial.replace(target)
    if progress is not None:
        progress("done", len(steps), len(steps))
    return PackReport(
        path=target,
        sha256=pack_sha,
        signer=fingerprint,
        events=n_events,
        streams=streams,
        members=("manifest.json", "manifest.sig", *members),
        chain_ok=bool(chain["ok"]),
        seconds=time.monotonic() - started,
    )


MAX_MEMBER_BYTES = 2 << 30  # a member larger than this is not read (verify_pack's default cap)
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_SIG_BYTES = 4096
_CHUNK = 1 << 20


def verify_pack(
    path: str | Path,
    *,
    public_key: str | None = None,
    trust_embedded_key: bool = False,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> PackCheck:
    """Check a pack: the manifest's Ed25519 signature by a trusted signer, then every member.

    A pack can be re-signed by anyone, so the signer must be given (``public_key``): a pack that carries
    its own key proves nothing about who made it. Members are streamed through SHA-256 (memory stays
    bounded whatever their size); each one's declared size is compared with the manifest's before it is
    read, and a member past ``max_member_bytes`` is not read at all. Duplicate member names are refused
    (a zip reader would pick one of them, an auditor's tool perhaps the other).

    Args:
        path: the pack.
        public_key: the trusted signer, as base64 public key or SHA-256 fingerprint (hex), as
            ``auditlog export`` prints it.
        trust_embedded_key: check integrity only, against the key inside the pack (then compare
            :attr:`PackCheck.signer` out of band); without it, a missing ``public_key`` fails the check.
        max_member_bytes: the largest member that is read.

    Returns:
        A :class:`PackCheck` naming each bad member.

    Raises:
        PackInvalid: not a zip archive.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackInvalid(f"{p} is not a readable zip archive ({type(exc).__name__})") from None
    problems: list[PackProblem] = []
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        seen: set[str] = set()
        for name in names:
            if name in seen and not any(pr.member == name for pr in problems):
                problems.append(PackProblem(member=name, reason="appears more than once in the archive"))
            seen.add(name)
        if problems:
            return PackCheck(ok=False, signer=None, members=tuple(names), problems=tuple(problems))
        by_name = {i.filename: i for i in infos}
        head: dict[str, bytes] = {}
        for name, cap in (("manifest.json", _MAX_MANIFEST_BYTES), ("manifest.sig", _MAX_SIG_BYTES)):
            info = by_name.get(name)
            if info is None:
                problems.append(PackProblem(member=name, reason="missing"))
            elif info.file_size > cap:
                problems.append(PackProblem(member=name, reason=f"larger than {cap} bytes"))
            else:
                try:
                    head[name] = zf.read(info)
                except (zipfile.BadZipFile, OSError, ValueError, zlib.error) as exc:
                    problems.append(PackProblem(member=name, reason=f"unreadable ({_why(exc)})"))
        if problems:
            return PackCheck(ok=False, signer=None, members=tuple(names), problems=tuple(problems[:1]))
        try:
            manifest = orjson.loads(head["manifest.json"])
            sig_info = manifest["signature"]
            raw = base64.b64decode(sig_info["public_key"], validate=True)
            files = manifest["files"]
            if manifest.get("format") != PACK_FORMAT or not isinstance(files, dict):
                raise ValueError("format")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            problems.append(PackProblem(member="manifest.json", reason="not a valid pack manifest"))
            return PackCheck(ok=False, signer=None, members=tuple(names), problems=tuple(problems))
        signer = hashlib.sha256(raw).hexdigest()
        try:
            signature = base64.b64decode(head["manifest.sig"].strip(), validate=True)
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, head["manifest.json"])
        except (InvalidSignature, ValueError):
            problems.append(
                PackProblem(
                    member="manifest.json",
                    reason="the signature does not match (manifest.json or manifest.sig changed); "
                    "the members cannot be checked against an untrusted manifest",
                )
            )
            return PackCheck(ok=False, signer=signer, members=tuple(names), problems=tuple(problems))
        if public_key is None:
            if not trust_embedded_key:
                problems.append(
                    PackProblem(
                        member="manifest.sig",
                        reason="no trusted signer given: anyone can re-sign a pack with a key of their own; "
                        "pass the expected signer (public_key)",
                    )
                )
        elif public_key.strip() not in (signer, sig_info.get("public_key")):
            problems.append(
                PackProblem(member="manifest.sig", reason="signed by another key than the expected signer")
            )
        for name, meta in sorted(files.items()):
            info = by_name.get(name)
            if info is None:
                problems.append(PackProblem(member=name, reason="listed in the manifest but missing"))
                continue
            reason = _check_member(zf, info, meta if isinstance(meta, dict) else {}, max_member_bytes)
            if reason is not None:
                problems.append(PackProblem(member=name, reason=reason))
    for name in names:
        if name not in files and name not in ("manifest.json", "manifest.sig"):
            problems.append(PackProblem(member=name, reason="not listed in the manifest (added)"))
    return PackCheck(ok=not problems, signer=signer, members=tuple(names), problems=tuple(problems))


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, meta: dict[str, Any], cap: int) -> str | None:
    """Why a member does not match its manifest entry, or None; streamed, sizes checked first."""
    declared = meta.get("bytes")
    if type(declared) is not int or info.file_size != declared:
        return "its size is not the one the manifest records (changed)"
    if info.file_size > cap:
        return f"larger than {cap} bytes: not read"
    h = hashlib.sha256()
    size = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    return "longer than its declared size"
                h.update(chunk)
    except (zipfile.BadZipFile, OSError, ValueError, zlib.error, EOFError) as exc:
        return f"unreadable ({_why(exc)})"
    if size != declared or h.hexdigest() != meta.get("sha256"):
        return "SHA-256 does not match the manifest (changed)"
    return None


# -- building blocks ---------------------------------------------------------------------------------


def _why(exc: BaseException) -> str:
    text = str(exc)
    return "bad CRC-32" if "CRC" in text else type(exc).__name__
