"""auditlog.integrations.otel.redacting_views behind the real `opentelemetry-instrumentation-asgi`.

The installed ``OpenTelemetryMiddleware`` records ``http.server.*`` metrics for a small ASGI app served on
127.0.0.1. Two meter providers, one per server: with :func:`redacting_views` (what must hold no canary)
and without (the control: it proves the canaries reach the instrumentation's metric attributes, so the
check can fail). Each canary is planted in the path, the query, the ``Host`` header (the instrumentation
reports it as ``http.server_name``), the user agent and a custom header. Both semantic-convention modes run.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from auditlog.integrations.otel import METRIC_ATTRIBUTES, redacting_views
from tests._support import semconv_mode, serve_uvicorn
from tests.conftest import Canaries

Scope = MutableMapping[str, Any]


async def app(
    scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def attributes(reader: InMemoryMetricReader) -> list[tuple[str, dict[str, Any]]]:
    """Every data point's (metric name, attributes) the reader collected."""
    out = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out += [(metric.name, dict(dp.attributes or {})) for dp in metric.data.data_points]
    return out


@pytest.fixture(params=["default", "http/dup"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The instrumentation's semantic-convention mode (it reads the variable once per process)."""
    semconv_mode(monkeypatch, request.param)
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "disabled", True)
    return str(request.param)


def plant(url: str, canaries: Canaries) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        for name, value in canaries.values.items():
            quoted = urllib.parse.quote(value, safe="")
            header = value.replace("\n", " ").encode()
            headers = [(b"host", header), (b"user-agent", b"curl/8.5 " + header), (b"x-canary", header)]
            r = client.get(f"/items/{quoted}?q={quoted}&{quoted}=1", headers=headers)
            assert 200 == r.status_code, name


class TestRedactingViews:
    def test_no_canary_reaches_the_metrics(self, mode: str, canaries: Canaries) -> None:
        """The raw provider's attributes carry the canaries; the redacted one's carry none, nor other keys."""
        import opentelemetry.instrumentation.asgi as asgi

        redacted, raw = InMemoryMetricReader(), InMemoryMetricReader()
        for reader, views in ((redacted, redacting_views()), (raw, [])):
            provider = MeterProvider(metric_readers=[reader], views=views)
            try:
                with serve_uvicorn(asgi.OpenTelemetryMiddleware(app, meter_provider=provider)) as url:
                    plant(url, canaries)
            finally:
                provider.force_flush()
        kept, control = attributes(redacted), attributes(raw)
        assert canaries.leaks(repr(control)), "the control saw no canary: the check could not fail"
        assert [] == canaries.leaks(repr(kept))
        assert {name for name, _ in control} == {name for name, _ in kept}
        assert set().union(*(a.keys() for _, a in kept)) <= METRIC_ATTRIBUTES
        statuses = {a.get("http.status_code", a.get("http.response.status_code")) for _, a in kept}
        assert {200} <= statuses

    def test_extra_keys(self) -> None:
        """An application keeps its own identifier-like keys; anything else is refused."""
        (view,) = redacting_views(extra_keys=["app.tier"])
        assert METRIC_ATTRIBUTES | {"app.tier"} == view._attribute_keys
        with pytest.raises(ValueError, match="extra_keys"):
            redacting_views(extra_keys=["sk_live_4eC39HqLyjWDarjtT1zdp7dc"])
