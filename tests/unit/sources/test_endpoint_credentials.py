"""An endpoint carrying credentials or a token is refused by the real OSS and S3 clients,
whichever way it comes (flag, environment, Secret), naming where it came from, never echoing
the secret; endpoints without any are used as given and print unchanged."""

from __future__ import annotations

import re

import pytest

from modelcache.sources import Credentials, InvalidSourceURL, open_source, parse_source_url

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
PIECES = [SECRET, *re.split(r"[/+]", SECRET)]  # what a parser cutting at `/` or `+` would echo
ENDPOINTS = [
    f"http://AKIAEXAMPLE:{SECRET}@127.0.0.1:8333",
    f"AKIAEXAMPLE:{SECRET}@oss-cn-hangzhou.aliyuncs.com",
    f"https://minio.example:9000/?X-Amz-Signature={SECRET}",
    f"https://minio.example:9000/#token={SECRET}",
]
ENV = {
    "oss": ["OSS_ENDPOINT"],
    "s3": ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"],
}


@pytest.fixture(autouse=True)
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for names in ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("scheme", "variable"), [(s, v) for s, vs in ENV.items() for v in vs])
def test_an_endpoint_variable_with_a_secret_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, scheme: str, variable: str, endpoint: str
) -> None:
    monkeypatch.setenv(variable, endpoint)
    with pytest.raises(InvalidSourceURL) as refused:
        open_source(f"{scheme}://models/lora")
    message = str(refused.value)
    assert not any(piece in message for piece in PIECES)
    assert message.startswith(f"{variable} ")
    assert "***" in message


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("scheme", ["oss", "s3"])
@pytest.mark.parametrize("origin", ["--endpoint", "secret studio/store key OSS_ENDPOINT"])
def test_an_endpoint_given_with_a_secret_is_refused_naming_its_origin(
    scheme: str, endpoint: str, origin: str
) -> None:
    given = Credentials(endpoint=endpoint, access_key_id="id", endpoint_origin=origin)
    assert not any(piece in repr(given) for piece in PIECES)
    with pytest.raises(InvalidSourceURL) as refused:
        open_source(f"{scheme}://models/lora", given)
    assert not any(piece in str(refused.value) for piece in PIECES)
    assert str(refused.value).startswith(f"{origin} ")
    assert "access-key settings" in str(refused.value)


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_an_endpoint_without_secrets_is_used_and_printed_as_given(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("OSS_ENDPOINT", "http://127.0.0.1:8333")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    client = open_source(f"{scheme}://models/lora")
    assert "endpoint='http://127.0.0.1:8333'" in repr(client)


def test_the_flag_endpoint_wins_over_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSS_ENDPOINT", f"http://user:{SECRET}@127.0.0.1:1")
    client = open_source("oss://models/lora", Credentials(endpoint="http://127.0.0.1:8333"))
    assert not any(piece in repr(client) for piece in PIECES)


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAEXAMPLE:{SECRET}@models/lora",  # the secret holds a '/': no '@' in netloc
        f"oss://AKIAEXAMPLE:{SECRET}@models/lora",
        f"https://models.example/lora?X-Amz-Signature={SECRET}",
        f"https://models.example/lora#{SECRET}",
    ],
)
def test_a_source_url_whose_secret_splits_it_is_still_refused(url: str) -> None:
    with pytest.raises(InvalidSourceURL) as refused:
        parse_source_url(url)
    assert not any(piece in str(refused.value) for piece in PIECES)
    assert str(refused.value).startswith("source URL ")
