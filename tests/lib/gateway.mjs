// gateway.mjs — starts and stops a real ctxgate process for integration tests.
//
//   const gw = await startGateway({ manifests: yamlText });   // __PORT__ is replaced by a free port
//   const client = new OpenAI({ baseURL: gw.url + '/v1', apiKey: 'k', maxRetries: 0 });
//   ...
//   await gw.stop();                                           // always, in an `after` hook
//
// The binary is $CTXGATE_BIN or build/ctxgate. The manifests go into a fresh temporary directory
// (gateway.yaml, plus `files`), served with `serve -f DIR --workers 2`. stdout (the access log) and
// stderr (the process log) are captured; when a test fails, print gw.logs().
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function gatewayBinary() {
  const bin = process.env.CTXGATE_BIN || path.join(REPO_ROOT, 'build', 'ctxgate');
  return path.isAbsolute(bin) ? bin : path.resolve(REPO_ROOT, bin);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let sanitizerBuild;
/** True when gatewayBinary() is an AddressSanitizer build (it links libasan: it names __asan_init). */
export function isSanitizerBuild() {
  if (sanitizerBuild === undefined) {
    try {
      sanitizerBuild = fs.readFileSync(gatewayBinary()).includes('__asan_init');
    } catch {
      sanitizerBuild = false;
    }
  }
  return sanitizerBuild;
}

/** A port that was free a moment ago on loopback (bind 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function toYaml(manifests) {
  if (typeof manifests === 'string') return manifests;
  if (Array.isArray(manifests)) {
    return manifests.map((m) => (typeof m === 'string' ? m : YAML.stringify(m))).join('\n---\n');
  }
  return YAML.stringify(manifests);
}

function substitute(text, vars) {
  let out = text;
  for (const [k, v] of Object.entries(vars)) out = out.split(`__${k}__`).join(String(v));
  return out;
}

/** Writes `content` to `file` so that a watcher never sees a half-written file. */
export function writeFileAtomic(file, content) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  fs.writeFileSync(tmp, content);
  fs.renameSync(tmp, file);
}

/**
 * Runs the ctxgate binary to completion: {code, signal, stdout, stderr}. `bin` and `cwd` run
 * another copy of it elsewhere (an installed one); an `env` value of undefined removes it.
 */
