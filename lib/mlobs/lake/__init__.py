"""Apache Iceberg access for evaluation runs: one schema, two engines (pyiceberg, Spark)."""
