"""LokiClient over real HTTP against the Loki double: auth, retries, deadlines, errors, parsing."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from mlobs.errors import EXIT_CANNOT_EVALUATE, ConfigError, SourceUnavailable
from mlobs.loki import (
    LokiClient,
    LokiQueryError,
    LokiResponseError,
    LokiUnavailable,
    Sample,
    Selector,
    count_query,
)
from servers.loki import LokiDouble

T0 = 1_800_000_000  # whole seconds, so range steps line up with the pushed lines
APP = Selector.of({"app": "classifier"})
COUNT_ALL = count_query(APP, "1h")
TOKEN = "tok-3f9a-secret"
PASSWORD = "pw-77c1-secret"


@pytest.fixture
def loki() -> Iterator[LokiDouble]:
    with LokiDouble() as double:
        yield double


def make_client(url: str, **options: Any) -> LokiClient:
    # Small waits keep the retry tests quick; nothing below asserts on time.
    settings: dict[str, Any] = {"deadline": 5.0, "timeout": 2.0, "backoff_base": 0.01,
                                "backoff_max": 0.05}  # fmt: skip
    settings.update(options)
    return LokiClient(url, **settings)


def line(offset_s: int, **fields: Any) -> list[str]:
    return [str((T0 + offset_s) * 1_000_000_000), json.dumps(fields)]


def push_requests(client: LokiClient, *latencies: Any) -> None:
    values = [line(-60 * (i + 1), status_code=200, latency_ms=v) for i, v in enumerate(latencies)]
    client.push([{"stream": {"app": "classifier"}, "values": values}])


def test_instant_query_returns_samples_and_counts_queries(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    push_requests(client, 10, 20, 30)

    assert client.instant(COUNT_ALL, T0) == [Sample({}, 3.0)]
    assert client.queries_issued == 1
    assert client.requests_sent == 2  # the push and the query


def test_time_is_sent_as_integer_nanoseconds(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    client.instant(COUNT_ALL, 1795557698.077)
    client.range(COUNT_ALL, 1795557000.5, 1795557698.077, 60)

    instant, ranged = loki.requests
    assert instant.path == "/loki/api/v1/query"
    assert instant.params == {"query": COUNT_ALL, "time": "1795557698077000000"}
    assert ranged.path == "/loki/api/v1/query_range"
    assert ranged.params["start"] == "1795557000500000000"
    assert ranged.params["end"] == "1795557698077000000"
    assert ranged.params["step"] == "60s"


def test_range_query_returns_points_and_omits_empty_steps(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    push_requests(client, 10, 20)  # at T0-60 and T0-120
    query = count_query(APP, "1m")

    (series,) = client.range(query, T0 - 600, T0, 60)

    assert series.labels == {}
    # A 1m window only holds a line at the step it falls on; other steps are absent, not 0.
    assert series.points == [(T0 - 120.0, 1.0), (T0 - 60.0, 1.0)]


def test_no_data_is_an_empty_list(loki: LokiDouble) -> None:
    assert make_client(loki.url).instant(COUNT_ALL, T0) == []


def test_nan_and_infinite_values_parse(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    for app, value in (("nan", "NaN"), ("pinf", "+Inf"), ("ninf", "-Inf")):
        client.push([{"stream": {"app": app}, "values": [line(-1, latency_ms=value)]}])

    def total(app: str) -> float:
        query = f'sum by (app) (sum_over_time({{app="{app}"}} | json | unwrap latency_ms [1h]))'
        (sample,) = client.instant(query, T0)
        return sample.value

    assert math.isnan(total("nan"))
    assert total("pinf") == math.inf
    assert total("ninf") == -math.inf


def test_bearer_token_and_tenant_headers_arrive(loki: LokiDouble) -> None:
    make_client(loki.url, token=TOKEN, tenant="team-ml").instant(COUNT_ALL, T0)

    (request,) = loki.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-scope-orgid"] == "team-ml"
    assert request.headers["user-agent"].startswith("mlobs/")


def test_basic_auth_header_arrives(loki: LokiDouble) -> None:
    make_client(loki.url, username="reader", password=PASSWORD).instant(COUNT_ALL, T0)

    (request,) = loki.requests
    assert request.headers["authorization"] == "Basic cmVhZGVyOnB3LTc3YzEtc2VjcmV0"
    assert "x-scope-orgid" not in request.headers


def test_credentials_in_the_url_become_basic_auth(loki: LokiDouble) -> None:
    url = loki.url.replace("http://", f"http://reader:{PASSWORD}@")
    client = make_client(url)
    client.instant(COUNT_ALL, T0)

    assert PASSWORD not in client.base_url
    assert loki.requests[0].headers["authorization"] == "Basic cmVhZGVyOnB3LTc3YzEtc2VjcmV0"


def test_no_credentials_send_no_authorization(loki: LokiDouble) -> None:
    make_client(loki.url).instant(COUNT_ALL, T0)
    assert "authorization" not in loki.requests[0].headers


def test_429_twice_then_success(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    loki.fail_next(429, times=2, body="Too Many Requests")

    assert client.instant(COUNT_ALL, T0) == []
    assert client.requests_sent == 3
    assert client.queries_issued == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(loki: LokiDouble, status: int) -> None:
    client = make_client(loki.url)
    loki.fail_next(status)

    assert client.instant(COUNT_ALL, T0) == []
    assert client.requests_sent == 2


def test_other_server_errors_are_unavailable_without_retry(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    loki.fail_next(501, body="not implemented")

    with pytest.raises(LokiUnavailable, match="HTTP 501: not implemented"):
        client.instant(COUNT_ALL, T0)
    assert client.requests_sent == 1


def test_retry_after_zero_is_honoured(loki: LokiDouble) -> None:
    client = make_client(loki.url, backoff_base=30.0, backoff_max=30.0)
    loki.fail_next(503, retry_after=0)

    # Without Retry-After the backoff could pick up to 30s, beyond the 5s deadline.
    assert client.instant(COUNT_ALL, T0) == []
    assert client.requests_sent == 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(loki: LokiDouble) -> None:
    client = make_client(loki.url, deadline=5.0)
    loki.fail_next(429, times=3, retry_after=3600, body="slow down")

    with pytest.raises(LokiUnavailable) as caught:
        client.instant(COUNT_ALL, T0)

    assert client.requests_sent == 1
    assert "HTTP 429: slow down" in caught.value.message
    assert "retry after 3600s" in caught.value.message


def test_persistent_503_gives_unavailable_within_the_deadline(loki: LokiDouble) -> None:
    client = make_client(loki.url, token=TOKEN, deadline=0.5)
    loki.fail_next(503, times=10_000, body="upstream connect error")

    with pytest.raises(LokiUnavailable) as caught:
        client.instant(COUNT_ALL, T0)

    error = caught.value
    assert isinstance(error, SourceUnavailable)
    assert error.exit_code == EXIT_CANNOT_EVALUATE
    assert client.requests_sent >= 2
    assert client.queries_issued == 1
    assert loki.url in error.message
    assert "HTTP 503: upstream connect error" in error.message
    assert TOKEN not in error.one_line()
    assert "\n" not in error.one_line()


def test_connection_refused_gives_unavailable(loki: LokiDouble) -> None:
    client = make_client(loki.url, token=TOKEN, deadline=0.3)
    loki.stop()

    with pytest.raises(LokiUnavailable) as caught:
        client.instant(COUNT_ALL, T0)

    assert loki.url in caught.value.message
    assert "refused" in caught.value.message.lower()
    assert TOKEN not in caught.value.one_line()
    assert client.requests_sent >= 1


def test_a_slow_answer_times_out_and_is_retried(loki: LokiDouble) -> None:
    client = make_client(loki.url, timeout=0.2)
    loki.stall_next(1.0)

    assert client.instant(COUNT_ALL, T0) == []
    assert client.requests_sent == 2


def test_a_timeout_can_be_reported_at_once_instead_of_retried(loki: LokiDouble) -> None:
    # The query plan splits a timed-out count into sub-windows: it must hear of the timeout at
    # once, not after the same query timed out again and again until the deadline.
    from mlobs.loki import LokiTimeout

    client = make_client(loki.url, timeout=0.2)
    loki.stall_next(1.0)
    with pytest.raises(LokiTimeout) as caught:
        client.instant(COUNT_ALL, T0, fail_fast_timeouts=True)
    assert "timed out" in caught.value.message and "1 attempt" in caught.value.message
    assert client.requests_sent == 1


def test_a_504_from_loki_is_a_timeout_when_asked(loki: LokiDouble) -> None:
    from mlobs.loki import LokiTimeout

    client = make_client(loki.url)
    loki.fail_next(504, body="request timed out, decrease the duration of the request")
    with pytest.raises(LokiTimeout, match="HTTP 504: request timed out"):
        client.instant(COUNT_ALL, T0, fail_fast_timeouts=True)
    loki.fail_next(504)
    assert client.instant(COUNT_ALL, T0) == []  # otherwise a 504 is retried like any 5xx


def test_queries_from_many_threads_are_all_counted(loki: LokiDouble) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(loki.url)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.instant(COUNT_ALL, T0), range(40)))
    assert client.queries_issued == 40 and client.requests_sent == 40


def test_answers_that_never_come_give_unavailable(loki: LokiDouble) -> None:
    client = make_client(loki.url, timeout=0.1, deadline=0.4)
    loki.stall_next(0.5, times=50)

    with pytest.raises(LokiUnavailable) as caught:
        client.instant(COUNT_ALL, T0)
    assert "timed out" in caught.value.message


def test_bad_query_raises_query_error_quoting_loki_and_the_query(loki: LokiDouble) -> None:
    client = make_client(loki.url)

    with pytest.raises(LokiQueryError) as caught:
        client.instant("{namespace=", T0)

    error = caught.value
    assert error.status == 400
    assert error.loki_message == (
        "parse error at line 1, col 12: syntax error: unexpected $end, expecting STRING"
    )
    assert error.loki_message in error.message
    assert "query: {namespace=" in error.message
    assert client.requests_sent == 1  # a 400 is never retried


def test_pipeline_error_quotes_the_first_line(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    push_requests(client, "n/a")
    query = 'quantile_over_time(0.99, {app="classifier"} | json | unwrap latency_ms [1h]) by (app)'

    with pytest.raises(LokiQueryError) as caught:
        client.instant(query, T0)

    assert caught.value.loki_message.startswith("pipeline error: 'SampleExtractionErr' for series:")
    assert query in caught.value.message


def test_unauthorised_is_a_query_error_with_a_hint(loki: LokiDouble) -> None:
    client = make_client(loki.url, token=TOKEN)
    loki.fail_next(401, body="no org id\n")

    with pytest.raises(LokiQueryError) as caught:
        client.instant(COUNT_ALL, T0)

    assert caught.value.status == 401
    assert caught.value.loki_message == "no org id"
    assert caught.value.hint is not None and "token" in caught.value.hint
    assert TOKEN not in caught.value.one_line()
    assert client.requests_sent == 1


def test_a_log_query_is_refused(loki: LokiDouble) -> None:
    with pytest.raises(LokiQueryError) as caught:
        make_client(loki.url).instant('{app="classifier"}', T0)
    assert "log queries are not supported as an instant query type" in caught.value.message


def test_a_body_that_is_not_json_is_a_response_error(loki: LokiDouble) -> None:
    loki.fail_next(200, body="<html>login</html>", content_type="text/html")

    with pytest.raises(LokiResponseError) as caught:
        make_client(loki.url).instant(COUNT_ALL, T0)
    assert "<html>login</html>" in caught.value.message


def test_push_sends_loki_push_format(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    client.push([{"stream": {"app": "classifier"}, "values": [[T0 * 10**9, '{"a": 1}']]}])

    request = loki.requests[0]
    assert (request.method, request.path) == ("POST", "/loki/api/v1/push")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "streams": [{"stream": {"app": "classifier"}, "values": [[str(T0 * 10**9), '{"a": 1}']]}]
    }


def test_rejected_push_is_a_query_error(loki: LokiDouble) -> None:
    with pytest.raises(LokiQueryError) as caught:
        make_client(loki.url).push([{"stream": {}, "values": [[1, "x"]]}])
    assert "push" in caught.value.message


def test_repr_and_messages_hide_credentials(loki: LokiDouble) -> None:
    client = make_client(loki.url, username="reader", password=PASSWORD)
    assert PASSWORD not in repr(client)
    with pytest.raises(LokiQueryError) as caught:
        client.instant("{namespace=", T0)
    assert PASSWORD not in caught.value.one_line()


@pytest.mark.parametrize(
    "url, options",
    [
        ("loki.example.com", {}),
        ("ftp://loki.example.com", {}),
        ("http://", {}),
        ("http://loki:notaport", {}),
        ("http://loki", {"token": "t", "username": "u", "password": "p"}),
        ("http://loki", {"username": "u"}),
        ("http://u:p@loki", {"token": "t"}),
        ("http://loki", {"timeout": 0}),
        ("http://loki", {"deadline": -1}),
        ("http://loki", {"ca_bundle": "/nonexistent/ca.pem"}),
    ],
)
def test_bad_configuration_is_a_config_error(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LokiClient(url, **options)


def test_invalid_url_message_hides_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        LokiClient(f"ftp://reader:{PASSWORD}@loki")
    assert PASSWORD not in caught.value.one_line()


def test_ca_bundle_is_used_for_verification(tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    client = LokiClient("https://loki.example.com", ca_bundle=bundle)
    settings = client._pool.connection_pool_kw
    assert settings["ca_certs"] == str(bundle)
    assert settings["cert_reqs"] == "CERT_REQUIRED"


def test_bad_arguments_are_config_errors(loki: LokiDouble) -> None:
    client = make_client(loki.url)
    with pytest.raises(ConfigError):
        client.instant("  ", T0)
    with pytest.raises(ConfigError):
        client.instant(COUNT_ALL, math.nan)
    with pytest.raises(ConfigError):
        client.range(COUNT_ALL, T0, T0 - 60, 60)
    with pytest.raises(ConfigError):
        client.range(COUNT_ALL, T0 - 60, T0, 0)
    assert loki.requests == []
