"""From an opened, checked dataset and a Bento's URL to a stream of prediction rows.

Reads what the API takes (its OpenAPI document), packs the input columns to fit
(:mod:`mlobs.evaluate.schema`), reads whatever shape it answers (:mod:`mlobs.evaluate.contract`)
and streams the dataset through it (:mod:`mlobs.evaluate.client`). Used by the evaluate mode and
by ``bench/bento_throughput.py``, so the benchmark measures exactly what users run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from mlobs.errors import ConfigError, SourceUnavailable
from mlobs.evaluate.client import DeadlineExceeded, ProbeFailed, fetch_openapi, predict
from mlobs.evaluate.contract import OutputReader
from mlobs.evaluate.dataset import Dataset, LabelCheck
from mlobs.evaluate.labels import ClassNames
from mlobs.evaluate.progress import Progress
from mlobs.evaluate.schema import Api, Packing, choose_packing, find_api

__all__ = ["BentoCall", "parse_batch_size", "parse_duration", "predictions", "resolve_packing",
           "server_side"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BentoCall:
    """How to call the Bento (the evaluate settings the runner needs)."""

    api: str = "predict"
    input_format: tuple[str, str | None] | None = None
    class_names: ClassNames | None = None
    prediction_path: tuple[str, ...] | None = None
    batch_size: int | None = None  # None: sized by measurement
    concurrency: int = 4
    timeout: float = 60.0


def resolve_packing(url: str, call: BentoCall, dataset: Dataset) -> Packing:
    """The packing for ``dataset``'s input columns, from the Bento's OpenAPI document."""
    doc = fetch_openapi(url, timeout=call.timeout)
    if doc is None:
        if call.input_format is None:
            log.warning("the Bento at %s serves no OpenAPI document (/docs.json): sending one list "
                        "parameter per input column (set input-format to choose)", url)
            return Packing("columns", source="default: no OpenAPI document")
        api = Api(call.api, "/" + call.api.strip("/"), [])
    else:
        api = find_api(doc, call.api)
    return choose_packing(api, dataset.schema, dataset.input_columns, call.input_format)


def predictions(url: str, dataset: Dataset, check: LabelCheck, call: BentoCall, *,
                progress: Progress | None = None, deadline: float | None = None,
                alive: Callable[[], bool] | None = None) -> Iterator[pa.RecordBatch]:
    """Probe the API (eagerly: errors raise here), then stream the dataset's predictions."""
    packing = resolve_packing(url, call, dataset)
    log.info("calling %s/%s with %s", url, call.api.strip("/"), packing.describe())
    reader = OutputReader(class_names=call.class_names, path=call.prediction_path)
    return predict(
        url, dataset.iter_batches(), api=call.api, input_columns=dataset.input_columns,
        label_column=dataset.label_column, slice_columns=dataset.slice_columns,
        concurrency=call.concurrency, timeout=call.timeout, packing=packing, reader=reader,
        labels=check.labels, batch_size=call.batch_size, deadline=deadline, alive=alive,
        progress=progress, on_shape=lambda shape: log.info("the Bento answers %s", shape))


def server_side(exc: Exception) -> bool:
    """Whether a served Bento's log can say more about ``exc`` (not a bad input of ours)."""
    if isinstance(exc, SourceUnavailable | DeadlineExceeded):
        return True
    return isinstance(exc, ProbeFailed) and "HTTP 5" in exc.message


def parse_batch_size(text: str | None) -> int | None:
    """``batch-size``: ``auto`` (None: sized by measurement) or a whole number."""
    value = (text or "auto").strip().lower()
    if value == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"batch-size must be auto or a whole number, got {text!r}") from None
    if size < 1:
        raise ConfigError(f"batch-size must be at least 1, got {size}")
    return size


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")


def parse_duration(text: str | None, name: str) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h`` → seconds; empty → None."""
    if text is None or not text.strip():
        return None
    found = _DURATION.match(text.strip().lower())
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"{name} must be a positive duration like 90, 90s, 15m or 2h, got "
                          f"{text.strip()!r}")
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[found.group(2)]
    return float(found.group(1)) * factor
