// The Passthrough console (GET /console): reads the API with the key the user gives and draws what it answers.
// The key comes from the form or the URL fragment (#key=..., which browsers never send to the server) and is kept
// in this tab's sessionStorage only. Everything the API answers is written with textContent, never as HTML:
// identifiers come from events, which anyone holding a key may send.
"use strict";

(() => {
  const KEY_STORAGE = "passthrough-console-key";
  const CHANGES_SHOWN = 20;
  const WINDOWS = { "48h": { buckets: 48, bucket: "hour", seconds: 3600 },
                    "30d": { buckets: 30, bucket: "day", seconds: 86400 } };
  const AUDIENCES_QUERY = "query($after: String) { audiences(first: 1000, after: $after) { "
    + "edges { node { name size revision is_ready } } pageInfo { hasNextPage endCursor } } }";
  const HISTORY_QUERY = "query($audience: String!, $from: Float!, $to: Float!, $bucket: String) { "
    + "size_history(audience: $audience, from: $from, to: $to, bucket: $bucket) "
    + "{ start end size_at_start entered exited size_at_end } }";
  const TYPES_QUERY = "{ __type(name: \"Query\") { fields { name args { name } } } }";

  // axis steps for counts: whole numbers only
  const COUNT_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8].map((p) => m * p))
    .sort((a, b) => a - b);

  const $ = (id) => document.getElementById(id);
  const state = { key: null, audience: null, chart: null };

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  function takeKeyFromFragment() {
    const key = new URLSearchParams(window.location.hash.slice(1)).get("key");
    if (key) {
      window.sessionStorage.setItem(KEY_STORAGE, key);
      // out of the address bar and the history as well
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  function describe(response, body) {
    const message = (body && body.detail && body.detail.message)
      || (body && body.errors && body.errors[0] && body.errors[0].message) || response.statusText;
    return `${response.status}: ${message}`;
  }

  async function request(path, options) {
    const headers = Object.assign({ "x-api-key": state.key }, options && options.headers);
    const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(describe(response, body), response.status);
    return body;
  }

  async function graphql(query, variables) {
    const body = await request("/v3/graphql", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query, variables }),
    });
    if (body.errors && body.errors.length) throw new ApiError(body.errors[0].message, 200);
    return body.data;
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function number(n) { return Number(n).toLocaleString("en-US"); }

  function utc(seconds) {  // 2025-01-01 00:30:00
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.000Z$|Z$/, "");
  }

  function duration(seconds) {  // the largest unit that says it exactly
    if (seconds === null || seconds === undefined) return "none";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (seconds >= size && seconds % size === 0) return `${seconds / size} ${unit}`;
    }
    return `${seconds} s`;
  }

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  // ---------------------------------------------------------------- every audience

  async function loadAudiences() {
    const table = $("audiences");
    delete table.dataset.loaded;
    const audiences = [];
    let after = null;
    do {
      const page = (await graphql(AUDIENCES_QUERY, { after })).audiences;
      audiences.push(...page.edges.map((edge) => edge.node));
      after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
    } while (after);
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const audience of audiences) {
      const row = body.insertRow();
      row.dataset.audience = audience.name;
      const choose = document.createElement("button");
      choose.type = "button";
      choose.className = "link";
      choose.textContent = audience.name;
      choose.addEventListener("click", () => chooseAudience(audience.name));
      row.insertCell().append(choose);
      cell(row, number(audience.size), "number size");
      cell(row, String(audience.revision), "number revision");
      cell(row, audience.is_ready ? "yes" : "no", "ready");
      cell(row, "...", "ttl");
    }
    if (!audiences.length) cell(body.insertRow(), "No audience is defined yet.").colSpan = 5;
    await loadTtls(audiences.map((audience) => audience.name));
    table.dataset.loaded = "true";
    return audiences.length;
  }

  async function loadTtls(names) {
    // the ttl is in the segment's definition, which only a private key may read
    const queue = names.slice();
    let refused = null;
    const worker = async () => {
      while (queue.length && !refused) {
        const name = queue.shift();
        const ttlCell = $("audiences").querySelector(`tr[data-audience="${CSS.escape(name)}"] .ttl`);
        try {
          const segment = await request(`/v3/segments/${encodeURIComponent(name)}`);
          ttlCell.textContent = duration(segment.ttl_seconds);
          ttlCell.dataset.seconds = segment.ttl_seconds === null ? "" : String(segment.ttl_seconds);
        } catch (error) {
          if (error.status === 403) refused = error;
          ttlCell.textContent = error.status === 403 ? "needs a private key" : error.message;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    if (refused) {
      for (const ttlCell of $("audiences").querySelectorAll(".ttl")) {
        if (ttlCell.textContent === "...") ttlCell.textContent = "needs a private key";
      }
    }
  }

  // ---------------------------------------------------------------- one audience

  async function chooseAudience(name) {
    state.audience = name;
    $("audience").hidden = false;
    $("audience-name").textContent = name;
    for (const row of $("audiences").tBodies[0].rows) row.classList.toggle("chosen", row.dataset.audience === name);
    await Promise.all([
      loadHistory().catch((error) => showHistoryError(error)),
      loadChanges(),
    ]);
  }

  function windowBounds() {
    const choice = WINDOWS[$("window").value];
    const to = Math.floor(Date.now() / 1000);
    // size_history's buckets run from the one holding from to the one holding to
    return { from: to - (choice.buckets - 1) * choice.seconds, to, bucket: choice.bucket };
  }

  async function loadHistory() {
    const table = $("history");
    delete table.dataset.loaded;
    const bounds = windowBounds();
    table.dataset.from = String(bounds.from);
    table.dataset.to = String(bounds.to);
    table.dataset.bucket = bounds.bucket;
    const buckets = (await graphql(HISTORY_QUERY, Object.assign({ audience: state.audience }, bounds))).size_history;
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const b of buckets) {
      const row = body.insertRow();
      cell(row, utc(b.start));
      cell(row, utc(b.end));
      cell(row, number(b.size_at_start), "number size-at-start");
      cell(row, number(b.entered), "number entered");
      cell(row, number(b.exited), "number exited");
      cell(row, number(b.size_at_end), "number size-at-end");
    }
    const sum = (field) => buckets.reduce((total, b) => total + b[field], 0);
    $("history-size-start").textContent = number(buckets.length ? buckets[0].size_at_start : 0);
    $("history-size-end").textContent = number(buckets.length ? buckets[buckets.length - 1].size_at_end : 0);
    $("history-entered").textContent = number(sum("entered"));
    $("history-exited").textContent = number(sum("exited"));
    drawChart(buckets);
    table.dataset.loaded = "true";
  }

  function showHistoryError(error) {
    $("history-summary").hidden = true;
    $("chart").replaceChildren();
    const note = document.createElement("p");
    note.className = "error";
    note.textContent = `size over time: ${error.message}`;
    $("chart").append(note);
    $("history").dataset.loaded = "error";
  }

  function drawChart(buckets) {
    $("history-summary").hidden = false;
    if (state.chart) state.chart.destroy();
    state.chart = null;
    $("chart").replaceChildren();
    const bars = uPlot.paths.bars({ size: [0.6, 24], align: -1 });  // each bar ends at its bucket's end
    const data = [
      buckets.map((b) => b.end), buckets.map((b) => b.size_at_end),
      buckets.map((b) => b.entered), buckets.map((b) => b.exited),
    ];
    const options = {
      width: Math.max($("chart").clientWidth, 320),
      height: 280,
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      scales: { x: { time: true }, size: { range: (u, min, max) => [0, Math.max(1, max)] },
                moves: { range: (u, min, max) => [0, Math.max(1, max)] } },
      series: [
        { label: "time (UTC)" },
        { label: "size", scale: "size", stroke: "#2563eb", width: 2, fill: "rgba(37, 99, 235, 0.12)",
          paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } },
        { label: "entered", scale: "moves", stroke: "#15803d", fill: "rgba(21, 128, 61, 0.6)", paths: bars,
          points: { show: false } },
        { label: "exited", scale: "moves", stroke: "#b91c1c", fill: "rgba(185, 28, 28, 0.6)", paths: bars,
          points: { show: false } },
      ],
      axes: [
        {},
        { scale: "size", label: "members", incrs: COUNT_STEPS },
        { scale: "moves", side: 1, label: "entries, exits", grid: { show: false }, incrs: COUNT_STEPS },
      ],
    };
    state.chart = new uPlot(options, data, $("chart"));
  }

  async function loadChanges() {
    const table = $("changes");
    delete table.dataset.loaded;
    const body = table.tBodies[0];
    body.replaceChildren();
    $("changes-note").textContent = "";
    try {
      const path = `/v3/segments/${encodeURIComponent(state.audience)}/changes?limit=${CHANGES_SHOWN}`;
      const changes = (await request(path)).changes;
      for (const change of changes) {
        const row = body.insertRow();
        cell(row, utc(Date.parse(change.event_ts) / 1000));
        cell(row, change.change, `change ${change.change}`);
        cell(row, change.identifier_type);
        cell(row, change.identifier, "identifier");
        cell(row, change.source || "");
        cell(row, change.received_at ? utc(Date.parse(change.received_at) / 1000) : "");
      }
      $("changes-note").textContent = changes.length
        ? `The latest ${changes.length === CHANGES_SHOWN ? CHANGES_SHOWN : changes.length}, newest first.`
        : "No entry or exit yet.";
      table.dataset.loaded = "true";
    } catch (error) {
      $("changes-note").textContent = error.status === 403
        ? "The latest entries and exits need a private key." : error.message;
      $("changes-note").classList.add("error");
      table.dataset.loaded = "error";
    }
  }

  // ---------------------------------------------------------------- the lookup

  async function loadIdentifierTypes() {
    const fields = (await graphql(TYPES_QUERY)).__type.fields;
    const customer = fields.find((field) => field.name === "customer");
    const select = $("lookup-type");
    select.replaceChildren();
    for (const arg of customer ? customer.args : []) {
      const option = document.createElement("option");
      option.value = option.textContent = arg.name;
      select.append(option);
    }
    if ([...select.options].some((option) => option.value === "fs_user_id")) select.value = "fs_user_id";
  }

  function parseAt(text) {
    text = text.trim();
    if (!text || text === "now") return null;
    if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
    // a date and time without a zone is UTC here, as everywhere on this page
    const withZone = /(Z|[+-]\d\d:?\d\d)$/i.test(text) || !/\d:\d\d/.test(text) ? text : `${text}Z`;
    const ms = Date.parse(withZone);
    if (Number.isNaN(ms)) throw new ApiError(`at: not a time: ${text} (write 2025-01-01T00:30:00Z, or seconds)`);
    return ms / 1000;
  }

  async function lookup(event) {
    event.preventDefault();
    const list = $("lookup-audiences");
    delete list.dataset.loaded;
    list.replaceChildren();
    const type = $("lookup-type").value;
    const identifier = $("lookup-id").value;
    try {
      const at = parseAt($("lookup-at").value);
      // the argument's name is the identifier type, one of those the schema itself listed
      const query = `query($id: String, $at: Float) { customer(${type}: $id) { audiences(at: $at) { `
        + "edges { node { name state } } } } }";
      const edges = (await graphql(query, { id: identifier, at })).customer.audiences.edges;
      const when = at === null ? "now" : `at ${utc(at)} UTC`;
      $("lookup-result").textContent = edges.length
        ? `${type} ${identifier} is in ${edges.length} audience${edges.length === 1 ? "" : "s"} ${when}:`
        : `${type} ${identifier} is in no audience ${when}.`;
      for (const edge of edges) {
        const item = document.createElement("li");
        item.textContent = edge.node.name;
        list.append(item);
      }
      $("lookup-result").classList.remove("error");
      list.dataset.loaded = "true";
    } catch (error) {
      $("lookup-result").textContent = error.message;
      $("lookup-result").classList.add("error");
      list.dataset.loaded = "error";
    }
  }

  // ---------------------------------------------------------------- the key

  async function start() {
    state.key = window.sessionStorage.getItem(KEY_STORAGE);
    if (!state.key) {
      setStatus("Type an API key: a public key shows sizes and lookups, a private key also TTLs and changes.");
      return;
    }
    setStatus("Loading...");
    try {
      const [count] = await Promise.all([loadAudiences(), loadIdentifierTypes()]);
      setStatus(`${count} audience${count === 1 ? "" : "s"}. The key is kept in this tab only.`);
      if (state.audience) await chooseAudience(state.audience);
    } catch (error) {
      setStatus(error.message, true);
      clearShown();  // nothing read with another key stays on show
    }
  }

  function clearShown() {
    if (state.chart) state.chart.destroy();
    state.chart = null;
    $("audience").hidden = true;
    $("audiences").tBodies[0].replaceChildren();
    $("lookup-audiences").replaceChildren();
    $("lookup-result").textContent = "";
  }

  function forget() {
    window.sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    state.audience = null;
    clearShown();
    setStatus("The key is forgotten.");
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeKeyFromFragment();
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      $("key").value = "";
      if (!key) return;
      window.sessionStorage.setItem(KEY_STORAGE, key);
      start();
    });
    $("forget").addEventListener("click", forget);
    $("window").addEventListener("change", () => {
      if (state.audience) loadHistory().catch((error) => showHistoryError(error));
    });
    $("lookup-form").addEventListener("submit", lookup);
    window.addEventListener("hashchange", () => {  // a #key=... pasted into the address bar of an open console
      if (new URLSearchParams(window.location.hash.slice(1)).has("key")) {
        takeKeyFromFragment();
        start();
      }
    });
    window.addEventListener("resize", () => {
      if (state.chart) state.chart.setSize({ width: Math.max($("chart").clientWidth, 320), height: 280 });
    });
    start();
  });
})();
