"""Synthetic secrets for leak tests, the demo and ``auditlog selftest``, and the scanner that finds them.

Every value is fake. The bundled corpora (``auditlog/data/canaries*.json``) mirror the project's shared
leak-test corpora: ``values`` to plant, ``needles`` that must never appear in any output.

- :func:`load_canaries` reads one corpus: the given file, else ``AUDITLOG_CANARIES``, else the bundled
  ``canaries.json`` (what the demo and the self-test plant).
- :func:`load_corpus` merges every bundled corpus with the files or folders given (what the tests use).
- :func:`scan` looks for every needle, in every encoded form (:func:`encoded_forms`), in text, bytes,
  files and directories: plain bytes, gzip, zip members (and their names), and Parquet rendered as text.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import urllib.parse
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Canaries", "Leak", "encoded_forms", "load_canaries", "load_corpus", "scan"]

_BUNDLED = ("canaries.json", "canaries-forms.json")
_CHUNK = 1 << 20
# base64 forms of needles shorter than this would be too short to mean anything (false positives)
_MIN_BASE64 = 6


def _base64_forms(raw: bytes) -> set[bytes]:
    """The base64 text ``raw`` becomes at each of the three alignments inside a longer encoded value.

    Only the characters fully determined by ``raw`` are kept, so the form is found wherever ``raw`` sits
    in the encoded bytes (``Basic YWRtaW46czNjcjN0...`` holds ``s3cr3t-Fjord-88`` at offset 6).
    """
    out: set[bytes] = set()
    if len(raw) < _MIN_BASE64:
        return out
    for shift in range(3):
        start = -(-8 * shift // 6)  # first character with no bit of the padding
        end = 8 * (shift + len(raw)) // 6  # last character with no bit of what follows
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            out.add(encode(b"\0" * shift + raw)[start:end])
    return out


def encoded_forms(needle: str) -> tuple[bytes, ...]:
    """The forms ``needle`` can take in output: raw UTF-8, JSON-escaped, URL-encoded, base64.

    Args:
        needle: the planted text.

    Returns:
        The distinct non-empty forms as bytes, sorted.
    """
    text = {
        needle,
        json.dumps(needle)[1:-1],
        json.dumps(needle, ensure_ascii=False)[1:-1],
        urllib.parse.quote(needle),
        urllib.parse.quote(needle, safe=""),
        urllib.parse.quote_plus(needle),
    }
    forms = {t.encode("utf-8", "surrogatepass") for t in text if t}
    forms |= _base64_forms(needle.encode("utf-8", "surrogatepass"))
    return tuple(sorted(f for f in forms if f))


@dataclass(frozen=True, slots=True)
class Canaries:
    """Named planted values and the needles a leak scan looks for."""

    values: dict[str, str]
    needles: tuple[str, ...]

    def forms(self) -> dict[str, tuple[bytes, ...]]:
        """Each needle with its encoded forms (:func:`encoded_forms`), as bytes."""
        return {n: encoded_forms(n) for n in self.needles}

    def leaks_in(self, blob: bytes | str) -> list[str]:
        """The needles found in ``blob`` (in any of their forms)."""
        data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
        return [n for n, fs in self.forms().items() if any(f in data for f in fs)]

    def leaks(self, blob: bytes | str) -> list[str]:
        """The needles found in ``blob``: the same as :meth:`leaks_in`."""
        return self.leaks_in(blob)

    def merged(self, *others: Canaries) -> Canaries:
        """This corpus and ``others`` as one: every value (a clashing name gets a suffix), every needle."""
        values = dict(self.values)
        needles = list(self.needles)
        for other in others:
            for name, value in other.values.items():
                key, n = name, 1
                while key in values and values[key] != value:
                    n += 1
                    key = f"{name}_{n}"
                values[key] = value
            needles.extend(x for x in other.needles if x not in needles)
        return Canaries(values=values, needles=tuple(needles))


@dataclass(frozen=True, slots=True, kw_only=True)
class Leak:
    """A needle found by :func:`scan`: where (a path, ``path!member`` for an archive, or ``<text>``)."""

    where: str
    needle: str

    def __str__(self) -> str:
        return f"LEAK {self.where}: {self.needle!r}"


def _parse(text: str) -> Canaries:
    data = json.loads(text)
    return Canaries(values=dict(data.get("values", {})), needles=tuple(data.get("needles", ())))


def _corpus_files(source: str | os.PathLike[str]) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return sorted(path.glob("canaries*.json"))
    return [path]


def load_canaries(path: str | os.PathLike[str] | None = None) -> Canaries:
    """Load a canary corpus: ``path``, else ``AUDITLOG_CANARIES``, else the bundled ``canaries.json``.

    A folder stands for its ``canaries.json``.

    Raises:
        FileNotFoundError: the file (or the folder's ``canaries.json``) does not exist.
    """
    src = path or os.environ.get("AUDITLOG_CANARIES")
    if src:
        file = Path(src) / "canaries.json" if Path(src).is_dir() else Path(src)
        return _parse(file.read_text("utf-8"))
    return _parse(resources.files("auditlog").joinpath("data/canaries.json").read_text("utf-8"))


def load_corpus(*sources: str | os.PathLike[str], bundled: Iterable[str] = _BUNDLED) -> Canaries:
    """The bundled corpora merged with ``sources`` (each a corpus file, or a folder of ``canaries*.json``).

    Args:
        sources: further corpus files or folders.
        bundled: which of the bundled corpora (``auditlog/data``) to start from; all by default.

    Raises:
        FileNotFoundError: a source does not exist, or a folder holds no corpus.
    """
    data = resources.files("auditlog").joinpath("data")
    parts = [_parse(data.joinpath(n).read_text("utf-8")) for n in bundled if data.joinpath(n).is_file()]
    for source in sources:
        files = _corpus_files(source)
        if not files:
            raise FileNotFoundError(f"no canaries*.json in {source}")
        parts.extend(_parse(f.read_text("utf-8")) for f in files)
    if not parts:
        return Canaries(values={}, needles=())
    return parts[0].merged(*parts[1:])


# ---- the scanner ------------------------------------------------------------------------------------


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _Matcher:
    """Finds needles in a stream of chunks without holding more than a chunk and an overlap."""

    __slots__ = ("_forms", "_overlap")

    def __init__(self, canaries: Canaries) -> None:
        self._forms = canaries.forms()
        self._overlap = max((len(f) for fs in self._forms.values() for f in fs), default=1) - 1

    def blob(self, data: bytes) -> set[str]:
        return {n for n, fs in self._forms.items() if any(f in data for f in fs)}

    def stream(self, fh: _Readable) -> set[str]:
        found: set[str] = set()
        tail = b""
        while chunk := fh.read(_CHUNK):
            window = tail + chunk
            found |= self.blob(window)
            tail = window[-self._overlap :] if self._overlap else b""
        return found


def _parquet_texts(path: Path) -> Iterator[bytes]:
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - duckdb is in the query extra
        raise ImportError(f"install auditlog-pipeline[query] to scan Parquet files ({path.name})") from exc
    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet(?)", [path.as_posix()])
        while rows := cur.fetchmany(10_000):
            yield repr(rows).encode("utf-8", "surrogatepass")
            yield json.dumps(rows, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    finally:
        con.close()


def _scan_file(path: Path, m: _Matcher) -> Iterator[Leak]:
    where = str(path)
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        for needle in sorted(m.stream(fh)):
            yield Leak(where=where, needle=needle)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                found = m.stream(gz)
        except (OSError, EOFError):
            found = set()
        yield from (Leak(where=f"{where}!gunzip", needle=n) for n in sorted(found))
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    name = f"{where}!{info.filename}"
                    found = m.blob(info.filename.encode("utf-8", "surrogatepass"))
                    with zf.open(info) as member:
                        found |= m.stream(member)
                    yield from (Leak(where=name, needle=n) for n in sorted(found))
        except (zipfile.BadZipFile, OSError, RuntimeError):
            pass
    if head == b"PAR1":
        found = set()
        for text in _parquet_texts(path):
            found |= m.blob(text)
        yield from (Leak(where=f"{where}!rows", needle=n) for n in sorted(found))


def _files(root: Path) -> Iterable[Path]:
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.is_file())
    return [root]


def scan(
    *targets: str | bytes | os.PathLike[str],
    canaries: Canaries | None = None,
) -> list[Leak]:
    """Every needle of ``canaries`` found in ``targets``, in any encoded form.

    A ``str`` or ``bytes`` target is scanned as text; a path (:class:`os.PathLike`) as a file or, for a
    directory, every file under it. Each file is read in chunks: its bytes, its gunzipped bytes, its zip
    members (names and contents, streamed) and, for Parquet, its rows rendered as text (needs duckdb).

    Args:
        targets: the text, bytes, files and directories to scan.
        canaries: the corpus; :func:`load_corpus` (every bundled corpus) when not given.

    Returns:
        One :class:`Leak` per needle per place it was found; empty when clean.

    Raises:
        FileNotFoundError: a path target does not exist.
    """
    m = _Matcher(canaries if canaries is not None else load_corpus())
    leaks: list[Leak] = []
    for target in targets:
        if isinstance(target, str | bytes):
            data = target.encode("utf-8", "surrogatepass") if isinstance(target, str) else target
            leaks.extend(Leak(where="<text>", needle=n) for n in sorted(m.blob(data)))
            continue
        root = Path(target)
        if not root.exists():
            raise FileNotFoundError(f"nothing to scan at {root}")
        for path in _files(root):
            leaks.extend(_scan_file(path, m))
    return leaks


def _main(argv: list[str] | None = None) -> int:
    """``python -m auditlog.canaries [--canaries FILE] PATH...``: print each leak; exit 1 if any."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m auditlog.canaries", description=_main.__doc__)
    ap.add_argument("--canaries", action="append", default=[], help="another corpus file or folder")
    ap.add_argument("paths", nargs="+", type=Path)
    args: Any = ap.parse_args(argv)
    leaks = scan(*args.paths, canaries=load_corpus(*args.canaries))
    for leak in leaks:
        print(leak)
    print(f"{len(leaks)} leaks" if leaks else "no leaks")
    return 1 if leaks else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
