/* cel.c — parser and evaluator for the CEL subset described in cel.h. The expression is parsed
 * into a small tree once per call and evaluated over jansson values; intermediate results are
 * jansson values too (owned references), so there is one value model for documents and CEL. */
#include "config/cel.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    N_LIT,     /* val */
    N_IDENT,   /* name */
    N_SELECT,  /* a.name */
    N_HAS,     /* has(a.name) */
    N_INDEX,   /* a[b] */
    N_CALL,    /* name(args) or a.name(args) when a != NULL */
    N_MACRO,   /* a.name(var, b) */
    N_NOT,     /* !a */
    N_NEG,     /* -a */
    N_BINARY,  /* a op b */
    N_TERNARY, /* a ? b : c */
    N_LIST,    /* [args] */
} node_kind;

typedef struct node node;
struct node {
    node_kind kind;
    char name[64]; /* identifier, field, function, macro or operator */
    char var[64];  /* macro variable */
    json_t *val;   /* N_LIT */
    node *a, *b, *c;
    node **args;
    size_t nargs;
};

typedef struct parser {
    const char *s;
    size_t pos;
    char *err;
    size_t errlen;
    bool failed;
    int depth;
} parser;

static void fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parser *p, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = true;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s at offset %zu", msg, p->pos);
}

static node *mk(parser *p, node_kind k)
{
    node *n = calloc(1, sizeof *n);
    if (!n)
        fail(p, "out of memory");
    else
        n->kind = k;
    return n;
}

static void node_free(node *n)
{
    if (!n) return;
    node_free(n->a);
    node_free(n->b);
    node_free(n->c);
    for (size_t i = 0; i < n->nargs; i++)
        node_free(n->args[i]);
    free(n->args);
    json_decref(n->val);
    free(n);
}

static void skip_ws(parser *p)
{
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
           p->s[p->pos] == '\r')
        p->pos++;
}

static bool peek(parser *p, const char *tok)
{
    skip_ws(p);
    return !strncmp(p->s + p->pos, tok, strlen(tok));
}

static bool accept(parser *p, const char *tok)
{
    if (!peek(p, tok)) return false;
    p->pos += strlen(tok);
    return true;
}

static void expect(parser *p, const char *tok)
{
    if (!accept(p, tok)) fail(p, "expected '%s'", tok);
}

static bool is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static bool ident(parser *p, char *out, size_t len)
{
    skip_ws(p);
    size_t start = p->pos;
    if (!is_ident_start(p->s[p->pos])) return false;
    while (is_ident_char(p->s[p->pos]))
        p->pos++;
    size_t n = p->pos - start;
    if (n >= len) {
        fail(p, "identifier too long");
        return false;
    }
    memcpy(out, p->s + start, n);
    out[n] = 0;
    return true;
}

static node *expr(parser *p);

/* arguments up to ')' (or ']' for list literals) */
static void arg_list(parser *p, node *n, const char *close)
{
    if (accept(p, close)) return;
    for (;;) {
        node *e = expr(p);
        if (!e) return;
        node **grown = realloc(n->args, (n->nargs + 1) * sizeof *grown);
        if (!grown) {
            node_free(e);
            fail(p, "out of memory");
            return;
        }
        n->args = grown;
        n->args[n->nargs++] = e;
        if (accept(p, close)) return;
        expect(p, ",");
        if (p->failed) return;
    }
}

static node *string_lit(parser *p)
{
    char q = p->s[p->pos++];
    char buf[1024];
    size_t o = 0;
    while (p->s[p->pos] && p->s[p->pos] != q) {
        char c = p->s[p->pos++];
        if (c == '\\') {
            char e = p->s[p->pos++];
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
            if (!e) break;
        }
        if (o + 1 >= sizeof buf) {
            fail(p, "string literal too long");
            return NULL;
        }
        buf[o++] = c;
    }
    if (p->s[p->pos] != q) {
        fail(p, "unterminated string literal");
        return NULL;
    }
    p->pos++;
    buf[o] = 0;
    node *n = mk(p, N_LIT);
    if (n) n->val = json_string(buf);
    return n;
}

