"""Pipeline benchmark: the same 20k realistic events through four approaches, in one process run.

(a) plain structlog + orjson to a file, no redaction (the baseline);
(b) auditlog's full pipeline, including the chained journal write;
(c) a recursive key-denylist scrubber in the style of Sentry's EventScrubber, then orjson to a file;
(d) presidio analyzer + anonymizer (pattern recognizers) on each rendered line (a subsample: it is slow).

Each event carries 8 keyword arguments with nesting and one planted canary (in a free-text field, a
header, a dict key or a password field, in rotation). Prints µs/event, the ratio to (a), and canary leaks
per approach (events whose output holds a planted value). Then chained vs unchained journal throughput.

Run: ``.venv/bin/python benchmarks/bench_pipeline.py [--events N] [--presidio-sample N]``

``--count``: instructions per event of (a) and (b) under callgrind, with and without SHA-256, and system
calls per event (see ``benchmarks/_instr.py``); deterministic, so it is what the targets are judged on.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import orjson
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditlog import configure  # noqa: E402
from auditlog.canaries import Canaries, load_canaries  # noqa: E402
from store.journal import JournalConfig, JournalWriter  # noqa: E402
from store.keys import KeyRing, MasterKey  # noqa: E402

Event = tuple[str, dict[str, Any]]


def make_events(n: int, c: Canaries, seed: int = 7) -> list[Event]:
    """Realistic events: 8 kwargs, nested, one planted canary each (position rotates)."""
    rng = random.Random(seed)
    secrets = list(c.values.values())
    out: list[Event] = []
    for i in range(n):
        secret = secrets[i % len(secrets)]
        kw: dict[str, Any] = {
            "user_id": rng.randint(1, 10**6),
            "route": "/api/v1/orders",
            "method": rng.choice(["GET", "POST", "PATCH"]),
            "status": rng.choice([200, 201, 404, 500]),
            "duration_ms": round(rng.random() * 100, 3),
            "request": {
                "headers": {"content-type": "application/json", "accept": "*/*"},
                "params": {"page": rng.randint(1, 9), "sort": "desc"},
            },
            "items": [{"sku": f"A-{rng.randint(1, 99)}", "qty": rng.randint(1, 5)} for _ in range(3)],
            "customer": {"tier": rng.choice(["free", "pro"]), "note": "regular order"},
        }
        where = i % 4
        if where == 0:
            kw["customer"]["note"] = f"customer wrote: {secret}"
        elif where == 1:
            kw["request"]["headers"]["authorization"] = secret
        elif where == 2:
            kw["items"][0][secret] = 1
        else:
            kw["customer"]["password"] = secret
        out.append(("order.updated", kw))
    return out


def _copy(events: list[Event]) -> list[Event]:
    # Processors may mutate event dicts; each run gets fresh copies (made outside the timed region).
    return [(e, orjson.loads(orjson.dumps(kw))) for e, kw in events]


def _timed(fn: Callable[[list[Event]], None], events: list[Event], repeats: int) -> float:
    """Best-of-N CPU seconds of this process for fn over the whole list (fresh copies each time).

    CPU time, not wall time: every approach here is single-threaded and CPU-bound (the journal's and the
    files' writes are system time, which is counted), and on a shared machine other processes' load moves
    wall time far more than it moves this process's CPU time.
    """
    best = float("inf")
    for _ in range(repeats):
        batch = _copy(events)
        gc.collect()
        gc.disable()
        t0 = time.process_time()
        fn(batch)
        best = min(best, time.process_time() - t0)
        gc.enable()
    return best


def count_leaks(lines: Iterable[bytes], c: Canaries) -> int:
    forms = c.forms()
    return sum(1 for line in lines if any(f in line for fs in forms.values() for f in fs))


# (a) ---------------------------------------------------------------------------------------------------
def run_plain(path: Path) -> Callable[[list[Event]], None]:
    def run(events: list[Event]) -> None:
        with path.open("wb") as fh:
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.JSONRenderer(serializer=orjson.dumps),
                ],
                logger_factory=structlog.BytesLoggerFactory(fh),
                cache_logger_on_first_use=True,
            )
            log = structlog.get_logger()
            for ev, kw in events:
                log.info(ev, **kw)
        structlog.reset_defaults()

    return run


# (b) ---------------------------------------------------------------------------------------------------
def run_auditlog(directory: Path, key: MasterKey) -> Callable[[list[Event]], None]:
    def run(events: list[Event]) -> None:
        handle = configure(journal_dir=directory, key=KeyRing(key), stdlib=False)
        log = structlog.get_logger("bench")
        for ev, kw in events:
            log.info(ev, **kw)
        handle.shutdown()

    return run


# (c) ---------------------------------------------------------------------------------------------------
DENYLIST = frozenset(
    {
        "password", "passwd", "secret", "api_key", "apikey", "auth", "authorization", "credentials",
        "token", "access_token", "refresh_token", "private_key", "cookie", "set-cookie", "x-api-key",
        "session", "csrf", "ssn", "card", "credit_card", "cvv",
    }
)  # fmt: skip


def scrub(value: Any, depth: int = 0) -> Any:
    """Sentry EventScrubber style: recursive, key denylist, values replaced with [Filtered]."""
    if depth > 10:
        return value
    if isinstance(value, dict):
        return {
            k: "[Filtered]" if isinstance(k, str) and k.lower() in DENYLIST else scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    return value


def run_scrubber(path: Path) -> Callable[[list[Event]], None]:
    def processor(_: Any, __: str, ed: dict[str, Any]) -> dict[str, Any]:
        return scrub(ed)  # type: ignore[no-any-return]

    def run(events: list[Event]) -> None:
        with path.open("wb") as fh:
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    processor,
                    structlog.processors.JSONRenderer(serializer=orjson.dumps),
                ],
                logger_factory=structlog.BytesLoggerFactory(fh),
                cache_logger_on_first_use=True,
            )
            log = structlog.get_logger()
            for ev, kw in events:
                log.info(ev, **kw)
        structlog.reset_defaults()

    return run


# (d) ---------------------------------------------------------------------------------------------------
def make_presidio() -> Callable[[str], str]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_anonymizer import AnonymizerEngine

    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    anonymizer = AnonymizerEngine()

    def redact(text: str) -> str:
        results = analyzer.analyze(text=text, language="en")
        return anonymizer.anonymize(text=text, analyzer_results=results).text  # type: ignore[arg-type]

    return redact


def run_presidio(path: Path, redact: Callable[[str], str]) -> Callable[[list[Event]], None]:
    def run(events: list[Event]) -> None:
        with path.open("wb") as fh:
            ts = structlog.processors.TimeStamper(fmt="iso", utc=True)
            for ev, kw in events:
                ed = ts(None, "info", {"event": ev, "level": "info", **kw})
                line = orjson.dumps(ed).decode()
                fh.write(redact(line).encode() + b"\n")

    return run


def journal_throughput(directory: Path, key: MasterKey, records: list[dict[str, Any]], chain: bool) -> float:
    best = float("inf")
    for _ in range(3):
        d = Path(tempfile.mkdtemp(prefix="chained-" if chain else "plain-", dir=directory))
        w = JournalWriter(d, keys=KeyRing(key), config=JournalConfig(chain=chain, fsync="never"))
        gc.collect()
        t0 = time.process_time()
        for r in records:
            w.append(r)
        best = min(best, time.process_time() - t0)
        w.close()
    return len(records) / best


# -- --count: instructions per event, deterministic (callgrind; see benchmarks/_instr.py) -----------------
COUNT_VARIANTS = {
    "plain": "(a) structlog + orjson, no redaction",
    "audit": "(b) auditlog pipeline + chained journal",
}


def count_child(variant: str, warm: int, n: int) -> None:
    """One --count variant in this process: ``warm`` events, then ``n`` counted (copies made beforehand)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _instr

    c = load_canaries()
    events = make_events(warm + n, c)
    batch = _copy(events)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-count-{variant}-"))
    fh = (tmp / "plain.jsonl").open("wb")
    if variant == "plain":
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(fh),
            cache_logger_on_first_use=True,
        )
        log = structlog.get_logger()
    else:
        configure(journal_dir=tmp / "journal", key=KeyRing(MasterKey.generate()), stdlib=False)
        log = structlog.get_logger("bench")
    for ev, kw in batch[:warm]:
        log.info(ev, **kw)
    t0 = time.process_time()
    _instr.start()
    for ev, kw in batch[warm:]:
        log.info(ev, **kw)
    _instr.stop()
    print(f'{{"us": {(time.process_time() - t0) / max(n, 1) * 1e6}}}')


