"""The LogQL builder: escaping, validation, exact query shapes, and their results on the double."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from mlobs.errors import ConfigError
from mlobs.loki import (
    LabelFilter,
    LokiClient,
    LokiQueryError,
    Matcher,
    Selector,
    count_query,
    logql,
    parse_duration,
    quantile_query,
    string_literal,
    unwrap_dropped_query,
    validate_label_name,
)
from servers.loki import LokiDouble, conformance_corpus

AT = 1795557698.077589248  # the recordings' evaluation time
MAIN = Selector.of({"namespace": "openfaas-fn", "function_name": "pytorch-classifier"})
DIRTY = Selector.of({"namespace": "openfaas-fn", "function_name": "pytorch-classifier-dirty"})
NONJSON = Selector.of({"namespace": "openfaas-fn", "function_name": "pytorch-classifier-nonjson"})
V121 = LabelFilter("model_version", "=", "v1.2.1")

HOSTILE = [
    '"',
    "\\",
    'v1"} or {x="',
    'v1.2.1" or model_version="v1.2.1',
    'v1.2.1"} | json | model_version=~".*',
    "v1.2.1\n",
    "v1.2.1\\",
    "v1.2.1\t",
    "v1.2.1`",
    "v1.2.1\x00",
    "v1.2.1\u2028",
    "$end",
]


@pytest.fixture(scope="module")
def client() -> Iterator[LokiClient]:
    """A client on a double holding exactly what was pushed to the real Loki for the recordings."""
    pushed = json.loads((conformance_corpus() / "pushed_streams.json").read_text())
    with LokiDouble() as loki:
        loki_client = LokiClient(loki.url, deadline=5)
        loki_client.push(pushed["streams"])
        yield loki_client


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads((conformance_corpus() / "expected.json").read_text())


def values(samples: list[Any]) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples}


# --- names, literals, durations -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "_", "latency_ms", "__error__", "A9_b"])
def test_valid_label_names(name: str) -> None:
    assert validate_label_name(name) == name


@pytest.mark.parametrize("name", ["", "9a", "a-b", "a.b", "a b", 'a"', "é", "a\n", None, 5])
def test_invalid_label_names(name: Any) -> None:
    with pytest.raises(ConfigError):
        validate_label_name(name)


@pytest.mark.parametrize(
    "value, literal",
    [
        ("v1.2.1", '"v1.2.1"'),
        ('v1"} or {x="', '"v1\\"} or {x=\\""'),
        ("a\\b", '"a\\\\b"'),
        ("line\nbreak\ttab\rcr", '"line\\nbreak\\ttab\\rcr"'),
        ("nul\x00bell\x07del\x7f", '"nul\\u0000bell\\u0007del\\u007f"'),
        ("ls\u2028nbsp\u00a0", '"ls\\u2028nbsp\\u00a0"'),
        ("golden retriever é ✓", '"golden retriever é ✓"'),
        ("`backtick`", '"`backtick`"'),
        ("", '""'),
    ],
)
def test_string_literal(value: str, literal: str) -> None:
    assert string_literal(value) == literal


@pytest.mark.parametrize("value", HOSTILE)
def test_string_literal_round_trips_through_selector_parsing(value: str) -> None:
    selector = Selector.parse("{a=" + string_literal(value) + "}")
    assert selector.matchers == (Matcher("a", "=", value),)


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1w", 604800),
     ("250ms", 0.25), ("2h5m10s", 7510)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5", "0s", "1.5h", "30m1h", "5 m", "-5m", "5M", "1hh", "5m;", "ms", "1h30", None]
)
def test_parse_duration_rejects_garbage(text: Any) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


# --- selectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ('{namespace="openfaas-fn", function_name="pytorch-classifier"}',
         '{namespace="openfaas-fn", function_name="pytorch-classifier"}'),
        ('  {namespace="a",function_name!="b"}  ', '{namespace="a", function_name!="b"}'),
        ('{app=~"api|web", env!~"dev.*"}', '{app=~"api|web", env!~"dev.*"}'),
        ("{app=`raw\\d+`}", '{app="raw\\\\d+"}'),
        ('{app="tab\\there \\"q\\" \\u00e9 \\x41 \\101"}', '{app="tab\\there \\"q\\" é A A"}'),
        ('{app=~".+"}', '{app=~".+"}'),
    ],
)  # fmt: skip
def test_selector_parse_and_canonical_render(text: str, canonical: str) -> None:
    selector = Selector.parse(text)
    assert str(selector) == canonical
    assert Selector.parse(str(selector)) == selector


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        "{ }",
        'app="x"',
        '{app=~".*"}',
        '{app=""}',
        '{app!="x"}',
        '{app!~"x", env=""}',
        '{app="x"} | json',
        '{app="x"} |= "error"',
        '{app="x"}{env="y"}',
        '{app="x"} or {env="y"}',
        '{app="x"',
        '{app="x",}',
        '{app="x" env="y"}',
        '{9app="x"}',
        "{app=x}",
        '{app=="x"}',
        '{app="x}',
        '{app="bad \\q escape"}',
        '{app="\\ud800"}',
        '{app=~"("}',
        '{app="line\nbreak"}',
        "{app=`unterminated}",
    ],
)
def test_selector_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        Selector.parse(text)


def test_selector_errors_say_where() -> None:
    with pytest.raises(ConfigError) as caught:
        Selector.parse('{app="x"} | json')
    assert "position 11" in caught.value.message
    assert "pipelines" in caught.value.message


# --- label filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flt, rendered",
    [
        (LabelFilter("status_code", ">=", 500), "status_code >= 500"),
        (LabelFilter("status_code", "=", 200), "status_code = 200"),
        (LabelFilter("latency_ms", "<", 0.25), "latency_ms < 0.25"),
        (LabelFilter("latency_ms", ">", -1.5), "latency_ms > -1.5"),
        (LabelFilter("model_version", "=", "v1.2.1"), 'model_version="v1.2.1"'),
        (LabelFilter("model_version", "!=", 'v1"} or {x="'), 'model_version!="v1\\"} or {x=\\""'),
        (LabelFilter("top1_class", "=~", "tabby.*"), 'top1_class=~"tabby.*"'),
        (LabelFilter("status_code", "=", "200"), 'status_code="200"'),
    ],
)
def test_label_filter_rendering(flt: LabelFilter, rendered: str) -> None:
    assert str(flt) == rendered


@pytest.mark.parametrize(
    "field, op, value",
    [
        ("status_code", ">=", "500"),
        ("status_code", "=~", 5),
        ("status_code", "==", 5),
        ("status code", "=", 5),
        ("ok", "=", True),
        ("latency", "<", float("nan")),
        ("latency", "<", float("inf")),
        ("model", "=~", "("),
        ("model", "=", None),
    ],
)
def test_label_filter_validation(field: str, op: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        LabelFilter(field, op, value)


# --- query shapes ---------------------------------------------------------------------------------


def test_count_query_shape() -> None:
    query = count_query(MAIN, "5m", [LabelFilter("status_code", ">=", 500)])
    assert query == (
        'sum by () (count_over_time({namespace="openfaas-fn", function_name="pytorch-classifier"}'
        ' | json status_code="status_code" | status_code >= 500 | __error__="" [5m]))'
    )


def test_count_query_without_fields_still_parses_json() -> None:
    assert count_query('{app="x"}', "1h") == (
        'sum by () (count_over_time({app="x"} | json | __error__="" [1h]))'
    )


def test_count_query_by_extracts_json_grouping_labels_but_not_selector_labels() -> None:
    query = count_query(MAIN, "1h", [LabelFilter("status_code", "=", 200)],
                        by=["top1_class", "function_name"])  # fmt: skip
    assert query == (
        "sum by (top1_class, function_name) (count_over_time("
        '{namespace="openfaas-fn", function_name="pytorch-classifier"}'
        ' | json status_code="status_code", top1_class="top1_class"'
        ' | status_code = 200 | __error__="" [1h]))'
    )


def test_quantile_query_shape() -> None:
    query = quantile_query(MAIN, 0.99, "latency_ms", "1h", [V121])
    assert query == (
        'quantile_over_time(0.99, {namespace="openfaas-fn", function_name="pytorch-classifier"}'
        ' | json latency_ms="latency_ms", model_version="model_version"'
        ' | model_version="v1.2.1" | unwrap latency_ms | __error__="" [1h]) by ()'
    )


def test_quantile_query_by_and_explicit_fields() -> None:
    query = quantile_query('{app="x"}', 0.5, "latency_ms", "5m", by=["pod"], json_fields=["route"])
    assert query == (
        'quantile_over_time(0.5, {app="x"} | json latency_ms="latency_ms", route="route"'
        ' | unwrap latency_ms | __error__="" [5m]) by (pod)'
    )


def test_unwrap_dropped_query_shape() -> None:
    query = unwrap_dropped_query('{app="x"}', "latency_ms", "1h")
    assert query.startswith(
        'sum by () (count_over_time({app="x"} | json latency_ms="latency_ms"'
        ' | __error__="" | latency_ms!="" | latency_ms!~"'
    )
    assert query.endswith('" [1h]))')


@pytest.mark.parametrize(
    "build",
    [
        lambda: count_query('{app="x"} | json', "1h"),
        lambda: count_query('{app="x"}', "1 hour"),
        lambda: count_query('{app="x"}', "1h", by="pod"),
        lambda: count_query('{app="x"}', "1h", by=["po-d"]),
        lambda: count_query('{app="x"}', "1h", filters=["status_code >= 500"]),
        lambda: count_query('{app="x"}', "1h", json_fields=["a.b"]),
        lambda: quantile_query('{app="x"}', 1.5, "latency_ms", "1h"),
        lambda: quantile_query('{app="x"}', True, "latency_ms", "1h"),
        lambda: quantile_query('{app="x"}', 0.9, "latency ms", "1h"),
        lambda: unwrap_dropped_query('{app="x"}', "latency_ms", "0s"),
    ],
)
def test_builders_reject_bad_input(build: Any) -> None:
    with pytest.raises(ConfigError):
        build()


# --- the built queries against the double ---------------------------------------------------------


def test_p99_across_both_pods_is_one_series(client: LokiClient, expected: dict[str, Any]) -> None:
    samples = client.instant(quantile_query(MAIN, 0.99, "latency_ms", "1h", [V121]), AT)
    assert values(samples) == {(): expected["p99_all"]}


def test_p99_per_pod(client: LokiClient, expected: dict[str, Any]) -> None:
    samples = client.instant(quantile_query(MAIN, 0.99, "latency_ms", "1h", [V121], by=["pod"]), AT)
    assert values(samples) == {
        (("pod", "a"),): expected["p99_pod_a"],
        (("pod", "b"),): expected["p99_pod_b"],
    }


def test_counts_match_expected(client: LokiClient, expected: dict[str, Any]) -> None:
    assert values(client.instant(count_query(MAIN, "1h"), AT)) == {(): expected["count_all"]}
    five_xx = count_query(MAIN, "1h", [LabelFilter("status_code", ">=", 500)])
    assert values(client.instant(five_xx, AT)) == {(): expected["count_5xx"]}
    by_class = count_query(MAIN, "1h", [LabelFilter("status_code", "=", 200)], by=["top1_class"])
    assert values(client.instant(by_class, AT)) == {
        (("top1_class", name),): count for name, count in expected["count_200_by_class"].items()
    }


def test_unwrap_dropped_counts_the_dirty_line(client: LokiClient) -> None:
    # The -dirty stream has one "n/a" latency (counted), one null and one missing (not counted).
    assert values(client.instant(unwrap_dropped_query(DIRTY, "latency_ms", "1h"), AT)) == {(): 1}
    assert client.instant(unwrap_dropped_query(MAIN, "latency_ms", "1h"), AT) == []


def test_the_quantile_survives_the_dirty_line(client: LokiClient) -> None:
    samples = client.instant(quantile_query(DIRTY, 0.99, "latency_ms", "1h", [V121]), AT)
    assert len(samples) == 1


def test_non_json_lines_are_not_counted(client: LokiClient) -> None:
    assert values(client.instant(count_query(NONJSON, "1h"), AT)) == {(): 1}


def test_error_guard_comes_after_the_filters(client: LokiClient) -> None:
    # The dirty stream's "model_loaded" line has no status_code, so `| json status_code=...` sets
    # it to "" and `status_code >= 500` marks the line LabelFilterErr. With the guard before the
    # filters that error would reach the aggregation and fail the whole query.
    five_xx = LabelFilter("status_code", ">=", 500)
    assert client.instant(count_query(DIRTY, "1h", [five_xx]), AT) == []
    guard_first = count_query(DIRTY, "1h", [five_xx]).replace(
        ' | status_code >= 500 | __error__=""', ' | __error__="" | status_code >= 500'
    )
    with pytest.raises(LokiQueryError, match="LabelFilterErr"):
        client.instant(guard_first, AT)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_cannot_change_the_query(client: LokiClient, value: str) -> None:
    # Every line in MAIN has model_version "v1.2.1": an escaping bug would turn these into a
    # broader match (or a parse error); a correct literal simply matches nothing.
    assert (
        client.instant(count_query(MAIN, "1h", [LabelFilter("model_version", "=", value)]), AT)
        == []
    )
    assert client.instant(quantile_query(MAIN, 0.99, "latency_ms", "1h",
                                         [LabelFilter("model_version", "=", value)]), AT) == []  # fmt: skip
    selector = Selector.of({"namespace": "openfaas-fn", "function_name": value})
    assert client.instant(count_query(selector, "1h"), AT) == []


def test_hostile_values_match_exactly_themselves() -> None:
    with LokiDouble() as loki:
        client = LokiClient(loki.url, deadline=5)
        t0 = 1_800_000_000
        lines = [[str((t0 - 10 - i) * 10**9), json.dumps({"model_version": v, "latency_ms": i})]
                 for i, v in enumerate([*HOSTILE, "v1.2.1"])]  # fmt: skip
        client.push([{"stream": {"app": "x", "version": v}, "values": [lines[i]]}
                     for i, v in enumerate([*HOSTILE, "v1.2.1"])])  # fmt: skip
        for value in HOSTILE:
            by_field = count_query('{app="x"}', "1h", [LabelFilter("model_version", "=", value)])
            assert values(client.instant(by_field, t0)) == {(): 1}, value
            by_stream = count_query(Selector.of({"app": "x", "version": value}), "1h")
            assert values(client.instant(by_stream, t0)) == {(): 1}, value


@pytest.mark.parametrize(
    "value, numeric",
    [*[(v, True) for v in ["1", "-1.5", "+2", "1e3", "1E-2", ".5", "5.", "+Inf", "-inf",
                           "Infinity", "NaN", "0x1p-2", "0X1.8P1"]],
     *[(v, False) for v in ["n/a", "1,5", "0x10", "1e", "--1", "five", " 1", "1 ", "inf1", "."]]],
)  # fmt: skip
def test_numeric_check_agrees_with_unwrap(value: str, numeric: bool) -> None:
    # The unwrap-dropped regex must accept exactly what unwrap (Go's ParseFloat) accepts: a raw
    # unwrap without the error guard fails the query precisely on the values it cannot parse.
    with LokiDouble() as loki:
        client = LokiClient(loki.url, deadline=5)
        t0 = 1_800_000_000
        entry = [str((t0 - 10) * 10**9), json.dumps({"latency_ms": value})]
        client.push([{"stream": {"app": "x"}, "values": [entry]}])
        raw_unwrap = 'max_over_time({app="x"} | json | unwrap latency_ms [1h]) by (app)'
        try:
            client.instant(raw_unwrap, t0)
            parsed = True
        except LokiQueryError as error:
            assert "SampleExtractionErr" in error.message
            parsed = False
        dropped = client.instant(unwrap_dropped_query('{app="x"}', "latency_ms", "1h"), t0)
        assert parsed == numeric
        assert values(dropped) == ({} if numeric else {(): 1})


# --- Go's ParseFloat, durations, the plan's filters ---------------------------------------------

# Each value as Go 1.2x's strconv.ParseFloat(value, 64) answers it (run against Go itself): the
# number, or None for an error. Loki's unwrap and numeric label filters call exactly that.
GO_PARSE_FLOAT = {
    "1_000": 1000.0, "0x1_0p0": 16.0, "1e999": None, "-1e999": None, "inf": math.inf,
    "+Inf": math.inf, "-Infinity": -math.inf, "NaN": "nan", "nan": "nan", "-0": -0.0, ".5": 0.5,
    "5.": 5.0, "0x1p-2": 0.25, "0x.8p1": 1.0, "1e-400": 0.0, " 5": None, "5 ": None, "": None,
    "1__0": None, "_1": None, "0x_1p0": 1.0, "1e+5": 1e5, "1E5": 1e5, "00012": 12.0,
    "+.e5": None, "0.0e0": 0.0, "infinity": math.inf, "-nan": None, "+nan": None, "1_.5": None,
    "1._5": None, "1.5_5": 1.55, "1e_5": None, "1e5_0": 1e50, "0x1p99999": None, "0x1.8P1": 3.0,
    "0x1p": None, "0x10": None, "1_000e1_0": 1e13, "0_0": 0.0, "0x0p0": 0.0, "-0x0.0p0": -0.0,
    ".": None, "0.": 0.0,
}  # fmt: skip


@pytest.mark.parametrize("text", sorted(GO_PARSE_FLOAT))
def test_parse_go_float_answers_like_go(text: str) -> None:
    want, got = GO_PARSE_FLOAT[text], logql.parse_go_float(text)
    if want == "nan":
        assert got is not None and math.isnan(got)
    else:
        assert got == want and (want is None or math.copysign(1, got) == math.copysign(1, want))
    assert (logql._GO_FLOAT.fullmatch(text) is not None) == (want is not None or text in ("1e999", "-1e999", "0x1p99999"))


@pytest.mark.parametrize("seconds, text", [(3600, "1h"), (5400, "1h30m"), (90, "1m30s"), (86400, "1d"),
                                           (721 * 3600, "30d1h"), (1, "1s")])
def test_format_duration_is_the_shortest_loki_duration(seconds: int, text: str) -> None:
    assert logql.format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_format_duration_refuses_what_is_not_a_whole_positive_second(bad: Any) -> None:
    with pytest.raises(ConfigError):
        logql.format_duration(bad)


def test_the_plans_filters_marks_and_offsets_render_as_loki_reads_them() -> None:
    both = logql.AnyOf((LabelFilter("model_version", "=", "v2"), LabelFilter("model_version", "=", "v1")))
    query = count_query(MAIN, "2h", [both, logql.UsableNumber("latency_ms")],
                        by=["model_version", "mlobs_error"], offset="4h", mark=logql.ErrorMark("mlobs_error"))
    assert query == (
        'sum by (model_version, mlobs_error) (count_over_time({namespace="openfaas-fn", '
        'function_name="pytorch-classifier"} | json model_version="model_version", '
        'latency_ms="latency_ms" | model_version="v2" or model_version="v1" | '
        "latency_ms < 1KB or latency_ms >= 1KB | latency_ms == 0 or latency_ms != 0 | "
        'label_format mlobs_error="{{.__error__}}" | drop __error__, __error_details__ [2h] offset 4h))'
    )
    with pytest.raises(ConfigError):
        count_query(MAIN, "1h", offset="a while")
    with pytest.raises(ConfigError):
        logql.AnyOf(())
    with pytest.raises(ConfigError):
        logql.UsableNumber("latency ms")


USABLE = {"12.5": 12.5, "0": 0.0, "5.": 5.0, ".5": 0.5, "00012": 12.0, "18446744073709551615": None,
          "18446744073709551614.9": None, "1844674407370955161": 1844674407370955161.0,
          "-0": None, "1_000": None, "0x1p3": None, "+5": None, "1e5": None, "1e-400": None,
          "NaN": None, "Infinity": None, "-Infinity": None, "inf": None, "-5": None, "1e999": None,
          "n/a": None, "": None, "12.5 ": None, " 12.5": None, "1,5": None, "1,000": None,
          "12kb": None, "1.2.3": None, ".": None, "\u0661\u0662": None, "true": None}  # fmt: skip


@pytest.mark.parametrize("value", sorted(USABLE))
def test_usable_numbers_are_what_the_filters_let_through(value: str) -> None:
    # On the double: a count with UsableNumber and the error guard counts the line exactly when
    # usable_number reads a number (the file source's rule), and the mark says why otherwise.
    assert logql.usable_number(value) == USABLE[value]
    with LokiDouble() as loki:
        client = LokiClient(loki.url, deadline=5)
        t0 = 1_800_000_000
        client.push([{"stream": {"app": "x"},
                      "values": [[str((t0 - 10) * 10**9), json.dumps({"latency_ms": value})]]}])
        usable = logql.UsableNumber("latency_ms")
        counted = client.instant(count_query('{app="x"}', "1h", [usable]), t0)
        marked = client.instant(count_query('{app="x"}', "1h", [usable], by=["mlobs_error"],
                                            mark=logql.ErrorMark("mlobs_error")), t0)
    assert (values(counted) == {(): 1}) == (USABLE[value] is not None)
    expected = () if USABLE[value] is not None else (("mlobs_error", "LabelFilterErr"),)
    assert values(marked) == {expected: 1}
