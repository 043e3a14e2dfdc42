"""The report a reviewer opens, in a real headless browser (Debian chromium): it renders with content, a
screenshot is taken, every local link resolves, and no request leaves the machine.

"No request leaves": chromium runs with every non-file request sent to a recording proxy on 127.0.0.1 that
answers 502 and forwards nothing. A control page with one remote image shows the proxy does see requests,
so an empty record means the report made none.
"""

from __future__ import annotations

import re
import subprocess
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from notebook_support import run_quietly, write_notebook

pytestmark = [pytest.mark.system("chromium"), pytest.mark.notebooks]

CHROMIUM_QUIET = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                  "--disable-domain-reliability", "--no-pings", "--metrics-recording-only",
                  "--disable-features=OptimizationHints,MediaRouter,Translate", "--hide-scrollbars"]


# Chromium's own background services (network time, component updates, sign-in) still call home in headless
# mode despite the flags above; they reach only the recorder too. They are told apart by exact host, so a page
# loading anything (fonts.googleapis.com included) is still caught.
BROWSER_SERVICES = {"clients2.google.com", "update.googleapis.com", "accounts.google.com", "redirector.gvt1.com",
                    "safebrowsingohttpgateway.googleapis.com", "optimizationguide-pa.googleapis.com"}


def _host(request: str) -> str:
    method, target = request.split(" ", 1)
    return target.split(":")[0] if method == "CONNECT" else (urlsplit(target).hostname or "")


class _Recorder:
    """An HTTP proxy on 127.0.0.1 that records what it is asked for and forwards nothing."""

    def __init__(self):
        self.seen: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _refuse(self):
                rec.seen.append(f"{self.command} {self.path}")
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_CONNECT = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _chromium(proxy: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", *CHROMIUM_QUIET, f"--proxy-server=http://{proxy}",
                           "--proxy-bypass-list=<-loopback>", f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, attrs[key]))


def _unresolved(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    bad = []
    for tag, link in parser.links:
        parts = urlsplit(link)
        if parts.scheme in ("http", "https", "mailto"):
            if tag in ("img", "script", "link", "iframe"):
                bad.append(f"{page.name}: loads a remote {tag}: {link}")
            continue
        if not parts.path:
            if parts.fragment and parts.fragment not in parser.ids:
                bad.append(f"{page.name}: anchor #{parts.fragment} has no target")
            continue
        if not (page.parent / unquote(parts.path)).exists():
            bad.append(f"{page.name}: {link} does not resolve")
    return bad


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """make reproduce's page for one real notebook: an Altair chart (whose notebook output loads vega from a
    CDN), a table, metrics and a verdict."""
    root = tmp_path_factory.mktemp("report")
    write_notebook(root / "notebooks" / "03-local-ssd.ipynb",
                   "import altair as alt, pandas as pd\n"
                   "from pullstudy.studies.claims import Verdict\nfrom pullstudy.report.output import StudyOutput\n"
                   "out = StudyOutput('03-local-ssd', output_dir)\n"
                   "df = pd.DataFrame({'image': ['1.2 GB', '19 GB'], 'speedup': [1.04, 1.2]})\n"
                   "chart = alt.Chart(df, title='Speedup per image').mark_bar().encode(\n"
                   "    x=alt.X('image:N', title='image size'), y=alt.Y('speedup:Q', title='speedup (x)'))\n"
                   "out.chart(chart, 'speedup')\n"
                   "out.table(df, 'speedup-per-image')\n"
                   "out.metric('overall_speedup', {'ratio': 1.11, 'ci_low': 1.09, 'ci_high': 1.2})\n"
                   "out.verdict(Verdict('ssd-speedup', 'partly supported', 'inside the noise floor', value=1.11, ci_low=1.09,\n"
                   "                    ci_high=1.2, unit='x', n=336))\n"
                   "out.write()\n"
                   "chart", "df")
    run_quietly(root / "notebooks", root / "results")
    executed = (root / "results" / "03-local-ssd" / "03-local-ssd.ipynb").read_text()
    assert "cdn.jsdelivr.net" in executed, "the notebook's own chart output should load vega from a CDN"
    return root / "results"


def test_the_proxy_sees_a_page_that_loads_a_remote_image(tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html><body><p>x</p><img src="http://pullstudy-control.invalid/x.png">'
                       "</body></html>")
    with _Recorder() as proxy:
        _chromium(proxy.address, tmp_path, "--dump-dom", control.as_uri())
    assert [r for r in proxy.seen if _host(r) not in BROWSER_SERVICES] == ["GET http://pullstudy-control.invalid/x.png"]


@pytest.mark.parametrize("page", ["index.html", "03-local-ssd/03-local-ssd.html"])
def test_the_report_renders_offline_with_content(report, tmp_path, page):
    target = report / page
    shot = tmp_path / "shot.png"
    with _Recorder() as proxy:
        dom = _chromium(proxy.address, tmp_path, "--virtual-time-budget=5000", "--dump-dom", target.as_uri())
        pic = _chromium(proxy.address, tmp_path, "--virtual-time-budget=5000", "--window-size=1280,2000",
                        f"--screenshot={shot}", target.as_uri())
    assert dom.returncode == 0 and pic.returncode == 0, dom.stderr[-2000:] + pic.stderr[-2000:]
    page_requests = [r for r in proxy.seen if _host(r) not in BROWSER_SERVICES]
    assert page_requests == [], f"the report asked the network for {page_requests}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    if page == "index.html":
        for words in ("The published claims", "ssd-speedup", "partly supported", "How to cite", "@misc{pullstudy",
                      "The data", "data version", "The notebooks, as pages"):
            assert words in text, words
    else:
        assert "Speedup per image" in dom.stdout, "the chart is drawn as SVG, without JavaScript"
        assert "19 GB" in text and "could not be drawn offline" not in text
    assert _unresolved(target) == []
    (report.parent / f"screenshot-{Path(page).stem}.png").write_bytes(shot.read_bytes())
