// kube.mjs — the Kubernetes API server every Kubernetes test talks to: the in-process double
// (tests/fakes/kube-apiserver.mjs) or a real kube-apiserver + etcd started the way
// controller-runtime's envtest starts them.
//
//   for (const mode of kubeModes()) {               // [{name:'fake', skip:false}, {name:'real', skip:false|'reason'}]
//     describe(`x (${mode.name} API server)`, { skip: mode.skip }, () => {
//       let kube;
//       before(async () => { kube = await startKube({ mode: mode.name, crds: true }); });
//       after(async () => { await kube?.stop(); });
//   kube.url, kube.namespace ('default'), kube.token, kube.kubeconfig (bearer token),
//   kube.kubeconfigCert (client certificate CN=ctxgate-test O=system:masters), kube.caFile, kube.caPem
//   await kube.request(method, path, body?, {contentType, headers, auth:false}) -> {status, body, text, headers}
//   Typed helpers return the object on 2xx and throw a KubeError (err.status, err.body = the v1
//   Status) otherwise; get/delete return null on 404:
//     kube.create(obj), kube.get(apiVersion, kind|plural, ns, name), kube.update(obj) (PUT),
//     kube.mergePatch(apiVersion, kind, ns, name, patch), kube.patchStatus(apiVersion, kind, ns, name, patch)
//     (merge patch of /status; `patch` is the whole body, e.g. {status:{...}}), kube.delete(apiVersion, kind, ns, name),
//     kube.list(apiVersion, kind, ns|null, {labelSelector, limit, continue, ...}) -> the List
//     kube.path(apiVersion, kind, ns, name?, sub?) -> the REST path (resolved through discovery)
//   const w = await kube.watch(path, {resourceVersion, allowWatchBookmarks:'true', ...});
//     w.events (all so far), await w.next(pred?, {timeoutMs}) -> the next event matching, w.ended, w.close()
//   await kube.waitFor(async () => value-or-falsy, {timeoutMs, intervalMs, what}) -> the value; throws naming `what`
//   await kube.restart()                 the API server goes down and up on the same port, data kept
//   await kube.expireResourceVersions()  every resourceVersion before now is too old (410) from now on
//   kube.inClusterEnv() -> {KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT, CTXGATE_SERVICEACCOUNT_DIR}
//   kube.logs(); await kube.stop()       (also done on process exit)
//
// Certificates (a CA, the server's with SAN 127.0.0.1 + localhost, a client's) come from `openssl`
// in a temporary directory. CRDs come from deploy/crds/*.yaml, or from `ctxgate crds` when that
// directory is missing ($CTXGATE_BIN or build/ctxgate).
// Real mode needs CTXGATE_KUBE_ASSETS or KUBEBUILDER_ASSETS naming a directory with kube-apiserver
// and etcd (etcd may also be on PATH, e.g. Debian's etcd-server); kube-apiserver runs with
// --watch-cache=false so that an etcd compaction (etcdctl, from that directory or PATH) makes old
// resourceVersions expire for watches as well as for continue tokens.
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';

import YAML from 'yaml';

import { startFakeApiServer } from '../fakes/kube-apiserver.mjs';
import { REPO_ROOT, freePort } from './gateway.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class SkipError extends Error {}
export class KubeError extends Error {
  constructor(method, p, res) {
    super(`${method} ${p}: ${res.status} ${res.body?.reason ?? ''} ${res.body?.message ?? res.text}`);
    this.status = res.status;
    this.body = res.body;
  }
}

// ---------------------------------------------------------------------------------------------
// Modes.
function assetsDir() {
  const dir = process.env.CTXGATE_KUBE_ASSETS || process.env.KUBEBUILDER_ASSETS;
  return dir && isExecutable(path.join(dir, 'kube-apiserver')) && findTool(dir, 'etcd') ? dir : null;
}
function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
function findTool(dir, name) {
  for (const d of [dir, ...(process.env.PATH ?? '').split(':')]) if (d && isExecutable(path.join(d, name))) return path.join(d, name);
  return null;
}

export function kubeModes() {
  return [
    { name: 'fake', skip: false },
    { name: 'real', skip: assetsDir() ? false : 'no kube-apiserver: set CTXGATE_KUBE_ASSETS (or KUBEBUILDER_ASSETS) to a directory with kube-apiserver and etcd' },
  ];
}

