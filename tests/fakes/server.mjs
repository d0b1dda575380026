// server.mjs — the scaffolding the fake provider servers share (anthropic.mjs, gemini.mjs): a
// loopback HTTP server on a free port that records every request, hands each one the next queued
// behaviour (or the default), and offers the same test-facing API as tests/fakes/openai.mjs:
// requests, next(...), setDefault(), reset(), waitForRequests(n), close().
//
//   const srv = await startRecordingServer({ handle, default: {...} });
//   // handle(req, res, rec, behaviour) answers; rec is the request record (see below)
//
// A request record: {receivedAt (performance.now() once the body had arrived), method, path,
// headers, raw, body (parsed JSON; null when empty, undefined when not JSON), behaviour,
// responseStatus, responseBody (JSON object sent), responseText, responseUsage, sentEvents,
// finished (whole response written), clientClosedEarly, closed (a promise, resolves on close)}.
import crypto from 'node:crypto';
import http from 'node:http';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function startRecordingServer({ handle, default: initialDefault = {} }) {
  const queue = [];
  let defaultBehaviour = { ...initialDefault };
  const requests = [];
  const waiters = [];
  const sockets = new Set();

  function notify() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (requests.length >= waiters[i].n) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
    }
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = undefined; // not JSON
      }
      const rec = {
        receivedAt: performance.now(),
        method: req.method,
        path: req.url,
        headers: { ...req.headers },
        raw,
        body,
        behaviour: null,
        responseStatus: null,
        responseBody: null,
        responseText: null,
        responseUsage: null,
        sentEvents: 0,
        finished: false,
        clientClosedEarly: false,
      };
      let closedResolve;
      rec.closed = new Promise((r) => (closedResolve = r));
      res.on('close', () => {
        if (!rec.finished) rec.clientClosedEarly = true;
        closedResolve(rec);
      });
      requests.push(rec);
      notify();
      const behaviour = queue.length ? queue.shift() : defaultBehaviour;
      rec.behaviour = behaviour;
      Promise.resolve()
        .then(() => handle(req, res, rec, behaviour))
        .catch((err) => {
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(err && err.stack));
        });
    });
  });
  server.keepAliveTimeout = 5000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = server.address().port;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    next(...behaviours) {
      queue.push(...behaviours);
      return this;
    },
    setDefault(behaviour) {
      defaultBehaviour = { ...(behaviour || {}) };
      return this;
    },
    reset() {
      requests.length = 0;
      queue.length = 0;
      defaultBehaviour = { ...initialDefault };
      return this;
    },
    waitForRequests(n) {
      if (requests.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

/** Writes a JSON answer with Content-Length and records it. */
export function sendJSON(res, rec, status, obj, headers = {}) {
  const payload = JSON.stringify(obj);
  rec.responseStatus = status;
  rec.responseBody = obj;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload, () => (rec.finished = true));
}

/** Writes status/body verbatim (object → JSON, string → text/plain) with the extra headers. */
export function sendVerbatim(res, rec, status, body, headers = {}) {
  const isText = typeof body === 'string';
  const payload = isText ? body : JSON.stringify(body);
  rec.responseStatus = status;
  if (!isText) rec.responseBody = body;
  res.writeHead(status, {
    'content-type': isText ? 'text/plain; charset=utf-8' : 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload, () => (rec.finished = true));
}

/** Writes one piece and resolves once it was handed to the socket (or the peer went away). */
export function writePiece(res, piece) {
  if (res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('close', done);
      resolve();
    };
    res.once('close', done);
    const ok = res.write(piece, () => {
      if (ok) done();
    });
    if (!ok) res.once('drain', done);
  });
}

/** Destroys the connection after a short pause, so that what was written reaches the peer first. */
export async function cutConnection(req, { wait = true, rst = false } = {}) {
  if (wait) await sleep(50);
  if (rst && typeof req.socket.resetAndDestroy === 'function') req.socket.resetAndDestroy();
  else req.socket.destroy();
}

/** Splits text into n roughly equal pieces, or by default one per word (keeping the spaces). */
export function splitText(text, n) {
  if (!n) {
    const parts = text.match(/\s*\S+|\s+$/g);
    return parts && parts.length ? parts : [text];
  }
  const out = [];
  const size = Math.ceil(text.length / n) || 1;
  for (let i = 0; i < n; i++) out.push(text.slice(i * size, (i + 1) * size));
  return out.filter((p, i) => p.length || i === 0);
}

/** Splits a string into n pieces of about equal length (n >= 1), cutting anywhere (mid-JSON). */
export function splitEvenly(s, n) {
  const out = [];
  const size = Math.max(1, Math.ceil(s.length / n));
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out.length ? out : [''];
}

/** The number of whitespace-separated words in text: the fakes' deterministic token count. */
export function wordCount(text) {
  const m = String(text ?? '').match(/\S+/g);
  return m ? m.length : 0;
}

/** A value that satisfies a JSON schema's shape (deterministic): for a fake tool call's input. */
export function sampleFromSchema(schema, name = 'value') {
  if (!schema || typeof schema !== 'object') return {};
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (String(type || '').toLowerCase()) {
    case 'string':
      return `${name}-1`;
    case 'integer':
    case 'number':
      return 1;
    case 'boolean':
      return true;
    case 'array':
      return [sampleFromSchema(schema.items, name)];
    case 'null':
      return null;
    default: {
      const out = {};
      for (const [k, v] of Object.entries(schema.properties || {})) out[k] = sampleFromSchema(v, k);
      return out;
    }
  }
}

/**
 * The shape of a JSON value: the same structure with every leaf replaced by its type name
 * ('string', 'number', 'boolean', 'null'), arrays by the shape of their first element. Two
 * documents in the same wire format have equal shapes.
 */
export function shapeOf(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length ? [shapeOf(v[0])] : [];
  if (typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = shapeOf(v[k]);
    return out;
  }
  return typeof v;
}

/** Parses an SSE body into [{event (null when none), data (string)}], in order. */
export function parseSSE(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (!block.trim()) continue;
    let event = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    out.push({ event, data: data.join('\n') });
  }
  return out;
}

/** A deterministic embedding of text: dims values in [-1, 1] derived from SHA-256 of the text. */
export function fakeEmbedding(text, dims = 8) {
  const out = [];
  for (let block = 0; out.length < dims; block++) {
    const h = crypto.createHash('sha256').update(`${block}:${text}`).digest();
    for (let i = 0; i + 2 <= h.length && out.length < dims; i += 2) out.push(Math.round((h.readUInt16BE(i) / 65535) * 2e6 - 1e6) / 1e6);
  }
  return out;
}
