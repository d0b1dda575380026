// tls.test.mjs — listener.tlsSecretRef: the gateway serves HTTPS with the certificate and key from
// a Secret (tls.crt / tls.key), on the same loop as plain HTTP, whole and streamed answers; a
// client that does not trust the certificate is refused at the handshake; plain HTTP to the TLS
// port gets no answer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startGateway, withLogs } from '../lib/gateway.mjs';

function httpsGet(port, p, agentOpts) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: p, servername: 'localhost', ...agentOpts },
      (res) => {
        const peer = res.socket.getPeerCertificate();
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body, peer }));
      }
    );
    req.on('error', reject);
    req.end();
  });
}

describe('TLS listener (listener.tlsSecretRef)', () => {
  let gw;
  let cert;
  let tmp;
  const logs = () => [gw];

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', path.join(tmp, 'tls.key'), '-out', path.join(tmp, 'tls.crt'),
    ], { stdio: 'ignore' });
    cert = fs.readFileSync(path.join(tmp, 'tls.crt'), 'utf8');
    const key = fs.readFileSync(path.join(tmp, 'tls.key'), 'utf8');
    const secret = {
      apiVersion: 'v1', kind: 'Secret', metadata: { name: 'gw-tls' },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': Buffer.from(cert).toString('base64'), 'tls.key': Buffer.from(key).toString('base64') },
    };
    const gateway = {
      apiVersion: 'ctxgate.io/v1alpha1', kind: 'LLMGateway', metadata: { name: 'tls' },
      spec: {
        listener: { port: '__PORT__', tlsSecretRef: { name: 'gw-tls' } },
        modelTargets: [{ name: 'echo', type: 'Mock', config: { mock: { chunks: 2 } } }],
      },
    };
    // __PORT__ must be an integer in YAML: write the gateway as text
    const yaml = `${JSON.stringify(secret)}\n---\n${JSON.stringify(gateway).replace('"__PORT__"', '__PORT__')}`;
    gw = await startGateway({
      manifests: yaml,
      ready: async (port) => (await httpsGet(port, '/healthz', { ca: cert })).status === 200,
    });
  });

  after(async () => {
    await gw?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  function httpsPost(body) {
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port: gw.port, servername: 'localhost', ca: cert, method: 'POST',
          path: '/v1/chat/completions', headers: { 'content-type': 'application/json' } },
        (r) => {
          let b = '';
          r.on('data', (d) => (b += d));
          r.on('end', () => resolve({ status: r.statusCode, headers: r.headers, body: b }));
        }
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  }

  test(
    'HTTPS with the Secret certificate: health, a chat completion, and a streamed one',
    withLogs(logs, async () => {
      const h = await httpsGet(gw.port, '/healthz', { ca: cert });
      assert.equal(h.status, 200);
      assert.equal(h.peer.subject.CN, 'localhost');
      const res = await httpsPost({ model: 'echo', messages: [{ role: 'user', content: 'over tls' }] });
      assert.equal(res.status, 200, res.body);
      assert.equal(JSON.parse(res.body).choices[0].message.content, 'over tls');
      const st = await httpsPost({
        model: 'echo', stream: true, messages: [{ role: 'user', content: 'streamed over tls' }],
      });
      assert.equal(st.status, 200, st.body);
      assert.match(st.headers['content-type'], /^text\/event-stream/);
      const events = st.body.split('\n\n').filter((e) => e.startsWith('data: '));
      assert.equal(events.at(-1), 'data: [DONE]');
      const text = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)))
        .map((c) => c.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, 'streamed over tls');
    })
  );

  test(
    'a client that does not trust the certificate is refused at the handshake',
    withLogs(logs, async () => {
      await assert.rejects(httpsGet(gw.port, '/healthz', {}), (e) =>
        /self[- ]signed|unable to verify|certificate/i.test(e.message)
      );
    })
  );

  test(
    'plain HTTP to the TLS port is not served',
    withLogs(logs, async () => {
      let answered = false;
      try {
        const r = await fetch(`http://127.0.0.1:${gw.port}/healthz`, { signal: AbortSignal.timeout(3000) });
        answered = r.status === 200;
      } catch {
        /* the handshake fails and the connection closes */
      }
      assert.equal(answered, false);
    })
  );
});
