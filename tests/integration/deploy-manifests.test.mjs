// deploy-manifests.test.mjs — the packaging a user applies: deploy/*.yaml (plain manifests),
// deploy/helm/ctxgate (the chart), the Dockerfile. helm is not installable here (no Debian
// package; npm's helm wrappers download the binary at install time), so the chart is rendered by
// tests/lib/helm-render.mjs, which knows exactly the Go-template subset the chart uses and fails
// on anything else. Checks: every document parses and names a known apiVersion/kind with
// metadata.name (and the namespace where namespaced); the files apply in order; the chart with
// default values renders the same objects as deploy/ and the same RBAC rules and container args;
// the webhook / cert-manager / ServiceMonitor / leader-election toggles; least privilege (no "*",
// no escalate/bind/impersonate) with the verbs RBAC escalation prevention requires; pod and
// container securityContext; chart CRDs identical to deploy/crds/; the controller's and webhook's
// args accepted by `ctxgate controller --help` / `ctxgate webhook --help`; the Dockerfile's
// stages, base tags, non-root USER, and that its runtime packages exist and provide every shared
// library the built binary needs (readelf + dpkg), and that the installed tree serves as
// 65532:65532 on a read-only root with only /tmp writable (unshare -m; skipped, with the reason,
// where not root).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';

import { REPO_ROOT, freePort, gatewayBinary, runCtxgate } from '../lib/gateway.mjs';
import { renderChart } from '../lib/helm-render.mjs';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const CHART = path.join(DEPLOY, 'helm', 'ctxgate');
const NS = 'ctxgate-system';
const VERSION = '0.1.0';

// apiVersion/kind -> namespaced? Everything these manifests may contain.
const KINDS = {
  'v1/Namespace': false,
  'v1/ServiceAccount': true,
  'v1/Service': true,
  'v1/Secret': true,
  'apps/v1/Deployment': true,
  'rbac.authorization.k8s.io/v1/ClusterRole': false,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': false,
  'rbac.authorization.k8s.io/v1/Role': true,
  'rbac.authorization.k8s.io/v1/RoleBinding': true,
  'admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration': false,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': false,
  'monitoring.coreos.com/v1/ServiceMonitor': true,
  'cert-manager.io/v1/Issuer': true,
  'cert-manager.io/v1/Certificate': true,
  'ctxgate.io/v1alpha1/LLMGateway': true,
  'ctxgate.io/v1alpha1/ModelContextProtocol': true,
};

// flags of the plan's CLI section, used only when the binary cannot print its own --help
const PLAN_FLAGS = {
  controller: ['--kubeconfig', '--namespace', '--gateway-image', '--metrics-address', '--metrics-port',
    '--leader-elect', '--lease-namespace', '--lease-name', '--identity', '--gateway-admin-url',
    '--resync-seconds', '--redis-image'],
  webhook: ['--tls-cert', '--tls-key', '--address', '--port', '--kubeconfig'],
};

function parseDocs(text, where) {
  const docs = YAML.parseAllDocuments(text);
  const out = [];
  for (const d of docs) {
    assert.equal(d.errors.length, 0, `${where}: ${d.errors.map((e) => e.message).join('; ')}`);
    const v = d.toJS();
    if (v === null || v === undefined) continue; // empty document (e.g. a template toggled off)
    out.push(v);
  }
  return out;
}

