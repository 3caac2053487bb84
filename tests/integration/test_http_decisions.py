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
        """HEAD on a GET route under required_scopes (enforced) or disabled is refused, the handler never runs."""
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
