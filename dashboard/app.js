// Baton's dashboard: plain DOM, one GraphQL endpoint for reads and controls, one WebSocket
// (graphql-transport-ws) for every live update. No framework, no build step: the gateway inlines
// this file, with style.css and the API's addresses, into index.html.

const STATUSES = ["PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "ROLLED_BACK"];
const UNFINISHED = new Set(["PENDING", "SCHEDULED", "RUNNING"]);
const PAGE_SIZE = 20;
const TOKEN_KEY = "baton.token";

const endpoints = JSON.parse(document.getElementById("endpoints").textContent);
// Served by the gateway, the page sits beside the `graphql` route, wherever the API is mounted
// (the emulator serves it under /_aws/execute-api/{apiId}/{stage}/).
const here = location.href.replace(/[?#].*$/, "");
const GRAPHQL = endpoints.graphql ?? new URL("graphql", here.endsWith("/") ? here : `${here}/`).href;

// ------------------------------------------------------------------------------------------ DOM

/** Replaces `el`'s children, leaving out the absent ones (`cond && child`). */
const fill = (el, ...children) => el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));

/** An element with attributes, listeners (`onclick`) and children; text is never parsed as HTML. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key !== "value") el.setAttribute(key, value === true ? "" : value);
  }
  fill(el, children);
  if (props?.value != null) el.value = props.value;
  return el;
}

const $ = (id) => document.getElementById(id);
const time = (at) => (at ? new Date(at).toLocaleString() : "—");
const clock = (at) => (at ? new Date(at).toLocaleTimeString() : "—");
const status = (s, count) => h("span", { class: `status ${s}`, dataset: { status: s } }, s.replace("_", " ").toLowerCase(), count != null && h("b", null, count));
const json = (value) => h("pre", { class: "json" }, JSON.stringify(value, null, 2));

function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}

/** Asks for a reason (every control takes one); `null` when the operator backs out. */
function askReason(title) {
  const dialog = $("reason-dialog");
  $("reason-title").textContent = title;
  $("reason").value = "";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? $("reason").value.trim() : null), { once: true });
  });
}

// -------------------------------------------------------------------------------------- GraphQL

class GraphQLError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);

async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch(GRAPHQL, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (e) {
    throw new GraphQLError("NETWORK", `the API did not answer: ${e.message}`);
  }
  const body = await response.json().catch(() => ({ errors: [{ message: `HTTP ${response.status}`, extensions: { code: "BAD_RESPONSE" } }] }));
  if (body.errors?.length) {
    const [first] = body.errors;
    const code = first.extensions?.code ?? "ERROR";
    if (code === "UNAUTHENTICATED") signOut(`The token was refused (${code}): ${first.message}`);
    throw new GraphQLError(code, first.message);
  }
  return body.data;
}

/** Runs a control, says what happened, and whether it went through. */
async function act(what, query, variables) {
  try {
    const data = await gql(query, variables);
    toast(what);
    return data;
  } catch (e) {
    toast(`${e.code}: ${e.message}`, "error");
    return null;
  }
}

/**
 * Subscriptions over graphql-transport-ws. The subprotocol is not offered in the handshake:
 * Baton's gateway speaks it either way, and an emulator that does not echo
 * `Sec-WebSocket-Protocol` would make the browser fail the connection. Reconnects with backoff
 * and subscribes again; `resync` then lets each view read what it missed.
 */
class Live {
  #socket;
  #subscriptions = new Map();
  #next = 1;
  #acked = false;
  #connectedBefore = false;
  #attempt = 0;
  #closed = false;
  #keepalive;

  constructor(url, onState) {
    this.url = url;
    this.onState = onState;
    this.#open();
  }

  #open() {
    const socket = new WebSocket(this.url);
    this.#socket = socket;
    socket.onopen = () => this.#send({ type: "connection_init", payload: { Authorization: `Bearer ${token}` } });
    socket.onmessage = (event) => this.#receive(JSON.parse(event.data));
    socket.onclose = () => {
      this.#acked = false;
      clearInterval(this.#keepalive);
      if (this.#closed) return;
      this.onState(false);
      setTimeout(() => this.#open(), Math.min(15000, 500 * 2 ** this.#attempt++));
    };
  }

  #send(message) {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(JSON.stringify(message));
  }

  #subscribe(id, { query, variables }) {
    this.#send({ type: "subscribe", id, payload: { query, variables } });
  }

