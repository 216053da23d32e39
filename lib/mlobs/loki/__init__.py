"""Grafana Loki: the HTTP client and the LogQL builder (the only code that writes LogQL)."""

from mlobs.loki.client import (
    LokiClient,
    LokiQueryError,
    LokiResponseError,
    LokiTimeout,
    LokiUnavailable,
    Sample,
    Series,
)
from mlobs.loki.logql import (
    LabelFilter,
    Matcher,
    Selector,
    count_query,
    parse_duration,
    quantile_query,
    string_literal,
    unwrap_dropped_query,
    validate_label_name,
)

__all__ = [
    "LabelFilter",
    "LokiClient",
    "LokiQueryError",
    "LokiResponseError",
    "LokiTimeout",
    "LokiUnavailable",
    "Matcher",
    "Sample",
    "Selector",
    "Series",
    "count_query",
    "parse_duration",
    "quantile_query",
    "string_literal",
    "unwrap_dropped_query",
    "validate_label_name",
]
