// policies.test.mjs — security policies this version does not enforce yet (authorization, rate
// limits, budgets, JWT/OAuth2, input checks beyond maxBodyBytes) fail closed: `validate` exits 1,
// `serve` refuses to start, and a reload that declares one is rejected while the old
// configuration keeps serving — never "accepted, not yet enforced" with the traffic flowing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { freePort, runCtxgate, startGateway, withLogs } from '../lib/gateway.mjs';
import { postJSON } from '../lib/http.mjs';

const REFUSED = 'not supported yet; remove it or upgrade';

// A gateway that serves (Mock, no authentication) plus `extra`, indented under spec.
const manifest = (extra = '', text = 'served') => `apiVersion: ctxgate.io/v1alpha1
kind: LLMGateway
metadata: {name: it-policies}
spec:
  listener: {port: __PORT__}
  modelTargets:
  - {name: m, type: Mock, config: {mock: {text: "${text}"}}}
${extra}`;

// one declaration per refused policy, with the field path validate must name
const POLICIES = [
  ['authorization', '  authorization: {defaultAction: Deny}\n', 'spec.authorization'],
  ['rateLimiting', '  rateLimiting: {requestsPerMinute: 1}\n', 'spec.rateLimiting'],
  ['budgets', '  budgets: [{limitUSD: 0}]\n', 'spec.budgets'],
  ['authentication type JWT', '  authentication: {type: JWT}\n', 'spec.authentication.type'],
  ['authentication type OAuth2', '  authentication: {types: [OAuth2]}\n', 'spec.authentication.types[0]'],
  ['authentication.jwt', '  authentication: {jwt: {issuer: "https://idp.example"}}\n', 'spec.authentication.jwt'],
  [
    'authentication.oauth2',
    '  authentication: {oauth2: {introspectionURL: "https://idp.example/i"}}\n',
    'spec.authentication.oauth2',
  ],
  [
    'apiKeys[].rateLimiting',
    '  authentication:\n    type: APIKey\n    apiKeys: [{name: k, secretRef: {name: keys, key: k}, rateLimiting: {requestsPerMinute: 1}}]\n' +
      '---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {k: sk-k}\n',
    'spec.authentication.apiKeys[0].rateLimiting',
  ],
  ['inputValidation.maxMessages', '  transformation: {inputValidation: {maxMessages: 1}}\n', 'spec.transformation.inputValidation.maxMessages'],
  [
    'inputValidation.denyPatterns',
    '  transformation: {inputValidation: {denyPatterns: ["(?i)ignore previous"]}}\n',
    'spec.transformation.inputValidation.denyPatterns',
  ],
  ['inputValidation.redactPII', '  transformation: {inputValidation: {redactPII: [email]}}\n', 'spec.transformation.inputValidation.redactPII'],
  ['inputValidation.jsonSchema', '  transformation: {inputValidation: {jsonSchema: {type: object}}}\n', 'spec.transformation.inputValidation.jsonSchema'],
  [
    'inputValidation.maxPromptTokens',
    '  transformation: {inputValidation: {maxPromptTokens: 10}}\n',
    'spec.transformation.inputValidation.maxPromptTokens',
  ],
];

describe('security policies not enforced yet are refused', () => {
  let dir;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-policies-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('validate exits 1 naming each declared policy; maxBodyBytes and caching stay accepted', async () => {
    for (const [what, extra, field] of POLICIES) {
      const file = path.join(dir, 'gw.yaml');
      fs.writeFileSync(file, manifest(extra).replace('__PORT__', '8080'));
      const r = await runCtxgate(['validate', file]);
      assert.equal(r.code, 1, `${what}: validate must fail\n${r.stdout}${r.stderr}`);
      const line = r.stdout.split('\n').find((l) => l.includes(`: ${field}: `));
      assert.ok(line, `${what}: a diagnostic for ${field}\n${r.stdout}`);
      assert.ok(line.includes(REFUSED), `${what}: ${line}`);
      assert.doesNotMatch(line, /warning:/, `${what}: an error, not a warning`);
    }
    const ok = path.join(dir, 'ok.yaml');
    fs.writeFileSync(
      ok,
      manifest('  caching: {enabled: true}\n  transformation: {inputValidation: {maxBodyBytes: 4096}}\n').replace('__PORT__', '8080')
    );
    const r = await runCtxgate(['validate', ok]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /warning: spec\.caching: accepted, not yet enforced/);
  });

  test('serve refuses to start with authorization declared, and says why', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'serve-'));
    fs.writeFileSync(path.join(sub, 'gw.yaml'), manifest(POLICIES[0][1]).replace('__PORT__', String(await freePort())));
    const r = await runCtxgate(['serve', '-f', sub, '--workers', '1'], { timeoutMs: 20000 });
    assert.notEqual(r.signal, 'SIGKILL', 'serve exited by itself instead of serving');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`gw\\.yaml:\\d+: spec\\.authorization: ${REFUSED}`));
  });

  describe('reload', () => {
    let gw;
    before(async () => {
      gw = await startGateway({ manifests: manifest('', 'old-config'), workers: 1 });
    });
    after(async () => {
      if (gw) await gw.stop();
    });

    test(
      'a reload declaring rateLimiting is rejected, logged, and the old configuration keeps serving',
      withLogs(
        () => gw,
        async () => {
          const delta = await gw.reload(manifest(POLICIES[1][1], 'new-config'), { expect: 'failure' });
          assert.equal(delta.success, 0, 'the refused configuration is never applied');
          assert.match(gw.stderr(), new RegExp(`gateway\\.yaml:\\d+: spec\\.rateLimiting: ${REFUSED}`));
          const res = await postJSON(`${gw.baseURL}/chat/completions`, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
          assert.equal(res.status, 200);
          assert.equal(res.json.choices[0].message.content, 'old-config');
        }
      )
    );
  });
});
