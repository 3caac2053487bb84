"""Correlation ids from structlog context variables or the current OpenTelemetry span."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from processors.correlation import add_correlation_ids, bind_correlation_id, new_correlation_id

# A local provider: the global one is never set by these tests.
TRACER = TracerProvider().get_tracer("tests.processors")
ROOT = Path(__file__).resolve().parents[2]


def run(event: dict[str, object]) -> dict[str, object]:
    return dict(add_correlation_ids(None, "info", event))


class TestAddCorrelationIds:
    def test_bound_id_is_kept(self) -> None:
        """A valid id from structlog's context variables passes unchanged."""
        with bind_correlation_id("req-42.a:b"):
            event = structlog.contextvars.merge_contextvars(None, "info", {"event": "x"})
            assert {"event": "x", "correlation_id": "req-42.a:b"} == run(dict(event))

    @pytest.mark.parametrize("bad", ["has space", "", "x" * 129, "canary.user+7731@example.org", 42, b"id"])
    def test_invalid_id_is_replaced(self, bad: object) -> None:
        """A malformed or non-str id becomes <invalid>, never echoed."""
        assert {"correlation_id": "<invalid>"} == run({"correlation_id": bad})

    def test_no_id_and_no_span(self) -> None:
        """Outside a span and without a bound id, nothing is added."""
        assert {"event": "x"} == run({"event": "x"})

    def test_ids_from_the_current_span(self) -> None:
        """Inside a recording span, correlation_id and trace_id are the trace id, span_id the span id."""
        with TRACER.start_as_current_span("op") as span:
            ctx = span.get_span_context()
            event = run({"event": "x"})
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        assert {"event": "x", "correlation_id": trace_id, "trace_id": trace_id, "span_id": span_id} == event

    def test_bound_id_wins_over_span(self) -> None:
        """An explicitly bound id is not replaced by the trace id."""
        with TRACER.start_as_current_span("op"):
            assert {"correlation_id": "mine"} == run({"correlation_id": "mine"})

    def test_opentelemetry_is_imported_lazily(self) -> None:
        """Importing processors does not import opentelemetry; the first event does."""
        code = (
            "import sys, processors\n"
            "before = 'opentelemetry.trace' in sys.modules\n"
            "processors.add_correlation_ids(None, 'info', {})\n"
            "print(before, 'opentelemetry.trace' in sys.modules)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        assert "False True" == proc.stdout.strip()


class TestHelpers:
    def test_new_correlation_id(self) -> None:
        """New ids are 32 lowercase hex chars and unique."""
        ids = {new_correlation_id() for _ in range(100)}
        assert (100, True) == (
            len(ids),
            all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids),
        )

    def test_bind_generates_and_restores(self) -> None:
        """bind_correlation_id() makes an id, binds it, and restores the previous binding on exit."""
        with bind_correlation_id("outer"):
            with bind_correlation_id() as inner:
                assert inner == structlog.contextvars.get_contextvars()["correlation_id"]
            assert "outer" == structlog.contextvars.get_contextvars()["correlation_id"]
        assert "correlation_id" not in structlog.contextvars.get_contextvars()

    def test_bind_rejects_malformed(self) -> None:
        """A malformed id is a caller error."""
        with pytest.raises(ValueError), bind_correlation_id("not valid"):
            pass
