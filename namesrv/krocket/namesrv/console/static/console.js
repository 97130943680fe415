// krocket console: a hash-routed page over the name server's /console/api. Everything shown is put in the
// page with textContent or attributes (never innerHTML): message bodies and properties are whoever sent them.
"use strict";

const REFRESH_MS = 2000;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "onclick" || name === "onsubmit") node[name] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(id, headers, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) =>
      typeof c === "number" ? el("td", { class: "num" }, c) : el("td", {}, c))))));
}

function credentials() {
  return sessionStorage.getItem("krocket.authorization");
}

function notice(text, kind) {
  const box = document.getElementById("notice");
  box.className = kind || "";
  box.textContent = text || "";
}

async function api(path, options) {
  const headers = { "Accept": "application/json" };
  const auth = credentials();
  if (auth) headers["Authorization"] = auth;
  const init = Object.assign({ headers }, options || {});
  if (init.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) {
    document.getElementById("login").hidden = false;
    document.getElementById("page").replaceChildren();
    throw new Error((body && body.error) || "credentials required");
  }
  if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
  return body;
}

function rate(value) { return (value || 0).toFixed(1); }

// -- pages ----------------------------------------------------------------------------------------------

async function clusterPage(page) {
  const data = await api("/console/api/cluster");
  page.replaceChildren(
    el("h2", {}, "Cluster"),
    table("brokers", ["cluster", "broker", "id", "role", "address", "HTTP", "gRPC", "health", "last heartbeat (s)",
      "commit log end", "replication lag (bytes behind)"],
    data.brokers.map((b) => [b.cluster, b.brokerName, b.brokerId, b.role, b.addr, b.httpUrl || "-",
      b.grpcAddr || "-",
      el("span", { class: b.health === "ok" ? "ok" : "bad" }, b.health), b.lastUpdateAgeSeconds,
      b.maxPhyOffset === null ? "-" : b.maxPhyOffset, b.bytesBehind === null ? "-" : b.bytesBehind])));
}

function topicCreateForm() {
  const form = el("form", { id: "topic-create" },
    el("strong", {}, "Create a topic "),
    el("label", {}, "name ", el("input", { id: "create-topic", required: "" })),
    el("label", {}, "read queues ", el("input", { id: "create-read", type: "number", value: "8" })),
    el("label", {}, "write queues ", el("input", { id: "create-write", type: "number", value: "8" })),
    el("button", { type: "submit", id: "create-submit" }, "Create"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      const made = await api("/console/api/topics", { method: "POST", body: {
        topic: document.getElementById("create-topic").value,
        readQueueNums: document.getElementById("create-read").value,
        writeQueueNums: document.getElementById("create-write").value } });
      notice("created topic " + made.topic + " on " + made.brokers.join(", "), "info");
    } catch (e) { notice(e.message); }
  };
  return form;
}

async function topicsPage(page, first) {
  if (first) page.replaceChildren(el("h2", {}, "Topics"), topicCreateForm(), el("div", { id: "topics-data" }));
  const data = await api("/console/api/topics");
  const rows = [];
  for (const t of data.topics) {
    for (const b of t.brokers) {
      rows.push([t.topic, b.brokerName, b.readQueueNums + "/" + b.writeQueueNums, b.messages,
        b.queues.map((q) => q.queueId + ":" + q.minOffset + "-" + q.maxOffset).join(" "),
        rate(b.inTps), rate(b.outTps)]);
    }
  }
  document.getElementById("topics-data").replaceChildren(
    table("topics-table", ["topic", "broker", "queues (r/w)", "messages", "queue offsets (min-max)",
      "in msg/s", "out msg/s"], rows));
}

async function groupsPage(page) {
  const data = await api("/console/api/groups");
  page.replaceChildren(el("h2", {}, "Consumer groups"),
    table("groups-table", ["group", "members"], data.groups.map((g) =>
      [el("a", { href: "#group/" + encodeURIComponent(g.group) }, g.group), g.members.length])));
}

function lagChart(history) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 600, height = 160, pad = 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", "lag-chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  if (history.length === 0) return svg;
  const t0 = history[0][0], t1 = Math.max(history[history.length - 1][0], t0 + 1);
  const top = Math.max(1, ...history.map((p) => p[1]));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", history.map(([t, lag]) =>
    (pad + (t - t0) / (t1 - t0) * (width - 2 * pad)).toFixed(1) + "," +
    (height - pad - lag / top * (height - 2 * pad)).toFixed(1)).join(" "));
  svg.append(line);
  const label = (x, y, text) => {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", x);
    node.setAttribute("y", y);
    node.textContent = text;
    svg.append(node);
  };
  label(2, pad - 8, "lag " + top);
  label(2, height - pad + 14, "0");
  label(width - 120, height - 6, Math.round(t1 - t0) + " s shown");
  return svg;
}

