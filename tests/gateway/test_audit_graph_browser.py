"""The governance-flow page in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The page is opened from a file with every non-file request aborted and DNS mapped to nowhere; the
test asserts that the file was the only request, that the expected nodes and edges are drawn for
the known log, that each filter changes what is drawn, and that clicking an edge shows its
details. A screenshot is saved (path printed, and copied to /tmp/sluice-graph.png).

Needs: Debian packages ``chromium`` (``/usr/bin/chromium``) and PyPI ``playwright`` (its own
browser download is not used and not needed).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from playwright.sync_api import Page, Route, sync_playwright

from gateway.audit.graph import graph_from_log
from gateway.audit.html import render_html
from tests.gateway.test_audit_graph import EVIL, T0, write_known_log

CHROMIUM = Path("/usr/bin/chromium")
TEST_LIMIT_S = 120
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
SHOT_COPY = Path("/tmp/sluice-graph.png")



@pytest.fixture
def time_limit() -> Iterator[None]:
    """An absolute limit for the whole browser session (each action also has its own)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"browser test exceeded {TEST_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def drawn(page: Page, kind: str) -> list[str]:
    """Names of the drawn elements of ``kind`` (flows as ``origin>destination:decision``)."""
    result: list[str] = page.evaluate(
        """(kind) => [...document.querySelectorAll(`#graph [data-kind="${kind}"]`)]
             .filter((e) => e.getAttribute("display") !== "none")
             .map((e) => kind === "flow"
                ? `${e.dataset.origin}>${e.dataset.destination}:${e.dataset.decision}`
                : e.dataset.name)
             .sort()""",
        kind,
    )
    return result


def click_flow(page: Page, origin: str, dest: str, decision: str) -> None:
    """Click, with the mouse, a point on the drawn curve of a flow (its bounding box centre
    may lie off the curve)."""
    point = page.evaluate(
        """([o, d, dec]) => {
             const p = [...document.querySelectorAll('#graph [data-kind="flow"]')].find((e) =>
               e.dataset.origin === o && e.dataset.destination === d && e.dataset.decision === dec);
             const at = p.getPointAtLength(p.getTotalLength() * 0.5);
             const m = p.getScreenCTM();
             return { x: at.x * m.a + at.y * m.c + m.e, y: at.x * m.b + at.y * m.d + m.f };
           }""",
        [origin, dest, decision],
    )
    page.mouse.click(point["x"], point["y"])


def test_graph_page_in_chromium(tmp_path: Path, time_limit: None) -> None:
    if not CHROMIUM.is_file():
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    log = tmp_path / "audit.jsonl"
    write_known_log(log)
    page_file = tmp_path / "graph.html"
    page_file.write_bytes(render_html(graph_from_log(log)))
    url = page_file.as_uri()
    requests: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True, timeout=30_000)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900},
                                          service_workers="block")

            def route(r: Route) -> None:
                requests.append(r.request.url)
                if r.request.url == url:
                    r.continue_()
                else:
                    r.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(10_000)
            page.on("request", lambda req: requests.append("seen:" + req.url))
            page.add_init_script("""window.__csp = [];
                document.addEventListener("securitypolicyviolation",
                  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));""")
            page.goto(url, wait_until="load")
            page.wait_for_selector("body[data-ready=true]")
            run_checks(page)
            shot = tmp_path / "graph.png"
            page.screenshot(path=str(shot))
            shutil.copyfile(shot, SHOT_COPY)
            print(f"\nscreenshot: {shot} (copy: {SHOT_COPY})")
            # The page's policy forbids any fetch, even one a script attempts.
            outcome = page.evaluate("""() => fetch("https://example.org/x")
                .then(() => "fetched", (e) => "refused: " + e.name)""")
            assert outcome == "refused: TypeError"
            assert any(v.startswith("connect-src") for v in page.evaluate("window.__csp"))
        finally:
            browser.close()

    # One request, the file itself, seen both by the page and by the route (in either order).
    assert sorted(requests) == [url, "seen:" + url], requests


def run_checks(page: Page) -> None:
    # Our one script ran under the page's CSP (allowed by its hash), and nothing was violated.
    assert page.evaluate("window.__csp") == []
    # The crafted scope name is text in a label, not markup; its script never ran.
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.scripts.length") == 2

    all_flows = ["batch>ledger:deny", "shop>ledger:allow", "shop>ledger:deny", "web>shop:allow",
                 f"{EVIL}>ledger:deny"]
    all_scopes = sorted(["batch", "ledger", "shop", "web", EVIL])
    assert drawn(page, "flow") == sorted(all_flows)
    assert drawn(page, "scope") == all_scopes
    assert drawn(page, "trust_domain") == ["cilium.example", "weave.example"]
    assert page.locator("#gateways li").count() == 2
    assert page.locator("#revisions li").count() == 2
    labels = page.eval_on_selector_all("#labels text", "els => els.map((e) => e.textContent)")
    assert EVIL[:27] + "…" in labels  # long names are cut in the drawing, whole in details
    summary = page.text_content("#summary") or ""
    assert "13 decisions" in summary and "5 flows" in summary

    page.fill("#f-scope", "shop")
    assert drawn(page, "flow") == ["shop>ledger:allow", "shop>ledger:deny", "web>shop:allow"]
    assert drawn(page, "scope") == ["ledger", "shop", "web"]
    page.fill("#f-scope", "")

    page.select_option("#f-td", "cilium.example")
    assert drawn(page, "flow") == ["web>shop:allow"]
    assert drawn(page, "scope") == ["shop", "web"]  # shop is in weave.example: both arcs show
    page.select_option("#f-td", "")

    page.select_option("#f-decision", "deny")
    assert drawn(page, "flow") == sorted(["batch>ledger:deny", "shop>ledger:deny",
                                          f"{EVIL}>ledger:deny"])
    page.select_option("#f-decision", "allow")
    assert drawn(page, "flow") == ["shop>ledger:allow", "web>shop:allow"]
    page.select_option("#f-decision", "")

    # T0 is 2023-11-14T22:13:20Z; web -> shop is an hour later, batch and EVIL two hours later.
    page.fill("#f-since", "2023-11-14T23:00:00")
    page.fill("#f-until", "2023-11-14T23:30:00")
    assert drawn(page, "flow") == ["web>shop:allow"]
    page.fill("#f-since", "2023-11-14T22:13:20")
    page.fill("#f-until", "2023-11-14T22:13:25")
    assert drawn(page, "flow") == ["shop>ledger:allow", "shop>ledger:deny"]
    assert "exact to 64 s" in (page.text_content("#note") or "")
    page.click("#f-reset")
    assert drawn(page, "flow") == sorted(all_flows)
    assert page.input_value("#f-since") == "2023-11-14T22:13:20"

    click_flow(page, "shop", "ledger", "deny")
    assert page.get_attribute("#details-body", "data-kind") == "flow"
    assert page.text_content("#d-count") == "2"
    reasons = page.text_content("#d-reasons") or ""
    assert "tier_too_low" in reasons and "2" in reasons
    assert "min-tier" in (page.text_content("#d-rules") or "")
    click_flow(page, "shop", "ledger", "allow")
    assert page.text_content("#d-count") == "6"
    samples = page.eval_on_selector_all("#d-samples tr td:first-child",
                                        "els => els.map((e) => e.textContent)")
    assert samples == [f"{n:032x}" for n in (6, 5, 4, 3, 2)]
    details = page.text_content("#details") or ""
    assert "allow-shop" in details and "2023-11-14 22:13:20Z" in details
    assert page.locator("path.flow.selected").count() == 1
    assert T0 == 1_700_000_000
