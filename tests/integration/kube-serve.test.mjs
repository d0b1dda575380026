// kube-serve.test.mjs — `ctxgate serve --kube`: the configuration comes from the API server and
// follows it live. A Secret and an LLMGateway are created through the API; the gateway answers;
// a change through the API is served by a request within ~1 s; an invalid change (a missing
// Secret) is logged with its field path while the old configuration keeps serving and
// /admin/config says it was rejected; fixing it is followed again; a rotated API key takes over
// from the old one; the watch survives an API server restart and a 410 (expired
// resourceVersion); a deleted LLMGateway keeps the last configuration; in-cluster configuration
// (service-account env and files) works without --kubeconfig; start-up fails clearly when the
// gateway does not exist. Runs against the fake API server and, when available, a real one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import OpenAI from 'openai';

import { kubeModes, startKube } from '../lib/kube.mjs';
import { freePort, gatewayBinary, REPO_ROOT, runCtxgate, sanitizerReports } from '../lib/gateway.mjs';
import { rawRequest } from '../lib/http.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (s) => Buffer.from(s).toString('base64');

const secret = (name, key) => ({
  apiVersion: 'v1',
  kind: 'Secret',
  metadata: { name, namespace: 'default' },
  type: 'Opaque',
  data: { key: b64(key) },
});

const gateway = (name, port, { text, secretName = 'keys' }) => ({
  apiVersion: 'ctxgate.io/v1alpha1',
  kind: 'LLMGateway',
  metadata: { name, namespace: 'default' },
  spec: {
    listener: { port },
    modelTargets: [{ name: 'm', type: 'Mock', config: { mock: { text } } }],
    routes: [{ name: 'main', backends: [{ target: 'm' }] }],
    authentication: { type: 'APIKey', apiKeys: [{ name: 'k', secretRef: { name: secretName, key: 'key' } }] },
  },
});