// ---------------------------------------------------------------------------------------------
// Everything started here is stopped on exit, even when a test forgot its after hook.
const running = new Set();
process.on('exit', () => {
  for (const k of running) k.emergencyStop();
});
// A signal would end node without 'exit' handlers: turn it into an exit (servers.mjs does the same).
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15]]) process.once(sig, () => process.exit(128 + n));

function openssl(dir, ...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

// A CA, a serving certificate for 127.0.0.1/localhost and a client certificate in the
// system:masters group (what envtest's admin user has). EC keys: quick to make.
function makeCerts(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, 'req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '3', '-subj', '/CN=ctxgate-test-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name, subj, ext) => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(dir, 'req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '3', '-extfile', `${name}.ext`);
  };
  leaf('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n');
  leaf('client', '/O=system:masters/CN=ctxgate-test', 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n');
  // The service-account signing key of a real kube-apiserver (RSA, as most setups use).
  openssl(dir, 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'sa.key');
  const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');
  return { ca: read('ca.crt'), serverKey: read('server.key'), serverCert: read('server.crt'), clientKey: read('client.key'), clientCert: read('client.crt') };
}

function writeKubeconfig(file, url, caPem, user) {
  const b64 = (s) => Buffer.from(s).toString('base64');
  const doc = {
    apiVersion: 'v1', kind: 'Config', 'current-context': 'test', preferences: {},
    clusters: [{ name: 'test', cluster: { server: url, 'certificate-authority-data': b64(caPem) } }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'test', namespace: 'default' } }],
    users: [{ name: 'test', user }],
  };
  fs.writeFileSync(file, YAML.stringify(doc), { mode: 0o600 });
}

