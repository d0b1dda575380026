// kube-apiserver.mjs — a small Kubernetes API server double for ctxgate's tests (HTTPS, JSON only).
//
//   import { startFakeApiServer } from '../fakes/kube-apiserver.mjs';
//   const api = await startFakeApiServer({ port: 0, tls: { key, cert, ca }, token: 'T', bookmarkIntervalMs: 1000 });
//   api.url; api.port; await api.restart(); api.compact(); api.logs(); await api.stop();
//   CLI: node tests/fakes/kube-apiserver.mjs --port P --key F --cert F --ca F --token T [--bookmark-ms N]
//
// It follows the documented REST semantics (api-concepts): one global resourceVersion counter; create
// (uid, creationTimestamp, generateName, generation, 409 AlreadyExists, 404 for a missing namespace),
// PUT (409 Conflict on a stale resourceVersion, none = unconditional, identical object = no write),
// PATCH (merge-patch RFC 7386, json-patch RFC 6902, strategic-merge = merge-patch), DELETE (finalizers:
// deletionTimestamp then removal once they are gone), the /status subresource (main writes keep status,
// status writes keep everything else; generation moves only for changes outside metadata and status),
// list with limit/continue (a consistent snapshot at the token's resourceVersion), label and field
// selectors, watch from a resourceVersion with bookmarks, 410 Expired after compaction, v1 Status
// errors, discovery, and CRDs: a POSTed CRD gets Established (in a second write, as the real one does)
// and its resources are served, defaulted, pruned and validated by their structural schema and their
// x-kubernetes-validations CEL rules.
//
// Where it differs from a real API server (on purpose, to stay small):
// - No authorization (RBAC objects are stored, never enforced), no admission chain (webhook
//   configurations are stored only, never called), no managedFields, no server-side apply: a PATCH
//   with application/apply-patch+yaml answers 415 (ctxgate's client does create-or-update instead).
// - Strategic merge patch is applied as a JSON merge patch (lists are replaced, not merged by key).
// - No garbage collector (ownerReferences are stored as sent; deleting an owner leaves its dependents,
//   as in envtest), no namespace controller (deleting a namespace removes only the namespace), no
//   controllers at all (a Deployment never gets pods or status). propagationPolicy is ignored.
// - Built-in objects get no validation beyond metadata (names, namespace) and Secret data base64
//   (stringData is folded into data, as the real server does). core/v1 and events.k8s.io/v1 Events
//   are two separate stores (the real server has one store with two views).
// - Field selectors: metadata.name and metadata.namespace only. Label selectors: =, ==, !=, in, notin,
//   key, !key. No Table output, no protobuf, no /watch/ legacy paths, no CRD conversion (every served
//   version shares one store, objects are relabelled with the requested apiVersion).
// - CEL: evaluated with the npm package @marcbachmann/cel-js (chosen over cel-js, which lacks
//   `.size()`/startsWith and `has()` on macro variables, and @bufbuild/cel, which wants protobuf
//   types): the standard CEL language and macros, no Kubernetes CEL libraries (lists, regex ext, url,
//   quantity, format), no cost estimation, no optionalOldSelf, and no validation ratcheting. Rules run
//   only when the schema checks passed; transition rules (oldSelf) run for object fields and map
//   values that existed before, never for list items. Schema errors come first, then CEL errors.
// - Immediate deletes answer a v1 Status Success (the real one returns the object for some types).
// - restart() keeps everything (like etcd does); compact() makes every resourceVersion before the
//   current one too old, for watches and continue tokens alike (the real watch cache keeps a window).
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { parse as celParse } from '@marcbachmann/cel-js';

// ---------------------------------------------------------------------------------------------
// Built-in resources: [group, version, plural, kind, namespaced, flags]; flags: s = /status
// subresource, g = tracks metadata.generation.
const BUILTINS = [
  ['', 'v1', 'namespaces', 'Namespace', false, 's'],
  ['', 'v1', 'secrets', 'Secret', true, ''],
  ['', 'v1', 'configmaps', 'ConfigMap', true, ''],
  ['', 'v1', 'serviceaccounts', 'ServiceAccount', true, ''],
  ['', 'v1', 'services', 'Service', true, 's'],
  ['', 'v1', 'endpoints', 'Endpoints', true, ''],
  ['', 'v1', 'pods', 'Pod', true, 's'],
  ['', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', true, 's'],
  ['', 'v1', 'events', 'Event', true, ''],
  ['apps', 'v1', 'deployments', 'Deployment', true, 'sg'],
  ['apps', 'v1', 'statefulsets', 'StatefulSet', true, 'sg'],
  ['rbac.authorization.k8s.io', 'v1', 'roles', 'Role', true, ''],
  ['rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding', true, ''],
  ['rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', false, ''],
  ['rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', false, ''],
  ['autoscaling', 'v2', 'horizontalpodautoscalers', 'HorizontalPodAutoscaler', true, 'sg'],
  ['policy', 'v1', 'poddisruptionbudgets', 'PodDisruptionBudget', true, 'sg'],
  ['events.k8s.io', 'v1', 'events', 'Event', true, ''],
  ['coordination.k8s.io', 'v1', 'leases', 'Lease', true, ''],
  ['admissionregistration.k8s.io', 'v1', 'validatingwebhookconfigurations', 'ValidatingWebhookConfiguration', false, 'g'],
  ['apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', false, 'sg'],
];
const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json', 'application/apply-patch+yaml'];

const clone = (v) => (v === undefined ? undefined : structuredClone(v));
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const nowStamp = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z'); // RFC 3339, seconds
const gv = (r) => (r.group ? `${r.group}/${r.version}` : r.version);

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => a[k] !== undefined);
  const kb = Object.keys(b).filter((k) => b[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
}

// ---------------------------------------------------------------------------------------------
// Errors: every failure is a v1 Status, thrown as ApiError and written by the request handler.
class ApiError extends Error {
  constructor(code, reason, message, details) {
    super(message);
    this.status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
    if (details) this.status.details = details;
  }
}
const qualified = (r) => (r.group ? `${r.plural}.${r.group}` : r.plural); // "leases.coordination.k8s.io"
const detailsOf = (r, name) => ({ name, group: r.group, kind: r.plural });
const notFound = (r, name) => new ApiError(404, 'NotFound', `${qualified(r)} "${name}" not found`, detailsOf(r, name));
const badRequest = (msg) => new ApiError(400, 'BadRequest', msg);
const noRoute = () => new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
const notAllowed = () => new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {});
const conflict = (r, name) =>
  new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": the object has been modified; please apply your changes to the latest version and try again`, detailsOf(r, name));
