"""Bounded HTTP serving, below every other layer: the agent's /metrics and the pods'
reload endpoint share it (httpserver.py says what it bounds)."""

from modelcache.serving.httpserver import (
    HEADER_TIMEOUT_S,
    LINGER_S,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_HEAD,
    REQUEST_TIMEOUT_S,
    WRITE_TIMEOUT_S,
    BoundedHandler,
    BoundedHTTPServer,
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
    "REQUEST_TIMEOUT_S",
    "WRITE_TIMEOUT_S",
    "BoundedHTTPServer",
    "BoundedHandler",
    "Framing",
    "MetricsServer",
    "Request",
    "framing_of",
    "json_answer",
    "parse_content_length",
    "start_metrics_server",
]
