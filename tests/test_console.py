"""The license console in a real browser (Playwright driving Debian's Chromium) against a real
server: the HTTP edge on port 0, the manual clock, real signed licenses."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ADMIN_TOKEN,
    CONTROL_PLANE_TOKEN,
    DAY,
    DEPLOYMENT_ID,
    GATEWAY_TOKEN,
    START,
    Harness,
    Vendor,
    midnight_after,
    self_signed_certificate,
)

from licensing_server.console import CONTENT_SECURITY_POLICY, load_assets

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# headless in a container: no sandbox (root), no GPU, and nothing that would reach out
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # no name resolves but this machine's: the console must need nothing from outside
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# bounded waits: for the page to show an answer, and for one of its refreshes (every 5 s),
# on a busy machine
EXPECT_WAIT_MS = 10_000
REFRESH_WAIT_MS = 15_000


def _missing_browser(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for all the console's tests; each test opens its own context.

    Module scope, not session: while Playwright's sync API is open its event loop counts as
    running in this thread, and other modules' asyncio.run() would refuse to start."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("the playwright package is not installed (pip install '.[test]')")
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """A server, and a browser tab on its console."""

    harness: Harness
    page: Any
    url: str
    shots: Path
    # what the page must never do: break its own Content-Security-Policy, or throw
    faults: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(self.url)

    def sign_in(self, token: str) -> None:
        self.page.get_by_label("Bearer token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_console(
    make_harness: Callable[..., Harness], browser: Any, tmp_path: Path
) -> Iterator[Callable[..., Console]]:
    """Start a server (extra flags as for make_harness) and open a tab on its console."""
    contexts: list[Any] = []
    consoles: list[Console] = []

    def make(*extra: str, viewport: dict[str, int] = DESKTOP, scheme: str = "http") -> Console:
        harness = make_harness(*extra)
        port = harness.running.http_port
        assert port, "the HTTP edge is off"
        context = browser.new_context(
            viewport=viewport, ignore_https_errors=scheme == "https", service_workers="block"
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(EXPECT_WAIT_MS)
        console = Console(harness, page, f"{scheme}://127.0.0.1:{port}/", tmp_path)
        page.on(
            "console",
            lambda message: (
                console.faults.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        page.on("pageerror", lambda error: console.faults.append(str(error)))
        consoles.append(console)
        console.open()
        return console

    yield make
    for context in contexts:
        context.close()
    for console in consoles:
        assert console.faults == []


def expect(locator: Any) -> Any:
    """Playwright's expect: it retries until the page shows what it should, for at most
    EXPECT_WAIT_MS (a bound, not a timing under test)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def tampered(license_text: str) -> str:
    """The license with its claims edited (more cores) and the vendor's signature kept."""
    header, payload, signature = license_text.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["max_dp_cores"] = 100_000
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_no_license_opens_on_the_upload_prompt_with_the_deployment_id(
    open_console: Callable[..., Console],
) -> None:
    console = open_console()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    prompt = page.locator("#prompt")
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text("No license is active")
    expect(prompt).to_contain_text("No license has been installed yet.")
    expect(prompt).to_be_focused()
    expect(page.get_by_label("Deployment ID", exact=True)).to_have_value(DEPLOYMENT_ID)
    expect(page.get_by_role("button", name="Copy deployment ID")).to_be_visible()
    expect(page.get_by_label("License file")).to_be_visible()
    expect(page.get_by_label("License text")).to_be_visible()
    expect(page.locator("#state-meaning")).to_contain_text("creating and updating")
    console.screenshot("no-license")
    # the token is in this tab's session storage, and nowhere a URL or cookie would carry it
    assert page.evaluate("sessionStorage.getItem('licensing.console.token')") == ADMIN_TOKEN
    assert ADMIN_TOKEN not in page.url
    assert page.context.cookies() == []