static node *number_lit(parser *p)
{
    const char *start = p->s + p->pos;
    char *end;
    bool real = false;
    for (const char *c = start; (*c >= '0' && *c <= '9') || *c == '.' || *c == 'e' || *c == 'E';
         c++)
        if (*c == '.' || *c == 'e' || *c == 'E') real = true;
    node *n = mk(p, N_LIT);
    if (!n) return NULL;
    if (real) {
        n->val = json_real(strtod(start, &end));
    } else {
        n->val = json_integer((json_int_t)strtoll(start, &end, 10));
    }
    p->pos += (size_t)(end - start);
    if (*end == 'u') p->pos++; /* unsigned literal: kept as an integer */
    return n;
}

static const char *const macros[] = {"all", "exists", "exists_one", "map", "filter", NULL};

static bool is_macro(const char *name)
{
    for (const char *const *m = macros; *m; m++)
        if (!strcmp(*m, name)) return true;
    return false;
}

static node *primary(parser *p)
{
    skip_ws(p);
    char c = p->s[p->pos];
    if (c == '(') {
        p->pos++;
        node *e = expr(p);
        expect(p, ")");
        return e;
    }
    if (c == '[') {
        p->pos++;
        node *n = mk(p, N_LIST);
        if (n) arg_list(p, n, "]");
        return n;
    }
    if (c == '\'' || c == '"') return string_lit(p);
    if (c >= '0' && c <= '9') return number_lit(p);
    char name[64];
    if (!ident(p, name, sizeof name)) {
        if (c)
            fail(p, "unexpected '%c'", c);
        else
            fail(p, "unexpected end of expression");
        return NULL;
    }
    if (!strcmp(name, "true") || !strcmp(name, "false") || !strcmp(name, "null")) {
        node *n = mk(p, N_LIT);
        if (n) n->val = name[0] == 't' ? json_true() : name[0] == 'f' ? json_false() : json_null();
        return n;
    }
    if (!strcmp(name, "has") && accept(p, "(")) {
        node *arg = expr(p);
        expect(p, ")");
        if (p->failed || !arg) {
            node_free(arg);
            return NULL;
        }
        if (arg->kind != N_SELECT) {
            node_free(arg);
            fail(p, "has() takes a field selection (has(x.field))");
            return NULL;
        }
        arg->kind = N_HAS;
        return arg;
    }
    if (accept(p, "(")) {
        node *n = mk(p, N_CALL);
        if (!n) return NULL;
        snprintf(n->name, sizeof n->name, "%s", name);
        arg_list(p, n, ")");
        return n;
    }
    node *n = mk(p, N_IDENT);
    if (n) snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

static node *member(parser *p)
{
    node *n = primary(p);
    while (n && !p->failed) {
        if (accept(p, ".")) {
            char name[64];
            if (!ident(p, name, sizeof name)) {
                fail(p, "expected a field name after '.'");
                break;
            }
            if (accept(p, "(")) {
                if (is_macro(name)) {
                    node *m = mk(p, N_MACRO);
                    if (!m) break;
                    snprintf(m->name, sizeof m->name, "%s", name);
                    m->a = n;
                    n = m;
                    if (!ident(p, m->var, sizeof m->var)) {
                        fail(p, "%s() needs a variable name first", name);
                        break;
                    }
                    expect(p, ",");
                    m->b = expr(p);
                    expect(p, ")");
                } else {
                    node *call = mk(p, N_CALL);
                    if (!call) break;
                    snprintf(call->name, sizeof call->name, "%s", name);
                    call->a = n;
                    n = call;
                    arg_list(p, call, ")");
                }
            } else {
                node *s = mk(p, N_SELECT);
                if (!s) break;
                snprintf(s->name, sizeof s->name, "%s", name);
                s->a = n;
                n = s;
            }
        } else if (accept(p, "[")) {
            node *ix = mk(p, N_INDEX);
            if (!ix) break;
            ix->a = n;
            n = ix;
            ix->b = expr(p);
            expect(p, "]");
        } else {
            break;
        }
    }
    return n;
}

static node *unary(parser *p)
{
    if (accept(p, "!")) {
        node *n = mk(p, N_NOT);
        if (n) n->a = unary(p);
        return n;
    }
    skip_ws(p);
    if (p->s[p->pos] == '-' && !(p->s[p->pos + 1] >= '0' && p->s[p->pos + 1] <= '9')) {
        p->pos++;
        node *n = mk(p, N_NEG);
        if (n) n->a = unary(p);
        return n;
    }
    if (p->s[p->pos] == '-') { /* negative number literal */
        p->pos++;
        node *n = number_lit(p);
        if (n && json_is_integer(n->val))
            json_integer_set(n->val, -json_integer_value(n->val));
        else if (n)
            json_real_set(n->val, -json_real_value(n->val));
        return n;
    }
    return member(p);
}

static node *binary(parser *p, node *l, const char *op, node *(*next)(parser *))
{
    node *n = mk(p, N_BINARY);
    if (!n) {
        node_free(l);
        return NULL;
    }
    snprintf(n->name, sizeof n->name, "%s", op);
    n->a = l;
    n->b = next(p);
    return n;
}

static node *mult(parser *p)
{
    node *n = unary(p);
    while (n && !p->failed) {
        if (accept(p, "*"))
            n = binary(p, n, "*", unary);
        else if (accept(p, "/"))
            n = binary(p, n, "/", unary);
        else if (accept(p, "%"))
            n = binary(p, n, "%", unary);
        else
            break;
    }
    return n;
}

static node *addition(parser *p)
{
    node *n = mult(p);
    while (n && !p->failed) {
        if (accept(p, "+"))
            n = binary(p, n, "+", mult);
        else if (peek(p, "-")) {
            p->pos++;
            n = binary(p, n, "-", mult);
        } else
            break;
    }
    return n;
}

static node *relation(parser *p)
{
    static const char *const ops[] = {"==", "!=", "<=", ">=", "<", ">", NULL};
    node *n = addition(p);
    while (n && !p->failed) {
        const char *op = NULL;
        for (const char *const *o = ops; *o && !op; o++)
            if (accept(p, *o)) op = *o;
        if (!op && peek(p, "in") && !is_ident_char(p->s[p->pos + 2])) {
            p->pos += 2;
            op = "in";
        }
        if (!op) break;
        n = binary(p, n, op, addition);
    }
    return n;
}

static node *cond_and(parser *p)
{
    node *n = relation(p);
    while (n && !p->failed && accept(p, "&&"))
        n = binary(p, n, "&&", relation);
    return n;
}

static node *cond_or(parser *p)
{
    node *n = cond_and(p);
    while (n && !p->failed && accept(p, "||"))
        n = binary(p, n, "||", cond_and);
    return n;
}

static node *expr(parser *p)
{
    if (++p->depth > 64) {
        fail(p, "expression nested too deeply");
        return NULL;
    }
    node *n = cond_or(p);
    if (n && !p->failed && accept(p, "?")) {
        node *t = mk(p, N_TERNARY);
        if (t) {
            t->a = n;
            n = t;
            t->b = cond_or(p);
            expect(p, ":");
            t->c = expr(p);
        }
    }
    p->depth--;
    return n;
}

static node *parse(const char *s, char *err, size_t errlen)
{
    parser p = {.s = s, .err = err, .errlen = errlen};
    node *n = expr(&p);
    skip_ws(&p);
    if (!p.failed && p.s[p.pos]) fail(&p, "unexpected '%c'", p.s[p.pos]);
    if (p.failed || !n) {
        node_free(n);
        if (!p.failed) snprintf(err, errlen, "empty expression");
        return NULL;
    }
    return n;
}

/* ---- evaluation ---- */

typedef struct scope scope;
struct scope {
    const char *name;
    json_t *val;
    const scope *up;
};

typedef struct ev {
    char *err;
    size_t errlen;
} ev;

/* records an error and returns NULL (the error value) */
static json_t *eval_err(ev *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *eval_err(ev *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return NULL;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "map";
    case JSON_ARRAY:
        return "list";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "double";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    case JSON_NULL:
        return "null_type";
    }
    return "unknown";
}

static json_t *eval(ev *e, const node *n, const scope *sc);

static bool is_num(const json_t *v)
{
    return json_is_integer(v) || json_is_real(v);
}

static bool equal(const json_t *a, const json_t *b)
{
    if (is_num(a) && is_num(b)) return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b) != 0;
}

