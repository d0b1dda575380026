// faults-sigterm.test.mjs — SIGTERM while the gateway is busy: clients keep opening new
// connections (plain, streamed and context requests) while slow requests and slow streams are in
// flight. The requests in flight finish in full (streams through data: [DONE]); every answer that
// started is complete; new connections are refused cleanly (connection refused, or a 503 while
// draining — never a truncated answer); the process exits 0; and with the ASan build no
// AddressSanitizer/LeakSanitizer report appears. The context route keeps its conversations in a
// real Redis: the slow context stream that finished during the drain has its turn stored. A
// second gateway whose stream outlives --drain-timeout still exits 0, without a sanitizer report.
//
// Run it against both builds: CTXGATE_BIN=build/ctxgate and CTXGATE_BIN=build-asan/ctxgate.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { metricSum, sanitizerReports, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON, rawRequest, sseData, waitFor, within } from '../lib/http.mjs';
import { startRedis } from '../lib/servers.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SLOW_TEXT = 'one two three four five six seven eight';

const REDIS_PREFIX = 'faults-term:';
const manifests = (fast, slow, redis) => `
apiVersion: ctxgate.io/v1alpha1
kind: ModelContextProtocol
metadata: {name: conv}
spec:
  storage: {type: Redis, config: {url: "${redis.url}", keyPrefix: "${REDIS_PREFIX}"}}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-faults-term}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: mock
    type: Mock
    config: {mock: {text: quick mock answer, chunks: 3}}
  - name: mock-slow
    type: Mock
    config: {mock: {text: slow mock answer, latencyMs: 2500, chunks: 3}}
  - name: fast
    type: OpenAI
    config: {endpoint: "${fast.baseURL}", modelName: fast-model}
  - name: slow
    type: OpenAI
    config: {endpoint: "${slow.baseURL}", modelName: slow-model}
  routes:
  - name: main
    pathPrefix: /v1
    backends: [{target: mock}, {target: mock-slow}, {target: fast}, {target: slow}]
  - name: ctx
    pathPrefix: /ctx/v1
    backends: [{target: mock}, {target: fast}, {target: slow}]
    contextRef: {name: conv}
  authentication: {type: None}
`;

/** Whole answer? {complete, text}; a 200 that is not complete is a truncation. */
function completeness(res, stream) {
  if (!stream) {
    const text = res.json?.choices?.[0]?.message?.content;
    return { complete: typeof text === 'string', text };
  }
  const data = sseData(res.text);
  if (data.at(-1) !== '[DONE]') return { complete: false, text: null };
  const text = data
    .slice(0, -1)
    .map((d) => JSON.parse(d).choices?.[0]?.delta?.content ?? '')
    .join('');
  return { complete: true, text };
}

