"""Deterministic per-request costs for the benchmarks' ``--count`` mode: instructions and system calls.

Instructions: each variant runs in its own process under callgrind with instrumentation off; after the
warm-up it calls :func:`start` (zero the counters, start instrumenting) and after the measured requests
:func:`stop` (stop, dump). The dump holds exactly the measured requests' instructions, every thread
included (an exporter's background thread counts). The two calls are valgrind client requests compiled
into a tiny shared object on first use (``valgrind/callgrind.h``); outside valgrind they do nothing.
Without a compiler or the header the count falls back to whole-process runs at two request counts:
``(Ir(warm + n) - Ir(warm)) / n``.

SHA-256: valgrind hides SHA-NI, so under callgrind OpenSSL hashes in plain x86 (~28 instructions a
byte, about 10x native). Each count is also given without it: minus the inclusive cost of OpenSSL's
``sha256_block_data_order*`` functions (leaves), read from the dump; where libcrypto has no symbols for
them (Debian's), of ``SHA256_Update`` and ``SHA256_Final``, the two entry points that call them (their
own buffering adds ~1%).

System calls: ``strace -f -c`` over two runs of the child without valgrind, ``warm`` and ``warm + n``
requests: ``(calls(warm + n) - calls(warm)) / n``, so start-up and imports cancel out.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PROBE_C = r"""
#include <valgrind/callgrind.h>
void probe_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void probe_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("measured"); }
"""
_probe: ctypes.CDLL | None = None
_SHA_BLOCK = re.compile(r"^\s*([\d,]+)\s.*:sha256_block\w*\s", re.M)
# Without symbols for the (assembly) block functions: the two public entry points that call them.
_SHA_ENTRY = re.compile(r"^\s*([\d,]+)\s.*:(?:SHA256_Update|SHA256_Final)\s", re.M)
_TOTAL = re.compile(r"^totals:\s+(\d+)", re.M)


def _probe_path() -> Path | None:
    """The compiled probe (built once per machine into the temp dir), or None without gcc/header."""
    if shutil.which("gcc") is None or not Path("/usr/include/valgrind/callgrind.h").exists():
        return None
    out = Path(tempfile.gettempdir()) / f"auditlog-callgrind-probe-{os.getuid()}.so"
    if not out.exists():
        src = out.with_suffix(".c")
        src.write_text(_PROBE_C)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", str(src), "-o", str(tmp)], check=True)
        tmp.replace(out)
    return out


def start() -> None:
    """In the child, after the warm-up: zero callgrind's counters and start counting (no-op otherwise)."""
    global _probe
    path = os.environ.get("AUDITLOG_PROBE")
    if path:
        _probe = ctypes.CDLL(path)
        _probe.probe_start()


def stop() -> None:
    """In the child, after the measured requests: stop counting and dump (no-op outside callgrind)."""
    if _probe is not None:
        _probe.probe_stop()


@dataclass(frozen=True)
class Count:
    """Per request (or event, or call): instructions, of which SHA-256's, and system calls."""

    instructions: float
    sha256: float
    syscalls: float | None = None

    @property
    def without_sha(self) -> float:
        return self.instructions - self.sha256


def _read_dump(path: Path) -> tuple[int, int]:
    """(total Ir, SHA-256 block functions' Ir) of one callgrind dump."""
    total_m = _TOTAL.search(path.read_text(errors="replace"))
    total = int(total_m.group(1)) if total_m else 0
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = _SHA_BLOCK.findall(out) or _SHA_ENTRY.findall(out)
    sha = sum(int(n.replace(",", "")) for n in found)
    return total, sha


def _callgrind(cmd: Sequence[str], env: dict[str, str], workdir: Path, tag: str, probe: bool) -> Path:
    out = workdir / f"callgrind.{tag}"
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no"]
    if probe:
        vg.append("--instr-atstart=no")
    subprocess.run([*vg, *cmd], env=env, check=True, capture_output=True, timeout=3600)
    if probe:
        parts = sorted(workdir.glob(f"callgrind.{tag}.*"))
        for p in parts:
            if "measured" in p.read_text(errors="replace")[:4000]:
                return p
        raise RuntimeError(f"no measured dump for {tag}")
    return out


def instructions(cmd: Sequence[str], *, warm: int, n: int, tag: str) -> tuple[float, float]:
    """Instructions (total, SHA-256) per unit of ``cmd``, which takes ``--warm W --n N`` and calls
    :func:`start` / :func:`stop` around its measured units."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    probe = _probe_path()
    with tempfile.TemporaryDirectory(prefix="bench-count-") as tmp:
        workdir = Path(tmp)
        if probe is not None:
            env["AUDITLOG_PROBE"] = str(probe)
            total, sha = _read_dump(
                _callgrind([*cmd, "--warm", str(warm), "--n", str(n)], env, workdir, tag, True)
            )
            return total / n, sha / n
        lo = _read_dump(_callgrind([*cmd, "--warm", str(warm), "--n", "0"], env, workdir, tag + "-lo", False))
        hi = _read_dump(
            _callgrind([*cmd, "--warm", str(warm), "--n", str(n)], env, workdir, tag + "-hi", False)
        )
        return (hi[0] - lo[0]) / n, (hi[1] - lo[1]) / n


def syscalls(cmd: Sequence[str], *, warm: int, n: int) -> float | None:
    """System calls per unit of ``cmd`` (every thread), or None without strace."""
    if shutil.which("strace") is None:
        return None
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    counts = []
    with tempfile.TemporaryDirectory(prefix="bench-strace-") as tmp:
        for k in (0, n):
            out = Path(tmp) / f"strace.{k}"
            subprocess.run(
                ["strace", "-f", "-c", "-o", str(out), *cmd, "--warm", str(warm), "--n", str(k)],
                env=env,
                check=True,
                capture_output=True,
                timeout=1200,
            )
            total = [ln.split() for ln in out.read_text().splitlines() if ln.split()[-1:] == ["total"]]
            if not total:
                return None
            counts.append(int(total[-1][3]))
    return (counts[1] - counts[0]) / n
