// http-edge.test.mjs — the HTTP/1.1 edge cases and request-smuggling shapes of issue 6, sent as
// raw bytes to a real gateway in front of the fake OpenAI upstream. Each is answered as nginx
// answers it (checked against nginx 1.22; the table is in docs/gateway.md, "HTTP limits and edge
// cases") and a request the gateway refuses never reaches the upstream. Also: gzip and deflate
// request bodies are decoded before the pipeline reads them, within the body limit.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { startGateway, withLogs } from '../lib/gateway.mjs';
import { rawRequest } from '../lib/http.mjs';

const MAX_BODY = 4096;

/** Sends raw bytes, reads until the server closes (or timeoutMs): {status, text, closed}. */
function rawExchange(port, bytes, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    let done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = text.match(/^HTTP\/1\.1 (\d{3}) /);
      resolve({ status: m ? Number(m[1]) : null, text, closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('connect', () => sock.write(Buffer.from(bytes, 'latin1')));
    sock.on('data', (d) => chunks.push(d));
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', (err) => (chunks.length ? finish(true) : done || ((done = true), reject(err))));
  });
}

const chat = JSON.stringify({ model: 'up', messages: [{ role: 'user', content: 'smuggled?' }] });
const post = (headers, body = '') =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n${headers}\r\n${body}`;
const smuggled = `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`;
const chunked = (s) => `${s.length.toString(16)}\r\n${s}\r\n0\r\n\r\n`;

// name, bytes, the status nginx answers (null: closed without an answer), a piece of the message
const cases = [
  ['HTTP/1.1 without Host', `POST /v1/chat/completions HTTP/1.1\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 400, 'Host'],
  ['Host twice', post(`Host: other\r\nContent-Length: ${chat.length}\r\n`, chat), 400, 'Host'],
  ['empty Host', `POST /v1/chat/completions HTTP/1.1\r\nHost:\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 400, 'Host'],
  ['Host with a space', `POST /v1/chat/completions HTTP/1.1\r\nHost: a b\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 400, 'Host'],
  ['HTTP/2.0 request line over h1', `POST /v1/chat/completions HTTP/2.0\r\nHost: gw\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 505, 'HTTP/2.0'],
  ['HTTP/3.1 request line', 'GET /healthz HTTP/3.1\r\nHost: gw\r\n\r\n', 505, 'HTTP/3.1'],
  ['HTTP/0.9 request line', 'GET /healthz\r\n', null, ''],
  ['HTTP/0.9 as a version', 'GET /healthz HTTP/0.9\r\nHost: gw\r\n\r\n', 400, 'HTTP/0.9'],
  ['Transfer-Encoding: gzip, chunked', post('Transfer-Encoding: gzip, chunked\r\n', chunked(chat)), 501, 'gzip, chunked'],
  ['Transfer-Encoding: gzip', post('Transfer-Encoding: gzip\r\n', chat), 501, 'gzip'],
  ['Transfer-Encoding twice', post('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', chunked(chat)), 400, 'Transfer-Encoding'],
  ['Transfer-Encoding in HTTP/1.0', `POST /v1/chat/completions HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(chat)}`, 400, 'HTTP/1.0'],
  ['obs-folded Transfer-Encoding', post('Transfer-Encoding: identity,\r\n chunked\r\n', chunked(chat)), 400, 'obs-fold'],
  ['obs-folded Transfer-Encoding after an empty value', post('Transfer-Encoding:\r\n\tchunked\r\n', chunked(chat)), 400, 'obs-fold'],
  ['obs-folded ordinary header', post(`X-Note: a\r\n b\r\nContent-Length: ${chat.length}\r\n`, chat), 400, 'obs-fold'],
  ['whitespace before the colon', post(`Transfer-Encoding : chunked\r\nContent-Length: ${chat.length}\r\n`, chat), 400, 'header name'],
  // request smuggling shapes: each would let a proxy in front and the gateway disagree on where
  // the request ends; the "body" carries a whole second request
  ['Content-Length and Transfer-Encoding', post(`Content-Length: ${smuggled.length + 5}\r\nTransfer-Encoding: chunked\r\n`, `0\r\n\r\n${smuggled}`), 400, ''],
  ['Content-Length twice, different', post(`Content-Length: 0\r\nContent-Length: ${smuggled.length}\r\n`, smuggled), 400, ''],
  ['Content-Length twice, identical', post(`Content-Length: ${chat.length}\r\nContent-Length: ${chat.length}\r\n`, chat), 400, ''],
  ['Content-Length as a list', post(`Content-Length: ${chat.length}, ${chat.length}\r\n`, chat), 400, ''],
  ['chunk size not hex', post('Transfer-Encoding: chunked\r\n', `zz\r\n${chat}\r\n0\r\n\r\n`), 400, ''],
  ['negative chunk size', post('Transfer-Encoding: chunked\r\n', `-1\r\n${chat}\r\n0\r\n\r\n`), 400, ''],
  ['chunk size overflowing 64 bits', post('Transfer-Encoding: chunked\r\n', `10000000000000000000\r\n${chat}\r\n0\r\n\r\n`), 400, ''],
  ['chunk size shorter than its data', post('Transfer-Encoding: chunked\r\n', `2\r\n${chat}\r\n0\r\n\r\n`), 400, 'CRLF'],
  ['chunk size line ending in a bare LF', post('Transfer-Encoding: chunked\r\n', `${chat.length.toString(16)}\n${chat}\r\n0\r\n\r\n`), 400, ''],
  ['not HTTP/ after the target', `POST /v1/chat/completions HXXX/1.1\r\nHost: gw\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 400, 'HTTP/'],
  ['CR and another byte ending the headers', `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\rX${smuggled}`, 400, 'CR'],
  ['CR and another byte ending a chunk size line', post('Transfer-Encoding: chunked\r\n', `${chat.length.toString(16)}\rX${chat}\r\n0\r\n\r\n`), 400, 'CR'],
  ['bare CR in the request line', `POST /v1/chat/completions HTTP/1.1\rHost: gw\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`, 400, ''],
  ['chunk size beyond the body limit', post('Transfer-Encoding: chunked\r\n', `${(MAX_BODY + 1).toString(16)}\r\nab`), 413, 'limit'],
  ['Content-Encoding: br', post(`Content-Encoding: br\r\nContent-Length: ${chat.length}\r\n`, chat), 415, 'br'],
  ['Content-Encoding twice', post(`Content-Encoding: gzip\r\nContent-Encoding: gzip\r\nContent-Length: ${chat.length}\r\n`, chat), 415, 'Content-Encoding'],
  ['gzip that is not gzip', post(`Content-Encoding: gzip\r\nContent-Length: ${chat.length}\r\n`, chat), 400, 'gzip'],
];

