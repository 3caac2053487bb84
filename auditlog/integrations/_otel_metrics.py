"""OpenTelemetry metrics, redacted at the source: views that keep only low-cardinality, request-free keys.

Metric attributes are aggregation keys: the SDK keeps one series per distinct attribute set in memory and
exports each. The HTTP instrumentations put request data there (``http.server_name`` and ``http.host``
from the ``Host`` header, ``http.target`` in some versions), so a token in a Host header or a path becomes
a series. A :class:`~opentelemetry.sdk.metrics.view.View` with ``attribute_keys`` drops every other key
*before* aggregation, so a dropped value is neither stored nor exported::

    from auditlog.integrations.otel import redacting_views
    provider = MeterProvider(metric_readers=[reader], views=redacting_views())

The kept keys (:data:`METRIC_ATTRIBUTES`) hold values the instrumentation normalises (methods outside
the known set become ``_OTHER``), numbers, or the application's own route templates. A view cannot
rewrite a value, so a key whose value a request controls is never on the list. The views match every
instrument of every meter; an application's own instruments keep their own keys through ``extra_keys``.
"""

from __future__ import annotations

from collections.abc import Iterable

try:
    from opentelemetry.sdk.metrics.view import View
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("install auditlog-pipeline[otel] to use auditlog.integrations.otel") from exc

from processors.shapes import emittable_key

__all__ = ["METRIC_ATTRIBUTES", "redacting_views"]

METRIC_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # HTTP, stable semantic conventions
        "http.request.method",
        "http.response.status_code",
        "http.route",
        "url.scheme",
        "server.port",
        "network.protocol.name",
        "network.protocol.version",
        "error.type",
        # HTTP, the conventions before 1.21
        "http.method",
        "http.status_code",
        "http.scheme",
        "http.flavor",
        "net.host.port",
        # RPC and MCP
        "rpc.system",
        "rpc.service",
        "rpc.grpc.status_code",
        "mcp.method.name",
    }
)


def redacting_views(*, extra_keys: Iterable[str] = ()) -> list[View]:
    """Views for a ``MeterProvider`` that keep only :data:`METRIC_ATTRIBUTES` (and ``extra_keys``).

    Args:
        extra_keys: further attribute keys to keep, for the application's own instruments whose values
            it controls (identifier-like names only).

    Returns:
        The views to pass as ``MeterProvider(views=...)``.

    Raises:
        ValueError: an extra key is not an identifier-like name.
    """
    extra = set()
    for key in extra_keys:
        if type(key) is not str or not emittable_key(key):
            raise ValueError("extra_keys: expected identifier-like attribute names")
        extra.add(key)
    return [View(instrument_name="*", attribute_keys=set(METRIC_ATTRIBUTES) | extra)]
