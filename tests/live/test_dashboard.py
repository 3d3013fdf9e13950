"""The dashboard at / in real headless Chromium: sign in, see the pool, act on sessions.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the
``selenium`` package; Selenium is pointed at /usr/bin/chromedriver, so it downloads
nothing. Off CI the tests skip when Chromium is missing; on CI (CI=true) they fail.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

# One store is enough: the browser UI over the API; the API itself runs on both stores.
# A server per test: the browser keeps the signed-in key per origin (sessionStorage), and every test
# starts signed out.
pytestmark = [pytest.mark.sqlite_only, pytest.mark.server_per_test]

CHROMIUM = os.environ.get("TELEGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TELEGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 20.0  # seconds: a deadline for each wait, polled, not slept

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - reported by the fixture below
    webdriver = None


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if webdriver is None:
        missing.append("the selenium package")
    if missing:
        reason = (f"headless Chromium test needs {', '.join(missing)}"
                  " (apt-get install chromium chromium-driver; pip install selenium)")
        if _on_ci():
            pytest.fail(reason + "; .ci/run should have installed it")
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="telegate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--window-size=1400,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver, condition, message: str):
    def check(d):
        try:
            return condition(d)
        except StaleElementReferenceException:  # the table was redrawn under us: look again
            return False

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(check, message)


def row(driver, name: str):
    for tr in driver.find_elements(By.CSS_SELECTOR, "#sessions-body tr"):
        if tr.get_attribute("data-name") == name:
            return tr
    return None


def row_state(driver, name: str) -> str | None:
    tr = row(driver, name)
    return tr.get_attribute("data-state") if tr is not None else None


def click_action(driver, name: str, action: str) -> None:
    def attempt(d):
        tr = row(d, name)
        buttons = tr.find_elements(By.CSS_SELECTOR, f"button[data-action='{action}']") if tr is not None else []
        if not buttons:
            return False
        buttons[0].click()
        return True

    wait(driver, attempt, f"no {action} button for {name}")


def sign_in(driver, server, key: str) -> None:
    driver.get(server.url + "/")
    wait(driver, lambda d: d.find_element(By.ID, "api-key").is_displayed(), "sign-in form not shown")
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "sign-in-button").click()


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


def test_sign_in_watch_the_pool_and_act(browser, live_server, tmp_path: Path):
    server = live_server
    names = [f"acc{i:02d}" for i in range(1, 11)]
    server.add_sessions(*names, kind="telethon")
    server.add_sessions(HOSTILE)
    for holder in ("worker-1:4242", "worker-2:4243", "worker-3:4244"):
        server.request("POST", "/session", {"ttl": 900, "holder": holder})
    for seconds in (3600, 95):
        lease = server.request("POST", "/session").json
        server.request("POST", "/release", {"session_id": lease["session_id"], "flood_wait": seconds})
    server.request("PATCH", f"/sessions/{server.store.find_session_id('acc10')}",
                   {"disabled": True, "reason": "AuthKeyUnregistered: the session was revoked"}, key="admin")

    # The page itself holds no data and needs no key.
    sign_in(browser, server, server.admin_key)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sessions-body tr")) == 11, "table not shown")
    assert server.admin_key not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('telegate.apiKey')") == server.admin_key
    assert browser.execute_script("return localStorage.length") == 0
    wait(browser, lambda d: text(d, "count-total") == "11", "counts not shown")
    assert (text(browser, "count-free"), text(browser, "count-in_use"), text(browser, "count-in_floodwait"),
            text(browser, "count-disabled")) == ("5", "3", "2", "1")
    assert "Next flood wait ends in 1m" in text(browser, "next-available")
    assert row(browser, "acc01").find_element(By.CSS_SELECTOR, "td.holder").text == "worker-1:4242"
    assert row(browser, "acc10").find_element(By.CSS_SELECTOR, "td.reason").text.startswith("AuthKeyUnregistered")

    # A hostile name is shown as text, never run.
    hostile = row(browser, HOSTILE)
    assert hostile is not None and hostile.find_element(By.CSS_SELECTOR, "td.name").text == HOSTILE
    assert browser.find_elements(By.CSS_SELECTOR, "#sessions-body img") == []
    assert browser.title == "TeleGate"

    # The flood-wait countdown runs live.
    flood_cell = lambda d: row(d, "acc05").find_element(By.CSS_SELECTOR, "td.flood").text  # noqa: E731
    first = flood_cell(browser)
    assert first.startswith("1m ") or first.startswith("59m"), first
    wait(browser, lambda d: flood_cell(d) != first, "flood-wait countdown does not tick")

    # A worker leases a session elsewhere: the dashboard refreshes by itself.
    late = server.request("POST", "/session", {"name": "acc08", "holder": "late-worker:1", "ttl": 600}).json
    wait(browser, lambda d: row_state(d, "acc08") == "in_use", "lease by a worker never showed up")

    # Another worker long-polls for that session: the dashboard shows who waits, and how long.
    waiter = threading.Thread(target=server.request, args=("POST", "/session"), daemon=True,
                              kwargs={"body": {"name": "acc08", "holder": "patient:2", "ttl": 600, "wait": 30}})
    waiter.start()
    wait(browser, lambda d: text(d, "waiting").startswith("1 worker is waiting for a session; the longest for "),
         "the waiting worker never showed up")
    server.request("POST", "/release", {"session_id": late["session_id"], "lease_token": late["lease_token"]})
    waiter.join(30)
    wait(browser, lambda d: text(d, "waiting") == "No worker is waiting for a session.", "the wait never ended")

    # Disable with a reason, from the dialog.
    click_action(browser, "acc09", "disable")
    wait(browser, lambda d: d.find_element(By.ID, "disable-dialog").is_displayed(), "disable dialog not shown")
    assert text(browser, "disable-name") == "acc09"
    reason = browser.find_element(By.ID, "disable-reason")
    reason.clear()
    reason.send_keys("phone number banned")
    browser.find_element(By.ID, "disable-confirm").click()
    wait(browser, lambda d: row_state(d, "acc09") == "disabled", "disable did not take effect")
    session = server.request("GET", f"/sessions/{server.store.find_session_id('acc09')}", key="admin").json
    assert (session["state"], session["disabled_reason"]) == ("disabled", "phone number banned")

    # Enable, and clear a flood wait.
    click_action(browser, "acc10", "enable")
    wait(browser, lambda d: row_state(d, "acc10") == "free", "enable did not take effect")
    click_action(browser, "acc04", "clear")
    wait(browser, lambda d: row_state(d, "acc04") == "free", "clearing the flood wait did not take effect")
    assert server.request("GET", f"/sessions/{server.store.find_session_id('acc04')}", key="admin").json["state"] == "free"

    # Add sessions.
    browser.find_element(By.ID, "add-sessions").click()
    wait(browser, lambda d: d.find_element(By.ID, "add-dialog").is_displayed(), "add dialog not shown")
    browser.find_element(By.ID, "add-names").send_keys("new-one\nnew-two\nacc01\n")
    browser.find_element(By.ID, "add-confirm").click()
    wait(browser, lambda d: row(d, "new-two") is not None, "added sessions not shown")
    wait(browser, lambda d: "Added 2 session(s), 1 already registered" in text(d, "toast"), "no result shown")
    assert server.status()["total"] == 13

    wait(browser, lambda d: text(d, "count-total") == "13", "counts did not refresh")
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("TELEGATE_SCREENSHOT_TO"):  # to refresh docs/img/dashboard.png
        shutil.copyfile(shot, os.environ["TELEGATE_SCREENSHOT_TO"])

    # Signing out forgets the key.
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: d.find_element(By.ID, "api-key").is_displayed(), "sign-out did not show the form")
    assert browser.execute_script("return sessionStorage.getItem('telegate.apiKey')") is None


def test_a_client_key_or_a_wrong_key_cannot_sign_in(browser, live_server):
    sign_in(browser, live_server, live_server.client_key)
    wait(browser, lambda d: d.find_element(By.ID, "sign-in-error").is_displayed(), "no error for a client key")
    assert "admin key" in text(browser, "sign-in-error")
    assert browser.execute_script("return sessionStorage.getItem('telegate.apiKey')") is None
    assert not browser.find_element(By.ID, "pool").is_displayed()
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys("tg_not-a-key")
    browser.find_element(By.ID, "sign-in-button").click()
    wait(browser, lambda d: "unknown or revoked" in text(d, "sign-in-error"), "no error for a wrong key")


def test_large_pool_is_paged_and_filtered(browser, live_server):
    live_server.store.add_sessions([f"s{i:05d}" for i in range(1, 5001)])
    for _ in range(3):
        live_server.request("POST", "/session", {"ttl": 600})
    sign_in(browser, live_server, live_server.admin_key)
    wait(browser, lambda d: text(d, "page-info") == "1\u201350 of 5000", "first page not shown")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sessions-body tr")) == 50
    browser.find_element(By.ID, "next-page").click()
    wait(browser, lambda d: text(d, "page-info") == "51\u2013100 of 5000", "next page not shown")
    assert row(browser, "s00051") is not None and row(browser, "s00001") is None
    browser.find_element(By.CSS_SELECTOR, "#state-filter option[value='in_use']").click()
    wait(browser, lambda d: text(d, "page-info") == "1\u20133 of 3", "state filter not applied")
    assert {tr.get_attribute("data-state") for tr in browser.find_elements(By.CSS_SELECTOR, "#sessions-body tr")} == {"in_use"}


def test_page_and_static_files_need_no_key_and_are_locked_down(live_server):
    page = live_server.request("GET", "/", key=None)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b"tg_" not in page.data and b"<table" in page.data
    for name in ("dashboard.js", "dashboard.css"):
        assert live_server.request("GET", f"/static/{name}", key=None).status == 200
    missing = live_server.request("GET", "/static/nothing.js", key=None)
    assert missing.status == 404 and missing.json["error"] == "not_found"
    escape = live_server.request("GET", "/static/..%2fstore.py", key=None)
    assert escape.status in (403, 404) and escape.headers["Content-Type"].startswith("application/json")


def history_rows(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#history-body tr")


def rest_items(driver) -> list[tuple[str, str]]:
    return [(li.find_element(By.CSS_SELECTOR, ".rest-scope").text, li.find_element(By.CSS_SELECTOR, ".countdown").text)
            for li in driver.find_elements(By.CSS_SELECTOR, "#detail-rests li")]


def test_clicking_a_session_shows_its_rests_and_history(browser, live_server, tmp_path: Path):
    server = live_server
    one, two, _ = server.add_sessions("acc01", "acc02", "acc03", kind="telethon")

    def cycle(release: dict, **lease) -> None:
        got = server.request("POST", "/session", {"name": "acc01", **lease}).json
        reply = server.request("POST", "/release", {"session_id": one, "lease_token": got["lease_token"], **release})
        assert reply.json == {"status": "released"}

    for number in range(12):  # 24 quiet events: the interesting ones do not fit on the first page alone
        cycle({}, holder=HOSTILE if number == 0 else "worker-1:4242")
    cycle({"flood_wait": 72000, "flood_scope": "contacts.resolveUsername"},
          purpose="contacts.resolveUsername", holder="resolver:7")
    cycle({"peer_flood": True, "flood_scope": "messages.sendMessage"}, purpose="messages.getHistory", holder="sender:5")
    cycle({"flood_wait": 95, "flood_scope": "messages.search"}, purpose="messages.getHistory", holder="reader:3")
    lease = server.request("POST", "/session", {"name": "acc02"}).json
    server.request("POST", "/release", {"session_id": two, "lease_token": lease["lease_token"], "flood_wait": 3600})

    sign_in(browser, server, server.admin_key)
    wait(browser, lambda d: row_state(d, "acc01") == "free", "table not shown")
    note = row(browser, "acc01").find_element(By.CSS_SELECTOR, "td.state .rest-note")
    assert note.text == "3 methods resting" and "contacts.resolveusername" in note.get_attribute("title")
    assert row(browser, "acc01").find_elements(By.CSS_SELECTOR, "button[data-action='clear']")
    assert not row(browser, "acc03").find_elements(By.CSS_SELECTOR, ".rest-note")

    # Click the row: the panel shows what acc01 rests for, soonest end first, counting down.
    assert not browser.find_element(By.ID, "detail").is_displayed()
    row(browser, "acc01").find_element(By.CSS_SELECTOR, "td.name").click()
    wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed(), "panel not shown")
    assert text(browser, "detail-title") == "acc01"
    assert "selected" in row(browser, "acc01").get_attribute("class")
    wait(browser, lambda d: len(rest_items(d)) == 3, "rests not shown")
    rests = rest_items(browser)
    assert [scope for scope, _ in rests] == ["messages.search", "contacts.resolveusername", "messages.sendmessage"]
    assert rests[0][1].startswith("1m 3"), rests
    assert rests[1][1] in ("19h 59m", "20h 00m") and rests[2][1] in ("23h 59m", "1d 0h"), rests
    first = rests[0][1]
    wait(browser, lambda d: rest_items(d)[0][1] != first, "rest countdown does not tick")

    # The history: newest first, a page at a time.
    wait(browser, lambda d: len(history_rows(d)) == 25, "history not shown")
    top = history_rows(browser)
    assert [r.get_attribute("data-type") for r in top[:6]] == [
        "flood_wait", "release", "lease", "flood_wait", "release", "lease"]
    assert top[0].find_element(By.CSS_SELECTOR, "td.what").text == "flood wait 1m 35s for messages.search"
    assert top[2].find_element(By.CSS_SELECTOR, "td.what").text == "leased for messages.gethistory \u00b7 ttl 5m 00s"
    assert top[3].find_element(By.CSS_SELECTOR, "td.what").text == \
        "flood wait 1d 0h for messages.sendmessage \u00b7 PEER_FLOOD"
    assert top[3].find_element(By.CSS_SELECTOR, "td.holder").text == "sender:5"
    assert top[3].find_element(By.CSS_SELECTOR, "td.key").text.startswith("test-client")
    browser.find_element(By.ID, "history-more").click()
    wait(browser, lambda d: len(history_rows(d)) == 33, "more history not loaded")
    wait(browser, lambda d: not d.find_element(By.ID, "history-more").is_displayed(), "'More' shown at the end")
    ids = [int(r.get_attribute("data-id")) for r in history_rows(browser)]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 33
    oldest = history_rows(browser)[-1]
    assert oldest.get_attribute("data-type") == "lease"
    assert oldest.find_element(By.CSS_SELECTOR, "td.holder").text == HOSTILE  # shown as text, never run
    assert browser.find_elements(By.CSS_SELECTOR, "#detail img") == [] and browser.title == "TeleGate"

    # A worker leases acc01 for a method it is not resting for: the panel shows it live, older pages kept.
    server.request("POST", "/session", {"name": "acc01", "purpose": "messages.getHistory", "holder": "late:1"})
    wait(browser, lambda d: len(history_rows(d)) == 34, "new event never showed up")
    assert history_rows(browser)[0].get_attribute("data-type") == "lease"
    wait(browser, lambda d: "in use by late:1" in text(d, "detail-summary"), "summary not refreshed")
    browser.execute_script("document.getElementById('detail').scrollTop = 0")
    shot = tmp_path / "history.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("TELEGATE_HISTORY_SCREENSHOT_TO"):  # to refresh docs/img/dashboard-history.png
        shutil.copyfile(shot, os.environ["TELEGATE_HISTORY_SCREENSHOT_TO"])

    # Clearing the flood wait clears every rest; the panel and the history say so.
    browser.find_element(By.CSS_SELECTOR, "#detail-actions button[data-action='clear']").click()
    wait(browser, lambda d: d.find_element(By.ID, "detail-no-rests").is_displayed(), "rests not cleared")
    assert rest_items(browser) == []
    wait(browser, lambda d: history_rows(d)[0].get_attribute("data-type") == "clear_flood_wait", "no clear event")
    assert history_rows(browser)[0].find_element(By.CSS_SELECTOR, "td.key").text.startswith("test-admin")
    wait(browser, lambda d: not row(d, "acc01").find_elements(By.CSS_SELECTOR, ".rest-note"), "note not gone")

    # Another session: an account-wide rest; Escape closes the panel.
    row(browser, "acc02").find_element(By.CSS_SELECTOR, "td.id").click()
    wait(browser, lambda d: text(d, "detail-title") == "acc02", "second session not shown")
    wait(browser, lambda d: [s for s, _ in rest_items(d)] == ["every method (account-wide)"], "account-wide rest")
    assert rest_items(browser)[0][1].startswith(("59m ", "1h 00m")), rest_items(browser)
    assert "selected" not in row(browser, "acc01").get_attribute("class")
    browser.find_element(By.TAG_NAME, "body").send_keys("\ue00c")  # Escape
    wait(browser, lambda d: not d.find_element(By.ID, "detail").is_displayed(), "Escape did not close the panel")
    row(browser, "acc03").send_keys("\ue007")  # Enter on a focused row opens it too
    wait(browser, lambda d: text(d, "detail-title") == "acc03", "Enter did not open the panel")
    wait(browser, lambda d: d.find_element(By.ID, "history-empty").is_displayed(), "empty history not said")
    browser.find_element(By.ID, "detail-close").click()
    wait(browser, lambda d: not d.find_element(By.ID, "detail").is_displayed(), "Close did not close the panel")


def test_names_that_break_the_name_rules_are_marked_with_the_reason(browser, live_server):
    """Names registered before the session-name rules: twins by case (one file on Windows and
    macOS) and a Windows device name are marked in the table, the reason in the cell's title."""
    server = live_server
    server.add_sessions("acc1", "CON", "fine")
    server.store.engine.write(lambda tx: tx.run(  # a twin as an older TeleGate let it in
        "INSERT INTO sessions (name, kind, meta, created_at) VALUES ('ACC1', 'unknown', '{}', 0)"))
    sign_in(browser, server, server.admin_key)
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sessions-body tr")) == 4, "table not shown")
    cells = {row.get_attribute("data-name"): row.find_elements(By.TAG_NAME, "td")[1]
             for row in browser.find_elements(By.CSS_SELECTOR, "#sessions-body tr")}
    for name in ("acc1", "ACC1"):
        assert "name-problem" in cells[name].get_attribute("class")
        assert "one file on Windows and macOS" in cells[name].get_attribute("title")
    assert "Windows device name" in cells["CON"].get_attribute("title")
    assert "name-problem" not in (cells["fine"].get_attribute("class") or "")
    assert cells["fine"].get_attribute("title") == ""