static json_t *eval_bool_of(ev *e, const node *n, const scope *sc, int *out)
{
    json_t *v = eval(e, n, sc);
    if (!v) return NULL;
    if (!json_is_boolean(v)) {
        json_decref(v);
        return eval_err(e, "expected a bool, got %s", type_name(v));
    }
    *out = json_is_true(v);
    return v;
}

static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

static json_t *size_of(ev *e, json_t *v)
{
    if (json_is_string(v)) return json_integer((json_int_t)utf8_len(json_string_value(v)));
    if (json_is_array(v)) return json_integer((json_int_t)json_array_size(v));
    if (json_is_object(v)) return json_integer((json_int_t)json_object_size(v));
    return eval_err(e, "no such overload: size(%s)", type_name(v));
}

static json_t *eval_call(ev *e, const node *n, const scope *sc)
{
    json_t *recv = NULL, *args[4] = {0}, *out = NULL;
    if (n->nargs > 4) return eval_err(e, "too many arguments to %s()", n->name);
    if (n->a && !(recv = eval(e, n->a, sc))) return NULL;
    for (size_t i = 0; i < n->nargs; i++)
        if (!(args[i] = eval(e, n->args[i], sc))) goto done;
    if (!strcmp(n->name, "size")) {
        json_t *x = recv ? recv : n->nargs == 1 ? args[0] : NULL;
        if (!x || (recv && n->nargs) || (!recv && n->nargs != 1))
            out = eval_err(e, "size() takes one value");
        else
            out = size_of(e, x);
    } else if (recv && n->nargs == 1 &&
               (!strcmp(n->name, "startsWith") || !strcmp(n->name, "endsWith") ||
                !strcmp(n->name, "contains"))) {
        if (!json_is_string(recv) || !json_is_string(args[0])) {
            out = eval_err(e, "no such overload: %s.%s(%s)", type_name(recv), n->name,
                           type_name(args[0]));
        } else {
            const char *s = json_string_value(recv), *t = json_string_value(args[0]);
            size_t ls = strlen(s), lt = strlen(t);
            bool r = n->name[0] == 's'   ? !strncmp(s, t, lt)
                     : n->name[0] == 'e' ? ls >= lt && !strcmp(s + ls - lt, t)
                                         : strstr(s, t) != NULL;
            out = json_boolean(r);
        }
    } else {
        out = eval_err(e, "unsupported function %s()", n->name);
    }
done:
    json_decref(recv);
    for (size_t i = 0; i < n->nargs; i++)
        json_decref(args[i]);
    return out;
}

