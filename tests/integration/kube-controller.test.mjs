// kube-controller.test.mjs — `ctxgate controller` against the API server double (and a real
// kube-apiserver when CTXGATE_KUBE_ASSETS is set): owned objects with owner references and
// labels, status and observedGeneration, an invalid spec (missing Secret) reported as
// Ready=False with the field error and a Warning Event, the fix, the provisioned Redis with its
// finalizer through deletion, a 410 re-list and an API server restart under the watches,
// modelHealth from a real gateway's /admin/targets, /metrics, and leader election between two
// controllers (only the leader writes, SIGKILL hand-over within the lease, SIGTERM releases).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';

import { freePort, gatewayBinary, runCtxgate, startGateway } from '../lib/gateway.mjs';
import { kubeModes, startKube } from '../lib/kube.mjs';
import { startPostgres, startRedis } from '../lib/servers.mjs';

const V = 'ctxgate.io/v1alpha1';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startController(kube, args = [], { env } = {}) {
  return (async () => {
    const port = await freePort();
    const child = spawn(
      gatewayBinary(),
      ['controller', '--kubeconfig', kube.kubeconfig, '--metrics-address', '127.0.0.1', '--metrics-port', String(port),
        '--gateway-image', 'ctxgate:test', '--resync-seconds', '2', '--log-level', 'debug', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
    );
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const ctl = {
      child, port, exited,
      url: `http://127.0.0.1:${port}`,
      logs: () => log,
      async stop(signal = 'SIGTERM') {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        return exited;
      },
    };
    // up once /healthz answers
    for (let i = 0; i < 100; i++) {
      try {
        const r = await fetch(`${ctl.url}/healthz`);
        if (r.ok) return ctl;
      } catch {}
      if (child.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(`controller did not start:\n${log}`);
  })();
}

const gatewayObj = (name, extra = {}) => ({
  apiVersion: V, kind: 'LLMGateway', metadata: { name, namespace: 'default' },
  spec: {
    listener: { port: 8080 },
    modelTargets: [{ name: 'm1', type: 'Mock' }],
    routes: [{ name: 'main', backends: [{ target: 'm1' }] }],
    ...extra,
  },
});

const cond = (obj, type) => obj?.status?.conditions?.find((c) => c.type === type);

describe('controller flags', () => {
  it('--help lists every flag; a bad flag is a usage error', async () => {
    const r = await runCtxgate(['controller', '--help']);
    assert.equal(r.code, 0);
    for (const f of ['--kubeconfig', '--namespace', '--gateway-image', '--redis-image', '--metrics-address', '--metrics-port',
      '--leader-elect=true|false', '--lease-namespace', '--lease-name', '--identity', '--lease-duration', '--renew-deadline',
      '--retry-period', '--gateway-admin-url', '--resync-seconds'])
      assert.ok(r.stdout.includes(f), `--help names ${f}`);
    const bad = await runCtxgate(['controller', '--no-such-flag']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /unknown flag --no-such-flag/);
    const order = await runCtxgate(['controller', '--lease-duration', '5', '--renew-deadline', '6']);
    assert.equal(order.code, 2);
  });
});

for (const mode of kubeModes()) {
  describe(`controller (${mode.name} API server)`, { skip: mode.skip }, () => {
    let kube;
    let ctl;
    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true });
    });
    after(async () => {
      if (ctl) await ctl.stop();
      await kube?.stop();
    });

    const wait = (fn, what, timeoutMs = 15000) => kube.waitFor(fn, { timeoutMs, what });
    const failWith = (e) => {
      if (ctl) console.error(ctl.logs());
      throw e;
    };

    it('starts, serves /healthz, /readyz and /metrics', async () => {
      ctl = await startController(kube, ['--leader-elect=false']);
      await wait(async () => (await fetch(`${ctl.url}/readyz`)).ok, 'readyz 200 once informers synced').catch(failWith);
      const m = await (await fetch(`${ctl.url}/metrics`)).text();
      for (const s of ['ctxgate_controller_reconcile_total', 'ctxgate_controller_reconcile_errors_total', 'ctxgate_controller_queue_depth',
        'ctxgate_controller_reconcile_duration_seconds_bucket', 'ctxgate_controller_leader 1', 'ctxgate_controller_informer_lists_total',
        'ctxgate_controller_informer_watches_total'])
        assert.ok(m.includes(s), `metrics has ${s}:\n${m}`);
    });

    it('creates the owned objects with owner references and labels, and writes status', async () => {
      const gw = await kube.create(gatewayObj('alpha', { admin: { port: 9090 } }));
      const want = [
        ['v1', 'ServiceAccount', 'alpha-gateway'],
        ['rbac.authorization.k8s.io/v1', 'Role', 'alpha-gateway'],
        ['rbac.authorization.k8s.io/v1', 'RoleBinding', 'alpha-gateway'],
        ['apps/v1', 'Deployment', 'alpha'],
        ['v1', 'Service', 'alpha'],
      ];
      for (const [av, kind, name] of want) {
        const o = await wait(() => kube.get(av, kind, 'default', name), `${kind} ${name}`).catch(failWith);
        const ref = o.metadata.ownerReferences?.[0];
        assert.deepEqual(
          { apiVersion: ref?.apiVersion, kind: ref?.kind, name: ref?.name, uid: ref?.uid, controller: ref?.controller, blockOwnerDeletion: ref?.blockOwnerDeletion },
          { apiVersion: V, kind: 'LLMGateway', name: 'alpha', uid: gw.metadata.uid, controller: true, blockOwnerDeletion: true },
          `${kind} owner reference`,
        );
        assert.equal(o.metadata.labels['app.kubernetes.io/managed-by'], 'ctxgate-controller');
        assert.equal(o.metadata.labels['app.kubernetes.io/instance'], 'alpha');
        assert.equal(o.metadata.labels['app.kubernetes.io/name'], 'ctxgate');
        assert.equal(o.metadata.labels['app.kubernetes.io/component'], 'gateway');
      }
      const dep = await kube.get('apps/v1', 'Deployment', 'default', 'alpha');
      const c = dep.spec.template.spec.containers[0];
      assert.equal(c.image, 'ctxgate:test');
      assert.deepEqual(c.args, ['serve', '--kube', '--gateway', 'alpha', '--namespace', 'default']);
      assert.deepEqual(c.ports.map((p) => [p.name, p.containerPort]), [['http', 8080], ['admin', 9090]]);
      assert.equal(dep.spec.replicas, 1);
      assert.equal(dep.spec.template.spec.serviceAccountName, 'alpha-gateway');
      const role = await kube.get('rbac.authorization.k8s.io/v1', 'Role', 'default', 'alpha-gateway');
      assert.deepEqual(role.rules[0].resourceNames, ['alpha']);
      assert.equal(role.rules.length, 1, 'no MCP / Secret referenced: no rule for them');

      const st = await wait(async () => {
        const o = await kube.get(V, 'LLMGateway', 'default', 'alpha');
        return cond(o, 'Ready')?.status === 'True' && o.status.observedGeneration === o.metadata.generation ? o : null;
      }, 'alpha Ready=True').catch(failWith);
      assert.equal(cond(st, 'Ready').reason, 'Reconciled');
      assert.equal(cond(st, 'Ready').observedGeneration, st.metadata.generation);
      assert.equal(cond(st, 'Available').status, 'False');
      assert.equal(cond(st, 'Available').reason, 'DeploymentUnavailable');
      assert.equal(cond(st, 'Degraded').status, 'Unknown');
      assert.equal(cond(st, 'Degraded').reason, 'AdminUnreachable');
      assert.equal(st.status.gatewayEndpoint, 'http://alpha.default.svc:8080');
      assert.deepEqual(st.status.activeRoutes, ['main']);
      assert.equal(st.status.modelHealth[0].name, 'm1');
      // a created event
      const evs = await kube.list('events.k8s.io/v1', 'Event', 'default');
      assert.ok(evs.items.some((e) => e.regarding?.name === 'alpha' && e.reason === 'Created'), 'a Normal Created Event');
    });

    it('follows spec changes: observedGeneration, replicas, autoscaling adds and removes HPA + PDB', async () => {
      const cur = await kube.get(V, 'LLMGateway', 'default', 'alpha');
      await kube.mergePatch(V, 'LLMGateway', 'default', 'alpha', { spec: { deployment: { replicas: 3 } } });
      await wait(async () => (await kube.get('apps/v1', 'Deployment', 'default', 'alpha'))?.spec.replicas === 3, 'replicas 3').catch(failWith);
      const o = await wait(async () => {
        const x = await kube.get(V, 'LLMGateway', 'default', 'alpha');
        return x.metadata.generation > cur.metadata.generation && x.status?.observedGeneration === x.metadata.generation ? x : null;
      }, 'observedGeneration follows').catch(failWith);
      const readySince = cond(o, 'Ready').lastTransitionTime;

      await kube.mergePatch(V, 'LLMGateway', 'default', 'alpha', { spec: { deployment: { autoscaling: { minReplicas: 2, maxReplicas: 5 } } } });
      const hpa = await wait(() => kube.get('autoscaling/v2', 'HorizontalPodAutoscaler', 'default', 'alpha'), 'HPA').catch(failWith);
      assert.equal(hpa.spec.maxReplicas, 5);
      assert.equal(hpa.spec.scaleTargetRef.name, 'alpha');
      const pdb = await wait(() => kube.get('policy/v1', 'PodDisruptionBudget', 'default', 'alpha'), 'PDB').catch(failWith);
      assert.equal(pdb.spec.minAvailable, 1);

      await kube.mergePatch(V, 'LLMGateway', 'default', 'alpha', { spec: { deployment: { autoscaling: null } } });
      await wait(async () => !(await kube.get('autoscaling/v2', 'HorizontalPodAutoscaler', 'default', 'alpha')), 'HPA removed').catch(failWith);
      await wait(async () => !(await kube.get('policy/v1', 'PodDisruptionBudget', 'default', 'alpha')), 'PDB removed').catch(failWith);
      const again = await kube.get(V, 'LLMGateway', 'default', 'alpha');
      assert.equal(cond(again, 'Ready').lastTransitionTime, readySince, 'Ready stayed True: lastTransitionTime kept');
    });

    it('reports Available once the Deployment has an available replica', async () => {
      await kube.patchStatus('apps/v1', 'Deployment', 'default', 'alpha', { status: { availableReplicas: 1, replicas: 1 } });
      const o = await wait(async () => {
        const x = await kube.get(V, 'LLMGateway', 'default', 'alpha');
        return cond(x, 'Available')?.status === 'True' ? x : null;
      }, 'Available=True').catch(failWith);
      assert.equal(cond(o, 'Available').reason, 'MinimumReplicasAvailable');
    });

    it('an invalid spec (missing Secret) is Ready=False with the field error and a Warning Event; fixing it makes it Ready', async () => {
      await kube.create(gatewayObj('beta', {
        modelTargets: [{ name: 'm1', type: 'OpenAI', config: { apiKeyRef: { name: 'openai-key', key: 'apiKey' } } }],
      }));
      const o = await wait(async () => {
        const x = await kube.get(V, 'LLMGateway', 'default', 'beta');
        return cond(x, 'Ready')?.reason === 'InvalidSpec' ? x : null;
      }, 'beta InvalidSpec').catch(failWith);
      const r = cond(o, 'Ready');
      assert.equal(r.status, 'False');
      assert.match(r.message, /spec\.modelTargets\[0\]\.config\.apiKeyRef/);
      assert.match(r.message, /openai-key/);
      assert.equal(await kube.get('apps/v1', 'Deployment', 'default', 'beta'), null, 'no owned object for an invalid spec');
      const ev = await wait(async () => {
        const evs = await kube.list('events.k8s.io/v1', 'Event', 'default');
        return evs.items.find((e) => e.regarding?.name === 'beta' && e.reason === 'InvalidSpec');
      }, 'Warning InvalidSpec Event').catch(failWith);
      assert.equal(ev.type, 'Warning');
      assert.equal(ev.note, r.message);

      await kube.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'openai-key', namespace: 'default' }, data: { apiKey: Buffer.from('sk-test').toString('base64') } });
      const ok = await wait(async () => {
        const x = await kube.get(V, 'LLMGateway', 'default', 'beta');
        return cond(x, 'Ready')?.status === 'True' ? x : null;
      }, 'beta Ready after the Secret appears').catch(failWith);
      assert.equal(cond(ok, 'Ready').reason, 'Reconciled');
      const role = await wait(() => kube.get('rbac.authorization.k8s.io/v1', 'Role', 'default', 'beta-gateway'), 'beta Role').catch(failWith);
      const secRule = role.rules.find((x) => x.resources.includes('secrets'));
      assert.deepEqual(secRule.resourceNames, ['openai-key']);
    });

    it('an object in the way that the controller does not manage is a ReconcileError naming it', async () => {
      await kube.create({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'gamma', namespace: 'default' }, spec: { ports: [{ port: 80 }] } });
      await kube.create(gatewayObj('gamma'));
      const o = await wait(async () => {
        const x = await kube.get(V, 'LLMGateway', 'default', 'gamma');
        return cond(x, 'Ready')?.reason === 'ReconcileError' ? x : null;
      }, 'gamma ReconcileError').catch(failWith);
      assert.equal(cond(o, 'Ready').status, 'False');
      assert.match(cond(o, 'Ready').message, /Service gamma already exists/);
      const m = await (await fetch(`${ctl.url}/metrics`)).text();
      assert.match(m, /ctxgate_controller_reconcile_errors_total\{kind="LLMGateway"\} [1-9]/);
      await kube.delete(V, 'LLMGateway', 'default', 'gamma');
    });

    it('a ModelContextProtocol with provision: finalizer, StatefulSet + Service, cleanup on delete', async () => {
      await kube.create({
        apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'mem', namespace: 'default' },
        spec: { storage: { type: 'Redis', provision: true, config: { url: 'redis://mem-redis.default.svc:6379/0' } } },
      });
      const sts = await wait(() => kube.get('apps/v1', 'StatefulSet', 'default', 'mem-redis'), 'StatefulSet mem-redis').catch(failWith);
      assert.equal(sts.metadata.ownerReferences[0].kind, 'ModelContextProtocol');
      assert.equal(sts.spec.volumeClaimTemplates[0].metadata.name, 'data');
      const svc = await wait(() => kube.get('v1', 'Service', 'default', 'mem-redis'), 'Service mem-redis').catch(failWith);
      assert.equal(svc.spec.clusterIP, 'None');
      const m = await wait(async () => {
        const x = await kube.get(V, 'ModelContextProtocol', 'default', 'mem');
        return x.status?.observedGeneration === x.metadata.generation ? x : null;
      }, 'mem status').catch(failWith);
      assert.deepEqual(m.metadata.finalizers, ['ctxgate.io/cleanup']);
      assert.equal(m.status.storageProvisioned, true);
      assert.equal(m.status.connectionEndpoint, 'redis://mem-redis.default.svc:6379/0');
      assert.equal(cond(m, 'Ready').status, 'True');
      assert.equal(cond(m, 'StoreReachable').status, 'False', 'nothing runs the Redis pod here');

      await kube.delete(V, 'ModelContextProtocol', 'default', 'mem');
      await wait(async () => !(await kube.get(V, 'ModelContextProtocol', 'default', 'mem')), 'mem gone once the finalizer is released').catch(failWith);
      assert.equal(await kube.get('apps/v1', 'StatefulSet', 'default', 'mem-redis'), null);
      assert.equal(await kube.get('v1', 'Service', 'default', 'mem-redis'), null);
    });

    it('a Memory MCP is reachable; an invalid provision (File) is InvalidSpec', async () => {
      await kube.create({ apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'plain', namespace: 'default' }, spec: { storage: { type: 'Memory' } } });
      const p = await wait(async () => {
        const x = await kube.get(V, 'ModelContextProtocol', 'default', 'plain');
        return cond(x, 'Ready') ? x : null;
      }, 'plain status').catch(failWith);
      assert.equal(cond(p, 'StoreReachable').status, 'True');
      assert.equal(p.status.connectionEndpoint, 'memory');
      await kube.create({ apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'filestore', namespace: 'default' }, spec: { storage: { type: 'File', provision: true, config: { path: '/data/ctx.db' } } } });
      const f = await wait(async () => {
        const x = await kube.get(V, 'ModelContextProtocol', 'default', 'filestore');
        return cond(x, 'Ready') ? x : null;
      }, 'filestore status').catch(failWith);
      assert.equal(cond(f, 'Ready').reason, 'InvalidSpec');
      assert.match(cond(f, 'Ready').message, /provision/);
    });

    it('checks the store: Redis PING with its password, PostgreSQL connect, endpoints without passwords', async () => {
      const redis = await startRedis({ password: 's3cret' });
      const pg = await startPostgres();
      try {
        const port = new URL(redis.url).port;
        await kube.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'redis-pass', namespace: 'default' }, data: { password: Buffer.from('s3cret').toString('base64') } });
        await kube.create({
          apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'rds', namespace: 'default' },
          spec: { storage: { type: 'Redis', config: { url: `redis://127.0.0.1:${port}/0`, passwordRef: { name: 'redis-pass', key: 'password' } } } },
        });
        const r = await wait(async () => {
          const x = await kube.get(V, 'ModelContextProtocol', 'default', 'rds');
          return cond(x, 'StoreReachable') ? x : null;
        }, 'rds StoreReachable').catch(failWith);
        assert.equal(cond(r, 'StoreReachable').status, 'True', cond(r, 'StoreReachable').message);
        assert.match(cond(r, 'StoreReachable').message, /PING/);
        assert.equal(cond(r, 'Degraded').status, 'False');
        assert.equal(r.status.storageProvisioned, false);
        assert.equal(r.status.connectionEndpoint, `redis://127.0.0.1:${port}/0`);

        // a wrong password: the AUTH error, Degraded
        await kube.mergePatch('v1', 'Secret', 'default', 'redis-pass', { data: { password: Buffer.from('wrong').toString('base64') } });
        const bad = await wait(async () => {
          const x = await kube.get(V, 'ModelContextProtocol', 'default', 'rds');
          return cond(x, 'StoreReachable')?.status === 'False' ? x : null;
        }, 'rds unreachable with the wrong password').catch(failWith);
        assert.match(cond(bad, 'StoreReachable').message, /WRONGPASS|invalid|ERR/i);
        assert.equal(cond(bad, 'Degraded').status, 'True');
        assert.equal(cond(bad, 'Degraded').reason, 'StoreUnreachable');

        const pgu = new URL(pg.dsn);
        const dsn = `postgresql://postgres:pw@127.0.0.1:${pgu.port}/postgres`;
        await kube.create({ apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'pgs', namespace: 'default' }, spec: { storage: { type: 'PostgreSQL', config: { dsn } } } });
        const p = await wait(async () => {
          const x = await kube.get(V, 'ModelContextProtocol', 'default', 'pgs');
          return cond(x, 'StoreReachable') ? x : null;
        }, 'pgs StoreReachable').catch(failWith);
        assert.equal(cond(p, 'StoreReachable').status, 'True', cond(p, 'StoreReachable').message);
        assert.equal(p.status.connectionEndpoint, `postgresql://postgres@127.0.0.1:${pgu.port}/postgres`, 'password removed');
        await pg.stop();
        await kube.mergePatch(V, 'ModelContextProtocol', 'default', 'pgs', { spec: { storage: { config: { keyPrefix: 'x_' } } } });
        const down = await wait(async () => {
          const x = await kube.get(V, 'ModelContextProtocol', 'default', 'pgs');
          return cond(x, 'StoreReachable')?.status === 'False' ? x : null;
        }, 'pgs unreachable once stopped').catch(failWith);
        assert.match(cond(down, 'StoreReachable').message, /connect/);
      } finally {
        await redis.stop();
        await pg.stop();
      }
    });

    it('keeps reconciling after a 410 re-list and an API server restart', async () => {
      const before = await (await fetch(`${ctl.url}/metrics`)).text();
      const lists0 = Number(/ctxgate_controller_informer_lists_total (\d+)/.exec(before)[1]);
      // a write moves the resourceVersion past what most informers last saw (bookmarks come
      // every second), so their resumed watches get 410 and re-list
      await kube.create({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'rv-bump', namespace: 'default' }, data: {} });
      await kube.expireResourceVersions();
      await kube.restart();
      // the harness's own kept-alive connection may be the one the restart cut: retry it
      await wait(async () => {
        try {
          return await kube.mergePatch(V, 'LLMGateway', 'default', 'alpha', { spec: { deployment: { replicas: 4 } } });
        } catch (e) {
          if (e.status) throw e;
          return null;
        }
      }, 'the patch after the restart');
      await wait(async () => (await kube.get('apps/v1', 'Deployment', 'default', 'alpha'))?.spec.replicas === 4, 'replicas 4 after 410 + restart', 40000).catch(failWith);
      await wait(async () => {
        const m = await (await fetch(`${ctl.url}/metrics`)).text();
        return Number(/ctxgate_controller_informer_lists_total (\d+)/.exec(m)[1]) > lists0;
      }, 're-listed after the 410').catch(failWith);
      // and later changes still reconcile
      await kube.mergePatch(V, 'LLMGateway', 'default', 'alpha', { spec: { deployment: { replicas: 1 } } });
      await wait(async () => (await kube.get('apps/v1', 'Deployment', 'default', 'alpha'))?.spec.replicas === 1, 'replicas 1 after the re-list').catch(failWith);
    });

    it('reads modelHealth and currentActiveSessions from a real gateway', async () => {
      const gw = await startGateway({
        manifests: [
          { apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'sess' }, spec: { storage: { type: 'Memory' } } },
          {
            apiVersion: V, kind: 'LLMGateway', metadata: { name: 'live' },
            spec: {
              listener: { port: '__PORT__' }, modelTargets: [{ name: 'm1', type: 'Mock' }],
              routes: [{ name: 'main', backends: [{ target: 'm1' }], contextRef: { name: 'sess' } }],
            },
          },
        ],
      });
      try {
        for (const id of ['c1', 'c2']) {
          const res = await fetch(`${gw.url}/v1/chat/completions`, {
            method: 'POST', headers: { 'content-type': 'application/json', 'x-conversation-id': id },
            body: JSON.stringify({ model: 'm1', messages: [{ role: 'user', content: 'hi' }] }),
          });
          assert.equal(res.status, 200);
        }
        const first = await ctl.stop();
        assert.equal(first.code, 0, `the first controller exits 0 on SIGTERM (sanitizers clean):\n${ctl.logs().slice(-4000)}`);
        ctl = await startController(kube, ['--leader-elect=false', '--gateway-admin-url', `${gw.url}`]);
        await kube.create({ apiVersion: V, kind: 'ModelContextProtocol', metadata: { name: 'sess', namespace: 'default' }, spec: { storage: { type: 'Memory' } } });
        await kube.create(gatewayObj('live', { routes: [{ name: 'main', backends: [{ target: 'm1' }], contextRef: { name: 'sess' } }] }));
        const o = await wait(async () => {
          const x = await kube.get(V, 'LLMGateway', 'default', 'live');
          return x?.status?.modelHealth?.[0]?.state ? x : null;
        }, 'live modelHealth').catch(failWith);
        assert.equal(o.status.modelHealth[0].name, 'm1');
        assert.equal(o.status.modelHealth[0].state, 'Healthy');
        assert.equal(cond(o, 'Degraded').status, 'False');
        assert.equal(cond(o, 'Degraded').reason, 'TargetsHealthy');
        const role = await kube.get('rbac.authorization.k8s.io/v1', 'Role', 'default', 'live-gateway');
        assert.deepEqual(role.rules.find((x) => x.resources.includes('modelcontextprotocols')).resourceNames, ['sess']);
        // the gateway reports its store's size every 5 s
        await wait(async () => (await kube.get(V, 'ModelContextProtocol', 'default', 'sess'))?.status?.currentActiveSessions === 2,
          'currentActiveSessions 2', 20000).catch(failWith);
      } finally {
        await gw.stop();
      }
    });

    it('SIGTERM exits 0', async () => {
      const r = await ctl.stop('SIGTERM');
      ctl = null;
      assert.equal(r.code, 0);
    });
  });

  describe(`controller leader election (${mode.name} API server)`, { skip: mode.skip }, () => {
    let kube;
    const ctls = [];
    before(async () => {
      kube = await startKube({ mode: mode.name, crds: true });
    });
    after(async () => {
      for (const c of ctls) await c.stop('SIGKILL');
      await kube?.stop();
    });
    const lease = () => kube.get('coordination.k8s.io/v1', 'Lease', 'default', 'ctxgate-controller');
    const leaseFlags = ['--lease-duration', '4', '--renew-deadline', '3', '--retry-period', '1', '--lease-namespace', 'default'];

    it('one leader writes; SIGKILL hands over within the lease; SIGTERM releases at once', async () => {
      try {
        await handOver();
      } catch (e) {
        for (const c of ctls) console.error(`---- controller log:\n${c.logs().slice(-6000)}`);
        throw e;
      }
    });

    async function handOver() {
      const a = await startController(kube, [...leaseFlags, '--identity', 'ctl-a']);
      ctls.push(a);
      await kube.waitFor(async () => (await lease())?.spec?.holderIdentity === 'ctl-a', { timeoutMs: 10000, what: 'ctl-a leads' });
      const b = await startController(kube, [...leaseFlags, '--identity', 'ctl-b']);
      ctls.push(b);
      await kube.create(gatewayObj('led'));
      await kube.waitFor(() => kube.get('apps/v1', 'Deployment', 'default', 'led'), { timeoutMs: 10000, what: 'the leader reconciles' });
      await sleep(1500);
      const mb = await (await fetch(`${b.url}/metrics`)).text();
      assert.match(mb, /ctxgate_controller_leader 0/);
      assert.match(mb, /ctxgate_controller_reconcile_total\{kind="LLMGateway",result="success"\} 0/, 'the follower reconciles nothing');
      assert.equal((await lease()).spec.holderIdentity, 'ctl-a');

      const t0 = Date.now();
      await a.stop('SIGKILL');
      await kube.waitFor(async () => (await lease())?.spec?.holderIdentity === 'ctl-b', { timeoutMs: 15000, what: 'ctl-b takes over' });
      assert.ok(Date.now() - t0 < 4000 + 3000, `hand-over within the lease (+ a retry): ${Date.now() - t0} ms`);
      await kube.mergePatch(V, 'LLMGateway', 'default', 'led', { spec: { deployment: { replicas: 2 } } });
      await kube.waitFor(async () => (await kube.get('apps/v1', 'Deployment', 'default', 'led'))?.spec.replicas === 2, { timeoutMs: 10000, what: 'the new leader reconciles' });

      // the Lease taken away (another holder renewing it): b stops reconciling, then leads again
      // once the intruder lets it expire
      let stealing = true;
      const steal = (async () => {
        while (stealing) {
          const l = await lease();
          l.spec.holderIdentity = 'intruder';
          l.spec.renewTime = new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
          await kube.update(l).catch(() => {});
          await sleep(300);
        }
      })();
      await kube.waitFor(async () => /ctxgate_controller_leader 0/.test(await (await fetch(`${b.url}/metrics`)).text()),
        { timeoutMs: 10000, what: 'ctl-b notices it lost the Lease' });
      await kube.mergePatch(V, 'LLMGateway', 'default', 'led', { spec: { deployment: { replicas: 3 } } });
      await sleep(2000);
      assert.equal((await kube.get('apps/v1', 'Deployment', 'default', 'led')).spec.replicas, 2, 'no reconcile without the Lease');
      stealing = false;
      await steal;
      await kube.waitFor(async () => (await lease())?.spec?.holderIdentity === 'ctl-b', { timeoutMs: 15000, what: 'ctl-b leads again' });
      await kube.waitFor(async () => (await kube.get('apps/v1', 'Deployment', 'default', 'led'))?.spec.replicas === 3,
        { timeoutMs: 10000, what: 'ctl-b reconciles again' });

      const c = await startController(kube, [...leaseFlags, '--identity', 'ctl-c']);
      ctls.push(c);
      const t1 = Date.now();
      const r = await b.stop('SIGTERM');
      assert.equal(r.code, 0);
      const l = await lease();
      assert.ok(!l.spec.holderIdentity || l.spec.holderIdentity === 'ctl-c', `released: holder ${l.spec.holderIdentity}`);
      await kube.waitFor(async () => (await lease())?.spec?.holderIdentity === 'ctl-c', { timeoutMs: 5000, what: 'ctl-c takes the released Lease' });
      assert.ok(Date.now() - t1 < 3500, `released Lease taken at once: ${Date.now() - t1} ms`);
    }
  });
}
