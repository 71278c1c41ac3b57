"""Load the documentation site and a sample fleet report in headless Chromium.

Every page of build/docs/html/ and the report are opened in Debian's chromium,
driven over the DevTools protocol on a pipe (--remote-debugging-pipe, so no
port and nothing outside the standard library). A page fails the check when it
throws a JavaScript exception, logs a console error, fails to load one of its
own (file://) resources or renders without a title or body text; the report
also needs its SVG chart drawn with one bar per captured host. Requests
that would leave the machine are blocked and listed, not counted as errors.
Screenshots of a few pages and of the report are kept in the output directory.

Usage: python tools/docs-check.py SITE_DIR REPORT_HTML OUTPUT_DIR
Exit status: 0 all pages clean, 1 errors found, 2 chromium could not be run.
"""

import base64
import fcntl
import json
import os
import pathlib
import select
import shutil
import subprocess
import sys
import tempfile
import time

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,900", "--remote-debugging-pipe",
]
PAGE_TIMEOUT = 30.0
# Pages of the site kept as screenshots (relative to SITE_DIR), besides the report.
SCREENSHOT_PAGES = {
    "index.html": "site-index.png",
    "collections/netbsd/pf/index.html": "collection-index.png",
    "collections/netbsd/pf/states_restore_module.html": "states_restore_module.png",
    "collections/netbsd/pf/reboot_role.html": "reboot_role.png",
    "collections/netbsd/pf/docsite/netbsd-notes.html": "netbsd-notes.png",
}
PAGE_FACTS = """(() => ({
  title: document.title,
  text: document.body ? document.body.innerText.trim().length : 0,
  chart_bars: Array.from(document.querySelectorAll('svg rect')).filter(
      rect => rect.getBoundingClientRect().width > 0).length,
  captured_rows: document.querySelectorAll('tbody tr:not(.failed):not(.nocapture)').length,
}))()"""


def _pipe_above(lowest):
    """os.pipe() whose descriptors are all >= lowest, clear of the fds 3 and 4 chromium wants."""
    moved = []
    for fd in os.pipe():
        moved.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest))
        os.close(fd)
    return tuple(moved)


class DevTools:
    """The DevTools protocol over chromium's pipe: fd 3 carries commands, fd 4 replies and events."""

    def __init__(self, chromium, profile_dir):
        to_browser_read, self._to_browser = _pipe_above(10)
        self._from_browser, from_browser_write = _pipe_above(10)
        # chromium expects the pipe ends as its fds 3 and 4; bash puts them there
        # at exec time, after subprocess has dealt with its own descriptors.
        wiring = 'exec "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-'.format(r=to_browser_read, w=from_browser_write)
        self.process = subprocess.Popen(
            ["bash", "-c", wiring, "bash", chromium] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_read, from_browser_write),
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events = []

    def send(self, method, session=None, timeout=PAGE_TIMEOUT, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"].get("message")))
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, deadline):
        """Consume messages until the event ``method`` arrives; False on timeout."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[index]
                    return True
            try:
                self.events.append(self._receive(deadline))
            except TimeoutError:
                return False

    def _receive(self, deadline):
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply from chromium")
            ready = select.select([self._from_browser], [], [], remaining)[0]
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe (exit status %s)" % self.process.poll())
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def problems_of(events):
    """Errors and blocked outside requests among the events of one page load."""
    errors, blocked = [], []
    urls = {event["params"]["requestId"]: event["params"]["request"]["url"]
            for event in events if event.get("method") == "Network.requestWillBeSent"}
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: %s" % details.get("exception", {}).get("description", details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console.%s: %s" % (params["type"], " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            # Failed loads are reported once, by Network.loadingFailed.
            entry = params["entry"]
            if entry.get("source") != "network":
                errors.append("log: %s %s" % (entry["text"], entry.get("url", "")))
        elif method == "Network.loadingFailed":
            if params.get("blockedReason"):
                continue
            errors.append("resource failed: %s (%s)" % (urls.get(params["requestId"], "?"), params.get("errorText")))
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url.startswith(("http:", "https:")):
                blocked.append(url)
    return errors, blocked


def check_page(devtools, session, url, screenshot=None):
    devtools.events.clear()
    devtools.send("Page.navigate", session, url=url)
    loaded = devtools.wait_for("Page.loadEventFired", time.monotonic() + PAGE_TIMEOUT)
    # Let late scripts (search index, theme) run and report.
    time.sleep(0.2)
    facts = devtools.send("Runtime.evaluate", session, expression=PAGE_FACTS, returnByValue=True)["result"]["value"]
    if screenshot:
        shot = devtools.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=False)
        pathlib.Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    errors, blocked = problems_of([event for event in devtools.events if event.get("sessionId") == session])
    if not loaded:
        errors.append("load event not fired within %d s" % PAGE_TIMEOUT)
    if not facts["title"]:
        errors.append("no title")
    if facts["text"] < 50:
        errors.append("almost no text (%d characters)" % facts["text"])
    return errors, blocked, facts


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    site, report, output = (pathlib.Path(arg).resolve() for arg in argv[1:])
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("docs-check: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    pages = sorted(site.rglob("*.html"))
    if not pages:
        print("docs-check: no HTML page under %s (run make docs)" % site, file=sys.stderr)
        return 2

    failures = 0
    all_blocked = set()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="docs-check-profile-") as profile:
        devtools = DevTools(chromium, profile)
        try:
            target = devtools.send("Target.createTarget", url="about:blank")["targetId"]
            session = devtools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                devtools.send(domain + ".enable", session)
            devtools.send("Network.setBlockedURLs", session, urls=["http://*", "https://*"])

            checks = [(page, SCREENSHOT_PAGES.get(page.relative_to(site).as_posix())) for page in pages]
            checks.append((report, "capture-report.png"))
            for page, screenshot in checks:
                errors, blocked, facts = check_page(
                    devtools, session, page.as_uri(), screenshot and str(output / screenshot))
                if page == report:
                    if facts["chart_bars"] != 2 * facts["captured_rows"] or not facts["chart_bars"]:
                        errors.append("chart: %d bars drawn for %d captured hosts (want two per host)" % (
                            facts["chart_bars"], facts["captured_rows"]))
                all_blocked.update(blocked)
                name = page.relative_to(site) if page != report else page
                if errors:
                    failures += 1
                    print("FAIL %s" % name)
                    for error in errors:
                        print("     %s" % error)
        finally:
            devtools.close()

    for url in sorted(all_blocked):
        print("note: blocked outside request %s" % url)
    print("docs-check: %d pages and the sample report loaded in %.1f s, %d with errors; screenshots in %s" % (
        len(pages), time.monotonic() - started, failures, output))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