// ---------------------------------------------------------------------------------------------
// The server processes of real mode.
function startProcess(bin, args, logs) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const name = path.basename(bin);
  const take = (chunk) => {
    logs.push(`[${name}] ${chunk.toString().trimEnd()}`);
    if (logs.length > 2000) logs.splice(0, 1000);
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  return child;
}
async function stopProcess(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10000);
  await child.exited;
  clearTimeout(t);
}
const helpText = (bin) => {
  try {
    return execFileSync(bin, ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    return `${err.stdout ?? ''}${err.stderr ?? ''}`;
  }
};

async function startEtcd(dir, logs) {
  const bin = findTool(assetsDir(), 'etcd');
  const clientPort = await freePort();
  const peerPort = await freePort();
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [`--data-dir=${path.join(dir, 'etcd')}`, `--listen-client-urls=${client}`, `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`, `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=default=${peer}`, '--name=default'];
  if (helpText(bin).includes('unsafe-no-fsync')) args.push('--unsafe-no-fsync=true'); // as envtest does, from etcd 3.5
  const child = startProcess(bin, args, logs);
  await waitUntil(async () => {
    if (child.exitCode !== null) throw new Error(`etcd exited (${child.exitCode}):\n${logs.slice(-20).join('\n')}`);
    const r = await fetch(`${client}/health`).catch(() => null);
    return r?.ok;
  }, 30000, 'etcd /health');
  return { child, url: client };
}

function apiserverArgs({ dir, port, etcdUrl, token }) {
  const bin = path.join(assetsDir(), 'kube-apiserver');
  const f = (n) => path.join(dir, n);
  const args = [
    '--advertise-address=127.0.0.1', '--bind-address=127.0.0.1', `--secure-port=${port}`, `--etcd-servers=${etcdUrl}`,
    `--cert-dir=${f('apiserver-certs')}`, `--tls-cert-file=${f('server.crt')}`, `--tls-private-key-file=${f('server.key')}`,
    `--client-ca-file=${f('ca.crt')}`, '--service-cluster-ip-range=10.0.0.0/24', '--allow-privileged=true',
    '--disable-admission-plugins=ServiceAccount', '--authorization-mode=RBAC',
    `--service-account-issuer=https://127.0.0.1:${port}/`, `--service-account-key-file=${f('sa.key')}`,
    `--service-account-signing-key-file=${f('sa.key')}`,
    '--watch-cache=false', // watches read etcd directly, so a compaction expires their resourceVersions
  ];
  if (helpText(bin).includes('token-auth-file')) {
    fs.writeFileSync(f('tokens.csv'), `${token},ctxgate-test,ctxgate-test-uid,"system:masters"\n`);
    args.push(`--token-auth-file=${f('tokens.csv')}`);
  }
  return { bin, args };
}

async function waitUntil(fn, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
      if (/exited/.test(err.message)) throw err;
    }
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// CRDs of the repository: deploy/crds/*.yaml, else what `ctxgate crds` prints.
export function repoCrds() {
  const dir = path.join(REPO_ROOT, 'deploy', 'crds');
  let texts;
  if (fs.existsSync(dir) && fs.readdirSync(dir).some((n) => n.endsWith('.yaml'))) {
    texts = fs.readdirSync(dir).filter((n) => n.endsWith('.yaml')).sort().map((n) => fs.readFileSync(path.join(dir, n), 'utf8'));
  } else {
    const bin = process.env.CTXGATE_BIN || path.join(REPO_ROOT, 'build', 'ctxgate');
    texts = [execFileSync(bin, ['crds'], { encoding: 'utf8' })];
  }
  return texts.flatMap((t) => YAML.parseAllDocuments(t).map((d) => d.toJS())).filter((d) => d?.kind === 'CustomResourceDefinition');
}

// ---------------------------------------------------------------------------------------------
export async function startKube({ mode = 'fake', crds = false, bookmarkIntervalMs = 1000 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-kube-'));
  const certs = makeCerts(dir);
  const token = crypto.randomBytes(16).toString('hex');
  const logs = [];
  let fake = null;
  let etcd = null;
  let apiserver = null;
  let port;
  let launch;

  if (mode === 'fake') {
    fake = await startFakeApiServer({ port: 0, token, bookmarkIntervalMs, tls: { key: certs.serverKey, cert: certs.serverCert, ca: certs.ca } });
    port = fake.port;
  } else if (mode === 'real') {
    if (!assetsDir()) throw new SkipError(kubeModes()[1].skip);
    etcd = await startEtcd(dir, logs);
    port = await freePort();
    launch = apiserverArgs({ dir, port, etcdUrl: etcd.url, token });
    apiserver = startProcess(launch.bin, launch.args, logs);
  } else throw new Error(`unknown kube mode ${mode}`);

  const url = `https://127.0.0.1:${port}`;
  const kube = {
    mode, url, port, token, namespace: 'default', dir,
    caPem: certs.ca, caFile: path.join(dir, 'ca.crt'),
    kubeconfig: path.join(dir, 'kubeconfig-token.yaml'),
    kubeconfigCert: path.join(dir, 'kubeconfig-cert.yaml'),
  };
  writeKubeconfig(kube.kubeconfig, url, certs.ca, { token });
  writeKubeconfig(kube.kubeconfigCert, url, certs.ca, {
    'client-certificate-data': Buffer.from(certs.clientCert).toString('base64'),
    'client-key-data': Buffer.from(certs.clientKey).toString('base64'),
  });

  // ----- HTTP
  // Real mode authenticates with the client certificate when the server has no token file.
  const useCert = mode === 'real' && !launch.args.some((a) => a.startsWith('--token-auth-file'));
  kube.request = (method, p, body, { contentType, headers = {}, auth = true, timeoutMs = 15000 } = {}) =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
      const h = { Accept: 'application/json', ...headers };
      if (data !== undefined) h['Content-Type'] = contentType ?? 'application/json';
      if (auth && !useCert) h.Authorization = `Bearer ${token}`;
      const opts = { method, host: '127.0.0.1', port, path: p, headers: h, ca: certs.ca, timeout: timeoutMs };
      if (auth && useCert) Object.assign(opts, { cert: certs.clientCert, key: certs.clientKey });
      const req = https.request(opts, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode, body: parsed, text, headers: res.headers });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${p}: no answer in ${timeoutMs} ms`)));
      req.on('error', reject);
      if (data !== undefined) req.write(data);
      req.end();
    });

  // ----- discovery: apiVersion + kind (or plural) -> {plural, namespaced}
  const discovered = new Map();
  async function resolveResource(apiVersion, kindOrPlural) {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    const find = () => discovered.get(base)?.find((r) => !r.name.includes('/') && (r.kind === kindOrPlural || r.name === kindOrPlural));
    if (!find()) {
      const res = await kube.request('GET', base);
      if (res.status === 200) discovered.set(base, res.body.resources);
    }
    const r = find();
    if (!r) throw new Error(`the API server does not serve ${kindOrPlural} in ${apiVersion}`);
    return { base, plural: r.name, namespaced: r.namespaced };
  }
  kube.path = async (apiVersion, kind, ns, name, sub) => {
    const r = await resolveResource(apiVersion, kind);
    let p = r.base + (r.namespaced && ns ? `/namespaces/${encodeURIComponent(ns)}` : '') + `/${r.plural}`;
    if (name) p += `/${encodeURIComponent(name)}`;
    if (sub) p += `/${sub}`;
    return p;
  };
  async function call(method, p, body, opts, nullOn404 = false) {
    const res = await kube.request(method, p, body, opts);
    if (res.status >= 200 && res.status < 300) return res.body;
    if (nullOn404 && res.status === 404) return null;
    throw new KubeError(method, p, res);
  }
  const nsOf = (obj) => obj.metadata?.namespace ?? kube.namespace;
  kube.create = async (obj) => call('POST', await kube.path(obj.apiVersion, obj.kind, nsOf(obj)), obj);
  kube.get = async (apiVersion, kind, ns, name) => call('GET', await kube.path(apiVersion, kind, ns, name), undefined, {}, true);
  kube.update = async (obj) => call('PUT', await kube.path(obj.apiVersion, obj.kind, nsOf(obj), obj.metadata.name), obj);
  kube.updateStatus = async (obj) => call('PUT', await kube.path(obj.apiVersion, obj.kind, nsOf(obj), obj.metadata.name, 'status'), obj);
  const merge = { contentType: 'application/merge-patch+json' };
  kube.mergePatch = async (apiVersion, kind, ns, name, patch) => call('PATCH', await kube.path(apiVersion, kind, ns, name), patch, merge);
  kube.patchStatus = async (apiVersion, kind, ns, name, patch) => call('PATCH', await kube.path(apiVersion, kind, ns, name, 'status'), patch, merge);
  kube.delete = async (apiVersion, kind, ns, name) => call('DELETE', await kube.path(apiVersion, kind, ns, name), undefined, {}, true);
  kube.list = async (apiVersion, kind, ns, query = {}) => call('GET', `${await kube.path(apiVersion, kind, ns)}?${new URLSearchParams(query)}`);

  kube.waitFor = async (fn, { timeoutMs = 10000, intervalMs = 50, what = 'a condition' } = {}) => {
    const end = Date.now() + timeoutMs;
    let last;
    for (;;) {
      try {
        const v = await fn();
        if (v) return v;
        last = undefined;
      } catch (err) {
        last = err;
      }
      if (Date.now() >= end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
      await sleep(intervalMs);
    }
  };

  kube.watch = (p, query = {}) => openWatch(kube, certs, useCert, p, query);

  // ----- lifecycle
  async function waitReady() {
    await waitUntil(async () => {
      if (apiserver && apiserver.exitCode !== null) throw new Error(`kube-apiserver exited (${apiserver.exitCode}):\n${logs.slice(-30).join('\n')}`);
      const r = await kube.request('GET', '/readyz', undefined, { timeoutMs: 2000 }).catch(() => null);
      return r?.status === 200;
    }, 60000, 'the API server /readyz');
  }
  kube.restart = async () => {
    if (fake) return fake.restart();
    await stopProcess(apiserver);
    apiserver = startProcess(launch.bin, launch.args, logs);
    await waitReady();
  };
  kube.expireResourceVersions = async () => {
    if (fake) return fake.compact();
    const etcdctl = findTool(assetsDir(), 'etcdctl');
    if (!etcdctl) throw new SkipError('no etcdctl in the assets directory or PATH: cannot compact etcd');
    const env = { ...process.env, ETCDCTL_API: '3' };
    const status = JSON.parse(execFileSync(etcdctl, [`--endpoints=${etcd.url}`, 'endpoint', 'status', '-w', 'json'], { encoding: 'utf8', env }));
    const revision = status[0].Status.header.revision;
    execFileSync(etcdctl, [`--endpoints=${etcd.url}`, 'compact', String(revision)], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  kube.inClusterEnv = () => {
    const sa = fs.mkdtempSync(path.join(dir, 'serviceaccount-'));
    fs.writeFileSync(path.join(sa, 'token'), token);
    fs.writeFileSync(path.join(sa, 'ca.crt'), certs.ca);
    fs.writeFileSync(path.join(sa, 'namespace'), kube.namespace);
    return { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port), CTXGATE_SERVICEACCOUNT_DIR: sa };
  };
  kube.logs = () => (fake ? fake.logs() : logs.join('\n'));
  let stopped = false;
  const handle = {
    emergencyStop() {
      for (const c of [apiserver, etcd?.child]) if (c && c.exitCode === null) c.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  kube.stop = async () => {
    if (stopped) return;
    stopped = true;
    running.delete(handle);
    if (fake) await fake.stop();
    await stopProcess(apiserver);
    await stopProcess(etcd?.child);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  running.add(handle);

  try {
    if (apiserver) await waitReady();
    await ensureNamespace(kube);
    if (crds) await installCrds(kube, repoCrds());
  } catch (err) {
    await kube.stop();
    throw err;
  }
  return kube;
}

async function ensureNamespace(kube) {
  const ns = kube.namespace;
  await kube.waitFor(async () => {
    const r = await kube.request('GET', `/api/v1/namespaces/${ns}`);
    if (r.status === 200) return true;
    if (r.status === 404) {
      const c = await kube.request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
      return c.status === 201 || c.status === 409;
    }
    return false;
  }, { timeoutMs: 30000, what: `namespace ${ns}` });
}

// Create (or replace) each CRD, then wait until it is Established and its resource is served.
export async function installCrds(kube, crds) {
  for (const crd of crds) {
    const p = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions`;
    const res = await kube.request('POST', p, crd);
    if (res.status === 409) {
      const cur = await kube.request('GET', `${p}/${crd.metadata.name}`);
      const put = await kube.request('PUT', `${p}/${crd.metadata.name}`, { ...crd, metadata: { ...crd.metadata, resourceVersion: cur.body.metadata.resourceVersion } });
      if (put.status !== 200) throw new KubeError('PUT', p, put);
    } else if (res.status !== 201) throw new KubeError('POST', p, res);
  }
  for (const crd of crds) {
    const name = crd.metadata.name;
    await kube.waitFor(async () => {
      const r = await kube.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
      return r.body?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
    }, { timeoutMs: 30000, what: `CRD ${name} Established` });
    const version = crd.spec.versions.find((v) => v.served !== false).name;
    await kube.waitFor(async () => (await kube.request('GET', `/apis/${crd.spec.group}/${version}/${crd.spec.names.plural}?limit=1`)).status === 200,
      { timeoutMs: 30000, what: `${crd.spec.names.plural}.${crd.spec.group} served` });
  }
}

