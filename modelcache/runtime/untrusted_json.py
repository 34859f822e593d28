"""JSON from a published version (adapter configs, safetensors metadata): anything may be in it.

`json.loads` fails in more ways than `JSONDecodeError` (nesting deeper than the
parser's recursion, a number too long to convert, bytes that are not UTF-8); each
of them is the one clean refusal here, so none escapes a swap as a crash.
"""

from __future__ import annotations

import json
from typing import Any

from modelcache.runtime.errors import RefusalKind, SwapRefused


def parse_json(data: str | bytes, kind: RefusalKind, what: str) -> Any:
    """Parse, or refuse naming `what` (the file, or the file and key)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:  # ValueError: bad JSON, UTF-8, long ints
        raise SwapRefused(kind, f"{what} is not JSON: {str(error)[:200]}") from None


def json_object(data: str | bytes, kind: RefusalKind, what: str) -> dict[str, Any]:
    """Parse a JSON object, or refuse: a list or a number where an object belongs."""
    value = parse_json(data, kind, what)
    if not isinstance(value, dict):
        raise SwapRefused(kind, f"{what} is not a JSON object")
    return value
