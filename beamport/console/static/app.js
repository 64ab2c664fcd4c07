// Beamport's console: hash routes over the public API (/v1b3) and Beamport's own (/beamport/v1).
// Plain DOM, no framework: every view is a function that renders into <main> and may register a refresh.

const main = document.getElementById("main");
const projectInput = document.getElementById("project");
const REGION = "us-central1";
const REFRESH_MS = 2000;
let timer = null;

// The project: the one chosen last in this browser (remembered), else the project of the most recent job
// (loadProjects), else "demo". The box offers the projects that have jobs and takes any other id typed in.
const PROJECT_KEY = "beamport.project";
const DEFAULT_PROJECT = "demo";
projectInput.value = localStorage.getItem(PROJECT_KEY) || "";
projectInput.addEventListener("change", () => {
  const chosen = projectInput.value.trim();
  if (chosen) localStorage.setItem(PROJECT_KEY, chosen);
  else localStorage.removeItem(PROJECT_KEY);
  route();
});
projectInput.addEventListener("focus", () => loadProjects().catch((error) => console.warn(error)));
const project = () => encodeURIComponent(projectInput.value.trim() || DEFAULT_PROJECT);

// GET /beamport/v1/projects (Beamport's own): the projects that have jobs, the most recent job's first, of
// those the caller may list jobs in. They are the box's choices; with no project chosen, the first is shown.
async function loadProjects() {
  const { projects = [] } = await api("/beamport/v1/projects");
  document.getElementById("project-choices").replaceChildren(...projects.map((p) =>
    h("option", { value: p.projectId }, `latest job ${when(p.latestJobCreateTime)}`)));
  if (!projectInput.value.trim()) projectInput.value = projects.length ? projects[0].projectId : DEFAULT_PROJECT;
}

// -- plumbing -----------------------------------------------------------------------------------

class ApiError extends Error {}

// The console's session (docs/console.md): who is signed in, and the CSRF token that every call changing
// state must carry (the server refuses them without it). Without authentication (serve --no-auth) the
// principal is "anonymous" and there is no token.
const session = { principal: null, authentication: null, csrfToken: null, signedOut: false };
const SAFE = new Set(["GET", "HEAD"]);

async function api(path, options = {}, retried = false) {
  if (session.signedOut) throw new ApiError("UNAUTHENTICATED: not signed in.");
  const method = (options.method || "GET").toUpperCase();
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (session.csrfToken && !SAFE.has(method)) headers["X-CSRF-Token"] = session.csrfToken;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    if (response.status === 401) signedOut();
    // Signed in again in another tab (a new session, a new token): take the new token and try once more.
    else if (response.status === 403 && !SAFE.has(method) && !retried && session.csrfToken) {
      const before = session.csrfToken;
      const signedIn = await loadSession().catch(() => null);
      if (signedIn === false) signedOut();
      else if (signedIn && session.csrfToken !== before) return api(path, options, true);
    }
    throw new ApiError(`${error.status || response.status}: ${error.message || response.statusText}`);
  }
  return body;
}

// GET /beamport/v1/session: true when signed in (or authentication is off), false when not (401).
async function loadSession() {
  const response = await fetch("/beamport/v1/session", { credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) return false;
  if (!response.ok) throw new ApiError(`${(body.error || {}).status || response.status}: ${(body.error || {}).message || response.statusText}`);
  Object.assign(session, { principal: body.principal, authentication: body.authentication, csrfToken: body.csrfToken || null, signedOut: false });
  renderWho();
  return true;
}

function renderWho() {
  const who = document.getElementById("who");
  if (session.signedOut || !session.principal) { who.replaceChildren(); return; }
  who.replaceChildren(session.authentication === "off"
    ? h("span", { class: "warn", title: "The server runs with --no-auth: anyone who reaches it may use it." }, "Authentication off (anonymous)")
    : h("span", { title: "Signed in to this console" }, "Signed in as ", h("strong", { id: "principal" }, session.principal)));
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : document.createTextNode(child));
  return node;
};

function toast(text) {
  const item = h("div", {}, text);
  document.getElementById("toast").append(item);
  setTimeout(() => item.remove(), 8000);
}

