// The Sluice operator page: lanes, a destination's blocked keys and jobs, one job's attempts,
// and the operator actions; the catalog view is in catalog.js and destination.js. Plain
// JavaScript, no framework, no build step.
//
// Safety rules of this file: every value from the API reaches the page through `textContent`,
// text nodes or attributes of elements made here, never parsed as HTML; the admin token lives
// in sessionStorage (this tab only) and travels in the Authorization header, never a cookie.
'use strict';

const POLL_MS = 3000;
const SPARK_EVERY = 5; // polls between refreshes of the hour-long sparklines
const PAGE_SIZE = 20;
const TOKEN_KEY = 'sluice.admin.token';
const READ_ONLY = 'This token is read-only: actions need an operator token.';

const $ = (id) => document.getElementById(id);
const seg = encodeURIComponent;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  readOnly: null, // null: not known yet
  lanes: [],
  sparks: new Map(), // "workspace/destination" -> per-minute stats
  lane: null, // { workspace, destination } shown below the table
  jobState: 'failed',
  cursors: [''], // the cursor of each page seen; the current page is the last
  nextCursor: null,
  job: null, // { workspace, destination, event_id }
  jobDetail: null,
  polls: 0,
  timer: null,
  busy: false,
  again: false,
};

// ---- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  /** `field`: the field a refused catalog item names (`config.url`), if any. */
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: 'application/json' };
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `host unreachable (${e.message})`);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const message = data && typeof data.error === 'string' ? data.error : `HTTP ${resp.status}`;
    if (resp.status === 401) forget(message);
    if (resp.status === 403 && method !== 'GET') setReadOnly(true);
    const field = data && typeof data.field === 'string' ? data.field : null;
    throw new ApiError(resp.status, message, field);
  }
  return data;
}

const laneKey = (l) => `${l.workspace}/${l.destination}`;
const lanePath = (l) => `/api/v1/destinations/${seg(l.workspace)}/${seg(l.destination)}`;

// ---- DOM helpers ---------------------------------------------------------------------------

/** An element with properties and children; strings become text nodes, never markup. */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'onclick') node.addEventListener('click', v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const td = (text, cls, title) => el('td', { class: cls, title }, text ?? '—');

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.round(seconds);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function setStatus(text, error) {
  const s = $('status');
  s.textContent = text;
  s.className = error ? 'error' : 'muted';
}

function show(id, visible) {
  $(id).hidden = !visible;
}

/** A polyline chart of delivered (green) and failed or aborted (red) jobs per minute. */
function sparkline(minutes) {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 120;
  const H = 24;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', W);
  svg.setAttribute('height', H);
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('role', 'img');
  if (!minutes || minutes.length === 0) return svg;
  const failed = (m) => m.failed + m.aborted;
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.delivered, failed(m))));
  const step = (W - 2) / Math.max(1, minutes.length - 1);
  const points = (f) =>
    minutes
      .map((m, i) => `${(1 + i * step).toFixed(1)},${(H - 1 - (f(m) / max) * (H - 2)).toFixed(1)}`)
      .join(' ');
  const sum = (f) => minutes.reduce((a, m) => a + f(m), 0);
  const label = `last hour: ${sum((m) => m.delivered)} delivered, ${sum(failed)} failed or aborted`;
  svg.setAttribute('aria-label', label);
  const title = document.createElementNS(NS, 'title');
  title.textContent = label;
  svg.append(title);
  for (const [cls, f] of [['delivered', (m) => m.delivered], ['failed', failed]]) {
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('class', cls);
    line.setAttribute('points', points(f));
    svg.append(line);
  }
  return svg;
}

// ---- Lanes -------------------------------------------------------------------------------

async function loadLanes(withSparks) {
  const data = await api('GET', '/api/v1/destinations');
  const lanes = data.destinations || [];
  const stale = lanes.filter((l) => withSparks || !state.sparks.has(laneKey(l)));
  await Promise.all(stale.map(loadSpark));
  state.lanes = lanes;
  renderLanes();
}

async function loadSpark(lane) {
  try {
    const s = await api('GET', `${lanePath(lane)}/stats?minutes=60`);
    state.sparks.set(laneKey(lane), s.minutes || []);
  } catch (e) {
    if (e.status === 401) throw e;
    // A lane that vanished meanwhile keeps its old line until the next poll.
  }
}

