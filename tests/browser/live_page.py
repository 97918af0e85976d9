"""The live page (`GET /`): loads without console errors, its figures move under load (WebSockets
it opens itself among them), and its forms tail a topic and publish to it.

Usage: live_page.py TETHER_URL [--token TOKEN] [--screenshot PATH]

With `--token` (a server with `--jwt-secret`; the token is an admin's, and may subscribe and
publish to the topic the forms use), the page is opened as `/#token=TOKEN`: it must take the
token out of the address bar, keep it across a reload, and send it with every request, each to
tether only, never in a Referer.
"""

import argparse
import http.client
import threading
import time
import urllib.parse

from chromium import WAIT_MS, browser_page, fail, wait_until

CONNECTIONS = 50
SOCKETS = 3
LOAD_SECONDS = WAIT_MS / 1000 * 2


def figure(name):
    """A JavaScript expression for the raw value the page shows for one figure."""
    return f"Number(document.querySelector('[data-figure={name}]').dataset.value || NaN)"


def check_states_add_up(page, when):
    """The connections-by-state chart shows every state: its figures add up to the connections
    open (they are of one snapshot, shown at once)."""
    shown = page.evaluate("""() => {
        const chart = [...document.querySelectorAll('figure')]
            .find((figure) => figure.querySelector('strong').textContent === 'Connections by state');
        return Object.fromEntries([...chart.querySelectorAll('[data-figure]')]
            .map((number) => [number.dataset.figure, Number(number.dataset.value)]));
    }""")
    states = {name: value for name, value in shown.items() if name != "connections_open"}
    if sum(states.values()) != shown["connections_open"]:
        fail(f"{when}, the states shown add up to {sum(states.values())}, "
             f"not to the {shown['connections_open']} connections open: {states}")


def open_sockets(page, token):
    """Opens SOCKETS WebSockets from the page, of tether's own origin (which tether takes without
    --allow-origin), each following the forms' topic; the page must count them."""
    page.evaluate("""([count, token]) => {
        const query = token ? `?token=${encodeURIComponent(token)}` : '';
        window.sockets = Array.from({ length: count }, () => {
            const socket = new WebSocket(`ws://${location.host}/ws${query}`);
            socket.onopen = () => socket.send(JSON.stringify({ subscribe: 'live-page' }));
            return socket;
        });
    }""", [SOCKETS, token])
    wait_until(page, f"{figure('sockets_open')} >= {SOCKETS} && {figure('websocket')} >= {SOCKETS}",
               f"the page shows its {SOCKETS} WebSockets open, as a state of their connections",
               show="window.sockets.map((socket) => socket.readyState)")
    print(f"WebSockets open: {page.evaluate(figure('sockets_open'))}")


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
    arguments = argparse.ArgumentParser()
    arguments.add_argument("tether")
    arguments.add_argument("--token")
    arguments.add_argument("--screenshot")
    arguments = arguments.parse_args()
    tether, token = arguments.tether, arguments.token

    with browser_page() as (page, errors):
        requests = []
        page.on("request", lambda request: requests.append(request))
        page.set_viewport_size({"width": 1100, "height": 900})
        answer = page.goto(f"{tether}/#token={token}" if token else f"{tether}/")
        if answer is None or answer.status != 200:
            fail(f"GET / answered {answer and answer.status}, expected the live page")
        wait_until(page, "document.getElementById('stats-state').textContent === 'live'",
                   "the page says its stats stream is live")
        if token:
            shown = page.evaluate("location.href")
            if shown != f"{tether}/":
                fail(f"the address bar shows {shown!r}, expected {tether + '/'!r}, without the token")
        wait_until(page, f"!isNaN({figure('connections_open')})", "the page shows a first snapshot")
        before = page.evaluate(figure("connections_open"))
        print(f"connections before the load: {before}")
        check_states_add_up(page, "before the load")
        open_sockets(page, token)

        stop = threading.Event()
        load = threading.Thread(target=hold_connections, args=(tether, stop))
        load.start()
        try:
            wait_until(page, f"{figure('connections_open')} >= {CONNECTIONS}",
                       f"the page shows at least {CONNECTIONS} connections open")
            wait_until(page, f"{figure('requests_per_second')} > 0", "the page shows requests per second")
            print(f"connections under load: {page.evaluate(figure('connections_open'))}")
            check_states_add_up(page, "under load")
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

        if arguments.screenshot:
            page.screenshot(path=arguments.screenshot, full_page=True)
            print(f"screenshot: {arguments.screenshot}")
        if token:
            # The token is in the tab's storage, not in the address: a reload still has it.
            page.reload()
            wait_until(page, "document.getElementById('stats-state').textContent === 'live'",
                       "the reloaded page says its stats stream is live")
            check_where_the_token_went(requests, tether, token)
        if errors:
            fail(f"console errors: {errors}")
    print("live page: ok")


def check_where_the_token_went(requests, tether, token):
    """Every request the page made went to tether, and the token, when it went, went in a
    stream's query or in a publish's Authorization header, never in a Referer."""
    origin = urllib.parse.urlsplit(tether)
    carried = []
    for request in requests:
        # What a browser sends has no fragment: the page's first address had the token there.
        address = urllib.parse.urlsplit(request.url)._replace(fragment="")
        if (address.scheme, address.netloc) != (origin.scheme, origin.netloc):
            fail(f"the page asked another origin than tether's: {request.method} {request.url}")
        headers = request.all_headers()
        if token in headers.get("referer", ""):
            fail(f"the token was sent in a Referer: {request.method} {address.path}")
        in_query = token in address.query
        in_header = headers.get("authorization") == f"Bearer {token}"
        if token in address.path:
            fail(f"the token was sent in a path: {request.method} {address.path}")
        if any(token in value for name, value in headers.items() if name != "authorization"):
            fail(f"the token was sent in a header other than Authorization: {request.method} {address.path}")
        path = urllib.parse.unquote(address.path)
        if path.startswith("/events/") and not in_query:
            fail(f"a stream was asked for without the token in its query: {request.method} {address.path}")
        if path.startswith("/publish/") and (in_query or not in_header):
            fail(f"a publish did not carry the token in Authorization (and only there): {request.url}")
        if in_query:
            carried.append(f"{path[1:]}?token=")
        elif in_header:
            carried.append(f"{path[1:]} with Authorization")
    # Each once, in the order first asked: a reload asks for the stats stream again.
    carried = list(dict.fromkeys(carried))
    print(f"the token went to tether only: {', '.join(carried)}")


if __name__ == "__main__":
    main()
