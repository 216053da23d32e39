"""Apache Iceberg access for evaluation runs: one schema, two engines (pyiceberg, Spark).

- ``schema``: THE table schema and snapshot property names;
- ``catalog``: which catalog and table (the `catalog` / `table` inputs);
- ``engine``: ``RunInfo``, the ``Engine`` protocol and ``open_engine``;
- ``pyiceberg_engine`` / ``spark_engine``: the two implementations;
- ``runs``, ``aggregate``, ``parquet_stream``: logic both engines share.

Nothing heavy is imported here: the CLI imports this package lazily per mode.
"""