/* all / exists / exists_one / map / filter over a list's elements or a map's keys */
static json_t *eval_macro(ev *e, const node *n, const scope *sc)
{
    json_t *range = eval(e, n->a, sc);
    if (!range) return NULL;
    json_t *items = NULL;
    if (json_is_array(range)) {
        items = json_incref(range);
    } else if (json_is_object(range)) {
        items = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(range, k, v)
        {
            json_array_append_new(items, json_string(k));
        }
    } else {
        json_decref(range);
        return eval_err(e, "%s() needs a list or a map, got %s", n->name, type_name(range));
    }
    json_decref(range);
    bool all = !strcmp(n->name, "all"), exists = !strcmp(n->name, "exists");
    bool one = !strcmp(n->name, "exists_one"), map = !strcmp(n->name, "map");
    json_t *out = NULL, *list = (map || !strcmp(n->name, "filter")) ? json_array() : NULL;
    size_t count = 0, i;
    bool had_err = false, decided = false;
    char first_err[256] = "";
    json_t *it;
    json_array_foreach(items, i, it)
    {
        scope inner = {.name = n->var, .val = it, .up = sc};
        json_t *r = eval(e, n->b, &inner);
        if (!r) {
            if (list || one) goto fail; /* map, filter and exists_one do not absorb errors */
            if (!had_err) snprintf(first_err, sizeof first_err, "%s", e->err);
            had_err = true;
            continue;
        }
        if (map) {
            json_array_append_new(list, r);
            continue;
        }
        if (!json_is_boolean(r)) {
            eval_err(e, "%s() predicate gave %s, not a bool", n->name, type_name(r));
            json_decref(r);
            goto fail;
        }
        bool t = json_is_true(r);
        json_decref(r);
        if (list) {
            if (t) json_array_append(list, it);
        } else if (all && !t) {
            decided = true;
            break;
        } else if (exists && t) {
            decided = true;
            break;
        } else if (one && t) {
            count++;
        }
    }
    if (list)
        out = json_incref(list);
    else if (one)
        out = json_boolean(count == 1);
    else if (decided)
        out = json_boolean(exists);
    else if (had_err)
        snprintf(e->err, e->errlen, "%s", first_err);
    else
        out = json_boolean(all);
fail:
    json_decref(list);
    json_decref(items);
    return out;
}