function checkObject(o, where, { namespace } = {}) {
  assert.equal(typeof o, 'object', `${where}: a document is a map`);
  const key = `${o.apiVersion}/${o.kind}`;
  assert.ok(key in KINDS, `${where}: unknown apiVersion/kind ${key}`);
  assert.match(o.metadata?.name ?? '', /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${where}: ${key} metadata.name is a DNS name`);
  const id = `${o.kind} ${o.metadata.name}`;
  if (KINDS[key]) {
    if (namespace !== undefined) assert.equal(o.metadata.namespace, namespace, `${where}: ${id} metadata.namespace`);
  } else {
    assert.equal(o.metadata.namespace, undefined, `${where}: ${id} is cluster-scoped and has no namespace`);
  }
}

function loadDir(dir) {
  return fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()
    .map((f) => ({ file: f, objs: parseDocs(fs.readFileSync(path.join(dir, f), 'utf8'), path.join(dir, f)) }));
}

const plain = loadDir(DEPLOY);
const plainObjs = plain.flatMap((f) => f.objs);

function render(values = {}) {
  const files = renderChart(CHART, { values, releaseName: 'ctxgate', namespace: NS });
  return files.filter((f) => f.file.endsWith('.yaml')).flatMap((f) => parseDocs(f.text, `chart ${f.file}`));
}

const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const ids = (objs) => objs.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();

function checkRbac(objs, where) {
  for (const role of objs.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')) {
    for (const [i, r] of (role.rules ?? []).entries()) {
      const at = `${where}: ${role.kind} ${role.metadata.name} rules[${i}]`;
      for (const f of ['apiGroups', 'resources', 'verbs'])
        assert.ok(Array.isArray(r[f]) && r[f].length > 0 && !r[f].includes('*'), `${at}.${f} is a list without "*"`);
      for (const v of r.verbs)
        assert.ok(!['escalate', 'bind', 'impersonate', 'deletecollection'].includes(v), `${at} grants ${v}`);
      if (r.resources.includes('secrets'))
        assert.deepEqual([...r.verbs].sort(), ['get', 'list', 'watch'], `${at}: secrets are read-only`);
    }
  }
  // the controller creates Roles granting get/list/watch on these: it must hold them itself
  const cr = find(objs, 'ClusterRole', 'ctxgate-controller');
  assert.ok(cr, `${where}: ClusterRole ctxgate-controller`);
  const holds = (group, res, verb) => cr.rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(res) && r.verbs.includes(verb));
  for (const [g, res] of [['ctxgate.io', 'llmgateways'], ['ctxgate.io', 'modelcontextprotocols'], ['', 'secrets']])
    for (const v of ['get', 'list', 'watch']) assert.ok(holds(g, res, v), `${where}: controller holds ${v} on ${res}`);
  for (const [g, res] of [['ctxgate.io', 'llmgateways/status'], ['ctxgate.io', 'modelcontextprotocols/status']])
    assert.ok(holds(g, res, 'patch'), `${where}: controller may patch ${res}`);
  for (const [g, res] of [['', 'serviceaccounts'], ['', 'services'], ['apps', 'deployments'], ['apps', 'statefulsets'],
    ['rbac.authorization.k8s.io', 'roles'], ['rbac.authorization.k8s.io', 'rolebindings'],
    ['autoscaling', 'horizontalpodautoscalers'], ['policy', 'poddisruptionbudgets']])
    for (const v of ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'])
      assert.ok(holds(g, res, v), `${where}: controller may ${v} ${res}`);
  assert.ok(holds('events.k8s.io', 'events', 'create'), `${where}: controller records Events`);
  assert.ok(!holds('', 'persistentvolumeclaims', 'create'), `${where}: PVCs come from the StatefulSet, not the controller`);
}

function checkWorkloads(objs, where) {
  const deps = objs.filter((o) => o.kind === 'Deployment');
  assert.ok(deps.length > 0, `${where}: has Deployments`);
  for (const d of deps) {
    const at = `${where}: Deployment ${d.metadata.name}`;
    const pod = d.spec.template.spec;
    const sel = d.spec.selector.matchLabels;
    for (const [k, v] of Object.entries(sel)) assert.equal(d.spec.template.metadata.labels[k], v, `${at}: selector ${k} matches the pod labels`);
    assert.ok(find(objs, 'ServiceAccount', pod.serviceAccountName), `${at}: ServiceAccount ${pod.serviceAccountName} is in the same manifests`);
    assert.equal(pod.securityContext?.runAsNonRoot, true, `${at}: pod runAsNonRoot`);
    assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${at}: pod seccompProfile`);
    assert.ok(pod.securityContext?.runAsUser > 0, `${at}: pod runAsUser is not root`);
    const tmp = pod.volumes?.find((v) => v.emptyDir && pod.containers.every((c) => c.volumeMounts?.some((m) => m.name === v.name && m.mountPath === '/tmp')));
    assert.ok(tmp, `${at}: /tmp is an emptyDir (read-only root filesystem)`);
    for (const c of pod.containers) {
      const sc = c.securityContext ?? {};
      const cat = `${at} container ${c.name}`;
      assert.equal(sc.runAsNonRoot, true, `${cat}: runAsNonRoot`);
      assert.equal(sc.readOnlyRootFilesystem, true, `${cat}: readOnlyRootFilesystem`);
      assert.equal(sc.allowPrivilegeEscalation, false, `${cat}: allowPrivilegeEscalation false`);
      assert.ok(sc.capabilities?.drop?.includes('ALL'), `${cat}: capabilities drop ALL`);
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${cat}: seccompProfile RuntimeDefault`);
      assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory && c.resources?.limits?.memory, `${cat}: resources`);
      assert.ok(c.livenessProbe?.httpGet && c.readinessProbe?.httpGet, `${cat}: probes`);
      assert.ok(!/:latest$/.test(c.image) && /:[\w.-]+$/.test(c.image), `${cat}: image ${c.image} has a pinned tag`);
      for (const p of [c.livenessProbe.httpGet.port, c.readinessProbe.httpGet.port])
        assert.ok(typeof p === 'number' || c.ports.some((q) => q.name === p), `${cat}: probe port ${p} is a named container port`);
    }
  }
  for (const s of objs.filter((o) => o.kind === 'Service')) {
    const at = `${where}: Service ${s.metadata.name}`;
    const target = deps.find((d) => Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v));
    assert.ok(target, `${at}: its selector matches a Deployment's pods`);
    const others = deps.filter((d) => d !== target && Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v));
    assert.equal(others.length, 0, `${at}: its selector matches one Deployment only`);
    for (const p of s.spec.ports)
      assert.ok(target.spec.template.spec.containers.some((c) => c.ports.some((q) => q.name === p.targetPort)), `${at}: targetPort ${p.targetPort} is a named port`);
  }
  for (const b of objs.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding')) {
    assert.ok(find(objs, b.roleRef.kind, b.roleRef.name), `${where}: ${b.kind} ${b.metadata.name} references ${b.roleRef.kind} ${b.roleRef.name} that exists`);
    for (const s of b.subjects) {
      const sa = find(objs, 'ServiceAccount', s.name);
      assert.ok(sa && sa.metadata.namespace === s.namespace, `${where}: ${b.kind} ${b.metadata.name} subject ${s.namespace}/${s.name}`);
    }
  }
  const vwc = objs.find((o) => o.kind === 'ValidatingWebhookConfiguration');
  if (vwc) {
    assert.equal(vwc.webhooks.length, 1);
    const w = vwc.webhooks[0];
    assert.equal(w.failurePolicy, 'Fail');
    assert.equal(w.sideEffects, 'None');
    assert.deepEqual(w.admissionReviewVersions, ['v1']);
    assert.equal(w.timeoutSeconds, 5);
    assert.equal(w.clientConfig.service.path, '/validate');
    assert.ok(find(objs, 'Service', w.clientConfig.service.name)?.metadata.namespace === w.clientConfig.service.namespace, `${where}: the webhook's Service exists`);
    assert.deepEqual(w.rules, [{ apiGroups: ['ctxgate.io'], apiVersions: ['v1alpha1'], resources: ['llmgateways', 'modelcontextprotocols'], operations: ['CREATE', 'UPDATE'], scope: 'Namespaced' }]);
    const wd = find(objs, 'Deployment', 'ctxgate-webhook');
    const secret = wd.spec.template.spec.volumes.find((v) => v.name === 'tls').secret.secretName;
    assert.ok(secret, `${where}: webhook mounts its TLS Secret`);
  }
}

