"""The live page on a server with `--jwt-secret` says what is wrong with its token: none (401),
one that does not cover what it asks (403), one that expired while it was open.

Usage: needs_token.py TETHER_URL TETHER_BINARY SECRET

The tokens are minted here, with `tether token` as a user would, so that the short-lived one
starts its life when the page is about to use it. Console errors are expected (the browser
reports each refused request); errors of the page's own script are not.
"""

import os
import subprocess
import sys

from chromium import WAIT_MS, browser_page, fail, wait_until

TOPIC = "news"
# Long enough for the page to open both its streams before it ends on a loaded machine, short
# enough for the test to see it end within one wait (WAIT_MS): `exp` is in whole seconds and a
# stream ends up to a second before it, so the streams last 10 to 12 s.
SHORT_LIFETIME_SECS = 12
# Longer than the `retry:` tether gives a stream (2 s): an EventSource left to itself would
# have reconnected by then.
QUIET_MS = 4000

STATE = "document.getElementById('stats-state').textContent"
TAIL_STATE = "document.getElementById('tail-state').textContent"
NOTICE = "document.getElementById('token-notice').textContent"
SHOWN = f"[{STATE}, {TAIL_STATE}, {NOTICE}]"


def mint(binary, secret, *claims):
    """A token from `tether token`, given the secret in its environment."""
    try:
        done = subprocess.run([binary, "token", *claims], env={**os.environ, "TETHER_JWT_SECRET": secret},
                              capture_output=True, text=True, timeout=WAIT_MS / 1000)
    except subprocess.TimeoutExpired:
        fail(f"tether token {' '.join(claims)} did not end within {WAIT_MS} ms")
    if done.returncode != 0:
        fail(f"tether token {' '.join(claims)} failed: {done.stderr}")
    return done.stdout.strip()


def tail(page):
    page.fill("#topic", TOPIC)
    page.click("#tail-form button")


def main():
    tether, binary, secret = sys.argv[1], sys.argv[2], sys.argv[3]

    with browser_page() as (page, errors):
        requests = []
        page.on("request", lambda request: requests.append(request))

        answer = page.goto(f"{tether}/")
        if answer is None or answer.status != 200:
            fail(f"GET / answered {answer and answer.status}: the live page needs no token")
        wait_until(page, f"{STATE} === 'needs a token' && {NOTICE}.startsWith('this server needs a token')",
                   "the page says it needs a token", show=SHOWN)
        print(f"without a token: {page.evaluate(NOTICE)}")

        # A token pasted into the address bar of the open page: only the fragment changes.
        subscriber = mint(binary, secret, "--subscribe", TOPIC)
        page.goto(f"{tether}/#token={subscriber}")
        wait_until(page, f"{STATE} === 'not allowed'", "the page says the token is not an admin's", show=SHOWN)
        print(f"not an admin's token: {page.evaluate(NOTICE)}")
        tail(page)
        wait_until(page, f"{TAIL_STATE} === 'tailing {TOPIC}'", "the page tails the topic", show=SHOWN)
        page.fill("#message", "not allowed")
        page.click("#publish-form button")
        wait_until(page, "document.getElementById('publish-answer').textContent.startsWith('403')",
                   "the page shows the publish refused", show="document.getElementById('publish-answer').textContent")
        print(f"with a subscriber's token: {page.evaluate(STATE)}; {page.evaluate(TAIL_STATE)}; "
              f"publish: {page.inner_text('#publish-answer').strip()}")

        short = mint(binary, secret, "--admin", "--subscribe", TOPIC, "--lifetime", f"{SHORT_LIFETIME_SECS}s")
        page.goto(f"{tether}/#token={short}")
        wait_until(page, f"{STATE} === 'live'", "the page with an admin's token is live", show=SHOWN)
        tail(page)
        wait_until(page, f"{TAIL_STATE} === 'tailing {TOPIC}'", "the page tails the topic", show=SHOWN)
        wait_until(page, f"{STATE} === 'the token expired' && {TAIL_STATE} === '{TOPIC}: the token expired'",
                   "the page says the token expired", show=SHOWN)
        streams = len([r for r in requests if "/events/" in r.url])
        page.wait_for_timeout(QUIET_MS)
        if len([r for r in requests if "/events/" in r.url]) != streams:
            fail("a stream was asked for again after its token expired")
        print(f"at the token's expiry: {page.evaluate(STATE)}; {page.evaluate(TAIL_STATE)}; no reconnection")
        print(f"expired notice: {page.evaluate(NOTICE)}")

        # The expired token is still the tab's: a reload is refused with the reason.
        page.reload()
        wait_until(page, f"{STATE} === 'needs a token' && {NOTICE}.includes('the token has expired')",
                   "the reloaded page says its token expired", show=SHOWN)
        print(f"after a reload: {page.evaluate(NOTICE)}")

        script_errors = [error for error in errors if error.startswith("uncaught")]
        if script_errors:
            fail(f"the page's script failed: {script_errors}")
    print("needs a token: ok")


if __name__ == "__main__":
    main()