describe('HTTP edge cases and smuggling', () => {
  let fake;
  let gw;

  before(async () => {
    fake = await startFakeOpenAI();
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-http-edge}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: up-model}
  authentication: {type: None}
  transformation:
    inputValidation: {maxBodyBytes: ${MAX_BODY}}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  beforeEach(() => fake.reset());

  for (const [name, bytes, status, words] of cases) {
    test(
      `${name}: ${status ?? 'closed without an answer'}, nothing forwarded`,
      withLogs(
        () => gw,
        async () => {
          const res = await rawExchange(gw.port, bytes);
          assert.equal(res.status, status, `answer to ${JSON.stringify(bytes.slice(0, 120))}:\n${res.text}`);
          assert.ok(res.closed, 'the connection is closed after the answer');
          if (status !== null) {
            assert.match(res.text, /\r\nConnection: close\r\n/);
            const body = JSON.parse(res.text.slice(res.text.indexOf('\r\n\r\n') + 4));
            assert.equal(typeof body.error.message, 'string');
            if (words) assert.ok(body.error.message.includes(words), body.error.message);
          } else {
            assert.equal(res.text, '', 'HTTP/0.9 gets no bytes back');
          }
          await new Promise((r) => setTimeout(r, 150)); // time for a forwarded request to arrive
          assert.equal(fake.requests.length, 0, 'the upstream received nothing');
        }
      )
    );
  }

  test(
    'bare LF line endings in the head are refused with 400 and never forwarded (nginx accepts them; a smuggling vector behind another proxy)',
    withLogs(
      () => gw,
      async () => {
        for (const raw of [
          `POST /v1/chat/completions HTTP/1.1\nHost: gw\nContent-Type: application/json\nContent-Length: ${chat.length}\nConnection: close\n\n${chat}`,
          `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\nContent-Type: application/json\r\nContent-Length: ${chat.length}\r\n\r\n${chat}`,
          `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${chat.length}\r\n\n${chat}`,
        ]) {
          const res = await rawExchange(gw.port, raw);
          assert.equal(res.status, 400, res.text);
          assert.match(res.text, /bare LF/);
        }
        assert.equal(fake.requests.length, 0, 'the upstream received nothing');
      }
    )
  );

  const msg = (content) => ({ model: 'up', messages: [{ role: 'user', content }] });

  test(
    'gzip and deflate request bodies are decoded before the pipeline reads them',
    withLogs(
      () => gw,
      async () => {
        for (const [enc, pack] of [
          ['gzip', zlib.gzipSync],
          ['x-gzip', zlib.gzipSync],
          ['deflate', zlib.deflateSync],
          ['identity', (b) => b],
        ]) {
          fake.reset();
          const body = pack(Buffer.from(JSON.stringify(msg(`packed with ${enc}`))));
          const res = await rawRequest(`${gw.baseURL}/chat/completions`, {
            method: 'POST',
            headers: { 'content-encoding': enc, 'content-type': 'application/json' },
            body,
          });
          assert.equal(res.status, 200, `${enc}: ${res.text}`);
          assert.equal(fake.requests.length, 1);
          assert.equal(fake.requests[0].body.messages[0].content, `packed with ${enc}`);
          assert.equal(fake.requests[0].headers['content-encoding'], undefined, 'the upstream gets plain JSON');
        }
        // two gzip members one after the other make one body (as gunzip reads them)
        fake.reset();
        const text = JSON.stringify(msg('two members'));
        const half = Math.floor(text.length / 2);
        const two = Buffer.concat([zlib.gzipSync(text.slice(0, half)), zlib.gzipSync(text.slice(half))]);
        const res = await rawRequest(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: two });
        assert.equal(res.status, 200, res.text);
        assert.equal(fake.requests[0].body.messages[0].content, 'two members');
      }
    )
  );

  test(
    'a chunked gzip body is decoded too',
    withLogs(
      () => gw,
      async () => {
        const gz = zlib.gzipSync(Buffer.from(JSON.stringify(msg('chunked and gzipped')))).toString('latin1');
        const a = gz.slice(0, 10);
        const b = gz.slice(10);
        const body = `${a.length.toString(16)}\r\n${a}\r\n${b.length.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
        const res = await rawExchange(gw.port, post('Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\nConnection: close\r\n', body));
        assert.equal(res.status, 200, res.text);
        assert.equal(fake.requests[0].body.messages[0].content, 'chunked and gzipped');
      }
    )
  );

  test(
    'the decoded size counts against the body limit: a gzip bomb gets 413 and reaches nobody',
    withLogs(
      () => gw,
      async () => {
        // ~50 KiB of JSON-ish padding compresses to well under the 4 KiB limit
        const big = JSON.stringify(msg('x'.repeat(50 * 1024)));
        const gz = zlib.gzipSync(big);
        assert.ok(gz.length < MAX_BODY, 'the compressed body itself is within the limit');
        const res = await rawRequest(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: gz });
        assert.equal(res.status, 413, res.text);
        assert.equal(res.json.error.code, 'request_too_large');
        assert.match(res.json.error.message, /decompressed/);
        // exactly at the limit is fine
        const pad = MAX_BODY - JSON.stringify(msg('')).length;
        const exact = JSON.stringify(msg('y'.repeat(pad)));
        assert.equal(exact.length, MAX_BODY);
        const ok = await rawRequest(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: zlib.gzipSync(exact) });
        assert.equal(ok.status, 200, ok.text);
        assert.equal(fake.requests.length, 1, 'only the request within the limit went upstream');
      }
    )
  );

  test(
    'a truncated gzip body is 400',
    withLogs(
      () => gw,
      async () => {
        const gz = zlib.gzipSync(Buffer.from(JSON.stringify(msg('cut short'))));
        const res = await rawRequest(`${gw.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-encoding': 'gzip' }, body: gz.subarray(0, gz.length - 6) });
        assert.equal(res.status, 400, res.text);
        assert.match(res.json.error.message, /ends before the end of its gzip stream/);
        assert.equal(fake.requests.length, 0);
      }
    )
  );
});