const controllerContainer = (objs) => find(objs, 'Deployment', 'ctxgate-controller').spec.template.spec.containers[0];

describe('deploy/ plain manifests', () => {
  test('every file parses into known, well-formed objects in ctxgate-system', () => {
    assert.ok(plain.length >= 5, 'deploy/ has the numbered manifests');
    for (const { file, objs } of plain) {
      assert.match(file, /^\d\d-[a-z0-9-]+\.yaml$/, `${file} is numbered for apply order`);
      assert.ok(objs.length > 0, `${file} has objects`);
      for (const o of objs) checkObject(o, file, { namespace: NS });
    }
    assert.equal(plain[0].objs[0].kind, 'Namespace', 'the first file creates the namespace');
    assert.equal(plain[0].objs[0].metadata.name, NS);
    assert.equal(plain[0].objs[0].metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');
    assert.ok(!plainObjs.some((o) => o.kind === 'CustomResourceDefinition'), 'CRDs live only in deploy/crds/');
  });

  test('least-privilege RBAC, with the verbs RBAC escalation prevention requires', () => checkRbac(plainObjs, 'deploy/'));

  test('workloads: securityContext, probes, /tmp emptyDir, consistent selectors and references', () => {
    checkWorkloads(plainObjs, 'deploy/');
    const dep = find(plainObjs, 'Deployment', 'ctxgate-controller');
    assert.equal(dep.spec.replicas, 2);
    const args = controllerContainer(plainObjs).args;
    assert.equal(args[0], 'controller');
    assert.ok(args.includes('--leader-elect=true'));
    assert.equal(args[args.indexOf('--gateway-image') + 1], `ctxgate:${VERSION}`);
    assert.equal(args[args.indexOf('--metrics-port') + 1], '8081');
    assert.equal(args[args.indexOf('--lease-name') + 1], 'ctxgate-controller');
    const role = find(plainObjs, 'Role', 'ctxgate-controller-leader-election');
    assert.ok(role.rules.some((r) => r.resources.includes('leases') && r.resourceNames?.includes('ctxgate-controller') && r.verbs.includes('update')));
    const vwc = find(plainObjs, 'ValidatingWebhookConfiguration', 'ctxgate-webhook');
    assert.equal(vwc.metadata.annotations['cert-manager.io/inject-ca-from'], `${NS}/ctxgate-webhook`);
    assert.equal(vwc.webhooks[0].clientConfig.caBundle, undefined, 'caBundle is left to cert-manager or kubectl patch, so a re-apply keeps it');
  });

  test('deploy/examples and deploy/cert-manager parse; the example needs no provider key', () => {
    const ex = loadDir(path.join(DEPLOY, 'examples')).flatMap((f) => f.objs);
    for (const o of ex) checkObject(o, 'deploy/examples', { namespace: undefined });
    assert.ok(ex.every((o) => o.metadata.namespace === undefined), 'examples apply to the current namespace');
    const gw = ex.find((o) => o.kind === 'LLMGateway');
    assert.ok(gw.spec.modelTargets.every((t) => t.type === 'Mock'), 'Mock targets only');
    const mcp = ex.find((o) => o.kind === 'ModelContextProtocol');
    assert.equal(mcp.spec.storage.type, 'Memory');
    assert.ok(gw.spec.routes.some((r) => r.contextRef?.name === mcp.metadata.name));
    const secret = ex.find((o) => o.kind === 'Secret');
    assert.ok(gw.spec.authentication.apiKeys.every((k) => k.secretRef.name === secret.metadata.name && k.secretRef.key in secret.stringData));
    assert.equal(gw.spec.admin.address, '0.0.0.0', 'the admin listener is reachable by the controller');
    const cm = loadDir(path.join(DEPLOY, 'cert-manager')).flatMap((f) => f.objs);
    for (const o of cm) checkObject(o, 'deploy/cert-manager', { namespace: NS });
    const cert = find(cm, 'Certificate', 'ctxgate-webhook');
    const wd = find(plainObjs, 'Deployment', 'ctxgate-webhook');
    assert.equal(cert.spec.secretName, wd.spec.template.spec.volumes.find((v) => v.name === 'tls').secret.secretName);
    assert.ok(cert.spec.dnsNames.includes(`ctxgate-webhook.${NS}.svc`));
  });

  test('the example gateway passes `ctxgate validate`', async (t) => {
    if (!fs.existsSync(gatewayBinary())) return t.skip(`no binary at ${gatewayBinary()}`);
    const r = await runCtxgate(['validate', path.join(DEPLOY, 'examples')]);
    assert.equal(r.code, 0, `ctxgate validate deploy/examples\n${r.stdout}${r.stderr}`);
  });
});

describe('CLI flags in the manifests', () => {
  for (const cmd of ['controller', 'webhook']) {
    test(`args of the ${cmd} Deployment are flags \`ctxgate ${cmd} --help\` lists`, async (t) => {
      let known = null;
      if (fs.existsSync(gatewayBinary())) {
        const r = await runCtxgate([cmd, '--help']);
        const text = r.stdout + r.stderr;
        const flags = [...text.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]);
        if (r.code === 0 && flags.length > 0) known = new Set(flags);
        else t.diagnostic(`ctxgate ${cmd} --help lists no flags yet (exit ${r.code}: ${text.trim().split('\n')[0]}); checking against the plan's flag list`);
      } else t.diagnostic(`no binary at ${gatewayBinary()}; checking against the plan's flag list`);
      known ??= new Set(PLAN_FLAGS[cmd]);
      for (const objs of [plainObjs, render()]) {
        const c = find(objs, 'Deployment', `ctxgate-${cmd}`).spec.template.spec.containers[0];
        assert.equal(c.args[0], cmd);
        for (const a of c.args.slice(1).filter((x) => x.startsWith('--')))
          assert.ok(known.has(a.split('=')[0]), `${cmd} arg ${a} is a known flag (${[...known].join(' ')})`);
      }
    });
  }
});