/** Starts `ctxgate serve --kube` and waits for /healthz on port. */
async function startServe({ name, port, args = [], env = {} }) {
  const argv = ['serve', '--kube', '--gateway', name, '--namespace', 'default', '--workers', '1', ...args];
  const proc = spawn(gatewayBinary(), argv, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  proc.stdout.on('data', () => {});
  let exitInfo = null;
  const exited = new Promise((resolve) => proc.on('close', (code, signal) => resolve((exitInfo = { code, signal }))));
  const gw = {
    port,
    proc,
    stderr: () => stderr,
    logs: () => `--- ctxgate ${argv.join(' ')}\n${stderr}`,
    async stop() {
      if (!exitInfo) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => exitInfo || proc.kill('SIGKILL'), 15000);
        await exited;
        clearTimeout(t);
      }
      return exitInfo;
    },
  };
  const deadline = Date.now() + 30000;
  for (;;) {
    if (exitInfo) throw new Error(`serve --kube exited during start-up (${JSON.stringify(exitInfo)})\n${gw.logs()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await gw.stop();
      throw new Error(`serve --kube did not answer /healthz within 30 s\n${gw.logs()}`);
    }
    await sleep(50);
  }
  return gw;
}

let model = 'm'; // the model the requests ask for: the route change below moves it to 'n'
const ask = async (port, apiKey) => {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey, maxRetries: 0, timeout: 10000 });
  const r = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });
  return r.choices[0].message.content;
};

/** Polls fn until it returns truthy; returns {value, ms}. Throws naming what after timeoutMs. */
async function within(fn, timeoutMs, what) {
  const start = Date.now();
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return { value: v, ms: Date.now() - start };
    } catch (e) {
      last = e;
    }
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${last.message})` : ''}`);
    await sleep(25);
  }
}

const textIs = (port, key, want) => async () => (await ask(port, key)) === want;

for (const mode of kubeModes()) {
  describe(`serve --kube (${mode.name} API server)`, { skip: mode.skip }, () => {
    let kube;
    let gw;
    let port;
    const NAME = 'live';

    const edit = async (fn) => {
      const cur = await kube.get('ctxgate.io/v1alpha1', 'LLMGateway', 'default', NAME);
      fn(cur.spec);
      await kube.update(cur);
    };
    const withLogs = (fn) => async (t) => {
      try {
        await fn(t);
      } catch (e) {
        e.message += `\n${gw ? gw.logs().split('\n').slice(-40).join('\n') : ''}`;
        throw e;
      }
    };

    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true });
      port = await freePort();
      await kube.create(secret('keys', 'sk-one'));
      await kube.create(gateway(NAME, port, { text: 'v1' }));
      gw = await startServe({ name: NAME, port, args: ['--kubeconfig', kube.kubeconfig] });
    });

    after(async () => {
      const exit = await gw?.stop();
      if (exit) assert.equal(sanitizerReports(gw.stderr()), '');
      await kube?.stop();
    });

    test('serves the LLMGateway from the API', withLogs(async () => {
      assert.equal(await ask(port, 'sk-one'), 'v1');
      assert.match(gw.stderr(), /watching Secret default\/keys \(spec\.authentication\.apiKeys\[0\]\.secretRef\)/);
    }));

    test('a change through the API is served within a second', withLogs(async () => {
      await edit((s) => (s.modelTargets[0].config.mock.text = 'v2'));
      const { ms } = await within(textIs(port, 'sk-one', 'v2'), 2000, 'the new text');
      assert.ok(ms < 1500, `took ${ms} ms`);
      // a route change: a second target, the route now points at it
      await edit((s) => {
        s.modelTargets.push({ name: 'n', type: 'Mock', config: { mock: { text: 'from-n' } } });
        s.routes[0].backends = [{ target: 'n' }];
      });
      model = 'n';
      await within(textIs(port, 'sk-one', 'from-n'), 2000, 'the new route');
    }));

    test('an invalid change keeps the old configuration, logs the field, and is reported', withLogs(async () => {
      await edit((s) => (s.authentication.apiKeys[0].secretRef.name = 'missing-secret'));
      await within(
        async () => /Secret default\/missing-secret referenced by spec\.authentication\.apiKeys\[0\]\.secretRef not found/.test(gw.stderr()),
        3000,
        'the field error in the log',
      );
      assert.match(gw.stderr(), /LLMGateway default\/live.*spec\.authentication\.apiKeys\[0\]\.secretRef/);
      assert.equal(await ask(port, 'sk-one'), 'from-n');
      const cfg = await rawRequest(`http://127.0.0.1:${port}/admin/config`, { headers: { authorization: 'Bearer sk-one' } });
      assert.equal(cfg.status, 200, cfg.text);
      const doc = JSON.parse(cfg.text);
      assert.equal(doc.lastChange.result, 'rejected');
      assert.match(doc.lastChange.error, /missing-secret/);
      const m = await rawRequest(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: 'Bearer sk-one' } });
      assert.match(m.text, /ctxgate_config_reloads_total\{result="failure"\} [1-9]/);
      // fixed: followed again, and the rejection is cleared
      await edit((s) => {
        s.authentication.apiKeys[0].secretRef.name = 'keys';
        s.modelTargets[1].config.mock.text = 'v3';
      });
      await within(textIs(port, 'sk-one', 'v3'), 2000, 'the fixed configuration');
      const cfg2 = JSON.parse((await rawRequest(`http://127.0.0.1:${port}/admin/config`, { headers: { authorization: 'Bearer sk-one' } })).text);
      assert.equal(cfg2.lastChange.result, 'accepted');
    }));

    test('a rotated Secret: the old key is refused, the new one works', withLogs(async () => {
      const cur = await kube.get('v1', 'Secret', 'default', 'keys');
      cur.data = { key: b64('sk-two') };
      await kube.update(cur);
      await within(textIs(port, 'sk-two', 'v3'), 2000, 'the new key accepted');
      await assert.rejects(ask(port, 'sk-one'), (e) => e.status === 401);
    }));

    test('the watch survives an API server restart', withLogs(async () => {
      await kube.restart();
      // the test's own first request may meet a connection the restart closed: retry it
      await kube.waitFor(async () => (await edit((s) => (s.modelTargets[1].config.mock.text = 'after-restart')), true), { what: 'an update after the restart' });
      await within(textIs(port, 'sk-two', 'after-restart'), 15000, 'a change after the restart');
    }));

    test('410 Gone: a re-list, then later changes land', withLogs(async () => {
      const mark = kube.logs().split('\n').length;
      await kube.expireResourceVersions();
      await kube.restart(); // the watch resumes from an expired resourceVersion
      await kube.waitFor(async () => (await edit((s) => (s.modelTargets[1].config.mock.text = 'after-410')), true), { what: 'an update after the restart' });
      await within(textIs(port, 'sk-two', 'after-410'), 15000, 'a change after the 410');
      if (mode.name === 'fake') {
        // a watch resumed from an expired resourceVersion got 410 and its informer listed again
        // (one resumed from the newest resourceVersion is still valid, as on a real server)
        const relisted = () => kube.logs().split('\n').slice(mark).some((l) => /^GET \/api\/v1\/namespaces\/default\/secrets\?(?!.*watch=).*fieldSelector=metadata\.name%3Dkeys/.test(l));
        await kube.waitFor(relisted, { timeoutMs: 15000, what: 'a re-list of the Secret after 410' });
      }
      await edit((s) => (s.modelTargets[1].config.mock.text = 'after-410-again'));
      await within(textIs(port, 'sk-two', 'after-410-again'), 2000, 'the next change');
    }));

    test('a deleted LLMGateway keeps the last configuration', withLogs(async () => {
      await kube.delete('ctxgate.io/v1alpha1', 'LLMGateway', 'default', NAME);
      await within(async () => /LLMGateway default\/live not found \(deleted\?\); still serving/.test(gw.stderr()), 3000, 'the warning');
      assert.equal(await ask(port, 'sk-two'), 'after-410-again');
    }));

    test('in-cluster configuration, without --kubeconfig', withLogs(async (t) => {
      if (typeof kube.inClusterEnv !== 'function') return t.skip('the harness has no kube.inClusterEnv()');
      const p2 = await freePort();
      await kube.create(gateway('incluster', p2, { text: 'in-cluster' }));
      const env = { ...kube.inClusterEnv(), KUBECONFIG: '' };
      const g2 = await startServe({ name: 'incluster', port: p2, env });
      model = 'm';
      try {
        assert.equal(await ask(p2, 'sk-two'), 'in-cluster');
        assert.match(g2.stderr(), /in-cluster/);
      } finally {
        await g2.stop();
      }
    }));

    test('start-up fails naming a missing gateway or Secret', withLogs(async () => {
      const env = { CTXGATE_KUBE_STARTUP_SECONDS: '2' };
      let r = await runCtxgate(['serve', '--kube', '--gateway', 'nope', '--kubeconfig', kube.kubeconfig, '--namespace', 'default'], { env });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /no valid configuration for LLMGateway default\/nope within 2 s: LLMGateway default\/nope not found/);
      const p3 = await freePort();
      await kube.create(gateway('orphan', p3, { text: 'x', secretName: 'absent' }));
      r = await runCtxgate(['serve', '--kube', '--gateway', 'orphan', '--kubeconfig', kube.kubeconfig, '--namespace', 'default'], { env });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /Secret default\/absent referenced by spec\.authentication\.apiKeys\[0\]\.secretRef not found or not readable \(RBAC\?\)/);
    }));
  });
}

describe('serve --kube flags', () => {
  test('--kube needs --gateway; -f and --kube are exclusive; --help documents them', async () => {
    let r = await runCtxgate(['serve', '--kube']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--kube needs --gateway NAME/);
    r = await runCtxgate(['serve', '--kube', '--gateway', 'x', '-f', 'examples/quickstart']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /-f and --kube are exclusive/);
    r = await runCtxgate(['serve', '-f', 'examples/quickstart', '--namespace', 'x']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /only apply with --kube/);
    r = await runCtxgate(['serve', '--help']);
    assert.equal(r.code, 0);
    for (const f of ['--kube', '--namespace', '--kubeconfig']) assert.ok(r.stdout.includes(f), f);
    r = await runCtxgate(['serve', '--kube', '--gateway', 'x', '--kubeconfig', '/nonexistent/kubeconfig']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nonexistent/);
  });
});
