#!/usr/bin/env node
// Records what a browser SDK sends: serves page.html on one origin, a stand-in for Sluice's
// ingest on another, runs Debian's headless Chromium on the page, and prints one JSON line per
// request the stand-in saw (and per report from the page) to stdout. No dependencies beyond
// Node and /usr/bin/chromium; run `npm ci` in this directory first.
//
//   node capture.mjs --sdk rudderstack|segment [--config ok|unknown|disabled|404|500]
//        [--fail 429|500|503] [--fail-count N] [--retry-after S] [--cors echo|star|none] [--no-expose]
//        [--beacon] [--batch] [--early] [--loglevel WARN] [--wait MS] [--timeout MS] [--netlog FILE]
//
// --fail answers the first N event posts with that status (429 with Retry-After).
// --cors echo: echo Origin + Allow-Credentials; star: `*` without credentials; none: no CORS.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf('--' + name);
  if (i < 0) return def;
  const v = args[i + 1];
  return v === undefined || v.startsWith('--') ? true : v;
};
const SDK = opt('sdk', 'rudderstack');
const CONFIG = opt('config', 'ok');
const FAIL = Number(opt('fail', 0));
const FAIL_COUNT = Number(opt('fail-count', 2));
const RETRY_AFTER = opt('retry-after', '2');
const CORS = opt('cors', 'echo');
// Without Access-Control-Expose-Headers a cross-origin page cannot read Retry-After.
const EXPOSE = opt('no-expose', false) ? null : 'Retry-After';
const WK = opt('wk', 'wk-browser');
const TIMEOUT = Number(opt('timeout', 30000));
const t0 = Date.now();

const out = rec => process.stdout.write(JSON.stringify({ ms: Date.now() - t0, ...rec }) + '\n');

function readBody(req) {
  return new Promise(resolve => {
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

// The settings answers (see docs/sources.md).
function rudderstackConfig() {
  return {
    isHosted: false,
    source: {
      id: 'src-' + WK,
      name: 'browser',
      writeKey: WK,
      workspaceId: 'sluice',
      enabled: CONFIG !== 'disabled',
      config: {},
      destinations: [],
    },
  };
}
function segmentSettings(apiHost) {
  return {
    integrations: { 'Segment.io': { apiKey: WK, apiHost, protocol: 'http' } },
    plan: {},
    metrics: { sampleRate: 0 },
    remotePlugins: [],
  };
}

let eventPosts = 0;
let done;
const finished = new Promise(r => (done = r));

const ingest = http.createServer(async (req, res) => {
  const body = await readBody(req);
  const url = new URL(req.url, 'http://x');
  out({ at: 'ingest', method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, body: tryJson(body) });
  const origin = req.headers.origin;
  const cors = {};
  if (CORS === 'echo' && origin) {
    cors['Access-Control-Allow-Origin'] = origin;
    cors['Access-Control-Allow-Credentials'] = 'true';
    cors['Vary'] = 'Origin';
  } else if (CORS === 'star') {
    cors['Access-Control-Allow-Origin'] = '*';
  }
  if (CORS !== 'none' && EXPOSE) cors['Access-Control-Expose-Headers'] = EXPOSE;
  if (req.method === 'OPTIONS') {
    if (CORS !== 'none') {
      cors['Access-Control-Allow-Methods'] = 'GET, HEAD, POST, OPTIONS';
      cors['Access-Control-Allow-Headers'] = req.headers['access-control-request-headers'] || '';
      cors['Access-Control-Max-Age'] = '0';
    }
    res.writeHead(204, cors).end();
    return;
  }
  const json = (status, obj, extra = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...cors, ...extra }).end(typeof obj === 'string' ? obj : JSON.stringify(obj));
  };
  if (url.pathname.replace(/\/+$/, '').endsWith('/sourceConfig')) {
    if (CONFIG === 'unknown' || CONFIG === '404') return json(404, CONFIG === '404' ? 'Not Found' : { message: 'Invalid write key' });
    if (CONFIG === '500') return json(500, {});
    return json(200, rudderstackConfig());
  }
  const m = url.pathname.match(/^\/v1\/projects\/([^/]+)\/settings$/);
  if (m) {
    if (CONFIG === 'unknown' || CONFIG === '404') return json(404, CONFIG === '404' ? 'Not Found' : { errorMessage: 'Project not found' });
    if (CONFIG === '500') return json(500, {});
    return json(200, segmentSettings(req.headers.host + '/v1'));
  }
  if (req.method === 'POST') {
    eventPosts += 1;
    if (FAIL && eventPosts <= FAIL_COUNT) {
      return json(FAIL, { error: 'test failure' }, FAIL === 429 ? { 'Retry-After': String(RETRY_AFTER) } : {});
    }
    return json(200, {});
  }
  json(404, {});
});

const pageServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/report') {
    const rec = tryJson(await readBody(req));
    out({ at: 'page', ...rec });
    res.writeHead(204).end();
    if (rec && (rec.kind === 'done' || (rec.kind === 'ready' && rec.loaded === false && opt('stop-unloaded', true) === true))) {
      setTimeout(done, rec.kind === 'done' ? 500 : 3000);
    }
    return;
  }
  const files = {
    '/page.html': 'page.html',
    '/node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js': null,
    '/node_modules/@segment/analytics-next/dist/umd/index.js': null,
  };
  if (!(url.pathname in files)) {
    out({ at: 'pageserver', method: req.method, path: url.pathname, note: 'not served' });
    res.writeHead(404).end();
    return;
  }
  const file = path.join(HERE, files[url.pathname] || url.pathname);
  res.writeHead(200, { 'Content-Type': file.endsWith('.html') ? 'text/html' : 'text/javascript', 'Cache-Control': 'no-store' });
  fs.createReadStream(file).pipe(res);
});

function tryJson(s) {
  if (!s) return s;
  try { return JSON.parse(s); } catch { return s; }
}
const listen = srv => new Promise(r => srv.listen(0, '127.0.0.1', () => r(srv.address().port)));

const apiPort = await listen(ingest);
const pagePort = await listen(pageServer);
const api = `http://127.0.0.1:${apiPort}`;
const q = new URLSearchParams({ sdk: SDK, api, wk: WK, step: '1' });
if (opt('beacon', false)) q.set('beacon', '1');
if (opt('batch', false)) q.set('batch', '1');
if (opt('loglevel', false)) q.set('loglevel', opt('loglevel'));
if (opt('wait', false)) q.set('wait', opt('wait'));
if (opt('early', false)) q.set('early', '1');
// "localhost" for the page and 127.0.0.1 for ingest: two origins (and two sites).
const pageUrl = `http://localhost:${pagePort}/page.html?${q}`;
out({ at: 'start', sdk: SDK, pageUrl, api, config: CONFIG, fail: FAIL, cors: CORS });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-chromium-'));
const flags = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', `--user-data-dir=${profile}`,
];
if (opt('netlog', false)) flags.push(`--log-net-log=${opt('netlog')}`);
const chromium = spawn('/usr/bin/chromium', [...flags, pageUrl], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
let stderr = '';
chromium.stderr.on('data', d => (stderr += d));

const timer = setTimeout(() => { out({ at: 'timeout' }); done(); }, TIMEOUT);
await finished;
clearTimeout(timer);
try { process.kill(-chromium.pid, 'SIGTERM'); } catch {}
await new Promise(r => setTimeout(r, 500));
if (opt('stderr', false)) out({ at: 'chromium-stderr', text: stderr.slice(-4000) });
fs.rmSync(profile, { recursive: true, force: true });
ingest.close();
pageServer.close();
process.exit(0);
