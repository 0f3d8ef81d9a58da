"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on two shared cores: intra-op threading only adds synchronisation cost."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium in a private network namespace (tests/browser.py), once per module:
    {"context": the Playwright browser context, "netns": the file holding its namespace's id}."""
    from browser import BROWSER_REQUIRED, CHROMIUM_FLAGS, _browser_missing, netns_wrapper

    missing = _browser_missing()
    if missing:
        if BROWSER_REQUIRED:
            pytest.fail(f"browser tests are required here (AVEL_BROWSER_TESTS=required or CI) but {missing} is missing")
        pytest.skip(f"no browser to test the page in: {missing} is missing")
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("browser")
    wrapper, record = netns_wrapper(folder)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(folder / "profile"),
            executable_path=str(wrapper),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.set_default_timeout(15_000)
            yield {"context": context, "netns": record}
        finally:
            context.close()