function renderLanes() {
  const body = $('lanes').tBodies[0];
  const rows = state.lanes.map((l) => {
    const depth = l.pending + l.executing + l.failed;
    const selected = state.lane && laneKey(state.lane) === laneKey(l);
    const open = el('button', {
      type: 'button', class: 'link', 'data-lane': laneKey(l), onclick: () => selectLane(l),
    }, l.destination);
    const breaker = l.breaker_open ? 'open' : 'closed';
    const limit = l.concurrency_limit === null ? '' : ` · limit ${l.concurrency_limit}`;
    const lease = l.leased
      ? `${l.owner_host ?? '?'}:${l.owner_pid ?? '?'} until ${fmtTime(l.lease_until)}`
      : 'none';
    const paused = l.paused ? `paused by ${l.paused_by ?? '?'}` : 'no';
    const plugin = el('td', {}, l.plugin ?? '—');
    if (l.plugin_error) plugin.append(el('div', { class: 'bad' }, l.plugin_error));
    return el('tr', { class: selected ? 'selected' : null, 'data-lane': laneKey(l) },
      td(l.workspace),
      el('td', {}, open),
      // Past 10,000 unread events a lane's depth is a lower bound (lane_backlog counts no further).
      td(l.depth_capped ? `${depth}+` : depth, 'num',
        `pending ${l.pending}, executing ${l.executing}, failed ${l.failed}, ` +
        `blocked keys ${l.blocked_keys}, ids behind ${l.ids_behind}`),
      td(fmtAge(l.oldest_age_seconds), 'num'),
      td(l.rate_per_minute.toFixed(1), 'num'),
      td(`${(l.failure_rate * 100).toFixed(0)}%`, l.failure_rate > 0 ? 'num bad' : 'num',
        `last 5 minutes: ${l.failed_5m} failed, ${l.aborted_5m} aborted, ` +
        `${l.throttled_5m} throttled, ${l.delivered_5m} delivered, ${l.filtered_5m} filtered`),
      el('td', {}, sparkline(state.sparks.get(laneKey(l)))),
      td(breaker + limit, l.breaker_open ? 'bad' : null),
      td(lease),
      td(paused, l.paused ? 'warn' : null),
      plugin);
  });
  body.replaceChildren(...rows);
  show('lanes-empty', rows.length === 0);
  updateButtons();
}

function currentLane() {
  return state.lane && state.lanes.find((l) => laneKey(l) === laneKey(state.lane));
}

function selectLane(l) {
  state.lane = { workspace: l.workspace, destination: l.destination };
  state.cursors = [''];
  state.nextCursor = null;
  closeJob();
  $('lane-name').textContent = laneKey(l);
  $('lane-result').textContent = '';
  show('lane', true);
  renderLanes();
  loadLane().catch(reportError);
}

function closeLane() {
  state.lane = null;
  closeJob();
  show('lane', false);
  renderLanes();
}

// ---- One destination: blocked keys and a page of jobs ---------------------------------------

async function loadLane() {
  const lane = state.lane;
  if (!lane) return;
  const query = new URLSearchParams({
    workspace: lane.workspace, destination: lane.destination, limit: String(PAGE_SIZE),
  });
  if (state.jobState) query.set('state', state.jobState);
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor) query.set('cursor', cursor);
  const [blocked, jobs] = await Promise.all([
    api('GET', `${lanePath(lane)}/blocked?limit=100`),
    api('GET', `/api/v1/jobs?${query}`),
  ]);
  if (state.lane !== lane) return; // another lane was chosen meanwhile
  renderBlocked(blocked.keys || []);
  state.nextCursor = jobs.next_cursor || null;
  renderJobs(jobs.jobs || []);
}

function jobLink(lane, eventId) {
  return el('button', {
    type: 'button', class: 'link', 'data-event-id': eventId,
    onclick: () => selectJob(lane, eventId),
  }, `#${eventId}`);
}

function renderBlocked(keys) {
  const lane = state.lane;
  const rows = keys.map((k) => el('tr', { 'data-key': k.order_key },
    td(k.order_key),
    td(k.waiting, 'num'),
    td(fmtTime(k.blocked_since)),
    td(fmtTime(k.next_attempt_at)),
    el('td', {}, k.head_event_id == null ? '—' : jobLink(lane, k.head_event_id),
      k.head_state ? ` (${k.head_state})` : ''),
    td(k.head_attempt, 'num'),
    td(k.head_error_code),
    td(k.head_error, 'truncate', k.head_error)));
  $('blocked').tBodies[0].replaceChildren(...rows);
  show('blocked-empty', rows.length === 0);
}

function renderJobs(jobs) {
  const lane = state.lane;
  const rows = jobs.map((j) => el('tr', {
    'data-event-id': j.event_id,
    class: state.job && state.job.event_id === j.event_id ? 'selected' : null,
  },
  el('td', { class: 'num' }, jobLink(lane, j.event_id)),
  td(j.user),
  td(j.state, j.state === 'failed' || j.state === 'aborted' ? 'bad' : null),
  td(j.attempt, 'num'),
  td(j.error_code),
  td(j.error, 'truncate', j.error),
  td(fmtTime(j.last_attempt_at)),
  td(fmtTime(j.next_attempt_at))));
  $('jobs').tBodies[0].replaceChildren(...rows);
  show('jobs-empty', rows.length === 0);
  $('jobs-next').disabled = !state.nextCursor;
  $('jobs-first').disabled = state.cursors.length === 1;
  $('jobs-page').textContent = `page ${state.cursors.length}`;
}