  #receive(message) {
    const subscription = this.#subscriptions.get(message.id);
    switch (message.type) {
      case "connection_ack": {
        this.#acked = true;
        this.#attempt = 0;
        this.onState(true);
        const again = this.#connectedBefore;
        this.#connectedBefore = true;
        for (const [id, s] of this.#subscriptions) {
          this.#subscribe(id, s);
          if (again) s.resync?.();
        }
        // API Gateway closes connections idle for 10 minutes.
        this.#keepalive = setInterval(() => this.#send({ type: "ping" }), 240_000);
        break;
      }
      case "next":
        if (message.payload.errors?.length) subscription?.error?.(message.payload.errors[0]);
        else subscription?.next(message.payload.data);
        break;
      case "error":
        this.#subscriptions.delete(message.id);
        subscription?.error?.(message.payload[0] ?? message.payload);
        break;
      case "complete":
        this.#subscriptions.delete(message.id);
        break;
      case "ping":
        this.#send({ type: "pong" });
        break;
    }
  }

  /** Subscribes; returns what ends the subscription. */
  subscribe(query, variables, handlers) {
    const id = String(this.#next++);
    const subscription = { query, variables, ...handlers };
    this.#subscriptions.set(id, subscription);
    if (this.#acked) this.#subscribe(id, subscription);
    return () => {
      if (this.#subscriptions.delete(id) && this.#acked) this.#send({ type: "complete", id });
    };
  }

  close() {
    this.#closed = true;
    clearInterval(this.#keepalive);
    this.#socket.close();
  }
}

// -------------------------------------------------------------------------------------- queries

const ROW = `fragment Row on Task { id name projectId tier status attempt maxAttempts priority updatedAt parked { gate } }`;
const FULL = `fragment Full on Task {
  id name projectId tier status version attempt maxAttempts priority dueAt deadline timeoutSeconds
  correlationId idempotencyKey createdAt updatedAt reason tainted input output
  error { code message } parked { gate since } dependsOn dependents taint { root via request }
  history { version from to at cause attempt }
  provenance { model tier domain tokensIn tokensOut workerId startedAt finishedAt recordedAt artifacts { uri digest mediaType bytes } }
}`;
const SWITCH = `fragment Switch on KillSwitch { scope engaged present lastChange { by reason at } }`;
const PROJECT = `query Project($id: String!) { projectStatus(projectId: $id) {
  projectId total running limit queued heldBy paused pause { by reason at } counts { status count }
  killSwitch { ...Switch } globalKillSwitch { ...Switch } } } ${SWITCH}`;

// ---------------------------------------------------------------------------------------- state

/** The token's claims, for display only: the API checks the token on every call. */
function claims() {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

const state = {
  live: null,
  projects: [], // watched project ids, remembered per tenant in this browser
  status: new Map(), // project id → ProjectStatus (or { error })
  unwatch: new Map(), // project id → ends its projectTasks subscription
  refreshes: new Map(), // project id → pending refresh timer
  selected: null,
  filter: { status: "", tier: "" },
  page: { cursors: [null], rows: [], hasNext: false, error: null },
  view: null, // the current view's teardown
};

const projectsKey = () => `baton.projects.${claims().tenant ?? ""}`;
const saveProjects = () => localStorage.setItem(projectsKey(), JSON.stringify(state.projects));

// ------------------------------------------------------------------------------------- sign-in

function showSignIn(message) {
  $("sign-in").hidden = false;
  for (const id of ["main", "tabs", "live", "sign-out"]) $(id).hidden = true;
  $("main").replaceChildren();
  $("who").textContent = "";
  $("global-switch").replaceChildren();
  $("sign-in-error").textContent = message ?? "";
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.view?.();
  state.view = null;
  for (const end of state.unwatch.values()) end();
  state.unwatch.clear();
  state.status.clear();
  state.live?.close();
  state.live = null;
  showSignIn(message);
}

/** Checks the token with one read (the global switch, shown in the header), then opens. */
async function enter() {
  try {
    await loadGlobalSwitch();
  } catch (e) {
    if (e.code !== "UNAUTHENTICATED") signOut(`${e.code}: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  enter();
});
$("sign-out").addEventListener("click", () => signOut());

function start() {
  const who = claims();
  $("sign-in").hidden = true;
  for (const id of ["main", "tabs", "live", "sign-out"]) $(id).hidden = false;
  $("who").textContent = [who.sub, who.tenant && `(${who.tenant})`].filter(Boolean).join(" ");
  state.live = new Live(endpoints.websocket, (up) => {
    $("live").className = `live ${up ? "up" : "down"}`;
    $("live").textContent = up ? "live" : "reconnecting";
  });
  state.projects = JSON.parse(localStorage.getItem(projectsKey()) ?? "[]");
  state.selected = state.projects[0] ?? null;
  for (const project of state.projects) watch(project);
  route();
}

// ---------------------------------------------------------------------------- global switch

const isAdmin = () => (claims().scope ?? "").split(" ").includes("baton:admin");

async function loadGlobalSwitch() {
  const data = await gql(`{ killSwitch(scope: {global: true}) { ...Switch } } ${SWITCH}`);
  renderGlobalSwitch(data.killSwitch);
}

function renderGlobalSwitch(s) {
  const flag = s.engaged
    ? h("span", { class: "flag on", title: s.lastChange ? `${s.lastChange.by}: ${s.lastChange.reason}` : "missing" }, "global kill switch engaged")
    : h("span", { class: "flag" }, "dispatching");
  const toggle = isAdmin() && h("button", { class: "quiet", onclick: () => turnSwitch({ global: true }, !s.engaged, "the global kill switch") }, s.engaged ? "Disengage" : "Engage");
  fill($("global-switch"), flag, " ", toggle);
}

async function turnSwitch(scope, engage, name) {
  const reason = await askReason(`${engage ? "Engage" : "Disengage"} ${name}`);
  if (reason == null) return;
  const field = engage ? "engageKillSwitch" : "disengageKillSwitch";
  const data = await act(`${name}: ${engage ? "engaged" : "disengaged"}`,
    `mutation($scope: KillSwitchScope!, $reason: String!) { ${field}(scope: $scope, reason: $reason) { ...Switch } } ${SWITCH}`,
    { scope, reason });
  if (!data) return;
  if (scope.global) renderGlobalSwitch(data[field]);
  else refreshProject(scope.projectId);
}

// ------------------------------------------------------------------------------------- projects

/** Follows a project: its status now, and every transition of its tasks from now on. */
function watch(project) {
  refreshProject(project);
  const end = state.live.subscribe(
    `subscription($id: String!) { projectTasks(projectId: $id) { ...Row } } ${ROW}`,
    { id: project },
    {
      next: (data) => taskChanged(data.projectTasks),
      error: (e) => toast(`${project}: ${e.message}`, "error"),
      resync: () => {
        refreshProject(project);
        if (state.selected === project) loadPage();
      },
    },
  );
  state.unwatch.set(project, end);
}

function unwatchProject(project) {
  state.unwatch.get(project)?.();
  state.unwatch.delete(project);
  state.status.delete(project);
  state.projects = state.projects.filter((p) => p !== project);
  saveProjects();
  if (state.selected === project) selectProject(state.projects[0] ?? null);
  else renderProjects();
}

/** How far a project's status counters may trail a pushed transition (the stream's batching). */
const COUNTER_LAG_MS = 2500;

/** Reads a project's counts and controls again, at most once per burst of transitions. */
function refreshProject(project, delay = 0) {
  if (state.refreshes.has(project)) return;
  state.refreshes.set(project, setTimeout(async () => {
    state.refreshes.delete(project);
    try {
      const data = await gql(PROJECT, { id: project });
      state.status.set(project, data.projectStatus);
      renderGlobalSwitch(data.projectStatus.globalKillSwitch);
    } catch (e) {
      state.status.set(project, { error: `${e.code}: ${e.message}` });
    }
    renderProjects();
  }, delay));
}

async function addProject(project) {
  if (!project || state.projects.includes(project)) return selectProject(project || state.selected);
  try {
    await gql(PROJECT, { id: project });
  } catch (e) {
    return toast(`${e.code}: ${e.message}`, "error");
  }
  state.projects.push(project);
  saveProjects();
  watch(project);
  selectProject(project);
}

function selectProject(project) {
  state.selected = project;
  state.page = { cursors: [null], rows: [], hasNext: false, error: null };
  renderProjects();
  loadPage();
}

function projectCard(project) {
  const s = state.status.get(project);
  const remove = h("button", { class: "quiet", title: "Stop watching", onclick: (e) => { e.stopPropagation(); unwatchProject(project); } }, "×");
  const title = h("h3", { onclick: () => selectProject(project) }, project);
  if (!s || s.error) {
    return h("article", { class: "project", dataset: { project } }, h("header", null, title, remove), h("p", { class: s ? "error" : "muted" }, s?.error ?? "loading…"));
  }
  const counts = s.counts.filter((c) => c.count > 0);
  const flags = [
    s.paused && h("span", { class: "flag held", title: s.pause ? `${s.pause.by}: ${s.pause.reason}` : "" }, "paused"),
    s.killSwitch.engaged && h("span", { class: "flag on", title: s.killSwitch.lastChange?.reason ?? "missing" }, "kill switch engaged"),
    s.heldBy && h("span", { class: "flag held" }, `held: ${s.heldBy.replace(/_/g, " ").toLowerCase()}`),
  ];
  const pause = s.paused
    ? h("button", { onclick: () => control(project, "resumeProject", "Resume") }, "Resume")
    : h("button", { class: "quiet", onclick: () => control(project, "pauseProject", "Pause") }, "Pause");
  const kill = h("button", { class: s.killSwitch.engaged ? "" : "danger", onclick: () => turnSwitch({ projectId: project }, !s.killSwitch.engaged, `${project}'s kill switch`) },
    s.killSwitch.engaged ? "Disengage kill switch" : "Kill switch");
  return h("article", { class: `project${state.selected === project ? " selected" : ""}`, dataset: { project, paused: String(s.paused) } },
    h("header", null, title, h("span", { class: "muted" }, `${s.total} tasks`), remove),
    h("div", { class: "counts" }, counts.length ? counts.map((c) => status(c.status, c.count)) : h("span", { class: "muted" }, "no tasks yet")),
    h("div", { class: "muted" }, `running ${s.running} of ${s.limit} · queued ${s.queued}`),
    h("div", { class: "flags" }, flags),
    h("div", { class: "row" }, pause, kill));
}

async function control(project, field, verb) {
  const reason = await askReason(`${verb} ${project}`);
  if (reason == null) return;
  const data = await act(`${project}: ${verb.toLowerCase()}d`,
    `mutation($id: String!, $reason: String!) { ${field}(projectId: $id, reason: $reason) { projectId } }`,
    { id: project, reason });
  if (data) refreshProject(project);
}

function renderProjects() {
  const panel = document.querySelector("[data-view=tasks] .projects");
  if (!panel) return;
  panel.replaceChildren(...state.projects.map(projectCard));
  if (!state.projects.length) panel.append(h("p", { class: "muted" }, "Add a project by its id to watch it: its counts, controls and tasks, live."));
  renderTasks();
}

// ---------------------------------------------------------------------------------------- tasks

async function loadPage() {
  const { page, selected, filter } = state;
  if (!selected) return renderTasks();
  const after = page.cursors[page.cursors.length - 1];
  const variables = {
    filter: { projectId: selected, statuses: filter.status ? [filter.status] : null, tier: filter.tier || null },
    first: PAGE_SIZE,
    after,
  };
  try {
    const data = await gql(`query($filter: TaskFilter!, $first: Int!, $after: String) { tasks(filter: $filter, first: $first, after: $after) {
      edges { node { ...Row } } pageInfo { hasNextPage endCursor } } } ${ROW}`, variables);
    if (state.selected !== selected || state.page !== page) return; // the operator moved on
    page.rows = data.tasks.edges.map((e) => e.node);
    page.hasNext = data.tasks.pageInfo.hasNextPage;
    page.endCursor = data.tasks.pageInfo.endCursor;
    page.error = null;
  } catch (e) {
    page.error = `${e.code}: ${e.message}`;
  }
  renderTasks();
}

const matches = (task) =>
  task.projectId === state.selected && (!state.filter.status || task.status === state.filter.status) && (!state.filter.tier || task.tier === state.filter.tier);

/** A transition pushed by a subscription: the row changes in place, a new task joins page one. */
function taskChanged(task) {
  refreshProject(task.projectId, 250);
  // The counters follow the table's stream, a moment behind the push: read them once more then.
  setTimeout(() => refreshProject(task.projectId), COUNTER_LAG_MS);
  const { rows, cursors } = state.page;
  const at = rows.findIndex((r) => r.id === task.id);
  if (at >= 0) {
    if (rows[at].updatedAt > task.updatedAt) return; // an older push overtaken by a read
    rows[at] = task;
  } else if (cursors.length === 1 && matches(task)) {
    rows.unshift(task);
  } else {
    return;
  }
  renderTasks(task.id);
}

function taskRow(task, changed) {
  return h("tr", { class: `task${changed ? " changed" : ""}`, dataset: { taskId: task.id }, onclick: () => (location.hash = `#/task/${task.id}`) },
    h("td", null, h("a", { href: `#/task/${task.id}` }, task.name), h("div", { class: "muted mono" }, task.id)),
    h("td", null, status(task.status), task.parked && h("div", { class: "muted" }, `held: ${task.parked.gate.toLowerCase()}`)),
    h("td", null, task.tier),
    h("td", null, `${task.attempt} / ${task.maxAttempts}`),
    h("td", null, task.priority),
    h("td", { title: time(task.updatedAt) }, clock(task.updatedAt)));
}

function renderTasks(changed) {
  const panel = document.querySelector("[data-view=tasks] .tasks");
  if (!panel) return;
  const { page, selected, filter } = state;
  if (!selected) return panel.replaceChildren(h("p", { class: "muted" }, "No project selected."));
  const statusFilter = h("select", { name: "status", value: filter.status, onchange: (e) => setFilter({ status: e.target.value }) },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s.toLowerCase())));
  const projectFilter = h("select", { name: "project", value: selected, onchange: (e) => selectProject(e.target.value) },
    state.projects.map((p) => h("option", { value: p }, p)));
  const tierFilter = h("input", { name: "tier", value: filter.tier, placeholder: "any tier", size: 12, onchange: (e) => setFilter({ tier: e.target.value.trim() }) });
  const pageNumber = page.cursors.length;
  fill(panel,
    h("div", { class: "filters" },
      h("label", null, "Project", projectFilter), h("label", null, "Status", statusFilter), h("label", null, "Tier", tierFilter)),
    page.error && h("p", { class: "error" }, page.error),
    h("table", null,
      h("thead", null, h("tr", null, ["Task", "Status", "Tier", "Attempt", "Priority", "Updated"].map((t) => h("th", null, t)))),
      h("tbody", null, page.rows.map((t) => taskRow(t, t.id === changed)))),
    !page.rows.length && !page.error && h("p", { class: "muted" }, "No tasks match."),
    h("div", { class: "pager" },
      h("button", { class: "quiet", disabled: pageNumber === 1, onclick: () => { page.cursors.pop(); loadPage(); } }, "← Newer"),
      h("span", { class: "muted" }, `page ${pageNumber}`),
      h("button", { class: "quiet", disabled: !page.hasNext, onclick: () => { page.cursors.push(page.endCursor); loadPage(); } }, "Older →")));
}

function setFilter(change) {
  Object.assign(state.filter, change);
  state.page = { cursors: [null], rows: [], hasNext: false, error: null };
  loadPage();
}

function tasksView(main) {
  const add = h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); const input = e.target.elements.project; addProject(input.value.trim()); input.value = ""; } },
    h("input", { name: "project", placeholder: "project id", required: true, size: 18 }), h("button", null, "Watch project"));
  main.append(
    h("section", { class: "panel", dataset: { view: "tasks" } },
      h("div", { class: "row" }, h("h2", { class: "grow" }, "Projects"), add),
      h("div", { class: "projects" }),
      h("h2", { class: "spaced" }, "Tasks"),
      h("div", { class: "tasks" })));
  renderProjects();
  loadPage();
}

