"""URLs that may carry a secret: one rule for what counts, how it is refused and how it prints.

A URL given to modelcache (a source, an endpoint flag, OSS_ENDPOINT, a Secret's endpoint)
ends up in logs, events, the recorded source and NodeCache status, so a secret inside one
would be published. A user:password@ part, a query string (`?X-Amz-Signature=...`,
`?token=...`) and a fragment are therefore refused wherever a URL enters, and every URL
printed goes through `redact_url`. The rule is deliberately blunt: an `@` anywhere reads as
userinfo, since a password may hold `/`, `?` or `#` (about half of all AWS secret keys hold a `/`)
and so split the URL elsewhere than its writer meant.
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
HIDDEN = "***"
SHOWN_CHARS = 200
"""How much of a refused URL (redacted) its error quotes: one bounded line."""

USERINFO_REFUSED = "credentials in a URL are refused"
ENDPOINT_ADVICE = (
    "credentials go in the access-key settings: --access-key-id/--access-key-secret, or "
    "OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) in the "
    "environment or the Secret"
)


class SecretInURL(ValueError):  # noqa: N818 - reads as what it is at the raise site
    """A URL carries user:password@, a query string or a fragment; the message shows it
    redacted and names where it came from."""


def redact_url(url: str) -> str:
    """`url` fit to print: everything up to its last `@` becomes `***@`, a query or fragment
    becomes `?***` / `#***`. A URL without `@`, `?` and `#` comes back unchanged. Never raises:
    it prints what is being refused."""
    scheme, separator, rest = url.partition("://")
    if not separator or not _SCHEME.fullmatch(scheme):
        scheme, separator, rest = "", "", url
    if "@" in rest:  # the last `@` ends userinfo, whatever `/?#` a password holds
        rest = f"{HIDDEN}@{rest.rpartition('@')[2]}"
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        rest = f"{rest[: cut + 1]}{HIDDEN}"
    return f"{scheme}{separator}{rest}"


def secret_in_url(url: str) -> str | None:
    """What in `url` could hold a secret, in words; None when it has no `@`, `?` or `#`
    (and then `redact_url` leaves it unchanged)."""
    if "@" in url:
        return f"{USERINFO_REFUSED} ('@' marks user:password, which would be logged)"
    if "?" in url:
        return "a query string in a URL is refused (it can hold a token or a signature)"
    if "#" in url:
        return "a '#' fragment in a URL is refused (it can hold a token)"
    return None


def check_url(url: str, where: str, advice: str = ENDPOINT_ADVICE) -> str:
    """`url` when nothing in it can be a secret; else SecretInURL naming `where` (a flag, an
    environment variable, a Secret's key; "" where the caller names it) and the URL redacted,
    never the secret."""
    problem = secret_in_url(url)
    if problem is None:
        return url
    shown = redact_url(url)
    if len(shown) > SHOWN_CHARS:
        shown = f"{shown[:SHOWN_CHARS]}..."
    raise SecretInURL(f"{where} {shown}: {problem}; {advice}".lstrip())