static json_t *arith(ev *e, const char *op, json_t *l, json_t *r)
{
    if (!strcmp(op, "+") && json_is_string(l) && json_is_string(r)) {
        size_t a = json_string_length(l), b = json_string_length(r);
        char *s = malloc(a + b + 1);
        if (!s) return eval_err(e, "out of memory");
        memcpy(s, json_string_value(l), a);
        memcpy(s + a, json_string_value(r), b + 1);
        json_t *out = json_stringn(s, a + b);
        free(s);
        return out;
    }
    if (!strcmp(op, "+") && json_is_array(l) && json_is_array(r)) {
        json_t *out = json_copy(l);
        json_array_extend(out, r);
        return out;
    }
    if (json_is_integer(l) && json_is_integer(r)) {
        json_int_t a = json_integer_value(l), b = json_integer_value(r), v;
        switch (op[0]) {
        case '+':
            if (__builtin_add_overflow(a, b, &v)) return eval_err(e, "integer overflow");
            return json_integer(v);
        case '-':
            if (__builtin_sub_overflow(a, b, &v)) return eval_err(e, "integer overflow");
            return json_integer(v);
        case '*':
            if (__builtin_mul_overflow(a, b, &v)) return eval_err(e, "integer overflow");
            return json_integer(v);
        default:
            if (b == 0) return eval_err(e, "division by zero");
            return json_integer(op[0] == '/' ? a / b : a % b);
        }
    }
    if (json_is_real(l) && json_is_real(r) && op[0] != '%') {
        double a = json_real_value(l), b = json_real_value(r);
        return json_real(op[0] == '+'   ? a + b
                         : op[0] == '-' ? a - b
                         : op[0] == '*' ? a * b
                                        : a / b);
    }
    return eval_err(e, "no such overload: %s %s %s", type_name(l), op, type_name(r));
}

static json_t *compare(ev *e, const char *op, json_t *l, json_t *r)
{
    int c;
    if (is_num(l) && is_num(r)) {
        double a = json_number_value(l), b = json_number_value(r);
        c = a < b ? -1 : a > b;
    } else if (json_is_string(l) && json_is_string(r)) {
        c = strcmp(json_string_value(l), json_string_value(r));
    } else if (json_is_boolean(l) && json_is_boolean(r)) {
        c = json_is_true(l) - json_is_true(r);
    } else {
        return eval_err(e, "no such overload: %s %s %s", type_name(l), op, type_name(r));
    }
    bool v = !strcmp(op, "<")    ? c < 0
             : !strcmp(op, "<=") ? c <= 0
             : !strcmp(op, ">")  ? c > 0
                                 : c >= 0;
    return json_boolean(v);
}