const expired = (msg, extraMeta) => {
  const e = new ApiError(410, 'Expired', msg);
  if (extraMeta) Object.assign(e.status.metadata, extraMeta);
  return e;
};

// errs: [{field, type: 'Invalid'|'Required'|'NotSupported'|'TooLong'|'TooMany'|'Forbidden'|'Duplicate', detail}]
// as k8s.io/apimachinery field.Error renders them, aggregated the way errors.NewInvalid does.
const CAUSE_REASON = {
  Invalid: 'FieldValueInvalid', Required: 'FieldValueRequired', NotSupported: 'FieldValueNotSupported',
  TooLong: 'FieldValueTooLong', TooMany: 'FieldValueTooMany', Forbidden: 'FieldValueForbidden', Duplicate: 'FieldValueDuplicate',
};
function invalid(r, name, errs) {
  const text = errs.map((e) => `${e.field}: ${e.detail}`);
  const whole = text.length === 1 ? text[0] : `[${text.join(', ')}]`;
  const kind = r.group ? `${r.kind}.${r.group}` : r.kind;
  return new ApiError(422, 'Invalid', `${kind} "${name}" is invalid: ${whole}`, {
    name, group: r.group, kind: r.kind,
    causes: errs.map((e) => ({ reason: CAUSE_REASON[e.type] ?? 'FieldValueInvalid', message: e.detail, field: e.field })),
  });
}
const goValue = (v) => (typeof v === 'string' ? JSON.stringify(v) : isObj(v) || Array.isArray(v) ? JSON.stringify(JSON.stringify(v)) : String(v));
const fieldErr = {
  invalid: (field, value, msg) => ({ field, type: 'Invalid', detail: `Invalid value: ${goValue(value)}: ${msg}` }),
  required: (field, msg) => ({ field, type: 'Required', detail: msg ? `Required value: ${msg}` : 'Required value' }),
  notSupported: (field, value, allowed) => ({ field, type: 'NotSupported', detail: `Unsupported value: ${goValue(value)}: supported values: ${allowed.map(goValue).join(', ')}` }),
  forbidden: (field, msg) => ({ field, type: 'Forbidden', detail: `Forbidden: ${msg}` }),
};

// ---------------------------------------------------------------------------------------------
// Structural schema: prune unknown fields, drop non-nullable nulls, apply defaults (also inside
// array items and map values), then check. Paths render as the real server does: spec.a[0].b.
const typeName = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v);

function normalize(schema, value, isRoot) {
  if (!schema || !isObj(value) && !Array.isArray(value)) return value;
  if (Array.isArray(value)) {
    if (schema.items) value.forEach((it, i) => (value[i] = normalizeChild(schema.items, it)));
    return value;
  }
  const props = schema.properties ?? {};
  for (const key of Object.keys(value)) {
    if (isRoot && ['apiVersion', 'kind', 'metadata'].includes(key)) continue;
    const sub = props[key] ?? (isObj(schema.additionalProperties) ? schema.additionalProperties : undefined);
    if (sub) value[key] = normalizeChild(sub, value[key]);
    else if (!schema['x-kubernetes-preserve-unknown-fields'] && schema.additionalProperties !== true && (schema.properties || schema.additionalProperties === false || schema.type === 'object')) delete value[key];
    if (value[key] === undefined) delete value[key];
  }
  for (const [key, sub] of Object.entries(props)) {
    if (value[key] === undefined && sub.default !== undefined) value[key] = normalizeChild(sub, clone(sub.default));
  }
  return value;
}
const normalizeChild = (schema, v) => (v === null && !schema.nullable ? undefined : normalize(schema, v, false));

function checkSchema(schema, v, path, errs) {
  if (!schema) return;
  if (v === null) {
    if (!schema.nullable) errs.push(fieldErr.invalid(path, 'null', `${path} in body must be of type ${schema.type ?? 'object'}: "null"`));
    return;
  }
  const t = typeName(v);
  if (schema['x-kubernetes-int-or-string']) {
    if (t !== 'integer' && t !== 'string') errs.push(fieldErr.invalid(path, t, `${path} in body must be of type integer-or-string: "${t}"`));
  } else if (schema.type && !(schema.type === t || (schema.type === 'number' && t === 'integer'))) {
    errs.push(fieldErr.invalid(path, t, `${path} in body must be of type ${schema.type}: "${t}"`));
    return;
  }
  if (schema.enum && !schema.enum.some((e) => deepEqual(e, v))) errs.push(fieldErr.notSupported(path, v, schema.enum));
  if (typeof v === 'number') checkNumber(schema, v, path, errs);
  if (typeof v === 'string') checkString(schema, v, path, errs);
  if (Array.isArray(v)) {
    if (schema.maxItems !== undefined && v.length > schema.maxItems) errs.push({ field: path, type: 'TooMany', detail: `Too many: ${v.length}: must have at most ${schema.maxItems} items` });
    if (schema.minItems !== undefined && v.length < schema.minItems) errs.push(fieldErr.invalid(path, v.length, `${path} in body should have at least ${schema.minItems} items`));
    v.forEach((it, i) => checkSchema(schema.items, it, `${path}[${i}]`, errs));
    checkListType(schema, v, path, errs);
  }
  if (isObj(v)) {
    for (const req of schema.required ?? []) if (v[req] === undefined) errs.push(fieldErr.required(join(path, req)));
    for (const [k, item] of Object.entries(v)) {
      const sub = schema.properties?.[k];
      if (sub) checkSchema(sub, item, join(path, k), errs);
      else if (isObj(schema.additionalProperties)) checkSchema(schema.additionalProperties, item, `${path}[${k}]`, errs);
    }
    const n = Object.keys(v).length;
    if (schema.maxProperties !== undefined && n > schema.maxProperties) errs.push({ field: path, type: 'TooMany', detail: `Too many: ${n}: must have at most ${schema.maxProperties} items` });
    if (schema.minProperties !== undefined && n < schema.minProperties) errs.push(fieldErr.invalid(path, n, `${path} in body should have at least ${schema.minProperties} properties`));
  }
}
// x-kubernetes-list-type set/map: items (or their map keys) are unique, reported as the real server
// renders Go values: Duplicate value: "x" or Duplicate value: map[string]interface {}{"name":"a"}.
function checkListType(schema, v, path, errs) {
  const type = schema['x-kubernetes-list-type'];
  if (type !== 'set' && type !== 'map') return;
  const keys = schema['x-kubernetes-list-map-keys'] ?? [];
  const seen = new Set();
  v.forEach((it, i) => {
    const id = type === 'set' ? JSON.stringify(it) : JSON.stringify(keys.map((k) => it?.[k]));
    if (!seen.has(id)) return void seen.add(id);
    const shown = type === 'set' ? goValue(it) : `map[string]interface {}{${keys.filter((k) => it?.[k] !== undefined).map((k) => `"${k}":${JSON.stringify(it[k])}`).join(', ')}}`;
    errs.push({ field: `${path}[${i}]`, type: 'Duplicate', detail: `Duplicate value: ${shown}` });
  });
}
const join = (path, key) => (path ? `${path}.${key}` : key);

