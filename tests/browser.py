"""The browser that the page tests drive (tests/test_report.py, tests/test_live.py): Debian's
headless Chromium through Playwright, started inside a private network namespace
(`unshare --net`, loopback only), so that no request can leave the machine, with a new empty
profile. The `browser` fixture (tests/conftest.py) starts it, once per test module.

Skipped only where Chromium or Playwright is absent, and failing instead when
AVEL_BROWSER_TESTS=required (or CI=true): `.ci/run` sets it.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

CHROMIUM = os.environ.get("AVEL_CHROMIUM", "/usr/bin/chromium")
BROWSER_REQUIRED = os.environ.get("AVEL_BROWSER_TESTS") == "required" or os.environ.get("CI") == "true"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing() -> str | None:
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium ({CHROMIUM}; Debian: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (pip install playwright)")
    return " and ".join(missing) or None


def netns_wrapper(folder: Path) -> tuple[Path, Path]:
    """An executable that starts Chromium in a new network namespace with only loopback up,
    and writes that namespace's id to a file, for the test to compare with its own."""
    record = folder / "browser-netns"
    as_user = [] if os.geteuid() == 0 else ["--map-root-user"]
    inner = 'ip link set lo up && readlink /proc/self/ns/net > "$0" && exec ' + shlex.quote(CHROMIUM) + ' "$@"'
    script = folder / "chromium-netns"
    script.write_text(
        "#!/bin/sh\nexec "
        + " ".join(["unshare", "--net", *as_user, "--", "sh", "-c", shlex.quote(inner), shlex.quote(str(record))])
        + ' "$@"\n'
    )
    script.chmod(0o755)
    return script, record


def own_netns() -> str:
    """The test process's network namespace (the browser's must differ)."""
    return os.readlink("/proc/self/ns/net")


class Page:
    """One page at `url`; fails the test (at `close`) on a console error, a page error or any
    request whose URL does not start with `allowed`.

    `forward`: an origin (http://127.0.0.1:PORT/) served in the test's network namespace,
    which the browser's cannot reach: the page's requests there are made by Playwright's
    driver, which runs in the test's namespace (`route.fetch`), and answered with its
    response; one it cannot make fails the test. Playwright's sync API runs these handlers
    only while the test is inside one of its calls (e.g. `page.wait_for_timeout`)."""

    def __init__(self, context, url: str, allowed: str, forward: str | None = None):
        self.allowed = allowed
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page = page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("request", self._request)
        if forward is not None:
            page.route(forward + "**", self._forward)
        page.goto(url)

    def _request(self, request) -> None:
        self.requests.append(request.url)
        if not request.url.startswith(self.allowed):
            self.problems.append(f"request outside {self.allowed}: {request.url}")

    def _forward(self, route) -> None:
        from playwright.sync_api import Error

        try:
            response = route.fetch()
        except Error as e:
            self.problems.append(f"{route.request.url}: not served ({e.message.splitlines()[0]})")
            route.abort()
            return
        route.fulfill(response=response)

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def wait(self, expression: str, arg=None, timeout: float | None = None) -> None:
        """Wait until the expression (or function of `arg`) is true. Always passed as a
        function: the report's CSP forbids evaluating strings, which Playwright does otherwise."""
        function = expression if re.match(r"\(\w*\) =>", expression) else f"() => ({expression})"
        self.page.wait_for_function(function, arg=arg, timeout=timeout)

    def close(self) -> None:
        self.page.close()
        assert not self.problems, self.problems
