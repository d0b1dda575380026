// helm-render.mjs — renders a Helm chart's templates for the tests where no helm binary can be
// installed (it is not a Debian package). It implements only the Go-template subset that
// deploy/helm/ctxgate uses, and refuses anything else loudly so the chart cannot drift into
// syntax this renderer would get wrong:
//   {{ .Values.a.b }} {{ .Release.Name }} {{ .Release.Namespace }} {{ .Chart.Name }} {{ .Chart.AppVersion }}
//   {{- if PIPELINE }} / {{- else }} / {{- end }}   {{- define "name" }} ... {{- end }}
//   {{ include "name" . }}   functions: default, quote, nindent, indent, toYaml; "|" pipelines
//   {{- /* comments */ -}}; "{{-" and "-}}" trim adjacent whitespace as in text/template.
// A reference to a value that does not exist is an error when printed (helm would print
// "<no value>"), and false in an `if` or as the value of `default`.
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

function tokenize(src, file) {
  const out = [];
  const re = /\{\{(-?)([\s\S]*?)(-?)\}\}/g;
  let last = 0;
  let m;
  while ((m = re.exec(src))) {
    out.push({ t: 'text', v: src.slice(last, m.index) });
    const trimL = m[1] === '-', trimR = m[3] === '-';
    if ((trimL && !/^\s/.test(m[2])) || (trimR && !/\s$/.test(m[2])))
      throw new Error(`${file}: "{{-" and "-}}" need a space next to the dash: {{${m[0].slice(2, -2)}}}`);
    out.push({ t: 'action', v: m[2].trim(), trimL, trimR });
    last = re.lastIndex;
  }
  out.push({ t: 'text', v: src.slice(last) });
  for (let i = 0; i < out.length; i++) {
    const a = out[i];
    if (a.t !== 'action') continue;
    if (a.trimL) out[i - 1].v = out[i - 1].v.replace(/\s+$/, '');
    if (a.trimR) out[i + 1].v = out[i + 1].v.replace(/^\s+/, '');
  }
  return out;
}

// nodes: {t:'text',v} | {t:'out',pipe} | {t:'if',pipe,then:[],else:[]}
function parse(tokens, file, defines) {
  const root = [];
  const stack = [{ kind: 'root', body: root }];
  const cur = () => stack[stack.length - 1];
  for (const tok of tokens) {
    if (tok.t === 'text') { if (tok.v) cur().body.push({ t: 'text', v: tok.v }); continue; }
    const a = tok.v;
    if (a.startsWith('/*')) { if (!a.endsWith('*/')) throw new Error(`${file}: unterminated comment`); continue; }
    let m;
    if ((m = /^define\s+"([^"]+)"$/.exec(a))) {
      const node = { kind: 'define', name: m[1], body: [] };
      stack.push(node);
    } else if ((m = /^if\s+(.+)$/.exec(a))) {
      const node = { t: 'if', pipe: m[1], then: [], else: [] };
      cur().body.push(node);
      stack.push({ kind: 'if', node, body: node.then });
    } else if (a === 'else') {
      const c = cur();
      if (c.kind !== 'if' || c.inElse) throw new Error(`${file}: {{ else }} outside an if`);
      c.inElse = true;
      c.body = c.node.else;
    } else if (a === 'end') {
      const c = stack.pop();
      if (c.kind === 'root') throw new Error(`${file}: {{ end }} without an opening action`);
      if (c.kind === 'define') defines.set(c.name, c.body);
    } else if (/^(range|with|template|block|else if|\$)/.test(a) || a.includes(':=')) {
      throw new Error(`${file}: unsupported action {{ ${a} }} (tests/lib/helm-render.mjs knows a subset)`);
    } else {
      cur().body.push({ t: 'out', pipe: a });
    }
  }
  if (stack.length !== 1) throw new Error(`${file}: unclosed {{ ${stack[stack.length - 1].kind} }}`);
  return root;
}

function splitOutside(s, sep) {
  const parts = [];
  let buf = '', q = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '"' && s[i - 1] !== '\\') q = !q;
    if (!q && (sep === ' ' ? /\s/.test(c) : c === sep)) { parts.push(buf); buf = ''; continue; }
    buf += c;
  }
  if (q) throw new Error(`unterminated string in "${s}"`);
  parts.push(buf);
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

const MISSING = Symbol('missing');

