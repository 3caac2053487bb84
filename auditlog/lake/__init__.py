"""The lake: the audit trail as Parquet, for DuckDB on one machine and Spark/Athena/Trino for a fleet.

- :mod:`~auditlog.lake.layout`: the data layout in one place (columns, partitions, manifests);
- :mod:`~auditlog.lake.engine`: DuckDB and Arrow (the optional import, the loader connection, the schema);
- :mod:`~auditlog.lake.compact`: sealed journal segments to Parquet batches, and pruning (``_batches`` writes
  one batch, ``_prune`` prunes, ``_recovery`` holds the commit points and finishes interrupted runs);
- :mod:`~auditlog.lake.ship`: the layout (seals, checkpoints, segments by choice) to S3, never overwriting;
- :mod:`~auditlog.lake.s3`: S3 URLs, clients, errors, the read side of a shipped layout (``S3Layout``);
- :mod:`~auditlog.lake.merge`, :mod:`~auditlog.lake.ddl`, :mod:`~auditlog.lake.verify`: small files merged,
  tables for engines (Athena, Trino, Spark, DuckDB, Glue), fleet verification.

May import: ``store`` and the public face. Never integrations, investigations, evidence, the CLI or demo.
"""
