"""The live page (`GET /`): loads without console errors, its figures move under load, and its
forms tail a topic and publish to it.

Usage: live_page.py TETHER_URL [SCREENSHOT_PATH]
"""

import http.client
import sys
import threading
import time
import urllib.parse

from chromium import WAIT_MS, browser_page, fail, wait_until

CONNECTIONS = 50
LOAD_SECONDS = WAIT_MS / 1000 * 2


def figure(name):
    """A JavaScript expression for the raw value the page shows for one figure."""
    return f"Number(document.querySelector('[data-figure={name}]').dataset.value || NaN)"


def hold_connections(tether, stop):
    """Opens CONNECTIONS keep-alive connections and sends requests on them round after round
    (a few a second each, so every snapshot sees some), until `stop` or LOAD_SECONDS; then
    closes them. Bounded in count and time."""
    address = urllib.parse.urlsplit(tether)
    connections = [http.client.HTTPConnection(address.hostname, address.port, timeout=WAIT_MS / 1000)
                   for _ in range(CONNECTIONS)]
    deadline = time.monotonic() + LOAD_SECONDS
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            for connection in connections:
                connection.request("GET", "/plaintext")
                connection.getresponse().read()
            stop.wait(0.2)
    finally:
        for connection in connections:
            connection.close()


def main():
    tether = sys.argv[1]
    screenshot = sys.argv[2] if len(sys.argv) > 2 else None

    with browser_page() as (page, errors):
        page.set_viewport_size({"width": 1100, "height": 900})
        answer = page.goto(f"{tether}/")
        if answer is None or answer.status != 200:
            fail(f"GET / answered {answer and answer.status}, expected the live page")
        wait_until(page, "document.getElementById('stats-state').textContent === 'live'",
                   "the page says its stats stream is live")
        wait_until(page, f"!isNaN({figure('connections_open')})", "the page shows a first snapshot")
        before = page.evaluate(figure("connections_open"))
        print(f"connections before the load: {before}")

        stop = threading.Event()
        load = threading.Thread(target=hold_connections, args=(tether, stop))
        load.start()
        try:
            wait_until(page, f"{figure('connections_open')} >= {CONNECTIONS}",
                       f"the page shows at least {CONNECTIONS} connections open")
            wait_until(page, f"{figure('requests_per_second')} > 0", "the page shows requests per second")
            print(f"connections under load: {page.evaluate(figure('connections_open'))}")
            print(f"requests per second under load: {page.evaluate(figure('requests_per_second'))}")
        finally:
            stop.set()
            load.join()

        # The charts drew something: some pixel of the connections chart is not blank.
        drawn = page.evaluate("""() => {
            const canvas = document.querySelectorAll('canvas')[1];
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            return pixels.some((value, i) => i % 4 === 3 && value > 0);
        }""")
        if not drawn:
            fail("the connections chart is blank")

        # The forms: tail a topic, publish to it, see the message arrive.
        page.fill("#topic", "live-page")
        page.click("#tail-form button")
        wait_until(page, "document.getElementById('tail-state').textContent === 'tailing live-page'",
                   "the page says it tails the topic")
        page.fill("#message", "hello from the live page")
        page.click("#publish-form button")
        wait_until(page, """() => {
            try { return JSON.parse(document.getElementById('publish-answer').textContent).seq === 1; }
            catch { return false; }
        }""", "the page shows the publish's answer, seq 1")
        wait_until(page, "document.getElementById('tail-log').textContent === '1hello from the live page'",
                   "the tailed message is listed with its sequence number")
        print(f"publish answer: {page.inner_text('#publish-answer')}")

        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
            print(f"screenshot: {screenshot}")
        if errors:
            fail(f"console errors: {errors}")
    print("live page: ok")


if __name__ == "__main__":
    main()
