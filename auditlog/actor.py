"""Who made a request: the actor, read only from *verified* auth context.

The middleware never reads an actor from the request body, the query string or a header: an
authentication layer that ran before it (Starlette's ``AuthenticationMiddleware``, the MCP SDK's bearer
auth, a WSGI server's ``REMOTE_USER``, the app's own auth code) has put what it verified into the
request context, and a resolver reads it from there::

    scope["user"]     a Starlette ``BaseUser`` (``identity``), or the MCP SDK's ``AuthenticatedUser``
                      (its ``access_token``: ``client_id``, ``scopes``, ``subject``, ``claims``)
    scope["auth"]     Starlette ``AuthCredentials`` (``scopes``), or a mapping of verified token claims
    environ           ``auditlog.actor`` (an :class:`Actor`), ``auditlog.claims`` (a claims mapping) or
                      ``REMOTE_USER`` (WSGI; set by the server or by app code after it verified a login)

Claims are read with the usual names: ``sub``; ``tenant`` / ``tid`` / ``org_id``; ``client_id`` / ``azp``
/ ``cid``; ``scope`` (space-separated) / ``scp`` / ``scopes``.

A custom resolver is any callable ``(scope_or_environ) -> Actor | None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import orjson

from processors import Scanner

__all__ = [
    "ANONYMOUS",
    "Actor",
    "ActorResolver",
    "actor_from_claims",
    "actor_from_token",
    "default_actor",
    "wsgi_actor",
]

_T = TypeVar("_T")


def _state(obj: Any) -> list[Any]:
    """Pickle / copy state of a frozen slots dataclass with kept JSON: its fields, the kept JSON left out."""
    return [None if f.name == "_json" else getattr(obj, f.name) for f in fields(obj)]


def _set_state(obj: Any, state: list[Any]) -> None:
    for f, value in zip(fields(obj), state, strict=True):
        object.__setattr__(obj, f.name, value)


def _pickles_without_kept_json(cls: type[_T]) -> type[_T]:
    """Outside ``@dataclass``: copies and pickles carry the fields, not the kept JSON (an
    ``orjson.Fragment``, which does not pickle); the copy serializes its own on first use."""
    setattr(cls, "__getstate__", _state)  # noqa: B010 - replaces the dataclass's own, after it
    setattr(cls, "__setstate__", _set_state)  # noqa: B010
    return cls


_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+@=|-]{0,127}", re.ASCII)
_MAX_SCOPES = 64


@_pickles_without_kept_json
@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """The verified caller: subject, tenant, OAuth client id and granted scopes."""

    subject: str | None = None
    tenant: str | None = None
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    _json: orjson.Fragment | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def authenticated(self) -> bool:
        """Whether any verified identity is known."""
        return self.subject is not None or self.client_id is not None

    def as_dict(self) -> dict[str, Any]:
        """The ``actor`` field of an audit event."""
        return {
            "subject": self.subject,
            "tenant": self.tenant,
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
        }

    def as_json(self) -> orjson.Fragment:
        """:meth:`as_dict` as JSON, serialized on first use and kept (an actor never changes)."""
        return _kept_json(self)

    def redacted(self, scanner: Scanner, fingerprint: Callable[[str], str] | None = None) -> Actor:
        """A copy safe to journal: an identifier that is not label-like, or that the scanner flags (an
        email address as subject, say), is replaced by its fingerprint (or dropped without one)."""
        if self.subject is None and self.tenant is None and self.client_id is None and not self.scopes:
            return self  # nothing to redact (the anonymous actor)
        subject = _safe(self.subject, scanner, fingerprint)
        tenant = _safe(self.tenant, scanner, fingerprint)
        client_id = _safe(self.client_id, scanner, fingerprint)
        scopes = frozenset(s for s in self.scopes if _safe(s, scanner, None) == s)
        if (subject, tenant, client_id, scopes) == (self.subject, self.tenant, self.client_id, self.scopes):
            return self
        return Actor(subject=subject, tenant=tenant, client_id=client_id, scopes=scopes)


def _kept_json(obj: Any) -> orjson.Fragment:
    """``obj.as_dict()`` as JSON, kept in ``obj._json`` (a frozen dataclass's non-compared field) after the
    first call: for values that never change and are journaled often (actors, decisions)."""
    out: orjson.Fragment | None = obj._json
    if out is None:
        out = orjson.Fragment(orjson.dumps(obj.as_dict()))
        object.__setattr__(obj, "_json", out)
    return out


ANONYMOUS = Actor()
"""No verified identity: no subject, no tenant, no client, no scopes."""

ActorResolver = Callable[[Any], "Actor | None"]
"""Reads the actor from an ASGI scope, a WSGI environ or an MCP request context."""


def _safe(value: str | None, scanner: Scanner, fingerprint: Callable[[str], str] | None) -> str | None:
    if value is None:
        return None
    if _LABEL.fullmatch(value) and not scanner.findings(value):
        return value
    return fingerprint(value) if fingerprint is not None else None


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value[:256]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _scopes(value: object) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[object] = value.split()
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return frozenset()
    out = [s for s in items if isinstance(s, str) and 0 < len(s) <= 128]
    return frozenset(out[:_MAX_SCOPES])


def _first(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = _text(claims.get(name))
        if value is not None:
            return value
    return None


def actor_from_claims(claims: Mapping[str, Any]) -> Actor:
    """An actor from verified token claims (``sub``, ``tenant``/``tid``/``org_id``, ``client_id``/``azp``,
    ``scope``/``scp``/``scopes``)."""
    scopes = frozenset[str]()
    for name in ("scope", "scp", "scopes"):
        if name in claims:
            scopes = _scopes(claims[name])
            break
    return Actor(
        subject=_first(claims, "sub", "subject"),
        tenant=_first(claims, "tenant", "tid", "org_id", "tenant_id"),
        client_id=_first(claims, "client_id", "azp", "cid"),
        scopes=scopes,
    )


def actor_from_token(token: Any) -> Actor:
    """An actor from a verified MCP ``AccessToken`` (``client_id``, ``scopes``, ``subject``, ``claims``)."""
    claims = getattr(token, "claims", None)
    base = actor_from_claims(claims) if isinstance(claims, Mapping) else ANONYMOUS
    subject = _text(getattr(token, "subject", None)) or base.subject
    client_id = _text(getattr(token, "client_id", None)) or base.client_id
    scopes = _scopes(getattr(token, "scopes", None)) or base.scopes
    return Actor(subject=subject, tenant=base.tenant, client_id=client_id, scopes=scopes)


def _from_user(user: object) -> Actor | None:
    token = getattr(user, "access_token", None)
    if token is not None:
        return actor_from_token(token)
    if isinstance(user, Mapping):
        return actor_from_claims(user)
    try:
        if not getattr(user, "is_authenticated", False):
            return None
        return Actor(subject=_text(getattr(user, "identity", None)) or _text(getattr(user, "username", None)))
    except Exception:  # a user object whose properties raise is not an identity
        return None


def default_actor(scope: Mapping[str, Any]) -> Actor:
    """The default resolver over an ASGI scope: ``scope["user"]`` and ``scope["auth"]`` (see the module
    docstring). Returns :data:`ANONYMOUS` when neither holds a verified identity."""
    actor = _from_user(scope["user"]) if "user" in scope else None
    auth = scope.get("auth")
    if isinstance(auth, Mapping):
        claims = auth.get("claims", auth)
        from_claims = actor_from_claims(claims) if isinstance(claims, Mapping) else ANONYMOUS
        if actor is None:
            return from_claims
        return Actor(
            subject=actor.subject or from_claims.subject,
            tenant=actor.tenant or from_claims.tenant,
            client_id=actor.client_id or from_claims.client_id,
            scopes=actor.scopes or from_claims.scopes,
        )
    if actor is None:
        return ANONYMOUS
    held = getattr(auth, "scopes", None) if auth is not None else None
    if held is not None and not actor.scopes:
        return Actor(
            subject=actor.subject, tenant=actor.tenant, client_id=actor.client_id, scopes=_scopes(held)
        )
    return actor


def wsgi_actor(environ: Mapping[str, Any]) -> Actor:
    """The default resolver over a WSGI environ: ``auditlog.actor``, ``auditlog.claims``, ``REMOTE_USER``."""
    given = environ.get("auditlog.actor")
    if isinstance(given, Actor):
        return given
    claims = environ.get("auditlog.claims")
    if isinstance(claims, Mapping):
        return actor_from_claims(claims)
    user = _text(environ.get("REMOTE_USER"))
    return Actor(subject=user) if user is not None else ANONYMOUS