function checkNumber(s, v, path, errs) {
  if (s.maximum !== undefined && (s.exclusiveMaximum ? v >= s.maximum : v > s.maximum))
    errs.push(fieldErr.invalid(path, v, `${path} in body should be less than ${s.exclusiveMaximum ? '' : 'or equal to '}${s.maximum}`));
  if (s.minimum !== undefined && (s.exclusiveMinimum ? v <= s.minimum : v < s.minimum))
    errs.push(fieldErr.invalid(path, v, `${path} in body should be greater than ${s.exclusiveMinimum ? '' : 'or equal to '}${s.minimum}`));
  if (s.multipleOf !== undefined && v % s.multipleOf !== 0) errs.push(fieldErr.invalid(path, v, `${path} in body should be a multiple of ${s.multipleOf}`));
}

function checkString(s, v, path, errs) {
  const len = [...v].length;
  if (s.maxLength !== undefined && len > s.maxLength) errs.push({ field: path, type: 'TooLong', detail: `Too long: may not be more than ${s.maxLength} bytes` });
  if (s.minLength !== undefined && len < s.minLength) errs.push(fieldErr.invalid(path, v, `${path} in body should be at least ${s.minLength} chars long`));
  if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(v)) errs.push(fieldErr.invalid(path, v, `${path} in body should match '${s.pattern}'`));
  if (s.format === 'date-time' && Number.isNaN(Date.parse(v))) errs.push(fieldErr.invalid(path, v, `${path} in body must be of type date-time: ${JSON.stringify(v)}`));
}

// ---------------------------------------------------------------------------------------------
// CEL: x-kubernetes-validations on every node present, `self` = the node with CEL types (integers
// as int, i.e. BigInt), `oldSelf` = the same node before an update (transition rules only).
const celCache = new Map();
function celProgram(src) {
  if (!celCache.has(src)) {
    try {
      celCache.set(src, { fn: celParse(src) });
    } catch (err) {
      celCache.set(src, { error: `compilation failed: ${err.message.split('\n')[0]}` });
    }
  }
  return celCache.get(src);
}

function toCel(schema, v) {
  if (Array.isArray(v)) return v.map((it) => toCel(schema?.items, it));
  if (isObj(v)) {
    const out = {};
    for (const [k, it] of Object.entries(v)) out[k] = toCel(schema?.properties?.[k] ?? (isObj(schema?.additionalProperties) ? schema.additionalProperties : undefined), it);
    return out;
  }
  if (typeof v === 'number' && Number.isInteger(v) && schema?.type !== 'number') return BigInt(v);
  return v;
}

function checkCel(schema, v, old, path, errs) {
  if (!schema || v === undefined || v === null) return;
  for (const rule of schema['x-kubernetes-validations'] ?? []) {
    const transition = /\boldSelf\b/.test(rule.rule);
    if (transition && old === undefined) continue;
    const vars = { self: toCel(schema, v) };
    if (transition) vars.oldSelf = toCel(schema, old);
    const field = rule.fieldPath ? `${path}${rule.fieldPath}` : path;
    const node = schema['x-kubernetes-int-or-string'] ? 'integer-or-string' : schema.type ?? 'object';
    const prog = celProgram(rule.rule);
    let ok;
    try {
      if (prog.error) throw new Error(prog.error);
      ok = prog.fn(vars);
    } catch (err) {
      errs.push(fieldErr.invalid(path, node, `${err.message.split('\n')[0]} evaluating rule: ${rule.rule}`));
      continue;
    }
    if (ok === true) continue;
    errs.push(celFailure(rule, vars, field, node));
  }
  if (Array.isArray(v)) v.forEach((it, i) => checkCel(schema.items, it, undefined, `${path}[${i}]`, errs));
  if (isObj(v)) {
    for (const [k, it] of Object.entries(v)) {
      const sub = schema.properties?.[k];
      const o = isObj(old) ? old[k] : undefined;
      if (sub) checkCel(sub, it, o, join(path, k), errs);
      else if (isObj(schema.additionalProperties)) checkCel(schema.additionalProperties, it, o, `${path}[${k}]`, errs);
    }
  }
}

function celFailure(rule, vars, field, node) {
  let msg = rule.message ?? `failed rule: ${rule.rule}`;
  if (rule.messageExpression) {
    try {
      const m = celProgram(rule.messageExpression).fn?.(vars);
      if (typeof m === 'string' && m.trim()) msg = m;
    } catch {
      /* the real server falls back to message (or the rule) when messageExpression fails */
    }
  }
  if (rule.reason === 'FieldValueForbidden') return fieldErr.forbidden(field, msg);
  if (rule.reason === 'FieldValueRequired') return fieldErr.required(field, msg);
  if (rule.reason === 'FieldValueDuplicate') return { field, type: 'Duplicate', detail: `Duplicate value: ${msg}` };
  return fieldErr.invalid(field, node, msg);
}

