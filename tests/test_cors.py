"""A browser client on another origin: a page served from one loopback port calls the API on
another with a bearer token, in headless Chromium, as a web console would."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nico_api.config import Settings
from tests.demo import ACME, ACME_SITE, RUNNING_TASK
from tests.fixtures import demo_served
from tests.processes import CHROMIUM, free_port, headless_dom, run

if TYPE_CHECKING:  # imported here, pytest would collect the class as a test
    from tests.fixtures import TestDatabase

# Real processes, servers or browsers: run by `make test`, left out by `make test-fast`.
pytestmark = pytest.mark.slow

PAGE = """<!doctype html><html><body><pre id="out">waiting</pre><script>
const api = "{api}", headers = {{Authorization: "Bearer {token}"}};
const out = document.getElementById("out");
(async () => {{
  try {{
    const task = await fetch(api + "/v2/org/{org}/nico/task/{task}?siteId={site}", {{headers}});
    const body = await task.json();
    const list = await fetch(api + "/v2/org/{org}/nico/task?siteId={site}", {{headers}});
    out.textContent = "status=" + body.status + " pagination=" + list.headers.get("X-Pagination");
  }} catch (error) {{
    out.textContent = "blocked: " + error;
  }}
}})();
</script></body></html>"""


@pytest.fixture(scope="module")
def allowed_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(
    test_database: TestDatabase,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    allowed_port: int,
) -> Iterator[str]:
    """One server for the module's tests, which only read: it lets pages from one loopback
    origin call it."""
    origin = f"http://127.0.0.1:{allowed_port}"
    with demo_served(
        test_database, settings, tmp_path_factory, "cors", NICO_CORS_ORIGINS=origin
    ) as base_url:
        yield base_url


@pytest.fixture
def page(server: str, env: dict[str, str], tmp_path: Path) -> Path:
    token = run(env, "token", "--org", ACME, "--role", "PROVIDER_ADMIN").stdout.strip()
    folder = tmp_path / "site"
    folder.mkdir()
    text = PAGE.format(api=server, token=token, org=ACME, task=RUNNING_TASK, site=ACME_SITE)
    (folder / "index.html").write_text(text)
    return folder


@pytest.fixture
def serve_page(page: Path) -> Iterator[Callable[[int], str]]:
    """Serves the page from a given loopback port until the test ends."""
    servers = []

    def at(port: int) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page))
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{port}/index.html"

    yield at
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser here (Debian package chromium)")
def test_a_page_on_an_allowed_origin_calls_the_api_with_a_token(
    serve_page: Callable[[int], str], allowed_port: int, tmp_path: Path
) -> None:
    dom = headless_dom(serve_page(allowed_port), tmp_path / "profile", 15000)
    assert "status=Running" in dom, dom[-2000:]
    assert 'pagination={"pageNumber":1,"pageSize":20,"total":7,"orderBy":null}' in dom


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser here (Debian package chromium)")
def test_a_page_on_another_origin_is_blocked_by_the_browser(
    serve_page: Callable[[int], str], tmp_path: Path
) -> None:
    dom = headless_dom(serve_page(free_port()), tmp_path / "profile", 15000)
    assert "blocked: TypeError" in dom, dom[-2000:]
