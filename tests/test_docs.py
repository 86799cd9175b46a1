"""The API docs: `/schema` (Redoc, vendored) works offline and describes every HTTP endpoint, and the
Socket.IO events it and `/asyncapi.json` document are the ones the server handles and sends."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from harness.servers import ROOT, ServerProcess, start_server
from service.app import create_app
from service.settings import Settings

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def docs_server(model_dir: Path) -> Iterator[ServerProcess]:
    running = start_server(model_dir)
    yield running
    running.stop()


def test_the_schema_page_references_no_external_host_and_its_assets_answer(docs_server: ServerProcess) -> None:
    page = httpx.get(f"{docs_server.url}/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = [a or b for a, b in ASSET.findall(page.text)]
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert not urlparse(asset).netloc and not asset.startswith("//"), f"external asset {asset}"
        response = httpx.get(urljoin(f"{docs_server.url}/schema", asset))
        assert response.status_code == 200 and response.content, asset
    assert not re.search(r"https?://", page.text.split("Redoc.init(")[0]), "an absolute URL in the page's head"
    # Vendored with their licence files, like the Socket.IO client.
    for name in ("redoc.LICENSE", "redoc.standalone.js.LICENSE.txt", "socket.io-client.LICENSE"):
        assert httpx.get(f"{docs_server.url}/vendor/{name}").status_code == 200, name


def test_every_http_endpoint_is_described(docs_server: ServerProcess) -> None:
    spec = httpx.get(f"{docs_server.url}/schema/openapi.json").json()
    routes = {
        (route.path, method.lower())
        for route in create_app(Settings()).litestar.routes
        for handler in getattr(route, "route_handlers", [])
        if handler.resolve_include_in_schema()
        for method in handler.http_methods
        if method != "OPTIONS"
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == routes
    assert {path for path, _ in routes} == {"/healthz", "/readyz", "/metrics", "/labels", "/asyncapi.json"}
    for path, method in documented:
        operation = spec["paths"][path][method]
        assert operation["summary"] and len(operation.get("description", "")) > 20, (path, method)
        assert "200" in operation["responses"], (path, method)
    assert set(spec["paths"]["/healthz"]["get"]["responses"]) == {"200", "503"}
    health = spec["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "Sequential" in str(spec) and ("$ref" in health or "properties" in health)
    # What is not a Litestar route is described in the text: the demo page and the Socket.IO endpoint.
    description = spec["info"]["description"]
    assert "`/`" in description and "/socket.io/" in description and "/asyncapi.json" in description
    assert spec["info"]["title"] == "signstream"


def emitted_events() -> set[str]:
    """The events the server's code emits (`emit("name", ...)`)."""
    source = "\n".join(
        p.read_text() for p in (ROOT / "service").glob("*.py") if p.name not in ("client.py", "loadgen.py")
    )
    return set(re.findall(r"""\.emit\(\s*["'](\w+)["']""", source))


def test_the_documented_events_are_the_events_the_server_handles_and_sends(docs_server: ServerProcess) -> None:
    document = httpx.get(f"{docs_server.url}/asyncapi.json").json()
    assert document["asyncapi"].startswith("2.")
    channel = document["channels"]["/"]
    messages = document["components"]["messages"]

    def names(operation: str) -> set[str]:
        return {messages[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in channel[operation]["message"]["oneOf"]}

    handlers = create_app(Settings()).engineio_server.handlers["/"]
    assert names("publish") == set(handlers) - {"connect", "disconnect"} == {"frame", "subscribe"}
    assert names("subscribe") == emitted_events() == {"status", "prediction", "error", "sign"}
    assert all(message["payload"]["type"] == "object" and message["summary"] for message in messages.values())
    # Every error code the code raises is documented.
    source = "\n".join(p.read_text() for p in (ROOT / "service").glob("*.py"))
    raised = set(re.findall(r"""FrameError\(\s*["'](\w+)["']""", source))
    raised |= set(re.findall(r"""return\s+["'](\w+)["'],\s""", (ROOT / "service" / "protocol.py").read_text()))
    raised |= {"capacity", "loading"}  # on_connect's own
    assert raised <= set(messages["error"]["payload"]["properties"]["code"]["enum"])
    # The OpenAPI description carries the same events.
    description = httpx.get(f"{docs_server.url}/schema/openapi.json").json()["info"]["description"]
    assert all(f"`{name}`" in description for name in messages)


def test_the_docs_render_offline_in_a_browser(chromium: Path, docs_server: ServerProcess) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    outside: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(docs_server.url):
            route.continue_()
        else:  # as if offline
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", only_this_server)
            page.goto(f"{docs_server.url}/schema")
            expect(page.get_by_role("heading", name="Socket.IO events")).to_be_visible(timeout=30_000)
            expect(page.locator("text=/healthz").first).to_be_visible()
            expect(page.locator("td code", has_text="prediction").first).to_be_visible()
        finally:
            browser.close()
    assert outside == [] and errors == []
