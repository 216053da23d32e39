"""The input contract: how the dataset's input columns are packed into what the Bento's API takes.

Before any data is sent, the runner reads the API's schema from the running Bento's OpenAPI
document (``GET /docs.json``, served by BentoML 1.x for new-style ``@bentoml.service`` and legacy
``bentoml.legacy.Service`` alike) and picks one of these packings:

``columns``    one parameter per input column, each a list: ``{"text": [...]}`` (a batchable
               API with one list parameter, or a non-batchable one with several);
``row``        one sample per request, one parameter per column: ``{"sepal_length": 5.1, ...}``
               (a non-batchable API with scalar parameters); or one object parameter holding
               that sample;
``records``    one parameter holding a list of objects: ``{"rows": [{"a": 1, "b": 2}, ...]}``
               (``list[dict]``, ``list[PydanticModel]``);
``dataframe``  a pandas DataFrame parameter (new-style ``pd.DataFrame``, or the legacy
               ``PandasDataFrame`` descriptor), in the orient it declares (records by default);
``array``      a 2-D array of feature vectors in ``input-columns`` order (``np.ndarray``,
               ``list[list[float]]``, the legacy ``NumpyNdarray`` descriptor).

Legacy descriptors take the bare JSON body; new-style APIs take an object keyed by parameter
name. ``input-format`` overrides the choice (``FORMAT`` or ``FORMAT:PARAMETER``) when the schema
is ambiguous or absent. Column names that cannot be parameter names (``sepal length (cm)``)
match parameters spelled ``sepal_length_cm``.

The dataset is checked against the schema before the first batch: missing required parameters,
input columns the API does not take, text where it declares numbers and a feature count that
does not match its array shape are each one clear error, quoting the API's declaration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from mlobs.errors import ConfigError

__all__ = ["FORMATS", "Packing", "choose_packing", "parse_input_format"]

FORMATS = ("columns", "row", "records", "dataframe", "array")
_ORIENTS = ("records", "columns", "split", "values", "index")
_SCALARS = {"number", "integer", "string", "boolean"}


@dataclass(frozen=True)
class Param:
    """One parameter of the API as the schema declares it."""

    name: str
    kind: str  # scalar | list | records | dataframe | tensor | object | any
    type: str | None = None  # JSON type of a scalar / of list items / tensor dtype
    required: bool = False
    fields: dict[str, str | None] | None = None  # records/object: field → JSON type (None: any)
    closed: bool = False  # records/object: no other fields allowed
    orient: str = "records"  # dataframe
    width: int | None = None  # tensor: features per sample, when its shape says
    declared: str = ""  # how the schema words it, for messages


@dataclass(frozen=True)
class Api:
    name: str
    route: str
    params: list[Param]
    legacy: str | None = None  # the legacy IO descriptor id, e.g. "bentoml.io.PandasDataFrame"


@dataclass(frozen=True)
class Packing:
    """How one batch of rows becomes one request body."""

    format: str
    parameter: str | None = None  # None: the body itself (legacy), or one key per column
    names: dict[str, str] = field(default_factory=dict)  # input column → parameter/field name
    orient: str = "records"
    source: str = "OpenAPI"  # where the choice came from, for the log line

    @property
    def single(self) -> bool:
        """One sample per request (the answer is one prediction, not a list)."""
        return self.format == "row"

    def describe(self) -> str:
        where = f" {self.parameter!r}" if self.parameter else ""
        what = {"columns": "one list parameter per input column",
                "row": "one sample per request" + (f" in parameter{where}" if where else
                                                    ", one parameter per input column"),
                "records": f"a list of records in parameter{where}" if where else "a list of records as the body",
                "dataframe": f"a DataFrame (orient {self.orient}) in parameter{where}" if where
                else f"a DataFrame (orient {self.orient}) as the body",
                "array": f"a 2-D array of feature vectors in parameter{where}" if where
                else "a 2-D array of feature vectors as the body"}[self.format]
        renamed = ", ".join(f"{c!r} as {p!r}" for c, p in list(self.names.items())[:3])
        more = ", …" if len(self.names) > 3 else ""
        return f"{what}{f' ({renamed}{more})' if renamed else ''} (from {self.source})"

    def encode(self, batch: pa.RecordBatch, columns: list[str]) -> bytes:
        """The request body for ``batch`` (one row when :attr:`single`). NaN and ±inf go as null:
        JSON has no spelling for them, and the API decides whether it takes a missing value.
        orjson writes numeric columns straight from numpy (the client's main CPU cost)."""
        import orjson

        return orjson.dumps(self._body(batch, columns), default=_json_default,
                            option=orjson.OPT_SERIALIZE_NUMPY)

    def _body(self, batch: pa.RecordBatch, columns: list[str]) -> Any:
        key = self.names.get
        if self.format == "columns":
            return {key(c, c): _values(batch.column(c)) for c in columns}
        if self.format == "row":
            record = {key(c, c): _py(_values(batch.column(c)))[0] for c in columns}
            return {self.parameter: record} if self.parameter else record
        if self.format == "array":
            body: Any = _matrix(batch, columns)
        elif self.format == "records" or self.orient == "records":
            body = _records(batch, columns, key)
        else:
            body = _frame(batch, columns, key, self.orient)
        return {self.parameter: body} if self.parameter else body


def parse_input_format(value: str | None) -> tuple[str, str | None] | None:
    """``input-format``: ``auto`` (None), ``FORMAT`` or ``FORMAT:PARAMETER``."""
    if value is None or value.strip() in ("", "auto"):
        return None
    fmt, _, param = value.strip().partition(":")
    fmt = fmt.strip()
    if fmt not in FORMATS:
        raise ConfigError(f"input-format must be auto or one of {', '.join(FORMATS)} (optionally "
                          f"FORMAT:PARAMETER), got {value!r}")
    return fmt, (param.strip() or None)


# --- reading the OpenAPI document -----------------------------------------------------------


def find_api(doc: dict[str, Any], api: str) -> Api:
    """The API named ``api`` (its route or BentoML name) in an OpenAPI document."""
    paths = doc.get("paths") if isinstance(doc, dict) else None
    if not isinstance(paths, dict):
        raise ConfigError("the Bento's OpenAPI document has no paths")
    wanted = "/" + api.strip("/")
    apis: list[str] = []
    for route, item in paths.items():
        op = item.get("post") if isinstance(item, dict) else None
        if not isinstance(op, dict) or "Infrastructure" in (op.get("tags") or []):
            continue
        name = op.get("x-bentoml-name") or route.strip("/")
        apis.append(name)
        if route == wanted or name == api.strip("/"):
            return _api(doc, name, route, op)
    known = ", ".join(apis) or "none"
    raise ConfigError(f"the Bento has no API {api!r} (its APIs: {known}); set bento-api")


def _api(doc: dict[str, Any], name: str, route: str, op: dict[str, Any]) -> Api:
    body = op.get("requestBody") or {}
    descriptor = body.get("x-bentoml-io-descriptor") or {}
    content = body.get("content") or {}
    media = content.get("application/json") or next(iter(content.values()), {}) if content else {}
    inline = (media or {}).get("schema") or {}
    if descriptor.get("id"):
        return Api(name, route, _legacy_params(descriptor, inline, content), legacy=descriptor["id"])
    components = (doc.get("components") or {}).get("schemas") or {}
    rich = components.get(f"{name}__Input") or inline
    schema = _resolve(rich, components)
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    params = [_param(p, _resolve(s, components), p in required, components)
              for p, s in props.items()]
    return Api(name, route, params)


def _legacy_params(descriptor: dict[str, Any], inline: dict[str, Any], content: dict) -> list[Param]:
    ident, args = descriptor["id"], descriptor.get("args") or {}
    if ident.endswith("PandasDataFrame"):
        columns = args.get("columns")
        fields = {str(c): None for c in columns} if isinstance(columns, list) and columns else None
        return [Param("", "dataframe", orient=args.get("orient") or "records", fields=fields,
                      closed=bool(fields) and bool(args.get("enforce_shape")),
                      declared=f"PandasDataFrame(orient={args.get('orient') or 'records'!r})")]
    if ident.endswith("NumpyNdarray"):
        shape = args.get("shape")
        width = shape[1] if isinstance(shape, list) and len(shape) == 2 and shape[1] > 0 else None
        return [Param("", "tensor", type=args.get("dtype"), width=width,
                      declared=f"NumpyNdarray(shape={shape})")]
    if ident.endswith("JSON"):
        props = inline.get("properties") if isinstance(inline, dict) else None
        if props:  # a pydantic model: one sample per request
            fields = {k: _json_type(v) for k, v in props.items()}
            return [Param("", "object", fields=fields, closed=True,
                          declared=f"JSON({', '.join(fields)})")]
        return [Param("", "any", declared="JSON()")]
    kinds = ", ".join(content) or ident
    raise ConfigError(f"the API takes {ident.rsplit('.', 1)[-1]} ({kinds}); evaluate sends JSON: "
                      "serve an API that takes JSON, records, a DataFrame or an array")


def _param(name: str, schema: dict[str, Any], required: bool, components: dict) -> Param:
    kind_type = schema.get("type")
    declared = _declared(name, schema)
    if kind_type == "tensor":
        shape = schema.get("shape")
        width = shape[1] if isinstance(shape, list) and len(shape) == 2 and shape[1] > 0 else None
        return Param(name, "tensor", type=schema.get("dtype"), required=required, width=width,
                     declared=declared)
    if kind_type == "dataframe":
        return Param(name, "dataframe", required=required, orient=schema.get("orient") or "records",
                     declared=declared)
    if kind_type == "array":
        items = _resolve(schema.get("items") or {}, components)
        item_type = items.get("type")
        if item_type in _SCALARS:
            return Param(name, "list", type=item_type, required=required, declared=declared)
        if item_type == "array":
            inner = _resolve(items.get("items") or {}, components)
            return Param(name, "tensor", type=inner.get("type"), required=required, declared=declared)
        if item_type == "object" or "properties" in items:
            fields, closed = _fields(items, components)
            return Param(name, "records", required=required, fields=fields, closed=closed,
                         declared=declared)
        return Param(name, "list", required=required, declared=declared)
    if kind_type in _SCALARS:
        return Param(name, "scalar", type=kind_type, required=required, declared=declared)
    if kind_type == "object" or "properties" in schema:
        fields, closed = _fields(schema, components)
        return Param(name, "object", required=required, fields=fields, closed=closed,
                     declared=declared)
    any_of = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(any_of, list):  # Optional[float] and the like: the first non-null choice
        for choice in any_of:
            choice = _resolve(choice, components)
            if choice.get("type") not in (None, "null"):
                return _param(name, choice, required, components)
    return Param(name, "any", required=required, declared=declared)


def _fields(schema: dict[str, Any], components: dict) -> tuple[dict[str, str | None] | None, bool]:
    props = schema.get("properties")
    if not props:
        return None, False
    fields = {k: _json_type(_resolve(v, components)) for k, v in props.items()}
    extra = schema.get("additionalProperties")
    return fields, extra is False or extra is None


def _json_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if kind in _SCALARS:
        return kind
    for choice in schema.get("anyOf") or []:
        if isinstance(choice, dict) and choice.get("type") in _SCALARS:
            return choice["type"]
    return None


def _resolve(schema: Any, components: dict) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 10:
        schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _declared(name: str, schema: dict[str, Any]) -> str:
    kind = schema.get("type") or "any"
    if kind == "array":
        items = schema.get("items") or {}
        kind = f"array of {items.get('type') or items.get('$ref', 'any').rsplit('/', 1)[-1]}"
    elif kind == "tensor":
        kind = f"tensor{'' if not schema.get('shape') else ' ' + str(schema['shape'])}"
    return f"{name}: {kind}"


# --- choosing and checking ------------------------------------------------------------------


def choose_packing(api: Api, dataset_schema: pa.Schema, input_columns: list[str],
                   override: tuple[str, str | None] | None = None) -> Packing:
    """The packing for ``input_columns`` of ``dataset_schema``; ConfigError (quoting the API's
    declaration) when the dataset does not fit what the API takes."""
    types = {c: dataset_schema.field(c).type for c in input_columns}
    if override is not None:
        return _overridden(api, types, input_columns, *override)
    params = api.params
    if api.legacy is not None:
        (param,) = params
        return _whole(param, api, types, input_columns, parameter=None)
    if not params:
        raise ConfigError(f"the API {api.name!r} takes no parameters: nothing to send the dataset to")
    names = _match(input_columns, [p.name for p in params])
    if not names and len(input_columns) == 1 and len(params) == 1 \
            and params[0].kind in ("list", "scalar"):
        names = {input_columns[0]: params[0].name}  # one column, one parameter: no doubt
    matched = {names[c] for c in input_columns if c in names}
    by_name = {p.name: p for p in params}
    if len(matched) == len(input_columns) and len(input_columns) > 0:
        kinds = {by_name[n].kind for n in matched}
        if kinds <= {"list", "any"} and not (kinds == {"any"} and len(params) == 1 and
                                             len(input_columns) > 1):
            _check_params(api, by_name, names, types, input_columns)
            return Packing("columns", names=_renames(names))
        if kinds <= {"scalar", "any"}:
            _check_params(api, by_name, names, types, input_columns)
            return Packing("row", names=_renames(names))
    wholes = [p for p in params if p.kind in ("records", "dataframe", "tensor", "object")]
    others_required = [p for p in params if p.required and p not in wholes]
    if len(wholes) == 1 and not others_required:
        return _whole(wholes[0], api, types, input_columns, parameter=wholes[0].name)
    declared = "; ".join(p.declared for p in params)
    missing = [c for c in input_columns if c not in names]
    detail = (f"input column(s) {', '.join(map(repr, missing))} match no parameter" if missing
              else "the columns map to parameters of different kinds")
    raise ConfigError(f"cannot pack the input columns into API {api.name!r} ({declared}): {detail}; "
                      "rename the columns, choose input-columns, or set input-format "
                      f"({'/'.join(FORMATS)}[:PARAMETER])")


def _whole(param: Param, api: Api, types: dict[str, pa.DataType], columns: list[str],
           parameter: str | None) -> Packing:
    where = f"parameter {param.name!r}" if parameter else f"the {param.declared} body"
    if param.kind == "tensor":
        _check_numeric(api, param, types, columns)
        if param.width is not None and param.width != len(columns):
            raise ConfigError(f"API {api.name!r} declares {param.declared}: {param.width} features "
                              f"per sample, but input-columns has {len(columns)} "
                              f"({', '.join(columns)})")
        return Packing("array", parameter=parameter)
    if param.kind == "dataframe":
        if param.orient not in _ORIENTS:
            raise ConfigError(f"API {api.name!r} declares a DataFrame in orient {param.orient!r}; "
                              f"evaluate sends {', '.join(_ORIENTS)}")
        names = _check_fields(api, param, types, columns, where)
        return Packing("dataframe", parameter=parameter, names=names, orient=param.orient)
    if param.kind == "records" or (param.kind == "any" and parameter is None):
        names = _check_fields(api, param, types, columns, where)
        return Packing("records", parameter=parameter, names=names)
    if param.kind == "object":
        names = _check_fields(api, param, types, columns, where)
        return Packing("row", parameter=parameter, names=names)
    raise ConfigError(f"API {api.name!r} declares {param.declared}; set input-format")


def _overridden(api: Api, types: dict[str, pa.DataType], columns: list[str], fmt: str,
                parameter: str | None) -> Packing:
    if parameter is None and api.legacy is None:
        candidates = [p.name for p in api.params]
        if fmt in ("records", "dataframe", "array") or (fmt == "row" and len(candidates) == 1
                                                        and len(columns) > 1):
            if len(candidates) == 1:
                parameter = candidates[0]
            elif candidates:
                raise ConfigError(f"input-format {fmt}: the API {api.name!r} has parameters "
                                  f"{', '.join(candidates)}; name one as {fmt}:PARAMETER")
    names: dict[str, str] = {}
    if fmt in ("columns", "row"):
        if parameter is not None and len(columns) == 1:
            names, parameter = {columns[0]: parameter}, None  # "columns:text": this column is text
        elif parameter is None:
            names = _renames(_match(columns, [p.name for p in api.params]))
    orient = next((p.orient for p in api.params if p.kind == "dataframe"), "records")
    return Packing(fmt, parameter=parameter, names=names, orient=orient, source="input-format")


def _check_params(api: Api, by_name: dict[str, Param], names: dict[str, str],
                  types: dict[str, pa.DataType], columns: list[str]) -> None:
    covered = {names[c] for c in columns}
    missing = [p for p in by_name.values() if p.required and p.name not in covered]
    if missing:
        raise ConfigError(f"API {api.name!r} requires {', '.join(p.declared for p in missing)}, "
                          "which no input column provides")
    for column in columns:
        param = by_name[names[column]]
        _check_type(api, param.declared, param.type, column, types[column])


def _check_fields(api: Api, param: Param, types: dict[str, pa.DataType], columns: list[str],
                  where: str) -> dict[str, str]:
    if not param.fields:
        return {}
    names = _match(columns, list(param.fields))
    unknown = [c for c in columns if c not in names]
    if unknown and param.closed:
        raise ConfigError(f"API {api.name!r} takes records with fields {', '.join(param.fields)} in "
                          f"{where}; input column(s) {', '.join(map(repr, unknown))} are not among them")
    covered = {names[c] for c in columns if c in names}
    absent = [f for f in param.fields if f not in covered]
    if absent:
        raise ConfigError(f"API {api.name!r} takes records with fields {', '.join(param.fields)} in "
                          f"{where}; no input column provides {', '.join(map(repr, absent))}")
    for column in columns:
        if column in names:
            _check_type(api, f"{names[column]}: {param.fields[names[column]] or 'any'}",
                        param.fields[names[column]], column, types[column])
    return _renames(names)


def _check_numeric(api: Api, param: Param, types: dict[str, pa.DataType], columns: list[str]) -> None:
    text = [c for c in columns if not _numeric(types[c])]
    if text and (param.type is None or param.type not in ("string", "object", "str")):
        raise ConfigError(f"API {api.name!r} takes {param.declared} of numbers, but input column(s) "
                          f"{', '.join(f'{c!r} ({types[c]})' for c in text)} are not numeric")


def _check_type(api: Api, declared: str, json_type: str | None, column: str,
                arrow: pa.DataType) -> None:
    if json_type in ("number", "integer") and not _numeric(arrow) and not pa.types.is_null(arrow):
        raise ConfigError(f"API {api.name!r} declares {declared}, but input column {column!r} holds "
                          f"{_arrow_words(arrow)}")
    if json_type == "string" and not (pa.types.is_string(arrow) or pa.types.is_large_string(arrow)
                                      or pa.types.is_dictionary(arrow) or pa.types.is_null(arrow)):
        raise ConfigError(f"API {api.name!r} declares {declared}, but input column {column!r} holds "
                          f"{_arrow_words(arrow)}")
    if json_type == "boolean" and not (pa.types.is_boolean(arrow) or pa.types.is_null(arrow)):
        raise ConfigError(f"API {api.name!r} declares {declared}, but input column {column!r} holds "
                          f"{_arrow_words(arrow)}")


def _numeric(arrow: pa.DataType) -> bool:
    return pa.types.is_integer(arrow) or pa.types.is_floating(arrow) or pa.types.is_decimal(arrow) \
        or pa.types.is_null(arrow)


def _arrow_words(arrow: pa.DataType) -> str:
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "text"
    if _numeric(arrow):
        return f"numbers ({arrow})"
    return str(arrow)


def normalise(name: str) -> str:
    """``sepal length (cm)`` → ``sepal_length_cm``: how a column becomes a Python name."""
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def _match(columns: list[str], names: list[str]) -> dict[str, str]:
    """Input column → parameter/field name: exact, else the one name equal after normalising."""
    out: dict[str, str] = {}
    exact = set(names)
    by_norm: dict[str, list[str]] = {}
    for n in names:
        by_norm.setdefault(normalise(n), []).append(n)
    for c in columns:
        if c in exact:
            out[c] = c
        elif len(by_norm.get(normalise(c), [])) == 1:
            out[c] = by_norm[normalise(c)][0]
    return out


def _renames(names: dict[str, str]) -> dict[str, str]:
    return {c: n for c, n in names.items() if c != n}


# --- encoding --------------------------------------------------------------------------------


def _values(array: pa.Array) -> list[Any] | np.ndarray:
    """A column as JSON-able values: floats as a numpy array (nulls become NaN, which orjson
    writes as null), everything else as Python values."""
    if pa.types.is_floating(array.type):
        return array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if pa.types.is_integer(array.type) and array.null_count == 0:
        return array.to_numpy().astype(np.int64, copy=False)
    return array.to_pylist()


def _matrix(batch: pa.RecordBatch, columns: list[str]) -> Any:
    arrays = [batch.column(c) for c in columns]
    if arrays and all(_numeric(a.type) and not pa.types.is_decimal(a.type) for a in arrays):
        if all(pa.types.is_integer(a.type) and a.null_count == 0 for a in arrays):
            return np.column_stack([a.to_numpy().astype(np.int64, copy=False) for a in arrays])
        return np.column_stack([a.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                                for a in arrays])
    lists = [_py(_values(a)) for a in arrays]
    return [list(row) for row in zip(*lists, strict=True)]


def _py(values: list[Any] | np.ndarray) -> list[Any]:
    if isinstance(values, np.ndarray):
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values.tolist()]
    return values


def _records(batch: pa.RecordBatch, columns: list[str], key: Callable[[str, str], str]) -> list[dict]:
    names = [key(c, c) for c in columns]
    lists = [_py(_values(batch.column(c))) for c in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]


def _frame(batch: pa.RecordBatch, columns: list[str], key: Callable[[str, str], str],
           orient: str) -> Any:
    names = [key(c, c) for c in columns]
    lists = [_py(_values(batch.column(c))) for c in columns]
    if orient == "columns":
        return {n: {str(i): v for i, v in enumerate(values)} for n, values in zip(names, lists, strict=True)}
    rows = [list(r) for r in zip(*lists, strict=True)]
    if orient == "split":
        return {"columns": names, "index": list(range(batch.num_rows)), "data": rows}
    if orient == "values":
        return rows
    return {str(i): dict(zip(names, r, strict=True)) for i, r in enumerate(rows)}  # index


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")
