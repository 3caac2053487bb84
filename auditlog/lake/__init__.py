"""The lake: the audit trail as Parquet, for DuckDB on one machine and Spark/Athena/Trino for a fleet.

- :mod:`~auditlog.lake.layout`: the data layout in one place (columns, partitions, manifests);
- :mod:`~auditlog.lake.engine`: DuckDB and Arrow (the optional import, the loader connection, the schema);
- :mod:`~auditlog.lake.compact`: sealed journal segments to Parquet batches (``_batches`` writes them);
- :mod:`~auditlog.lake.ship`: the layout (and segments) to S3, and the read-side S3 cache.

May import: ``store`` and the public face. Never integrations, investigations, evidence, the CLI or demo.
"""