describe('Helm chart deploy/helm/ctxgate (rendered by tests/lib/helm-render.mjs)', () => {
  test('Chart.yaml and the image tags agree with the version', () => {
    const chart = YAML.parse(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8'));
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.name, 'ctxgate');
    assert.equal(chart.appVersion, VERSION);
    const main = fs.readFileSync(path.join(REPO_ROOT, 'src', 'cli', 'main.c'), 'utf8');
    assert.match(main, new RegExp(`CTXGATE_VERSION "${VERSION.replace(/\./g, '\\.')}"`), 'the binary is the chart appVersion');
    for (const c of plainObjs.filter((o) => o.kind === 'Deployment').flatMap((d) => d.spec.template.spec.containers))
      assert.equal(c.image, `ctxgate:${VERSION}`);
  });

  test('default values render the same objects, rules and args as deploy/', () => {
    const objs = render();
    for (const o of objs) checkObject(o, 'chart', { namespace: NS });
    const expected = ids(plainObjs.filter((o) => o.kind !== 'Namespace')); // helm install --create-namespace
    assert.deepEqual(ids(objs), expected);
    for (const o of objs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role'))
      assert.deepEqual(o.rules, find(plainObjs, o.kind, o.metadata.name).rules, `${o.kind} ${o.metadata.name} rules equal deploy/`);
    for (const d of objs.filter((x) => x.kind === 'Deployment')) {
      const p = find(plainObjs, 'Deployment', d.metadata.name);
      assert.equal(d.spec.replicas, p.spec.replicas);
      assert.deepEqual(d.spec.selector, p.spec.selector);
      assert.deepEqual(d.spec.template.spec.securityContext, p.spec.template.spec.securityContext);
      const [c, pc] = [d.spec.template.spec.containers[0], p.spec.template.spec.containers[0]];
      for (const f of ['image', 'args', 'ports', 'securityContext', 'resources', 'livenessProbe', 'readinessProbe', 'volumeMounts'])
        assert.deepEqual(c[f], pc[f], `Deployment ${d.metadata.name} container ${f} equals deploy/`);
    }
    assert.deepEqual(find(objs, 'ValidatingWebhookConfiguration', 'ctxgate-webhook').webhooks,
      find(plainObjs, 'ValidatingWebhookConfiguration', 'ctxgate-webhook').webhooks);
    checkRbac(objs, 'chart');
    checkWorkloads(objs, 'chart');
    for (const o of objs) assert.equal(o.metadata.labels['app.kubernetes.io/managed-by'], 'Helm', `${o.kind} ${o.metadata.name} labels`);
  });

  test('webhook.enabled=false leaves out the webhook and its RBAC', () => {
    const objs = render({ webhook: { enabled: false } });
    assert.ok(!objs.some((o) => o.metadata.name.startsWith('ctxgate-webhook')), ids(objs).join(', '));
    assert.ok(!objs.some((o) => o.kind === 'ValidatingWebhookConfiguration'));
    checkRbac(objs, 'chart without webhook');
    checkWorkloads(objs, 'chart without webhook');
  });

  test('webhook.certManager.enabled issues the certificate and injects the CA', () => {
    const objs = render({ webhook: { certManager: { enabled: true }, tls: { caBundle: 'aWdub3JlZA==' } } });
    const vwc = find(objs, 'ValidatingWebhookConfiguration', 'ctxgate-webhook');
    assert.equal(vwc.metadata.annotations['cert-manager.io/inject-ca-from'], `${NS}/ctxgate-webhook`);
    assert.equal(vwc.webhooks[0].clientConfig.caBundle, undefined, 'cert-manager owns caBundle');
    const cert = find(objs, 'Certificate', 'ctxgate-webhook');
    assert.equal(cert.spec.secretName, 'ctxgate-webhook-tls');
    assert.deepEqual(cert.spec.dnsNames, [`ctxgate-webhook.${NS}.svc`, `ctxgate-webhook.${NS}.svc.cluster.local`]);
    assert.ok(find(objs, 'Issuer', cert.spec.issuerRef.name));
    for (const o of objs) checkObject(o, 'chart with cert-manager', { namespace: NS });
  });

  test('a provided Secret and caBundle are used as given', () => {
    const objs = render({ webhook: { tls: { secretName: 'my-tls', caBundle: 'Q0FCVU5ETEU=' } } });
    const vwc = find(objs, 'ValidatingWebhookConfiguration', 'ctxgate-webhook');
    assert.equal(vwc.webhooks[0].clientConfig.caBundle, 'Q0FCVU5ETEU=');
    assert.equal(vwc.metadata.annotations, undefined);
    const wd = find(objs, 'Deployment', 'ctxgate-webhook');
    assert.equal(wd.spec.template.spec.volumes.find((v) => v.name === 'tls').secret.secretName, 'my-tls');
    assert.ok(!objs.some((o) => o.kind === 'Certificate'));
  });

  test('metrics.serviceMonitor.enabled adds a ServiceMonitor selecting the metrics Service', () => {
    assert.ok(!render().some((o) => o.kind === 'ServiceMonitor'));
    const objs = render({ metrics: { serviceMonitor: { enabled: true, labels: { release: 'prometheus' } } } });
    const sm = find(objs, 'ServiceMonitor', 'ctxgate-controller');
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    assert.equal(sm.metadata.labels.release, 'prometheus');
    const svc = find(objs, 'Service', 'ctxgate-controller-metrics');
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) assert.equal(svc.metadata.labels[k], v, `ServiceMonitor selects the metrics Service by ${k}`);
    assert.ok(svc.spec.ports.some((p) => p.name === sm.spec.endpoints[0].port));
    assert.deepEqual(sm.spec.namespaceSelector.matchNames, [NS]);
  });

  test('values: images, replicas, resources, leader election, watch namespace', () => {
    const objs = render({
      image: { repository: 'registry.example/ctxgate', tag: '0.1.0-rc1', pullPolicy: 'Always' },
      gatewayImage: 'registry.example/ctxgate-gw:1',
      controller: { replicas: 3, watchNamespace: 'team-a', resources: { requests: { cpu: '1', memory: '1Gi' }, limits: { memory: '2Gi' } } },
      leaderElection: { enabled: false },
    });
    const c = controllerContainer(objs);
    assert.equal(c.image, 'registry.example/ctxgate:0.1.0-rc1');
    assert.equal(c.imagePullPolicy, 'Always');
    assert.equal(c.args[c.args.indexOf('--gateway-image') + 1], 'registry.example/ctxgate-gw:1');
    assert.equal(c.args[c.args.indexOf('--namespace') + 1], 'team-a');
    assert.ok(c.args.includes('--leader-elect=false') && !c.args.includes('--lease-name'));
    assert.ok(!objs.some((o) => o.kind === 'Role'), 'no leader-election Role without leader election');
    // maps merge with the chart's defaults, as helm merges values: the default cpu limit stays
    assert.deepEqual(c.resources, { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '500m', memory: '2Gi' } });
    assert.equal(find(objs, 'Deployment', 'ctxgate-controller').spec.replicas, 3);
    const def = controllerContainer(render());
    assert.equal(def.args[def.args.indexOf('--gateway-image') + 1], `ctxgate:${VERSION}`, 'gatewayImage defaults to the image');
  });

  test('NOTES.txt renders in every mode', () => {
    for (const values of [{}, { webhook: { enabled: false } }, { webhook: { certManager: { enabled: true } } }]) {
      const notes = renderChart(CHART, { values, namespace: NS }).find((f) => f.file === 'NOTES.txt');
      assert.ok(notes && notes.text.includes(`installed in namespace ${NS}`));
    }
  });

  test('the renderer refuses syntax it does not implement and values that do not exist', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-helm-render-'));
    try {
      fs.mkdirSync(path.join(tmp, 'templates'));
      fs.writeFileSync(path.join(tmp, 'Chart.yaml'), 'apiVersion: v2\nname: t\nversion: 1.0.0\nappVersion: "1"\n');
      fs.writeFileSync(path.join(tmp, 'values.yaml'), 'a: {b: 1}\n');
      const tpl = path.join(tmp, 'templates', 'x.yaml');
      fs.writeFileSync(tpl, 'v: {{ .Values.a.b }}\n');
      assert.equal(renderChart(tmp)[0].text, 'v: 1\n');
      fs.writeFileSync(tpl, 'v: {{ .Values.a.c }}\n');
      assert.throws(() => renderChart(tmp), /does not exist/);
      fs.writeFileSync(tpl, '{{- range .Values.a }}x{{- end }}\n');
      assert.throws(() => renderChart(tmp), /unsupported/);
      fs.writeFileSync(tpl, '{{- if .Values.a }}x\n');
      assert.throws(() => renderChart(tmp), /unclosed/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('chart crds/ are identical copies of deploy/crds/', () => {
    const src = path.join(DEPLOY, 'crds');
    const dst = path.join(CHART, 'crds');
    const a = fs.readdirSync(src).filter((f) => f.endsWith('.yaml')).sort();
    const b = fs.readdirSync(dst).filter((f) => f.endsWith('.yaml')).sort();
    assert.ok(a.length >= 2, 'deploy/crds/ has the CRDs');
    assert.deepEqual(b, a, 'same files (cp deploy/crds/*.yaml deploy/helm/ctxgate/crds/)');
    for (const f of a) {
      assert.ok(fs.readFileSync(path.join(dst, f)).equals(fs.readFileSync(path.join(src, f))), `${f} is identical (cp deploy/crds/*.yaml deploy/helm/ctxgate/crds/)`);
      for (const o of parseDocs(fs.readFileSync(path.join(src, f), 'utf8'), f)) checkObject(o, f);
    }
  });
});

describe('Dockerfile', () => {
  const text = fs.readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l));
  const froms = lines.filter((l) => /^FROM\s/i.test(l));
  const runtimePkgs = () => {
    const stage = text.slice(text.lastIndexOf('\nFROM '));
    const m = /apt-get install -y --no-install-recommends\s*\\\n([\s\S]*?)\s*&&/.exec(stage);
    return m[1].replace(/\\/g, ' ').trim().split(/\s+/);
  };

  test('multi-stage, pinned Debian bases, non-root, exec-form entrypoint', () => {
    assert.ok(froms.length >= 2, 'multi-stage');
    for (const f of froms) assert.match(f, /^FROM\s+debian:bookworm(-slim)?(\s|$)/, `${f}: a pinned Debian bookworm tag, never latest`);
    assert.match(froms[0], /\sAS\s+build/i);
    assert.match(froms.at(-1), /^FROM\s+debian:bookworm-slim\b/);
    const last = lines.slice(lines.indexOf(froms.at(-1)));
    const user = last.filter((l) => /^USER\s/.test(l)).at(-1);
    assert.equal(user?.trim(), 'USER 65532:65532');
    assert.ok(last.some((l) => l.trim() === 'ENTRYPOINT ["/opt/ctxgate/bin/ctxgate"]'));
    assert.ok(last.some((l) => /COPY --from=build \/opt\/ctxgate \/opt\/ctxgate/.test(l)));
    assert.ok(!runtimePkgs().some((p) => p.endsWith('-dev')), 'no -dev package in the runtime stage');
    assert.match(text, /cmake --install build --prefix \/opt\/ctxgate/);
    assert.match(text, /npm ci/);
    const ignore = fs.readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['.git', 'build', 'node_modules']) assert.ok(ignore.includes(p), `.dockerignore has ${p}`);
  });

  test('the build stage has the -dev packages of scripts/setup.sh', () => {
    const setup = fs.readFileSync(path.join(REPO_ROOT, 'scripts', 'setup.sh'), 'utf8');
    const pkgs = /PACKAGES=\(([\s\S]*?)\)/.exec(setup)[1].split(/\s+/).filter((p) => p.endsWith('-dev') && p !== 'libcmocka-dev' && p !== 'libclang-rt-dev');
    const build = text.slice(0, text.lastIndexOf('\nFROM '));
    for (const p of pkgs) assert.match(build, new RegExp(`\\s${p.replace(/[+.]/g, '\\$&')}\\s`), `build stage installs ${p}`);
  });

  test('runtime packages exist in Debian and provide every library the binary links', (t) => {
    const pkgs = runtimePkgs();
    const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
    if (!has('apt-cache') || !has('dpkg') || !has('readelf')) return t.skip('needs apt-cache, dpkg and readelf (Debian)');
    const r = spawnSync('apt-cache', ['show', '--no-all-versions', ...pkgs], { encoding: 'utf8' });
    const shown = new Set([...r.stdout.matchAll(/^Package: (\S+)/gm)].map((m) => m[1]));
    for (const p of pkgs) assert.ok(shown.has(p), `Debian package ${p} exists (apt-cache show)`);
    const bin = gatewayBinary();
    if (!fs.existsSync(bin)) return t.skip(`no binary at ${bin}`);
    const needed = [...spawnSync('readelf', ['-d', bin], { encoding: 'utf8' }).stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    assert.ok(needed.length > 5, `readelf -d ${bin} names its libraries`);
    const base = new Set(['libc6', 'libgcc-s1', 'libstdc++6']);
    const sanitizer = /^lib(asan|ubsan|tsan|lsan)\.so/;
    for (const lib of needed.filter((l) => !sanitizer.test(l))) {
      // "pkg1:amd64, pkg2: /lib/x86_64-linux-gnu/libm.so.6" for every file by that name
      const r = spawnSync('dpkg', ['-S', `*/${lib}`], { encoding: 'utf8' });
      const owners = r.stdout.split('\n').flatMap((l) => (/^(.*?): \//.exec(l)?.[1] ?? '').split(', '))
        .map((p) => p.split(':')[0].trim()).filter(Boolean);
      assert.ok(owners.length > 0, `a Debian package ships ${lib}`);
      assert.ok(owners.some((p) => base.has(p) || pkgs.includes(p)), `${lib} comes from ${owners.join(' or ')}, one of which the runtime stage must install (${pkgs.join(' ')})`);
    }
  });

  // What the image's runtime does, without a container engine: the installed tree
  // (`cmake --install`, as the build stage does) run as 65532:65532 in a private mount namespace
  // whose root is read-only and whose /tmp is an empty tmpfs (the manifests' emptyDir). It must
  // start, find its tokenizer files and answer with counted tokens.
  test('the installed binary serves as 65532:65532 on a read-only root with only /tmp writable', async (t) => {
    const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
    if (process.getuid?.() !== 0) return t.skip('needs root (unshare -m, mount)');
    if (!has('unshare') || !has('setpriv') || !has('curl')) return t.skip('needs unshare, setpriv, curl (util-linux)');
    if (!fs.existsSync(gatewayBinary())) return t.skip(`no binary at ${gatewayBinary()}`);
    const buildDir = path.dirname(gatewayBinary());
    if (!fs.existsSync(path.join(buildDir, 'CMakeCache.txt'))) return t.skip(`no CMake build tree at ${buildDir}`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-rootfs-'));
    try {
      fs.chmodSync(tmp, 0o755);
      const prefix = path.join(tmp, 'opt');
      const inst = spawnSync('cmake', ['--install', buildDir, '--prefix', prefix], { encoding: 'utf8' });
      assert.equal(inst.status, 0, `cmake --install\n${inst.stdout}${inst.stderr}`);
      const port = await freePort();
      const cfg = path.join(tmp, 'cfg');
      fs.mkdirSync(cfg, { mode: 0o755 });
      fs.writeFileSync(path.join(cfg, 'gw.yaml'), `apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: rootfs}
spec:
  listener: {port: ${port}}
  modelTargets: [{name: demo, type: Mock, config: {modelName: gpt-4o}}]
  routes: [{name: r, backends: [{target: demo}]}]
`);
      fs.chmodSync(path.join(cfg, 'gw.yaml'), 0o644);
      const body = JSON.stringify({ model: 'demo', messages: [{ role: 'user', content: 'read-only root' }] });
      // /mnt/<tmp> reaches the host's files after / is remounted read-only and /tmp is replaced
      const script = `set -e
mount --make-rprivate /
mount --bind / /mnt
mount -o remount,bind,ro /
mount -t tmpfs -o mode=1777 tmpfs /tmp
if touch /.ctxgate-rw-probe 2>/dev/null; then echo "root is writable"; exit 3; fi
mkdir /tmp/cfg && cp /mnt${cfg}/gw.yaml /tmp/cfg/
setpriv --reuid 65532 --regid 65532 --clear-groups /mnt${prefix}/bin/ctxgate serve -f /tmp/cfg --workers 1 > /tmp/log 2>&1 &
pid=$!
i=0; until curl -sf -o /dev/null localhost:${port}/healthz || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done
curl -s localhost:${port}/v1/chat/completions -H 'Content-Type: application/json' -d '${body}'
echo; kill $pid; wait $pid || true
echo "--- log"; cat /tmp/log`;
      const r = spawnSync('unshare', ['-m', 'sh', '-c', script], { encoding: 'utf8', timeout: 30000 });
      assert.equal(r.status, 0, `unshare run\n${r.stdout}${r.stderr}`);
      const [resp, log] = r.stdout.split('--- log');
      const j = JSON.parse(resp.trim());
      assert.equal(j.choices[0].message.content, 'read-only root', `${r.stdout}`);
      assert.ok(j.usage.prompt_tokens > 0, `tokens counted with the installed rank files\n${r.stdout}`);
      assert.doesNotMatch(log, /permission denied|read-only file system|cannot (open|create|write)/i, log);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