// ---- One job: attempts and event -----------------------------------------------------------

function selectJob(lane, eventId) {
  state.job = { workspace: lane.workspace, destination: lane.destination, event_id: eventId };
  state.jobDetail = null;
  $('job-name').textContent = `#${eventId} of ${laneKey(lane)}`;
  $('job-result').textContent = '';
  $('job').removeAttribute('data-state');
  show('job', true);
  for (const row of $('jobs').tBodies[0].rows) {
    row.classList.toggle('selected', row.dataset.eventId === String(eventId));
  }
  loadJob()
    .then(() => $('job').scrollIntoView({ block: 'nearest' }))
    .catch(reportError);
}

function closeJob() {
  state.job = null;
  state.jobDetail = null;
  show('job', false);
  updateButtons();
}

async function loadJob() {
  const job = state.job;
  if (!job) return;
  const path = `/api/v1/jobs/${seg(job.workspace)}/${seg(job.destination)}/${job.event_id}`;
  const detail = await api('GET', path);
  if (state.job !== job) return;
  state.jobDetail = detail;
  renderJob(detail);
}

function renderJob(d) {
  $('job').dataset.state = d.state;
  const facts = [
    ['state', d.state], ['attempt', d.attempt], ['user', d.user], ['source', d.source],
    ['message id', d.message_id], ['order key', d.order_key],
    ['received', fmtTime(d.received_at)], ['first attempt', fmtTime(d.first_attempt_at)],
    ['last attempt', fmtTime(d.last_attempt_at)], ['next attempt', fmtTime(d.next_attempt_at)],
    ['last error code', d.error_code],
  ];
  $('job-facts').replaceChildren(...facts.flatMap(([k, v]) => [
    el('dt', {}, k), el('dd', { 'data-fact': k }, v ?? '—'),
  ]));
  const rows = (d.attempts || []).map((a) => el('tr', { 'data-outcome': a.outcome },
    td(a.attempt, 'num'),
    td(a.implied ? 'not recorded' : fmtTime(a.at), null, a.at),
    td(a.outcome, a.outcome === 'delivered' ? 'good' : 'bad'),
    td(a.error_code),
    el('td', {}, a.error_text ? el('pre', { class: 'error-body' }, a.error_text) : '—')));
  $('attempts').tBodies[0].replaceChildren(...rows);
  $('job-event').textContent = JSON.stringify(d.event, null, 2);
  updateButtons();
}

// ---- Actions ---------------------------------------------------------------------------------

function setReadOnly(readOnly) {
  state.readOnly = readOnly;
  const scope = $('scope');
  scope.hidden = !readOnly;
  scope.textContent = readOnly ? 'read-only token: actions disabled' : '';
  scope.className = 'warn';
  updateButtons();
  updateCatalogForms();
}

/** Enables each action where it applies; every disabled button says why in its tooltip. */
function updateButtons() {
  const set = (id, applies, why) => {
    const b = $(id);
    b.disabled = state.readOnly === true || !applies;
    b.title = state.readOnly === true ? READ_ONLY : applies ? '' : why;
  };
  const s = state.jobDetail && state.jobDetail.state;
  set('job-retry', s === 'failed', 'Only a failed job can be retried.');
  set('job-abort', s === 'failed' || s === 'pending', 'Only a pending or failed job can be aborted.');
  set('job-replay', s === 'aborted', 'Only an aborted job can be replayed.');
  const lane = currentLane();
  set('lane-retry', !lane || lane.failed > 0, 'No failed jobs.');
  set('lane-pause', !lane || !lane.paused, 'Already paused.');
  set('lane-resume', !lane || lane.paused, 'Not paused.');
}

/** Asks, calls the API, shows what it did in `resultId`, refreshes. */
async function act(resultId, question, path, body, done) {
  if (!window.confirm(question)) return;
  const out = $(resultId);
  out.classList.remove('error');
  out.textContent = 'working…';
  try {
    out.textContent = done(await api('POST', path, body));
  } catch (e) {
    out.classList.add('error');
    out.textContent = e.status === 403 ? `${e.message}` : `failed: ${e.message}`;
  }
  refresh();
}

const countJobs = (verb) => (r) => `${verb}: ${r.jobs} ${r.jobs === 1 ? 'job' : 'jobs'}`;