export function runCtxgate(args, { timeoutMs = 30000, env, bin, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(bin || gatewayBinary(), args, {
      cwd: cwd || REPO_ROOT,
      env: { ...process.env, ...(env || {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => (stdout += d));
    proc.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Parses Prometheus text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let lm;
      while ((lm = re.exec(m[3]))) labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** Sum of the samples named `name` whose labels include all of `labels`. */
export function metricSum(samples, name, labels = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

const live = new Set();
process.on('exit', () => {
  // last resort: never leave a gateway behind, even when a test forgot its after hook
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/**
 * Starts ctxgate on a free port.
 * @param {object} o
 * @param {string|object|Array<string|object>} o.manifests YAML text or objects; `__PORT__` is replaced
 * @param {Record<string,string>} [o.files] further files (name → content) in the same directory
 * @param {number} [o.workers] default 2
 * @param {string[]} [o.extraArgs]
 * @param {Record<string,string>} [o.env] an undefined value removes the variable
 * @param {string} [o.bin] another ctxgate binary (default: gatewayBinary())
 * @param {string} [o.cwd] its working directory (default: the repository root)
 * @param {string} [o.metricsPath] default /metrics
 * @param {number} [o.startTimeoutMs] default 20000 (sanitizer builds start slower)
 */
export async function startGateway(o) {
  const port = o.port || (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxgate-it-'));
  const vars = { PORT: port, ...(o.vars || {}) };
  const configFile = path.join(dir, 'gateway.yaml');
  fs.writeFileSync(configFile, substitute(toYaml(o.manifests), vars));
  for (const [name, content] of Object.entries(o.files || {})) {
    fs.writeFileSync(path.join(dir, name), substitute(content, vars));
  }
  const args = ['serve', '-f', dir, '--workers', String(o.workers || 2), ...(o.extraArgs || [])];
  const proc = spawn(o.bin || gatewayBinary(), args, {
    cwd: o.cwd || REPO_ROOT,
    env: { ...process.env, ...(o.env || {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d) => (stdout += d));
  proc.stderr.on('data', (d) => (stderr += d));
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('close', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(proc);
      resolve(exitInfo);
    });
  });
  let spawnError = null;
  proc.on('error', (err) => (spawnError = err));

  const url = `http://127.0.0.1:${port}`;
  const metricsPath = o.metricsPath || '/metrics';

  const gw = {
    url,
    baseURL: `${url}/v1`,
    port,
    dir,
    configFile,
    proc,
    exited,
    args,
    stdout: () => stdout,
    stderr: () => stderr,
    logs: () => `--- ctxgate ${args.join(' ')} (port ${port})\n--- stderr:\n${stderr}\n--- stdout:\n${stdout}`,
    /** Access-log lines (stdout) parsed as JSON; lines that are not JSON are returned as {raw}. */
    accessLog() {
      return stdout
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return { raw: l };
          }
        });
    },
    async metrics() {
      const res = await fetch(url + metricsPath);
      const text = await res.text();
      return { status: res.status, headers: res.headers, text, samples: parseMetrics(text) };
    },
    async reloadCounts() {
      const { samples } = await gw.metrics();
      return {
        success: metricSum(samples, 'ctxgate_config_reloads_total', { result: 'success' }),
        failure: metricSum(samples, 'ctxgate_config_reloads_total', { result: 'failure' }),
      };
    },
    /**
     * Rewrites gateway.yaml (atomically, by rename) and waits until the gateway counted a
     * reload (ctxgate_config_reloads_total grew). Returns the counters' growth {success, failure}.
     * With {inPlace: true} the file is truncated and rewritten instead.
     */
    async reload(newManifests, { inPlace = false, expect, timeoutMs = 15000 } = {}) {
      const before = await gw.reloadCounts();
      const text = substitute(toYaml(newManifests), vars);
      if (inPlace) fs.writeFileSync(configFile, text);
      else writeFileAtomic(configFile, text);
      return gw.waitForReload(before, { expect, timeoutMs });
    },
    /** Waits until the reload counters moved past `before` (and, with expect, that kind grew). */
    async waitForReload(before, { expect, timeoutMs = 15000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (exitInfo) throw new Error(`ctxgate exited (${JSON.stringify(exitInfo)}) while waiting for a reload\n${gw.logs()}`);
        const now = await gw.reloadCounts();
        const delta = { success: now.success - before.success, failure: now.failure - before.failure };
        const moved = expect ? delta[expect] > 0 : delta.success + delta.failure > 0;
        if (moved) {
          // let a burst of file events settle into its last reload
          await sleep(300);
          const after = await gw.reloadCounts();
          return { success: after.success - before.success, failure: after.failure - before.failure };
        }
        if (Date.now() > deadline) {
          throw new Error(`no reload was counted within ${timeoutMs} ms (counters ${JSON.stringify(now)})\n${gw.logs()}`);
        }
        await sleep(50);
      }
    },
    /** Sends a signal; returns the exit promise ({code, signal}). */
    kill(signal = 'SIGTERM') {
      if (!exitInfo) proc.kill(signal);
      return exited;
    },
    /** SIGTERM, then SIGKILL after timeoutMs. Resolves with {code, signal}. Safe to call twice. */
    async stop(timeoutMs = 15000) {
      if (!exitInfo) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (!exitInfo) proc.kill('SIGKILL');
        }, timeoutMs);
        await exited;
        clearTimeout(timer);
      }
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
      return exitInfo;
    },
  };

  const deadline = Date.now() + (o.startTimeoutMs || 20000);
  for (;;) {
    if (spawnError) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`cannot start ${gatewayBinary()}: ${spawnError.message} (build it first: cmake --build build)`);
    }
    if (exitInfo) {
      await gw.stop();
      throw new Error(`ctxgate exited during start-up (${JSON.stringify(exitInfo)})\n${gw.logs()}`);
    }
    try {
      if (o.ready) {
        if (await o.ready(port)) break; // the caller's own probe (e.g. HTTPS)
      } else {
        const res = await fetch(url + '/healthz');
        await res.arrayBuffer();
        if (res.status === 200) break;
      }
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await gw.stop(2000);
      throw new Error(`ctxgate did not answer /healthz within the start timeout\n${gw.logs()}`);
    }
    await sleep(50);
  }
  return gw;
}

/**
 * The sanitizer findings in a process log (stderr of an ASan/UBSan build): the lines of every
 * AddressSanitizer / LeakSanitizer report and every UBSan `runtime error:`; '' when there are
 * none. A release build never prints any, so asserting '' is right for both builds:
 *   const exit = await gw.stop(); assert.equal(sanitizerReports(gw.stderr()), '');
 */
export function sanitizerReports(stderr) {
  const lines = String(stderr || '').split('\n');
  const out = [];
  let inReport = false;
  for (const l of lines) {
    if (/==\d+==ERROR: (Address|Leak)Sanitizer|^SUMMARY: \w+Sanitizer|runtime error:/.test(l)) inReport = true;
    if (inReport) out.push(l);
    if (/^SUMMARY: /.test(l)) inReport = false;
  }
  return out.join('\n').trim();
}

function tail(text, n) {
  const lines = text.split('\n');
  return lines.slice(Math.max(0, lines.length - n)).join('\n');
}

/** The end of a gateway's logs, for an assertion message. */
export function tailLogs(gw, n = 40) {
  return `--- ctxgate (port ${gw.port}) stderr, last lines:\n${tail(gw.stderr(), n)}\n--- stdout, last lines:\n${tail(gw.stdout(), 10)}`;
}

/**
 * Wraps a test body so that a failure carries the end of the gateways' logs:
 *   test('x', withLogs(() => gw, async () => { ... }))
 */
export function withLogs(getGateways, fn) {
  return async (t) => {
    try {
      return await fn(t);
    } catch (err) {
      const gws = [].concat(getGateways() || []).filter(Boolean);
      if (err && typeof err === 'object' && gws.length) {
        const extra = gws.map((g) => tailLogs(g)).join('\n');
        try {
          err.message = `${err.message}\n${extra}`;
        } catch {
          /* read-only message */
        }
      }
      throw err;
    }
  };
}