function truthy(v) {
  if (v === MISSING || v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

function indentLines(n, s) {
  const pad = ' '.repeat(n);
  return String(s).split('\n').map((l) => (l === '' ? l : pad + l)).join('\n');
}

function toText(v, pipe) {
  if (v === MISSING || v === undefined) throw new Error(`{{ ${pipe} }} names a value that does not exist`);
  if (v === null) return 'null';
  if (typeof v === 'object') throw new Error(`{{ ${pipe} }} prints a map or list: use toYaml`);
  return String(v);
}

class Renderer {
  constructor(root) { this.root = root; this.defines = new Map(); }

  arg(tok, dot) {
    if (tok === '.') return dot;
    if (tok.startsWith('"')) return JSON.parse(tok);
    if (/^-?\d+$/.test(tok)) return Number(tok);
    if (tok === 'true' || tok === 'false') return tok === 'true';
    if (tok.startsWith('.')) {
      let v = dot;
      for (const k of tok.slice(1).split('.')) {
        if (v === MISSING || v === null || typeof v !== 'object' || !(k in v)) return MISSING;
        v = v[k];
      }
      return v;
    }
    throw new Error(`unsupported operand "${tok}"`);
  }

  call(fn, args, dot, pipe) {
    switch (fn) {
      case 'include': {
        const body = this.defines.get(args[0]);
        if (!body) throw new Error(`include of undefined template "${args[0]}"`);
        return this.renderNodes(body, args[1]);
      }
      case 'default': return truthy(args[1]) ? args[1] : args[0];
      case 'quote': return JSON.stringify(args[0] === MISSING || args[0] == null ? '' : String(args[0]));
      case 'nindent': return '\n' + indentLines(args[0], toText(args[1], pipe));
      case 'indent': return indentLines(args[0], toText(args[1], pipe));
      case 'toYaml': {
        const v = args[0];
        if (v === MISSING) throw new Error(`{{ ${pipe} }}: toYaml of a value that does not exist`);
        return YAML.stringify(v, { lineWidth: 0 }).replace(/\n$/, '');
      }
      default: throw new Error(`unsupported function "${fn}" in {{ ${pipe} }}`);
    }
  }

  pipeline(pipe, dot) {
    let val;
    let first = true;
    for (const cmd of splitOutside(pipe, '|')) {
      const toks = splitOutside(cmd, ' ');
      const isFn = /^[a-zA-Z]/.test(toks[0]) && !['true', 'false'].includes(toks[0]);
      if (!isFn) {
        if (!first || toks.length !== 1) throw new Error(`bad command "${cmd}" in {{ ${pipe} }}`);
        val = this.arg(toks[0], dot);
      } else {
        const args = toks.slice(1).map((t) => this.arg(t, dot));
        if (!first) args.push(val);
        val = this.call(toks[0], args, dot, pipe);
      }
      first = false;
    }
    return val;
  }

  renderNodes(nodes, dot) {
    let s = '';
    for (const n of nodes) {
      if (n.t === 'text') s += n.v;
      else if (n.t === 'out') s += toText(this.pipeline(n.pipe, dot), n.pipe);
      else s += this.renderNodes(truthy(this.pipeline(n.pipe, dot)) ? n.then : n.else, dot);
    }
    return s;
  }
}

function deepMerge(base, over) {
  if (over === undefined) return base;
  if (base && over && typeof base === 'object' && typeof over === 'object' && !Array.isArray(base) && !Array.isArray(over)) {
    const out = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
    return out;
  }
  return over;
}

// Renders every templates/*.yaml (and defines from templates/_*.tpl) of chartDir.
// Returns [{file, text}] in file-name order, like `helm template` orders by kind — callers parse.
export function renderChart(chartDir, { values = {}, releaseName = 'ctxgate', namespace = 'default' } = {}) {
  const chart = YAML.parse(fs.readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8'));
  const defaults = YAML.parse(fs.readFileSync(path.join(chartDir, 'values.yaml'), 'utf8')) ?? {};
  const root = {
    Values: deepMerge(defaults, values),
    Release: { Name: releaseName, Namespace: namespace, Service: 'Helm' },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
  };
  const r = new Renderer(root);
  const tdir = path.join(chartDir, 'templates');
  const files = fs.readdirSync(tdir).sort();
  for (const f of files.filter((f) => f.endsWith('.tpl'))) {
    const body = parse(tokenize(fs.readFileSync(path.join(tdir, f), 'utf8'), f), f, r.defines);
    if (body.some((n) => n.t !== 'text' || n.v.trim() !== '')) throw new Error(`${f}: only defines belong in a .tpl`);
  }
  const out = [];
  for (const f of files.filter((f) => f.endsWith('.yaml') || f === 'NOTES.txt')) {
    const nodes = parse(tokenize(fs.readFileSync(path.join(tdir, f), 'utf8'), f), f, r.defines);
    try {
      out.push({ file: f, text: r.renderNodes(nodes, root) });
    } catch (e) {
      throw new Error(`${f}: ${e.message}`);
    }
  }
  return out;
}
