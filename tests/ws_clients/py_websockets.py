"""Python's `websockets` (its asyncio client) against tether: the scenario of scenario.py; then
what only this library lets a script send: a message in fragments, messages at and just over
`--max-message-bytes`, a binary message; or, against a server with `--jwt-secret`, a token in
the query.

Usage: py_websockets.py TETHER_URL scenario MAX_MESSAGE_BYTES
       py_websockets.py TETHER_URL token TOKEN

`scenario`: tether runs with `--sse-heartbeat 1s --max-message-bytes MAX_MESSAGE_BYTES`.
`token`: TOKEN lets its holder subscribe and publish to `t` only, and expires a few seconds
after the script starts; without it the handshake fails with 401.

The client sends no pings of its own (`ping_interval=None`): the pings of the idle step are
tether's, and the library answers them by itself. It offers permessage-deflate, as it does by
default; tether does not take it up.
"""

import asyncio
import json
import logging
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import scenario
from scenario import BACKLOG, LIVE, NOT_JSON, WAIT_SECONDS, Inbox, fail


class PingCounter(logging.Handler):
    """Counts the pings a connection received, from the library's debug log (`< PING ...`):
    the library answers them itself and tells its caller nothing else."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.pings = 0

    def emit(self, record):
        if record.getMessage().startswith("< PING"):
            self.pings += 1


class Peer:
    """One socket and what it received."""

    def __init__(self, name, socket, pings):
        self.inbox = Inbox(name)
        self.socket = socket
        self.pings = pings

    async def send(self, message):
        await self.socket.send(message if isinstance(message, (str, bytes, list)) else json.dumps(message))

    async def until(self, what, condition):
        """Receives until `condition(inbox)` holds, for at most WAIT_SECONDS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while not condition(self.inbox):
            try:
                text = await asyncio.wait_for(self.socket.recv(), deadline - loop.time())
            except TimeoutError:
                fail(f"{what}: not within {WAIT_SECONDS} s; {self.inbox!r}")
            except ConnectionClosed as closed:
                fail(f"{what}: the socket closed ({closed}); {self.inbox!r}")
            self.inbox.add(text)

    async def closed_by_server(self, what):
        """Waits for tether to close the socket; the close frame it sent."""
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                while True:
                    self.inbox.add(await self.socket.recv())
        except TimeoutError:
            fail(f"{what}: the socket is still open after {WAIT_SECONDS} s")
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                fail(f"{what}: the connection ended without a close frame from tether ({closed})")
            return closed.rcvd