// ------------------------------------------------------------------------------------ one task

function taskView(main, id) {
  const panel = h("section", { class: "panel", dataset: { view: "task" } }, h("p", { class: "muted" }, "loading…"));
  main.append(panel);
  let lineage = null;
  const render = (task) => fill(panel, taskDetails(task, lineage));
  const load = async () => {
    try {
      const data = await gql(`query($id: ID!) { task(id: $id) { ...Full }
        up: lineage(taskId: $id, direction: UPSTREAM, depth: 5) { nodes { id name status } truncated }
        down: lineage(taskId: $id, direction: DOWNSTREAM, depth: 5) { nodes { id name status } truncated } } ${FULL}`, { id });
      lineage = { up: data.up, down: data.down };
      render(data.task);
    } catch (e) {
      panel.replaceChildren(h("p", { class: "error" }, `${e.code}: ${e.message}`));
    }
  };
  load();
  return state.live.subscribe(`subscription($id: ID!) { taskUpdated(id: $id) { ...Full } } ${FULL}`, { id }, {
    next: (data) => render(data.taskUpdated),
    error: (e) => toast(e.message, "error"),
    resync: load,
  });
}

function taskDetails(task, lineage) {
  const actions = [
    UNFINISHED.has(task.status) && h("button", { class: "danger", onclick: () => cancel(task) }, "Cancel"),
    task.status === "SUCCEEDED" && h("button", { class: "danger", onclick: () => rollBack(task) }, "Roll back"),
  ];
  const fields = [
    ["Project", task.projectId], ["Tier", task.tier], ["Status", status(task.status)], ["Version", task.version],
    ["Attempt", `${task.attempt} of ${task.maxAttempts}`], ["Priority", task.priority], ["Due", time(task.dueAt)],
    ["Deadline", time(task.deadline)], ["Timeout", `${task.timeoutSeconds} s`], ["Submitted", time(task.createdAt)],
    ["Updated", time(task.updatedAt)], ["Correlation", task.correlationId], ["Idempotency key", task.idempotencyKey],
    ["Held", task.parked && `${task.parked.gate.toLowerCase()} since ${time(task.parked.since)}`],
    ["Error", task.error && `${task.error.code}: ${task.error.message}`], ["Reason", task.reason],
    ["Tainted", task.taint && `by the rollback of ${task.taint.root}${task.taint.via ? ` via ${task.taint.via}` : ""}`],
  ].filter(([, value]) => value != null && value !== "");
  return [
    h("div", { class: "row" }, h("a", { href: "#/" }, "← Tasks"), h("h2", { class: "grow flush" }, task.name), status(task.status), actions),
    h("p", { class: "muted mono" }, task.id),
    h("div", { class: "columns" },
      h("div", null, h("h3", null, "Task"), h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]))),
      h("div", null, h("h3", null, "Input"), json(task.input), task.output != null && [h("h3", { class: "spaced" }, "Output"), json(task.output)])),
    h("h3", { class: "spaced" }, "History"),
    h("table", { class: "history" },
      h("thead", null, h("tr", null, ["Version", "From", "To", "Cause", "Attempt", "At"].map((t) => h("th", null, t)))),
      h("tbody", null, task.history.map((e) => h("tr", null,
        h("td", null, e.version), h("td", null, e.from ? status(e.from) : "—"), h("td", null, status(e.to)),
        h("td", { class: "mono" }, e.cause), h("td", null, e.attempt), h("td", null, time(e.at)))))),
    h("div", { class: "columns spaced" },
      h("div", null, h("h3", null, "Provenance"), provenance(task.provenance)),
      h("div", null, h("h3", null, "Lineage"), lineageLists(lineage, task.id))),
  ];
}

