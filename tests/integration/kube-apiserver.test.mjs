// kube-apiserver.test.mjs — the API server behaviour ctxgate's Kubernetes code relies on, checked
// against the test double (tests/fakes/kube-apiserver.mjs) and, when CTXGATE_KUBE_ASSETS names a
// kube-apiserver + etcd, against a real API server: the double is only as good as this agreement.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import YAML from 'yaml';

import { REPO_ROOT } from '../lib/gateway.mjs';
import { SkipError, installCrds, kubeModes, startKube } from '../lib/kube.mjs';

const GW = 'ctxgate.io/v1alpha1';
let seq = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${++seq}`;
const configMap = (name, extra = {}) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'default', ...extra }, data: { a: '1' } });
const gateway = (name) => ({ apiVersion: GW, kind: 'LLMGateway', metadata: { name, namespace: 'default' }, spec: { modelTargets: [{ name: 'a', type: 'Mock' }] } });

// A bad manifest of helper B's rule fixtures, with the message its header promises.
function ruleFixture(file) {
  const text = fs.readFileSync(path.join(REPO_ROOT, 'tests', 'data', 'crd-rules', 'bad', file), 'utf8');
  const expect = text.match(/^# expect(?:-api)?: (.*)$/m)?.[1];
  const obj = YAML.parseAllDocuments(text).map((d) => d.toJS()).find((d) => d?.kind === 'LLMGateway');
  return { obj, expect };
}

async function expectStatus(promise, code, reason) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err, `expected a ${code} ${reason}, the call succeeded`);
  assert.equal(err.status, code, err.message);
  assert.equal(err.body.kind, 'Status');
  assert.equal(err.body.reason, reason, err.message);
  return err.body;
}

for (const mode of kubeModes()) {
  describe(`Kubernetes API server semantics (${mode.name} API server)`, { skip: mode.skip }, () => {
    let kube;
    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true, bookmarkIntervalMs: 200 });
    });
    after(async () => {
      await kube?.stop();
    });

    test('401 without credentials; the client-certificate identity is accepted', async () => {
      const res = await kube.request('GET', '/api/v1/namespaces/default/configmaps', undefined, { auth: false });
      assert.equal(res.status, 401);
      assert.equal(res.body.reason, 'Unauthorized');
      const status = await new Promise((resolve, reject) => {
        const read = (f) => fs.readFileSync(path.join(kube.dir, f));
        https.get({ host: '127.0.0.1', port: kube.port, path: '/api/v1/namespaces/default/configmaps', ca: kube.caPem, cert: read('client.crt'), key: read('client.key') }, (r) => {
          r.resume();
          resolve(r.statusCode);
        }).on('error', reject);
      });
      assert.equal(status, 200);
    });

    test('list pages with limit/continue are one consistent snapshot', async () => {
      const label = unique('page');
      for (let i = 0; i < 5; i++) await kube.create(configMap(`${label}-${i}`, { labels: { page: label } }));
      const names = [];
      let token;
      let listRv;
      let pages = 0;
      do {
        const q = { labelSelector: `page=${label}`, limit: '2' };
        if (token) q.continue = token;
        const page = await kube.list('v1', 'ConfigMap', 'default', q);
        listRv ??= page.metadata.resourceVersion;
        assert.equal(page.metadata.resourceVersion, listRv, 'every page is served at the first page resourceVersion');
        names.push(...page.items.map((o) => o.metadata.name));
        token = page.metadata.continue;
        if (pages++ === 0) await kube.create(configMap(`${label}-late`, { labels: { page: label } })); // after the snapshot
      } while (token);
      assert.deepEqual(names, [0, 1, 2, 3, 4].map((i) => `${label}-${i}`));
      assert.equal(pages, 3);
      const all = await kube.list('v1', 'ConfigMap', 'default', { labelSelector: `page=${label},page!=nope` });
      assert.equal(all.items.length, 6);
    });

    test('a watch from a list resourceVersion gets the later changes in order', async () => {
      const name = unique('watched');
      const list = await kube.list('v1', 'ConfigMap', 'default');
      const w = await kube.watch('/api/v1/namespaces/default/configmaps', { resourceVersion: list.metadata.resourceVersion, fieldSelector: `metadata.name=${name}` });
      try {
        const created = await kube.create(configMap(name));
        await kube.mergePatch('v1', 'ConfigMap', 'default', name, { data: { b: '2' } });
        await kube.delete('v1', 'ConfigMap', 'default', name);
        const evs = [await w.next(), await w.next(), await w.next()];
        assert.deepEqual(evs.map((e) => e.type), ['ADDED', 'MODIFIED', 'DELETED']);
        assert.equal(evs[0].object.metadata.uid, created.metadata.uid);
        assert.deepEqual(evs[1].object.data, { a: '1', b: '2' });
        const rvs = evs.map((e) => BigInt(e.object.metadata.resourceVersion));
        assert.ok(rvs[0] > BigInt(list.metadata.resourceVersion) && rvs[0] < rvs[1] && rvs[1] < rvs[2], `resourceVersions ${rvs}`);
      } finally {
        w.close();
      }
    });

    // kube-apiserver sends bookmarks from its watch cache only (disabled in real mode so that
    // compaction shows) and about once a minute: this one is about the double's contract.
    test('bookmarks arrive with allowWatchBookmarks', { skip: mode.name === 'real' && 'bookmarks need the watch cache, disabled in real mode' }, async () => {
      const list = await kube.list('coordination.k8s.io/v1', 'Lease', 'default');
      const w = await kube.watch('/apis/coordination.k8s.io/v1/namespaces/default/leases', { resourceVersion: list.metadata.resourceVersion, allowWatchBookmarks: 'true' });
      try {
        const ev = await w.next((e) => e.type === 'BOOKMARK', { timeoutMs: 3000 });
        assert.equal(ev.object.kind, 'Lease');
        assert.ok(BigInt(ev.object.metadata.resourceVersion) >= BigInt(list.metadata.resourceVersion));
      } finally {
        w.close();
      }
    });

    test('watch timeoutSeconds ends the stream cleanly', async () => {
      const w = await kube.watch('/api/v1/namespaces/default/secrets', { timeoutSeconds: '1' });
      await kube.waitFor(() => w.ended, { timeoutMs: 5000, what: 'the watch to end' });
      assert.ok(w.events.every((e) => e.type === 'ADDED'));
    });

    test('410 Expired after compaction: a watch ERROR event and a stale continue', async (t) => {
      const label = unique('old');
      for (let i = 0; i < 3; i++) await kube.create(configMap(`${label}-${i}`, { labels: { old: label } }));
      const page = await kube.list('v1', 'ConfigMap', 'default', { labelSelector: `old=${label}`, limit: '1' });
      assert.ok(page.metadata.continue);
      await kube.mergePatch('v1', 'ConfigMap', 'default', `${label}-0`, { data: { b: '2' } }); // a newer revision to compact to
      try {
        await kube.expireResourceVersions();
      } catch (err) {
        if (err instanceof SkipError) return t.skip(err.message);
        throw err;
      }
      const w = await kube.watch('/api/v1/namespaces/default/configmaps', { resourceVersion: page.metadata.resourceVersion });
      const ev = await w.next(() => true, { timeoutMs: 5000 }).catch(() => null);
      w.close();
      if (w.status === 410) assert.equal(w.status, 410);
      else {
        assert.equal(ev?.type, 'ERROR', `got ${JSON.stringify(ev)}`);
        assert.equal(ev.object.code, 410);
        assert.equal(ev.object.reason, 'Expired');
      }
      const stale = await kube.request('GET', `/api/v1/namespaces/default/configmaps?${new URLSearchParams({ labelSelector: `old=${label}`, limit: '1', continue: page.metadata.continue })}`);
      assert.equal(stale.status, 410, stale.text);
      assert.equal(stale.body.reason, 'Expired');
      // The error offers an inconsistent continuation, as the real server does.
      assert.ok(stale.body.metadata.continue, stale.text);
      const rest = await kube.list('v1', 'ConfigMap', 'default', { labelSelector: `old=${label}`, continue: stale.body.metadata.continue });
      assert.deepEqual(rest.items.map((o) => o.metadata.name), [`${label}-1`, `${label}-2`]);
    });

    test('/status is a separate subresource; only spec changes bump generation', async () => {
      const name = unique('gen');
      const obj = gateway(name);
      obj.status = { observedGeneration: 3 };
      const created = await kube.create(obj);
      assert.equal(created.metadata.generation, 1);
      assert.equal(created.status?.observedGeneration, undefined, 'status is not set on create');
      const st = await kube.patchStatus(GW, 'LLMGateway', 'default', name, { status: { observedGeneration: 2 }, spec: { listener: { port: 9999 } }, metadata: { labels: { x: 'y' } } });
      assert.equal(st.status.observedGeneration, 2);
      assert.equal(st.metadata.generation, 1);
      assert.notEqual(st.spec.listener?.port, 9999, 'a status write ignores spec');
      assert.equal(st.metadata.labels?.x, undefined, 'a status write ignores labels');
      const put = await kube.update({ ...st, status: { observedGeneration: 7 }, spec: { ...st.spec, listener: { port: 8081 } } });
      assert.equal(put.status.observedGeneration, 2, 'a main write ignores status');
      assert.equal(put.metadata.generation, 2);
      const labelled = await kube.mergePatch(GW, 'LLMGateway', 'default', name, { metadata: { labels: { team: 'a' } } });
      assert.equal(labelled.metadata.generation, 2, 'metadata changes keep the generation');
      assert.equal(labelled.spec.listener.port, 8081);
    });

    test('merge-patch and json-patch', async () => {
      const name = unique('patch');
      await kube.create(configMap(name));
      const merged = await kube.mergePatch('v1', 'ConfigMap', 'default', name, { data: { a: null, b: '2' }, metadata: { annotations: { n: 'x' } } });
      assert.deepEqual(merged.data, { b: '2' });
      assert.equal(merged.metadata.annotations.n, 'x');
      const p = await kube.path('v1', 'ConfigMap', 'default', name);
      const res = await kube.request('PATCH', p, [{ op: 'add', path: '/data/c', value: '3' }, { op: 'test', path: '/data/b', value: '2' }], { contentType: 'application/json-patch+json' });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.body.data, { b: '2', c: '3' });
    });

    test('Lease updates are guarded by resourceVersion (409 Conflict)', async () => {
      const name = unique('lease');
      const lease = await kube.create({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace: 'default' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } });
      const won = await kube.update({ ...lease, spec: { ...lease.spec, holderIdentity: 'b' } });
      assert.notEqual(won.metadata.resourceVersion, lease.metadata.resourceVersion);
      const body = await expectStatus(kube.update({ ...lease, spec: { ...lease.spec, holderIdentity: 'c' } }), 409, 'Conflict');
      assert.match(body.message, /the object has been modified; please apply your changes to the latest version and try again/);
      assert.equal(body.details.name, name);
      assert.equal((await kube.get('coordination.k8s.io/v1', 'Lease', 'default', name)).spec.holderIdentity, 'b');
    });

    test('delete with finalizers: deletionTimestamp first, removal when they are gone', async () => {
      const name = unique('fin');
      await kube.create(configMap(name, { finalizers: ['ctxgate.io/cleanup'] }));
      const list = await kube.list('v1', 'ConfigMap', 'default');
      const w = await kube.watch('/api/v1/namespaces/default/configmaps', { resourceVersion: list.metadata.resourceVersion, fieldSelector: `metadata.name=${name}` });
      try {
        await kube.delete('v1', 'ConfigMap', 'default', name);
        const dying = await kube.get('v1', 'ConfigMap', 'default', name);
        assert.ok(dying.metadata.deletionTimestamp);
        assert.equal((await w.next()).type, 'MODIFIED');
        await expectStatus(kube.update({ ...dying, metadata: { ...dying.metadata, finalizers: ['ctxgate.io/cleanup', 'x.io/more'] } }), 422, 'Invalid');
        await kube.update({ ...dying, metadata: { ...dying.metadata, finalizers: [] } });
        assert.equal((await w.next()).type, 'DELETED');
        assert.equal(await kube.get('v1', 'ConfigMap', 'default', name), null);
      } finally {
        w.close();
      }
    });

    test('ownerReferences are stored as sent; creates in a missing namespace are refused', async () => {
      const owner = await kube.create(gateway(unique('owner')));
      const ref = { apiVersion: GW, kind: 'LLMGateway', name: owner.metadata.name, uid: owner.metadata.uid, controller: true, blockOwnerDeletion: true };
      const cm = await kube.create(configMap(unique('owned'), { ownerReferences: [ref] }));
      assert.deepEqual(cm.metadata.ownerReferences, [ref]);
      await expectStatus(kube.create({ ...configMap('x'), metadata: { name: 'x', namespace: unique('nowhere') } }), 404, 'NotFound');
      await expectStatus(kube.create(configMap(cm.metadata.name)), 409, 'AlreadyExists');
    });

    test('CRD rules: a CEL rule and a schema rule reject bad objects with the real messages', async () => {
      const { obj, expect } = ruleFixture('weight-without-weighted.yaml');
      obj.metadata.name = unique('cel');
      const body = await expectStatus(kube.create(obj), 422, 'Invalid');
      assert.ok(expect && body.message.includes(expect), body.message);
      assert.match(body.message, new RegExp(`^LLMGateway\\.ctxgate\\.io "${obj.metadata.name}" is invalid: spec\\.routes\\[0\\]\\.backends: `));
      assert.equal(body.details.causes[0].field, 'spec.routes[0].backends');
      const bad = gateway(unique('schema'));
      bad.spec.listener = { port: 70000 };
      const schemaErr = await expectStatus(kube.create(bad), 422, 'Invalid');
      assert.match(schemaErr.message, /spec\.listener\.port: Invalid value: 70000: spec\.listener\.port in body should be less than or equal to 65535/);
      assert.deepEqual(schemaErr.details.causes.map((c) => [c.reason, c.field]), [['FieldValueInvalid', 'spec.listener.port']]);
      const withListener = gateway(unique('defaults'));
      withListener.spec.listener = {};
      withListener.spec.unknownField = 'pruned';
      const ok = await kube.create(withListener);
      assert.equal(ok.spec.listener.port, 8080, 'schema defaults are applied inside objects that are present');
      assert.equal(ok.spec.unknownField, undefined, 'unknown fields are pruned');
    });

    test('a CRD of our own: transition rules, messageExpression, defaults in list items, unconditional PUT refused', async () => {
      const crd = {
        apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: 'widgets.test.ctxgate.io' },
        spec: {
          group: 'test.ctxgate.io', scope: 'Namespaced', names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
          versions: [{
            name: 'v1', served: true, storage: true, subresources: { status: {} },
            schema: { openAPIV3Schema: { type: 'object', properties: { spec: {
              type: 'object', required: ['size'],
              'x-kubernetes-validations': [
                { rule: 'self.size == oldSelf.size', message: 'size is immutable' },
                { rule: 'self.size > 0', messageExpression: "'size must be positive, got ' + string(self.size)" },
              ],
              properties: { size: { type: 'integer' }, tags: { type: 'array', items: { type: 'object', properties: { k: { type: 'string', default: 'dflt' } } } } },
            } } } },
          }],
        },
      };
      await installCrds(kube, [crd]);
      const w = await kube.create({ apiVersion: 'test.ctxgate.io/v1', kind: 'Widget', metadata: { name: unique('w'), namespace: 'default' }, spec: { size: 3, tags: [{}] } });
      assert.deepEqual(w.spec.tags, [{ k: 'dflt' }]);
      const imm = await expectStatus(kube.mergePatch('test.ctxgate.io/v1', 'Widget', 'default', w.metadata.name, { spec: { size: 4 } }), 422, 'Invalid');
      assert.match(imm.message, /spec: Invalid value: "object": size is immutable/);
      const neg = await expectStatus(kube.create({ ...w, metadata: { name: unique('w'), namespace: 'default' }, spec: { size: -2 } }), 422, 'Invalid');
      assert.match(neg.message, /size must be positive, got -2/);
      const { resourceVersion, ...meta } = w.metadata;
      const put = await expectStatus(kube.update({ ...w, metadata: meta }), 422, 'Invalid');
      assert.match(put.message, /metadata\.resourceVersion: Invalid value: 0x0: must be specified for an update/);
    });

    test('restart keeps the data and the resourceVersions', async () => {
      const cm = await kube.create(configMap(unique('kept')));
      await kube.restart();
      const got = await kube.waitFor(() => kube.get('v1', 'ConfigMap', 'default', cm.metadata.name).catch(() => null), { what: 'the API server back' });
      assert.equal(got.metadata.resourceVersion, cm.metadata.resourceVersion);
      assert.equal(got.metadata.uid, cm.metadata.uid);
    });
  });
}
