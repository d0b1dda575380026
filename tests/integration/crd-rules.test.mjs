// crd-rules.test.mjs — the CRDs' cross-field rules (x-kubernetes-validations, written once in
// src/config/schema_*.c) through both paths that apply them: `ctxgate validate` offline, and the
// Kubernetes API server (the fake of tests/fakes and, when CTXGATE_KUBE_ASSETS or
// KUBEBUILDER_ASSETS names kube-apiserver + etcd, a real one) with deploy/crds/ installed.
// Every manifest of tests/data/crd-rules/good is accepted by both; every one of bad/ is refused
// by both with the message its comments give (the API server: 422 and that message):
//   # expect: MESSAGE            what both print
//   # expect-validate: MESSAGE   what validate prints instead (it names the value and its index)
//   # expect-api: MESSAGE        what the API server says instead (schema errors, list-type map)
// Also: `ctxgate crds` is exactly deploy/crds/*.yaml one after the other.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

import { REPO_ROOT, runCtxgate } from '../lib/gateway.mjs';
import { kubeModes, startKube } from '../lib/kube.mjs';

const DATA = path.join(REPO_ROOT, 'tests', 'data', 'crd-rules');

function manifests(sub) {
  return fs
    .readdirSync(path.join(DATA, sub))
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => {
      const file = path.join(DATA, sub, f);
      const text = fs.readFileSync(file, 'utf8');
      const tag = (key) => {
        const m = text.match(new RegExp(`^# ${key}: (.*)$`, 'm'));
        return m ? m[1] : undefined;
      };
      const expect = tag('expect');
      return {
        name: f.replace(/\.yaml$/, ''),
        file,
        docs: YAML.parseAllDocuments(text).map((d) => d.toJS()),
        validate: tag('expect-validate') ?? expect,
        api: tag('expect-api') ?? expect,
      };
    });
}

const good = manifests('good');
const bad = manifests('bad');

describe('CRD rules: ctxgate validate', () => {
  it('has a good and a bad manifest for every rule', () => {
    assert.ok(bad.length >= 20, `only ${bad.length} bad manifests`);
    assert.deepEqual(
      good.map((m) => m.name),
      bad.map((m) => m.name),
    );
    for (const m of bad) assert.ok(m.validate && m.api, `${m.name}: no # expect line`);
  });

  for (const m of good) {
    it(`good/${m.name}: accepted`, async () => {
      const r = await runCtxgate(['validate', m.file]);
      assert.equal(r.code, 0, `${m.name}: ${r.stdout}${r.stderr}`);
    });
  }
  for (const m of bad) {
    it(`bad/${m.name}: refused with "${m.validate}"`, async () => {
      const r = await runCtxgate(['validate', m.file]);
      assert.notEqual(r.code, 0, `${m.name} was accepted`);
      const errors = r.stdout.split('\n').filter((l) => /^\S+:\d+: /.test(l) && !l.includes(': warning: '));
      assert.equal(errors.length, 1, `${m.name}: want one error, got:\n${r.stdout}${r.stderr}`);
      assert.ok(errors[0].includes(m.validate), `${m.name}: want "${m.validate}", got:\n${errors[0]}`);
    });
  }

  it('ctxgate crds is deploy/crds/*.yaml, one after the other', async () => {
    const r = await runCtxgate(['crds']);
    assert.equal(r.code, 0, r.stderr);
    const files = ['llmgateways.ctxgate.io.yaml', 'modelcontextprotocols.ctxgate.io.yaml'];
    const committed = files.map((f) => fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'crds', f), 'utf8'));
    assert.equal(r.stdout, committed.join(''), 'deploy/crds is stale: regenerate it from `ctxgate crds`');
  });
});

/* the message of a refused create, wherever the API server puts it */
function messageOf(body) {
  if (typeof body === 'string') return body;
  return [body?.message, ...(body?.details?.causes ?? []).map((c) => `${c.field}: ${c.message}`)]
    .filter(Boolean)
    .join('\n');
}

for (const mode of kubeModes()) {
  describe(`CRD rules: the API server (${mode.name})`, { skip: mode.skip }, () => {
    let kube;
    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true });
    });
    after(async () => {
      await kube?.stop();
    });

    /* POST the object: {status, body} whatever the outcome (kube.create throws on a refusal) */
    const create = async (obj) => kube.request('POST', await kube.path(obj.apiVersion, obj.kind, obj.metadata.namespace), obj);

    const objects = (m) =>
      m.docs
        .filter((d) => d?.apiVersion?.startsWith('ctxgate.io/'))
        .map((d) => ({ ...d, metadata: { ...d.metadata, namespace: kube.namespace } }));

    for (const m of good) {
      it(`good/${m.name}: created (201)`, async () => {
        for (const obj of objects(m)) {
          const r = await create(obj);
          assert.equal(r.status, 201, `${m.name}: ${r.status} ${messageOf(r.body)}`);
        }
      });
    }
    for (const m of bad) {
      it(`bad/${m.name}: 422 with "${m.api}"`, async () => {
        const objs = objects(m);
        assert.equal(objs.length, 1);
        const r = await create(objs[0]);
        const msg = messageOf(r.body);
        assert.equal(r.status, 422, `${m.name}: ${r.status} ${msg}`);
        assert.ok(msg.includes(m.api), `${m.name}: want "${m.api}", got:\n${msg}`);
      });
    }
  });
}
