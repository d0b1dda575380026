// balancing.test.mjs — a virtual model (route match.models) spread over backends by the route's
// strategy: RoundRobin in turn (exact counts), Weighted by weight (bounded counts, weight 0 never).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON } from '../lib/http.mjs';

describe('load balancing over a virtual model', () => {
  let gw;
  let agent;

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-balance}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: a, type: Mock, config: {mock: {text: A}}}
  - {name: b, type: Mock, config: {mock: {text: B}}}
  - {name: c, type: Mock, config: {mock: {text: C}}}
  routes:
  - name: rr
    pathPrefix: /rr/v1
    match: {models: [pool]}
    backends: [{target: a}, {target: b}, {target: c}]
    strategy: RoundRobin
  - name: weighted
    pathPrefix: /w/v1
    match: {models: [wpool]}
    backends: [{target: a, weight: 3}, {target: b, weight: 1}, {target: c, weight: 0}]
    strategy: Weighted
  authentication: {type: None}
`,
    });
    // one keep-alive connection: the requests reach one worker in turn, whatever the
    // implementation keeps its round-robin position in (per worker or shared)
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  });

  after(async () => {
    agent?.destroy();
    if (gw) await gw.stop();
  });

  const logs = () => gw;

  async function answers(prefix, model, n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const res = await postJSON(`${gw.url}${prefix}/chat/completions`, { model, messages: [{ role: 'user', content: `q${i}` }] }, { agent });
      assert.equal(res.status, 200, res.text);
      out.push(res.json.choices[0].message.content);
    }
    return out;
  }

  const count = (xs) => xs.reduce((m, x) => ((m[x] = (m[x] || 0) + 1), m), {});

  test(
    'RoundRobin: 21 requests → 7 each, in turn',
    withLogs(logs, async () => {
      const got = await answers('/rr/v1', 'pool', 21);
      assert.deepEqual(count(got), { A: 7, B: 7, C: 7 });
      for (let i = 0; i + 3 <= got.length; i++) {
        assert.equal(new Set(got.slice(i, i + 3)).size, 3, `each three consecutive answers cover a, b, c: ${got.join('')}`);
      }
    })
  );

  test(
    'Weighted 3:1:0 over 60 requests: a about three times b, c never',
    withLogs(logs, async () => {
      const got = count(await answers('/w/v1', 'wpool', 60));
      assert.equal(got.C, undefined, `weight 0 is never chosen: ${JSON.stringify(got)}`);
      const a = got.A || 0;
      const b = got.B || 0;
      assert.equal(a + b, 60);
      // binomial(60, 0.75): mean 45, sd 3.4 — these bounds are > 4 sd away
      assert.ok(a >= 30 && a <= 57, `a chosen ${a} times of 60 (expected about 45)`);
      assert.ok(b >= 3 && b <= 30, `b chosen ${b} times of 60 (expected about 15)`);
    })
  );

  test(
    'GET /models on a match.models route lists its virtual model, not the backends it filters out',
    withLogs(logs, async () => {
      const res = await fetch(`${gw.url}/rr/v1/models`);
      assert.equal(res.status, 200);
      const ids = (await res.json()).data.map((m) => m.id);
      assert.deepEqual(ids, ['pool']);
      // match.models is a filter: the backends' own names do not pass it on this prefix
      const a = await postJSON(`${gw.url}/rr/v1/chat/completions`, { model: 'a', messages: [{ role: 'user', content: 'q' }] }, { agent });
      assert.equal(a.status, 404, a.text);
    })
  );
});