static json_t *eval_binary(ev *e, const node *n, const scope *sc)
{
    const char *op = n->name;
    if (!strcmp(op, "&&") || !strcmp(op, "||")) {
        bool is_and = op[0] == '&';
        int lv = 0, rv = 0;
        json_t *l = eval_bool_of(e, n->a, sc, &lv);
        if (l && lv != is_and) return l; /* false && _, true || _ */
        char lerr[256];
        snprintf(lerr, sizeof lerr, "%s", l ? "" : e->err);
        json_decref(l);
        json_t *r = eval_bool_of(e, n->b, sc, &rv);
        if (r && rv != is_and) return r;
        if (!l) {
            json_decref(r);
            snprintf(e->err, e->errlen, "%s", lerr);
            return NULL;
        }
        return r;
    }
    json_t *l = eval(e, n->a, sc);
    if (!l) return NULL;
    json_t *r = eval(e, n->b, sc), *out = NULL;
    if (!r) {
        json_decref(l);
        return NULL;
    }
    if (!strcmp(op, "==") || !strcmp(op, "!=")) {
        out = json_boolean(equal(l, r) == (op[0] == '='));
    } else if (!strcmp(op, "in")) {
        if (json_is_array(r)) {
            bool found = false;
            size_t i;
            json_t *it;
            json_array_foreach(r, i, it)
            {
                found = found || equal(l, it);
            }
            out = json_boolean(found);
        } else if (json_is_object(r) && json_is_string(l)) {
            out = json_boolean(json_object_get(r, json_string_value(l)) != NULL);
        } else {
            out = eval_err(e, "no such overload: %s in %s", type_name(l), type_name(r));
        }
    } else if (op[0] == '<' || op[0] == '>') {
        out = compare(e, op, l, r);
    } else {
        out = arith(e, op, l, r);
    }
    json_decref(l);
    json_decref(r);
    return out;
}

static json_t *eval(ev *e, const node *n, const scope *sc)
{
    switch (n->kind) {
    case N_LIT:
        return json_incref(n->val);
    case N_IDENT:
        for (const scope *s = sc; s; s = s->up)
            if (!strcmp(s->name, n->name)) return json_incref(s->val);
        return eval_err(e, "undeclared reference to '%s'", n->name);
    case N_SELECT:
    case N_HAS: {
        json_t *obj = eval(e, n->a, sc);
        if (!obj) return NULL;
        if (!json_is_object(obj)) {
            const char *t = type_name(obj);
            json_decref(obj);
            return eval_err(e, "cannot select field '%s' from %s", n->name, t);
        }
        json_t *v = json_object_get(obj, n->name);
        json_t *out = n->kind == N_HAS ? json_boolean(v != NULL)
                      : v              ? json_incref(v)
                                       : eval_err(e, "no such key: %s", n->name);
        json_decref(obj);
        return out;
    }
    case N_INDEX: {
        json_t *obj = eval(e, n->a, sc), *out = NULL;
        if (!obj) return NULL;
        json_t *ix = eval(e, n->b, sc);
        if (!ix) {
            json_decref(obj);
            return NULL;
        }
        if (json_is_array(obj) && json_is_integer(ix)) {
            json_int_t i = json_integer_value(ix);
            json_t *v = i >= 0 ? json_array_get(obj, (size_t)i) : NULL;
            out = v ? json_incref(v) : eval_err(e, "index out of range: %lld", (long long)i);
        } else if (json_is_object(obj) && json_is_string(ix)) {
            json_t *v = json_object_get(obj, json_string_value(ix));
            out = v ? json_incref(v) : eval_err(e, "no such key: %s", json_string_value(ix));
        } else {
            out = eval_err(e, "no such overload: %s[%s]", type_name(obj), type_name(ix));
        }
        json_decref(obj);
        json_decref(ix);
        return out;
    }
    case N_CALL:
        return eval_call(e, n, sc);
    case N_MACRO:
        return eval_macro(e, n, sc);
    case N_NOT: {
        int v;
        json_t *r = eval_bool_of(e, n->a, sc, &v);
        if (!r) return NULL;
        json_decref(r);
        return json_boolean(!v);
    }
    case N_NEG: {
        json_t *v = eval(e, n->a, sc), *out;
        if (!v) return NULL;
        if (json_is_integer(v))
            out = json_integer(-json_integer_value(v));
        else if (json_is_real(v))
            out = json_real(-json_real_value(v));
        else
            out = eval_err(e, "no such overload: -%s", type_name(v));
        json_decref(v);
        return out;
    }
    case N_BINARY:
        return eval_binary(e, n, sc);
    case N_TERNARY: {
        int c;
        json_t *r = eval_bool_of(e, n->a, sc, &c);
        if (!r) return NULL;
        json_decref(r);
        return eval(e, c ? n->b : n->c, sc);
    }
    case N_LIST: {
        json_t *out = json_array();
        for (size_t i = 0; i < n->nargs; i++) {
            json_t *v = eval(e, n->args[i], sc);
            if (!v) {
                json_decref(out);
                return NULL;
            }
            json_array_append_new(out, v);
        }
        return out;
    }
    }
    return eval_err(e, "unknown expression node");
}

