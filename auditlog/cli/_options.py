"""What the ``auditlog`` sub-command modules share: the error console, usage failures, the key ring."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from store.exceptions import KeyError_
from store.keys import KeyRing, key_from_env

__all__ = ["err", "fail", "key_ring"]

err = Console(stderr=True, highlight=False, soft_wrap=True)

NO_KEY = "no key: pass --key-file, or set AUDITLOG_KEY / AUDITLOG_KEY_FILE (see `auditlog keygen`)"


def fail(msg: str, code: int = 2) -> typer.Exit:
    """Print ``error: msg`` on stderr and return the ``typer.Exit`` to raise (2: bad usage or input)."""
    err.print(f"[red]error:[/red] {msg}", markup=True)
    return typer.Exit(code)


def key_ring(key_file: Path | None) -> KeyRing:
    """The key ring from ``--key-file``, else the environment; a clear usage error when neither works.

    Raises:
        typer.Exit: no key anywhere, or a malformed key file.
    """
    try:
        ring = KeyRing.from_file(key_file) if key_file else key_from_env()
    except KeyError_ as exc:
        raise fail(str(exc)) from None
    if ring is None:
        raise fail(NO_KEY)
    return ring
