"""Bounded HTTP serving, below every other layer: the agent's /metrics, the pods' reload
endpoint and the peer server share it (httpserver.py says what it bounds)."""

from modelcache.serving.httpserver import (
    HEADER_TIMEOUT_S,
    LINGER_S,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_HEAD,
    MIN_FILE_RATE,
    REQUEST_TIMEOUT_S,
    WRITE_TIMEOUT_S,
    BoundedHandler,
    BoundedHTTPServer,
    FileRegion,
    Framing,
    Request,
    framing_of,
    json_answer,
    parse_content_length,
)
from modelcache.serving.metrics import MetricsServer, start_metrics_server

__all__ = [
    "HEADER_TIMEOUT_S",
    "LINGER_S",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "MIN_FILE_RATE",
    "REQUEST_TIMEOUT_S",
    "WRITE_TIMEOUT_S",
    "BoundedHTTPServer",
    "BoundedHandler",
    "FileRegion",
    "Framing",
    "MetricsServer",
    "Request",
    "framing_of",
    "json_answer",
    "parse_content_length",
    "start_metrics_server",
]
