"""A page follows a topic on tether with Chromium's own `WebSocket`; a page of an origin tether
does not allow cannot open one.

Usage: websocket_page.py TETHER_URL allowed|own|blocked [PAGE_URL]

`allowed`: PAGE_URL is a blank page of an origin tether allows (`--allow-origin`). The page
opens `ws://TETHER/ws`, subscribes to a topic and publishes to it over the socket, then
receives what is published by HTTP; a poll reads the same messages; the page closes with 1000.
`own`: the same from tether's own page, the live page (`GET /`), whose origin tether takes
without `--allow-origin`; the live page counts the socket among its figures.
`blocked`: PAGE_URL is of an origin tether does not allow. A browser applies no CORS to a
WebSocket, so the refusal is tether's: the handshake's 403, which the page sees only as an
error and a close with 1006; it receives nothing, and nothing it would publish is stored.
"""

import json
import sys
import urllib.request

from chromium import WAIT_MS, browser_page, fail, publish, stats, wait_until

TOPIC = "t"
FROM_THE_PAGE = "from the page"
EXPECTED = [f"1:{FROM_THE_PAGE}", "2:m2", "3:m3"]
# What the page's socket has seen, shown when a wait fails.
SEEN = "window.seen"

# The page's client, put into whatever page the mode opens: it opens the socket, subscribes to
# the topic and publishes to it once open, and keeps what it sees in `window.seen`.
SOCKET_CLIENT = """([url, topic, data]) => {
    const seen = { opened: false, received: [], errors: 0, closed: null };
    window.seen = seen;
    const socket = new WebSocket(url);
    window.socket = socket;
    socket.onopen = () => {
        seen.opened = true;
        socket.send(JSON.stringify({ subscribe: topic }));
        socket.send(JSON.stringify({ publish: topic, data }));
    };
    socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        seen.received.push('error' in message ? `error:${message.error}` : `${message.seq}:${message.data}`);
    };
    socket.onerror = () => { seen.errors += 1; };
    socket.onclose = (event) => { seen.closed = { code: event.code, clean: event.wasClean }; };
}"""


def main():
    tether, mode = sys.argv[1], sys.argv[2]
    page_url = f"{tether}/" if mode == "own" else sys.argv[3]
    socket_url = f"ws://{tether.removeprefix('http://')}/ws"

    with browser_page() as (page, errors):
        answer = page.goto(page_url)
        if answer is None or answer.status != 200:
            fail(f"{page_url} answered {answer and answer.status}")
        page.evaluate(SOCKET_CLIENT, [socket_url, TOPIC, FROM_THE_PAGE])
        if mode in ("allowed", "own"):
            follows(page, tether, errors, mode)
        elif mode == "blocked":
            refused(page, tether, errors)
        else:
            fail(f"unknown mode {mode!r}")


def follows(page, tether, errors, mode):
    # tether answers a socket's messages in order: once the page has its own message back, its
    # subscribe is done, and what is published from then on reaches it.
    wait_until(page, "window.seen.received.length >= 1", "the page's socket gets its own message", show=SEEN)
    publish(tether, TOPIC, "m2")
    publish(tether, TOPIC, "m3")
    wait_until(page, f"window.seen.received.length >= {len(EXPECTED)}",
               f"the page receives {len(EXPECTED)} messages by WebSocket", show=SEEN)
    received = page.evaluate("window.seen.received")
    if received != EXPECTED:
        fail(f"by WebSocket the page received {received}, expected {EXPECTED}")
    print(f"by WebSocket: {' '.join(received)}")
    print(f"by poll: {' '.join(poll(tether))}")

    if mode == "own":
        figure = "Number(document.querySelector('[data-figure={}]').dataset.value || NaN)"
        wait_until(page, f"{figure.format('sockets_open')} >= 1 && {figure.format('websocket')} >= 1",
                   "the live page counts its WebSocket")
        print("the live page counts its WebSocket")

    page.evaluate("window.socket.close(1000)")
    wait_until(page, "window.seen.closed !== null", "the page's socket closes", show=SEEN)
    closed = page.evaluate("window.seen.closed")
    if closed != {"code": 1000, "clean": True}:
        fail(f"closing with 1000, the page saw {closed}")
    print("closed: 1000, clean")
    if errors:
        fail(f"console errors: {errors}")
    print("websocket page: ok")


def refused(page, tether, errors):
    wait_until(page, "window.seen.closed !== null", "the refused socket closes", show=SEEN)
    seen = page.evaluate("window.seen")
    if seen["opened"] or seen["received"] or seen["errors"] < 1 or seen["closed"] != {"code": 1006, "clean": False}:
        fail(f"the socket of a page not allowed: {seen}, expected an error and close 1006, unopened")
    print("refused: an error, close 1006, nothing received")
    # The refusal is tether's 403, as the console says; not any other failure to connect.
    if not any("/ws' failed" in error and "403" in error for error in errors):
        fail(f"no console error saying the handshake got a 403; errors: {errors}")
    counted = stats(tether)
    if counted["totals"]["forbidden"] != 1 or counted["sockets"]["open"] != 0 or counted["topics"]["count"] != 0:
        fail(f"tether's figures after the refusal: {counted}")
    if poll(tether):
        fail("a page of an origin not allowed published")
    print("tether answered 403; nothing stored")


def poll(tether):
    """What the topic holds, by a poll (which waits a second for an empty one): `seq:data` each."""
    address = f"{tether}/poll/{TOPIC}?cursor=0&timeout=1s"
    with urllib.request.urlopen(address, timeout=WAIT_MS / 1000) as answer:
        return [f"{message['seq']}:{message['data']}" for message in json.load(answer)["messages"]]


if __name__ == "__main__":
    main()
