// outlier.test.mjs — target resilience: passive outlier detection (consecutive 5xx eject a target
// for baseEjectionSeconds, traffic goes to the others, the target is readmitted once the time ran
// out and Healthy again after a success), active probes (GET {endpoint}/models every
// intervalSeconds eject a target nobody sends traffic to and readmit it early), maxConcurrency
// (a full target is skipped; when none has room: 503 target_overloaded with Retry-After: 1), the
// state at GET /admin/targets and in ctxgate_target_health / ctxgate_target_ejections_total, and
// spec.admin's listener (metrics and /admin/* move there; its key guards /admin/*).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { freePort, metricSum, parseMetrics, startGateway, withLogs } from '../lib/gateway.mjs';
import { assertOpenAIError, postJSON, rawRequest, waitFor } from '../lib/http.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const chat = (model) => ({ model, messages: [{ role: 'user', content: 'hello' }] });
const chats = (fake) => fake.requests.filter((r) => r.method === 'POST').length;

describe('outlier detection, probes, maxConcurrency (admin API on the main listener)', () => {
  let fa, fb, fc, fslow, gw;

  before(async () => {
    [fa, fb, fc, fslow] = await Promise.all([startFakeOpenAI(), startFakeOpenAI(), startFakeOpenAI(), startFakeOpenAI()]);
    fc.setDefault({ status: 503 }); // the probed target is down from the start
    fslow.setDefault({ delayMs: 1500 });
    gw = await startGateway({
      manifests: `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-outlier}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - name: a
    type: OpenAI
    config: {endpoint: "${fa.baseURL}", modelName: a-model}
    healthCheck: {unhealthyAfter: 2, baseEjectionSeconds: 1, maxEjectionSeconds: 2}
  - {name: b, type: OpenAI, config: {endpoint: "${fb.baseURL}", modelName: b-model}}
  - name: p
    type: OpenAI
    config: {endpoint: "${fc.baseURL}", modelName: p-model, apiKeyRef: {name: keys, key: p}}
    healthCheck: {intervalSeconds: 1, unhealthyAfter: 2, baseEjectionSeconds: 60}
  - {name: s1, type: OpenAI, config: {endpoint: "${fslow.baseURL}", modelName: s1-model}, maxConcurrency: 1}
  - {name: s2, type: OpenAI, config: {endpoint: "${fslow.baseURL}", modelName: s2-model}, maxConcurrency: 1}
  - {name: m, type: Mock, config: {mock: {text: hi}}}
  routes:
  - {name: pool, pathPrefix: /pool/v1, match: {models: [pooled]}, backends: [{target: a}, {target: b}]}
  - {name: probe, pathPrefix: /probe/v1, backends: [{target: p}]}
  - {name: conc, pathPrefix: /conc/v1, match: {models: [slow]}, backends: [{target: s1}, {target: s2}]}
  - {name: mock, pathPrefix: /mock/v1, backends: [{target: m}]}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {p: probe-key}
`,
    });
  });

  after(async () => {
    await gw?.stop();
    await Promise.all([fa, fb, fc, fslow].map((f) => f?.close()));
  });

  const targets = async () => {
    const res = await rawRequest(gw.url + '/admin/targets');
    assert.equal(res.status, 200, res.text);
    return Object.fromEntries(res.json.targets.map((t) => [t.name, t]));
  };
  const health = async (name) => {
    const samples = parseMetrics(await (await fetch(gw.url + '/metrics')).text());
    const state = ['Healthy', 'Degraded', 'Unhealthy'].find(
      (s) => metricSum(samples, 'ctxgate_target_health', { target: name, state: s }) === 1
    );
    return { state, ejections: metricSum(samples, 'ctxgate_target_ejections_total', { target: name }) };
  };

  test(
    'consecutive 503s eject a target, traffic goes to the other, readmitted after the ejection',
    withLogs(() => gw, async () => {
      const before = await targets();
      assert.equal(before.a.state, 'Healthy');
      assert.equal(before.a.ejectedUntil, null);
      assert.equal(before.a.type, 'OpenAI');
      assert.equal(before.m.state, 'Healthy');
      fa.setDefault({ status: 503 });
      // round robin: a gets every other request; its second 503 ejects it
      for (let i = 0; i < 4; i++) await postJSON(gw.url + '/pool/v1/chat/completions', chat('pooled'));
      assert.equal(chats(fa), 2);
      const t = await targets();
      assert.equal(t.a.state, 'Unhealthy');
      assert.equal(t.a.ejections, 1);
      assert.match(t.a.ejectedUntil, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.match(t.a.message, /ejected for 1 s after 2 consecutive failures \(last: HTTP 503\)/);
      assert.ok(t.a.lastTransitionTime);
      assert.deepEqual(await health('a'), { state: 'Unhealthy', ejections: 1 });
      assert.equal((await health('b')).state, 'Healthy');
      // ejected: every request goes to b
      const fbBefore = chats(fb);
      for (let i = 0; i < 4; i++) {
        const res = await postJSON(gw.url + '/pool/v1/chat/completions', chat('pooled'));
        assert.equal(res.status, 200, res.text);
      }
      assert.equal(chats(fa), 2);
      assert.equal(chats(fb), fbBefore + 4);
      // the ejection runs out: readmitted (Degraded), Healthy again after its first success
      fa.setDefault({});
      await sleep(1100);
      assert.equal((await targets()).a.state, 'Degraded');
      await waitFor(async () => {
        await postJSON(gw.url + '/pool/v1/chat/completions', chat('pooled'));
        return chats(fa) > 2;
      }, { what: 'a request reaching the readmitted target' });
      assert.equal((await targets()).a.state, 'Healthy');
      assert.deepEqual(await health('a'), { state: 'Healthy', ejections: 1 });
    })
  );

  test(
    'active probes eject a target without traffic and readmit it early',
    withLogs(() => gw, async () => {
      await waitFor(async () => (await targets()).p.state === 'Unhealthy', { what: 'p ejected by probes' });
      const probes = fc.requests.filter((r) => r.method === 'GET');
      assert.ok(probes.length >= 2);
      assert.equal(probes[0].path, '/v1/models');
      assert.equal(probes[0].headers.authorization, 'Bearer probe-key');
      assert.equal(chats(fc), 0);
      assert.match((await targets()).p.message, /probe: HTTP 503/);
      // only target of its route: panic mode still sends to it (never refuse all traffic)
      const res = await postJSON(gw.url + '/probe/v1/chat/completions', chat('p'));
      assert.equal(res.status, 502);
      assert.equal(chats(fc), 1);
      fc.setDefault({});
      // 60 s ejection, but a successful probe readmits at once
      await waitFor(async () => (await targets()).p.state === 'Healthy', { timeoutMs: 5000, what: 'p readmitted' });
      assert.match((await targets()).p.message, /probe/);
      assert.equal((await health('p')).ejections, 1);
    })
  );

  test(
    'maxConcurrency: a full target is skipped; none with room answers 503 with Retry-After: 1',
    withLogs(() => gw, async () => {
      const url = gw.url + '/conc/v1/chat/completions';
      const r1 = postJSON(url, chat('slow'));
      await waitFor(() => chats(fslow) >= 1, { what: 'the first slow request upstream' });
      const r2 = postJSON(url, chat('slow'));
      await waitFor(() => chats(fslow) >= 2, { what: 'the second slow request upstream' });
      const t = await targets();
      assert.equal(t.s1.inFlight, 1);
      assert.equal(t.s2.inFlight, 1);
      assert.equal(t.s1.maxConcurrency, 1);
      assert.equal(t.a.maxConcurrency, null);
      const r3 = await postJSON(url, chat('slow'));
      assertOpenAIError(assert, r3, 503, 'target_overloaded');
      assert.equal(r3.headers['retry-after'], '1');
      assert.match(r3.json.error.message, /maxConcurrency/);
      const [a1, a2] = await Promise.all([r1, r2]);
      assert.equal(a1.status, 200);
      assert.equal(a2.status, 200);
      // one each: the second skipped the full target
      const models = fslow.requests.filter((r) => r.method === 'POST').map((r) => r.body.model).sort();
      assert.deepEqual(models, ['s1-model', 's2-model']);
      assert.equal(chats(fslow), 2); // the refused one never went upstream
      // room again once they finished
      assert.equal((await targets()).s1.inFlight, 0);
    })
  );
});

describe('spec.admin: its own listener and key', () => {
  let gw, adminPort;

  before(async () => {
    adminPort = await freePort();
    gw = await startGateway({
      vars: { ADMIN: adminPort },
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: adm}
stringData: {key: admin-secret, user: user-key}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-admin}
spec:
  listener: {port: __PORT__}
  admin: {port: __ADMIN__, apiKeyRef: {name: adm, key: key}}
  modelTargets:
  - {name: m, type: Mock, config: {mock: {text: hi}}}
  authentication:
    type: APIKey
    apiKeys:
    - {name: user, secretRef: {name: adm, key: user}}
`,
    });
  });

  after(async () => {
    await gw?.stop();
  });

  const admin = (p) => `http://127.0.0.1:${adminPort}${p}`;

  test(
    'metrics and /admin/* move to the admin listener; /admin/* needs the admin key',
    withLogs(() => gw, async () => {
      assert.equal((await rawRequest(gw.url + '/metrics')).status, 404);
      const main = await rawRequest(gw.url + '/admin/targets', { headers: { authorization: 'Bearer admin-secret' } });
      assert.equal(main.status, 404);
      const m = await rawRequest(admin('/metrics'));
      assert.equal(m.status, 200);
      assert.equal(metricSum(parseMetrics(m.text), 'ctxgate_target_health', { target: 'm', state: 'Healthy' }), 1);
      assertOpenAIError(assert, await rawRequest(admin('/admin/targets')), 401, 'missing_api_key');
      assertOpenAIError(
        assert,
        await rawRequest(admin('/admin/targets'), { headers: { authorization: 'Bearer user-key' } }),
        401,
        'invalid_api_key'
      );
      for (const headers of [{ authorization: 'Bearer admin-secret' }, { 'x-api-key': 'admin-secret' }]) {
        const res = await rawRequest(admin('/admin/targets'), { headers });
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(res.json.targets.map((t) => [t.name, t.type, t.state]), [['m', 'Mock', 'Healthy']]);
      }
      assertOpenAIError(
        assert,
        await rawRequest(admin('/admin/nope'), { headers: { 'x-api-key': 'admin-secret' } }),
        404,
        'unknown_url'
      );
      // the main listener still serves the API
      const res = await postJSON(gw.url + '/v1/chat/completions', chat('m'), { headers: { authorization: 'Bearer user-key' } });
      assert.equal(res.status, 200, res.text);
    })
  );
});

describe('/admin/targets on the main listener with authentication', () => {
  let gw;

  before(async () => {
    gw = await startGateway({
      manifests: `
apiVersion: v1
kind: Secret
metadata: {name: k}
stringData: {user: user-key}
---
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-admin-main}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: m, type: Mock, config: {mock: {text: hi}}}
  authentication:
    type: APIKey
    apiKeys:
    - {name: user, secretRef: {name: k, key: user}}
`,
    });
  });

  after(async () => {
    await gw?.stop();
  });

  test(
    'needs a gateway key',
    withLogs(() => gw, async () => {
      assertOpenAIError(assert, await rawRequest(gw.url + '/admin/targets'), 401, 'missing_api_key');
      const res = await rawRequest(gw.url + '/admin/targets', { headers: { authorization: 'Bearer user-key' } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.targets[0].state, 'Healthy');
    })
  );
});
