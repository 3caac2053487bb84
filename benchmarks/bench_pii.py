"""PII scanner benchmark: precision/recall per entity and µs per message, three scanners, one corpus.

(a) ``SecretScanner``, the built-in regex scanner;
(b) ``PIIScanner``, presidio recognizers behind gates (default configuration, cache on);
(c) presidio's default ``AnalyzerEngine`` with every predefined pattern recognizer presidio enables for
    English, on ``NoOpNlpEngine`` (no model can be downloaded here), default score threshold.

The corpus is ``tests/pii_corpus.py`` (seeded Faker log messages with labelled spans, hard negatives
included). Scoring: a gold span is found when a prediction of the same entity overlaps it; a prediction is
right when it overlaps a gold span of its entity. The ``(any, masking)`` row ignores entity names: recall
there is "the value did not reach the sink", precision "what was masked was sensitive".

Timing: each scanner is built and warmed up on a different seed, then times one pass over the corpus
(best of ``--repeat``, a fresh scanner each time so (b)'s cache starts cold). The clock is the process's
CPU time, so that other work on a shared machine does not blur the ratios. Targets: (b) recall >= (c) and
precision >= (c) on every entity both cover; (b) >= 20x faster than (c); (b) on messages without PII within
1.5x of (a).

Run: ``.venv/bin/python benchmarks/bench_pii.py [--messages 6000] [--repeat 3] [--write-results]``

``--count [--baseline REF]`` (deterministic): (a) and (b) on the messages without PII and on all
messages, each in its own process: instructions per message under callgrind (``benchmarks/_instr.py``,
counting only the measured messages, after a warm-up on another seed) and CPU µs per message without
valgrind (best of ``--repeat``, the variants interleaved). With ``--baseline``, the same for the
``processors/`` package of a git revision (``git archive REF processors``), side by side, and a check
that both find exactly the same spans in every message.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # presidio's email validation: no fetch

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))
_IMPL = os.environ.get("BENCH_PII_IMPL")  # --count child: the processors package under test
if _IMPL:
    sys.path.insert(0, _IMPL)

from processors.pii import PIIScanner  # noqa: E402
from processors.secret_scanner import SecretScanner  # noqa: E402
from tests.pii_corpus import ANY, Sample, Score, corpus, score  # noqa: E402

Spans = Callable[[str], Iterable[tuple[str, int, int]]]
SECTION = "## PII scanners (bench_pii.py)"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def build(name: str) -> Spans:
    """A fresh scanner, as a ``text -> (entity, start, end)`` function."""
    if name == "a":
        a = SecretScanner()
        return lambda t: [(f.entity, f.start, f.end) for f in a.findings(t)]
    if name == "b":
        b = PIIScanner()
        return lambda t: [(f.entity, f.start, f.end) for f in b.findings(t)]
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NoOpNlpEngine

    engine = AnalyzerEngine(nlp_engine=NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}]))
    return lambda t: [(r.entity_type, r.start, r.end) for r in engine.analyze(t, language="en")]


def timed(name: str, texts: Sequence[str], warmup: Sequence[str], repeat: int) -> float:
    """Best µs per message over ``repeat`` passes, each with a fresh, warmed-up scanner."""
    best = float("inf")
    for _ in range(repeat):
        fn = build(name)
        for t in warmup:
            fn(t)
        gc.collect()
        gc.disable()
        start = time.process_time()
        for t in texts:
            fn(t)
        elapsed = time.process_time() - start
        gc.enable()
        best = min(best, elapsed / len(texts) * 1e6)
    return best


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(scores: dict[str, Score], both: set[str]) -> list[str]:
    entities = [*sorted({e for s in scores.values() for e in s.gold} - {ANY}), ANY]
    head = "| entity | gold | (a) R | (a) P | (b) R | (b) P | (c) R | (c) P | (b) vs (c) |"
    lines = [head, "|" + "---|" * 9]
    b, c = scores["b"], scores["c"]
    for e in entities:
        verdict = ""
        if e in both:
            ok = (b.recall(e) or 0) >= (c.recall(e) or 0) and (b.precision(e) or 0) >= (c.precision(e) or 0)
            verdict = "ok" if ok else "WORSE"
        cells = [fmt(scores[n].recall(e)) + " | " + fmt(scores[n].precision(e)) for n in "abc"]
        lines.append(f"| {e} | {b.gold.get(e, 0)} | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def unlabelled(scores: dict[str, Score]) -> list[str]:
    out = []
    for n in "abc":
        extra = {k: v for k, v in sorted(scores[n].predicted.items()) if k not in scores[n].gold}
        if extra:
            out.append(
                f"- ({n}) also reported, on no labelled span: "
                + ", ".join(f"{k} {v}" for k, v in extra.items())
            )
    return out


def write_section(lines: list[str]) -> None:
    """Add or replace our section of RESULTS.md, leaving every other section as it is."""
    text = RESULTS.read_text("utf-8") if RESULTS.exists() else "# Benchmark results\n"
    body = SECTION + "\n\n" + "\n".join(lines).rstrip() + "\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + body
    RESULTS.write_text(text, "utf-8")


# -- --count: instructions and CPU µs per message, this tree against a baseline revision --------------

COUNT_LABELS = {"a": "(a) SecretScanner", "b": "(b) PIIScanner"}
SUBSETS = {"clean": "without PII", "all": "all"}


def subset(name: str, messages: int, seed: int) -> list[str]:
    """The texts of one subset of the corpus: ``clean`` (no labelled span) or ``all``."""
    return [s.text for s in corpus(messages, seed=seed) if name == "all" or s.clean]


def count_child(variant: str, name: str, messages: int, seed: int, warm: int, n: int) -> None:
    """One --count unit in this process: warm up, then scan ``n`` messages (callgrind counts only those).

    Prints the CPU µs per measured message and a digest of every message's findings and masked text.
    """
    sys.path.insert(0, str(HERE))
    import _instr

    texts = subset(name, messages, seed)
    measured = [texts[i % len(texts)] for i in range(n)]
    scanner = SecretScanner() if variant == "a" else PIIScanner()
    for t in corpus(300, seed=seed + 1)[:warm]:
        scanner.findings(t.text)
    gc.collect()
    gc.disable()
    t0 = time.process_time()
    _instr.start()
    for t in measured:
        scanner.findings(t)
    _instr.stop()
    seconds = time.process_time() - t0
    gc.enable()
    check = type(scanner)()
    outputs = [
        [sorted((f.entity, f.start, f.end) for f in check.findings(t)), check.redact(t)] for t in texts
    ]
    digest = hashlib.sha256(json.dumps(outputs).encode("utf-8", "surrogatepass")).hexdigest()
    origin = str(Path(sys.modules[type(scanner).__module__].__file__ or "").parent)
    print(json.dumps({"us": seconds / n * 1e6 if n else 0.0, "digest": digest, "impl": origin}))


def baseline_tree(ref: str, into: Path) -> Path:
    """``processors/`` of git revision ``ref``, extracted under ``into`` (plus this tree's built C module)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "processors"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    for built in (ROOT / "processors").glob("_cshape*.so"):
        shutil.copy2(built, into / "processors" / built.name)
    return into


def run_count(args: argparse.Namespace) -> list[str]:
    """Count each (tree, scanner, subset) in its own process; return the table as Markdown lines."""
    sys.path.insert(0, str(HERE))
    import _instr

    with tempfile.TemporaryDirectory(prefix="bench-pii-") as tmp:
        trees = {"after": ROOT}
        if args.baseline:
            trees = {"before": baseline_tree(args.baseline, Path(tmp)), "after": ROOT}
        units = [(tree, v, name) for v in "ab" for name in SUBSETS for tree in trees]
        common = ["--messages", str(args.messages), "--seed", str(args.seed)]
        ir: dict[tuple[str, str, str], float] = {}
        us: dict[tuple[str, str, str], float] = {}
        digests: dict[tuple[str, str, str], str] = {}
        for tree, v, name in units:
            os.environ["BENCH_PII_IMPL"] = str(trees[tree])
            cmd = [sys.executable, __file__, "--count-child", v, "--subset", name, *common]
            ir[tree, v, name] = _instr.instructions(cmd, warm=args.warm, n=args.n, tag=f"{tree}-{v}-{name}")[
                0
            ]
            print(f"  {tree} {v} {name}: {ir[tree, v, name] / 1000:.1f}k instructions", file=sys.stderr)
        for _ in range(args.repeat):  # interleaved, so that drift in machine load hits every unit alike
            for tree, v, name in units:
                os.environ["BENCH_PII_IMPL"] = str(trees[tree])
                n = len(subset(name, args.messages, args.seed))
                cmd = [sys.executable, __file__, "--count-child", v, "--subset", name, *common]
                res = subprocess.run(
                    [*cmd, "--warm", str(args.warm), "--n", str(n)], check=True, capture_output=True
                )
                out = json.loads(res.stdout.splitlines()[-1])
                if not out["impl"].startswith(str(trees[tree])):
                    raise RuntimeError(f"{tree}: imported {out['impl']}")
                us[tree, v, name] = min(us.get((tree, v, name), float("inf")), out["us"])
                digests[tree, v, name] = out["digest"]
    lines = [
        f"instructions per message (callgrind, {args.n} messages after {args.warm} warm-up, in process); "
        f"CPU µs per message (whole subset, no valgrind, best of {args.repeat}, interleaved)",
        "",
    ]
    if args.baseline:
        lines += [
            "| scanner | messages | instr / msg before | after | ratio | CPU µs before | after | ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for v in "ab":
            for name, label in SUBSETS.items():
                b, a = ("before", v, name), ("after", v, name)
                lines.append(
                    f"| {COUNT_LABELS[v]} | {label} | {ir[b] / 1000:,.1f}k | {ir[a] / 1000:,.1f}k | "
                    f"{ir[a] / ir[b]:.2f} | {us[b]:.1f} | {us[a]:.1f} | {us[a] / us[b]:.2f} |"
                )
        same = all(digests["before", v, name] == digests["after", v, name] for v in "ab" for name in SUBSETS)
        lines += ["", f"Findings and masked text identical before and after on every message: **{same}**"]
    else:
        lines += ["| scanner | messages | instr / msg | CPU µs |", "|---|---|---:|---:|"]
        for v in "ab":
            for name, label in SUBSETS.items():
                k = ("after", v, name)
                lines.append(f"| {COUNT_LABELS[v]} | {label} | {ir[k] / 1000:,.1f}k | {us[k]:.1f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-results", action="store_true", help=f"update the section of {RESULTS.name}")
    ap.add_argument("--count", action="store_true", help="instructions (callgrind) and CPU µs per message")
    ap.add_argument("--baseline", help="--count: a git revision whose processors/ to compare against")
    ap.add_argument("--n", type=int, default=1000, help="--count: messages counted per unit")
    ap.add_argument("--warm", type=int, default=300, help="--count: warm-up messages (another seed)")
    ap.add_argument("--count-child", choices=("a", "b"), help=argparse.SUPPRESS)
    ap.add_argument("--subset", choices=tuple(SUBSETS), default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.count_child:
        count_child(args.count_child, args.subset, args.messages, args.seed, args.warm, args.n)
        return 0
    if args.count:
        print("\n".join(run_count(args)))
        return 0

    samples: list[Sample] = corpus(args.messages, seed=args.seed)
    warmup = [s.text for s in corpus(300, seed=args.seed + 1)]
    texts = [s.text for s in samples]
    clean = [s.text for s in samples if s.clean]

    scores = {n: score(samples, build(n)) for n in "abc"}
    b_entities = PIIScanner().entities
    both = {e for e in b_entities & set(scores["c"].predicted) if scores["c"].gold.get(e)}

    us = {n: timed(n, texts, warmup, args.repeat) for n in "abc"}
    us_clean = {n: timed(n, clean, warmup, args.repeat) for n in "abc"}

    lines = [
        f"{len(samples)} messages (seed {args.seed}), {len(clean)} without PII; "
        f"{sum(len(s.spans) for s in samples)} labelled spans. Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; best of {args.repeat}.",
        "",
        "Precision (P) and recall (R) per entity:",
        "",
        *table(scores, both),
        "",
        *unlabelled(scores),
        "",
        "Speed (µs of CPU per message):",
        "",
        "| scanner | all messages | messages without PII |",
        "|---|---|---|",
        *(
            f"| ({n}) {label} | {us[n]:.1f} | {us_clean[n]:.1f} |"
            for n, label in (("a", "SecretScanner"), ("b", "PIIScanner"), ("c", "presidio AnalyzerEngine"))
        ),
        "",
        f"- (c) / (b), all messages: **{us['c'] / us['b']:.1f}x** (target >= 20x)",
        f"- (b) / (a), messages without PII: **{us_clean['b'] / us_clean['a']:.2f}x** (target <= 1.5x)",
        f"- (b) / (a), all messages: {us['b'] / us['a']:.2f}x",
        "",
        "Notes: PERSON is labelled but no scanner here runs NER (`PIIScanner(nlp=...)` needs a spaCy model), "
        "so it caps the `(any, masking)` recall. Faker makes many phone numbers libphonenumber rejects "
        "(unassigned area codes); (b) and (c) both validate, hence PHONE_NUMBER recall < 1. (c) runs at "
        "presidio's default threshold 0: its weak patterns (any 9 digits as US_SSN, order numbers as phone "
        "numbers or US_DRIVER_LICENSE) cost it precision. The corpus and (b)'s recognizers come from the "
        "same hands; `tests/processors/test_pii.py` checks the (b)-vs-(c) relation on another seed.",
    ]
    print("\n".join(lines))
    if args.write_results:
        write_section(lines)
        print(f"\nwrote the section to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