def run_count(warm: int, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _instr

    res: dict[str, tuple[float, float, float | None]] = {}
    for variant in COUNT_VARIANTS:
        cmd = [sys.executable, __file__, "--count-child", variant]
        ir, sha = _instr.instructions(cmd, warm=warm, n=n, tag=variant)
        res[variant] = (ir, sha, _instr.syscalls(cmd, warm=warm, n=n))
    print(f"instructions per event (callgrind, {n} events after {warm} warm-up; 'w/o SHA' = less OpenSSL's")
    print("SHA-256 block functions); system calls per event (strace -f -c, difference of two runs)\n")
    print("| approach | instr / event | w/o SHA | ratio to (a), w/o SHA | syscalls / event |")
    print("|---|---:|---:|---:|---:|")
    base = res["plain"][0] - res["plain"][1]
    for variant, (ir, sha, sc) in res.items():
        calls = f"{sc:.2f}" if sc is not None else "n/a"
        print(
            f"| {COUNT_VARIANTS[variant]} | {ir / 1000:,.1f}k | {(ir - sha) / 1000:,.1f}k | "
            f"{(ir - sha) / base:.2f}x | {calls} |"
        )
    ratio = (res["audit"][0] - res["audit"][1]) / base
    print(
        f"\n(b)/(a) without SHA-256 = {ratio:.2f}x "
        f"(target <= 1.15x: **{'met' if ratio <= 1.15 else 'NOT met'}**)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--presidio-sample", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--count", action="store_true", help="instructions per event (callgrind) and syscalls")
    ap.add_argument("--count-child", help=argparse.SUPPRESS)
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    if args.count_child:
        count_child(args.count_child, args.warm, args.n)
        return
    if args.count:
        run_count(args.warm, args.n)
        return
    c = load_canaries()
    events = make_events(args.events, c)
    key = MasterKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        t = Path(tmp)
        results: dict[str, tuple[float, int, int]] = {}
        plain = t / "plain.jsonl"
        scrubbed = t / "scrubbed.jsonl"
        jdirs: list[Path] = []

        def audit_run(evs: list[Event]) -> None:
            d = t / f"journal-{len(jdirs)}"
            jdirs.append(d)
            run_auditlog(d, key)(evs)

        # Rounds interleave (a), (b) and (c), so a slow spell of the machine hits all three alike.
        best = {"a": float("inf"), "b": float("inf"), "c": float("inf")}
        for _ in range(args.repeats):
            best["a"] = min(best["a"], _timed(run_plain(plain), events, 1))
            best["b"] = min(best["b"], _timed(audit_run, events, 1))
            best["c"] = min(best["c"], _timed(run_scrubber(scrubbed), events, 1))
        lines = [ln for p in sorted(jdirs[-1].glob("*.jsonl")) for ln in p.open("rb")]
        leaks_a = count_leaks(plain.open("rb"), c)
        results["(a) structlog + orjson, no redaction"] = (best["a"], leaks_a, len(events))
        results["(b) auditlog pipeline + chained journal"] = (best["b"], count_leaks(lines, c), len(events))
        results["(c) key-denylist scrubber (Sentry style)"] = (
            best["c"],
            count_leaks(scrubbed.open("rb"), c),
            len(events),
        )
        sample = events[: args.presidio_sample]
        redact = make_presidio()
        pres = t / "presidio.jsonl"
        secs = _timed(run_presidio(pres, redact), sample, 2) * len(events) / len(sample)
        results["(d) presidio analyzer + anonymizer per line"] = (
            secs,
            count_leaks(pres.open("rb"), c),
            len(sample),
        )

        base = results["(a) structlog + orjson, no redaction"][0]
        print(f"\n{args.events} events, 8 kwargs each with nesting, one planted canary per event\n")
        print("| approach | µs/event | ratio to (a) | canary leaks |")
        print("|---|---:|---:|---:|")
        for name, (secs, leaks, n) in results.items():
            us = secs / len(events) * 1e6
            print(f"| {name} | {us:.1f} | {secs / base:.2f}x | {leaks} / {n} events |")
        b = results["(b) auditlog pipeline + chained journal"][0]
        d = results["(d) presidio analyzer + anonymizer per line"][0]
        print(f"\n(b)/(a) = {b / base:.2f}x (target <= 1.5x); (d)/(b) = {d / b:.0f}x faster (target >= 300x)")
        print("(CPU time of this process, best of the interleaved rounds)")

        shaped = [orjson.loads(ln) for ln in lines[:20_000]]
        for r in shaped:
            r.pop("seq", None)
            r.pop("mac", None)
        chained = unchained = 0.0
        for _ in range(2):  # interleaved, best of each
            chained = max(chained, journal_throughput(t, key, shaped, chain=True))
            unchained = max(unchained, journal_throughput(t, key, shaped, chain=False))
        print("\n| journal append (fsync=never) | records/s |")
        print("|---|---:|")
        print(f"| chained (HMAC-SHA256 chain) | {chained:,.0f} |")
        print(f"| unchained | {unchained:,.0f} |")
        print(f"\nchained/unchained = {chained / unchained:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main()
