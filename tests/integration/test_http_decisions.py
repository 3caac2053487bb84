"""Decisions the HTTP middleware makes before the app runs: methods as the framework routes them, and what
happens when the middleware itself fails (uvicorn and werkzeug on 127.0.0.1)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from auditlog.actor import Actor
from auditlog.integrations.asgi import AuditMiddleware
from auditlog.integrations.wsgi import AuditWSGIMiddleware
from auditlog.policy import loads

POLICY = loads(
    """
version = 1
id = "decisions"

[[rules]]
id = "admin"
match = { route = "/admin", method = "GET" }
required_scopes = ["admin"]

[[rules]]
id = "kill"
match = { route = "/off", method = "get" }
disabled = true

[[rules]]
id = "closed"
match = { route = "/closed" }
fail_mode = "closed"
"""
)
TIMEOUT = httpx.Timeout(10.0)


def starlette_app(ran: list[str]) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        ran.append(f"{request.method} {request.url.path}")
        return PlainTextResponse("ran")

    return Starlette(routes=[Route(p, endpoint) for p in ("/admin", "/off", "/closed", "/open")])


def flask_app(ran: list[str]) -> flask.Flask:
    app = flask.Flask("decisions")

    def endpoint() -> str:
        ran.append(f"{flask.request.method} {flask.request.path}")
        return "ran"

    for p in ("/admin", "/off", "/closed", "/open"):
        app.add_url_rule(p, p, endpoint)
    return app


class TestHeadAsGet:
    def test_policy_get_rule_matches_head(self) -> None:
        """A GET rule applies to HEAD (the GET handler serves it); methods compare case-insensitively."""
        assert "admin" == POLICY.match(route="/admin", method="HEAD").id
        assert "admin" == POLICY.match(route="/admin", method="head").id
        assert "kill" == POLICY.match(route="/off", method="HEAD").id
        assert "defaults" == POLICY.match(route="/admin", method="POST").id

    @pytest.mark.parametrize("server", ["asgi", "wsgi"])
    def test_head_refused_like_get(self, kit: SimpleNamespace, pipeline: Any, server: str) -> None:
        """HEAD on a GET route under required_scopes or disabled is refused; the handler never runs."""
        handle, _directory = pipeline
        ran: list[str] = []
        if server == "asgi":
            serve = kit.serve_asgi(AuditMiddleware(starlette_app(ran), handle=handle, enforce=True))
        else:
            app = flask_app(ran)
            app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle, enforce=True)  # type: ignore[method-assign]
            serve = kit.serve_wsgi(app)
        with serve as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            codes = [client.head(p).status_code for p in ("/admin", "/off")]
            assert 200 == client.head("/open").status_code
        assert [403, 503] == codes
        assert ["HEAD /open"] == ran


def _raising(*_: Any) -> Actor:
    raise RuntimeError("the auth layer broke")


class _Boom(Exception):
    pass


def _begin_raises(self: Any, *args: Any, **kw: Any) -> Any:
    raise _Boom


class TestInternalFailure:
    @pytest.mark.parametrize("server", ["asgi", "wsgi"])
    @pytest.mark.parametrize("enforce", [True, False])
    def test_begin_failure(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch, server: str, enforce: bool
    ) -> None:
        """The pre-request step raises: with enforce, 503 and counted; without, served and an
        ``audit.failed`` event (error type only) is journaled."""
        handle, directory = pipeline
        ran: list[str] = []
        if server == "asgi":
            mw: Any = AuditMiddleware(starlette_app(ran), handle=handle, enforce=enforce)
            serve = kit.serve_asgi(mw)
        else:
            app = flask_app(ran)
            mw = app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle, enforce=enforce)  # type: ignore[method-assign]
            serve = kit.serve_wsgi(app)
        monkeypatch.setattr(type(mw), "_begin", _begin_raises)
        with serve as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            codes = [client.get(p).status_code for p in ("/admin", "/open")]
        handle.flush()
        failed = kit.events(directory, "audit.failed")
        assert 2 == len(failed)
        assert {"_Boom"} == {e["outcome"]["error_type"] for e in failed}
        assert "the auth layer" not in str(failed)
        if enforce:
            assert ([503, 503], []) == (codes, ran)
            assert 2 == mw.stats.refused
        else:
            assert ([200, 200], ["GET /admin", "GET /open"]) == (codes, ran)
        assert 2 == mw.stats.errors

    @pytest.mark.parametrize("server", ["asgi", "wsgi"])
    def test_closed_rule_refuses_on_failure(
        self, kit: SimpleNamespace, pipeline: Any, monkeypatch: pytest.MonkeyPatch, server: str
    ) -> None:
        """Without enforce, a failure on a fail_mode = "closed" route refuses (503); an open route serves."""
        handle, _directory = pipeline
        ran: list[str] = []
        if server == "asgi":
            mw: Any = AuditMiddleware(starlette_app(ran), handle=handle, actor=_raising)
            serve = kit.serve_asgi(mw)
        else:
            app = flask_app(ran)
            mw = app.wsgi_app = AuditWSGIMiddleware(app.wsgi_app, handle=handle, actor=_raising)  # type: ignore[method-assign]
            serve = kit.serve_wsgi(app)
        monkeypatch.setattr(type(mw), "_begin", _begin_raises)
        with serve as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            codes = [client.get(p).status_code for p in ("/closed", "/open")]
        assert ([503, 200], ["GET /open"]) == (codes, ran)