function provenance(p) {
  if (!p) return h("p", { class: "muted" }, "Its worker reported none.");
  const fields = [
    ["Model", p.model], ["Tier", p.tier], ["Domain", p.domain], ["Tokens in", p.tokensIn], ["Tokens out", p.tokensOut],
    ["Worker", p.workerId], ["Started", p.startedAt && time(p.startedAt)], ["Finished", p.finishedAt && time(p.finishedAt)],
    ["Recorded", time(p.recordedAt)], ["Tainted", p.tainted ? "yes" : null],
  ].filter(([, value]) => value != null);
  return [
    h("dl", { class: "fields" }, fields.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])),
    p.artifacts.length > 0 && h("ul", null, p.artifacts.map((a) => h("li", { class: "mono" }, a.uri, a.bytes != null && ` (${a.bytes} bytes)`))),
  ];
}

function lineageLists(lineage, id) {
  if (!lineage) return h("p", { class: "muted" }, "—");
  const list = (graph, label) => {
    const others = graph.nodes.filter((n) => n.id !== id);
    return h("div", null, h("div", { class: "muted" }, `${label}${graph.truncated ? " (cut short)" : ""}`),
      others.length
        ? h("ul", null, others.map((n) => h("li", null, h("a", { href: `#/task/${n.id}` }, n.name), " ", status(n.status))))
        : h("p", { class: "muted" }, "none"));
  };
  return [list(lineage.up, "Built from"), list(lineage.down, "Built on it")];
}

