// http-port.test.mjs — a second gateway on a port the first one holds must refuse to start
// (nginx: "bind() ... failed (98: Address already in use)") instead of joining the first one's
// SO_REUSEPORT group and silently taking a share of its connections; the first keeps every
// request. Its own workers still share the port, before and after a configuration reload.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';

import { runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';
import { rawRequest, waitFor } from '../lib/http.mjs';

const manifest = (name, port, extra = '') => `
apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: ${name}}
spec:
  listener: {port: ${port}}
  modelTargets:
  - name: m
    type: Mock
  authentication: {type: None}
${extra}`;

describe('one gateway per port', () => {
  let a;
  let bDir;

  before(async () => {
    a = await startGateway({ manifests: manifest('gw-a', '__PORT__'), workers: 2 });
    bDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-it-b-'));
    fs.writeFileSync(path.join(bDir, 'gateway.yaml'), manifest('gw-b', a.port));
  });

  after(async () => {
    if (a) await a.stop();
    if (bDir) fs.rmSync(bDir, { recursive: true, force: true });
  });

  // Every answer must come from A: A's access log grows by one line per request.
  async function askAll(n) {
    const logged = () => a.accessLog().filter((l) => l.path === '/v1/chat/completions').length;
    const before = logged();
    for (let i = 0; i < n; i++) {
      const res = await rawRequest(`${a.baseURL}/chat/completions`, {
        method: 'POST',
        body: { model: 'm', messages: [{ role: 'user', content: `request ${i}` }] },
      });
      assert.equal(res.status, 200, res.text);
    }
    // the access-log line follows the answer: wait for all of them, then check none is extra
    await waitFor(() => logged() - before >= n, { what: `gateway A logged ${n} answers` });
    assert.equal(logged() - before, n, 'gateway A answered every request');
  }

  async function startB() {
    // with the defect, B starts and serves: the run only ends with the SIGKILL at the timeout
    const res = await runCtxgate(['serve', '-f', bDir, '--workers', '2'], { timeoutMs: 10000 });
    assert.equal(res.signal, null, `gateway B kept running on A's port:\n${res.stderr}`);
    assert.notEqual(res.code, 0, `gateway B exited 0:\n${res.stderr}`);
    assert.match(res.stderr, new RegExp(`cannot listen on 0\\.0\\.0\\.0:${a.port}: address already in use`));
  }

  test(
    'a second gateway on the same port exits with a clear message; the first answers every request',
    withLogs(
      () => a,
      async () => {
        await askAll(4);
        await startB();
        await askAll(20);
      }
    )
  );

  test(
    'after a reload the port is still held: a second gateway is still refused',
    withLogs(
      () => a,
      async () => {
        const moved = await a.reload(manifest('gw-a', a.port, '  transformation:\n    inputValidation: {maxBodyBytes: 8192}\n'), {
          expect: 'success',
        });
        assert.ok(moved.success >= 1);
        await startB();
        await askAll(10);
      }
    )
  );

  test(
    'when the first gateway stops, the port is free for the next one',
    withLogs(
      () => a,
      async () => {
        const port = a.port;
        await a.stop();
        a = await startGateway({ manifests: manifest('gw-c', port), port, workers: 2 });
        const res = await rawRequest(`${a.baseURL}/chat/completions`, {
          method: 'POST',
          body: { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
        });
        assert.equal(res.status, 200, res.text);
        await waitFor(() => a.accessLog().some((l) => l.gateway === 'gw-c'), { what: 'gateway C logged the answer' });
      }
    )
  );
});

describe('one gateway per port, TLS listener', () => {
  let a;
  let tmp;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-it-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', path.join(tmp, 'tls.key'), '-out', path.join(tmp, 'tls.crt'),
    ], { stdio: 'ignore' });
    const b64 = (f) => fs.readFileSync(path.join(tmp, f)).toString('base64');
    const secret = `apiVersion: v1
kind: Secret
metadata: {name: gw-tls}
type: kubernetes.io/tls
data: {tls.crt: ${b64('tls.crt')}, tls.key: ${b64('tls.key')}}
---`;
    a = await startGateway({
      manifests: `${secret}\n${manifest('gw-tls', '__PORT__').replace('  listener: {port: __PORT__}', '  listener: {port: __PORT__, tlsSecretRef: {name: gw-tls}}')}`,
      ready: (port) => httpsGetStatus(port).then((s) => s === 200).catch(() => false),
    });
    fs.mkdirSync(path.join(tmp, 'b'));
    fs.writeFileSync(path.join(tmp, 'b', 'gateway.yaml'), manifest('gw-b', a.port));
  });

  after(async () => {
    if (a) await a.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  function httpsGetStatus(port) {
    return new Promise((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', reject);
    });
  }

  test(
    'a plain gateway on the TLS gateway\'s port is refused; the TLS gateway serves on',
    withLogs(
      () => a,
      async () => {
        const res = await runCtxgate(['serve', '-f', path.join(tmp, 'b'), '--workers', '2'], { timeoutMs: 10000 });
        assert.equal(res.signal, null, `gateway B kept running on A's port:\n${res.stderr}`);
        assert.notEqual(res.code, 0);
        assert.match(res.stderr, new RegExp(`cannot listen on 0\\.0\\.0\\.0:${a.port}: address already in use`));
        for (let i = 0; i < 10; i++) assert.equal(await httpsGetStatus(a.port), 200);
      }
    )
  );
});
