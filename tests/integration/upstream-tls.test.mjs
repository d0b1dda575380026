// upstream-tls.test.mjs — modelTargets[].config.tls against HTTPS fakes with their own CA,
// generated here with the openssl CLI: a private CA (caSecretRef) is trusted and replaces the
// system bundle; an untrusted certificate, a wrong CA or a name the certificate does not carry
// is refused (502, the gateway log names the certificate problem); serverName lets an endpoint
// given by IP address be verified under its certificate's name; a client certificate
// (clientCertSecretRef) passes a fake that requires one, which refuses the gateway without it;
// insecureSkipVerify connects to anything and `ctxgate validate` warns about it. Targets with
// different TLS settings to the same host and port never share a connection: each request of
// the one worker below is judged by its own target's settings.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';

import { startFakeOpenAI } from '../fakes/openai.mjs';
import { runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(dir, args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A CA, and certificates it signs: name -> {crt, key} (PEM text).
function makePki(dir) {
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  const ca = (name) => {
    openssl(dir, ['req', '-x509', ...EC, '-days', '1', '-subj', `/CN=ctxgate test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=keyCertSign,cRLSign',
      '-keyout', `${name}.key`, '-out', `${name}.crt`]);
    return { crt: read(`${name}.crt`), key: read(`${name}.key`) };
  };
  const leaf = (name, cn, ext) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(dir, ['req', ...EC, '-subj', `/CN=${cn}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key',
      '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
    return { crt: read(`${name}.crt`), key: read(`${name}.key`) };
  };
  return {
    ca: ca('ca'),
    otherCa: ca('other-ca'),
    // no IP address in the certificate: https://127.0.0.1 only verifies with serverName
    server: leaf('server', 'upstream.test',
      'subjectAltName=DNS:upstream.test,DNS:localhost\nextendedKeyUsage=serverAuth\n'),
    client: leaf('client', 'ctxgate gateway', 'extendedKeyUsage=clientAuth\n'),
  };
}

const b64 = (s) => Buffer.from(s).toString('base64');

describe('upstream TLS (modelTargets[].config.tls)', () => {
  let tmp;
  let pki;
  let fake; // server certificate from the test CA
  let mtlsFake; // the same, and it requires a client certificate from the test CA
  let gw;
  let client;
  const logs = () => [gw];

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-upstream-tls-'));
    pki = makePki(tmp);
    fake = await startFakeOpenAI({ tls: { key: pki.server.key, cert: pki.server.crt } });
    mtlsFake = await startFakeOpenAI({
      tls: { key: pki.server.key, cert: pki.server.crt, ca: pki.ca.crt, requestCert: true, rejectUnauthorized: true },
    });
    const byName = `https://localhost:${fake.port}/v1`;
    const byIp = `https://127.0.0.1:${fake.port}/v1`;
    const mtls = `https://localhost:${mtlsFake.port}/v1`;
    const ca = { caSecretRef: { name: 'upstream-ca' } };
    const target = (name, endpoint, tls) => ({ name, type: 'OpenAICompatible', config: { endpoint, ...(tls ? { tls } : {}) } });
    const manifests = [
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'upstream-ca' }, data: { 'ca.crt': b64(pki.ca.crt) } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'other-ca' }, stringData: { 'bundle.pem': pki.otherCa.crt } },
      {
        apiVersion: 'v1', kind: 'Secret', metadata: { name: 'gateway-client' }, type: 'kubernetes.io/tls',
        data: { 'tls.crt': b64(pki.client.crt), 'tls.key': b64(pki.client.key) },
      },
      {
        apiVersion: 'ctxgate.io/v1alpha1', kind: 'LLMGateway', metadata: { name: 'upstream-tls' },
        spec: {
          listener: { port: '__PORT__' },
          modelTargets: [
            target('private-ca', byName, ca),
            target('system-ca', byName),
            target('other-ca', byName, { caSecretRef: { name: 'other-ca', key: 'bundle.pem' } }),
            target('by-ip', byIp, ca),
            target('by-ip-named', byIp, { ...ca, serverName: 'upstream.test' }),
            target('by-ip-misnamed', byIp, { ...ca, serverName: 'other.test' }),
            target('mtls', mtls, { ...ca, clientCertSecretRef: { name: 'gateway-client' } }),
            target('mtls-no-cert', mtls, ca),
            target('insecure', byIp, { insecureSkipVerify: true }),
          ],
        },
      },
    ];
    const yaml = manifests.map((m) => JSON.stringify(m).replace('"__PORT__"', '__PORT__')).join('\n---\n');
    // one worker: every request goes through the same libcurl connection cache
    gw = await startGateway({ manifests: yaml, workers: 1 });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
  });

  after(async () => {
    await gw?.stop();
    await fake?.close();
    await mtlsFake?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const ask = (model) =>
    client.chat.completions.create({ model, messages: [{ role: 'user', content: `hello ${model}` }] });

  // 502; the reason is in the gateway's log, not in the answer
  async function refused(model, logPattern, code = 'upstream_unavailable') {
    const before = gw.stderr().length;
    await assert.rejects(ask(model), (err) => {
      assert.equal(err.status, 502, `${model}: ${err.message}`);
      assert.equal(err.code, code);
      assert.match(err.message, new RegExp(`model target '${model}'`));
      return true;
    });
    const log = gw.stderr().slice(before);
    assert.match(log, new RegExp(`model target '${model}' failed: `));
    assert.match(log, logPattern);
  }

  test('caSecretRef: the private CA is trusted; without it, or with another CA, the certificate is refused',
    withLogs(logs, async () => {
      const n = fake.chatRequests().length;
      const ok = await ask('private-ca');
      assert.equal(ok.choices[0].message.content, 'reply to: hello private-ca');
      // same host and port, just after a verified connection to it was made: not reused
      await refused('system-ca', /SSL certificate problem: unable to get local issuer certificate; check the upstream's certificate or the system CA bundle/);
      await refused('other-ca', /SSL certificate problem: unable to get local issuer certificate; check the upstream's certificate against the CA configured for it \(config\.tls\.caSecretRef; the system CA bundle is not used\)/);
      assert.equal(fake.chatRequests().length, n + 1);
    }));

  test('serverName: an endpoint by IP address verifies under the certificate\'s name, and only that name',
    withLogs(logs, async () => {
      await refused('by-ip', /no alternative certificate subject name matches target host name '127\.0\.0\.1'/);
      const n = fake.chatRequests().length;
      const ok = await ask('by-ip-named');
      assert.equal(ok.choices[0].message.content, 'reply to: hello by-ip-named');
      const seen = fake.chatRequests()[n];
      assert.equal(seen.headers.host, `upstream.test:${fake.port}`);
      await refused('by-ip-misnamed', /https:\/\/other\.test:\d+\/v1\/chat\/completions \(at 127\.0\.0\.1:\d+\).*no alternative certificate subject name matches target host name 'other\.test'/);
      assert.equal(fake.chatRequests().length, n + 1);
    }));

  test('clientCertSecretRef: mutual TLS passes; without the client certificate the server refuses',
    withLogs(logs, async () => {
      const ok = await ask('mtls');
      assert.equal(ok.choices[0].message.content, 'reply to: hello mtls');
      assert.equal(mtlsFake.chatRequests().length, 1);
      // a connection with the client certificate is open to the same host and port: not reused.
      // TLS 1.3 servers check the client certificate after the client's side of the handshake,
      // so the refusal arrives as an alert in place of the answer: upstream_error, not connect.
      await refused('mtls-no-cert', /upstream https:\/\/localhost:\d+\/v1\/chat\/completions failed before a response arrived: .*alert certificate required/, 'upstream_error');
      assert.equal(mtlsFake.chatRequests().length, 1);
    }));

  test('insecureSkipVerify: connects without verification, and validate warns about it',
    withLogs(logs, async () => {
      const ok = await ask('insecure');
      assert.equal(ok.choices[0].message.content, 'reply to: hello insecure');
      // the unverified connection to 127.0.0.1 is not lent to a target that verifies
      await refused('by-ip', /no alternative certificate subject name matches target host name '127\.0\.0\.1'/);
      const v = await runCtxgate(['validate', gw.dir]);
      assert.equal(v.code, 0, v.stdout + v.stderr);
      const warnings = v.stdout.split('\n').filter((l) => l.includes('warning:'));
      assert.equal(warnings.length, 1, v.stdout);
      assert.match(warnings[0], /spec\.modelTargets\[8\]\.config\.tls\.insecureSkipVerify: the endpoint's certificate is not verified/);
    }));
});