async function cancel(task) {
  const reason = await askReason(`Cancel ${task.name}`);
  if (reason == null) return;
  await act(`${task.name}: cancelled`, `mutation($id: ID!, $reason: String) { cancelTask(id: $id, reason: $reason) { id } }`, { id: task.id, reason });
}

async function rollBack(task) {
  let title = `Roll back ${task.name}`;
  try {
    const { rollbackPreview: p } = await gql(`query($id: ID!) { rollbackPreview(taskId: $id) { rolledBack { id } cancelled { id } totalTokens } }`, { id: task.id });
    title += `: ${p.rolledBack.length} rolled back, ${p.cancelled.length} cancelled, ${p.totalTokens} tokens`;
  } catch (e) {
    return toast(`${e.code}: ${e.message}`, "error");
  }
  const reason = await askReason(title);
  if (reason == null) return;
  await act(`${task.name}: rollback requested`, `mutation($id: ID!, $reason: String) { requestRollback(taskId: $id, reason: $reason) { id } }`, { id: task.id, reason });
}

// ---------------------------------------------------------------------------------- dead letters

function dlqView(main) {
  const panel = h("section", { class: "panel", dataset: { view: "dlq" } }, h("p", { class: "muted" }, "reading the DLQs…"));
  main.append(panel);
  const load = async () => {
    try {
      const { dlqStats } = await gql(`{ dlqStats { queue depth inFlight oldestAgeSeconds scanned truncated
        classes { class code detailType tier project count oldestAgeSeconds reason } } }`);
      panel.replaceChildren(
        h("div", { class: "row" }, h("h2", { class: "grow" }, "Dead letters"), h("button", { class: "quiet", onclick: load }, "Read again")),
        h("table", null,
          h("thead", null, h("tr", null, ["Queue", "Class", "Tier", "Project", "Letters", "Oldest", "Example reason", ""].map((t) => h("th", null, t)))),
          h("tbody", null, dlqStats.map((q) => dlqRows(q, load)))));
    } catch (e) {
      const why = e.code === "FORBIDDEN" ? "Dead letters need a token with the baton:admin scope." : `${e.code}: ${e.message}`;
      panel.replaceChildren(h("h2", null, "Dead letters"), h("p", { class: "error" }, why));
    }
  };
  load();
}

