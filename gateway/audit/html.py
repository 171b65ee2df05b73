"""The governance-flow graph as one self-contained, interactive HTML page.

The page is ``assets/graph.html`` with ``graph.css``, ``graph.js`` and the graph's JSON inlined:
it loads nothing else (its Content-Security-Policy forbids any fetch: ``default-src 'none'``, and
the one script is allowed by its SHA-256 hash), so it opens from a file on an air-gapped machine.
The same bytes are what the gateway's HTTP port serves as ``/graph``.

Scope names and other strings in the log are attacker-influenced. The JSON is embedded in a
``<script type="application/json">`` with ``<``, ``>`` and ``&`` escaped as ``\\u003c`` etc., so
no string can close the element; the script renders strings with ``textContent`` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from functools import cache
from importlib import resources

from gateway.audit.graph import GovernanceGraph
from gateway.audit.render import to_json

MAX_EMBEDDED_FLOWS = 5000  # the largest flows written into the page (bounds its size)
MAX_DRAWN_FLOWS = 2000  # the largest flows, after filtering, that the page draws at once
_PLACEHOLDER = re.compile(r"\{\{(CSP|CSS|JS|DATA)\}\}")


@cache
def _asset(name: str) -> str:
    return resources.files("gateway.audit").joinpath("assets", name).read_text("utf-8")


def embed_json(doc: object) -> str:
    """JSON safe to place inside a ``<script>`` element: no ``<``, ``>`` or ``&`` survive."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def content_security_policy(script: str) -> str:
    """The page's policy: nothing may be fetched; only our inline script and styles run."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        "img-src 'none'; connect-src 'none'; font-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


def render_html(
    graph: GovernanceGraph,
    *,
    max_embedded: int = MAX_EMBEDDED_FLOWS,
    max_drawn: int = MAX_DRAWN_FLOWS,
) -> bytes:
    """The interactive page for ``graph``, as UTF-8 bytes.

    Args:
        graph: the aggregated graph (from :func:`graph_from_log` or a live ``GraphBuilder``).
        max_embedded: write only this many of the largest flows into the page.
        max_drawn: the page draws at most this many flows at once (the largest that match
            the filters) and says so.

    Returns:
        A complete HTML document with no external resource.
    """
    doc = to_json(graph, max_flows=max_embedded)
    doc["view"] = {"max_drawn": max_drawn}
    script = _asset("graph.js")
    values = {
        "CSP": content_security_policy(script),
        "CSS": _asset("graph.css"),
        "JS": script,
        "DATA": embed_json(doc),
    }
    # One pass over the template: inserted text (the data) is never scanned for placeholders.
    page = _PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("graph.html"))
    return page.encode("utf-8")
