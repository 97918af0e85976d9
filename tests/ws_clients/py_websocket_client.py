"""Python's `websocket-client` (its blocking `WebSocket`) against tether: the scenario of
scenario.py.

Usage: py_websocket_client.py TETHER_URL

tether runs with `--sse-heartbeat 1s`. A blocking socket answers a ping only while something
reads it, so each socket has a reader thread, as a program using this library would: it reads
every frame (the library sends the pong for a ping before handing the ping over) and queues the
texts, until tether's close frame. The library sends `Origin: http://HOST:PORT`, the server's
own origin: tether must take it without `--allow-origin`.
"""

import json
import queue
import struct
import sys
import threading
import time

import websocket

import scenario
from scenario import BACKLOG, LIVE, NOT_JSON, WAIT_SECONDS, Inbox, fail

CLOSED = object()  # queued by a reader after tether's close frame


class Peer:
    """One socket, its reader thread, and what it received."""

    def __init__(self, url, name):
        self.inbox = Inbox(name)
        self.socket = websocket.create_connection(url, timeout=WAIT_SECONDS)
        # The reader blocks until a frame comes, however long the idle step lasts.
        self.socket.settimeout(None)
        self.frames = queue.Queue()
        self.pings = 0
        self.close_code = None
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        try:
            while True:
                opcode, frame = self.socket.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.frames.put(frame.data.decode())
                elif opcode == websocket.ABNF.OPCODE_BINARY:
                    self.frames.put(bytes(frame.data))
                elif opcode == websocket.ABNF.OPCODE_PING:
                    self.pings += 1
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    if len(frame.data) >= 2:
                        self.close_code = struct.unpack("!H", frame.data[:2])[0]
                    self.frames.put(CLOSED)
                    return
        except Exception as error:  # the connection broke: the waiting side reports it
            self.frames.put(error)

    def send(self, message):
        self.socket.send(message if isinstance(message, str) else json.dumps(message))

    def next(self, what, deadline):
        try:
            frame = self.frames.get(timeout=max(0, deadline - time.monotonic()))
        except queue.Empty:
            fail(f"{what}: not within {WAIT_SECONDS} s; {self.inbox!r}")
        if frame is CLOSED or isinstance(frame, Exception):
            return frame
        self.inbox.add(frame)
        return None

    def until(self, what, condition):
        """Takes what the reader queued until `condition(inbox)` holds, for at most WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition(self.inbox):
            ended = self.next(what, deadline)
            if ended is not None:
                why = f"tether closed it with {self.close_code}" if ended is CLOSED else ended
                fail(f"{what}: the socket ended ({why}); {self.inbox!r}")

    def close(self):
        """Sends close 1000, and waits for tether's close frame; its code."""
        self.socket.send_close(websocket.STATUS_NORMAL)
        deadline = time.monotonic() + WAIT_SECONDS
        while (ended := self.next("tether's close frame", deadline)) is None:
            pass
        self.reader.join(WAIT_SECONDS)
        self.socket.shutdown()
        if ended is not CLOSED:
            fail(f"closing: the connection broke before tether's close frame: {ended!r}")
        return self.close_code


def main():
    tether = sys.argv[1]
    for data in scenario.OLD:
        scenario.publish_http(tether, BACKLOG, data)
    url = scenario.socket_url(tether)
    a, b = Peer(url, "A"), Peer(url, "B")
    peers = {"A": a, "B": b}

    a.send({"subscribe": BACKLOG, "cursor": 1})
    a.send({"subscribe": LIVE})
    a.send(NOT_JSON)
    b.send({"subscribe": LIVE})
    b.send(NOT_JSON)
    a.until("A's backlog and its error", lambda inbox: inbox.count(BACKLOG) == 2 and inbox.errors)
    b.until("B's error", lambda inbox: inbox.errors)

    def both_have(count, what):
        for peer in peers.values():
            peer.until(f"{what} reaches {peer.inbox.name}", lambda inbox: inbox.count(LIVE) >= count)

    scenario.publish_http(tether, LIVE, scenario.BY_HTTP)
    both_have(1, "the publish by HTTP")
    b.send({"publish": LIVE, "data": scenario.BY_B})
    both_have(2, "B's publish")
    a.send({"publish": LIVE, "data": scenario.BY_A})
    both_have(3, "A's publish")

    time.sleep(scenario.IDLE_SECONDS)
    scenario.publish_http(tether, LIVE, scenario.AFTER_IDLE)
    both_have(4, "the publish after the idle heartbeats")
    for peer in peers.values():
        if peer.pings < 2:
            fail(f"socket {peer.inbox.name} saw {peer.pings} pings in {scenario.IDLE_SECONDS} s idle")
    print(f"idle for {scenario.IDLE_SECONDS} s: both sockets answered the pings and stayed open")
    print(f"pings answered: A {a.pings}, B {b.pings}")

    scenario.check_news({name: peer.inbox for name, peer in peers.items()})
    scenario.check_errors({name: peer.inbox for name, peer in peers.items()})
    codes = [peer.close() for peer in peers.values()]
    if codes != [1000, 1000]:
        fail(f"closing with 1000, tether answered {codes}")
    print("closed with 1000: tether answered 1000")
    print("websocket-client: ok")


if __name__ == "__main__":
    main()