const age = (seconds) => (seconds == null ? "—" : seconds < 120 ? `${seconds} s` : seconds < 7200 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds / 3600)} h`);

function dlqRows(q, reload) {
  const redrive = (filter, what) => async () => {
    const data = await act(`${q.queue}: redriving ${what}`,
      `mutation($queue: String!, $filter: RedriveFilter!) { redriveDlq(queue: $queue, filter: $filter) { moved complete } }`,
      { queue: q.queue, filter });
    if (data) {
      const r = data.redriveDlq;
      toast(`${q.queue}: ${r.moved} moved back${r.complete ? "" : "; more remain, redrive again"}`);
      reload();
    }
  };
  const head = h("tr", { dataset: { queue: q.queue } },
    h("td", null, h("b", null, q.queue)),
    h("td", { colspan: 3, class: "muted" }, q.depth ? `${q.depth} waiting, ${q.inFlight} in flight${q.truncated ? ` (first ${q.scanned} read)` : ""}` : "empty"),
    h("td", null, q.depth), h("td", null, age(q.oldestAgeSeconds)), h("td"),
    h("td", null, q.depth > 0 && h("button", { class: "quiet", onclick: redrive({}, "every letter") }, "Redrive all")));
  return [head, q.classes.map((c) => h("tr", { dataset: { class: c.class } },
    h("td"), h("td", { class: "mono" }, c.class), h("td", null, c.tier ?? "—"), h("td", null, c.project ?? "—"),
    h("td", null, c.count), h("td", null, age(c.oldestAgeSeconds)), h("td", null, c.reason),
    h("td", null, h("button", { class: "quiet", onclick: redrive({ class: c.class }, c.class) }, "Redrive"))))];
}

// -------------------------------------------------------------------------------------- routing

function route() {
  if (!token) return;
  state.view?.();
  state.view = null;
  const main = $("main");
  main.replaceChildren();
  const [, name, id] = location.hash.match(/^#\/(\w*)\/?(.*)$/) ?? [];
  const tab = name === "dlq" ? "dlq" : "tasks";
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("current", a.dataset.tab === tab && name !== "task");
  if (name === "task" && id) state.view = taskView(main, decodeURIComponent(id));
  else if (name === "dlq") dlqView(main);
  else tasksView(main);
}

window.addEventListener("hashchange", route);
if (token) enter();
else showSignIn();