/* ---- cost estimate ---- */

/* What the estimate knows of a value: its schema node when it is one (sizes come from there),
 * else the sizes of a computed value. */
typedef struct shape {
    const sch_field *f;    /* NULL: computed */
    double size;           /* list items / map entries / string characters; 0 = scalar */
    const sch_field *elem; /* element of a computed list */
    double elem_size;
} shape;

typedef struct cscope cscope;
struct cscope {
    const char *name;
    shape s;
    const cscope *up;
};

typedef struct cest {
    char *err;
    size_t errlen;
    bool failed;
} cest;

static double size_of_shape(cest *c, const shape *s, const char *what)
{
    if (!s->f) return s->size;
    const sch_field *f = s->f;
    double n = 0;
    if (f->kind == SCH_ARRAY)
        n = f->has_max ? f->max : -1;
    else if (f->kind == SCH_STRMAP)
        n = f->max_props ? (double)f->max_props : -1.0;
    else if (f->kind == SCH_STRING)
        n = f->max_len ? (double)f->max_len : -1.0;
    else if (f->kind == SCH_FREE)
        n = -1; /* free JSON: no bound at all */
    else
        return 0;
    if (n < 0) {
        if (!c->failed)
            snprintf(c->err, c->errlen, "%s: %s has no maxItems / maxProperties / maxLength", what,
                     sch_kind_name(f->kind));
        c->failed = true;
        return 0;
    }
    return n;
}

/* the element a macro iterates: a list's item, a map's key (a string of unknown length) */
static shape elem_of(const shape *s)
{
    shape e = {0};
    if (s->f && s->f->kind == SCH_ARRAY)
        e.f = s->f->items;
    else if (s->f && s->f->kind == SCH_STRMAP)
        e.size = 0; /* a key: only used as an index */
    else if (!s->f) {
        e.f = s->elem;
        e.size = s->elem_size;
    }
    return e;
}

static double estimate(cest *c, const node *n, const cscope *sc, shape *out);

static double str_len(cest *c, const shape *s)
{
    /* unbounded: the API server assumes the largest request (3 MiB); comparing it with a
     * literal still costs only the literal's length */
    if (s->f && s->f->kind == SCH_STRING) return s->f->max_len ? s->f->max_len : 3145728.0;
    (void)c;
    return s->size;
}