describe('SIGTERM under load', () => {
  let fast;
  let slow;
  let redis;
  let gw;
  const logs = () => gw;

  before(async () => {
    fast = await startFakeOpenAI();
    // every streamed answer of this provider takes 8 x 400 ms
    slow = await startFakeOpenAI({ default: { chunkDelayMs: 400, text: SLOW_TEXT } });
    redis = await startRedis();
  });

  after(async () => {
    if (gw) await gw.stop();
    await Promise.allSettled([fast?.close(), slow?.close(), redis?.stop()]);
  });

  test(
    'in-flight requests and slow streams finish, new connections are refused cleanly, exit 0, no sanitizer report',
    withLogs(logs, async (t) => {
      gw = await startGateway({ manifests: manifests(fast, slow, redis), extraArgs: ['--drain-timeout', '60'] });
      const url = (route) => `${gw.url}${route === 'ctx' ? '/ctx/v1' : '/v1'}/chat/completions`;
      let rid = 0;
      const send = (route, model, { stream = false, conv, content = 'hello', requestId = `term-${process.pid}-${++rid}` } = {}) =>
        postJSON(
          url(route),
          { model, stream, messages: [{ role: 'user', content }] },
          { headers: { 'x-request-id': requestId, ...(conv ? { 'x-conversation-id': conv } : {}) }, timeoutMs: 60000 }
        );

      // the slow ones, in flight when the signal comes
      const slowOnes = [
        { what: 'slow stream', p: send('main', 'slow', { stream: true }), stream: true, text: SLOW_TEXT },
        { what: 'slow stream', p: send('main', 'slow', { stream: true }), stream: true, text: SLOW_TEXT },
        { what: 'slow Mock stream', p: send('main', 'mock-slow', { stream: true }), stream: true, text: 'slow mock answer' },
        { what: 'slow Mock', p: send('main', 'mock-slow'), stream: false, text: 'slow mock answer' },
        { what: 'slow context stream', p: send('ctx', 'slow', { stream: true, conv: 'term-ctx' }), stream: true, text: SLOW_TEXT },
      ];
      for (const s of slowOnes) s.p.catch(() => {});

      // background traffic on new connections, before and after the signal
      let termAt = 0; // Date.now() when SIGTERM was sent
      let running = true;
      const outcomes = [];
      const mix = [
        ['main', 'mock', false],
        ['main', 'mock', true],
        ['main', 'fast', false],
        ['main', 'fast', true],
        ['ctx', 'fast', false],
        ['ctx', 'mock', true],
      ];
      const loops = [0, 1, 2, 3].map(async (k) => {
        for (let n = 0; running; n++) {
          const [route, model, stream] = mix[(n + k) % mix.length];
          const afterTerm = termAt !== 0;
          const requestId = `term-bg-${process.pid}-${k}-${n}`;
          const o = { afterTerm, requestId, route, model, stream };
          try {
            const res = await send(route, model, { stream, requestId, conv: route === 'ctx' ? `term-bg-${k}` : undefined });
            outcomes.push({ ...o, endedAfterTerm: termAt !== 0, status: res.status, ...completeness(res, stream), body: res.text });
          } catch (err) {
            outcomes.push({ ...o, endedAfterTerm: termAt !== 0, error: err.code || err.message });
            if (err.code === 'ECONNREFUSED') break; // the listener is closed: this client is done
            await sleep(10);
          }
        }
      });

      // wait until the slow ones are really in flight: the slow provider is streaming all of them
      await waitFor(() => slow.chatRequests().length >= 3 && slow.chatRequests().every((r) => r.sentChunks >= 2), {
        timeoutMs: 30000,
        what: 'the slow answers to be under way',
      });
      await waitFor(async () => metricSum((await gw.metrics()).samples, 'ctxgate_requests_in_flight') >= 5, {
        timeoutMs: 30000,
        what: 'five requests in flight',
      });
      assert.ok(outcomes.some((o) => o.status === 200), 'background traffic is flowing');

      termAt = Date.now();
      gw.proc.kill('SIGTERM');
      // readiness goes away: 503 draining, or refused once the listeners are closed
      await waitFor(
        async () => {
          try {
            const r = await rawRequest(`${gw.url}/readyz`, { timeoutMs: 5000 });
            if (r.status === 200) return false;
            assert.equal(r.status, 503, `readyz while draining: ${r.text}`);
            return true;
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            return true;
          }
        },
        { timeoutMs: 20000, what: '/readyz to stop answering ready' }
      );
      // new connections keep coming for a while; then they are refused
      await waitFor(
        async () => {
          try {
            await rawRequest(`${gw.url}/healthz`, { timeoutMs: 5000 });
            return false;
          } catch (err) {
            return err.code === 'ECONNREFUSED';
          }
        },
        { timeoutMs: 30000, what: 'new connections to be refused' }
      );

      const settled = await within(Promise.allSettled(slowOnes.map((s) => s.p)), 60000, 'the slow requests');
      settled.forEach((r, i) => {
        const s = slowOnes[i];
        assert.equal(r.status, 'fulfilled', `the ${s.what} in flight was answered: ${r.reason}`);
        assert.equal(r.value.status, 200, `${s.what}: ${r.value.text}`);
        const c = completeness(r.value, s.stream);
        assert.ok(c.complete, `the ${s.what} finished in full: ${JSON.stringify(r.value.text)}`);
        assert.equal(c.text, s.text, s.what);
      });

      running = false;
      await within(Promise.all(loops), 60000, 'the background clients');
      const exit = await within(gw.exited, 90000, 'the gateway to exit');
      assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM\n${gw.logs()}`);
      assert.equal(sanitizerReports(gw.stderr()), '', 'no AddressSanitizer/LeakSanitizer/UBSan report');

      const logged = new Set(gw.accessLog().map((l) => l.request_id));
      const before = outcomes.filter((o) => !o.afterTerm);
      const afterT = outcomes.filter((o) => o.afterTerm);
      t.diagnostic(
        `${before.length} requests before SIGTERM, ${afterT.length} after: ` +
          `${afterT.filter((o) => o.status === 200).length} answered, ${afterT.filter((o) => o.status === 503).length} 503, ` +
          `${afterT.filter((o) => o.error === 'ECONNREFUSED').length} refused, ` +
          `${afterT.filter((o) => o.error && o.error !== 'ECONNREFUSED').length} other connection errors; ` +
          `${before.filter((o) => o.error).length} sent before SIGTERM failed at connection level, unseen by the gateway`
      );
      for (const o of outcomes) {
        const where = `${o.route} ${o.model} ${o.stream ? 'streamed' : 'non-streamed'} (${o.afterTerm ? 'after' : 'before'} SIGTERM)`;
        if (o.status === 200) {
          // an answer that started is never cut off by the shutdown
          assert.ok(o.complete, `a 200 answer is complete: ${where}: ${JSON.stringify(o.body)}`);
        } else if (o.status !== undefined) {
          assert.ok(o.afterTerm, `an error status only while draining: ${where}: ${o.status} ${o.body}`);
          assert.equal(o.status, 503, `the only refusal with a status is 503: ${where}: ${o.body}`);
        } else {
          assert.ok(o.endedAfterTerm, `no connection error before SIGTERM: ${where}: ${o.error}`);
          // a request the gateway had started is answered in full: a connection error is only
          // for connections it never read a request from (refused; or reset when the listener
          // closed with the connection in its backlog, or the connection was still idle)
          assert.ok(!logged.has(o.requestId), `a request the gateway logged was not answered: ${where}: ${o.error}`);
          assert.ok(
            ['ECONNREFUSED', 'ECONNRESET', 'socket hang up'].includes(o.error),
            `a new connection is refused cleanly: ${where}: ${o.error}`
          );
        }
      }
      assert.match(gw.stderr(), /draining/);
      assert.doesNotMatch(gw.stderr(), /did not finish within/, 'the drain finished before --drain-timeout');
      // the context stream that finished during the drain was recorded: one user turn, one answer
      const [turns] = await redis.command('HMGET', `${REDIS_PREFIX}default:term-ctx`, 't');
      assert.equal(Number(turns), 2, 'the drained context stream has its turn in Redis');
    })
  );

  test(
    'a stream that outlives --drain-timeout: the process still exits 0, with no sanitizer report',
    withLogs(logs, async () => {
      if (gw) await gw.stop();
      gw = await startGateway({ manifests: manifests(fast, slow, redis), extraArgs: ['--drain-timeout', '2'] });
      // 8 x 3 s: far longer than the drain timeout
      slow.next({ chunkDelayMs: 3000, text: SLOW_TEXT });
      const pending = postJSON(
        `${gw.url}/v1/chat/completions`,
        { model: 'slow', stream: true, messages: [{ role: 'user', content: 'never mind' }] },
        { timeoutMs: 60000 }
      );
      pending.catch(() => {});
      await waitFor(async () => metricSum((await gw.metrics()).samples, 'ctxgate_requests_in_flight') >= 1, {
        what: 'the stream in flight',
      });
      const exit = await within(gw.kill('SIGTERM'), 60000, 'the gateway to exit after its drain timeout');
      assert.deepEqual(exit, { code: 0, signal: null }, gw.logs());
      assert.match(gw.stderr(), /did not finish within 2 s/);
      assert.equal(sanitizerReports(gw.stderr()), '', 'no AddressSanitizer/LeakSanitizer/UBSan report');
      // the client's stream was cut by the exit: it must not look like a complete answer
      const res = await within(
        pending.catch(() => ({ text: '' })), // a connection error is no [DONE] either
        30000,
        'the cut stream'
      );
      assert.ok(!sseData(res.text).includes('[DONE]'), `no [DONE] for a stream cut by the exit: ${res.text}`);
    })
  );
});