// A watch stream: newline-delimited JSON events collected in order.
function openWatch(kube, certs, useCert, p, query) {
  const qs = new URLSearchParams({ watch: 'true', ...query });
  const w = { events: [], ended: false, status: undefined };
  const waiters = [];
  let seen = 0;
  const wake = () => waiters.splice(0).forEach((f) => f());
  const headers = { Accept: 'application/json' };
  const opts = { method: 'GET', host: '127.0.0.1', port: kube.port, path: `${p}?${qs}`, headers, ca: certs.ca };
  if (useCert) Object.assign(opts, { cert: certs.clientCert, key: certs.clientKey });
  else headers.Authorization = `Bearer ${kube.token}`;
  return new Promise((resolve, reject) => {
    const req = https.request(opts, (res) => {
      w.status = res.statusCode;
      let buf = '';
      res.on('data', (c) => {
        buf += c;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line) w.events.push(JSON.parse(line));
        }
        wake();
      });
      const done = () => {
        w.ended = true;
        wake();
      };
      res.on('end', done);
      res.on('close', done);
      res.on('error', done);
      resolve(w);
    });
    req.on('error', (err) => {
      w.ended = true;
      wake();
      reject(err);
    });
    req.end();
    w.close = () => req.destroy();
    // The next event (after those already taken by next()) that satisfies pred.
    w.next = async (pred = () => true, { timeoutMs = 10000 } = {}) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        while (seen < w.events.length) {
          const ev = w.events[seen++];
          if (pred(ev)) return ev;
        }
        if (w.ended) throw new Error(`watch ${p} ended without the event awaited`);
        const left = end - Date.now();
        if (left <= 0) throw new Error(`watch ${p}: no such event in ${timeoutMs} ms (got ${w.events.map((e) => e.type).join(',')})`);
        await new Promise((r) => {
          const timer = setTimeout(r, left);
          waiters.push(() => (clearTimeout(timer), r()));
        });
      }
    };
  });
}