async function groupPage(page, first, name) {
  const data = await api("/console/api/groups/" + encodeURIComponent(name));
  page.replaceChildren(
    el("h2", {}, "Consumer group ", name),
    el("p", {}, "total lag: ", el("strong", { id: "total-lag" }, data.totalLag),
      " messages; pulling ", rate(data.outTps), " msg/s"),
    lagChart(data.history),
    el("h2", {}, "Members"),
    table("members-table", ["client id"], data.members.map((m) => [m])),
    el("h2", {}, "Lag per queue"),
    table("lag-table", ["topic", "broker", "queue", "broker offset", "consumer offset", "lag"],
      data.queues.map((q) => [q.topic, q.brokerName, q.queueId, q.brokerOffset, q.consumerOffset, q.lag])));
}

function messageView(m) {
  return el("div", { class: "message" },
    el("p", {}, el("strong", {}, "message " + m.msgId), " on " + m.brokerName + ", topic " + m.topic +
      " queue " + m.queueId + " offset " + m.queueOffset + ", stored " + new Date(m.storeTimestamp).toISOString()),
    table(null, ["property", "value"], Object.entries(m.properties).map(([k, v]) => [k, v])),
    el("p", {}, "body (" + m.bodyBytes + " bytes):"),
    el("pre", { class: "body" }, m.body));
}

async function messagesPage(page, first) {
  if (!first) return;
  const results = el("div", { id: "results" });
  const form = el("form", { id: "lookup" },
    el("label", {}, "topic ", el("input", { id: "lookup-topic" })),
    el("label", {}, "key ", el("input", { id: "lookup-key" })),
    el("label", {}, "or message id ", el("input", { id: "lookup-id", size: "34" })),
    el("button", { type: "submit", id: "lookup-submit" }, "Find"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const field of ["topic", "key", "id"]) {
      const value = document.getElementById("lookup-" + field).value.trim();
      if (value) params.set(field, value);
    }
    try {
      const data = await api("/console/api/messages?" + params.toString());
      results.replaceChildren(data.messages.length ? el("p", { id: "found" }, data.messages.length + " found")
        : el("p", { id: "found" }, "no message found"), ...data.messages.map(messageView));
      notice("");
    } catch (e) { notice(e.message); }
  };
  page.replaceChildren(el("h2", {}, "Message lookup"), form, results);
}

async function dlqPage(page, first) {
  if (!first) return;
  const results = el("div", { id: "dlq-results" });
  const load = async () => {
    const group = document.getElementById("dlq-group").value.trim();
    try {
      const data = await api("/console/api/dlq/" + encodeURIComponent(group));
      results.replaceChildren(
        el("p", { id: "dlq-count" }, data.messages.length + " dead letter(s) in %DLQ%" + group),
        table("dlq-table", ["message id", "broker", "original topic", "reconsumed", "body", ""],
          data.messages.map((m) => [m.msgId, m.brokerName, m.originalTopic, m.reconsumeTimes, m.body,
            el("button", { class: "resend", onclick: async () => {
              try {
                const sent = await api("/console/api/dlq/" + encodeURIComponent(group) + "/resend",
                  { method: "POST", body: { msgId: m.msgId, brokerName: m.brokerName } });
                notice("resent " + sent.msgId + " to " + sent.topic + " as " + sent.newMsgId, "info");
              } catch (e) { notice(e.message); }
            } }, "resend")])));
    } catch (e) { notice(e.message); }
  };
  const form = el("form", { id: "dlq-form" },
    el("label", {}, "consumer group ", el("input", { id: "dlq-group" })),
    el("button", { type: "submit", id: "dlq-load" }, "Show dead letters"));
  form.onsubmit = (event) => { event.preventDefault(); load(); };
  page.replaceChildren(el("h2", {}, "Dead letters"), form, results);
}

const PAGES = { cluster: clusterPage, topics: topicsPage, groups: groupsPage, group: groupPage,
  messages: messagesPage, dlq: dlqPage };
const LIVE = new Set(["cluster", "topics", "groups", "group"]);

function route() {
  if (timer) clearTimeout(timer);
  const [name, arg] = (location.hash.slice(1) || "cluster").split("/");
  const render = PAGES[name] || clusterPage;
  const page = document.getElementById("page");
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.id === "nav-" + (name === "group" ? "groups" : name));
  }
  notice("");
  const current = location.hash;
  let first = true;
  const tick = async () => {
    try {
      await render(page, first, arg === undefined ? undefined : decodeURIComponent(arg));
      first = false;
    } catch (e) {
      notice(e.message);
    }
    if (LIVE.has(name) && location.hash === current && document.getElementById("login").hidden) {
      timer = setTimeout(tick, REFRESH_MS);
    }
  };
  tick();
}

document.getElementById("login").onsubmit = (event) => {
  event.preventDefault();
  const token = document.getElementById("login-token").value;
  const access = document.getElementById("login-access").value;
  const secret = document.getElementById("login-secret").value;
  sessionStorage.setItem("krocket.authorization", token ? "Bearer " + token : "Basic " + btoa(access + ":" + secret));
  document.getElementById("login").hidden = true;
  route();
};
window.addEventListener("hashchange", route);
route();
