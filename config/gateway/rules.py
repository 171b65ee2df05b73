"""Rules for single values of the gateway config: names, scopes, scope patterns, URLs.

Each ``*_problem`` function returns why a text is unacceptable, or None, so it can be passed as
``Fields.string(check=...)``.
"""

from __future__ import annotations

import re

from config.fields import Fields
from config.gateway.model import HostPort

MAX_FRAME_BYTES_CAP = 1_089_608
MIN_FRAME_BYTES = 4096
MAX_SCOPE_BYTES = 255
MAX_NAME_BYTES = 64
MAX_URL_BYTES = 2048

DEFAULT_TIERS = (("public", 0), ("internal", 1), ("restricted", 2), ("secret", 3))
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"

# Scope names follow the envelope's rule (gateway.envelope.claims.valid_scope); a test checks the
# two agree.
_SCOPE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9._\-]*)*")
_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")


def scope_problem(text: str) -> str | None:
    """Why ``text`` is not a scope name, or None."""
    if not text.isascii() or len(text) > MAX_SCOPE_BYTES:
        return f"expected a scope name of at most {MAX_SCOPE_BYTES} ASCII bytes, found {text!r}"
    if _SCOPE.fullmatch(text) is None or any(s.startswith(".") for s in text.split("/")):
        return (
            "expected a scope name: segments of letters, digits, '.', '_' or '-' separated by '/'"
            f", found {text!r}"
        )
    return None


def scope_pattern_problem(text: str) -> str | None:
    """Why ``text`` is not a scope pattern (a scope, ``prefix/*`` or ``*``), or None."""
    if text == "*":
        return None
    base = text.removesuffix("/*")
    if (why := scope_problem(base)) is not None:
        return why.replace("a scope name", "a scope pattern (a scope, 'prefix/*' or '*')", 1)
    return None


def name_problem(text: str) -> str | None:
    if len(text) > MAX_NAME_BYTES or _NAME.fullmatch(text) is None:
        return (
            f"expected a name of lowercase letters, digits, '_' or '-' (at most {MAX_NAME_BYTES}"
            f" bytes), found {text!r}"
        )
    return None


def host_port_value(
    fields: Fields, key: str, default: str | None = None, *, allow_port_zero: bool = False
) -> HostPort:
    host, port = fields.host_port(key, default)
    if host and port == 0 and not allow_port_zero:
        fields.problem(key, "port 0 is only allowed for listen addresses")
    return HostPort(host, port)


def socket_problem(text: str) -> str | None:
    if not text.startswith("unix:///"):
        return (
            f"expected a Workload API address such as unix:///run/spire/agent.sock, found {text!r}"
        )
    return None


def url_problem(text: str) -> str | None:
    if (
        not text.startswith("https://")
        or len(text) <= len("https://")
        or any(c in text for c in " \t\r\n")
    ):
        return f"expected an https:// URL, found {text!r}"
    return None
