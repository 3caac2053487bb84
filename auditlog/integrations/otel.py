"""OpenTelemetry, redacted at the source: processors that hand a redacted copy to the real processor.

Wrap the processor that feeds your exporter; the exporter, the batch queue and the collector only ever
see the copy::

    provider.add_span_processor(RedactingSpanProcessor(BatchSpanProcessor(OTLPSpanExporter())))
    logger_provider.add_log_record_processor(RedactingLogRecordProcessor(BatchLogRecordProcessor(exporter)))
    meter_provider = MeterProvider(metric_readers=[reader], views=redacting_views())  # metrics: see below

Ended spans are immutable, so :class:`RedactingSpanProcessor` builds a new ``ReadableSpan`` for the inner
processor; the live span (and any other processor on the provider) is untouched, and the inner processor's
``on_start`` is never called with the live span. What the copy holds:

- **Attributes**: the keys in :data:`ALLOWED_ATTRIBUTES` (and under :data:`ALLOWED_PREFIXES`) keep their
  values, strings after the scanner; :data:`URL_ATTRIBUTES` are scrubbed (percent-decoded, query values
  dropped with keys kept, id-like path segments collapsed, userinfo and fragment dropped); every other value
  becomes its shape, as compact JSON (``'{"len":12,"t":"str"}'``). A key that is not identifier-like, or that
  the secret scanner flags, is never emitted: ``auditlog.hidden_keys`` counts them.
- **Names** (span, event, log event): each word goes through :func:`~.urls.collapse_path` (numbers,
  UUIDs, emails and tokens become ``{n}``, ``{uuid}``, ``{email}``, ``{token}``), so ``GET /users/42`` is
  ``GET /users/{n}`` and ``MCP handle tools/call <anything>`` keeps only a word-like tool name. A word
  that is a URL path (it starts with ``/``), like URL-valued attributes, keeps only route literals under
  the policy's ``[paths]`` (``GET /users/alice`` is ``GET /users/{id}``; see :class:`~.urls.PathWords`).
- **Exceptions**: ``exception.message`` and the status description are scanned; ``exception.stacktrace``
  is reduced to its frames (``File "...", line N, in f``) and exception type names, without source lines,
  locals or messages (``stacktrace="drop"`` removes it).
- **Untouched**: trace and span ids (a span joins its audit event on the trace id), parent, kind, times,
  status code, the resource and the instrumentation scope (configured by the operator, not by requests).

:class:`RedactingLogRecordProcessor` does the same for the logs SDK: attributes (``extra=`` fields arrive
there through ``LoggingHandler``) as above; a string body is scanned (``body="shape"`` shapes it instead:
the scanner cannot find names without NER, and an interpolated message carries its arguments); any other
body is shaped; the record's exception object is not passed on.

A failure while redacting never reaches the application and never lets the original through: the span or
record is dropped and counted in :attr:`RedactingSpanProcessor.dropped`.

Metrics: :func:`redacting_views` keeps only the attribute keys in :data:`METRIC_ATTRIBUTES` (method,
status, scheme, route template, port...) before aggregation; the Host-derived ``http.server_name`` and
``http.host``, targets and URLs are dropped (``auditlog/integrations/_otel_metrics.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from auditlog.integrations._otel_metrics import METRIC_ATTRIBUTES, redacting_views
from auditlog.integrations._otel_redact import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_PREFIXES,
    URL_ATTRIBUTES,
    Redactor,
    redact_url,
    shape_json,
)
from auditlog.policy import Policy
from processors import Scanner, SecretScanner

try:
    from opentelemetry import trace as trace_api
    from opentelemetry._logs import LogRecord
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.context import Context
    from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.util.types import AnyValue
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("install auditlog-pipeline[otel] to use auditlog.integrations.otel") from exc

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_PREFIXES",
    "METRIC_ATTRIBUTES",
    "URL_ATTRIBUTES",
    "RedactingLogRecordProcessor",
    "RedactingSpanProcessor",
    "redact_url",
    "redacting_views",
]


class _RedactedSpan(ReadableSpan):
    """A ``ReadableSpan`` that reports the original span's dropped counts."""

    def __init__(self, dropped: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._auditlog_dropped = dropped

    @property
    def dropped_attributes(self) -> int:
        return self._auditlog_dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._auditlog_dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._auditlog_dropped[2]


class RedactingSpanProcessor(SpanProcessor):
    """Hands a redacted copy of every ended span to ``inner`` (see the module docstring for the rules).

    Args:
        inner: the processor feeding the exporter (``BatchSpanProcessor``, ``SimpleSpanProcessor``).
        scanner: finds secrets and personal data in names, messages and allowed values
            (default: :class:`processors.SecretScanner`; a :class:`processors.pii.PIIScanner` works too).
        allow: attribute keys whose values pass, after the scanner (default :data:`ALLOWED_ATTRIBUTES`).
        allow_prefixes: key prefixes allowed the same way (default :data:`ALLOWED_PREFIXES`).
        url_attributes: URL-valued keys and how to scrub them (default :data:`URL_ATTRIBUTES`).
        stacktrace: ``"frames"`` keeps frames and exception types, ``"drop"`` removes stack traces.
        policy: decides which URL path segments stay (``[paths]``: route literals by default); default:
            the current handle's policy when the span ends.

    Raises:
        ValueError: ``stacktrace`` or a ``url_attributes`` value is not one of the choices.
    """

    def __init__(
        self,
        inner: SpanProcessor,
        *,
        scanner: Scanner | None = None,
        allow: Iterable[str] = ALLOWED_ATTRIBUTES,
        allow_prefixes: Iterable[str] = ALLOWED_PREFIXES,
        url_attributes: Mapping[str, str] = URL_ATTRIBUTES,
        stacktrace: Literal["frames", "drop"] = "frames",
        policy: Policy | None = None,
    ) -> None:
        self._inner = inner
        self._redact = Redactor(
            scanner or SecretScanner(), allow, allow_prefixes, url_attributes, stacktrace, policy
        )
        self.redacted = 0
        self.dropped = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing: the inner processor never sees the live, unredacted span."""

    def on_end(self, span: ReadableSpan) -> None:
        try:
            copy = self.redact(span)
        except Exception:  # never into the application, never the original
            self.dropped += 1
            return
        self.redacted += 1
        self._inner.on_end(copy)

    def redact(self, span: ReadableSpan) -> ReadableSpan:
        """The redacted copy of ``span`` (what ``inner`` receives)."""
        r = self._redact
        status = span.status
        if status.status_code is not StatusCode.ERROR:
            r.learn_ran(span.attributes)
        description = status.description
        if status.status_code is StatusCode.ERROR and description:
            status = Status(StatusCode.ERROR, r.text(description))
        elif description:
            status = Status(status.status_code)
        links = [trace_api.Link(link.context, r.attributes(link.attributes)) for link in span.links]
        return _RedactedSpan(
            (span.dropped_attributes, span.dropped_events, span.dropped_links),
            name=r.name(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=r.attributes(span.attributes),
            events=[r.event(e) for e in span.events],
            links=links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RedactingLogRecordProcessor(LogRecordProcessor):
    """Hands a redacted copy of every log record to ``inner`` (see the module docstring for the rules).

    Args:
        inner: the processor feeding the exporter (``BatchLogRecordProcessor``...).
        scanner: as for :class:`RedactingSpanProcessor`.
        allow: as for :class:`RedactingSpanProcessor`.
        allow_prefixes: as for :class:`RedactingSpanProcessor`.
        url_attributes: as for :class:`RedactingSpanProcessor`.
        stacktrace: as for :class:`RedactingSpanProcessor`.
        policy: as for :class:`RedactingSpanProcessor`.
        body: ``"scan"`` passes a string body through the scanner, ``"shape"`` replaces it by its shape.

    Raises:
        ValueError: ``body``, ``stacktrace`` or a ``url_attributes`` value is not one of the choices.
    """

    def __init__(
        self,
        inner: LogRecordProcessor,
        *,
        scanner: Scanner | None = None,
        allow: Iterable[str] = ALLOWED_ATTRIBUTES,
        allow_prefixes: Iterable[str] = ALLOWED_PREFIXES,
        url_attributes: Mapping[str, str] = URL_ATTRIBUTES,
        stacktrace: Literal["frames", "drop"] = "frames",
        body: Literal["scan", "shape"] = "scan",
        policy: Policy | None = None,
    ) -> None:
        if body not in ("scan", "shape"):
            raise ValueError("body must be 'scan' or 'shape'")
        self._inner = inner
        self._redact = Redactor(
            scanner or SecretScanner(), allow, allow_prefixes, url_attributes, stacktrace, policy
        )
        self._body = body
        self.redacted = 0
        self.dropped = 0

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            copy = self.redact(log_record)
        except Exception:  # never into the application, never the original
            self.dropped += 1
            return
        self.redacted += 1
        self._inner.on_emit(copy)

    def redact(self, log_record: ReadWriteLogRecord) -> ReadWriteLogRecord:
        """The redacted copy of ``log_record`` (what ``inner`` receives)."""
        r = self._redact
        src = log_record.log_record
        attrs = r.attributes(src.attributes)
        if attrs.get("exception.stacktrace", "") is None:
            del attrs["exception.stacktrace"]
        record = LogRecord(
            timestamp=src.timestamp,
            observed_timestamp=src.observed_timestamp,
            context=src.context,
            severity_text=src.severity_text,
            severity_number=src.severity_number,
            body=self._redact_body(src.body),
            attributes=attrs,
            event_name=r.name(src.event_name) if src.event_name else src.event_name,
        )
        record.trace_id, record.span_id, record.trace_flags = src.trace_id, src.span_id, src.trace_flags
        copy = ReadWriteLogRecord(
            log_record=record,
            resource=log_record.resource,
            instrumentation_scope=log_record.instrumentation_scope,
            limits=log_record.limits,
        )
        dropped = log_record.dropped_attributes
        if dropped and isinstance(copy.log_record.attributes, BoundedAttributes):
            copy.log_record.attributes.dropped = dropped
        return copy

    def _redact_body(self, body: AnyValue) -> AnyValue:
        if body is None:
            return None
        if type(body) is str and self._body == "scan":
            return self._redact.text(body)
        return shape_json(body)

    def enabled(self, **kwargs: Any) -> bool:
        return bool(self._inner.enabled(**kwargs))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))
