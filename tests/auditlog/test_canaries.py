"""The leak scanner (``auditlog.canaries.scan``) and the corpora it reads: the project's own copies."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditlog.canaries import Leak, encoded_forms, load_canaries, load_corpus, scan
from tests.conftest import corpus

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sk_live_CANARY9a8b7c6d5e4f3a2b1c0d"


class TestCorpus:
    def test_bundled_corpora_are_found_without_a_shared_folder(self) -> None:
        """Both corpora ship in auditlog/data; load_corpus merges them (values and needles)."""
        c = load_corpus()
        assert TOKEN in c.needles
        assert "ghp_4mB7xQ2vLp9RkT5wZc8NyH3dFs6JaE1uGo0K" in c.needles
        assert {"password", "session_hex"} <= set(c.values)

    def test_a_folder_adds_every_corpus_in_it(self, tmp_path: Path) -> None:
        """A folder given to load_corpus adds its canaries*.json; load_canaries reads its canaries.json."""
        (tmp_path / "canaries.json").write_text(
            json.dumps({"values": {"x": "zz-extra-1"}, "needles": ["zz-extra-1"]})
        )
        (tmp_path / "canaries-more.json").write_text(json.dumps({"values": {}, "needles": ["zz-extra-2"]}))
        merged = load_corpus(tmp_path)
        assert {"zz-extra-1", "zz-extra-2", TOKEN} <= set(merged.needles)
        assert ("zz-extra-1",) == load_canaries(tmp_path).needles

    def test_a_folder_without_a_corpus_is_an_error(self, tmp_path: Path) -> None:
        """An empty folder is not silently an empty corpus."""
        with pytest.raises(FileNotFoundError):
            load_corpus(tmp_path)


class TestForms:
    @pytest.mark.parametrize(
        "form",
        [
            TOKEN,
            json.dumps(f"x {TOKEN} y"),
            urllib.parse.quote(TOKEN, safe=""),
            urllib.parse.quote_plus(f"a {TOKEN}"),
            base64.b64encode(TOKEN.encode()).decode(),
            base64.b64encode(b"x" + TOKEN.encode()).decode(),
            base64.b64encode(b"xy" + TOKEN.encode() + b"!").decode(),
            base64.urlsafe_b64encode(b"?" + TOKEN.encode()).decode(),
        ],
    )
    def test_every_encoding_is_found(self, form: str) -> None:
        """Raw, JSON-escaped, URL-encoded and base64 (at any alignment) forms are found."""
        assert TOKEN in [leak.needle for leak in scan(form, canaries=corpus())]

    def test_json_escaped_non_ascii(self) -> None:
        """A needle with non-ASCII letters is found as json.dumps writes it (\\u escapes)."""
        assert b"Canar\\u00ff-\\u00dfecret" in encoded_forms("Canarÿ-ßecret")
        assert ["Canarÿ-ßecret"] == [x.needle for x in scan(json.dumps({"n": "Zoë Canarÿ-ßecret"}))]

    def test_basic_auth_hides_a_secret_in_base64(self) -> None:
        """The forms corpus's basic-auth value is found twice: as its needle and as the decoded secret."""
        needles = {x.needle for x in scan("Authorization: Basic YWRtaW46czNjcjN0LUZqb3JkLTg4")}
        assert {"YWRtaW46czNjcjN0LUZqb3JkLTg4", "s3cr3t-Fjord-88"} == needles

    def test_clean_text_is_clean(self) -> None:
        """Shapes, hex MACs and base64 noise hold no needle."""
        blob = json.dumps(
            {"t": "str", "len": 24, "mac": "ab" * 32, "b64": base64.b64encode(bytes(range(256))).decode()}
        )
        assert [] == scan(blob, canaries=corpus())


class TestFiles:
    def test_files_gzip_zip_members_and_parquet(self, tmp_path: Path) -> None:
        """A directory is walked: plain files, gzip, zip (member names and contents) and Parquet rows."""
        (tmp_path / "plain.txt").write_text(f"see {TOKEN}")
        (tmp_path / "log.gz").write_bytes(gzip.compress(json.dumps({"k": TOKEN}).encode()))
        with zipfile.ZipFile(tmp_path / "pack.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("clean.txt", "nothing here")
            zf.writestr(f"named-{TOKEN}.txt", "")
            zf.writestr("inner.json", json.dumps([TOKEN] * 1000))
        pq.write_table(pa.table({"x": [TOKEN]}), tmp_path / "part.parquet", compression="zstd")
        (tmp_path / "clean.txt").write_text("nothing")
        where = {leak.where.removeprefix(str(tmp_path) + "/") for leak in scan(tmp_path, canaries=corpus())}
        assert {  # the zip's own bytes hold the member name, the Parquet file's its column statistics
            "pack.zip",
            "part.parquet",
            "plain.txt",
            "log.gz!gunzip",
            f"pack.zip!named-{TOKEN}.txt",
            "pack.zip!inner.json",
            "part.parquet!rows",
        } == where

    def test_a_needle_across_a_chunk_boundary(self, tmp_path: Path) -> None:
        """Files are read in chunks; a needle straddling two chunks is still found."""
        f = tmp_path / "big.bin"
        f.write_bytes(b"." * ((1 << 20) - 5) + TOKEN.encode() + b"." * 100)
        assert [Leak(where=str(f), needle=TOKEN)] == scan(f, canaries=corpus())

    def test_a_missing_path_is_an_error(self, tmp_path: Path) -> None:
        """A path that does not exist is not a clean scan."""
        with pytest.raises(FileNotFoundError):
            scan(tmp_path / "nope")

    def test_module_entry_point(self, tmp_path: Path) -> None:
        """``python -m auditlog.canaries PATH`` prints each leak and exits 1; 0 and "no leaks" when clean."""
        (tmp_path / "a.txt").write_text(TOKEN)
        (tmp_path / "b.txt").write_text("clean")
        run = [sys.executable, "-m", "auditlog.canaries"]
        dirty = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
        clean = subprocess.run(
            [*run, str(tmp_path / "b.txt")], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert (1, f"LEAK {tmp_path / 'a.txt'}: {TOKEN!r}") == (
            dirty.returncode,
            dirty.stdout.splitlines()[0],
        )
        assert (0, "no leaks") == (clean.returncode, clean.stdout.strip())
