"""Safe exceptions: type, scanned message and frame positions; never locals, never source lines.

``safe_exception(exc, scanner=...)`` gives::

    {"type": "mypkg.errors.PaymentError",
     "message": "card <CREDIT_CARD> declined",           # scanner.redact(str(exc)), capped
     "frames": ["mypkg/pay.py:41:charge", ...],           # path:line:qualname, at most max_frames
     "cause": {...}}                                      # __cause__, or __context__ unless suppressed

File paths are cut to the part under ``site-packages`` / the working directory, or to the basename, so a
home directory (a user name) never reaches the log. ``ExceptionShaper`` is the structlog processor: it
turns ``exc_info`` (``True``, a ``sys.exc_info()`` tuple or an exception) into ``event_dict["exception"]``
and replaces an already formatted traceback (a ``str``, or another processor's dict, which can carry
locals) with ``"<formatted-exception>"``.
"""

from __future__ import annotations

import os
import re
import sys
from collections import deque
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

from processors.scanning import Scanner, utf8_safe
from processors.shapes import emittable_key, safe_type_name

__all__ = ["ExceptionShaper", "safe_exception"]

_NOT_DOTTED = re.compile(r"[^A-Za-z0-9_.]")
_NOT_FRAME = re.compile(r"[^A-Za-z0-9_./<>-]")
_MAX_MESSAGE = 1024
_PACKAGE_DIRS = ("site-packages", "dist-packages")
_MODULE = type.__dict__["__module__"]
_QUALNAME = type.__dict__["__qualname__"]


def _dotted(text: object, limit: int = 128) -> str:
    return _NOT_DOTTED.sub("", text)[:limit] if type(text) is str else ""


def _type_name(exc: BaseException) -> str:
    """``module.QualName``, each part a plain name (a class named like a token becomes ``type``)."""
    tp = type(exc)
    try:
        module, qualname = _dotted(_MODULE.__get__(tp)), _dotted(_QUALNAME.__get__(tp))
    except Exception:
        return "<unknown>"
    if not qualname or not all(map(emittable_key, qualname.split("."))):
        qualname = safe_type_name(tp)
    if module in ("builtins", "") or not all(map(emittable_key, module.split("."))):
        return qualname
    return f"{module}.{qualname}"


def _short_path(path: str, cwd: str) -> str:
    for marker in _PACKAGE_DIRS:
        cut = path.rfind(marker + os.sep)
        if cut >= 0:
            return path[cut + len(marker) + 1 :]
    if cwd and path.startswith(cwd + os.sep):
        return path[len(cwd) + 1 :]
    return os.path.basename(path)


def _frames(tb: TracebackType | None, max_frames: int, cwd: str) -> tuple[list[str], int]:
    """The last ``max_frames`` frames as ``path:line:qualname`` and how many were left out."""
    kept: deque[TracebackType] = deque(maxlen=max_frames)
    total = 0
    while tb is not None and total < 100_000:
        kept.append(tb)
        total += 1
        tb = tb.tb_next
    frames = []
    for entry in kept:
        code = entry.tb_frame.f_code
        path = _NOT_FRAME.sub("", _short_path(code.co_filename, cwd))[:200]
        name = _NOT_FRAME.sub("", code.co_qualname)[:128]
        frames.append(f"{path}:{entry.tb_lineno}:{name}")
    return frames, total - len(kept)


def _message(exc: BaseException, scanner: Scanner) -> str:
    try:
        text = str(exc)
    except Exception:
        return "<unprintable>"
    if type(text) is not str:
        return "<unprintable>"
    try:
        redacted = utf8_safe(scanner.redact(text))
    except Exception:  # a scanner must not raise; if one does, nothing of the message goes out
        return "<unscannable>"
    return redacted if len(redacted) <= _MAX_MESSAGE else redacted[:_MAX_MESSAGE] + "<TRUNCATED>"


def safe_exception(
    exc: BaseException, *, scanner: Scanner, max_frames: int = 50, max_chain: int = 5
) -> dict[str, Any]:
    """Describe an exception and its chain without locals, source lines or unscanned text.

    Args:
        exc: the exception.
        scanner: masks the message (``str(exc)``) of each exception in the chain.
        max_frames: frames kept per exception (the innermost ones); the rest are counted.
        max_chain: chained exceptions (``__cause__`` / ``__context__``) followed at most.

    Returns:
        ``{"type", "message", "frames"[, "frames_omitted"][, "cause" | "context"]}``, nested per link;
        ``"chain_truncated": true`` where the chain goes on past ``max_chain`` or loops.
    """
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    root: dict[str, Any] = {}
    node = root
    seen: set[int] = set()
    current: BaseException | None = exc
    links = 0
    while current is not None:
        seen.add(id(current))
        frames, omitted = _frames(current.__traceback__, max_frames, cwd)
        node["type"] = _type_name(current)
        node["message"] = _message(current, scanner)
        node["frames"] = frames
        if omitted:
            node["frames_omitted"] = omitted
        link, nxt = _next_link(current)
        if nxt is None:
            break
        if links >= max_chain or id(nxt) in seen:
            node["chain_truncated"] = True
            break
        links += 1
        node[link] = node = {}
        current = nxt
    return root


def _next_link(exc: BaseException) -> tuple[str, BaseException | None]:
    cause = exc.__cause__
    if isinstance(cause, BaseException):
        return "cause", cause
    context = exc.__context__
    if isinstance(context, BaseException) and not exc.__suppress_context__:
        return "context", context
    return "cause", None


class ExceptionShaper:
    """structlog processor: ``exc_info`` / ``exception`` become ``event_dict["exception"]`` (safe).

    Args:
        scanner: masks exception messages.
        max_frames: frames kept per exception.
        max_chain: chained exceptions followed at most.
    """

    __slots__ = ("_max_chain", "_max_frames", "_scanner")

    def __init__(self, scanner: Scanner, *, max_frames: int = 50, max_chain: int = 5) -> None:
        if max_frames < 1 or max_chain < 0:
            raise ValueError("max_frames must be >= 1 and max_chain >= 0")
        self._scanner = scanner
        self._max_frames = max_frames
        self._max_chain = max_chain

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Replace ``exc_info`` and ``exception`` with a safe description.

        Args:
            logger: the wrapped logger (unused).
            method_name: the log method name (unused).
            event_dict: the event.

        Returns:
            The event without ``exc_info``; ``exception`` is a :func:`safe_exception` dict, or
            ``"<formatted-exception>"`` where only an already formatted traceback was there.
        """
        if "exc_info" not in event_dict and "exception" not in event_dict:
            return event_dict
        exc = _exception_of(event_dict.pop("exc_info", None))
        previous = event_dict.get("exception")
        if exc is None and isinstance(previous, BaseException):
            exc = previous
        if exc is not None:
            event_dict["exception"] = safe_exception(
                exc, scanner=self._scanner, max_frames=self._max_frames, max_chain=self._max_chain
            )
        elif "exception" in event_dict:
            event_dict["exception"] = "<formatted-exception>"
        return event_dict


def _exception_of(exc_info: object) -> BaseException | None:
    """structlog's conventions: ``True`` (the exception being handled), a 3-tuple, or an exception."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        return exc_info
    if type(exc_info) is tuple and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        return exc_info[1]
    return None
