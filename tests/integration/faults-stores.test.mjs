// faults-stores.test.mjs — the context store goes away under load and comes back: Redis
// (persistence on, so a restart keeps what it acknowledged) and PostgreSQL are stopped (SIGKILL /
// pg_ctl -m immediate) while clients keep sending turns, streamed and not, on context routes,
// and then started again on the same port. While the store is down every answer is a clear error
// (503 context_store_unavailable — JSON, or a last error event for a stream that had started),
// never a 500, a dropped connection or a crash; service resumes without restarting the gateway;
// and no acknowledged turn is lost: every turn whose answer the client received in full (200, or
// a stream through data: [DONE]) is in the store afterwards, read back through /v1/contexts.
// Also: a store that hangs (SIGSTOP: connection open, nothing answered) gives 503 within its
// reply timeout, not a request hanging forever; stores down when the gateway starts; a stream
// whose turn cannot be recorded.
//
// Run it against both builds: CTXGATE_BIN=build/ctxgate and CTXGATE_BIN=build-asan/ctxgate.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { metricSum, sanitizerReports, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, sseData, waitFor, within } from '../lib/http.mjs';
import { startPostgres, startRedis } from '../lib/servers.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CLIENTS = 4; // concurrent conversations per backend, each sending its turns one after another


describe('context store stopped and restarted under load', () => {
  let fake;
  let redis;
  let pg;
  let gw;
  let g = null; // the gateway of the test whose stores are down when it starts
  const logs = () => gw;

  before(async () => {
    [fake, redis, pg] = await Promise.all([startFakeOpenAI(), startRedis({ persist: true }), startPostgres()]);
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-redis}
spec:
  storage: {type: Redis, config: {url: "${redis.url}", keyPrefix: "faults:"}}
  contextStrategy: {type: LastN, lastN: 1000}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: ctx-pg}
spec:
  storage: {type: PostgreSQL, config: {dsn: "${pg.dsn}", keyPrefix: "faults_"}}
  contextStrategy: {type: LastN, lastN: 1000}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-faults-stores}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: up
    type: OpenAI
    config: {endpoint: "${fake.baseURL}", modelName: up-model}
  routes:
  - {name: redis, pathPrefix: /redis/v1, backends: [{target: up}], contextRef: {name: ctx-redis}}
  - {name: pg, pathPrefix: /pg/v1, backends: [{target: up}], contextRef: {name: ctx-pg}}
  authentication: {type: None}
`,
    });
  });

  after(async () => {
    if (gw) await gw.stop();
    await Promise.allSettled([fake?.close(), redis?.stop(), pg?.stop()]);
  });

  /**
   * One turn; returns {ok, status, code, stream, error?}. ok means the client received the whole
   * answer (200 JSON, or a 200 stream ending with data: [DONE]). A failure must be clear: a JSON
   * error, or a stream whose last event is an error (and no [DONE]); anything else throws.
   */
  async function turn(route, conv, content, stream) {
    const body = { model: 'up', messages: [{ role: 'user', content }] };
    if (stream) body.stream = true;
    let res;
    try {
      res = await postJSON(`${gw.url}/${route}/v1/chat/completions`, body, {
        headers: { 'x-conversation-id': conv },
        timeoutMs: 30000,
      });
    } catch (err) {
      throw new Error(`${route} ${conv} "${content}": the connection failed instead of a clear answer: ${err.message}`);
    }
    if (res.status === 200 && !stream) {
      assert.equal(res.json?.choices?.[0]?.message?.content, `reply to: ${content}`, res.text);
      return { ok: true, status: 200, stream };
    }
    if (res.status === 200 && stream) {
      const data = sseData(res.text);
      if (data.at(-1) === '[DONE]') return { ok: true, status: 200, stream };
      const last = JSON.parse(data.at(-1));
      assert.ok(last.error, `a stream that did not end with [DONE] ends with an error event: ${res.text}`);
      return { ok: false, status: 200, code: last.error.code, stream, error: last.error.message };
    }
    assert.ok(res.json?.error, `a failure is an OpenAI error JSON (${res.status}): ${res.text}`);
    return { ok: false, status: res.status, code: res.json.error.code, stream, error: res.json.error.message };
  }

  /**
   * CLIENTS loops sending turns until stop(); each records its acknowledged user messages.
   * Returns {stop(): Promise<results>, phase(name)}: every answer is tagged with the phase in
   * which it was sent (phase) and the one in which its answer arrived (donePhase).
   */
  function load(route, tag) {
    let running = true;
    let phase = 'before';
    const results = [];
    const acked = new Map(); // conv -> [content...] acknowledged, in order
    const loops = [];
    for (let i = 0; i < CLIENTS; i++) {
      const conv = `${tag}-${process.pid}-c${i}`;
      acked.set(conv, []);
      loops.push(
        (async () => {
          for (let n = 0; running; n++) {
            const content = `${conv} turn ${n}`;
            const p = phase;
            const r = await turn(route, conv, content, n % 3 === 1);
            results.push({ ...r, phase: p, donePhase: phase, conv, content });
            if (r.ok) acked.get(conv).push(content);
            else await sleep(20); // a failing store answers at once: do not spin
          }
        })()
      );
    }
    return {
      phase(name) {
        phase = name;
      },
      results,
      async stop() {
        running = false;
        await Promise.all(loops);
        return { results, acked };
      },
    };
  }

  async function storeErrors(mcp) {
    return metricSum((await gw.metrics()).samples, 'ctxgate_context_store_errors_total', { mcp });
  }

  const BACKENDS = [
    { name: 'Redis', route: 'redis', mcp: 'ctx-redis', server: () => redis },
    { name: 'PostgreSQL', route: 'pg', mcp: 'ctx-pg', server: () => pg },
  ];

  for (const b of BACKENDS) {
    // (before 9f3b5ae the gateway wrote to the freed call here and logged the turn as 502)
    test(
      `${b.name} gone after a stream's first bytes → its turn ends with a context_store_unavailable error event, logged 503, nothing stored`,
      withLogs(logs, async () => {
        const srv = b.server();
        const conv = `faults-commit-${b.route}-${process.pid}`;
        const requestId = `faults-commit-rid-${b.route}-${process.pid}`;
        let release;
        const hold = new Promise((r) => (release = r));
        fake.reset();
        fake.next({ text: 'one two three', holdAfterChunks: 1, hold });
        const pending = postJSON(
          `${gw.url}/${b.route}/v1/chat/completions`,
          { model: 'up', stream: true, messages: [{ role: 'user', content: 'record me if you can' }] },
          { headers: { 'x-conversation-id': conv, 'x-request-id': requestId }, timeoutMs: 30000 }
        );
        try {
          await fake.waitForRequests(1);
          await waitFor(() => fake.chatRequests()[0].held, { what: 'the answer to be half-way' });
          await srv.halt(); // the history was read; the turn cannot be written any more
        } finally {
          release();
        }
        const res = await within(pending, 30000, 'the streamed answer');
        assert.equal(res.status, 200, res.text);
        const data = sseData(res.text);
        assert.ok(!data.includes('[DONE]'), `no [DONE] for a turn that was not recorded: ${res.text}`);
        const last = JSON.parse(data.at(-1));
        assert.equal(last.error?.code, 'context_store_unavailable', res.text);
        const line = await waitFor(() => gw.accessLog().find((l) => l.request_id === requestId), {
          what: 'the access-log line',
        });
        assert.equal(line.status, 503, `logged as the store failure: ${JSON.stringify(line)}`);
        await srv.restart();
        const r = await waitFor(
          async () => {
            const x = await rawRequest(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=${b.mcp}`);
            return x.status === 503 ? null : x;
          },
          { timeoutMs: 30000, what: 'the context API to reach the restarted store' }
        );
        assert.equal(r.status, 404, `nothing stored for the failed turn: ${r.text}`);
        assert.equal(gw.proc.exitCode, null, 'the gateway kept running');
      })
    );

    // A store that hangs (no answer, connection open: a frozen process, a network partition)
    // must not hang the requests that need it: Redis gives up after 5 s without a reply,
    // PostgreSQL after 10 s (REPLY_TIMEOUT_MS in src/context/redis.c, postgres.c).
    test(
      `${b.name} hanging (SIGSTOP) → requests get 503 context_store_unavailable within a bounded time, and are served again after SIGCONT`,
      withLogs(logs, async () => {
        const srv = b.server();
        const conv = `faults-hang-${b.route}-${process.pid}`;
        const ok = await turn(b.route, conv, 'before the hang', false);
        assert.ok(ok.ok, JSON.stringify(ok));
        await srv.freeze();
        let res;
        try {
          // far longer than any sensible store timeout, far shorter than "forever"
          res = await postJSON(
            `${gw.url}/${b.route}/v1/chat/completions`,
            { model: 'up', messages: [{ role: 'user', content: 'during the hang' }] },
            { headers: { 'x-conversation-id': conv }, timeoutMs: 30000 }
          ).catch((err) => ({ status: 0, text: err.message }));
        } finally {
          await srv.thaw();
        }
        assert.equal(res.status, 503, `a clear error while ${b.name} hangs: ${res.text}`);
        assert.equal(res.json?.error?.code, 'context_store_unavailable', res.text);
        assert.match(res.json.error.message, /context store .* is unavailable/, res.text);
        // the why (no reply within the store's limit) is for the operator: in the log, not the answer
        assert.ok(!/no reply within/.test(res.json.error.message), res.text);
        await waitFor(() => /no reply within/.test(gw.stderr()), { what: 'the log to say the store did not answer' });
        const again = await waitFor(
          async () => {
            const r = await turn(b.route, conv, 'after the hang', false);
            return r.ok ? r : null;
          },
          { timeoutMs: 60000, intervalMs: 250, what: `${b.name} to serve again after SIGCONT` }
        );
        assert.ok(again.ok);
      })
    );

    test(
      `${b.name} stopped and restarted under load: clear 503s while down, service resumes, no acknowledged turn lost`,
      withLogs(logs, async (t) => {
        const srv = b.server();
        const errorsBefore = await storeErrors(b.mcp);
        const l = load(b.route, `faults-${b.route}`);
        // some successful traffic first
        await waitFor(() => l.results.filter((r) => r.ok).length >= 2 * CLIENTS, {
          timeoutMs: 30000,
          what: 'turns to succeed before the store stops',
        });
        l.phase('down');
        await srv.halt();
        // while it is down, the clients keep going and get errors
        await waitFor(() => l.results.filter((r) => r.phase === 'down' && !r.ok).length >= 2 * CLIENTS, {
          timeoutMs: 30000,
          what: 'turns to fail while the store is down',
        });
        // the context API says so too
        const api = await rawRequest(`${gw.url}/v1/contexts?mcp=${b.mcp}`);
        assert.equal(api.status, 503, `the context API while ${b.name} is down: ${api.text}`);
        assert.equal(api.json?.error?.code, 'context_store_unavailable', api.text);
        await sleep(500);
        l.phase('restarted');
        await srv.restart();
        // service resumes without a gateway restart
        await waitFor(() => l.results.filter((r) => r.phase === 'restarted' && r.ok).length >= 2 * CLIENTS, {
          timeoutMs: 60000,
          what: `turns to succeed again after ${b.name} restarted`,
        });
        const { results, acked } = await within(l.stop(), 60000, 'the clients to stop');

        const failures = results.filter((r) => !r.ok);
        t.diagnostic(`${results.length} turns, ${failures.length} failed (${failures.filter((f) => f.status === 200).length} as a stream's error event)`);
        assert.ok(failures.length > 0, 'the outage was seen');
        for (const f of failures) {
          // the clear error of an unavailable store; for a stream that had started, its last event
          const where = `${f.conv} "${f.content}" (${f.phase}, ${f.stream ? 'streamed' : 'non-streamed'}): ${f.status} ${f.code} ${f.error}`;
          assert.ok(f.status === 503 || (f.stream && f.status === 200), `status 503 (or an error event): ${where}`);
          assert.equal(f.code, 'context_store_unavailable', where);
          assert.notEqual(f.donePhase, 'before', `no failure before the store stopped: ${where}`);
        }
        assert.ok((await storeErrors(b.mcp)) > errorsBefore, `ctxgate_context_store_errors_total{mcp="${b.mcp}"} grew`);

        // no acknowledged turn lost: each is in the stored conversation, in the order sent
        let total = 0;
        for (const [conv, contents] of acked) {
          const r = await rawRequest(`${gw.url}/v1/contexts/${encodeURIComponent(conv)}?mcp=${b.mcp}`);
          assert.equal(r.status, 200, `${conv} is stored: ${r.text}`);
          const stored = r.json.messages.filter((m) => m.role === 'user').map((m) => m.content);
          let at = 0;
          for (const c of contents) {
            const i = stored.indexOf(c, at);
            assert.ok(i >= 0, `acknowledged turn "${c}" is in the store (stored: ${JSON.stringify(stored)})`);
            at = i + 1;
            total++;
          }
          // every stored user turn has its answer right after it
          for (let i = 0; i < r.json.messages.length; i += 2) {
            assert.equal(r.json.messages[i].role, 'user');
            assert.equal(r.json.messages[i + 1]?.role, 'assistant', `turn ${i / 2} of ${conv} has its answer`);
            assert.equal(r.json.messages[i + 1].content, `reply to: ${r.json.messages[i].content}`);
          }
        }
        assert.ok(total >= 4 * CLIENTS, `acknowledged turns checked: ${total}`);
        assert.equal(gw.proc.exitCode, null, 'the gateway kept running');
      })
    );
  }

  test(
    'stores that are down when the gateway starts: it starts, answers 503 until they come up, then serves (PostgreSQL schema created late)',
    withLogs(() => g, async () => {
      const [r2, p2] = await Promise.all([startRedis(), startPostgres()]);
      try {
        await Promise.all([r2.halt(), p2.halt()]);
        g = await startGateway({
          manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: late-redis}
spec: {storage: {type: Redis, config: {url: "${r2.url}"}}}
---
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: late-pg}
spec: {storage: {type: PostgreSQL, config: {dsn: "${p2.dsn}"}}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-faults-late}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: up, type: OpenAI, config: {endpoint: "${fake.baseURL}", modelName: up-model}}
  routes:
  - {name: redis, pathPrefix: /redis/v1, backends: [{target: up}], contextRef: {name: late-redis}}
  - {name: pg, pathPrefix: /pg/v1, backends: [{target: up}], contextRef: {name: late-pg}}
  authentication: {type: None}
`,
        });
        const ask = (route, conv, stream = false) =>
          postJSON(
            `${g.url}/${route}/v1/chat/completions`,
            { model: 'up', stream, messages: [{ role: 'user', content: `late ${conv}` }] },
            { headers: { 'x-conversation-id': conv }, timeoutMs: 30000 }
          );
        for (const route of ['redis', 'pg']) {
          const res = await ask(route, `late-${route}-0`);
          assert.equal(res.status, 503, `${route} down at start: ${res.text}`);
          assert.equal(res.json?.error?.code, 'context_store_unavailable', res.text);
        }
        assert.equal((await rawRequest(`${g.url}/healthz`)).status, 200, 'the gateway itself is healthy');
        await Promise.all([r2.restart(), p2.restart()]);
        for (const [route, mcp] of [
          ['redis', 'late-redis'],
          ['pg', 'late-pg'],
        ]) {
          const ok = await waitFor(
            async () => {
              const res = await ask(route, `late-${route}-1`);
              return res.status === 200 ? res : null;
            },
            { timeoutMs: 60000, intervalMs: 250, what: `${route} to be served once the store is up` }
          );
          assert.equal(ok.json.choices[0].message.content, `reply to: late late-${route}-1`);
          const streamed = await ask(route, `late-${route}-2`, true);
          assert.equal(sseData(streamed.text).at(-1), '[DONE]', streamed.text);
          const stored = await rawRequest(`${g.url}/v1/contexts/late-${route}-2?mcp=${mcp}`);
          assert.equal(stored.status, 200, stored.text);
          assert.equal(stored.json.messages.length, 2, stored.text);
        }
        const exit = await within(g.kill('SIGTERM'), 60000, 'the gateway to exit');
        assert.deepEqual(exit, { code: 0, signal: null }, g.logs());
        assert.equal(sanitizerReports(g.stderr()), '', 'no AddressSanitizer/LeakSanitizer/UBSan report');
      } finally {
        if (g) await g.stop();
        await Promise.allSettled([r2.stop(), p2.stop()]);
      }
    })
  );

  test(
    'SIGTERM afterwards: exit 0, and (ASan build) no sanitizer report',
    withLogs(logs, async () => {
      const exit = await within(gw.kill('SIGTERM'), 60000, 'the gateway to exit');
      assert.deepEqual(exit, { code: 0, signal: null }, gw.logs());
      assert.equal(sanitizerReports(gw.stderr()), '', 'no AddressSanitizer/LeakSanitizer/UBSan report');
    })
  );
});
