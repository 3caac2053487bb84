"""The route template of a request before the app runs: Starlette/FastAPI routes, indexed (private).

The middleware decides a request (policy rule, required scopes, kill switch) before the app runs, so it
finds the route itself, with each route's own ``matches``, as the router will. Starlette's router tries
its routes in order; so did this module, which doubled the routing work of an app with many routes.

:class:`RouteIndex` keeps the order but skips routes that cannot match: a route whose regex starts with a
literal first path segment (``/orders/{id}``: ``orders``) can match only paths with that first segment. A
route is indexed only when its class matches by that regex alone (Starlette's ``Route``, ``Mount`` and
``WebSocketRoute``; FastAPI's routes before FastAPI's router has run, which is where the middleware
stands); every other route (``Host``, a custom ``BaseRoute``, a parameter or regex in the first segment,
``Mount("")``) is a candidate for every path. A scope with a ``root_path`` (the app is mounted) is matched
against every route, as before. Inside a ``Mount`` the inner routes are tried in order. A ``Host`` route
matches by the ``host`` header alone, as Starlette's does: once it matches, the template is the one inside
it that serves the path, or none (Starlette answers 404 there, whatever routes come after).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["RouteIndex", "find_routes", "template"]

Scope = MutableMapping[str, Any]


def find_routes(app: object) -> list[Any] | None:
    """The route list of a Starlette/FastAPI router found by following ``.app`` through middleware."""
    node = app
    for _ in range(16):
        routes = getattr(node, "routes", None)
        if isinstance(routes, list):
            return routes
        router = getattr(node, "router", None)
        if router is not None and isinstance(getattr(router, "routes", None), list):
            return list(router.routes)
        node = getattr(node, "app", None)
        if node is None:
            return None
    return None


def template(routes: list[Any], scope: Scope, prefix: str = "", depth: int = 0) -> str | None:
    """The route template that will serve ``scope`` (Starlette ``Route.matches``), if any."""
    partial: str | None = None
    for route in routes:
        matches = getattr(route, "matches", None)
        path = getattr(route, "path", None)
        if matches is not None and path is None and isinstance(getattr(route, "host", None), str):
            match, child = matches(scope)  # a Host route matches by host alone and adds no path
            if getattr(match, "name", "") == "FULL":
                return _host_template(route, {**scope, **child}, prefix, depth)  # served inside, or 404
            continue
        if matches is None or not isinstance(path, str):
            continue
        match, child = matches(scope)
        kind = getattr(match, "name", "")
        if kind == "FULL":
            inner = getattr(route, "routes", None)
            if isinstance(inner, list) and inner and depth < 4:
                sub = template(inner, {**scope, **child}, prefix + path, depth + 1)
                return sub if sub is not None else prefix + path
            return prefix + path
        if kind == "PARTIAL" and partial is None:
            partial = prefix + path
    return partial


def _host_template(route: Any, scope: Scope, prefix: str, depth: int) -> str | None:
    """The template inside a Starlette ``Host`` route whose host matched ``scope`` (None: it answers 404)."""
    if depth >= 4:
        return None
    app = getattr(route, "app", None)
    if isinstance(getattr(app, "path", None), str) and hasattr(app, "matches"):
        inner: object = [app]  # a Mount: its own path prefixes the routes inside it
    else:
        inner = getattr(app, "routes", None)  # a Router
    if not isinstance(inner, list):
        return None
    return template(inner, scope, prefix, depth + 1)


def _regex_matchers() -> frozenset[Any]:
    """The ``matches`` functions that decide by the route's ``path_regex`` over the path alone."""
    found: set[Any] = set()
    try:
        from starlette.routing import Mount, Route, WebSocketRoute
    except ImportError:  # not a Starlette app: nothing is indexed
        return frozenset()
    found.update((Route.matches, Mount.matches, WebSocketRoute.matches))
    try:  # FastAPI's own matches defer to Starlette's until its router has put "fastapi" in the scope
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:
        pass
    else:
        found.update((APIRoute.matches, APIWebSocketRoute.matches))
    return frozenset(found)


def first_segment(route: object, matchers: frozenset[Any]) -> str | None:
    """The literal first path segment every match of ``route`` starts with, or None (any path may match)."""
    if getattr(type(route), "matches", None) not in matchers:
        return None
    path, regex = getattr(route, "path", None), getattr(route, "path_regex", None)
    if type(path) is not str or not path.startswith("/") or not isinstance(regex, re.Pattern):
        return None
    segment = path[1:].split("/", 1)[0]
    if "{" in segment:
        return None
    literal = "^/" + re.escape(segment)
    pattern = regex.pattern
    if pattern != literal + "$" and not pattern.startswith(literal + "/"):
        return None  # compiled some other way: do not guess
    return segment


def _path_only(routes: list[Any], matchers: frozenset[Any], depth: int = 0) -> bool:
    for route in routes:
        if getattr(type(route), "matches", None) not in matchers:
            return False
        inner = getattr(route, "routes", None)
        if isinstance(inner, list) and inner and (depth >= 4 or not _path_only(inner, matchers, depth + 1)):
            return False
    return True


class RouteIndex:
    """The routes that may match a path, in the router's order (see the module docstring)."""

    __slots__ = ("_any", "_by_segment", "path_only", "routes")

    path_only: bool
    """Whether every route (inside mounts too) matches by path and method alone, so that the template of
    a request follows from its method, path and root path (no ``Host`` route, no custom ``matches``)."""

    def __init__(self, routes: list[Any]) -> None:
        self.routes = routes
        matchers = _regex_matchers()
        keyed = [(first_segment(route, matchers), route) for route in routes]
        segments = {seg for seg, _ in keyed if seg is not None}
        self._any = [route for seg, route in keyed if seg is None]
        self._by_segment = {s: [route for seg, route in keyed if seg is None or seg == s] for s in segments}
        self.path_only = _path_only(routes, matchers)

    def candidates(self, scope: Scope) -> list[Any]:
        """Every route that may serve ``scope``, in order; all of them when the scope is unusual."""
        path = scope.get("path")
        if scope.get("root_path") or "fastapi" in scope or type(path) is not str or path[:1] != "/":
            return self.routes
        end = path.find("/", 1)
        return self._by_segment.get(path[1:] if end < 0 else path[1:end], self._any)

    def template(self, scope: Scope) -> str | None:
        """The route template that will serve ``scope``, as :func:`template` over every route finds it."""
        return template(self.candidates(scope), scope)
