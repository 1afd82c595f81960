"""Drives the web dashboard of `fedhub dashboard` in a real headless browser (Debian's chromium,
through Playwright) and prints what it saw as one JSON object.

Two modes:

  demo  URL  the dashboard of alpha.test in a `fedhub demo --keep-running`: refuses a browser
             without the token, admits one with it, shows beta.test on the map and in the
             relationships table with its health, a refresh (after its confirmation) changes the
             shown last success, a change without the CSRF header is refused (403); optionally
             saves a screenshot.
  scale URL  a dashboard of a hub with 10 000 relationships: the map shows grouped nodes, the
             table one page of 50, and paging and sorting answer quickly.
  unreachable URL
             a dashboard whose hub cannot be reached: every panel shows its error state with the
             reason, and the header says the page keeps retrying.

The browser is never downloaded: --chromium names the executable (FEDHUB_CHROMIUM).
"""

import argparse
import os
import time
import urllib.parse

from playwright.sync_api import sync_playwright

from common import emit, fail, step

# Longest wait for anything the page shows, in milliseconds.
WAIT_MS = 15000


def launch(playwright, chromium):
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium, args=args)


def origin(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def row_selector(trust_domain):
    return f'#relationships tbody tr[data-trust-domain="{trust_domain}"]'


def demo(browser, url, peer, screenshot):
    seen = {}
    base = origin(url)

    # Without the token: the page and the API refuse, and no cookie is set.
    stranger = browser.new_context()
    page = stranger.new_page()
    response = step("open the dashboard without the token", lambda: page.goto(base + "/"))
    seen["without_token_status"] = response.status
    seen["without_token_text"] = page.inner_text("body")[:300]
    api = stranger.request.get(base + "/api/overview")
    seen["api_without_cookie_status"] = api.status
    seen["cookies_without_token"] = len(stranger.cookies())
    stranger.close()

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    step("open the printed URL", lambda: page.goto(url))
    seen["url_after_login"] = page.url
    cookie = context.cookies()[0]
    seen["cookie"] = {
        "http_only": cookie["httpOnly"],
        "same_site": cookie["sameSite"],
        "name_prefix": cookie["name"].startswith("fedhub_dashboard_"),
    }

    # The map and the table show the peer with its health.
    row = row_selector(peer)
    step("the relationships table shows the peer", lambda: page.wait_for_selector(row, timeout=WAIT_MS))
    node = f'#map g.node[data-trust-domain="{peer}"]'
    step("the map shows the peer", lambda: page.wait_for_selector(node, timeout=WAIT_MS))
    seen["map_health"] = page.get_attribute(node, "data-health")
    seen["map_edge_label"] = page.locator("#map .edge-label").first.text_content()
    seen["table_health"] = page.locator(f"{row} .badge").text_content()
    seen["own_trust_domain"] = page.inner_text("#trust-domain")
    seen["key_roles"] = sorted(set(page.locator("#keys tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.role)")))
    seen["live"] = page.inner_text("#live")

    # Refresh: asks first; cancelling changes nothing, confirming fetches the bundle again.
    def last_success():
        return page.get_attribute(f"{row} td.last-success", "data-ts")

    before = last_success()
    seen["last_success_before"] = before
    # Whole seconds: let the clock move on so that a new success shows as a new time.
    time.sleep(1.5)
    page.click(f"{row} button.refresh")
    step("the refresh asks for confirmation",
         lambda: page.wait_for_selector("#confirm[open]", timeout=WAIT_MS))
    seen["confirmation_text"] = page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    time.sleep(1.0)
    # Cancelled: nothing was sent, so nothing is reported.
    seen["toast_after_cancel"] = page.locator("#toast").is_visible()
    page.click(f"{row} button.refresh")
    page.wait_for_selector("#confirm[open]", timeout=WAIT_MS)
    page.click("#confirm-ok")
    # The page reports the refresh once the hub answered it, then reloads the table.
    step("the page reports the refresh", lambda: page.wait_for_function(
        "() => !document.getElementById('toast').hidden", timeout=WAIT_MS))
    seen["toast"] = page.inner_text("#toast")

    def changed():
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            now = last_success()
            if now and now != before:
                return now
            time.sleep(0.2)
        raise TimeoutError(f"the shown last success stayed {before}")

    seen["last_success_after"] = step("the refresh changes the shown last success", changed)

    # A change without the CSRF header, from the page itself (cookie sent, same origin).
    seen["post_without_csrf_status"] = page.evaluate(
        """async (peer) => (await fetch(`/api/relationships/${peer}/refresh`,
                { method: 'POST', credentials: 'same-origin' })).status""", peer)
    seen["post_with_csrf_status"] = page.evaluate(
        """async (peer) => (await fetch(`/api/relationships/${peer}/refresh`, {
                method: 'POST', credentials: 'same-origin',
                headers: { 'X-Fedhub-Csrf': document.querySelector('meta[name="fedhub-csrf"]').content },
            })).status""", peer)

    if screenshot:
        page.wait_for_timeout(2500)
        page.screenshot(path=screenshot)
        seen["screenshot_bytes"] = os.path.getsize(screenshot)
    seen["page_errors"] = errors
    context.close()
    return seen


def scale(browser, url):
    seen = {}
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    started = time.monotonic()
    page.goto(url)
    step("the map draws", lambda: page.wait_for_selector("#map g.node", timeout=WAIT_MS))
    step("the table fills",
         lambda: page.wait_for_selector("#relationships tbody tr", timeout=WAIT_MS))
    seen["first_paint_secs"] = round(time.monotonic() - started, 2)
    seen["map_grouped_by"] = page.get_attribute("#map", "data-grouped-by")
    seen["map_nodes"] = page.locator("#map g.node").count()
    seen["map_labels"] = page.locator("#map g.node").evaluate_all(
        "nodes => nodes.map(n => n.dataset.label)")
    seen["svg_elements"] = page.locator("#map *").count()
    seen["table_rows"] = page.locator("#relationships tbody tr").count()
    seen["pager"] = page.inner_text('.pager[data-for="relationships"]')

    first = page.locator("#relationships tbody tr").first.get_attribute("data-trust-domain")
    started = time.monotonic()
    page.click('.pager[data-for="relationships"] button:has-text("next")')
    page.wait_for_function(
        """(first) => {
            const row = document.querySelector('#relationships tbody tr');
            return row && row.dataset.trustDomain !== first;
        }""", arg=first, timeout=WAIT_MS)
    seen["next_page_secs"] = round(time.monotonic() - started, 2)
    seen["second_page_first"] = page.locator(
        "#relationships tbody tr").first.get_attribute("data-trust-domain")

    started = time.monotonic()
    page.click('#relationships th[data-sort="trust_domain"]')
    page.wait_for_selector('#relationships th[data-sort="trust_domain"][aria-sort="descending"]',
                           timeout=WAIT_MS)
    page.wait_for_function(
        """() => {
            const row = document.querySelector('#relationships tbody tr');
            return row && row.dataset.trustDomain === 'peer-09999.test';
        }""", timeout=WAIT_MS)
    seen["sort_secs"] = round(time.monotonic() - started, 2)

    page.select_option("#map-grouping", "health")
    page.wait_for_selector('#map[data-grouped-by="health"]', timeout=WAIT_MS)
    # The main thread stays free: a script scheduled now runs within a short time.
    seen["main_thread_delay_ms"] = page.evaluate(
        """() => new Promise((done) => {
            const at = performance.now();
            setTimeout(() => done(Math.round(performance.now() - at)), 0);
        })""")
    seen["page_errors"] = errors
    context.close()
    return seen


def unreachable(browser, url):
    seen = {}
    context = browser.new_context()
    page = context.new_page()
    page.goto(url)
    step("the header reports the error", lambda: page.wait_for_selector(
        '#live[data-state="error"]', timeout=WAIT_MS))
    seen["live"] = page.inner_text("#live")
    seen["panels"] = {}
    for panel in ["map", "bundle", "relationships", "entries", "agents", "audit"]:
        box = f'.state[data-for="{panel}"]'
        step(f"the {panel} panel shows its error state", lambda box=box: page.wait_for_selector(
            f'{box}[data-kind="error"]', timeout=WAIT_MS))
        seen["panels"][panel] = page.inner_text(box)
    context.close()
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["demo", "scale", "unreachable"])
    parser.add_argument("url", help="the dashboard URL with its token")
    parser.add_argument("--chromium", default=os.environ.get("FEDHUB_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--peer", default="beta.test", help="demo: the peer trust domain")
    parser.add_argument("--screenshot", help="demo: save a screenshot of the page here")
    args = parser.parse_args()
    if not os.path.isfile(args.chromium):
        fail("find chromium", f"{args.chromium} is not a file (install Debian's chromium)")
    with sync_playwright() as playwright:
        browser = step("launch chromium", lambda: launch(playwright, args.chromium))
        try:
            if args.mode == "demo":
                seen = demo(browser, args.url, args.peer, args.screenshot)
            elif args.mode == "scale":
                seen = scale(browser, args.url)
            else:
                seen = unreachable(browser, args.url)
        finally:
            browser.close()
    emit(seen)


if __name__ == "__main__":
    main()
