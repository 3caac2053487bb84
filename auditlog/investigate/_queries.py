"""The SQL of :class:`~auditlog.investigate.Investigation`'s named queries, over the ``events`` view.

Library SQL only: every value a caller gives is bound as a parameter (``$cid``, ``$subject``, ``$fps``,
``$lo``/``$hi`` for the time window); what is interpolated is a constant of this module, a column name picked
from a fixed table, or a number the caller validated. User SQL never passes through here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from auditlog.lake.engine import arrow_schema, require

__all__ = [
    "ACTOR_SQL",
    "BODY_READS_SQL",
    "DENIALS_SQL",
    "EVENTS_VIEW",
    "FIND_SQL",
    "TIMELINE_SQL",
    "anomalies_sql",
    "matching_fields",
    "top_sql",
    "write_events_parquet",
]

#: The ``events`` view: the Parquet relation (``{parquet}``) and the live segments, with ``tool``, ``route``.
#: ``ts`` is shown as a naive UTC ``TIMESTAMP`` (the files hold it UTC-adjusted); ``date`` is a DATE and
#: ``hour`` an INTEGER, as in every engine.
EVENTS_VIEW = (
    "CREATE OR REPLACE VIEW events AS SELECT * REPLACE (ts::TIMESTAMP AS ts), "
    "CASE WHEN action_method = 'tools/call' THEN action_name END AS tool, "
    "CASE WHEN list_contains(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], "
    "upper(action_method)) THEN action_name END AS route "
    "FROM (SELECT * FROM {parquet} UNION ALL BY NAME SELECT * FROM _live)"
)
_CALLS = "(kind LIKE 'http.%' OR kind LIKE 'mcp.%' OR kind = 'authz.denied')"
_DENIED = "(kind = 'authz.denied' OR decision_allowed = false)"
_BODY_KINDS = "('body.read', 'body.read_denied', 'body.integrity_failed')"
_TIMELINE_COLS = (
    "ts, seq, kind, coalesce(tool, route, event) AS what, action_method AS method, actor_subject AS actor, "
    "actor_tenant AS tenant, decision_allowed AS allowed, decision_reason AS reason, "
    "outcome_status AS status, outcome_http_status AS http_status, outcome_error_type AS error_type, "
    "outcome_duration_ms AS duration_ms, source, segment, stream"
)
_WINDOW = (
    "($lo::TIMESTAMP IS NULL OR ts >= $lo::TIMESTAMP) AND ($hi::TIMESTAMP IS NULL OR ts <= $hi::TIMESTAMP)"
)

#: Parameters: ``cid``. Across streams (hosts, workers) rows are ordered by ts, then stream, then seq.
#: Parameters: ``cid``, ``lo``, ``hi``.
TIMELINE_SQL = (
    f"SELECT {_TIMELINE_COLS} FROM events WHERE correlation_id = $cid AND {_WINDOW} "  # noqa: S608
    "ORDER BY ts, stream, seq"
)

#: Parameters: ``subject``, ``lo``, ``hi``.
ACTOR_SQL = (
    "SELECT ts, correlation_id, kind, coalesce(tool, route, event) AS what, action_method AS method, "  # noqa: S608
    "actor_tenant AS tenant, actor_client_id AS client_id, decision_allowed AS allowed, "
    "decision_reason AS reason, outcome_status AS status, outcome_http_status AS http_status, "
    "outcome_duration_ms AS duration_ms FROM events WHERE actor_subject = $subject AND "
    + _WINDOW
    + " ORDER BY ts, stream, seq"
)

#: Parameters: ``lo``, ``hi``.
BODY_READS_SQL = (
    "SELECT ts, actor_subject AS reader, correlation_id, kind, decision_allowed AS allowed, "  # noqa: S608
    "decision_reason AS reason, json_extract_string(record, '$.purpose') AS purpose, "
    "coalesce(actor_tenant, json_extract_string(record, '$.tenant')) AS tenant, "
    "TRY_CAST(json_extract_string(record, '$.size') AS BIGINT) AS size "
    f"FROM events WHERE kind IN {_BODY_KINDS} AND {_WINDOW} ORDER BY ts, stream, seq"
)

#: Parameters: ``fps`` (the value's fingerprints), ``lo``, ``hi``. Column 6 is the ``fp`` tree (JSON).
FIND_SQL = (
    "SELECT ts, correlation_id, kind, actor_subject AS actor, coalesce(tool, route, event) AS what, "  # noqa: S608
    "json_extract(record, '$.fp') AS fp, seq FROM events "
    f"WHERE list_has_any(fp_values, $fps::VARCHAR[]) AND {_WINDOW} ORDER BY ts, stream, seq"
)


#: Parameters: ``lo``, ``hi``.
DENIALS_SQL = (
    "SELECT ts, correlation_id, kind, actor_subject AS actor, actor_tenant AS tenant, "  # noqa: S608
    "actor_client_id AS client_id, coalesce(tool, route, action_name) AS what, "
    "action_method AS method, decision_reason AS reason, decision_required AS required, "
    f"outcome_status AS status FROM events WHERE {_DENIED} AND {_WINDOW} ORDER BY ts, stream, seq"
)


def top_sql(column: str, by: str, limit: int) -> str:
    """The busiest values of ``column`` (named ``by``). Parameters: ``lo``, ``hi``.

    ``column`` and ``by`` come from a fixed table and ``limit`` is a validated integer.
    """
    return (
        f"SELECT {column} AS {by}, count(*) AS calls, count(*) FILTER (WHERE {_DENIED}) AS denied, "  # noqa: S608
        "count(*) FILTER (WHERE outcome_status = 'error' OR outcome_http_status >= 500) AS errors, "
        "round(quantile_cont(outcome_duration_ms, 0.95), 3) AS p95_ms, count(DISTINCT actor_subject) "
        "AS actors, min(ts) AS first_seen, max(ts) AS last_seen "
        f"FROM events WHERE {_CALLS} AND {column} IS NOT NULL AND {_WINDOW} "
        f"GROUP BY ALL ORDER BY calls DESC, {by} LIMIT {limit}"
    )


def anomalies_sql(
    *, win: int, burst: int, learn: int, min_calls: int, spike_factor: float, burst_min: int
) -> str:
    """Rate spikes, denial bursts and first-seen tools. Parameters: ``lo``, ``hi``.

    ``win``, ``burst`` and ``learn`` are seconds; every argument is a number the caller validated.
    """
    calls = f"SELECT * FROM events WHERE {_CALLS} AND actor_subject IS NOT NULL AND {_WINDOW}"  # noqa: S608
    return f"""