static double estimate(cest *c, const node *n, const cscope *sc, shape *out)
{
    shape a = {0}, b = {0}, x = {0};
    double cost = 0;
    *out = (shape){0};
    switch (n->kind) {
    case N_LIT:
        if (json_is_string(n->val)) out->size = (double)json_string_length(n->val);
        return 0;
    case N_IDENT:
        for (const cscope *s = sc; s; s = s->up)
            if (!strcmp(s->name, n->name)) {
                *out = s->s;
                return 1;
            }
        return 1;
    case N_SELECT:
    case N_HAS:
        cost = estimate(c, n->a, sc, &a) + 1;
        if (n->kind == N_SELECT && a.f && a.f->kind == SCH_OBJECT)
            out->f = sch_field_find(a.f, n->name);
        return cost;
    case N_INDEX:
        cost = estimate(c, n->a, sc, &a) + estimate(c, n->b, sc, &b) + 1;
        if (a.f && a.f->kind == SCH_ARRAY) out->f = a.f->items;
        if (a.f && a.f->kind == SCH_STRMAP) out->size = a.f->max_len;
        return cost;
    case N_CALL:
        if (n->a) cost += estimate(c, n->a, sc, &a);
        for (size_t i = 0; i < n->nargs; i++)
            cost += estimate(c, n->args[i], sc, i ? &x : &b);
        if (n->a && n->nargs == 1 && strcmp(n->name, "size"))
            cost += 0.1 * str_len(c, &b); /* startsWith, endsWith, contains */
        return cost + 1;
    case N_MACRO: {
        cost = estimate(c, n->a, sc, &a);
        double count = size_of_shape(c, &a, n->name);
        cscope inner = {.name = n->var, .s = elem_of(&a), .up = sc};
        double body = estimate(c, n->b, &inner, &b);
        if (!strcmp(n->name, "map") || !strcmp(n->name, "filter")) {
            out->size = count;
            out->elem = !strcmp(n->name, "map") ? b.f : inner.s.f;
            out->elem_size = !strcmp(n->name, "map") ? b.size : inner.s.size;
        }
        return cost + count * (body + 2) + 1; /* loop condition and step per element */
    }
    case N_NOT:
    case N_NEG:
        return estimate(c, n->a, sc, &a) + 1;
    case N_BINARY:
        cost = estimate(c, n->a, sc, &a) + estimate(c, n->b, sc, &b);
        if (!strcmp(n->name, "in")) return cost + size_of_shape(c, &b, "in");
        if (!strcmp(n->name, "&&") || !strcmp(n->name, "||")) return cost;
        if (!strcmp(n->name, "+") && (str_len(c, &a) > 0 || str_len(c, &b) > 0)) {
            out->size = str_len(c, &a) + str_len(c, &b);
            return cost + 0.1 * out->size + 1;
        }
        {
            double la = str_len(c, &a), lb = str_len(c, &b);
            return cost + 1 + 0.1 * (la < lb ? la : lb);
        }
    case N_TERNARY: {
        cost = estimate(c, n->a, sc, &a);
        double tb = estimate(c, n->b, sc, &b), tc = estimate(c, n->c, sc, &x);
        *out = tb >= tc ? b : x;
        return cost + (tb > tc ? tb : tc);
    }
    case N_LIST:
        for (size_t i = 0; i < n->nargs; i++)
            cost += estimate(c, n->args[i], sc, &x);
        out->size = (double)n->nargs;
        return cost + 10;
    }
    return cost;
}

int cel_estimate_cost(const char *expr_text, const sch_field *self, double *cost, char *err,
                      size_t errlen)
{
    node *n = parse(expr_text, err, errlen);
    if (!n) return -1;
    cest c = {.err = err, .errlen = errlen};
    cscope root = {.name = "self", .s = {.f = self}, .up = NULL};
    shape out;
    *cost = estimate(&c, n, &root, &out);
    node_free(n);
    return c.failed ? -1 : 0;
}

int cel_parse_check(const char *expr_text, char *err, size_t errlen)
{
    node *n = parse(expr_text, err, errlen);
    node_free(n);
    return n ? 0 : -1;
}

int cel_eval_bool(const char *expr_text, json_t *self, char *err, size_t errlen)
{
    node *n = parse(expr_text, err, errlen);
    if (!n) return -1;
    ev e = {.err = err, .errlen = errlen};
    scope root = {.name = "self", .val = self, .up = NULL};
    json_t *v = eval(&e, n, &root);
    node_free(n);
    if (!v) return -1;
    int out = json_is_boolean(v) ? json_is_true(v) : -1;
    if (out < 0) snprintf(err, errlen, "the rule gave %s, not a bool", type_name(v));
    json_decref(v);
    return out;
}