async def open_peer(url, name):
    counter = PingCounter()
    logger = logging.getLogger(f"socket {name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(counter)
    socket = await connect(url, ping_interval=None, open_timeout=WAIT_SECONDS, close_timeout=WAIT_SECONDS,
                           logger=logger)
    return Peer(name, socket, counter)


async def publish_http(tether, topic, data):
    """Publishes by HTTP off the event loop, which goes on answering pings meanwhile."""
    return await asyncio.to_thread(scenario.publish_http, tether, topic, data)


async def play_scenario(tether, max_message_bytes):
    for data in scenario.OLD:
        await publish_http(tether, BACKLOG, data)
    url = scenario.socket_url(tether)
    a, b = await open_peer(url, "A"), await open_peer(url, "B")
    peers = {"A": a, "B": b}

    await a.send({"subscribe": BACKLOG, "cursor": 1})
    await a.send({"subscribe": LIVE})
    await a.send(NOT_JSON)
    await b.send({"subscribe": LIVE})
    await b.send(NOT_JSON)
    await a.until("A's backlog and its error", lambda inbox: inbox.count(BACKLOG) == 2 and inbox.errors)
    await b.until("B's error", lambda inbox: inbox.errors)

    async def both_have(count, what):
        for peer in peers.values():
            await peer.until(f"{what} reaches {peer.inbox.name}", lambda inbox: inbox.count(LIVE) >= count)

    await publish_http(tether, LIVE, scenario.BY_HTTP)
    await both_have(1, "the publish by HTTP")
    await b.send({"publish": LIVE, "data": scenario.BY_B})
    await both_have(2, "B's publish")
    await a.send({"publish": LIVE, "data": scenario.BY_A})
    await both_have(3, "A's publish")

    await asyncio.sleep(scenario.IDLE_SECONDS)
    await publish_http(tether, LIVE, scenario.AFTER_IDLE)
    await both_have(4, "the publish after the idle heartbeats")
    for peer in peers.values():
        if peer.pings.pings < 2:
            fail(f"socket {peer.inbox.name} saw {peer.pings.pings} pings in {scenario.IDLE_SECONDS} s idle")
    print(f"idle for {scenario.IDLE_SECONDS} s: both sockets answered the pings and stayed open")
    print(f"pings answered: A {a.pings.pings}, B {b.pings.pings}")

    scenario.check_news({name: peer.inbox for name, peer in peers.items()})
    scenario.check_errors({name: peer.inbox for name, peer in peers.items()})
    codes = []
    for peer in peers.values():
        await peer.socket.close(1000)
        codes.append(peer.socket.close_code)
    if codes != [1000, 1000]:
        fail(f"closing with 1000, tether answered {codes}")
    print("closed with 1000: tether answered 1000")

    await fragments_and_limits(tether, url, max_message_bytes)


async def fragments_and_limits(tether, url, max_message_bytes):
    peer = await open_peer(url, "C")
    await peer.send({"subscribe": "fragments"})
    # An iterable of strings goes out as one text message in as many frames: the first one
    # with opcode text, the others continuations, the last one with FIN.
    parts = ['{"publish":"fragments",', '"data":"in three', ' fragments"}']
    await peer.send(parts)
    await peer.until("the fragmented message", lambda inbox: inbox.count("fragments") == 1)
    got = peer.inbox.topics["fragments"]
    if got != [(1, "in three fragments")]:
        fail(f"the fragmented message came back as {got}")
    print(f"a message in {len(parts)} fragments: {scenario.entries(got)}")

    # A message of exactly --max-message-bytes (the whole JSON text, in UTF-8) is taken.
    envelope = '{"publish":"fragments","data":""}'
    at_limit = envelope[:-2] + "x" * (max_message_bytes - len(envelope)) + '"}'
    assert len(at_limit.encode()) == max_message_bytes
    await peer.send(at_limit)
    await peer.until("the message at the limit", lambda inbox: inbox.count("fragments") == 2)
    print(f"a message of {max_message_bytes} bytes: published")
    over = envelope[:-2] + "x" * (max_message_bytes + 1 - len(envelope)) + '"}'
    await peer.send(over)
    close = await peer.closed_by_server("a message over the limit")
    if close.code != 1009:
        fail(f"a message over the limit: tether closed with {close}, expected 1009")
    print(f"a message of {max_message_bytes + 1} bytes: closed {close.code}")

    peer = await open_peer(url, "D")
    await peer.send(b"\x01\x02\x03")
    close = await peer.closed_by_server("a binary message")
    if close.code != 1003:
        fail(f"a binary message: tether closed with {close}, expected 1003")
    print(f"a binary message: closed {close.code}")


async def play_token(tether, token):
    try:
        socket = await connect(scenario.socket_url(tether), open_timeout=WAIT_SECONDS)
    except InvalidStatus as refused:
        if refused.response.status_code != 401 or "401" not in str(refused):
            fail(f"without a token: {refused}, expected a 401")
        print(f"without a token: the handshake failed: {refused}")
    else:
        await socket.close()
        fail("a socket opened without a token")

    peer = await open_peer(scenario.socket_url(tether, f"?token={token}"), "T")
    await peer.send({"subscribe": "t"})
    await peer.send({"publish": "t", "data": "with a token"})
    await peer.until("the publish with a token", lambda inbox: inbox.count("t") == 1)
    print(f"with a token: {scenario.entries(peer.inbox.topics['t'])}")
    await peer.send({"subscribe": "elsewhere"})
    await peer.send({"publish": "elsewhere", "data": "not allowed"})
    await peer.until("the errors for a topic outside the token", lambda inbox: len(inbox.errors) == 2)
    for error in peer.inbox.errors:
        print(f"outside the token: {error}")
    # The token expires a few seconds after the script started: tether closes with 1008.
    close = await peer.closed_by_server("the token's end")
    if close.code != 1008:
        fail(f"at the token's end tether closed with {close}, expected 1008")
    print(f"at the token's end: closed {close.code}")


def main():
    tether, mode, argument = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "scenario":
        asyncio.run(play_scenario(tether, int(argument)))
    elif mode == "token":
        asyncio.run(play_token(tether, argument))
    else:
        fail(f"unknown mode {mode!r}")
    print("websockets: ok")


if __name__ == "__main__":
    main()