// ---------------------------------------------------------------------------------------------
// Selectors.
function parseLabelSelector(text) {
  const reqs = [];
  const parts = [];
  let depth = 0;
  let cur = '';
  for (const ch of text ?? '') {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  for (const raw of parts.map((p) => p.trim()).filter(Boolean)) {
    let m;
    if ((m = raw.match(/^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$/))) reqs.push({ key: m[1], op: m[2], values: m[3].split(',').map((s) => s.trim()).filter(Boolean) });
    else if ((m = raw.match(/^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$/))) reqs.push({ key: m[1], op: m[2] === '!=' ? '!=' : '=', values: [m[3]] });
    else if ((m = raw.match(/^!\s*([\w./-]+)$/))) reqs.push({ key: m[1], op: '!' });
    else if ((m = raw.match(/^([\w./-]+)$/))) reqs.push({ key: m[1], op: 'exists' });
    else throw badRequest(`unable to parse requirement: found '${raw}', expected: in, notin, =, ==, !=, gt, lt`);
  }
  return reqs;
}

function labelsMatch(reqs, labels = {}) {
  return reqs.every(({ key, op, values }) => {
    const has = Object.hasOwn(labels, key);
    if (op === 'exists') return has;
    if (op === '!') return !has;
    if (op === '=' || op === 'in') return has && values.includes(labels[key]);
    return !has || !values.includes(labels[key]); // != and notin match objects without the label
  });
}

function parseFieldSelector(text) {
  return (text ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((term) => {
    const m = term.match(/^([\w.]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${term}'`);
    if (!['metadata.name', 'metadata.namespace'].includes(m[1])) throw badRequest(`field label not supported: ${m[1]}`);
    return { key: m[1].slice('metadata.'.length), neg: m[2] === '!=', value: m[3] };
  });
}
const fieldsMatch = (reqs, obj) => reqs.every(({ key, neg, value }) => ((obj.metadata[key] ?? '') === value) !== neg);

// ---------------------------------------------------------------------------------------------
// Patches.
function mergePatch(target, patch) {
  if (!isObj(patch)) return clone(patch);
  const out = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function jsonPatch(doc, ops) {
  if (!Array.isArray(ops)) throw badRequest('json patch must be an array of operations');
  let root = clone(doc);
  const unesc = (s) => s.replace(/~1/g, '/').replace(/~0/g, '~');
  const locate = (ptr) => {
    if (typeof ptr !== 'string' || (ptr !== '' && !ptr.startsWith('/'))) throw new ApiError(422, 'Invalid', `invalid JSON pointer: ${ptr}`);
    const keys = ptr.split('/').slice(1).map(unesc);
    let parent = null;
    let node = { '': root };
    let key = '';
    for (const k of keys) {
      parent = node[key];
      key = Array.isArray(parent) && k !== '-' ? Number(k) : k;
      if (parent === null || typeof parent !== 'object') throw new ApiError(422, 'Invalid', `the server rejected our request: doc is missing path: "${ptr}"`);
      node = parent;
    }
    return keys.length ? { parent: node, key } : null;
  };
  const get = (ptr) => {
    const at = locate(ptr);
    const v = at ? at.parent[at.key] : root;
    if (v === undefined) throw new ApiError(422, 'Invalid', `the server rejected our request: doc is missing path: "${ptr}"`);
    return clone(v);
  };
  const remove = (ptr) => {
    const v = get(ptr);
    const { parent, key } = locate(ptr);
    if (Array.isArray(parent)) parent.splice(key, 1);
    else delete parent[key];
    return v;
  };
  const add = (ptr, value) => {
    const at = locate(ptr);
    if (!at) return void (root = value);
    if (Array.isArray(at.parent)) at.parent.splice(at.key === '-' ? at.parent.length : at.key, 0, value);
    else at.parent[at.key] = value;
  };
  for (const op of ops) {
    if (op.op === 'add') add(op.path, clone(op.value));
    else if (op.op === 'remove') remove(op.path);
    else if (op.op === 'replace') (remove(op.path), add(op.path, clone(op.value)));
    else if (op.op === 'move') add(op.path, remove(op.from));
    else if (op.op === 'copy') add(op.path, get(op.from));
    else if (op.op === 'test') {
      if (!deepEqual(get(op.path), op.value)) throw new ApiError(422, 'Invalid', `the server rejected our request due to an error in our request: testing value ${op.path} failed`);
    } else throw badRequest(`Unexpected kind: ${op.op}`);
  }
  return root;
}

// ---------------------------------------------------------------------------------------------
// The server.
export async function startFakeApiServer({ port = 0, tls, token, bookmarkIntervalMs = 1000, host = '127.0.0.1' } = {}) {
  const resources = new Map(); // "group/version/plural" -> resource description
  const stores = new Map(); // "group/plural" -> Map("ns/name" -> object); shared by every version
  const history = []; // {rv, store, key, type, object, prev}, oldest first
  const watches = new Set();
  const sockets = new Set();
  const log = [];
  let rv = 1;
  let compactedRv = 1;
  let server = null;

  function addResource(r) {
    resources.set(`${r.group}/${r.version}/${r.plural}`, r);
    if (!stores.has(r.storeKey)) stores.set(r.storeKey, new Map());
  }
  for (const [group, version, plural, kind, namespaced, flags] of BUILTINS) {
    addResource({ group, version, plural, kind, namespaced, storeKey: `${group}/${plural}`, status: flags.includes('s'), generation: flags.includes('g'), builtin: true, singular: kind.toLowerCase() });
  }
  const nsRes = resources.get('/v1/namespaces');
  const crdRes = resources.get('apiextensions.k8s.io/v1/customresourcedefinitions');

  // ----- storage: every write goes through commit(), which numbers it and tells the watches
  function commit(r, type, obj, prev) {
    rv += 1;
    if (type !== 'DELETED') obj.metadata.resourceVersion = String(rv);
    const key = keyOf(obj);
    const store = stores.get(r.storeKey);
    if (type === 'DELETED') store.delete(key);
    else store.set(key, obj);
    const ev = { rv, store: r.storeKey, key, type, object: clone(obj), prev: clone(prev) };
    if (type === 'DELETED') ev.object.metadata.resourceVersion = String(rv);
    history.push(ev);
    for (const w of watches) w.deliver(ev);
    return obj;
  }
  const keyOf = (o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

  // The objects of a store as they were at resourceVersion `at` (undoing later history).
  function snapshot(storeKey, at) {
    const state = new Map([...stores.get(storeKey)].map(([k, o]) => [k, clone(o)]));
    for (let i = history.length - 1; i >= 0 && history[i].rv > at; i--) {
      const ev = history[i];
      if (ev.store !== storeKey) continue;
      if (ev.type === 'ADDED') state.delete(ev.key);
      else state.set(ev.key, clone(ev.prev));
    }
    return state;
  }

  // Objects are stored with the apiVersion of the version they were written through; every
  // answer is relabelled with the version asked for.
  const present = (r, obj) => ({ ...clone(obj), apiVersion: gv(r), kind: r.kind });

  // ----- CRDs
  function crdVersions(crd) {
    return (crd.spec?.versions ?? []).filter((v) => v.served !== false);
  }
  function serveCrd(crd) {
    const { group, names, scope } = crd.spec;
    for (const v of crdVersions(crd)) {
      addResource({
        group, version: v.name, plural: names.plural, kind: names.kind, singular: names.singular ?? names.kind.toLowerCase(),
        shortNames: names.shortNames, categories: names.categories, listKind: names.listKind,
        namespaced: scope !== 'Cluster', storeKey: `${group}/${names.plural}`, status: Boolean(v.subresources?.status),
        generation: true, schema: v.schema?.openAPIV3Schema, crd: crd.metadata.name,
      });
    }
  }
  function unserveCrd(crd) {
    for (const [k, r] of resources) if (r.crd === crd.metadata.name) resources.delete(k);
  }
  function validateCrd(crd, errs) {
    const s = crd.spec ?? {};
    if (!s.group) errs.push(fieldErr.required('spec.group'));
    if (!s.names?.plural) errs.push(fieldErr.required('spec.names.plural'));
    if (!s.names?.kind) errs.push(fieldErr.required('spec.names.kind'));
    if (!['Namespaced', 'Cluster'].includes(s.scope)) errs.push(fieldErr.notSupported('spec.scope', s.scope ?? '', ['Cluster', 'Namespaced']));
    if (!Array.isArray(s.versions) || s.versions.length === 0) errs.push(fieldErr.required('spec.versions', 'must have exactly one version marked as storage version'));
    else if (s.versions.filter((v) => v.storage).length !== 1) errs.push(fieldErr.invalid('spec.versions', s.versions.length, 'must have exactly one version marked as storage version'));
    (s.versions ?? []).forEach((v, i) => {
      if (!v.schema?.openAPIV3Schema) errs.push(fieldErr.required(`spec.versions[${i}].schema.openAPIV3Schema`, 'schemas are required'));
    });
    if (s.group && s.names?.plural && crd.metadata.name !== `${s.names.plural}.${s.group}`)
      errs.push(fieldErr.invalid('metadata.name', crd.metadata.name, 'must be spec.names.plural+"."+spec.group'));
  }
  // The real server accepts names and sets Established from its controllers, in a later write.
  function establishLater(name) {
    setTimeout(() => {
      const cur = stores.get(crdRes.storeKey).get(`/${name}`);
      if (!cur || cur.status?.conditions?.some((c) => c.type === 'Established')) return;
      const now = nowStamp();
      const cond = (type, reason, message) => ({ type, status: 'True', lastTransitionTime: now, reason, message });
      const next = clone(cur);
      next.status = {
        ...next.status,
        acceptedNames: clone(next.spec.names),
        conditions: [cond('NamesAccepted', 'NoConflicts', 'no conflicts found'), cond('Established', 'InitialNamesAccepted', 'the initial names have been accepted')],
      };
      commit(crdRes, 'MODIFIED', next, cur);
    }, 20).unref();
  }

  // ----- validation, per kind of resource
  function validateWrite(r, obj, old) {
    const errs = [];
    const name = obj.metadata.name;
    if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253)
      errs.push(fieldErr.invalid('metadata.name', name, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"));
    if (r === crdRes) validateCrd(obj, errs);
    if (r.kind === 'Secret' && r.builtin) checkSecretData(obj, errs);
    if (r.schema && errs.length === 0) {
      checkSchema(r.schema, obj, '', errs);
      if (errs.length === 0) checkCel(r.schema, obj, old, '', errs);
    }
    if (errs.length) throw invalid(r, name, errs);
  }
  function checkSecretData(obj, errs) {
    obj.type ??= 'Opaque';
    if (isObj(obj.stringData)) {
      obj.data = { ...obj.data };
      for (const [k, v] of Object.entries(obj.stringData)) obj.data[k] = Buffer.from(String(v)).toString('base64');
      delete obj.stringData;
    }
    for (const [k, v] of Object.entries(obj.data ?? {})) {
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) errs.push(fieldErr.invalid(`data[${k}]`, '<secret contents redacted>', 'illegal base64 data'));
    }
  }

  // ----- verbs
  function requireNamespace(ns) {
    if (!stores.get(nsRes.storeKey).has(`/${ns}`)) throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
  }
  function decode(r, body, ns) {
    if (!isObj(body)) throw badRequest('Object \'Kind\' is missing in the request body');
    if (body.kind && body.kind !== r.kind) throw badRequest(`the kind of the object (${body.kind}) does not match the kind of the request (${r.kind})`);
    if (body.apiVersion && body.apiVersion !== gv(r)) throw badRequest(`the API version in the data (${body.apiVersion}) does not match the expected API version (${gv(r)})`);
    const obj = { ...clone(body), apiVersion: gv(r), kind: r.kind };
    obj.metadata = isObj(obj.metadata) ? obj.metadata : {};
    if (r.namespaced) {
      if (obj.metadata.namespace && obj.metadata.namespace !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      obj.metadata.namespace = ns;
    } else delete obj.metadata.namespace;
    if (r.schema) normalize(r.schema, obj, true);
    return obj;
  }

  function create(r, ns, body) {
    if (r.namespaced) requireNamespace(ns);
    const obj = decode(r, body, ns);
    const m = obj.metadata;
    if (!m.name && m.generateName) m.name = m.generateName + randomSuffix();
    if (!m.name) throw invalid(r, '', [fieldErr.required('metadata.name', 'name or generateName is required')]);
    const store = stores.get(r.storeKey);
    if (store.has(keyOf(obj))) throw new ApiError(409, 'AlreadyExists', `${qualified(r)} "${m.name}" already exists`, detailsOf(r, m.name));
    if (r.status) delete obj.status; // status is set through /status only
    if (r === crdRes) obj.status = { conditions: [], acceptedNames: { plural: '', kind: '' }, storedVersions: (obj.spec?.versions ?? []).filter((v) => v.storage).map((v) => v.name) };
    Object.assign(m, { uid: crypto.randomUUID(), creationTimestamp: nowStamp() });
    for (const k of ['deletionTimestamp', 'deletionGracePeriodSeconds', 'resourceVersion', 'managedFields', 'selfLink']) delete m[k];
    if (r.generation) m.generation = 1;
    else delete m.generation;
    validateWrite(r, obj, undefined);
    commit(r, 'ADDED', obj, undefined);
    if (r === crdRes) (serveCrd(obj), establishLater(m.name));
    return present(r, obj);
  }

  function current(r, ns, name) {
    const obj = stores.get(r.storeKey).get(`${r.namespaced ? ns : ''}/${name}`);
    if (!obj) throw notFound(r, name);
    return obj;
  }

  // PUT and PATCH end here: `body` is the whole new object; sub = 'status' or undefined.
  function update(r, ns, name, body, sub, fromPatch = false) {
    const old = current(r, ns, name);
    const obj = decode(r, body, ns);
    if (obj.metadata.name && obj.metadata.name !== name) throw badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    const want = obj.metadata.resourceVersion;
    // Custom resources refuse unconditional updates (AllowUnconditionalUpdate false); a patch is
    // applied to the current object, so it is conditional on that.
    if (!want && !fromPatch && r.crd) throw invalid(r, name, [{ field: 'metadata.resourceVersion', type: 'Invalid', detail: 'Invalid value: 0x0: must be specified for an update' }]);
    if (want && want !== old.metadata.resourceVersion) throw conflict(r, name);
    let next;
    if (sub === 'status') {
      next = clone(old); // a status write changes status and nothing else
      if (obj.status === undefined) delete next.status;
      else next.status = obj.status;
    } else {
      next = obj;
      const m = next.metadata;
      for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'name', 'namespace']) {
        if (old.metadata[k] === undefined) delete m[k];
        else m[k] = old.metadata[k];
      }
      if (r.status) {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
      if (r.generation && !deepEqual(strip(next), strip(old))) m.generation = (old.metadata.generation ?? 0) + 1;
      if (old.metadata.deletionTimestamp) {
        const added = (m.finalizers ?? []).filter((f) => !(old.metadata.finalizers ?? []).includes(f));
        if (added.length) throw invalid(r, name, [fieldErr.forbidden('metadata.finalizers', `no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`)]);
      }
    }
    next.metadata.resourceVersion = old.metadata.resourceVersion;
    validateWrite(r, next, old);
    if (deepEqual(next, { ...old, apiVersion: next.apiVersion })) return present(r, old); // no-op: no write, no event
    if (next.metadata.deletionTimestamp && !(next.metadata.finalizers ?? []).length) {
      commit(r, 'DELETED', next, old);
      afterDelete(r, next);
      return present(r, next);
    }
    commit(r, 'MODIFIED', next, old);
    if (r === crdRes) (unserveCrd(next), serveCrd(next));
    return present(r, next);
  }
  const strip = (o) => ({ ...o, metadata: undefined, status: undefined, apiVersion: undefined, kind: undefined });

  function patch(r, ns, name, contentType, raw, sub) {
    const type = (contentType ?? '').split(';')[0].trim();
    if (type === 'application/apply-patch+yaml') throw new ApiError(415, 'UnsupportedMediaType', 'server-side apply is not supported by this test API server: use create or update');
    if (!PATCH_TYPES.includes(type)) throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`);
    const p = parseJson(raw);
    const old = present(r, current(r, ns, name));
    const patched = type === 'application/json-patch+json' ? jsonPatch(old, p) : mergePatch(old, p);
    if (!isObj(patched)) throw badRequest('the patch did not produce an object');
    // A patch carries a resourceVersion precondition only when it names one itself.
    if (!(type !== 'application/json-patch+json' && p?.metadata?.resourceVersion) && !(type === 'application/json-patch+json' && p.some((op) => op.path === '/metadata/resourceVersion'))) {
      patched.metadata = { ...patched.metadata };
      delete patched.metadata.resourceVersion;
    }
    return update(r, ns, name, patched, sub, true);
  }

  function remove(r, ns, name, opts) {
    const old = current(r, ns, name);
    const pre = opts?.preconditions ?? {};
    if (pre.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) throw conflict(r, name);
    if (pre.uid && pre.uid !== old.metadata.uid)
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`, detailsOf(r, name));
    if ((old.metadata.finalizers ?? []).length) {
      if (old.metadata.deletionTimestamp) return present(r, old);
      const next = clone(old);
      next.metadata.deletionTimestamp = nowStamp();
      next.metadata.deletionGracePeriodSeconds = 0;
      if (next.metadata.generation) next.metadata.generation += 1;
      commit(r, 'MODIFIED', next, old);
      return present(r, next);
    }
    const gone = clone(old);
    commit(r, 'DELETED', gone, old);
    afterDelete(r, gone);
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: r.group, kind: r.plural, uid: old.metadata.uid } };
  }
  // A deleted CRD takes its custom resources with it (the real one does it through a finalizer).
  function afterDelete(r, obj) {
    if (r !== crdRes) return;
    const storeKey = `${obj.spec.group}/${obj.spec.names.plural}`;
    const crRes = [...resources.values()].find((x) => x.crd === obj.metadata.name);
    for (const cr of [...(stores.get(storeKey)?.values() ?? [])]) commit(crRes, 'DELETED', clone(cr), cr);
    unserveCrd(obj);
    stores.delete(storeKey);
  }

  // ----- list and watch
  function list(r, ns, q) {
    const labels = parseLabelSelector(q.get('labelSelector'));
    const fields = parseFieldSelector(q.get('fieldSelector'));
    const limit = Number(q.get('limit') ?? 0);
    let at = rv;
    let after = '';
    const token = q.get('continue');
    if (token) {
      ({ at, after } = decodeContinue(token));
      if (at !== -1 && at < compactedRv) throw expired(CONTINUE_TOO_OLD, { continue: encodeContinue(-1, after) });
      if (at === -1) at = rv; // an inconsistent continuation: the current state from the key on
    } else if (q.get('resourceVersionMatch') === 'Exact') {
      at = Number(q.get('resourceVersion'));
      if (!(at >= compactedRv)) throw expired(`too old resource version: ${q.get('resourceVersion')} (${compactedRv})`);
    }
    const state = at === rv ? stores.get(r.storeKey) : snapshot(r.storeKey, at);
    const keys = [...state.keys()].sort().filter((k) => k > after);
    const match = keys.map((k) => state.get(k)).filter((o) => (!r.namespaced || !ns || o.metadata.namespace === ns) && labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o));
    const page = limit > 0 ? match.slice(0, limit) : match;
    const meta = { resourceVersion: String(at) };
    if (limit > 0 && match.length > limit) {
      meta.continue = encodeContinue(at, keyOf(page[page.length - 1]));
      if (!labels.length && !fields.length) meta.remainingItemCount = match.length - limit;
    }
    // Typed lists of built-ins carry no kind/apiVersion on their items; custom resources do.
    const items = page.map((o) => (r.builtin ? (({ kind, apiVersion, ...rest }) => rest)(clone(o)) : present(r, o)));
    return { kind: r.listKind ?? `${r.kind}List`, apiVersion: gv(r), metadata: meta, items };
  }
  const encodeContinue = (at, start) => Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: at, start })).toString('base64url');
  function decodeContinue(token) {
    try {
      const t = JSON.parse(Buffer.from(token, 'base64url').toString());
      if (typeof t.rv === 'number' && typeof t.start === 'string') return { at: t.rv, after: t.start };
    } catch {
      /* falls through to the error */
    }
    throw badRequest('continue key is not valid: illegal base64 data at input byte 0');
  }

  function watch(r, ns, q, req, res) {
    const labels = parseLabelSelector(q.get('labelSelector'));
    const fields = parseFieldSelector(q.get('fieldSelector'));
    const from = q.get('resourceVersion');
    const inScope = (o) => o && (!r.namespaced || !ns || o.metadata.namespace === ns);
    const matches = (o) => inScope(o) && labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache' });
    res.flushHeaders(); // a watch with nothing to say yet still answers at once
    const send = (type, object) => res.write(`${JSON.stringify({ type, object })}\n`);
    const w = {
      // An object entering or leaving the selection is ADDED or DELETED for this watch, as for real.
      deliver(ev) {
        if (ev.store !== r.storeKey) return;
        const now = ev.type === 'DELETED' ? false : matches(ev.object);
        const before = ev.type === 'ADDED' ? false : matches(ev.prev);
        if (now && before) send('MODIFIED', present(r, ev.object));
        else if (now) send('ADDED', present(r, ev.object));
        else if (before) send('DELETED', present(r, ev.object));
      },
      end() {
        clearInterval(w.bookmarks);
        clearTimeout(w.timeout);
        watches.delete(w);
        res.end();
      },
    };
    if (from && from !== '0') {
      const since = Number(from);
      if (!(since >= compactedRv)) {
        send('ERROR', new ApiError(410, 'Expired', `too old resource version: ${from} (${compactedRv})`).status);
        return res.end();
      }
      for (const ev of history) if (ev.rv > since) w.deliver(ev);
    } else {
      for (const k of [...stores.get(r.storeKey).keys()].sort()) {
        const o = stores.get(r.storeKey).get(k);
        if (matches(o)) send('ADDED', present(r, o));
      }
    }
    watches.add(w);
    if (['true', '1'].includes(q.get('allowWatchBookmarks'))) {
      w.bookmarks = setInterval(() => send('BOOKMARK', { kind: r.kind, apiVersion: gv(r), metadata: { resourceVersion: String(rv) } }), bookmarkIntervalMs);
    }
    const secs = Number(q.get('timeoutSeconds') ?? 0);
    if (secs > 0) w.timeout = setTimeout(() => w.end(), secs * 1000);
    res.on('close', () => w.end());
    res.on('error', () => w.end());
  }

  // ----- discovery
  function resourceList(group, version) {
    const rs = [...resources.values()].filter((r) => r.group === group && r.version === version);
    if (!rs.length) throw noRoute();
    const out = [];
    for (const r of rs) {
      const entry = { name: r.plural, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: VERBS };
      if (r.shortNames) entry.shortNames = r.shortNames;
      if (r.categories) entry.categories = r.categories;
      out.push(entry);
      if (r.status) out.push({ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] });
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources: out };
  }
  function groupOf(name) {
    const versions = [...new Set([...resources.values()].filter((r) => r.group === name).map((r) => r.version))];
    if (!versions.length) return null;
    const gvs = versions.map((version) => ({ groupVersion: `${name}/${version}`, version }));
    return { name, versions: gvs, preferredVersion: gvs[0] };
  }
  function discovery(parts) {
    if (parts[0] === 'api' && parts.length === 1)
      return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${host}:${api.port}` }] };
    if (parts[0] === 'api' && parts.length === 2 && parts[1] === 'v1') return resourceList('', 'v1');
    if (parts[0] === 'apis' && parts.length === 1) {
      const names = [...new Set([...resources.values()].map((r) => r.group).filter(Boolean))];
      return { kind: 'APIGroupList', apiVersion: 'v1', groups: names.map(groupOf) };
    }
    if (parts[0] === 'apis' && parts.length === 2) {
      const g = groupOf(parts[1]);
      if (!g) throw noRoute();
      return { kind: 'APIGroup', apiVersion: 'v1', ...g };
    }
    if (parts[0] === 'apis' && parts.length === 3) return resourceList(parts[1], parts[2]);
    return undefined;
  }

  // ----- routing: /api/v1/... and /apis/G/V/... then [namespaces/NS/]PLURAL[/NAME[/status]]
  function route(parts) {
    const [group, version, rest] = parts[0] === 'api' ? ['', parts[1], parts.slice(2)] : [parts[1], parts[2], parts.slice(3)];
    const find = (plural) => resources.get(`${group}/${version}/${plural}`);
    if (rest[0] === 'namespaces' && rest.length >= 3 && find(rest[2])?.namespaced) {
      if (rest.length > 5) throw noRoute();
      return { r: find(rest[2]), ns: rest[1], name: rest[3], sub: rest[4] };
    }
    const r = find(rest[0]);
    if (!r || rest.length > 3 || (r.namespaced && rest.length > 1)) throw noRoute();
    return { r, ns: undefined, name: rest[1], sub: rest[2] };
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'https://fake');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const raw = await readBody(req);
    log.push(`${req.method} ${req.url}`);
    if (['healthz', 'readyz', 'livez'].includes(parts[0])) return text(res, 200, 'ok');
    if (!authenticated(req)) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
    if (parts[0] === 'version' && parts.length === 1) return json(res, 200, VERSION);
    if (parts[0] !== 'api' && parts[0] !== 'apis') throw noRoute();
    const disc = discovery(parts);
    if (disc) return req.method === 'GET' ? json(res, 200, disc) : (() => { throw notAllowed(); })();
    const { r, ns, name, sub } = route(parts);
    if (sub && (sub !== 'status' || !r.status)) throw noRoute();
    const q = url.searchParams;
    const m = req.method;
    if (!name) {
      if (m === 'GET' && ['true', '1'].includes(q.get('watch'))) return watch(r, ns, q, req, res);
      if (m === 'GET') return json(res, 200, list(r, ns, q));
      if (m === 'POST' && (ns || !r.namespaced)) return json(res, 201, create(r, ns, parseJson(raw)));
      if (m === 'DELETE') return json(res, 200, deleteCollection(r, ns, q));
      throw notAllowed();
    }
    if (m === 'GET') return json(res, 200, present(r, current(r, ns, name)));
    if (m === 'PUT') return json(res, 200, update(r, ns, name, parseJson(raw), sub));
    if (m === 'PATCH') return json(res, 200, patch(r, ns, name, req.headers['content-type'], raw, sub));
    if (m === 'DELETE' && !sub) return json(res, 200, remove(r, ns, name, raw.length ? parseJson(raw) : undefined));
    throw notAllowed();
  }

  function deleteCollection(r, ns, q) {
    const out = list(r, ns, q);
    for (const item of out.items) remove(r, item.metadata.namespace, item.metadata.name);
    return out;
  }

  function authenticated(req) {
    const h = req.headers.authorization ?? '';
    if (token && h === `Bearer ${token}`) return true;
    return Boolean(req.socket.authorized && req.socket.getPeerCertificate()?.subject);
  }

  // ----- listener
  async function listen() {
    server = https.createServer({ key: tls.key, cert: tls.cert, ca: tls.ca, requestCert: true, rejectUnauthorized: false });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    server.on('request', (req, res) => {
      handle(req, res).catch((err) => {
        if (res.headersSent) return res.destroy();
        if (err instanceof ApiError) return json(res, err.status.code, err.status);
        log.push(`internal error: ${err.stack}`);
        json(res, 500, new ApiError(500, 'InternalError', `Internal error occurred: ${err.message}`).status);
      });
    });
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(api.port, host, () => {
        server.off('error', reject);
        api.port = server.address().port;
        resolve();
      });
    });
  }
  async function close() {
    for (const w of [...watches]) w.end();
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of sockets) s.destroy();
    await closed;
  }

  // Namespaces a fresh cluster has.
  for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
    commit(nsRes, 'ADDED', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, uid: crypto.randomUUID(), creationTimestamp: nowStamp() }, spec: { finalizers: ['kubernetes'] }, status: { phase: 'Active' } });

  const api = {
    port,
    get url() {
      return `https://${host}:${api.port}`;
    },
    logs: () => log.join('\n'),
    get resourceVersion() {
      return String(rv);
    },
    // Everything up to now is compacted: older resourceVersions are "too old" from here on.
    compact() {
      compactedRv = rv;
      history.splice(0, history.length);
    },
    async restart() {
      await close();
      await listen();
    },
    stop: close,
  };
  await listen();
  return api;
}