const short = (state) => (state || "").replace(/^JOB_STATE_|^JOB_TYPE_/, "");
const when = (time) => (time ? new Date(time).toLocaleString() : "");
function duration(start, end) {
  if (!start) return "";
  const seconds = Math.max(0, ((end ? new Date(end) : new Date()) - new Date(start)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(0)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
// "1 element", "2 elements", "1,500 elements".
const plural = (count, one, many = `${one}s`) => `${Number(count).toLocaleString()} ${Number(count) === 1 ? one : many}`;
// The nodes of a list that may hold nothing at places (null, undefined, false), for append and replaceChildren,
// which would show them as text ("null").
const present = (...items) => items.flat().filter((item) => item !== null && item !== undefined && item !== false);
// The job state machine as the server declares it (GET /beamport/v1/jobStates, beamport/job_states.py): which
// states are terminal, and the actions (cancel, drain) a job in each state offers. Read once, signed in.
const jobStates = { terminal: new Set(), offered: {}, actions: {}, loading: null };
function loadJobStates() {
  jobStates.loading ||= api("/beamport/v1/jobStates").then((machine) => {
    for (const state of machine.states) {
      if (state.terminal) jobStates.terminal.add(state.state);
      jobStates.offered[state.state] = state.actions;
    }
    for (const action of machine.actions) jobStates.actions[action.action] = action;
  }).catch((error) => { jobStates.loading = null; throw error; });
  return jobStates.loading;
}
const terminal = (state) => jobStates.terminal.has(state);
// The actions a job offers now: those of its state, of its type.
const offeredActions = (job) => (jobStates.offered[job.currentState] || []).map((name) => jobStates.actions[name])
  .filter((action) => action && (!action.streamingOnly || job.type === "JOB_TYPE_STREAMING"));

function every(refresh) {
  clearInterval(timer);
  const run = () => refresh().catch((error) => console.warn(error));
  run();
  timer = setInterval(run, REFRESH_MS);
}

// -- routes -------------------------------------------------------------------------------------

const routes = [
  [/^#\/jobs\/([^/]+)\/([^/]+)\/([^/]+)$/, jobPage],
  [/^#\/workers$/, workersPage],
  [/^#\/templates$/, templatesPage],
  [/^#\/sql$/, sqlPage],
  [/^.*$/, jobsPage],
];

function route() {
  clearInterval(timer);
  if (session.signedOut) return;
  const hash = location.hash || "#/jobs";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", hash.startsWith(link.getAttribute("href")));
  for (const [pattern, view] of routes) {
    const match = hash.match(pattern);
    if (match) {
      main.replaceChildren();
      view(...match.slice(1).map(decodeURIComponent));
      main.focus();
      return;
    }
  }
}
window.addEventListener("hashchange", route);

// -- jobs list ----------------------------------------------------------------------------------

function jobsPage() {
  const state = h("select", { "aria-label": "State" }, ["ALL", "ACTIVE", "TERMINATED"].map((s) => h("option", { value: s }, s)));
  const name = h("input", { placeholder: "name", "aria-label": "Name", spellcheck: "false" });
  const region = h("input", { placeholder: "all regions", "aria-label": "Region", spellcheck: "false" });
  const rows = h("tbody");
  const pager = h("div", { class: "filters" });
  const tokens = [null];
  let page = 0;
  main.append(
    h("h1", {}, "Jobs"),
    h("div", { class: "filters" }, h("label", {}, "State ", state), h("label", {}, "Name ", name), h("label", {}, "Region ", region)),
    h("table", { id: "jobs" }, h("thead", {}, h("tr", {}, ["Name", "State", "Type", "Region", "Started", "Duration", "Id"].map((c) => h("th", {}, c)))), rows),
    pager,
  );
  const reset = () => { tokens.length = 1; page = 0; every(load); };
  state.addEventListener("change", reset);
  name.addEventListener("change", reset);
  region.addEventListener("change", reset);

  async function load() {
    await loadJobStates();
    const params = new URLSearchParams({ pageSize: "50", filter: state.value });
    if (name.value.trim()) params.set("name", name.value.trim());
    if (tokens[page]) params.set("pageToken", tokens[page]);
    const base = region.value.trim()
      ? `/v1b3/projects/${project()}/locations/${encodeURIComponent(region.value.trim())}/jobs`
      : `/v1b3/projects/${project()}/jobs:aggregated`;
    const answer = await api(`${base}?${params}`);
    const jobs = answer.jobs || [];
    rows.replaceChildren(...jobs.map((job) => h("tr", {},
      h("td", {}, h("a", { href: `#/jobs/${project()}/${job.location}/${job.id}` }, job.name)),
      h("td", { class: `state ${job.currentState}` }, short(job.currentState)),
      h("td", {}, short(job.type)),
      h("td", {}, job.location),
      h("td", {}, when(job.startTime || job.createTime)),
      h("td", {}, duration(job.startTime || job.createTime, terminal(job.currentState) ? job.currentStateTime : null)),
      h("td", { class: "muted" }, job.id),
    )));
    if (!jobs.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs.")));
    tokens[page + 1] = answer.nextPageToken || null;
    pager.replaceChildren(
      h("button", { disabled: page === 0 ? "" : null, onclick: () => { page -= 1; every(load); } }, "Newer"),
      h("span", { class: "muted" }, `Page ${page + 1}`),
      h("button", { disabled: answer.nextPageToken ? null : "", onclick: () => { page += 1; every(load); } }, "Older"),
    );
  }
  every(load);
}

// -- one job ------------------------------------------------------------------------------------

function jobPage(projectId, region, jobId) {
  // A link names the job's project: the box shows it (and the jobs list follows), without changing the choice
  // this browser remembers.
  projectInput.value = projectId;
  const base = `/v1b3/projects/${encodeURIComponent(projectId)}/locations/${encodeURIComponent(region)}/jobs/${encodeURIComponent(jobId)}`;
  const header = h("dl", { class: "kv", id: "job-header" });
  const actions = h("div", { class: "filters", id: "job-actions" });
  const graph = h("div", { class: "graph", id: "graph" });
  const timeline = h("div", { class: "timeline", id: "timeline" });
  const metrics = h("div", { id: "metrics" });
  const signals = h("div", { id: "streaming-signals" });
  const streamingSection = h("section", { id: "streaming-section", hidden: true }, h("h2", {}, "Streaming"), signals);
  const workers = h("div", { id: "job-workers" });
  const resources = h("div", { id: "resources" });
  const importance = h("select", { "aria-label": "Minimum importance" },
    ["JOB_MESSAGE_DETAILED", "JOB_MESSAGE_BASIC", "JOB_MESSAGE_WARNING", "JOB_MESSAGE_ERROR", "JOB_MESSAGE_DEBUG"].map((i) => h("option", { value: i }, i.replace("JOB_MESSAGE_", "").toLowerCase())));
  const logs = h("div", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Job messages" });
  const title = h("h1", {}, jobId);
  const expanded = new Set();
  const rates = {}; // node -> {time, count, perSecond}: throughput between two refreshes
  const history = {}; // metric -> [[time, value]]
  main.append(title, actions, h("div", { class: "grid" },
    h("section", {}, h("h2", {}, "Job"), header),
    h("section", {}, h("h2", {}, "Resources"), resources)),
    h("h2", {}, "Graph"), graph,
    h("h2", {}, "Stages"), timeline,
    streamingSection,
    h("div", { class: "grid" },
      h("section", {}, h("h2", {}, "Metrics"), metrics),
      h("section", {}, h("h2", {}, "Workers"), workers)),
    h("h2", {}, "Logs ", importance), logs);
  importance.addEventListener("change", () => { logs.replaceChildren(); seen.clear(); lastTime = null; });

  const seen = new Set();
  let lastTime = null;
  let job = null;
  let failedStages = new Set();

  async function refresh() {
    await loadJobStates();
    job = await api(`${base}?view=JOB_VIEW_ALL`);
    title.textContent = job.name;
    renderHeader(job);
    renderActions(job);
    const [metricAnswer, details] = await Promise.all([
      api(`${base}/metrics`),
      api(`${base}/executionDetails`).catch(() => ({})),
    ]);
    const all = metricAnswer.metrics || [];
    failedStages = new Set((job.stageStates || []).filter((s) => s.executionStageState === "JOB_STATE_FAILED").map((s) => s.executionStageName));
    renderGraph(job, all);
    renderTimeline(details.stages || []);
    renderSignals(details.stages || [], all);
    renderMetrics(all);
    await Promise.all([renderLogs(), renderWorkers(details.stages || []), renderResources(all)]);
  }

  function renderHeader(job) {
    const sdk = (job.jobMetadata || {}).sdkVersion || {};
    const support = sdk.sdkSupportStatus && sdk.sdkSupportStatus !== "SUPPORTED" ? `(support: ${sdk.sdkSupportStatus.toLowerCase()})` : "";
    const pairs = [
      ["State", h("span", { class: `state ${job.currentState}`, id: "job-state" }, short(job.currentState))],
      ["Type", short(job.type)], ["Id", job.id], ["Region", job.location],
      ["SDK", h("span", { id: "job-sdk" }, [sdk.versionDisplayName, sdk.version, support].filter(Boolean).join(" "))],
      ["Created", when(job.createTime)], ["State since", when(job.currentStateTime)],
      ["Duration", duration(job.startTime || job.createTime, terminal(job.currentState) ? job.currentStateTime : null)],
      ["Labels", Object.entries(job.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
      ["Options", renderOptions(job)],
    ];
    header.replaceChildren(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  // The options the user set: those Beam lists in the submission's display data (the options that differ from
  // their defaults), with the value the job runs with (a template launch sets its parameters there). A client
  // that sends no display data: every option that has a value.
  function renderOptions(job) {
    const given = (job.environment || {}).sdkPipelineOptions || {};
    const options = given.options || {};
    const set = Array.isArray(given.display_data)
      ? given.display_data.filter((item) => item && item.key in options).map((item) => [item.key, options[item.key]])
      : Object.entries(options).filter(([, v]) => v !== null && v !== "" && !(typeof v === "object" && !Object.keys(v).length));
    const text = (v) => (Array.isArray(v) && v.length ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v));
    if (!set.length) return h("span", { class: "muted" }, "none");
    return h("ul", { class: "options", id: "job-options" }, set.map(([k, v]) => h("li", {}, h("code", {}, k), " = ", text(v))));
  }

  function renderActions(job) {
    const act = (label, state) => h("button", { class: "danger", onclick: async () => {
      if (!confirm(`${label} job ${job.name}?`)) return;
      try { await api(base, { method: "PUT", body: JSON.stringify({ requestedState: state }) }); toast(`${label}: requested.`); }
      catch (error) { toast(error.message); }
    } }, label);
    // A snapshot of a running streaming job (Flink saves its state; other engines refuse, saying why).
    const snapshot = h("button", { onclick: async () => {
      try {
        const taken = await api(`${base}:snapshot`, { method: "POST", body: JSON.stringify({ description: "from the console" }) });
        toast(`Snapshot ${taken.id}: ${short(taken.state)}${taken.diskSizeBytes ? `, ${plural(taken.diskSizeBytes, "byte")}` : ""}.`);
      } catch (error) { toast(error.message); }
    } }, "Snapshot");
    const streaming = job.type === "JOB_TYPE_STREAMING";
    const label = (action) => action.action[0].toUpperCase() + action.action.slice(1);
    actions.replaceChildren(...present(offeredActions(job).map((action) => act(label(action), action.requestedState)),
      streaming && job.currentState === "JOB_STATE_RUNNING" && snapshot));
  }

  function renderGraph(job, all) {
    const transforms = ((job.pipelineDescription || {}).originalPipelineTransform || []);
    if (!transforms.length) { graph.replaceChildren(h("p", { class: "muted" }, "No pipeline graph (the job has no pipeline).")); return; }
    const counts = {};
    for (const m of all) {
      const ctx = (m.name || {}).context || {};
      if ((m.name || {}).name === "ElementCount" && !ctx.tentative && ctx.output_user_name) counts[ctx.output_user_name] = Number(m.scalar || 0);
    }
    const names = transforms.map((t) => t.name);
    const isComposite = (name) => names.some((other) => other.startsWith(name + "/"));
    const parent = (name) => name.includes("/") ? name.slice(0, name.lastIndexOf("/")) : null;
    // Shown: top-level transforms, and the children of expanded composites.
    const shown = transforms.filter((t) => { const p = parent(t.name); return p === null ? true : expanded.has(p) && shownAncestors(p); });
    function shownAncestors(name) { const p = parent(name); return p === null ? true : expanded.has(p) && shownAncestors(p); }
    const visible = shown.filter((t) => !(isComposite(t.name) && expanded.has(t.name)));
    const leafOf = {}; // collection -> the leaf transform that produces it
    for (const t of transforms) if (!isComposite(t.name)) for (const [i, pc] of (t.outputCollectionName || []).entries()) leafOf[pc] = `${t.name}-out${i}`;
    const outCount = (t) => (t.outputCollectionName || []).reduce((sum, pc) => sum + (counts[leafOf[pc]] || 0), 0);
    // Layers: a node is one below the deepest node whose output it reads.
    const producer = {};
    for (const t of visible) for (const pc of t.outputCollectionName || []) producer[pc] = t.name;
    const layer = {};
    const depth = (t, guard = 0) => {
      if (layer[t.name] !== undefined || guard > 200) return layer[t.name] || 0;
      const ups = (t.inputCollectionName || []).map((pc) => producer[pc]).filter((p) => p && p !== t.name);
      layer[t.name] = ups.length ? 1 + Math.max(...ups.map((p) => depth(visible.find((v) => v.name === p), guard + 1))) : 0;
      return layer[t.name];
    };
    visible.forEach((t) => depth(t));
    const byLayer = {};
    for (const t of visible) (byLayer[layer[t.name]] ||= []).push(t);
    const W = 230, H = 46, GX = 30, GY = 34;
    const pos = {};
    const layers = Object.keys(byLayer).map(Number).sort((a, b) => a - b);
    const widest = Math.max(...layers.map((l) => byLayer[l].length));
    for (const l of layers) byLayer[l].forEach((t, i) => { pos[t.name] = { x: 10 + i * (W + GX) + (widest - byLayer[l].length) * (W + GX) / 2, y: 10 + l * (H + GY) }; });
    const width = 20 + widest * (W + GX), height = 20 + layers.length * (H + GY);
    const edges = [];
    for (const t of visible) for (const pc of t.inputCollectionName || []) {
      const from = producer[pc];
      if (from && pos[from] && from !== t.name) {
        const a = pos[from], b = pos[t.name];
        edges.push(svg("path", { d: `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${a.y + H + GY / 2} ${b.x + W / 2},${b.y - GY / 2} ${b.x + W / 2},${b.y}` }));
      }
    }
    const running = new Set((job.stageStates || []).filter((s) => s.executionStageState === "JOB_STATE_RUNNING").map((s) => s.executionStageName));
    // A fused stage is named by its transforms joined with "+": a node is in it when one of them is the node
    // or lies inside it (a composite).
    const touches = (set, name) => [...set].some((stage) => stage.split("+").some((part) => part === name || part.startsWith(name + "/")));
    const now = Date.now();
    const throughput = (t) => {
      const count = outCount(t), last = rates[t.name];
      if (!last || count < last.count) rates[t.name] = { time: now, count, perSecond: 0 };
      else if (count > last.count && now > last.time) rates[t.name] = { time: now, count, perSecond: ((count - last.count) * 1000) / (now - last.time) };
      const perSecond = rates[t.name].perSecond;
      return perSecond && !terminal(job.currentState) ? ` · ${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond)}/s` : "";
    };
    const nodes = visible.map((t) => {
      const p = pos[t.name];
      const label = t.name.includes("/") ? t.name.slice(t.name.lastIndexOf("/") + 1) : t.name;
      const composite = isComposite(t.name);
      const classes = ["node", composite && "composite", touches(failedStages, t.name) && "failed", touches(running, t.name) && "running"].filter(Boolean).join(" ");
      const group = svg("g", { class: classes, transform: `translate(${p.x},${p.y})`, "data-name": t.name, tabindex: composite ? "0" : "-1", role: composite ? "button" : "img", "aria-label": `${t.name}: ${plural(outCount(t), "element")}` },
        svg("title", {}, t.name),
        svg("rect", { width: W, height: H }),
        svg("text", { x: 8, y: 18 }, (composite ? "▸ " : "") + (label.length > 30 ? label.slice(0, 29) + "…" : label)),
        svg("text", { x: 8, y: 36, class: "count" }, `${plural(outCount(t), "element")}${throughput(t)}`));
      if (composite) {
        const toggle = () => { expanded.add(t.name); renderGraph(job, all); };
        group.addEventListener("click", toggle);
        group.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") toggle(); });
      }
      return group;
    });
    const collapse = expanded.size ? h("button", { onclick: () => { expanded.clear(); renderGraph(job, all); } }, "Collapse all") : null;
    graph.replaceChildren(...[collapse, svg("svg", { viewBox: `0 0 ${width} ${height}`, style: `max-width:${width}px`, role: "img", "aria-label": "Pipeline graph" }, ...edges, ...nodes)].filter(Boolean));
  }

  function renderTimeline(stages) {
    if (!stages.length) { timeline.replaceChildren(h("p", { class: "muted" }, "No stage has run yet.")); return; }
    const start = Math.min(...stages.map((s) => new Date(s.startTime || Date.now())));
    const end = Math.max(...stages.map((s) => new Date(s.endTime || Date.now())));
    const span = Math.max(1, end - start);
    timeline.replaceChildren(h("table", {}, stages.map((s) => {
      const left = ((new Date(s.startTime || Date.now()) - start) / span) * 100;
      const width = Math.max(0.5, ((new Date(s.endTime || Date.now()) - new Date(s.startTime || Date.now())) / span) * 100);
      return h("tr", {}, h("td", {}, s.stageId), h("td", {}, s.state.replace("EXECUTION_STATE_", "").toLowerCase()),
        h("td", { style: "width:70%" }, h("div", { class: `bar ${s.state}`, style: `margin-left:${left}%;width:${width}%` })),
        h("td", {}, duration(s.startTime, s.endTime)));
    })));
  }

  // A streaming run's stage figures (executionDetails' StageSummary.metrics, as the engine measured them:
  // docs/engines.md, "Streaming signals"): watermark age, system lag and throughput per stage as small charts
  // kept while the page is open, and the job's data freshness (its stages' oldest watermark's age); and each
  // source's backlog (getMetrics' BacklogBytes and BacklogElements, what the source says it has not read yet).
  const signalHistory = {}; // "stage/metric" or "source step/metric" -> [[time, value]], a point per measurement
  const SIGNALS = [["DataWatermarkAge", "Watermark age", "s"], ["SystemLag", "System lag", "s"], ["ElementsOutPerSecond", "Throughput", "/s"]];
  const remember = (key, m) => {
    const series = (signalHistory[key] ||= []);
    const at = new Date(m.updateTime).getTime();
    if (!series.length || series[series.length - 1][0] !== at) series.push([at, Number(m.scalar)]);
    if (series.length > 120) series.shift();
  };
  function renderSignals(stages, all) {
    const measured = stages.filter((s) => (s.metrics || []).length);
    const backlogs = all.filter((m) => m.name.origin === "dataflow/v1b3" && ["BacklogBytes", "BacklogElements"].includes(m.name.name) && !(m.name.context || {}).tentative);
    streamingSection.hidden = !measured.length && !backlogs.length;
    if (streamingSection.hidden) return;
    const value = (stage, name) => { const m = (stage.metrics || []).find((m) => m.name.name === name); return m ? Number(m.scalar) : undefined; };
    for (const stage of measured) for (const m of stage.metrics) remember(`${stage.stageId}/${m.name.name}`, m);
    for (const m of backlogs) remember(`${m.name.context.step}/${m.name.name}`, m);
    const ages = measured.map((s) => value(s, "DataWatermarkAge")).filter((v) => v !== undefined);
    const freshness = ages.length ? Math.max(...ages) : undefined;
    const watermark = (stage) => { const w = value(stage, "DataWatermark"); return w === undefined ? "none yet" : new Date(w / 1000).toISOString(); };
    const counts = (stage) => [value(stage, "ElementsIn"), value(stage, "ElementsOut")].map((v) => (v === undefined ? "–" : String(v))).join(" / ");
    const stepNames = Object.fromEntries(((job.pipelineDescription || {}).originalPipelineTransform || []).map((t) => [t.id, t.name]));
    const sources = [...new Set(backlogs.map((m) => m.name.context.step))].sort();
    const backlogCell = (step, name, unit) => { const series = signalHistory[`${step}/${name}`]; return h("td", { class: `backlog ${name}` }, series ? sparkline(series, unit) : h("span", { class: "muted" }, "not measured")); };
    signals.replaceChildren(
      h("p", { id: "data-freshness" }, "Data freshness: ", freshness === undefined ? h("span", { class: "muted" }, "no watermark yet") : `${freshness.toFixed(1)} s`),
      measured.length ? h("table", { id: "signals-table" },
        h("thead", {}, h("tr", {}, ["Stage", "Data watermark", ...SIGNALS.map(([, label]) => label), "Elements in / out"].map((c) => h("th", {}, c)))),
        h("tbody", {}, measured.map((stage) => h("tr", { "data-stage": stage.stageId },
          h("td", {}, stage.stageId), h("td", {}, watermark(stage)),
          ...SIGNALS.map(([name, , unit]) => h("td", { class: `signal ${name}` },
            value(stage, name) === undefined ? h("span", { class: "muted" }, "not measured") : sparkline(signalHistory[`${stage.stageId}/${name}`] || [], unit))),
          h("td", {}, counts(stage)))))) : "",
      sources.length ? h("table", { id: "backlog-table" },
        h("thead", {}, h("tr", {}, ["Source", "Backlog (bytes)", "Backlog (elements)"].map((c) => h("th", {}, c)))),
        h("tbody", {}, sources.map((step) => h("tr", { "data-step": step },
          h("td", {}, stepNames[step] || step), backlogCell(step, "BacklogBytes", " B"), backlogCell(step, "BacklogElements", ""))))) : "");
  }

  // Beam's own metrics among the user's (origin "user"): its lineage of sources and sinks.
  const BEAM_NAMESPACES = new Set(["lineage"]);

  function renderMetrics(all) {
    const user = all.filter((m) => {
      const context = (m.name || {}).context || {};
      return m.name.origin === "user" && !context.tentative && !BEAM_NAMESPACES.has(context.namespace);
    });
    // Metrics name their step by its transform id (ref_AppliedPTransform_...): shown by the name the user gave it.
    const stepNames = Object.fromEntries(((job.pipelineDescription || {}).originalPipelineTransform || []).map((t) => [t.id, t.name]));
    const stepOf = (m) => stepNames[m.name.context.step] || m.name.context.step || "";
    const now = Date.now();
    for (const m of user) {
      const key = `${m.name.context.step || ""}/${m.name.name}`;
      const value = m.scalar !== undefined ? Number(m.scalar) : m.distribution ? Number(m.distribution.count || 0) : m.gauge ? Number(m.gauge.value || 0) : null;
      if (value === null) continue;
      const series = (history[key] ||= []);
      if (!series.length || series[series.length - 1][1] !== value || now - series[series.length - 1][0] > 10000) series.push([now, value]);
    }
    if (!user.length) { metrics.replaceChildren(h("p", { class: "muted" }, "No user metrics.")); return; }
    metrics.replaceChildren(h("table", { id: "metrics-table" }, h("thead", {}, h("tr", {}, ["Step", "Metric", "Kind", "Value", "Over time"].map((c) => h("th", {}, c)))),
      h("tbody", {}, user.map((m) => {
        const key = `${m.name.context.step || ""}/${m.name.name}`;
        const d = m.distribution;
        const value = m.scalar !== undefined ? m.scalar : d ? `count ${d.count}, sum ${d.sum}, min ${d.min}, max ${d.max}` : m.gauge ? m.gauge.value : JSON.stringify(m.set || "");
        return h("tr", {}, h("td", {}, stepOf(m)), h("td", { title: `namespace ${m.name.context.namespace || ""}` }, m.name.name), h("td", {}, m.kind || ""), h("td", {}, String(value)), h("td", {}, sparkline(history[key] || [])));
      }))));
  }

  async function renderLogs() {
    const params = new URLSearchParams({ minimumImportance: importance.value, pageSize: "1000" });
    if (lastTime) params.set("startTime", lastTime);
    const answer = await api(`${base}/messages?${params}`);
    const fresh = (answer.jobMessages || []).filter((m) => !seen.has(m.id));
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    for (const m of fresh) {
      seen.add(m.id);
      logs.append(h("div", { class: m.messageImportance }, `${when(m.time)}  ${m.messageText}`));
      lastTime = m.time;
    }
    if (atBottom) logs.scrollTop = logs.scrollHeight;
    if (!logs.childElementCount) logs.append(h("div", { class: "muted" }, "No messages yet."));
  }

  // The workers that ran the job: those serving it now, and those its stages ran on (executionDetails keeps them
  // with the job after they moved on). A worker now serving another job shows that, not its health or CPU there.
  const ENDED = ["EXECUTION_STATE_SUCCEEDED", "EXECUTION_STATE_FAILED", "EXECUTION_STATE_CANCELLED"];
  const stageWorkers = {}; // stage id -> the names of its workers, once the stage ended (they change no more)
  async function workersOfJob(stages) {
    const serving = (await api(`/beamport/v1/workers?jobId=${encodeURIComponent(jobId)}&all=true`)).workers || [];
    const ran = await Promise.all(stages.map(async (stage) => {
      if (stageWorkers[stage.stageId]) return stageWorkers[stage.stageId];
      const answer = await api(`${base}/stages/${encodeURIComponent(stage.stageId)}/executionDetails`).catch(() => ({}));
      const names = (answer.workers || []).map((w) => w.workerName).filter((name) => name && name !== "unknown");
      if (ENDED.includes(stage.state)) stageWorkers[stage.stageId] = names;
      return names;
    }));
    const ids = new Set([...serving.map((w) => w.workerId), ...ran.flat()]);
    const details = await Promise.all([...ids].map((id) => api(`/beamport/v1/workers/${encodeURIComponent(id)}`)
      .catch(() => serving.find((w) => w.workerId === id) || { workerId: id, state: "GONE", reason: "no longer known to the service" })));
    return details.map((w) => (!w.jobId || w.jobId === jobId ? w
      : { ...w, state: "MOVED_ON", reason: `now on job ${w.jobId}`, health: undefined, cpuTime: [] }));
  }

  async function renderWorkers(stages) {
    const details = await workersOfJob(stages);
    if (!details.length) { workers.replaceChildren(h("p", { class: "muted" }, terminal(job.currentState) ? "No worker ran this job." : "No worker yet.")); return; }
    workers.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["Worker", "State", "Health", "CPU", "Events"].map((c) => h("th", {}, c)))),
      h("tbody", {}, details.map((w) => h("tr", { class: LIVE_WORKER_STATES.includes(w.state) ? null : "gone" },
        h("td", {}, w.workerId), h("td", { class: `state ${w.state}` }, w.state),
        h("td", {}, workerHealth(w)),
        h("td", {}, sparkline((w.cpuTime || []).map((s) => [new Date(s.timestamp).getTime(), s.rate * 100]), "%")),
        h("td", { class: "muted" }, (w.lifecycleEvents || []).filter((e) => e.jobId === jobId).map((e) => e.event.toLowerCase().replaceAll("_", " ")).join(", ")))))));
  }

  let prices; // rates.json, read once: undefined until then, null when there is none
  async function renderResources(all) {
    // What the job used, as Dataflow reports it in getMetrics (origin dataflow/v1b3, no step): TotalVcpuTime in
    // vCPU-seconds, TotalMemoryUsage in MB-seconds. The service keeps them with the job.
    const service = (name) => all.find((m) => m.name.origin === "dataflow/v1b3" && m.name.name === name && !(m.name.context || {}).tentative);
    const vcpu = service("TotalVcpuTime"), memory = service("TotalMemoryUsage");
    if (!vcpu && !memory) {
      resources.replaceChildren(h("p", { class: "muted" }, terminal(job.currentState) ? "No worker reported what it used." : "Nothing measured yet."));
      return;
    }
    if (prices === undefined) prices = await fetch("/console/rates.json").then((r) => (r.ok ? r.json() : null)).catch(() => null);
    const vcpuSeconds = Number((vcpu || {}).scalar || 0), memoryMbSeconds = Number((memory || {}).scalar || 0);
    const vcpuHours = vcpuSeconds / 3600, gbHours = memoryMbSeconds / 1024 / 3600;
    const cost = prices ? vcpuHours * prices.vcpuHour + gbHours * prices.memoryGbHour : null;
    resources.replaceChildren(h("dl", { class: "kv" },
      h("dt", {}, "Total vCPU time"), h("dd", { id: "vcpu-time" }, `${vcpuHours.toFixed(5)} vCPU-hours (${vcpuSeconds.toFixed(1)} vCPU-seconds)`),
      h("dt", {}, "Total memory time"), h("dd", { id: "memory-time" }, `${gbHours.toFixed(5)} GB-hours`),
      h("dt", {}, "On Dataflow (estimate)"), h("dd", { id: "cost" }, cost === null ? "no rates" : `$${cost.toFixed(5)}`),
      h("dt", {}, "Rates"), h("dd", { class: "muted" }, prices ? `${prices.region} batch, $${prices.vcpuHour}/vCPU-hour, $${prices.memoryGbHour}/GB-hour (as of ${prices.asOf}; edit console/static/rates.json)` : "")));
  }

  every(refresh);
}

function sparkline(points, unit = "") {
  if (points.length < 2) return points.length ? `${Number(points[0][1]).toFixed(1)}${unit}` : "";
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const d = points.map((p, i) => `${i ? "L" : "M"}${((p[0] - x0) / Math.max(1, x1 - x0)) * 120},${22 - ((p[1] - y0) / Math.max(1e-9, y1 - y0)) * 20}`).join(" ");
  return h("span", {}, svg("svg", { width: 124, height: 24, role: "img", "aria-label": `from ${y0.toFixed(1)} to ${ys[ys.length - 1].toFixed(1)}${unit}` },
    svg("path", { d, fill: "none", stroke: "#0b57d0", "stroke-width": 1.5 })), ` ${Number(ys[ys.length - 1]).toFixed(1)}${unit}`);
}

// -- workers ------------------------------------------------------------------------------------

// Live workers: running work, waiting for work (IDLE), or unhealthy. The others are gone (LOST, BROKEN, SHUTDOWN).
const LIVE_WORKER_STATES = ["RUNNING", "UNHEALTHY", "IDLE"];

// A worker's health: its last report while it is live; a gone worker's report is history, never "healthy".
function workerHealth(w) {
  const health = w.health || {};
  if (w.state === "BROKEN" || health.vmIsBroken) return `broken: ${health.msg || w.reason || ""}`;
  if (!LIVE_WORKER_STATES.includes(w.state)) return `${w.state.toLowerCase()}: ${w.reason || ""}`;
  if (!w.health) return "";
  return health.vmIsHealthy === false ? `unhealthy: ${health.msg || ""}` : "healthy";
}

function workersPage() {
  const rows = h("tbody");
  const showGone = h("input", { type: "checkbox", id: "show-gone-workers" });
  main.append(h("h1", {}, "Workers"),
    h("div", { class: "filters" }, h("label", {}, showGone, " Also gone workers (lost, broken, shut down)")),
    h("table", { id: "workers" }, h("thead", {}, h("tr", {}, ["Worker", "Job", "State", "Health", "CPU", "Work item", "Last report"].map((c) => h("th", {}, c)))), rows));
  const load = async () => {
    const list = (await api(`/beamport/v1/workers${showGone.checked ? "?all=true" : ""}`)).workers || [];
    rows.replaceChildren(...list.map((w) => h("tr", { class: LIVE_WORKER_STATES.includes(w.state) ? null : "gone" }, h("td", {}, w.workerId),
      h("td", {}, w.jobId ? h("a", { href: `#/jobs/${encodeURIComponent(w.projectId)}/${encodeURIComponent(w.location)}/${encodeURIComponent(w.jobId)}` }, w.jobId) : h("span", { class: "muted" }, "none yet")),
      h("td", { class: `state ${w.state}` }, w.state), h("td", {}, workerHealth(w)),
      h("td", {}, w.cpu ? `${(w.cpu.rate * 100).toFixed(1)}%` : ""), h("td", {}, w.workItemId || ""), h("td", {}, when(w.lastSeenTime)))));
    if (!list.length) rows.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, showGone.checked ? "No workers." : "No live workers.")));
  };
  showGone.addEventListener("change", () => every(load));
  every(load);
}

// -- templates ----------------------------------------------------------------------------------

const BUILTINS = ["Word_Count", "Text_Transform_Python_UDF", "Bulk_Compress_Files", "Bulk_Decompress_Files", "CSV_to_JSONL",
  "Cloud_PubSub_to_GCS_Text", "PubSub_to_BigQuery", "PubSub_Subscription_to_BigQuery", "GCS_Text_to_BigQuery"];

function templatesPage() {
  const path = h("input", { id: "template-path", size: 60, placeholder: "/path/to/template or builtin://Word_Count", spellcheck: "false" });
  const pick = h("select", { "aria-label": "Built-in template" }, h("option", { value: "" }, "built-in…"), BUILTINS.map((b) => h("option", { value: `builtin://${b}` }, b)));
  const formArea = h("div");
  pick.addEventListener("change", () => { if (pick.value) { path.value = pick.value; load(); } });
  main.append(h("h1", {}, "Templates"), h("div", { class: "filters" }, h("label", {}, "Template ", path), pick, h("button", { onclick: load }, "Open")), formArea);

  async function load() {
    formArea.replaceChildren();
    let answer;
    try { answer = await api(`/v1b3/projects/${project()}/locations/${REGION}/templates:get?gcsPath=${encodeURIComponent(path.value.trim())}`); }
    catch (error) { formArea.append(h("p", { class: "error" }, error.message)); return; }
    const metadata = answer.metadata || {};
    const fields = {};
    const jobName = h("input", { name: "jobName", required: "", pattern: "[a-z]([-a-z0-9]*[a-z0-9])?", value: (metadata.name || "job").toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "") });
    const errors = h("p", { class: "error", id: "launch-error" });
    const form = h("form", { class: "launch", id: "launch-form" }, h("label", { for: "f-jobName" }, "Job name"), Object.assign(jobName, { id: "f-jobName" }));
    for (const p of metadata.parameters || []) {
      let input;
      if (p.paramType === "ENUM" && (p.enumOptions || []).length) input = h("select", {}, (p.isOptional ? [h("option", { value: "" }, "")] : []).concat(p.enumOptions.map((o) => h("option", { value: o.value }, o.label || o.value))));
      else if (p.paramType === "BOOLEAN") input = h("select", {}, h("option", { value: "" }, ""), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
      else input = h("input", { type: p.paramType === "NUMBER" ? "number" : "text", size: 60, spellcheck: "false", placeholder: p.defaultValue || "" });
      input.id = `f-${p.name}`;
      input.name = p.name;
      if (!p.isOptional) input.required = true;
      fields[p.name] = { input, spec: p };
      form.append(...present(h("label", { for: input.id }, p.label || p.name, p.isOptional ? "" : " *"), input, p.helpText && h("div", { class: "help" }, p.helpText)));
    }
    form.append(h("span"), h("button", { type: "submit" }, "Run job"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errors.textContent = "";
      const parameters = {};
      for (const [name, { input, spec }] of Object.entries(fields)) {
        const value = input.value.trim();
        if (!value) { if (!spec.isOptional) { errors.textContent = `${spec.label || name} is required.`; input.focus(); return; } continue; }
        const bad = (spec.regexes || []).find((r) => !new RegExp(`^(?:${r})$`).test(value));
        if (bad) { errors.textContent = `${spec.label || name} must match ${bad}.`; input.focus(); return; }
        parameters[name] = value;
      }
      try {
        const launched = await api(`/v1b3/projects/${project()}/locations/${REGION}/templates:launch?gcsPath=${encodeURIComponent(path.value.trim())}`,
          { method: "POST", body: JSON.stringify({ jobName: jobName.value.trim(), parameters }) });
        location.hash = `#/jobs/${project()}/${launched.job.location}/${launched.job.id}`;
      } catch (error) { errors.textContent = error.message; }
    });
    formArea.append(...present(h("h2", {}, metadata.name || path.value), metadata.description && h("p", { class: "muted" }, metadata.description), form, errors));
  }
}

// -- SQL ----------------------------------------------------------------------------------------

function sqlPage() {
  const query = h("textarea", { id: "sql-query", "aria-label": "GoogleSQL query", spellcheck: "false" }, "SELECT 1");
  const status = h("p", { id: "sql-status", "aria-live": "polite" });
  const jobName = h("input", { placeholder: "job name", "aria-label": "Job name" });
  const output = h("input", { placeholder: "/path/to/output prefix", size: 50, "aria-label": "Output prefix" });
  const tables = h("div");
  main.append(h("h1", {}, "SQL"), query, status, h("div", { class: "filters" }, jobName, output, h("button", { onclick: run }, "Run as a job")), h("h2", {}, "Tables"), tables);
  let pending = null;
  query.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(validate, 300); });
  validate();
  api(`/beamport/v1/projects/${project()}/sqlTables`).then((answer) => tables.replaceChildren(
    (answer.tables || []).length ? h("table", {}, (answer.tables || []).map((t) => h("tr", {}, h("td", {}, t.name), h("td", {}, t.format), h("td", {}, t.path), h("td", { class: "muted" }, t.schema.map((c) => `${c.name} ${c.type}`).join(", "))))) : h("p", { class: "muted" }, "No tables (beamport sql tables add)."),
  )).catch((error) => tables.replaceChildren(h("p", { class: "error" }, error.message)));

  async function validate() {
    if (!query.value.trim()) { status.textContent = ""; return; }
    try {
      const answer = await api(`/v1b3/projects/${project()}/locations/${REGION}/sql:validate?query=${encodeURIComponent(query.value)}`);
      status.className = answer.errorMessage ? "error" : "muted";
      status.textContent = answer.errorMessage || `Valid.${((answer.queryInfo || {}).queryProperty || []).length ? " Reads an unbounded source." : ""}`;
    } catch (error) { status.className = "error"; status.textContent = error.message; }
  }

  async function run() {
    try {
      const job = await api(`/beamport/v1/projects/${project()}/locations/${REGION}/sql:query`,
        { method: "POST", body: JSON.stringify({ query: query.value, jobName: jobName.value.trim(), output: output.value.trim() }) });
      location.hash = `#/jobs/${project()}/${job.location}/${job.id}`;
    } catch (error) { toast(error.message); }
  }
}

// -- signing in ----------------------------------------------------------------------------------

// Not signed in (no session, or it ended: expired, or the server restarted): the sign-in view instead of
// the console, and no API call until a session exists.
function signedOut(ended = true) {
  clearInterval(timer);
  if (session.signedOut) return;
  Object.assign(session, { signedOut: true, principal: null, csrfToken: null });
  document.body.classList.add("signed-out");
  renderWho();
  signInPage(ended);
}

function signInPage(ended) {
  const status = h("p", { class: "muted", id: "signin-status", "aria-live": "polite" });
  const command = `GOOGLE_APPLICATION_CREDENTIALS=admin-key.json \\\n  beamport console link --endpoint ${location.origin}`;
  main.replaceChildren(h("section", { class: "signin", id: "signin" },
    h("h1", {}, "Sign in to Beamport"),
    ended ? h("p", { class: "error" }, "Your console session has ended: it expired, or the server restarted.")
      : h("p", {}, "This server asks who you are before it shows or changes anything."),
    h("ol", {},
      h("li", {}, "Open the one-time sign-in link that ", h("code", {}, "beamport serve"), " printed when it started, on the line ",
        h("code", {}, "Console (one-time sign-in link): …/console/signin?code=…"), ". A link works once."),
      h("li", {}, "Or get a new link with a service-account key file (the server's admin key is ", h("code", {}, "admin-key.json"),
        " in its data directory), and open it:", h("pre", {}, command))),
    h("p", {}, "Opened the link in another tab? ", h("button", { id: "signin-continue", onclick: () => resume(true) }, "Continue")),
    status));
  main.focus();
}

// After signing in elsewhere (another tab shares the cookie): back to the console. `asked`: from the button.
async function resume(asked = false) {
  let signedIn = false;
  try { signedIn = await loadSession(); } catch (error) { signedIn = false; }
  if (!signedIn) {
    const status = document.getElementById("signin-status");
    if (status && asked) status.textContent = "Still not signed in: open a sign-in link first.";
    return;
  }
  document.body.classList.remove("signed-out");
  await loadProjects().catch((error) => console.warn(error));
  route();
}
window.addEventListener("focus", () => { if (session.signedOut) resume(); });

async function start() {
  let signedIn;
  try { signedIn = await loadSession(); }
  catch (error) {
    main.replaceChildren(h("h1", {}, "Beamport"), h("p", { class: "error" }, `The server did not answer as expected: ${error.message}`),
      h("button", { onclick: start }, "Try again"));
    return;
  }
  if (!signedIn) { signedOut(false); return; }
  await loadProjects().catch((error) => console.warn(error));
  route();
}

start();
