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
  };

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
    setText(cell(row, "name"), s.name);
    const stateCell = cell(row, "state");
    let badge = stateCell.firstChild;
    if (!badge) {
      badge = document.createElement("span");
      stateCell.appendChild(badge);
    }
    badge.className = "badge state-" + s.state;
    setText(badge, STATE_LABELS[s.state] || s.state);
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
    if (s.flood_wait_until) actions.push(["clear", "Clear flood wait", "secondary"]);
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
    let due = false;
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
    if (!button) return;
    const row = button.closest("tr");
    const id = row.dataset.id;
    const name = row.dataset.name;
    const action = button.dataset.action;
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

  function init() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("sessions-body").addEventListener("click", onTableClick);
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
