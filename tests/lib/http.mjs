// http.mjs — raw HTTP helpers for integration tests: requests the SDKs would refuse to send
// (bad JSON, oversized bodies, missing keys), keep-alive control, SSE parsing, bounded waits.
import http from 'node:http';

/**
 * One HTTP request with node:http. Resolves once the whole response arrived:
 * {status, headers, text, json (undefined when not JSON), socketReused}.
 * A server that answers early (e.g. 413) and then drops the upload still resolves: errors after
 * the response head are ignored.
 */
export function rawRequest(url, { method = 'GET', headers = {}, body, agent, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (payload !== undefined) {
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
      h['content-length'] = Buffer.byteLength(payload);
    }
    let gotResponse = false;
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent: agent ?? false },
      (res) => {
        gotResponse = true;
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', () => {});
        const done = () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json, socketReused: req.reusedSocket });
        };
        res.on('end', done);
        res.on('aborted', done);
      }
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from ${method} ${url} within ${timeoutMs} ms`)));
    req.on('error', (err) => {
      if (!gotResponse) reject(err);
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

export const postJSON = (url, body, opts = {}) => rawRequest(url, { ...opts, method: 'POST', body });

/** Splits an SSE body into its `data:` payloads (strings), in order. */
export function sseData(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.split(/\r?\n/).filter((l) => l.startsWith('data:'));
    if (lines.length) out.push(lines.map((l) => l.slice(5).replace(/^ /, '')).join('\n'));
  }
  return out;
}

/** Resolves with p's value, or rejects naming `what` when it takes longer than ms. */
export function within(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls fn until it returns a truthy value (returned) or the deadline passes (throws). */
export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 50, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Asserts the OpenAI error JSON shape and returns body.error. */
export function assertOpenAIError(assert, res, status, code) {
  assert.equal(res.status, status, `status (body: ${res.text})`);
  assert.ok(res.json && typeof res.json === 'object', `body is JSON: ${res.text}`);
  const e = res.json.error;
  assert.ok(e && typeof e === 'object', `body has an error object: ${res.text}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0, 'error.message is not empty');
  assert.equal(typeof e.type, 'string');
  assert.ok('code' in e, 'error.code is present');
  assert.ok('param' in e, 'error.param is present (null when none)');
  if (code !== undefined) assert.equal(e.code, code, `error.code (body: ${res.text})`);
  return e;
}

/** The text content of an OpenAI SDK stream, plus its chunks: {text, chunks}. Throws what the stream throws. */
export async function collectStream(stream) {
  const chunks = [];
  let text = '';
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices || []) if (c.delta && typeof c.delta.content === 'string') text += c.delta.content;
  }
  return { text, chunks };
}