function jobAction(kind, verb, question) {
  const j = state.job;
  if (!j) return;
  const body = { workspace: j.workspace, destination: j.destination, event_ids: [j.event_id] };
  act('job-result', question(j), `/api/v1/jobs/${kind}`, body, countJobs(verb));
}

function laneAction(kind, question, body, done) {
  const l = state.lane;
  if (!l) return;
  act('lane-result', question(laneKey(l)), kind.startsWith('/') ? kind : `${lanePath(l)}/${kind}`,
    body(l), done);
}

function wire() {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    login($('token').value.trim());
  });
  $('logout').addEventListener('click', () => forget(''));
  $('live').addEventListener('change', () => ($('live').checked ? tick() : stopPolling()));
  $('lane-close').addEventListener('click', closeLane);
  $('job-close').addEventListener('click', closeJob);
  $('job-state').addEventListener('change', () => {
    state.jobState = $('job-state').value;
    state.cursors = [''];
    loadLane().catch(reportError);
  });
  $('jobs-next').addEventListener('click', () => {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    loadLane().catch(reportError);
  });
  $('jobs-first').addEventListener('click', () => {
    state.cursors = [''];
    loadLane().catch(reportError);
  });
  $('job-retry').addEventListener('click', () => jobAction('retry', 'Retried',
    (j) => `Retry job #${j.event_id} of ${j.workspace}/${j.destination} now?`));
  $('job-abort').addEventListener('click', () => jobAction('abort', 'Aborted',
    (j) => `Abort job #${j.event_id} of ${j.workspace}/${j.destination}? ` +
      'It and the jobs of its key parked behind it will not be delivered (unless replayed).'));
  $('job-replay').addEventListener('click', () => jobAction('replay', 'Replayed',
    (j) => `Replay aborted job #${j.event_id} of ${j.workspace}/${j.destination}? ` +
      'It rejoins its key\'s order.'));
  $('lane-retry').addEventListener('click', () => laneAction('/api/v1/jobs/retry',
    (k) => `Retry every failed job of ${k} now?`,
    (l) => ({ workspace: l.workspace, destination: l.destination, all: true }), countJobs('Retried')));
  $('lane-pause').addEventListener('click', () => laneAction('pause',
    (k) => `Pause ${k}? Delivery stops; ingest goes on.`, () => ({}), () => 'Paused.'));
  $('lane-resume').addEventListener('click', () => laneAction('resume',
    (k) => `Resume ${k}?`, () => ({}), () => 'Resumed.'));
  document.addEventListener('visibilitychange', () => (document.hidden ? stopPolling() : tick()));
  wireCatalog();
}

// ---- Token, polling ----------------------------------------------------------------------------

async function login(token) {
  if (!token) return;
  state.token = token;
  $('login-error').textContent = '';
  try {
    await api('GET', '/api/v1/destinations');
  } catch (e) {
    state.token = null;
    $('login-error').textContent = e.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  start();
}

function forget(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.readOnly = null;
  state.lane = null;
  stopPolling();
  closeJob();
  const views = ['views', 'catalog-section', 'source-form', 'destination-form'];
  for (const id of ['lanes-section', 'lane', 'logout', 'live-label', 'scope', ...views]) {
    show(id, false);
  }
  $('catalog-result').textContent = '';
  showView('lanes');
  show('login', true);
  $('login-error').textContent = message;
  setStatus('');
}

function start() {
  show('login', false);
  for (const id of ['lanes-section', 'logout', 'live-label', 'views', 'catalog-section']) {
    show(id, true);
  }
  probeScope();
  tick();
}

// A read token sees the actions disabled; the host remains the judge (403 on a POST).
async function probeScope() {
  try {
    const me = await api('GET', '/api/v1/whoami');
    setReadOnly(me.scope !== 'operator');
  } catch (e) {
    reportError(e);
  }
}

function reportError(e) {
  if (e.status !== 401) setStatus(`error: ${e.message}`, true);
}

async function refresh() {
  if (!state.token) return;
  if (state.busy) {
    state.again = true;
    return;
  }
  state.busy = true;
  try {
    await loadLanes(state.polls % SPARK_EVERY === 0);
    state.polls += 1;
    await Promise.all([loadLane(), loadJob()]);
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    reportError(e);
  } finally {
    state.busy = false;
  }
  if (state.again) {
    state.again = false;
    await refresh();
  }
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

/** Refreshes now, then every POLL_MS while the tab is visible and "live" is ticked. */
async function tick() {
  stopPolling();
  if (!state.token) return;
  await refresh();
  stopPolling();
  if (state.token && !document.hidden && $('live').checked) {
    state.timer = setTimeout(tick, POLL_MS);
  }
}

wire();
if (state.token) start();
