// TeleGate dashboard: plain ES2017, no build step, no outside requests.
//
// The admin key lives in sessionStorage (this tab only) and travels in the X-API-Key
// header, never in a URL. Every value from the server goes into the page through
// textContent, so a hostile session name is shown as text, never run.
"use strict";

(function () {
  const KEY_STORAGE = "telegate.apiKey";
  const REFRESH_MS = 2000;
  const STATES = ["free", "in_use", "in_floodwait", "disabled"];
  const STATE_LABELS = { free: "free", in_use: "in use", in_floodwait: "flood wait", disabled: "disabled" };

  const view = {
    offset: 0,
    limit: 50,
    filter: "",
    total: 0,
    skewMs: 0,          // server clock minus this browser's clock
    refreshTimer: null,
    tickTimer: null,
    inFlight: null,
    rows: new Map(),    // session id -> <tr>
    pendingDisable: null,
    detail: null,       // the session shown in the side panel: see openDetail
  };
  const HISTORY_PAGE = 25;

  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, body) {
      const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
      super(detail);
      this.status = status;
      this.code = body && body.error;
    }
  }

  function storedKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE);
    } catch (e) {
      return null;
    }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json", "X-API-Key": storedKey() || "" };
    const init = { method: method, headers: headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { detail: "cannot reach the TeleGate server; is it running?" });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, data);
    }
    return data;
  }

  // -- formatting ---------------------------------------------------------------------

  function duration(seconds) {
    if (seconds <= 0) return "now";
    const s = Math.ceil(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${pad(m)}m`;
    if (m) return `${m}m ${pad(sec)}s`;
    return `${sec}s`;
  }

  function serverNow() {
    return Date.now() + view.skewMs;
  }

  function secondsUntil(iso) {
    if (!iso) return null;
    const at = Date.parse(iso);
    return Number.isNaN(at) ? null : (at - serverNow()) / 1000;
  }

  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  // -- notices ------------------------------------------------------------------------

  let toastTimer = null;

  function toast(message) {
    const node = $("toast");
    setText(node, message);
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { node.hidden = true; }, 4000);
  }

  function banner(message) {
    const node = $("banner");
    setText(node, message || "");
    node.hidden = !message;
  }

  // -- sign in and out ----------------------------------------------------------------

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("pool").hidden = !signedIn;
    $("sign-out").hidden = !signedIn;
    $("refresh-state").hidden = !signedIn;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    const error = $("sign-in-error");
    error.hidden = true;
    if (!key) return;
    window.sessionStorage.setItem(KEY_STORAGE, key);
    $("sign-in-button").disabled = true;
    try {
      await api("GET", "/sessions?limit=1");
      input.value = "";
      start();
    } catch (e) {
      window.sessionStorage.removeItem(KEY_STORAGE);
      let message = e.message;
      if (e.status === 401) message = "This key is unknown or revoked.";
      if (e.status === 403) message = "This is a client key; the dashboard needs an admin key (telegate keys create NAME --admin).";
      setText(error, message);
      error.hidden = false;
    } finally {
      $("sign-in-button").disabled = false;
    }
  }

  function signOut(message) {
    window.sessionStorage.removeItem(KEY_STORAGE);
    clearInterval(view.refreshTimer);
    clearInterval(view.tickTimer);
    view.refreshTimer = view.tickTimer = null;
    view.rows.forEach((row) => row.remove());
    view.rows.clear();
    closeDetail();
    showSignedIn(false);
    const error = $("sign-in-error");
    setText(error, message || "");
    error.hidden = !message;
    $("api-key").focus();
  }

  function start() {
    showSignedIn(true);
    banner("");
    refresh();
    clearInterval(view.refreshTimer);
    clearInterval(view.tickTimer);
    view.refreshTimer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    view.tickTimer = setInterval(tick, 1000);
  }

  // -- data ---------------------------------------------------------------------------

  function refresh() {
    if (view.inFlight) return view.inFlight;
    const query = new URLSearchParams({ limit: String(view.limit), offset: String(view.offset) });
    if (view.filter) query.set("state", view.filter);
    const sentAt = Date.now();
    view.inFlight = Promise.all([api("GET", "/status"), api("GET", "/sessions?" + query.toString())])
      .then(([status, page]) => {
        const receivedAt = Date.now();
        view.skewMs = Date.parse(status.server_time) - (sentAt + receivedAt) / 2;
        if (page.total > 0 && view.offset >= page.total) {
          view.offset = Math.max(0, Math.floor((page.total - 1) / view.limit) * view.limit);
          view.inFlight = null;
          return refresh();
        }
        view.inFlight = null;
        renderStatus(status);
        renderPage(page);
        if (view.detail) refreshDetail();
        banner("");
        setText($("refresh-state"), "updated " + new Date(receivedAt).toLocaleTimeString());
        return null;
      })
      .catch((e) => {
        view.inFlight = null;
        if (e.status === 401 || e.status === 403) {
          signOut(e.status === 401 ? "Your key is no longer valid; sign in again." : e.message);
        } else {
          banner(e.message + " (retrying)");
          setText($("refresh-state"), "refresh failed");
        }
      });
    return view.inFlight;
  }

  // After a change: a refresh already under way may have read the pool before it; start another.
  function refreshNow() {
    return (view.inFlight || Promise.resolve()).then(() => refresh());
  }

  function renderStatus(status) {
    setText($("count-total"), status.total);
    STATES.forEach((state) => {
      setText($("count-" + state), status[state]);
      const share = status.total ? (100 * status[state]) / status.total : 0;
      $("bar-" + state).style.width = share + "%";
      $("bar-" + state).title = `${STATE_LABELS[state]}: ${status[state]}`;
    });
    $("pool-bar").setAttribute("aria-label",
      STATES.map((s) => `${STATE_LABELS[s]} ${status[s]}`).join(", "));
    const next = $("next-available");
    next.dataset.until = status.next_available || "";
    updateNextAvailable();
    // Workers long-polling for a session (POST /session with "wait"), served in arrival order.
    const waiting = status.waiting_workers || 0;
    setText($("waiting"), waiting === 0 ? "No worker is waiting for a session."
      : `${waiting} worker${waiting === 1 ? " is" : "s are"} waiting for a session;`
        + ` the longest for ${duration(status.oldest_wait || 0)}.`);
  }

  function updateNextAvailable() {
    const next = $("next-available");
    const left = secondsUntil(next.dataset.until);
    setText(next, left === null ? "No session is in flood wait." : `Next flood wait ends in ${duration(left)}.`);
  }

  function renderPage(page) {
    view.total = page.total;
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.sessions.length;
    setText($("page-info"), `${first}\u2013${last} of ${page.total}`);
    $("prev-page").disabled = page.offset === 0;
    $("next-page").disabled = last >= page.total;
    $("empty").hidden = page.total !== 0;

    const body = $("sessions-body");
    const seen = new Set();
    let previous = null;
    page.sessions.forEach((session) => {
      seen.add(session.id);
      let row = view.rows.get(session.id);
      if (!row) {
        row = makeRow();
        view.rows.set(session.id, row);
      }
      fillRow(row, session);
      const wanted = previous ? previous.nextSibling : body.firstChild;
      if (wanted !== row) body.insertBefore(row, wanted);
      previous = row;
    });
    view.rows.forEach((row, id) => {
      if (!seen.has(id)) {
        row.remove();
        view.rows.delete(id);
      }
    });
  }

  const COLUMNS = ["id", "name", "state", "holder", "lease", "flood", "reason", "uses", "floods", "expired", "actions"];

  function makeRow() {
    const row = document.createElement("tr");
    row.tabIndex = 0;  // Enter opens the session's panel, as a click does
    COLUMNS.forEach((column) => {
      const cell = document.createElement("td");
      cell.className = column;
      if (["id", "uses", "floods", "expired"].includes(column)) cell.classList.add("num");
      if (column === "lease" || column === "flood") cell.classList.add("countdown");
      row.appendChild(cell);
    });
    return row;
  }

  function cell(row, column) {
    return row.children[COLUMNS.indexOf(column)];
  }

  function fillRow(row, s) {
    row.dataset.id = String(s.id);
    row.dataset.name = s.name;
    row.dataset.state = s.state;
    setText(cell(row, "id"), s.id);
    const nameCell = cell(row, "name");
    setText(nameCell, s.name);
    // A name registered before the name rules (one file with another on Windows, or no file there).
    nameCell.classList.toggle("name-problem", Boolean(s.name_problem));
    nameCell.title = s.name_problem || "";
    const stateCell = cell(row, "state");
    let badge = stateCell.firstChild;
    if (!badge) {
      badge = document.createElement("span");
      stateCell.appendChild(badge);
    }
    badge.className = "badge state-" + s.state;
    setText(badge, STATE_LABELS[s.state] || s.state);
    fillRestNote(stateCell, s);
    row.classList.toggle("selected", Boolean(view.detail && view.detail.id === String(s.id)));
    setText(cell(row, "holder"), s.holder || "");
    cell(row, "lease").dataset.until = s.lease_expires_at || "";
    cell(row, "lease").title = s.lease_expires_at || "";
    cell(row, "flood").dataset.until = s.flood_wait_until || "";
    cell(row, "flood").title = s.flood_wait_until || "";
    setText(cell(row, "reason"), s.disabled_reason || "");
    setText(cell(row, "uses"), s.use_count);
    setText(cell(row, "floods"), s.flood_count);
    setText(cell(row, "expired"), s.expired_count);
    fillCountdowns(row);
    fillActions(cell(row, "actions"), s);
  }

  // A session free for most methods but resting for some (scoped flood waits).
  function fillRestNote(stateCell, s) {
    const rests = s.rests || [];
    let note = stateCell.querySelector(".rest-note");
    if (!rests.length || s.disabled) {
      if (note) note.remove();
      return;
    }
    if (!note) {
      note = document.createElement("span");
      note.className = "rest-note";
      stateCell.appendChild(note);
    }
    setText(note, rests.length === 1 ? "1 method resting" : `${rests.length} methods resting`);
    note.title = "Resting for " + rests.map((r) => r.scope).join(", ");
  }

  function fillCountdowns(row) {
    ["lease", "flood"].forEach((column) => {
      const node = cell(row, column);
      const left = secondsUntil(node.dataset.until);
      setText(node, left === null ? "" : duration(left));
    });
  }

  function actionsFor(s) {
    if (s.disabled) return [["enable", "Enable", "secondary"]];
    const actions = [];
    if (s.flood_wait_until || (s.rests && s.rests.length)) actions.push(["clear", "Clear flood wait", "secondary"]);
    actions.push(["disable", "Disable", "danger"]);
    return actions;
  }

  function fillActions(node, s) {
    const actions = actionsFor(s);
    const signature = actions.map((a) => a[0]).join(",");
    if (node.dataset.signature === signature) return;
    node.dataset.signature = signature;
    node.textContent = "";
    actions.forEach(([action, label, style]) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small " + style;
      button.dataset.action = action;
      setText(button, label);
      node.appendChild(button);
    });
  }

  function tick() {
    view.rows.forEach((row) => fillCountdowns(row));
    updateNextAvailable();
    // A countdown that just ran out means a state changed: fetch it now.
    let due = tickDetail();
    view.rows.forEach((row) => {
      ["lease", "flood"].forEach((column) => {
        const left = secondsUntil(cell(row, column).dataset.until);
        if (left !== null && left <= 0 && left > -1.5) due = true;
      });
    });
    if (due) refresh();
  }

  // -- actions ------------------------------------------------------------------------

  async function patch(id, name, body, done) {
    try {
      await api("PATCH", "/sessions/" + encodeURIComponent(id), body);
      toast(`${done}: ${name}`);
    } catch (e) {
      if (e.status === 401) return signOut("Your key is no longer valid; sign in again.");
      toast(`Could not change ${name}: ${e.message}`);  // a toast: the refresh below clears the banner
    }
    await refreshNow();
  }

  function onTableClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) {
      const clicked = event.target.closest("tr");
      if (clicked && clicked.dataset.id) openDetail(clicked.dataset.id, clicked.dataset.name);
      return;
    }
    const row = button.closest("tr");
    act(button.dataset.action, row.dataset.id, row.dataset.name);
  }

  function onDetailAction(event) {
    const button = event.target.closest("button[data-action]");
    if (button && view.detail) act(button.dataset.action, view.detail.id, view.detail.name);
  }

  function act(action, id, name) {
    if (action === "enable") {
      patch(id, name, { disabled: false }, "Enabled");
    } else if (action === "clear") {
      patch(id, name, { clear_flood_wait: true }, "Flood wait cleared");
    } else if (action === "disable") {
      view.pendingDisable = { id: id, name: name };
      setText($("disable-name"), name);
      $("disable-reason").value = "disabled by admin";
      $("disable-dialog").showModal();
      $("disable-reason").select();
    }
  }

  function onDisableSubmit(event) {
    event.preventDefault();
    const pending = view.pendingDisable;
    $("disable-dialog").close();
    view.pendingDisable = null;
    if (!pending) return;
    const reason = $("disable-reason").value.trim();
    const body = reason ? { disabled: true, reason: reason } : { disabled: true };
    patch(pending.id, pending.name, body, "Disabled");
  }

  async function onAddSubmit(event) {
    event.preventDefault();
    const names = $("add-names").value.split(/\r?\n/).map((n) => n.trim()).filter((n) => n && !n.startsWith("#"));
    const error = $("add-error");
    error.hidden = true;
    if (!names.length) {
      setText(error, "Write at least one name.");
      error.hidden = false;
      return;
    }
    $("add-confirm").disabled = true;
    try {
      const result = await api("POST", "/sessions", { names: names, kind: $("add-kind").value });
      $("add-dialog").close();
      $("add-names").value = "";
      const existing = result.existing.length ? `, ${result.existing.length} already registered` : "";
      toast(`Added ${result.added.length} session(s)${existing}`);
      await refreshNow();
    } catch (e) {
      if (e.status === 401) {
        $("add-dialog").close();
        return signOut("Your key is no longer valid; sign in again.");
      }
      setText(error, e.message);
      error.hidden = false;
    } finally {
      $("add-confirm").disabled = false;
    }
  }

  // -- one session: what it rests for, and its history ----------------------------------

  const EVENT_LABELS = {
    lease: "leased", release: "released", renew: "renewed", expired: "lease expired",
    flood_wait: "flood wait", disable: "disabled", enable: "enabled", clear_flood_wait: "rests cleared",
  };

  function openDetail(id, name) {
    if (view.detail && view.detail.id === id) return;
    closeDetail();
    view.detail = { id: id, name: name, rows: new Map(), nextBefore: null, loaded: false, inFlight: null, more: null };
    setText($("detail-title"), name);
    setText($("detail-summary"), "");
    $("detail-error").hidden = true;
    $("detail-rests").textContent = "";
    $("detail-actions").textContent = "";
    $("detail-actions").dataset.signature = "";
    $("detail-no-rests").hidden = true;
    $("history-empty").hidden = true;
    $("history-more").hidden = true;
    $("detail").hidden = false;
    view.rows.forEach((row, rowId) => row.classList.toggle("selected", String(rowId) === id));
    refreshDetail();
  }

  function closeDetail() {
    view.detail = null;
    $("detail").hidden = true;
    $("history-body").textContent = "";
    view.rows.forEach((row) => row.classList.remove("selected"));
  }

  // The session and the newest page of its history; newer events go on top, changed ones
  // (renewals in a row share one event) are redrawn, older pages already shown stay.
  function refreshDetail() {
    const detail = view.detail;
    if (!detail || detail.inFlight) return detail && detail.inFlight;
    const path = "/sessions/" + encodeURIComponent(detail.id);
    detail.inFlight = Promise.all([api("GET", path), api("GET", `${path}/events?limit=${HISTORY_PAGE}`)])
      .then(([session, page]) => {
        detail.inFlight = null;
        if (view.detail !== detail) return;
        $("detail-error").hidden = true;
        renderDetailSession(session);
        const newest = detail.rows.size ? Math.max.apply(null, Array.from(detail.rows.keys())) : 0;
        const oldestFetched = page.events.length ? page.events[page.events.length - 1].id : 0;
        if (!detail.loaded || (page.next_before !== null && oldestFetched > newest)) {
          // First look, or more happened since the last one than a page holds: start over.
          $("history-body").textContent = "";
          detail.rows.clear();
          detail.nextBefore = page.next_before;
          detail.loaded = true;
        }
        addEvents(page.events);
        showHistoryFooter();
      })
      .catch((e) => {
        detail.inFlight = null;
        if (view.detail !== detail) return;
        if (e.status === 401) return signOut("Your key is no longer valid; sign in again.");
        const error = $("detail-error");
        setText(error, e.status === 404 ? "This session was removed." : e.message);
        error.hidden = false;
      });
    return detail.inFlight;
  }

  function loadMoreHistory() {
    const detail = view.detail;
    if (!detail || detail.more || detail.nextBefore === null) return;
    const path = `/sessions/${encodeURIComponent(detail.id)}/events?limit=${HISTORY_PAGE}&before=${detail.nextBefore}`;
    $("history-more").disabled = true;
    detail.more = api("GET", path)
      .then((page) => {
        if (view.detail !== detail) return;
        addEvents(page.events);
        detail.nextBefore = page.next_before;
      })
      .catch((e) => {
        if (view.detail === detail) toast(`Could not load more history: ${e.message}`);
      })
      .then(() => {
        detail.more = null;
        $("history-more").disabled = false;
        if (view.detail === detail) showHistoryFooter();
      });
  }

  function showHistoryFooter() {
    const detail = view.detail;
    $("history-empty").hidden = detail.rows.size !== 0;
    $("history-more").hidden = detail.nextBefore === null;
  }

  function renderDetailSession(s) {
    const detail = view.detail;
    detail.name = s.name;
    setText($("detail-title"), s.name);
    let summary = `#${s.id} \u00b7 ${STATE_LABELS[s.state] || s.state}`;
    if (s.state === "in_use" && s.holder) summary += ` by ${s.holder}`;
    if (s.disabled_reason) summary += `: ${s.disabled_reason}`;
    summary += ` \u00b7 ${s.use_count} lease(s), ${s.flood_count} flood wait(s)`;
    setText($("detail-summary"), summary);
    fillActions($("detail-actions"), s);

    const rests = [];
    if (s.flood_wait_until) rests.push({ scope: null, until: s.flood_wait_until });
    (s.rests || []).forEach((r) => rests.push(r));
    const list = $("detail-rests");
    const items = list.children;
    rests.forEach((r, index) => {
      let item = items[index];
      if (!item) {
        item = document.createElement("li");
        const what = document.createElement("span");
        what.className = "rest-scope";
        const left = document.createElement("span");
        left.className = "countdown";
        item.appendChild(what);
        item.appendChild(left);
        list.appendChild(item);
      }
      item.dataset.scope = r.scope || "";
      setText(item.children[0], r.scope || "every method (account-wide)");
      item.classList.toggle("account-wide", !r.scope);
      item.children[1].dataset.until = r.until;
      item.children[1].title = r.until;
    });
    while (items.length > rests.length) list.removeChild(list.lastChild);
    $("detail-no-rests").hidden = rests.length !== 0;
    tickDetail();
  }

  function addEvents(events) {
    const detail = view.detail;
    const body = $("history-body");
    events.forEach((e) => {
      let row = detail.rows.get(e.id);
      if (!row) {
        row = document.createElement("tr");
        ["at", "what", "key", "holder"].forEach((column) => {
          const td = document.createElement("td");
          td.className = column;
          row.appendChild(td);
        });
        // Keep newest first: before the first row with a smaller id.
        let before = null;
        for (const other of body.children) {
          if (Number(other.dataset.id) < e.id) {
            before = other;
            break;
          }
        }
        body.insertBefore(row, before);
        detail.rows.set(e.id, row);
      }
      fillEvent(row, e);
    });
  }

  function fillEvent(row, e) {
    row.dataset.id = String(e.id);
    row.dataset.type = e.type;
    setText(row.children[0], when(e.at));
    row.children[0].title = e.at;
    const what = row.children[1];
    let badge = what.firstChild;
    if (!badge) {
      badge = document.createElement("span");
      what.appendChild(badge);
      what.appendChild(document.createElement("span"));
    }
    badge.className = "event event-" + e.type;
    setText(badge, EVENT_LABELS[e.type] || e.type);
    setText(what.children[1], describeEvent(e));
    setText(row.children[2], e.key || "");
    setText(row.children[3], e.holder || "");
    row.children[3].title = e.holder || "";  // cut short when long: the whole text on hover
  }

  // Today's events by time of day, older ones with their date (the ISO time is the cell's title).
  function when(iso) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return iso;
    const sameDay = at.toDateString() === new Date(serverNow()).toDateString();
    return sameDay ? at.toLocaleTimeString() : at.toLocaleString([], {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function describeEvent(e) {
    const parts = [];
    if (e.type === "flood_wait") {
      parts.push(`${duration(e.seconds)} ${e.scope ? "for " + e.scope : "account-wide"}`);
      if (e.peer_flood) parts.push("PEER_FLOOD");
    } else if (e.type === "lease") {
      if (e.purpose) parts.push(`for ${e.purpose}`);
      if (e.ttl) parts.push(`ttl ${duration(e.ttl)}`);
    } else if (e.type === "renew") {
      if (e.count > 1) parts.push(`\u00d7${e.count}`);
      if (e.ttl) parts.push(`ttl ${duration(e.ttl)}`);
    } else if (e.type === "expired") {
      parts.push("not renewed; taken over");
    } else if (e.reason) {
      parts.push(e.reason);
    }
    return parts.length ? " " + parts.join(" \u00b7 ") : "";
  }

  // Live countdowns of the panel's rests; true when one just ran out (time to refresh).
  function tickDetail() {
    if (!view.detail) return false;
    let due = false;
    Array.from($("detail-rests").children).forEach((item) => {
      const node = item.children[1];
      const left = secondsUntil(node.dataset.until);
      setText(node, left === null ? "" : duration(left));
      if (left !== null && left <= 0 && left > -1.5) due = true;
    });
    return due;
  }

  function init() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("sessions-body").addEventListener("click", onTableClick);
    $("sessions-body").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target.matches("tr[data-id]")) openDetail(e.target.dataset.id, e.target.dataset.name);
    });
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-actions").addEventListener("click", onDetailAction);
    $("history-more").addEventListener("click", loadMoreHistory);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && view.detail && !document.querySelector("dialog[open]")) closeDetail();
    });
    $("disable-form").addEventListener("submit", onDisableSubmit);
    $("disable-cancel").addEventListener("click", () => { view.pendingDisable = null; $("disable-dialog").close(); });
    $("add-sessions").addEventListener("click", () => {
      $("add-error").hidden = true;
      $("add-dialog").showModal();
      $("add-names").focus();
    });
    $("add-form").addEventListener("submit", onAddSubmit);
    $("add-cancel").addEventListener("click", () => $("add-dialog").close());
    $("state-filter").addEventListener("change", (e) => { view.filter = e.target.value; view.offset = 0; refresh(); });
    $("page-size").addEventListener("change", (e) => { view.limit = Number(e.target.value); view.offset = 0; refresh(); });
    $("prev-page").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); refresh(); });
    $("next-page").addEventListener("click", () => {
      if (view.offset + view.limit < view.total) { view.offset += view.limit; refresh(); }
    });
    if (storedKey()) start();
    else showSignedIn(false);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
