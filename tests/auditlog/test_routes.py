"""auditlog.integrations._routes: the indexed route lookup finds the template a scan of every route finds."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router, WebSocketRoute

from auditlog.integrations._routes import RouteIndex, find_routes, first_segment, template


async def endpoint(request: Any) -> None:  # never called: only matched
    raise AssertionError


class Anything(BaseRoute):
    """A custom route matching every path whose second character is 'a': the index must not skip it."""

    path = "/custom"

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        return (Match.FULL, {}) if scope["path"][1:2] == "a" else (Match.NONE, {})


SEGMENTS = ["orders", "users", "a", "static", "v1", "", "x.y", "ünï"]
PATHS = [
    "/orders/{order_id}",
    "/orders",
    "/users/{user_id:int}/cart",
    "/a/{rest:path}",
    "/",
    "/{lang}/about",
    "/{anything:path}",
    "/x.y/z",
    "/ünï",
    "/v1/users/{uid}",
]


def route() -> st.SearchStrategy[Any]:
    inner = st.lists(st.sampled_from(PATHS), max_size=3).map(lambda ps: [Route(p, endpoint) for p in ps])
    return st.one_of(
        st.builds(
            lambda p, m: Route(p, endpoint, methods=m),
            st.sampled_from(PATHS),
            st.sampled_from([None, ["POST"], ["GET"]]),
        ),
        st.builds(lambda p: WebSocketRoute(p, endpoint), st.sampled_from(PATHS)),
        st.builds(lambda p, r: Mount(p, routes=r), st.sampled_from(["/static", "/v1", "", "/{t}"]), inner),
        st.builds(lambda r: Host("{sub}.example.org", app=Mount("", routes=r)), inner),
        st.just(Anything()),
    )


CONCRETE = ["/orders/7", "/orders", "/users/3/cart", "/a/b/c", "/", "/de/about", "/x.y/z", "/ünï"]
CONCRETE.append("/static/x")


def request_path() -> st.SearchStrategy[str]:
    segment = st.one_of(st.sampled_from(SEGMENTS), st.text(alphabet="abz0-.", max_size=4))
    made_up = st.lists(segment, min_size=0, max_size=4).map(lambda s: "/" + "/".join(s))
    return st.one_of(st.sampled_from(CONCRETE + ["/v1" + p for p in CONCRETE]), made_up)


def scope_of(path: str, method: str, kind: str, root_path: str) -> dict[str, Any]:
    return {
        "type": kind,
        "path": path,
        "root_path": root_path,
        "method": method,
        "headers": [(b"host", b"shop.example.org")],
        "query_string": b"",
    }


class TestRouteIndex:
    @settings(max_examples=400, deadline=None)
    @given(
        routes=st.lists(route(), max_size=12),
        path=request_path(),
        method=st.sampled_from(["GET", "POST"]),
        kind=st.sampled_from(["http", "websocket"]),
        root_path=st.sampled_from(["", "", "/api"]),
    )
    def test_same_template_as_every_route(
        self, routes: list[Any], path: str, method: str, kind: str, root_path: str
    ) -> None:
        """For any route table and request, the index picks the template the full scan picks."""
        scope = scope_of(root_path + path, method, kind, root_path)
        assert template(routes, scope) == RouteIndex(routes).template(scope)

    def test_skips_routes_of_other_segments(self) -> None:
        """A path is matched only against the routes of its first segment and the unindexed ones."""
        orders, users = Route("/orders/{oid}", endpoint), Route("/users/{uid}", endpoint)
        lang, custom = Route("/{lang}/about", endpoint), Anything()
        index = RouteIndex([orders, users, lang, custom])
        assert [orders, lang, custom] == index.candidates(scope_of("/orders/1", "GET", "http", ""))
        assert [lang, custom] == index.candidates(scope_of("/nothing/here", "GET", "http", ""))
        assert [orders, users, lang, custom] == index.candidates(scope_of("/orders/1", "GET", "http", "/api"))

    @pytest.mark.parametrize(
        ("path", "root_path", "expected"),
        [
            ("/api/orders/1", "/api", "/orders/{oid}"),  # mounted app: matched below its root path
            ("/orders/1", "", "/orders/{oid}"),
            ("/static/app.js", "", "/static"),
            ("/de/about", "", "/{lang}/about"),
            ("/other", "", None),
        ],
    )
    def test_templates(self, path: str, root_path: str, expected: str | None) -> None:
        routes = [Route("/orders/{oid}", endpoint), Mount("/static", routes=[])]
        routes.append(Route("/{lang}/about", endpoint))
        scope = scope_of(path, "GET", "http", root_path)
        assert (expected, expected) == (template(routes, scope), RouteIndex(routes).template(scope))

    @pytest.mark.parametrize(
        ("route", "segment"),
        [
            (Route("/orders/{oid}", endpoint), "orders"),
            (Route("/", endpoint), ""),
            (Route("/x.y/z", endpoint), "x.y"),
            (Mount("/static", routes=[]), "static"),
            (Mount("", routes=[]), None),
            (Route("/{lang}/about", endpoint), None),
            (Host("api.example.org", app=Mount("", routes=[])), None),
            (Anything(), None),
        ],
    )
    def test_first_segment(self, route: Any, segment: str | None) -> None:
        from auditlog.integrations._routes import _regex_matchers

        assert segment == first_segment(route, _regex_matchers())

    def test_fastapi_routes_are_indexed(self) -> None:
        """FastAPI's routes are found through the app and indexed like Starlette's."""
        app = FastAPI()

        @app.get("/orders/{order_id}")
        def order(order_id: int) -> dict[str, int]:
            return {"id": order_id}

        @app.get("/users/{user_id}")
        def user(user_id: int) -> dict[str, int]:
            return {"id": user_id}

        routes = find_routes(app)
        assert routes is not None
        index = RouteIndex(routes)
        scope = scope_of("/orders/7", "GET", "http", "")
        assert "/orders/{order_id}" == index.template(scope)
        assert all(getattr(r, "path", None) != "/users/{user_id}" for r in index.candidates(scope))


class TestPathOnly:
    @pytest.mark.parametrize(
        ("routes", "expected"),
        [
            ([Route("/a/{x}", endpoint), WebSocketRoute("/ws", endpoint)], True),
            ([Mount("/v1", routes=[Route("/u/{x}", endpoint)])], True),
            ([Route("/a", endpoint), Host("{sub}.example.org", app=Mount("", routes=[]))], False),
            ([Mount("/v1", routes=[Mount("/in", routes=[Anything()])])], False),
            ([Anything()], False),
        ],
    )
    def test_path_only(self, routes: list[Any], expected: bool) -> None:
        """True only when every route, inside mounts too, matches by path and method alone."""
        assert expected is RouteIndex(routes).path_only


def _named(name: str) -> Any:
    async def serve(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(name)

    return serve


HOSTED = [
    Host("api.example.org", app=Mount("/api", routes=[Route("/v/{a}", _named("/api/v/{a}"))])),
    Host("r.example.org", app=Router(routes=[Route("/v/{c}", _named("/v/{c}"))])),
    Route("/v/{b}", _named("/v/{b}")),
    Route("/api/v/{d}", _named("/api/v/{d}")),
]


class TestHostRoutes:
    @pytest.mark.parametrize(
        ("host", "path", "expected"),
        [
            ("api.example.org", "/api/v/1", "/api/v/{a}"),
            ("api.example.org", "/v/1", None),  # the Host takes it, and nothing inside matches: 404
            ("other.example.org", "/api/v/1", "/api/v/{d}"),
            ("r.example.org", "/v/1", "/v/{c}"),
            ("other.example.org", "/v/1", "/v/{b}"),
        ],
    )
    def test_template_is_the_route_starlette_serves(self, host: str, path: str, expected: str | None) -> None:
        """Through a Host route (by host alone, no path of its own) to the route Starlette's router runs."""
        import asyncio

        from starlette.applications import Starlette

        scope = {**scope_of(path, "GET", "http", ""), "headers": [(b"host", host.encode())]}
        assert expected == RouteIndex(HOSTED).template(scope) == template(HOSTED, scope)
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        full = {**scope, "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1)}
        asyncio.run(Starlette(routes=HOSTED)(full, receive, send))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert (expected.encode() if expected else b"Not Found") == body
