"""A pytest plugin that injects the audit middleware into every app an upstream test suite builds.

Used by ``tests/upstream/run.sh``, which runs Starlette's and Flask's own test suites (from the sdists
of the installed versions) twice, plain and with ``-p auditlog_inject``, and compares the failures:
DESIGN.md's invariant 5, "the app's upstream test suite passes with it injected".

- Starlette: ``Starlette.build_middleware_stack`` is wrapped, so every ``Starlette`` (and ``FastAPI``)
  app is served through :class:`auditlog.integrations.asgi.AuditMiddleware`, outermost.
- Flask: ``Flask.wsgi_app`` is wrapped, so every request goes through
  :class:`auditlog.integrations.wsgi.AuditWSGIMiddleware` (the place Flask documents for WSGI middleware).

The middleware journals into a temporary directory through a real pipeline (``auditlog.configure``,
stdlib logging left alone so that the suites' own ``caplog`` tests see what they expect), under a policy
at level ``shape`` with ``capture_body`` on, so that the request and response tees do their work. At the
end of the session the plugin checks that events were written and that the middleware counted no
internal failure; a failure there fails the run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

_state: dict[str, Any] = {}

_POLICY = """
version = 1
id = "upstream"
[defaults]
level = "shape"
capture_body = true
"""


class _Bodies:
    """A body sink that keeps only sizes (the suites' responses are not stored)."""

    def __init__(self) -> None:
        self.count = 0

    def put(self, correlation_id: str, body: bytes, *, meta: Any) -> None:
        self.count += 1


def pytest_configure(config: pytest.Config) -> None:
    import auditlog
    from auditlog.policy import loads
    from store.keys import KeyRing, MasterKey

    root = Path(tempfile.mkdtemp(prefix="auditlog-upstream-"))
    handle = auditlog.configure(
        journal_dir=root / "journal", key=KeyRing(MasterKey.generate()), policy=loads(_POLICY), stdlib=False
    )
    _state.update(root=root, handle=handle, middlewares=[], bodies=_Bodies())
    _inject_starlette()
    _inject_flask()


def _inject_starlette() -> None:
    try:
        from starlette.applications import Starlette
    except ImportError:
        return
    from auditlog.integrations.asgi import AuditMiddleware

    build = Starlette.build_middleware_stack

    def build_middleware_stack(self: Any) -> Any:
        mw = AuditMiddleware(build(self), handle=_state["handle"], body_store=_state["bodies"])
        _state["middlewares"].append(mw)
        return mw

    Starlette.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _inject_flask() -> None:
    try:
        from flask import Flask
    except ImportError:
        return
    from auditlog.integrations.wsgi import AuditWSGIMiddleware

    wsgi_app = Flask.wsgi_app

    def audited_wsgi_app(self: Any, environ: Any, start_response: Any) -> Any:
        mw = self.__dict__.get("_auditlog_mw")
        if mw is None:
            mw = AuditWSGIMiddleware(
                lambda e, s: wsgi_app(self, e, s), handle=_state["handle"], body_store=_state["bodies"]
            )
            self.__dict__["_auditlog_mw"] = mw
            _state["middlewares"].append(mw)
        return mw(environ, start_response)

    Flask.wsgi_app = audited_wsgi_app  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    handle = _state.get("handle")
    if handle is None:
        return
    middlewares = _state["middlewares"]
    errors: dict[str, int] = {}
    for mw in middlewares:
        for reason, n in mw.stats.error_reasons.items():
            errors[reason] = errors.get(reason, 0) + n
    stats = handle.stats.as_dict()
    handle.shutdown()
    shutil.rmtree(_state["root"], ignore_errors=True)
    requests = sum(mw.stats.requests for mw in middlewares)
    print(
        f"\nauditlog_inject: {len(middlewares)} apps, {requests} requests, "
        f"{stats['written']} events written, {stats['dropped']} dropped, "
        f"middleware errors: {errors or 'none'}"
    )
    if errors or stats["dropped"] or (requests and not stats["written"]):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