def test_expired_license_prompts_for_a_new_one_and_a_clock_set_back_is_shown(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    harness = console.harness
    harness.admin.upload(vendor.issue(expires_at=START + 2 * DAY))
    harness.advance_to(START + 2 * DAY + 60)
    harness.clock.set(START + DAY)  # an operator winds the clock back a day
    harness.service.tick()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    prompt = page.locator("#prompt")
    expect(prompt).to_contain_text("License LIC-0001 ended on 2027-01-03 10:00 UTC.")
    expect(page.get_by_label("License file")).to_be_visible()
    expect(page.locator("#license-badge")).to_have_text("NO LICENSE ACTIVE")
    expect(page.locator("#expiry")).to_have_text("Ended on 2027-01-03 10:00 UTC.")
    clock = page.locator("#clock-warning")
    expect(clock).to_contain_text("The system clock moved back by 1 day")
    expect(clock).to_contain_text("judged against the latest time seen, 2027-01-03 10:01 UTC")
    expect(page.locator("#warnings")).to_contain_text("CLOCK_MOVED_BACK")
    console.screenshot("expired-clock-back")


def test_copy_button_puts_the_deployment_id_on_the_clipboard(
    open_console: Callable[..., Console],
) -> None:
    console = open_console()
    page = console.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    console.sign_in(CONTROL_PLANE_TOKEN)
    expect(page.get_by_label("Deployment ID", exact=True)).to_have_value(DEPLOYMENT_ID)
    page.get_by_role("button", name="Copy deployment ID").click()
    expect(page.locator("#copy-result")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == DEPLOYMENT_ID


def test_wrong_token_is_refused_with_a_clear_error(open_console: Callable[..., Console]) -> None:
    console = open_console()
    page = console.page
    # by keyboard: the token field has the focus, Enter signs in
    expect(page.get_by_label("Bearer token")).to_be_focused()
    page.keyboard.type("not-a-token")
    page.keyboard.press("Enter")
    error = page.get_by_role("alert")
    expect(error).to_contain_text("The token was not accepted (INVALID_TOKEN)")
    expect(page.locator("#console")).to_be_hidden()
    console.screenshot("wrong-token")
    assert page.evaluate("sessionStorage.length") == 0


def test_gateway_token_cannot_open_the_console(open_console: Callable[..., Console]) -> None:
    console = open_console()
    console.sign_in(GATEWAY_TOKEN)
    expect(console.page.get_by_role("alert")).to_contain_text("ROLE_NOT_ALLOWED")
    expect(console.page.get_by_role("alert")).to_contain_text("gateway token")
    expect(console.page.locator("#console")).to_be_hidden()


def test_tampered_license_shows_bad_signature_and_no_activate(
    open_console: Callable[..., Console], vendor: Vendor, tmp_path: Path
) -> None:
    console = open_console()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    license_file = tmp_path / "tampered.jws"
    license_file.write_text(tampered(vendor.issue()) + "\n")
    page.get_by_label("License file").set_input_files(str(license_file))
    what_if = page.locator("#what-if")
    expect(what_if).to_contain_text("Not valid: BAD_SIGNATURE")
    expect(what_if).to_contain_text("Nothing changes")
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)
    console.screenshot("tampered-license")
    assert not console.harness.admin.status().HasField("license")


def test_valid_license_shows_the_what_if_then_activate_applies_it(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    page.get_by_label("License text").fill(vendor.issue(features=["api7-gateway", "api7-portal"]))
    page.get_by_role("button", name="Check license").click()
    what_if = page.locator("#what-if")
    expect(what_if).to_contain_text("Valid")
    expect(what_if).to_contain_text("License LIC-0001 for Example Corp: 16 cores")
    expect(what_if).to_contain_text("The state would be NORMAL.")
    expect(what_if).to_contain_text("No day has been evaluated yet")
    expect(what_if).to_contain_text("Features gained: api7-gateway, api7-portal.")
    expect(what_if).to_contain_text("Features lost: none.")
    expect(what_if).to_contain_text("365 days until it expires, on 2028-01-01 10:00 UTC.")
    expect(what_if).to_contain_text("Not pending: it would take effect at once.")
    console.screenshot("what-if")
    # the dry run changed nothing
    assert not console.harness.admin.status().HasField("license")

    page.get_by_role("button", name="Activate").click()
    expect(page.locator("#upload-result")).to_have_text(
        "License LIC-0001 activated. The state is NORMAL."
    )
    expect(page.locator("#state-badge")).to_have_text("NORMAL")
    expect(page.locator("#prop-serial")).to_have_text("LIC-0001")
    expect(page.locator("#prop-customer")).to_have_text("Example Corp")
    expect(page.locator("#prop-max-cores")).to_have_text("16")
    expect(page.locator("#prop-features")).to_have_text("api7-gateway, api7-portal")
    expect(page.locator("#prop-deployment")).to_have_text(DEPLOYMENT_ID)
    expect(page.locator("#prop-trial")).to_have_text("no")
    expect(page.locator("#prompt")).to_be_hidden()
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)
    console.screenshot("activated")
    assert console.harness.admin.status().license.serial_number == "LIC-0001"


def test_activate_refused_shows_the_reason_code_and_the_message(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    page.get_by_label("License text").fill(vendor.issue(expires_at=START + 3600))
    page.get_by_role("button", name="Check license").click()
    expect(page.locator("#what-if")).to_contain_text("Valid")
    # the license ends between the check and the click
    console.harness.advance_to(START + 7200)
    page.get_by_role("button", name="Activate").click()
    result = page.locator("#upload-result")
    expect(result).to_contain_text("Not activated (EXPIRED: ")
    expect(result).to_have_text(
        "Not activated (EXPIRED: the license expired 2027-01-01T11:00:00Z)."
    )
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)
    expect(page.locator("#prompt")).to_be_visible()
    console.screenshot("activate-refused")


def over_quota(harness: Harness, days: range) -> None:
    """Three gateways of 8 cores (24 against a quota of 16) on each of these days (0 is the
    deployment day), each day judged at its midnight."""
    for day in days:
        for gateway in range(1, 4):
            harness.gateway.report_usage(f"gw-{gateway}", 8)
        harness.advance_to(midnight_after(START, day + 1))


def test_over_quota_days_show_in_the_chart_and_the_badge_counts_down_the_grace(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    harness = console.harness
    harness.admin.upload(vendor.issue())
    # a day within the quota, then three over it
    harness.gateway.report_usage("gw-1", 8)
    harness.advance_to(midnight_after(START))
    over_quota(harness, range(1, 4))
    page = console.page
    console.sign_in(ADMIN_TOKEN)

    expect(page.locator("#state-badge")).to_have_text("DP_CORE_EXCEEDED")
    expect(page.locator("#state-meaning")).to_contain_text("until the grace period ends")
    # evaluated at the start of 2027-01-03: grace ends 7 days later; the service's time is
    # 2027-01-05 00:00
    expect(page.locator("#grace-end")).to_have_text("2027-01-10 00:00 UTC")
    expect(page.locator("#grace-countdown")).to_have_text("5 days left")
    expect(page.locator("#warnings")).to_contain_text("DP_CORE_EXCEEDED")
    expect(page.locator("#current-cores")).to_contain_text("of 16 cores")

    chart = page.locator("#chart svg")
    expect(chart.locator("g.day")).to_have_count(4)
    expect(chart.locator("g.day.over")).to_have_count(3)
    expect(chart.locator('g.day[data-day="2027-01-01"]')).not_to_have_class(re.compile("over"))
    expect(chart.locator('g.day[data-day="2027-01-02"]')).to_have_attribute(
        "aria-label",
        "2027-01-02: peak 24 cores of 16 cores, over the quota; state DP_CORE_EXCEEDED",
    )
    expect(page.locator("#timeline")).to_contain_text("NORMAL → DP_CORE_EXCEEDED")
    expect(page.locator("#timeline")).to_contain_text("evaluation of 2027-01-02")
    console.screenshot("over-quota")

    # a day chosen by keyboard lists the instances of its peak
    chart.locator('g.day[tabindex="0"]').focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    detail = page.locator("#day-detail")
    expect(detail).to_contain_text("2027-01-03")
    expect(detail).to_contain_text("Peak 24 cores against a quota of 16: over the quota.")
    rows = detail.get_by_role("row")
    expect(rows).to_have_count(4)
    expect(rows.nth(1)).to_have_text("gw-18")
    expect(rows.nth(3)).to_have_text("gw-38")
    # and by a click
    chart.locator('g.day[data-day="2027-01-01"]').click()
    expect(detail).to_contain_text("Peak 8 cores against a quota of 16.")
    expect(detail.get_by_role("row")).to_have_count(2)
    console.screenshot("day-selected")


def test_refresh_keeps_the_upload_text_and_the_selected_day(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    harness = console.harness
    harness.admin.upload(vendor.issue())
    over_quota(harness, range(1))
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    chart = page.locator("#chart svg")
    expect(chart.locator("g.day")).to_have_count(1)
    chart.locator('g.day[data-day="2027-01-01"]').click()
    expect(page.locator("#day-detail")).to_contain_text("gw-1")
    page.locator("#upload summary").click()
    page.get_by_label("License text").fill("half-pasted")

    # the service moves on; the page shows it by itself
    over_quota(harness, range(1, 2))
    expect(chart.locator("g.day")).to_have_count(2, timeout=REFRESH_WAIT_MS)
    expect(page.locator("#state-badge")).to_have_text("DP_CORE_EXCEEDED")
    expect(page.get_by_label("License text")).to_have_value("half-pasted")
    expect(page.locator("#day-detail")).to_contain_text("gw-1")
    expect(chart.locator('g.day[data-day="2027-01-01"]')).to_have_attribute("aria-pressed", "true")


def test_control_plane_token_sees_everything_read_only(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console()
    console.harness.admin.upload(vendor.issue())
    page = console.page
    console.sign_in(CONTROL_PLANE_TOKEN)
    expect(page.locator("#role-label")).to_have_text("Signed in: control plane (read only)")
    expect(page.locator("#state-badge")).to_have_text("NORMAL")
    expect(page.locator("#prop-serial")).to_have_text("LIC-0001")
    page.locator("#upload summary").click()
    expect(page.locator("#upload-read-only")).to_be_visible()
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)
    expect(page.get_by_role("button", name="Check license")).to_have_count(0)
    expect(page.get_by_label("License file")).to_be_hidden()
    console.screenshot("control-plane")


def test_phone_width_shows_everything_without_sideways_scrolling(
    open_console: Callable[..., Console], vendor: Vendor
) -> None:
    console = open_console(viewport=PHONE)
    console.harness.admin.upload(vendor.issue())
    over_quota(console.harness, range(2))
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    expect(page.locator("#state-badge")).to_have_text("DP_CORE_EXCEEDED")
    expect(page.locator("#chart svg g.day")).to_have_count(2)
    # the chart scrolls inside its own box; the page itself never scrolls sideways
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    console.screenshot("phone")


def test_console_is_served_over_the_edges_tls(
    open_console: Callable[..., Console], tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    console = open_console("--tls-cert", str(cert), "--tls-key", str(key), scheme="https")
    console.sign_in(CONTROL_PLANE_TOKEN)
    expect(console.page.get_by_label("Deployment ID", exact=True)).to_have_value(DEPLOYMENT_ID)
    console.screenshot("tls")


def test_sign_out_forgets_the_token(open_console: Callable[..., Console]) -> None:
    console = open_console()
    page = console.page
    console.sign_in(ADMIN_TOKEN)
    expect(page.locator("#prompt")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Bearer token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    # a reload of a signed-in tab signs in again from the tab's storage
    console.sign_in(ADMIN_TOKEN)
    expect(page.locator("#prompt")).to_be_visible()
    page.reload()
    expect(page.locator("#prompt")).to_be_visible()


# --- the page's HTTP answers, without a browser ---


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def test_page_and_assets_carry_a_strict_content_security_policy(harness: Harness) -> None:
    base = f"http://127.0.0.1:{harness.running.http_port}"
    for path in ["/", "/console/", *(f"/console/{name}" for name in load_assets())]:
        status, headers, _ = fetch(base + path)
        assert status == 200, path
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
    assert CONTENT_SECURITY_POLICY == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    # the API's answers are not for any cache
    status, headers, _ = fetch(
        base + "/api/license", {"Authorization": f"Bearer {CONTROL_PLANE_TOKEN}"}
    )
    assert (status, headers["Cache-Control"]) == (200, "no-store")


def test_assets_are_revalidated_by_etag(harness: Harness) -> None:
    url = f"http://127.0.0.1:{harness.running.http_port}/console/console.js"
    status, headers, _ = fetch(url)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    again, _, empty = fetch(url, {"If-None-Match": headers["ETag"]})
    assert (again, empty) == (304, b"")
    missing, _, _ = fetch(f"http://127.0.0.1:{harness.running.http_port}/console/nothing.js")
    assert missing == 404


def test_console_without_its_slash_leads_to_the_page(harness: Harness) -> None:
    base = f"http://127.0.0.1:{harness.running.http_port}"
    status, _, body = fetch(base + "/console")  # urllib follows the redirect
    assert status == 200
    assert b"<title>License console</title>" in body


def test_console_needs_nothing_from_outside() -> None:
    """No CDN, no web font, no inline script or style: every asset is the package's own."""
    assets = load_assets()
    assert {"index.html", "console.js", "console.css", "favicon.svg"} <= set(assets)
    for name, asset in assets.items():
        text = asset.body.decode("utf-8")
        # the SVG namespace is a name, not a fetch
        text = text.replace("http://www.w3.org/2000/svg", "")
        outside = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)
        assert outside == [], name
        assert "@import" not in text and "url(" not in text, name
    page = assets["index.html"].body.decode()
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=", page) == []
