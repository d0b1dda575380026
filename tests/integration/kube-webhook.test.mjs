// kube-webhook.test.mjs — `ctxgate webhook`: AdmissionReviews POSTed over HTTPS (a certificate
// made with openssl) for a good gateway (allowed), a bad spec (denied naming the field), a
// gateway referencing a Secret the API server does not have (denied naming the reference), an MCP
// whose Secret is missing, a DELETE (allowed), garbage (400), wrong method / path (405 / 404);
// an API server that cannot be reached denies with the reason within the time budget; a rotated
// certificate is served without a restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

import { kubeModes, startKube } from '../lib/kube.mjs';
import { freePort, gatewayBinary, REPO_ROOT, runCtxgate, sanitizerReports } from '../lib/gateway.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A self-signed certificate for 127.0.0.1 (it is its own CA): {cert, key} PEM text. */
function makeCert(dir, tag) {
  const key = path.join(dir, `${tag}.key`);
  const crt = path.join(dir, `${tag}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '1',
    '-subj', `/CN=ctxgate-webhook-${tag}`, '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert: fs.readFileSync(crt, 'utf8'), key: fs.readFileSync(key, 'utf8') };
}

function post(port, ca, pathName, body, method = 'POST') {
  return new Promise((resolve, reject) => {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    const req = https.request({ host: '127.0.0.1', port, path: pathName, method, ca, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }, timeout: 10000 }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text, json: (() => { try { return JSON.parse(text); } catch { return null; } })() }));
    });
    req.on('error', reject);
    req.end(method === 'GET' ? undefined : data);
  });
}

/** The SHA-256 fingerprint of the certificate the server presents. */
function servedFingerprint(port) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.on('error', reject);
  });
}

const fingerprintOf = (pem) => new crypto.X509Certificate(pem).fingerprint256;

async function startWebhook({ dir, port, kubeconfig }) {
  const args = ['webhook', '--tls-cert', path.join(dir, 'tls.crt'), '--tls-key', path.join(dir, 'tls.key'), '--address', '127.0.0.1', '--port', String(port), '--kubeconfig', kubeconfig];
  const proc = spawn(gatewayBinary(), args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  let exitInfo = null;
  const exited = new Promise((resolve) => proc.on('close', (code, signal) => resolve((exitInfo = { code, signal }))));
  const wh = {
    stderr: () => stderr,
    async stop() {
      if (!exitInfo) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => exitInfo || proc.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
      return exitInfo;
    },
  };
  const deadline = Date.now() + 15000;
  for (;;) {
    if (exitInfo) throw new Error(`webhook exited (${JSON.stringify(exitInfo)})\n${stderr}`);
    try {
      await servedFingerprint(port);
      break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`webhook did not listen within 15 s\n${stderr}`);
    await sleep(50);
  }
  return wh;
}

let uidN = 0;
const review = (operation, object, { kind = object?.kind || 'LLMGateway', oldObject = null } = {}) => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: `uid-${++uidN}`,
    kind: { group: kind === 'Secret' ? '' : 'ctxgate.io', version: kind === 'Secret' ? 'v1' : 'v1alpha1', kind },
    resource: { group: 'ctxgate.io', version: 'v1alpha1', resource: 'llmgateways' },
    namespace: 'default',
    operation,
    userInfo: { username: 'test' },
    object,
    oldObject,
    dryRun: false,
  },
});

const gateway = ({ target = 'm', secretName = 'wh-keys', contextRef } = {}) => ({
  apiVersion: 'ctxgate.io/v1alpha1',
  kind: 'LLMGateway',
  metadata: { name: 'gw' },
  spec: {
    listener: { port: 8080 },
    modelTargets: [{ name: 'm', type: 'Mock' }],
    routes: [{ name: 'main', ...(contextRef ? { contextRef: { name: contextRef } } : {}), backends: [{ target }] }],
    authentication: { type: 'APIKey', apiKeys: [{ name: 'k', secretRef: { name: secretName, key: 'key' } }] },
  },
});

for (const mode of kubeModes()) {
  describe(`webhook (${mode.name} API server)`, { skip: mode.skip }, () => {
    let kube;
    let wh;
    let port;
    let dir;
    let ca;

    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true });
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-wh-'));
      const c = makeCert(dir, 'first');
      fs.writeFileSync(path.join(dir, 'tls.crt'), c.cert);
      fs.writeFileSync(path.join(dir, 'tls.key'), c.key);
      ca = c.cert;
      await kube.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'wh-keys', namespace: 'default' }, data: { key: Buffer.from('sk-x').toString('base64') } });
      port = await freePort();
      wh = await startWebhook({ dir, port, kubeconfig: kube.kubeconfig });
    });

    after(async () => {
      const exit = await wh?.stop();
      if (exit) {
        assert.equal(exit.code, 0, wh.stderr());
        assert.equal(sanitizerReports(wh.stderr()), '');
      }
      await kube?.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    test('a good gateway is allowed, the uid echoed', async () => {
      const r = review('CREATE', gateway());
      const res = await post(port, ca, '/validate', r);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.apiVersion, 'admission.k8s.io/v1');
      assert.equal(res.json.kind, 'AdmissionReview');
      assert.equal(res.json.response.uid, r.request.uid);
      assert.equal(res.json.response.allowed, true, res.text);
    });

    test('a bad spec is denied with the field path', async () => {
      const res = await post(port, ca, '/validate', review('CREATE', gateway({ target: 'nope' })));
      assert.equal(res.json.response.allowed, false, res.text);
      assert.equal(res.json.response.status.code, 422);
      assert.equal(res.json.response.status.reason, 'Invalid');
      assert.match(res.json.response.status.message, /LLMGateway default\/gw: spec\.routes\[0\]\.backends\[0\]\.target/);
    });

    test('a Secret that does not exist is denied naming the reference', async () => {
      const res = await post(port, ca, '/validate', review('CREATE', gateway({ secretName: 'not-there' })));
      assert.equal(res.json.response.allowed, false, res.text);
      assert.match(res.json.response.status.message, /spec\.authentication\.apiKeys\[0\]\.secretRef/);
      assert.match(res.json.response.status.message, /not-there/);
      // an UPDATE that changes the spec is checked the same way; one that does not passes
      const bad = gateway({ secretName: 'not-there' });
      let u = await post(port, ca, '/validate', review('UPDATE', bad, { oldObject: gateway() }));
      assert.equal(u.json.response.allowed, false, u.text);
      u = await post(port, ca, '/validate', review('UPDATE', bad, { oldObject: bad }));
      assert.equal(u.json.response.allowed, true, u.text);
    });

    test('a context store reference: a missing MCP is denied, an existing one allowed', async () => {
      let res = await post(port, ca, '/validate', review('CREATE', gateway({ contextRef: 'hist' })));
      assert.equal(res.json.response.allowed, false, res.text);
      assert.match(res.json.response.status.message, /spec\.routes\[0\]\.contextRef/);
      const mcp = { apiVersion: 'ctxgate.io/v1alpha1', kind: 'ModelContextProtocol', metadata: { name: 'hist', namespace: 'default' }, spec: { storage: { type: 'Memory' } } };
      await kube.create(mcp);
      res = await post(port, ca, '/validate', review('CREATE', gateway({ contextRef: 'hist' })));
      assert.equal(res.json.response.allowed, true, res.text);
      // an MCP whose password Secret is missing is denied itself
      const redis = { apiVersion: 'ctxgate.io/v1alpha1', kind: 'ModelContextProtocol', metadata: { name: 'r' }, spec: { storage: { type: 'Redis', config: { url: 'redis://127.0.0.1:6379', passwordRef: { name: 'no-pw', key: 'pw' } } } } };
      res = await post(port, ca, '/validate', review('CREATE', redis));
      assert.equal(res.json.response.allowed, false, res.text);
      assert.match(res.json.response.status.message, /ModelContextProtocol default\/r: spec\.storage\.config\.passwordRef/);
    });

    test('DELETE and other kinds are allowed', async () => {
      let res = await post(port, ca, '/validate', review('DELETE', null, { kind: 'LLMGateway', oldObject: gateway({ target: 'nope' }) }));
      assert.equal(res.json.response.allowed, true, res.text);
      res = await post(port, ca, '/validate', review('CREATE', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'x' } }, { kind: 'Secret' }));
      assert.equal(res.json.response.allowed, true, res.text);
    });

    test('garbage is 400, wrong method 405, other paths 404, /healthz 200', async () => {
      let res = await post(port, ca, '/validate', 'this is not json');
      assert.equal(res.status, 400);
      assert.match(res.json.message, /not JSON/);
      res = await post(port, ca, '/validate', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' });
      assert.equal(res.status, 400);
      assert.match(res.json.message, /request/);
      res = await post(port, ca, '/validate', '', 'GET');
      assert.equal(res.status, 405);
      assert.equal(res.headers.allow, 'POST');
      res = await post(port, ca, '/elsewhere', '{}');
      assert.equal(res.status, 404);
      res = await post(port, ca, '/healthz', '', 'GET');
      assert.equal(res.status, 200);
    });

    test('an unreachable API server denies with the reason, within the budget', async () => {
      const deadPort = await freePort();
      const kc = fs.readFileSync(kube.kubeconfig, 'utf8').replace(/server:\s*\S+/, `server: https://127.0.0.1:${deadPort}`);
      const kcFile = path.join(dir, 'dead.kubeconfig');
      fs.writeFileSync(kcFile, kc);
      const p2 = await freePort();
      const wh2 = await startWebhook({ dir, port: p2, kubeconfig: kcFile });
      try {
        const start = Date.now();
        const res = await post(p2, ca, '/validate', review('CREATE', gateway()));
        assert.ok(Date.now() - start < 4500, `took ${Date.now() - start} ms`);
        assert.equal(res.json.response.allowed, false, res.text);
        assert.equal(res.json.response.status.code, 500);
        assert.match(res.json.response.status.message, /cannot check Secret default\/wh-keys referenced by spec\.authentication\.apiKeys\[0\]\.secretRef/);
      } finally {
        await wh2.stop();
      }
    });

    test('a rotated certificate is served without a restart', async () => {
      assert.equal(await servedFingerprint(port), fingerprintOf(ca));
      const next = makeCert(dir, 'second');
      // the way a Secret volume changes: new files renamed into place
      fs.writeFileSync(path.join(dir, '.tls.key.tmp'), next.key);
      fs.writeFileSync(path.join(dir, '.tls.crt.tmp'), next.cert);
      fs.renameSync(path.join(dir, '.tls.key.tmp'), path.join(dir, 'tls.key'));
      fs.renameSync(path.join(dir, '.tls.crt.tmp'), path.join(dir, 'tls.crt'));
      const want = fingerprintOf(next.cert);
      const deadline = Date.now() + 5000;
      while ((await servedFingerprint(port)) !== want) {
        if (Date.now() > deadline) throw new Error(`the new certificate was not served within 5 s\n${wh.stderr()}`);
        await sleep(100);
      }
      ca = next.cert;
      const res = await post(port, ca, '/validate', review('CREATE', gateway()));
      assert.equal(res.json.response.allowed, true, res.text);
    });
  });
}

describe('webhook flags', () => {
  test('--tls-cert and --tls-key are required; --help documents the flags', async () => {
    let r = await runCtxgate(['webhook']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--tls-cert and --tls-key are required/);
    r = await runCtxgate(['webhook', '--help']);
    assert.equal(r.code, 0);
    for (const f of ['--tls-cert', '--tls-key', '--address', '--port', '--kubeconfig']) assert.ok(r.stdout.includes(f), f);
    r = await runCtxgate(['webhook', '--tls-cert', '/nonexistent.crt', '--tls-key', '/nonexistent.key']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /nonexistent\.crt/);
  });
});
