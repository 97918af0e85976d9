"""A page on another origin follows a topic on tether by EventSource and by long poll (fetch).

Usage: cross_origin.py TETHER_URL PAGE_URL receives|blocked|token [TOKEN]

`receives`: tether allows the page's origin; the page gets every message both ways, and a
fetch with a header that needs a CORS preflight (Last-Event-ID) is answered too.
`token`: the same from a server with --jwt-secret, the page given TOKEN (it may subscribe and
publish to the topic) in its fragment; and a poll without the token gets a 401 the page can
read, since the refusal carries the CORS headers too.
`blocked`: tether does not allow it; the browser refuses the page every answer (the console
says "blocked by CORS policy" for both transports) and the page receives nothing; and a
cross-site publish it makes (a simple POST, sent without a preflight) stores nothing.
"""

import json
import sys
import urllib.parse
import urllib.request

from chromium import browser_page, fail, publish, wait_until

TOPIC = "t"
# What the page has received and how its transports fare, shown when a wait fails.
SEEN = "window.seen"
MESSAGES = ["m1", "m2", "m3"]


def main():
    tether, page_url, expect = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if expect == "token" else None
    query = urllib.parse.urlencode({"tether": tether, "topic": TOPIC})

    with browser_page() as (page, errors):
        answer = page.goto(f"{page_url}?{query}#token={token}" if token else f"{page_url}?{query}")
        if answer is None or answer.status != 200:
            fail(f"the page's origin answered {answer and answer.status}")
        if expect == "receives":
            receives(page, tether, errors)
        elif expect == "token":
            receives(page, tether, errors, token)
            refused_without_token(page, tether)
        elif expect == "blocked":
            blocked(page, tether, errors)
        else:
            fail(f"unknown expectation {expect!r}")


def receives(page, tether, errors, token=None):
    wait_until(page, "window.seen.streamOpened", "the page's EventSource opens", show=SEEN)
    for text in MESSAGES:
        publish(tether, TOPIC, text, token)
    expected = [f"{seq}:{text}" for seq, text in enumerate(MESSAGES, start=1)]
    for transport in ("events", "polls"):
        wait_until(page, f"window.seen.{transport}.received.length >= {len(expected)}",
                   f"the page receives {len(expected)} messages by {transport}", show=SEEN)
        received = page.evaluate(f"window.seen.{transport}.received")
        if received != expected:
            fail(f"by {transport} the page received {received}, expected {expected}")
        print(f"received by {transport}: {' '.join(received)}")

    # Last-Event-ID is not a CORS-safelisted header, so this fetch is preceded by a preflight
    # (OPTIONS); the header is the cursor, so the answer carries what came after message 1.
    answer = page.evaluate("""async ([tether, topic, token]) => {
        const headers = { 'Last-Event-ID': '1' };
        if (token) headers.Authorization = `Bearer ${token}`;
        const answer = await fetch(`${tether}/poll/${topic}`, { headers });
        return (await answer.json()).messages.map((message) => `${message.seq}:${message.data}`);
    }""", [tether, TOPIC, token])
    if answer != expected[1:]:
        fail(f"the preflighted poll answered {answer}, expected {expected[1:]}")
    print(f"preflighted poll: {' '.join(answer)}")

    if errors:
        fail(f"console errors: {errors}")
    print("cross-origin page: received")


def refused_without_token(page, tether):
    """A poll without the token: the browser hands the page the 401 (tether's refusal of a poll
    carries the CORS headers), rather than an opaque network error."""
    status = page.evaluate("""async ([tether, topic]) => {
        try {
            return String((await fetch(`${tether}/poll/${topic}`)).status);
        } catch (error) {
            return `not readable: ${error}`;
        }
    }""", [tether, TOPIC])
    if status != "401":
        fail(f"a poll without a token answered {status}, expected a 401 the page can read")
    print(f"without a token: {status}")


def blocked(page, tether, errors):
    # The EventSource's answer comes at once, without Access-Control-Allow-Origin: an error.
    wait_until(page, "window.seen.streamErrors > 0", "the page's EventSource fails", show=SEEN)
    # A held poll's answer comes with a message; it is refused only then.
    publish(tether, TOPIC, "m1")
    wait_until(page, "window.seen.pollErrors.length > 0", "the page's long poll fails", show=SEEN)
    preflighted = page.evaluate("""async ([tether, topic]) => {
        try {
            await fetch(`${tether}/poll/${topic}`, { headers: { 'Last-Event-ID': '1' } });
            return 'answered';
        } catch (error) {
            return 'refused';
        }
    }""", [tether, TOPIC])
    if preflighted != "refused":
        fail("the preflighted poll was answered")

    for transport in ("events", "polls"):
        received = page.evaluate(f"window.seen.{transport}.received")
        if received:
            fail(f"by {transport} the page received {received}, expected nothing")
    for path in ("/events/", "/poll/"):
        if not any("blocked by CORS policy" in error and path in error for error in errors):
            fail(f"no 'blocked by CORS policy' console error for {path}; errors: {errors}")
    if page.evaluate("window.seen.streamOpened"):
        fail("the EventSource opened: the browser let the page read the stream")

    # A "simple" cross-origin POST (text/plain) goes out without a preflight: the browser only
    # hides the answer. tether must refuse it itself: nothing may be stored.
    sent = page.evaluate("""async (tether) => {
        try {
            await fetch(`${tether}/publish/csrf`, { method: 'POST', body: 'written by another site',
                                                     headers: { 'Content-Type': 'text/plain' } });
            return 'answered';
        } catch (error) {
            return 'hidden';
        }
    }""", tether)
    if sent != "hidden":
        fail("the cross-site publish's answer reached the page")
    with urllib.request.urlopen(f"{tether}/poll/csrf?cursor=0&timeout=1s", timeout=10) as answer:
        stored = json.load(answer)
    if stored["messages"]:
        fail(f"a page of another site published: {stored}")
    print("cross-site publish: refused, nothing stored")
    print("cross-origin page: blocked")


if __name__ == "__main__":
    main()
