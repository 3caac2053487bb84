"""Tables for engines: the CREATE statements of the layout for Athena, Trino, Spark and DuckDB, and Glue.

Generated from :data:`auditlog.lake.layout.COLUMNS` and :data:`~auditlog.lake.layout.PARTITIONS`, so every
engine sees the same columns with the same types: ``date`` a DATE and ``hour`` an INTEGER (partitions),
``ts`` a timestamp (UTC-adjusted in the files), lists as arrays, ``fp`` as a map of strings.

- Athena: a Hive external table with partition projection over ``date`` and ``hour`` (no crawler, no
  ``MSCK REPAIR``: new hours are queryable as soon as they are shipped);
- Trino (Hive connector): an external table, then ``sync_partition_metadata`` to pick up partitions;
- Spark: a datasource table ``USING parquet``, then ``MSCK REPAIR TABLE``;
- DuckDB: a view over ``read_parquet`` with typed hive partitions.

:func:`register_glue` creates (or updates) the same table in the AWS Glue Data Catalog through boto3, with
the Athena projection properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from auditlog.lake.layout import COLUMNS, PARTITIONS

__all__ = ["ENGINES", "Engine", "GlueResult", "ddl", "glue_table_input", "register_glue"]

Engine = Literal["athena", "trino", "spark", "duckdb"]
ENGINES: tuple[str, ...] = ("athena", "trino", "spark", "duckdb")

_HIVE = {
    "TIMESTAMPTZ": "timestamp",
    "VARCHAR": "string",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "VARCHAR[]": "array<string>",
    "MAP(VARCHAR, VARCHAR)": "map<string,string>",
}
_TRINO = {
    "TIMESTAMPTZ": "timestamp(6)",
    "VARCHAR": "varchar",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "DOUBLE": "double",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "VARCHAR[]": "array(varchar)",
    "MAP(VARCHAR, VARCHAR)": "map(varchar, varchar)",
}
_SPARK = {k: v.upper() for k, v in _HIVE.items()} | {"INTEGER": "INT"}

#: The first day Athena's projection considers (nothing of the lake is older).
PROJECTION_START = "2024-01-01"


def _location(url: str) -> str:
    return url.rstrip("/") + "/"


def _check_name(name: str, what: str) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError(f"{what} must be letters, digits and underscores")
    return name


def projection_properties(url: str) -> dict[str, str]:
    """The Athena partition projection properties over ``date`` and ``hour`` for a layout at ``url``."""
    return {
        "projection.enabled": "true",
        "projection.date.type": "date",
        "projection.date.format": "yyyy-MM-dd",
        "projection.date.range": f"{PROJECTION_START},NOW",
        "projection.date.interval": "1",
        "projection.date.interval.unit": "DAYS",
        "projection.hour.type": "integer",
        "projection.hour.range": "0,23",
        "projection.hour.digits": "2",
        "storage.location.template": _location(url) + "date=${date}/hour=${hour}/",
        "classification": "parquet",
        "parquet.compression": "ZSTD",
    }


def ddl(engine: str, url: str, *, table: str = "audit_events", database: str | None = None) -> str:
    """The statements that declare the layout at ``url`` as a table, for one engine.

    Args:
        engine: ``athena``, ``trino``, ``spark`` or ``duckdb``.
        url: where the layout is (``s3://bucket/prefix``; for Spark ``s3a://`` is used; a local path works
            for Spark and DuckDB).
        table: the table name.
        database: the database (schema) it goes in; ``None`` for the current one.

    Returns:
        One or more SQL statements, each ending with ``;``.

    Raises:
        ValueError: an unknown engine, or a name that is not ``[A-Za-z0-9_]``.
    """
    _check_name(table, "table")
    if database is not None:
        _check_name(database, "database")
    if "'" in url:
        raise ValueError("the location must not contain a quote")
    if engine == "athena":
        return _athena(url, table, database)
    if engine == "trino":
        return _trino(url, table, database)
    if engine == "spark":
        return _spark(url, table, database)
    if engine == "duckdb":
        return _duckdb(url, table)
    raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


def _athena(url: str, table: str, database: str | None) -> str:
    name = f"`{database}`.`{table}`" if database else f"`{table}`"
    cols = ",\n".join(f"  `{n}` {_HIVE[t]} COMMENT '{_comment(c)}'" for n, t, c in COLUMNS)
    parts = ", ".join(f"`{n}` {_HIVE[t]}" for n, t, _ in PARTITIONS)
    props = ",\n".join(f"  '{k}' = '{v}'" for k, v in projection_properties(url).items())
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{cols}\n)\n"
        f"PARTITIONED BY ({parts})\nSTORED AS PARQUET\nLOCATION '{_location(url)}'\n"
        f"TBLPROPERTIES (\n{props}\n);"
    )


def _trino(url: str, table: str, database: str | None) -> str:
    schema = database or "audit"
    cols = ",\n".join(f'  "{n}" {_TRINO[t]}' for n, t, _ in COLUMNS + PARTITIONS)
    parts = ", ".join(f"'{n}'" for n, _, _ in PARTITIONS)
    return (
        f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" (\n{cols}\n)\n'
        f"WITH (\n  external_location = '{_location(url)}',\n  format = 'PARQUET',\n"
        f"  partitioned_by = ARRAY[{parts}]\n);\n"
        f"CALL system.sync_partition_metadata('{schema}', '{table}', 'ADD');"
    )


def _spark(url: str, table: str, database: str | None) -> str:
    name = f"`{database}`.`{table}`" if database else f"`{table}`"
    loc = "s3a://" + url[5:] if url.startswith("s3://") else url
    cols = ",\n".join(f"  `{n}` {_SPARK[t]}" for n, t, _ in COLUMNS + PARTITIONS)
    parts = ", ".join(f"`{n}`" for n, _, _ in PARTITIONS)
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (\n{cols}\n)\nUSING parquet\nPARTITIONED BY ({parts})\n"
        f"LOCATION '{_location(loc)}';\nMSCK REPAIR TABLE {name};"
    )


def _duckdb(url: str, table: str) -> str:
    types = ", ".join(f"'{n}': {t}" for n, t, _ in PARTITIONS)
    return (
        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet("  # noqa: S608 - checked names
        f"'{_location(url)}date=*/hour=*/*.parquet', hive_partitioning = true, hive_types = {{{types}}});"
    )


def _comment(text: str) -> str:
    return text.replace("'", "").replace("\\", "")[:200]


def glue_table_input(url: str, *, table: str = "audit_events") -> dict[str, Any]:
    """The Glue ``TableInput`` of the layout at ``url`` (Hive types, Parquet SerDe, Athena projection)."""
    _check_name(table, "table")
    return {
        "Name": table,
        "Description": "auditlog lake (layout v2): audit events as Parquet, partitioned by date and hour",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"EXTERNAL": "TRUE", **projection_properties(url)},
        "PartitionKeys": [{"Name": n, "Type": _HIVE[t], "Comment": c} for n, t, c in PARTITIONS],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": _HIVE[t], "Comment": c[:255]} for n, t, c in COLUMNS],
            "Location": _location(url),
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "Parameters": {"serialization.format": "1"},
            },
        },
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class GlueResult:
    """What :func:`register_glue` did: ``created`` or ``updated`` the table (and whether the database)."""

    database: str
    table: str
    action: str
    database_created: bool


def register_glue(
    url: str,
    *,
    database: str,
    table: str = "audit_events",
    client: Any = None,
    endpoint_url: str | None = None,
) -> GlueResult:
    """Create or update the layout's table in the AWS Glue Data Catalog (creating the database if needed).

    Args:
        url: the shipped layout (``s3://bucket/prefix``).
        database: the Glue database.
        table: the table name.
        client: a boto3 Glue client (default: ``boto3.client("glue", endpoint_url=endpoint_url)``).
        endpoint_url: a Glue-compatible endpoint, when no client is given.

    Returns:
        A :class:`GlueResult`.

    Raises:
        auditlog.lake.ship.ShipError: Glue refused a request.
        ValueError: a name that is not ``[A-Za-z0-9_]``.
        ImportError: boto3 is missing (``auditlog-pipeline[s3]``).
    """
    from auditlog.lake.s3 import ShipError, make_client
    from store._s3_lifecycle import aws_code

    _check_name(database, "database")
    glue = client if client is not None else make_client(endpoint_url, service="glue")
    made_db = False
    try:
        try:
            glue.get_database(Name=database)
        except Exception as exc:
            if aws_code(exc) != "EntityNotFoundException":
                raise
            glue.create_database(DatabaseInput={"Name": database})
            made_db = True
        table_input = glue_table_input(url, table=table)
        try:
            glue.create_table(DatabaseName=database, TableInput=table_input)
            action = "created"
        except Exception as exc:
            if aws_code(exc) != "AlreadyExistsException":
                raise
            glue.update_table(DatabaseName=database, TableInput=table_input)
            action = "updated"
    except Exception as exc:  # botocore's and the network's errors, translated at this one boundary
        raise ShipError(
            f"Glue refused the table {database}.{table}: {type(exc).__name__} {aws_code(exc)}"
        ) from exc
    return GlueResult(database=database, table=table, action=action, database_created=made_db)