const VERSION = { major: '1', minor: '31', gitVersion: 'v1.31.0-ctxgate-fake', gitCommit: '', gitTreeState: 'clean', buildDate: '2026-01-01T00:00:00Z', goVersion: 'go1.22', compiler: 'gc', platform: 'linux/amd64' };
const CONTINUE_TOO_OLD =
  'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.';

function randomSuffix() {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return Array.from(crypto.randomBytes(5), (b) => alphabet[b % alphabet.length]).join('');
}
function parseJson(raw) {
  try {
    return JSON.parse(raw.toString() || 'null');
  } catch (err) {
    throw badRequest(`error decoding request body: ${err.message}`);
  }
}
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
function json(res, code, body) {
  const data = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) });
  res.end(data);
}
function text(res, code, body) {
  res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// CLI: prints the URL once listening and runs until SIGTERM/SIGINT.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const opt = (type) => ({ type });
  const { values: args } = parseArgs({ options: { port: opt('string'), key: opt('string'), cert: opt('string'), ca: opt('string'), token: opt('string'), 'bookmark-ms': opt('string') } });
  const read = (f) => (f ? fs.readFileSync(f) : undefined);
  const api = await startFakeApiServer({
    port: Number(args.port ?? 0), token: args.token, bookmarkIntervalMs: Number(args['bookmark-ms'] ?? 1000),
    tls: { key: read(args.key), cert: read(args.cert), ca: read(args.ca) },
  });
  process.stdout.write(`${api.url}\n`);
  for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => api.stop().then(() => process.exit(0)));
}
