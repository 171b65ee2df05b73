"""Governance-flow graph: aggregation of a known log, bounds, filters, DOT/JSON/HTML and the CLI.

The browser half (the page drawn and clicked in headless Chromium) is test_audit_graph_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.audit import AuditFormatError, AuditLog, AuditRecord, Decision, read_entries
from gateway.audit.graph import (
    MAX_HISTOGRAM_KEYS,
    MAX_TIME_BUCKETS,
    OTHER,
    Flow,
    GraphBuilder,
    GraphFilter,
    graph_from_log,
)
from gateway.audit.html import embed_json, render_html
from gateway.audit.render import dot_quote, render_dot, render_json, to_json
from gateway.cli import main

T0 = 1_700_000_000  # seconds
GW_A = "spiffe://weave.example/gateway/a"
GW_B = "spiffe://cilium.example/gateway/b"
SHOP = "spiffe://weave.example/ns/shop/sa/api"
WEB = "spiffe://cilium.example/ns/web/sa/web"
R1, R2 = b"\x11" * 32, b"\x22" * 32
L1, L2 = b"\xa1" * 32, b"\xa2" * 32
# A scope name crafted to break out of the page's data element, a DOT string and an attribute.
EVIL = '</script><script>window.pwned=1</script><b onmouseover="x">\\"q'

# (seconds after T0, issuer, origin, destination, decision, reason, rule, gateway, revision,
#  lineage, from, to) for the known log; envelope ids are 1, 2, ... in this order.
KNOWN = (
    [(s, SHOP, "shop", "ledger", "allow", "allowed", "allow-shop", GW_A, R1,
      L1 if s < 4 else L2, "net:weave", "peer:cilium-gw") for s in range(6)]
    + [(10 + s, SHOP, "shop", "ledger", "deny", "tier_too_low", "min-tier", GW_A, R1, L1,
        "net:weave", "") for s in range(2)]
    + [(3600 + s, WEB, "web", "shop", "allow", "allowed", "web-in", GW_B, R2, L1,
        "net:cilium", "peer:weave-gw") for s in range(3)]
    + [(7200, SHOP, "batch", "ledger", "deny", "no_matching_rule", "", GW_A, R1, L1,
        "net:weave", "")]
    + [(7201, "not-a-spiffe-id", EVIL, "ledger", "deny", "origin_not_allowed", "deny-unknown",
        GW_A, R1, L1, "net:weave", "")]
)


def write_known_log(path: Path) -> None:
    """Write the known log: two gateways (one per log is the norm, but a merged log may hold
    several; the graph must not care), 13 decisions on 5 flows."""
    with AuditLog.open(path, gateway_id=GW_A, fsync="never") as log:
        for n, (sec, issuer, origin, dest, dec, reason, rule, gw, rev, lin, frm, to) in enumerate(
            KNOWN, start=1
        ):
            log.append(AuditRecord(
                gateway=gw, envelope_id=n.to_bytes(16, "big"), issuer=issuer,
                origin_scope=origin, destination_scope=dest, tier=2, lineage=lin,
                from_=frm, to=to, decision=Decision(dec), reason=reason, rule=rule,
                policy_revision=rev, stamps=0,
                envelope_digest=hashlib.blake2b(bytes([n]), digest_size=32).digest(),
            ), now=T0 + sec)


@pytest.fixture
def known_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_known_log(path)
    return path


def flow(graph_flows: tuple[Flow, ...], origin: str, dest: str, decision: str) -> Flow:
    found = [f for f in graph_flows
             if (f.origin, f.destination, f.decision.value) == (origin, dest, decision)]
    assert len(found) == 1, (origin, dest, decision)
    return found[0]


def test_known_log_aggregates(known_log: Path) -> None:
    g = graph_from_log(known_log)
    assert (g.records, g.filtered_out, g.overflow_records) == (13, 0, 0)
    assert (g.first_ms, g.last_ms) == (T0 * 1000, (T0 + 7201) * 1000)
    assert [(f.origin, f.destination, f.decision.value, f.count) for f in g.flows] == [
        ("shop", "ledger", "allow", 6),
        ("web", "shop", "allow", 3),
        ("shop", "ledger", "deny", 2),
        (EVIL, "ledger", "deny", 1),
        ("batch", "ledger", "deny", 1),
    ]
    allow = g.flows[0]
    assert allow.reasons == (("allowed", 6),)
    assert allow.rules == (("allow-shop", 6),)
    assert allow.lineages == ((L1.hex(), 4), (L2.hex(), 2))
    assert allow.policy_revisions == ((R1.hex(), 6),)
    assert allow.hops == (("net:weave -> peer:cilium-gw", 6),)
    assert allow.trust_domains == (("weave.example", 6),)
    assert (allow.first_ms, allow.last_ms) == (T0 * 1000, (T0 + 5) * 1000)
    # The five most recent samples, newest first.
    assert [int(s.envelope_id, 16) for s in allow.samples] == [6, 5, 4, 3, 2]
    deny = flow(g.flows, "shop", "ledger", "deny")
    assert deny.hops == (("net:weave -> -", 2),)
    evil = flow(g.flows, EVIL, "ledger", "deny")
    assert evil.trust_domains == (("", 1),)
    scopes = {s.name: (s.trust_domain, s.sent, s.received) for s in g.scopes}
    assert scopes == {
        "shop": ("weave.example", 8, 3), "ledger": ("", 0, 10), "web": ("cilium.example", 3, 0),
        "batch": ("weave.example", 1, 0), EVIL: ("", 1, 0),
    }
    assert g.trust_domains == ("cilium.example", "weave.example")
    assert [(x.id, x.trust_domain, x.allowed, x.denied) for x in g.gateways] == [
        (GW_B, "cilium.example", 3, 0), (GW_A, "weave.example", 6, 4)]
    assert [(r.revision, r.allowed, r.denied) for r in g.revisions] == [
        (R1.hex(), 6, 4), (R2.hex(), 3, 0)]
    assert [(a.gateway, a.revision, a.allowed, a.denied) for a in g.applied] == [
        (GW_B, R2.hex(), 3, 0), (GW_A, R1.hex(), 6, 4)]
    # 7201 s does not fit 128 one-second buckets: widened by doubling to 64 s.
    assert g.bucket_ms == 64_000
    for f in g.flows:
        assert sum(n for _b, n in f.buckets) == f.count


def test_fast_read_path_equals_strict_entries(known_log: Path) -> None:
    builder = GraphBuilder()
    builder.add_all(read_entries(known_log))
    assert builder.snapshot() == graph_from_log(known_log)


def test_incremental_feeding_is_a_snapshot_at_each_step(known_log: Path) -> None:
    builder = GraphBuilder()
    entries = list(read_entries(known_log))
    builder.add_all(entries[:6])
    first = builder.snapshot()
    assert [(f.origin, f.count) for f in first.flows] == [("shop", 6)]
    builder.add_all(entries[6:])
    assert builder.snapshot() == graph_from_log(known_log)


@pytest.mark.parametrize(
    ("flt", "expected", "filtered_out"),
    [
        (GraphFilter(scope="shop"), {("shop", "ledger", "allow"), ("shop", "ledger", "deny"),
                                     ("web", "shop", "allow")}, 2),
        (GraphFilter(trust_domain="cilium.example"), {("web", "shop", "allow")}, 10),
        # GW_A is in weave.example: every decision it made matches, whatever the issuer.
        (GraphFilter(trust_domain="weave.example"), {("shop", "ledger", "allow"),
                                                     ("shop", "ledger", "deny"),
                                                     ("batch", "ledger", "deny"),
                                                     (EVIL, "ledger", "deny")}, 3),
        (GraphFilter(decision=Decision.DENY), {("shop", "ledger", "deny"),
                                               ("batch", "ledger", "deny"),
                                               (EVIL, "ledger", "deny")}, 9),
        (GraphFilter(since_ms=(T0 + 3600) * 1000, until_ms=(T0 + 7201) * 1000),
         {("web", "shop", "allow"), ("batch", "ledger", "deny")}, 9),
    ],
)
def test_filters(known_log: Path, flt: GraphFilter, expected: set[tuple[str, str, str]],
                 filtered_out: int) -> None:
    g = graph_from_log(known_log, flt)
    assert {(f.origin, f.destination, f.decision.value) for f in g.flows} == expected
    assert g.filtered_out == filtered_out
    assert g.records + g.filtered_out == 13


def _add(b: GraphBuilder, n: int, *, origin: str = "a", dest: str = "b", reason: str = "allowed",
         ts_ms: int = T0 * 1000, decision: str = "allow") -> None:
    b.add_decision(ts_ms=ts_ms, gateway=GW_A, issuer=SHOP, origin=origin, destination=dest,
                   decision=decision, reason=reason, rule="r", lineage="", policy_revision="",
                   from_="net:x", to="net:y", envelope_id=f"{n:032x}")


def test_bounds_samples_flows_and_histograms() -> None:
    b = GraphBuilder(max_samples=2, max_flows=3)
    for n in range(40):
        _add(b, n, reason=f"reason-{n}")
    for n in range(5):
        _add(b, 100 + n, origin=f"o{n}")  # 3 flows fit (a->b and two new), the rest overflow
    g = b.snapshot()
    assert len(g.flows) == 3
    assert g.overflow_records == 3
    assert g.records == 42  # overflowed decisions are counted, and only, in overflow_records
    ab = g.flows[0]
    assert ab.count == 40
    assert [s.envelope_id for s in ab.samples] == [f"{39:032x}", f"{38:032x}"]
    assert len(ab.reasons) == MAX_HISTOGRAM_KEYS + 1
    assert dict(ab.reasons)[OTHER] == 40 - MAX_HISTOGRAM_KEYS
    # Nodes stay bounded by the kept edges: the overflowed origins are not nodes.
    assert {s.name for s in g.scopes} == {"a", "b", "o0", "o1"}


def test_time_buckets_widen_and_keep_counts() -> None:
    b = GraphBuilder()
    times = [T0 * 1000 + k * 997_003 for k in range(500)] + [T0 * 1000 - 5_000_000]
    for n, ts in enumerate(times):
        _add(b, n, ts_ms=ts, decision="deny" if n % 3 else "allow")
    g = b.snapshot()
    keys = [k for f in g.flows for k, _n in f.buckets]
    assert max(keys) - min(keys) < MAX_TIME_BUCKETS
    assert g.bucket_ms > 1000 and (g.bucket_ms // 1000) & (g.bucket_ms // 1000 - 1) == 0
    for f in g.flows:
        assert sum(n for _k, n in f.buckets) == f.count
        for k, _n in f.buckets:
            assert any(k * g.bucket_ms <= t < (k + 1) * g.bucket_ms for t in times)


def test_malformed_lines_name_line_and_offset(known_log: Path, tmp_path: Path) -> None:
    lines = known_log.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    obj = json.loads(lines[2])
    obj["decision"] = "maybe"
    bad.write_bytes(lines[0] + lines[1] + json.dumps(obj).encode() + b"\n")
    with pytest.raises(AuditFormatError,
                       match=rf"line 3 \(byte {len(lines[0]) + len(lines[1])}\): decision"):
        graph_from_log(bad)
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(lines[0] + lines[1][:50])
    with pytest.raises(AuditFormatError, match=r"line 2 .*incomplete"):
        graph_from_log(torn)
    missing = tmp_path / "missing.jsonl"
    del obj["origin_scope"]
    missing.write_bytes(json.dumps(obj).encode() + b"\n")
    with pytest.raises(AuditFormatError, match=r"line 1 .*origin_scope: text expected"):
        graph_from_log(missing)
    notjson = tmp_path / "notjson.jsonl"
    notjson.write_bytes(b"{nope\n")
    with pytest.raises(AuditFormatError, match=r"line 1 .*not JSON"):
        graph_from_log(notjson)


def test_json_document(known_log: Path) -> None:
    g = graph_from_log(known_log)
    doc = json.loads(render_json(g))
    assert doc["format"] == "sluice-governance-graph" and doc["version"] == 1
    kinds: dict[str, int] = {}
    for n in doc["nodes"]:
        kinds[n["kind"]] = kinds.get(n["kind"], 0) + 1
    assert kinds == {"scope": 5, "trust_domain": 2, "gateway": 2, "policy_revision": 2}
    ids = {n["id"] for n in doc["nodes"]}
    for e in doc["edges"]:
        assert e["source"] in ids and e["target"] in ids, e
    member = {(e["source"], e["target"]) for e in doc["edges"] if e["kind"] == "member_of"}
    assert member == {("scope:shop", "td:weave.example"), ("scope:batch", "td:weave.example"),
                      ("scope:web", "td:cilium.example")}
    flows = [e for e in doc["edges"] if e["kind"] == "flow"]
    assert [f["count"] for f in flows] == [6, 3, 2, 1, 1]
    assert flows[0]["samples"][0]["envelope_id"] == f"{6:032x}"
    assert to_json(g, max_flows=2)["flows_total"] == 5
    assert len([e for e in to_json(g, max_flows=2)["edges"] if e["kind"] == "flow"]) == 2


def test_dot_quote_escapes_everything() -> None:
    assert dot_quote('a"b\\c\nd') == '"a\\"b\\\\c d"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (Debian graphviz) not installed")
def test_dot_is_valid_graphviz(known_log: Path) -> None:
    dot = render_dot(graph_from_log(known_log))
    assert dot.count(" -> ") == 5 + 2  # flows, and gateway -> revision edges
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=30,
                         check=True).stdout.decode()
    # Graphviz understood every node, the crafted scope name included, as text.
    assert svg.count('class="node"') == 5 + 2 + 2
    assert svg.count('class="edge"') == 7
    assert "window.pwned=1" in svg and "<script>" not in svg


def test_html_is_self_contained_and_injection_safe(known_log: Path) -> None:
    g = graph_from_log(known_log)
    page = render_html(g).decode()
    # Exactly our two script elements: the crafted scope name closed none of them.
    assert page.count("<script") == 2 and page.count("</script") == 2
    assert "window.pwned" in page and "<script>window.pwned" not in page
    # No reference that a browser could fetch: no src/href/url() except in-page fragments.
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!#)""", page)
    assert not re.search(r"url\((?!#)", page)
    assert "@import" not in page
    data = page.split('<script type="application/json" id="graph-data">')[1].split("</script>")[0]
    doc = json.loads(data)
    assert doc["view"] == {"max_drawn": 2000}
    del doc["view"]
    assert doc == json.loads(json.dumps(to_json(g)))
    # The CSP allows exactly our script, by hash, and forbids any fetch.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    assert "default-src 'none'" in csp.group(1) and "connect-src 'none'" in csp.group(1)
    script = page.rsplit("<script>", 1)[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp.group(1)


def test_embed_json_escapes_markup() -> None:
    text = embed_json({"k": "</script><!--&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"k": "</script><!--&"}


def test_cli_formats_and_filters(known_log: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["audit", "graph", str(known_log), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["records"] == 13
    res = runner.invoke(main, ["audit", "graph", str(known_log)])
    assert res.exit_code == 0 and res.output.startswith("digraph governance {")
    out = tmp_path / "g.html"
    res = runner.invoke(main, ["audit", "graph", str(known_log), "--format", "html", "--out",
                               str(out), "--decision", "deny", "--trust-domain", "weave.example",
                               "--since", str(T0 + 5), "--until", "2023-11-14T22:13:31Z"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    data = json.loads(page.split('id="graph-data">')[1].split("</script>")[0])
    # T0 = 22:13:20Z; of the refusals by weave.example, only the one at T0 + 10 is in [T0 + 5,
    # T0 + 11): until is exclusive.
    assert data["records"] == 1 and data["filtered_out"] == 12
    res = runner.invoke(main, ["audit", "graph", str(known_log), "--format", "json",
                               "--scope", "web"])
    assert json.loads(res.output)["records"] == 3


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["audit", "graph", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 3 and "no such file" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"v":1}\n')
    res = runner.invoke(main, ["audit", "graph", str(bad)])
    assert res.exit_code == 3
    assert "line 1 (byte 0): ts_ms" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["audit", "graph", str(bad), "--since", "yesterday"])
    assert res.exit_code == 3 and "--since" in res.output