WITH calls AS ({calls}),
per_window AS (
  SELECT actor_subject AS actor, time_bucket(to_seconds({win}), ts) AS w, count(*) AS n
  FROM calls GROUP BY ALL),
base AS (SELECT actor, median(n) AS baseline, count(*) AS windows FROM per_window GROUP BY actor),
spikes AS (
  SELECT 'rate_spike' AS type, p.actor, p.w AS ts, strftime(p.w, '%Y-%m-%dT%H:%M') AS what, p.n AS count,
         b.baseline::DOUBLE AS baseline
  FROM per_window p JOIN base b USING (actor)
  WHERE b.windows >= 3 AND p.n >= {int(min_calls)} AND p.n >= {float(spike_factor)} * b.baseline),
bursts AS (
  SELECT 'denial_burst' AS type, actor_subject AS actor, time_bucket(to_seconds({burst}), ts) AS ts,
         'denials' AS what, count(*) AS count, NULL::DOUBLE AS baseline
  FROM calls WHERE {_DENIED} GROUP BY ALL HAVING count(*) >= {int(burst_min)}),
firsts AS (
  SELECT actor_subject AS actor, tool, min(ts) AS first_ts, count(*) AS n FROM calls
  WHERE tool IS NOT NULL GROUP BY ALL),
starts AS (SELECT actor_subject AS actor, min(ts) AS since FROM calls GROUP BY actor),
new_tools AS (
  SELECT 'first_seen_tool' AS type, f.actor, f.first_ts AS ts, f.tool AS what, f.n AS count,
         NULL::DOUBLE AS baseline
  FROM firsts f JOIN starts s USING (actor) WHERE f.first_ts > s.since + to_seconds({learn}))
SELECT * FROM spikes UNION ALL SELECT * FROM bursts UNION ALL SELECT * FROM new_tools
ORDER BY ts, type, actor, what
"""  # noqa: S608 - constants and validated numbers only


def matching_fields(fp_json: str | None, wanted: set[str]) -> list[str]:
    """The dotted paths under ``fp`` whose fingerprint is one of ``wanted``."""
    if not fp_json:
        return []
    try:
        tree = orjson.loads(fp_json)
    except orjson.JSONDecodeError:
        return []
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{prefix}[{i}]", v) for i, v in enumerate(node))
        elif isinstance(node, str) and node in wanted:
            found.append(prefix)
    return sorted(found)


def write_events_parquet(
    con: Any, lo: datetime | None, hi: datetime | None, path: str | Path
) -> tuple[int, list[tuple[str, str]]]:
    """Write every event of ``[lo, hi]`` on ``con`` to a Parquet file, streamed in record batches.

    Returns:
        The number of rows written, and the (stream, segment) pairs they came from, sorted.
    """
    pq = require("pyarrow.parquet", "evidence packs")
    schema = arrow_schema()
    where = "WHERE ($lo IS NULL OR ts >= $lo) AND ($hi IS NULL OR ts <= $hi)"
    params = {"lo": lo, "hi": hi}
    rows = 0
    cols = ", ".join(f'"{n}"' for n in schema.names)
    query = f"SELECT {cols} FROM events {where}"  # noqa: S608  (library SQL; values bound)
    reader = con.sql(query, params=params).to_arrow_reader(65536)
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for batch in reader:
            table = require("pyarrow").Table.from_batches([batch]).cast(schema)
            writer.write_table(table)
            rows += table.num_rows
    distinct = f"SELECT DISTINCT stream, segment FROM events {where}"  # noqa: S608  (values bound)
    segments = {(str(stream), str(segment)) for stream, segment in con.execute(distinct, params).fetchall()}
    return rows, sorted(segments)
