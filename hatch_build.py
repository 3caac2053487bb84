"""Build hook: compile ``processors/_cshape.c``, the compiled fast path of ``shape_of``.

The extension is optional: the package is complete without it (``processors/_fastshape.py`` is the
same algorithm in Python). With a C compiler and the Python headers present (``gcc`` and
``python3-dev`` on Debian), every build compiles it in place, next to its source, so editable installs
find it too; wheels then carry it and are tagged for the platform.

``AUDITLOG_BUILD_EXT``: ``auto`` (default) compiles when possible and warns otherwise; ``require`` makes a
failed compile fail the build (CI sets it); ``skip`` builds pure Python.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("processors") / "_cshape.c"


def compile_extension(root: Path) -> Path:
    """Compile the extension in place and return the path of the shared object.

    Raises:
        RuntimeError: no compiler, no headers, or the compiler failed (its output is in the message).
    """
    src = root / SOURCE
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    out = src.with_name("_cshape" + suffix)
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise RuntimeError(f"Python headers not found in {include} (install python3-dev)")
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", include, str(src), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot run the C compiler {cc[0]!r}: {exc}") from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE} failed:\n{proc.stderr.strip()}")
    tmp.replace(out)
    return out


class CExtensionHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile the optional extension for wheel and editable builds."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        mode = os.environ.get("AUDITLOG_BUILD_EXT", "auto")
        if mode == "skip" or self.target_name != "wheel":
            return
        try:
            built = compile_extension(Path(self.root))
        except RuntimeError as exc:
            if mode == "require":
                raise
            print(f"auditlog: building without the C shaper (pure Python, slower): {exc}", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(built)] = f"processors/{built.name}"
