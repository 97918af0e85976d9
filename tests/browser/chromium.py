"""What every browser script shares: a headless Chromium driven by Playwright, the console
errors it reports, bounded waits, and a publisher that talks to tether without a browser.

The scripts are run by tests/browser.rs, which starts the real tether binary (and, for
cross-origin pages, the page's own origin) and passes their addresses as arguments. A script
prints what it saw and exits 0, or prints `FAIL: why` and exits 1.

Chromium is the system one (/usr/bin/chromium, Debian's package): Playwright's own browser
download is never used. The flags keep it from calling home (this machine's network is closed,
and without them Chromium tries to reach Google's hosts at start and hangs or logs errors);
each run gets a fresh temporary profile, so nothing (storage, cache) leaks between runs.
"""

import contextlib
import json
import sys
import tempfile
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Every wait is bounded, and generous: the machine is a loaded 2-core VM, and a test waits for
# behaviour; it never asserts speed.
WAIT_MS = 15_000


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


@contextlib.contextmanager
def browser_page():
    """A page in a fresh headless Chromium, with the list of console errors and page errors
    (uncaught exceptions) it reports: `(page, errors)`."""
    with tempfile.TemporaryDirectory(prefix="tether-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            timeout=WAIT_MS * 2,
        )
        context.set_default_timeout(WAIT_MS)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            yield page, errors
        finally:
            context.close()


def wait_until(page, expression, what, show=None):
    """Waits for a JavaScript expression to be truthy in the page, or fails saying `what` and,
    if given, the value of the expression `show` (what the page had got so far)."""
    try:
        page.wait_for_function(expression, timeout=WAIT_MS)
    except Exception as error:  # Playwright's TimeoutError, or the page went away
        seen = ""
        if show is not None:
            try:
                seen = f"; the page had {json.dumps(page.evaluate(show))}"
            except Exception as detail:
                seen = f"; the page could not say what it had ({detail})"
        fail(f"{what}: not within {WAIT_MS} ms ({type(error).__name__}: {error}){seen}")


def publish(tether, topic, text, token=None):
    """POSTs a message straight to tether (no browser, so no Origin header), with `token` as
    `Authorization: Bearer` if given; its JSON answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{tether}/publish/{topic}", data=text.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=WAIT_MS / 1000) as answer:
        return json.load(answer)


def stats(tether):
    """`GET /stats`, parsed."""
    with urllib.request.urlopen(f"{tether}/stats", timeout=WAIT_MS / 1000) as answer:
        return json.load(answer)
