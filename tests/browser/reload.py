"""After a reload, a page resumes from the cursor it stored: nothing lost, nothing twice.

Usage: reload.py TETHER_URL PAGE_URL

Messages 1 to 3 are published and received. The page is reloaded and message 4 published at
once, so that it reaches the old page or waits for the new one. Then the page is left for
about:blank, and message 5 is published while no page listens, so that only the cursor the
page stored can bring it; the page is opened again in the same tab (its sessionStorage is kept
there) and message 6 follows. A last message, "end", comes after them: the server sends a
topic's messages in order, so once "end" has arrived, any duplicate of 1 to 6 would have
arrived before it. Both transports (EventSource and long poll) must end with exactly 1 to 6
and "end", once each, in order.
"""

import sys
import urllib.parse

from chromium import browser_page, fail, publish, wait_until

TOPIC = "t"
# What the page has received and how its transports fare, shown when a wait fails.
SEEN = "window.seen"


def open_page(page, url, loads):
    """Opens the page and waits for its EventSource; `loads` is how many times this tab has
    loaded it, this time included."""
    answer = page.goto(url)
    if answer is None or answer.status != 200:
        fail(f"the page's origin answered {answer and answer.status}")
    wait_until(page, f"window.seen.loads === {loads} && window.seen.streamOpened",
               f"the page (load {loads}) opens its EventSource", show=SEEN)


def wait_for_entry(page, entry):
    for transport in ("events", "polls"):
        wait_until(page, f"window.seen.{transport}.received.includes('{entry}')",
                   f"the page receives {entry} by {transport}", show=SEEN)


def main():
    tether, page_url = sys.argv[1], sys.argv[2]
    query = urllib.parse.urlencode({"tether": tether, "topic": TOPIC})

    with browser_page() as (page, errors):
        open_page(page, f"{page_url}?{query}", loads=1)
        for seq in (1, 2, 3):
            publish(tether, TOPIC, f"m{seq}")
        wait_for_entry(page, "3:m3")

        # location.reload() from a timer, so that this call returns before the page goes.
        page.evaluate("setTimeout(() => location.reload(), 0)")
        publish(tether, TOPIC, "m4")
        wait_until(page, "window.seen && window.seen.loads === 2 && window.seen.streamOpened",
                   "the reloaded page opens its EventSource", show=SEEN)
        wait_for_entry(page, "4:m4")

        page.goto("about:blank")
        publish(tether, TOPIC, "m5")
        open_page(page, f"{page_url}?{query}", loads=3)
        publish(tether, TOPIC, "m6")
        publish(tether, TOPIC, "end")
        wait_for_entry(page, "7:end")

        expected = [f"{seq}:m{seq}" for seq in range(1, 7)] + ["7:end"]
        for transport in ("events", "polls"):
            received = page.evaluate(f"window.seen.{transport}.received")
            if received != expected:
                fail(f"by {transport} the page received {received}, expected {expected}")
            print(f"received by {transport}: {' '.join(received)}")
        if errors:
            fail(f"console errors: {errors}")
    print("reload: resumed")


if __name__ == "__main__":
    main()
