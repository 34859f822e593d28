"""A secret inside a URL (user:password@, ?token=) is refused with its URL redacted, and
printing any URL through `redact_url` never shows the secret."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from modelcache.api.urls import SecretInURL, check_url, redact_url

HOST = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,30}(:[0-9]{1,5})?", fullmatch=True)
PATH = st.from_regex(r"(/[A-Za-z0-9._\-]{1,12}){0,3}", fullmatch=True)
SCHEME = st.sampled_from(["http", "https", "oss", "s3", ""])
USER = st.text(alphabet="abcdefghijklmnopqrstuvwxyzAKI0123456789", min_size=1, max_size=20)
# Any characters a password or token may hold, `/ ? # @ :` included (AWS secret keys hold `/`).
SECRET = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=6, max_size=40).map(
    lambda text: f"S{text}"
)


def joined(scheme: str, rest: str) -> str:
    return f"{scheme}://{rest}" if scheme else rest


@given(scheme=SCHEME, user=USER, secret=SECRET, host=HOST, path=PATH)
def test_a_password_never_appears_redacted_nor_in_the_refusal(
    scheme: str, user: str, secret: str, host: str, path: str
) -> None:
    url = joined(scheme, f"{user}:{secret}@{host}{path}")
    assume(secret not in f"{scheme}://{host}{path}***@?#")
    assert secret not in redact_url(url)
    with pytest.raises(SecretInURL) as refused:
        check_url(url, "OSS_ENDPOINT")
    message = str(refused.value)
    assert secret not in message
    assert message.startswith("OSS_ENDPOINT ")
    assert "credentials in a URL are refused" in message
    assert "access-key settings" in message


@given(scheme=SCHEME, host=HOST, path=PATH, name=st.sampled_from(["X-Amz-Signature", "token"]))
def test_a_token_in_a_query_or_fragment_never_appears(
    scheme: str, host: str, path: str, name: str
) -> None:
    token = "T0KEN-5ecret"
    for url in (
        joined(scheme, f"{host}{path}?{name}={token}"),
        joined(scheme, f"{host}{path}#{name}={token}"),
    ):
        assert token not in redact_url(url)
        with pytest.raises(SecretInURL) as refused:
            check_url(url, "--endpoint")
        assert token not in str(refused.value)
        assert str(refused.value).startswith("--endpoint ")


@given(scheme=SCHEME, host=HOST, path=PATH)
def test_a_url_without_userinfo_or_query_passes_unchanged(
    scheme: str, host: str, path: str
) -> None:
    url = joined(scheme, f"{host}{path}")
    assert redact_url(url) == url
    assert check_url(url, "AWS_ENDPOINT_URL") == url


@given(st.text())
def test_redacting_any_text_never_raises_and_leaves_nothing_after_a_query(text: str) -> None:
    shown = redact_url(text)
    for mark in "?#":
        if mark in shown:
            assert shown.endswith(f"{mark}***")
    assert shown.count("@") <= 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://AKIAEXAMPLE:wJal/rXUt+nFEMI@oss.example.com", "https://***@oss.example.com"),
        ("https://user:p?ss@minio:9000/base", "https://***@minio:9000/base"),
        ("user:p#ss@oss-cn-hangzhou.aliyuncs.com", "***@oss-cn-hangzhou.aliyuncs.com"),
        ("http://127.0.0.1:8333/?X-Amz-Signature=abc", "http://127.0.0.1:8333/?***"),
        ("host?token=abc&next=http://x", "host?***"),
        ("oss-cn-hangzhou.aliyuncs.com", "oss-cn-hangzhou.aliyuncs.com"),
    ],
)
def test_redacted_forms(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_huge_url_is_refused_in_one_bounded_line() -> None:
    url = "https://user:pw@" + "h" * 100_000
    with pytest.raises(SecretInURL) as refused:
        check_url(url, "--endpoint")
    assert len(str(refused.value)) < 1000
    assert "\n" not in str(refused.value)
