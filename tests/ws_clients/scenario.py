"""The scenario every client script plays against tether, what it must see, and what the
scripts share: bounded waits, publishing by plain HTTP, and the lines they print.

The scenario (docs/transports.md has the messages), with two sockets A and B of one library:
1. Three messages are published by HTTP to `backlog` before any socket opens.
2. A subscribes to `backlog` from cursor 1, so it gets a backlog (seqs 2 and 3), and to `live`;
   B subscribes to `live`. Each then sends a text that is not JSON and gets `{"error":...}`.
   tether answers a socket's messages in order, so that error also says that the subscribes
   before it are done: what is published from then on reaches them.
3. To `live`: one message by HTTP, then one by B's socket, then one by A's; each publish waits
   until both sockets have the one before, so the order, and the seqs, are fixed: 1, 2, 3.
4. Both sockets idle for `IDLE_SECONDS`, through three of the server's pings
   (`--sse-heartbeat 1s`): the library must answer them, or tether closes the socket (1001) at
   the next ping. Then one more message by HTTP (seq 4) reaches both.
5. Both close with 1000, and the close frame tether answers with says 1000 too.

A script prints what it saw (`check_news` and `check_errors` print the scenario's lines) and
exits 0; or prints `FAIL: why` and exits 1. tests/ws_clients.rs runs it and asserts on those
lines, the same for every client: node_websocket.mjs, in another language, prints them too.
"""

import json
import sys
import urllib.request

# Every wait is bounded, and generous: the machine may be a loaded 2-core VM, and a test waits
# for behaviour; it never asserts speed.
WAIT_SECONDS = 15

# Three heartbeats and a half of --sse-heartbeat 1s: a peer that answers no ping is closed at
# the second one.
IDLE_SECONDS = 3.5

BACKLOG = "backlog"
LIVE = "live"
OLD = ["old 1", "old 2", "old 3"]
BY_HTTP = "by HTTP"
BY_B = "by socket B"
# Quotes, a backslash and characters beyond ASCII, through tether's JSON and back.
BY_A = 'by socket A: say "hi" \\ ü ☃'
AFTER_IDLE = "after the heartbeats"

NOT_JSON = "this is not JSON"

# What each socket must have received, per topic, as (seq, data).
EXPECTED = {
    ("A", BACKLOG): [(2, OLD[1]), (3, OLD[2])],
    ("A", LIVE): [(1, BY_HTTP), (2, BY_B), (3, BY_A), (4, AFTER_IDLE)],
    ("B", LIVE): [(1, BY_HTTP), (2, BY_B), (3, BY_A), (4, AFTER_IDLE)],
}


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def socket_url(tether, query=""):
    """`ws://HOST:PORT/ws` for `http://HOST:PORT`."""
    if not tether.startswith("http://"):
        fail(f"expected an http:// address, got {tether!r}")
    return f"ws://{tether.removeprefix('http://')}/ws{query}"


def publish_http(tether, topic, data):
    """POSTs `data` to `topic` with plain HTTP; the seq tether gave it."""
    request = urllib.request.Request(f"{tether}/publish/{topic}", data=data.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as answer:
        return json.load(answer)["seq"]


def stats(tether):
    """`GET /stats`, parsed."""
    with urllib.request.urlopen(f"{tether}/stats", timeout=WAIT_SECONDS) as answer:
        return json.load(answer)


class Inbox:
    """What one socket received, in order: news per topic as (seq, data), and errors. A frame
    of any other shape (a `missed`, a `reset`: none is expected here), or one that is not a JSON
    object, fails the script."""

    def __init__(self, name):
        self.name = name
        self.topics = {}
        self.errors = []

    def add(self, text):
        if not isinstance(text, str):
            fail(f"socket {self.name} got a binary message: {text!r}")
        try:
            frame = json.loads(text)
        except ValueError:
            fail(f"socket {self.name} got a text that is not JSON: {text!r}")
        if isinstance(frame, dict) and set(frame) == {"topic", "seq", "data"}:
            self.topics.setdefault(frame["topic"], []).append((frame["seq"], frame["data"]))
        elif isinstance(frame, dict) and set(frame) == {"error"} and frame["error"]:
            self.errors.append(frame["error"])
        else:
            fail(f"socket {self.name} got an unexpected frame: {text}")

    def count(self, topic):
        return len(self.topics.get(topic, []))

    def __repr__(self):
        return f"socket {self.name}: {self.topics}, errors {self.errors}"


def entries(news):
    """`1:"data" 2:"data"`: each entry's data as JSON, so that the line says exactly what came."""
    return " ".join(f"{seq}:{json.dumps(data, ensure_ascii=False)}" for seq, data in news)


def check_news(inboxes):
    """Fails unless each socket received exactly `EXPECTED`; prints what it received."""
    for (name, topic), expected in EXPECTED.items():
        got = inboxes[name].topics.get(topic, [])
        if got != expected:
            fail(f"socket {name} received on {topic} {entries(got)}, expected {entries(expected)}")
        print(f"{topic} on {name}: {entries(got)}")
    for name, inbox in inboxes.items():
        unexpected = set(inbox.topics) - {topic for (who, topic) in EXPECTED if who == name}
        if unexpected:
            fail(f"socket {name} received news of topics it did not subscribe to: {unexpected}")


def check_errors(inboxes):
    """Each socket got exactly one error, the answer to its text that is not JSON."""
    for name, inbox in inboxes.items():
        if len(inbox.errors) != 1:
            fail(f"socket {name} got the errors {inbox.errors}, expected one, for {NOT_JSON!r}")
    print("not JSON: an error, and the socket stays open")
