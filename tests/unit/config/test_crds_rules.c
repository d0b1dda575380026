/* test_crds_rules.c — the schema's cross-field rules (x-kubernetes-validations) through the
 * offline path: every manifest of tests/data/crd-rules/good loads without errors, every one of
 * tests/data/crd-rules/bad gives exactly the error its "# expect" comment names, every rule has
 * a bad manifest, every rule parses and points at a real field; plus the CEL evaluator itself
 * and deploy/crds/ being exactly the generator's output. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config/cel.h"
#include "config/load_internal.h"
#include "config_test.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, out);
    fclose(f);
    fclose(out);
    return text;
}

/* the text after "# KEY: " on a comment line of text, or NULL */
static char *comment(const char *text, const char *key)
{
    char tag[64];
    snprintf(tag, sizeof tag, "# %s: ", key);
    const char *p = strstr(text, tag);
    if (!p) return NULL;
    p += strlen(tag);
    return strndup(p, strcspn(p, "\n"));
}

static void data_dir(char *out, size_t len, const char *sub)
{
    const char *src = getenv("CTXGATE_SOURCE_DIR");
    snprintf(out, len, "%s/tests/data/crd-rules/%s", src ? src : ".", sub);
}

/* the errors (not warnings) validate prints for one file */
static char *errors_of(const char *path, int *rc)
{
    cfg_diags d = {0};
    cfg_snapshot *snap = NULL;
    *rc = cfg_load_paths(&path, 1, &snap, &d);
    char *text = cfgt_render(&d, 0);
    cfg_snapshot_unref(snap);
    cfg_diags_free(&d);
    return text;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void for_each_file(const char *sub, void (*fn)(const char *path, const char *name))
{
    char dir[4096];
    data_dir(dir, sizeof dir, sub);
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s (set CTXGATE_SOURCE_DIR)", dir);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".yaml")) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        fn(path, e->d_name);
        n++;
    }
    closedir(d);
    assert_true(n >= 20);
}

static void check_good(const char *path, const char *name)
{
    int rc;
    char *errs = errors_of(path, &rc);
    if (rc != 0 || *errs) fail_msg("good/%s: rejected:\n%s", name, errs);
    free(errs);
}

static void check_bad(const char *path, const char *name)
{
    char *text = slurp(path);
    assert_non_null(text);
    char *want = comment(text, "expect-validate");
    if (!want) want = comment(text, "expect");
    if (!want) fail_msg("bad/%s: no '# expect:' or '# expect-validate:' line", name);
    int rc;
    char *errs = errors_of(path, &rc);
    if (rc == 0 || !strstr(errs, want) || count_lines(errs) != 1)
        fail_msg("bad/%s: want exactly one error containing\n  %s\ngot:\n%s", name, want, errs);
    free(errs);
    free(want);
    free(text);
}

static void test_good_manifests(void **state)
{
    (void)state;
    for_each_file("good", check_good);
}

static void test_bad_manifests(void **state)
{
    (void)state;
    for_each_file("bad", check_bad);
}

/* ---- every rule: parses, points at a field, has a bad manifest ---- */

static char *all_expects; /* every "# expect:" message of bad/, one per line */

static void collect_expect(const char *path, const char *name)
{
    (void)name;
    char *text = slurp(path);
    char *e = text ? comment(text, "expect") : NULL;
    if (e) {
        size_t old = strlen(all_expects), add = strlen(e);
        char *grown = realloc(all_expects, old + add + 2);
        assert_non_null(grown);
        all_expects = grown;
        memcpy(all_expects + old, e, add);
        memcpy(all_expects + old + add, "\n", 2);
    }
    free(e);
    free(text);
}

static void check_rules(const sch_field *f, const char *where)
{
    char why[256];
    for (const sch_rule *r = f->rules; r && r->cel; r++) {
        if (cel_parse_check(r->cel, why, sizeof why) != 0)
            fail_msg("%s: rule %s does not parse: %s", where, r->cel, why);
        assert_non_null(r->message);
        if (r->field_path) {
            assert_true(r->field_path[0] == '.');
            assert_true(f->kind == SCH_OBJECT);
            if (!sch_field_at(f, r->field_path + 1))
                fail_msg("%s: fieldPath %s names no field", where, r->field_path);
        }
        char line[1024];
        snprintf(line, sizeof line, "%s\n", r->message);
        if (!strstr(all_expects, line))
            fail_msg("%s: no tests/data/crd-rules/bad manifest expects \"%s\"", where, r->message);
    }
    char sub[512];
    if (f->kind == SCH_OBJECT)
        for (const sch_field *c = f->fields; c->name; c++) {
            snprintf(sub, sizeof sub, "%s.%s", where, c->name);
            check_rules(c, sub);
        }
    if (f->kind == SCH_ARRAY) {
        snprintf(sub, sizeof sub, "%s[]", where);
        check_rules(f->items, sub);
    }
}

static void test_every_rule_is_covered(void **state)
{
    (void)state;
    all_expects = strdup("");
    for_each_file("bad", collect_expect);
    check_rules(&sch_llmgateway_doc, "LLMGateway");
    check_rules(&sch_mcp_doc, "ModelContextProtocol");
    free(all_expects);
}

/* ---- the API server's cost budget ---- */

/* Kubernetes refuses a CRD whose rules' estimated cost is above 10,000,000 for one rule or
 * 100,000,000 for all of them (each rule's cost times how many times it can run: the maxItems
 * of the lists around it). Our estimate follows cel-go's; keep a factor 2 of margin on both. */
#define RULE_LIMIT 10000000.0
#define CRD_LIMIT 100000000.0

static double rules_cost(const sch_field *f, const char *where, double times)
{
    double total = 0;
    char why[256];
    for (const sch_rule *r = f->rules; r && r->cel; r++) {
        double cost;
        if (cel_estimate_cost(r->cel, f, &cost, why, sizeof why) != 0)
            fail_msg("%s: rule %s: %s", where, r->cel, why);
        if (cost > RULE_LIMIT / 2)
            fail_msg("%s: rule \"%s\" costs about %.0f, above half the API server's limit "
                     "(%.0f): lower maxItems / maxLength",
                     where, r->message, cost, RULE_LIMIT);
        if (getenv("CTXGATE_PRINT_RULE_COST"))
            print_message("%10.0f x %-6.0f %s: %s\n", cost, times, where, r->message);
        total += cost * times;
    }
    char sub[512];
    if (f->kind == SCH_OBJECT)
        for (const sch_field *c = f->fields; c->name; c++) {
            snprintf(sub, sizeof sub, "%s.%s", where, c->name);
            total += rules_cost(c, sub, times);
        }
    if (f->kind == SCH_ARRAY) {
        snprintf(sub, sizeof sub, "%s[]", where);
        total += rules_cost(f->items, sub, times * (f->has_max ? f->max : 1e6));
    }
    return total;
}

static void test_rules_within_cost_budget(void **state)
{
    (void)state;
    double gw = rules_cost(&sch_llmgateway_doc, "LLMGateway", 1);
    double mcp = rules_cost(&sch_mcp_doc, "ModelContextProtocol", 1);
    print_message("estimated rule cost: LLMGateway %.0f, ModelContextProtocol %.0f\n", gw, mcp);
    assert_true(gw < CRD_LIMIT / 2 && mcp < CRD_LIMIT / 2);
    /* the estimate does see sizes: without the bounds it would refuse */
    double cost;
    char why[256];
    const sch_field *spec = sch_field_find(&sch_llmgateway_doc, "spec");
    assert_int_equal(
        cel_estimate_cost("self.modelTargets.all(t, t.name != '')", spec, &cost, why, sizeof why),
        0);
    assert_true(cost > 64 && cost < 1000);
    assert_int_equal(cel_estimate_cost("self.modelTargets.all(t, t.config.parameters.all(k, true))",
                                       spec, &cost, why, sizeof why),
                     -1);
}

/* ---- the evaluator ---- */

static int ev(const char *expr, const char *self_json)
{
    json_t *self = json_loads(self_json, JSON_DECODE_ANY, NULL);
    assert_non_null(self);
    char err[256];
    int r = cel_eval_bool(expr, self, err, sizeof err);
    json_decref(self);
    return r;
}

static void test_cel_evaluator(void **state)
{
    (void)state;
    const char *doc = "{\"a\": 1, \"s\": \"ab\", \"l\": [1, 2, 3], \"m\": {\"k\": \"v\"}, "
                      "\"o\": [{\"n\": \"x\"}, {\"n\": \"y\", \"w\": 2}]}";
    assert_int_equal(ev("self.a == 1 && self.s == 'ab'", doc), 1);
    assert_int_equal(ev("self.a != 1", doc), 0);
    assert_int_equal(ev("has(self.a) && !has(self.b)", doc), 1);
    assert_int_equal(ev("self.l.all(x, x > 0) && self.l.exists(x, x == 3)", doc), 1);
    assert_int_equal(ev("self.l.exists_one(x, x >= 2)", doc), 0);
    assert_int_equal(ev("self.l.exists_one(x, x >= 3)", doc), 1);
    assert_int_equal(ev("self.o.map(x, x.n) == ['x', 'y']", doc), 1);
    assert_int_equal(ev("size(self.o.filter(x, has(x.w))) == 1 && self.l.size() == 3", doc), 1);
    assert_int_equal(ev("'x' in self.o.map(x, x.n) && 'k' in self.m && !('z' in self.m)", doc), 1);
    assert_int_equal(ev("self.m.all(k, self.m[k] == 'v')", doc), 1);
    assert_int_equal(ev("(self.a > 0 ? 'p' : 'n') + 'q' == 'pq'", doc), 1);
    assert_int_equal(ev("self.a + 2 * 3 == 7 && -self.a < 0 && 7 % 4 == 3", doc), 1);
    assert_int_equal(
        ev("self.s.startsWith('a') && self.s.endsWith('b') && self.s.contains('b')", doc), 1);
    assert_int_equal(ev("1 <= 1 && 1 < 2 && 2 >= 2 && 3 > 2 && 1.5 < 2", doc), 1);
    /* errors: a missing key, and CEL's commutative error absorption by && and || */
    assert_int_equal(ev("self.nope == 1", doc), -1);
    assert_int_equal(ev("self.nope == 1 || true", doc), 1);
    assert_int_equal(ev("false && self.nope == 1", doc), 0);
    assert_int_equal(ev("self.nope == 1 && true", doc), -1);
    assert_int_equal(ev("self.o.all(x, x.w > 1)", doc), -1);   /* x.w missing in the first */
    assert_int_equal(ev("self.o.exists(x, x.w > 1)", doc), 1); /* ... absorbed by a true */
    assert_int_equal(ev("self.a", doc), -1);                   /* not a bool */
    char err[256];
    assert_int_equal(cel_parse_check("self.a ==", err, sizeof err), -1);
    assert_int_equal(cel_parse_check("self.l.all(x)", err, sizeof err), -1);
    assert_int_equal(cel_parse_check("has(self)", err, sizeof err), -1);
    assert_int_equal(cel_parse_check("self.a == 1 )", err, sizeof err), -1);
}

/* ---- deploy/crds/ is exactly the generator's output ---- */

static void test_deploy_crds_fresh(void **state)
{
    (void)state;
    const char *src = getenv("CTXGATE_SOURCE_DIR");
    static const sch_kind_id kinds[] = {SCH_KIND_GATEWAY, SCH_KIND_MCP};
    char *all = NULL;
    size_t all_len = 0;
    FILE *af = open_memstream(&all, &all_len);
    assert_int_equal(cfg_crds_write(af), 0);
    fclose(af);
    char *joined = strdup("");
    for (size_t i = 0; i < 2; i++) {
        const sch_kind_def *k = &sch_kinds[kinds[i]];
        char path[4096];
        snprintf(path, sizeof path, "%s/deploy/crds/%s.%s.yaml", src ? src : ".", k->plural,
                 SCH_GROUP);
        char *want = NULL;
        size_t want_len = 0;
        FILE *f = open_memstream(&want, &want_len);
        assert_int_equal(cfg_crd_write(f, kinds[i]), 0);
        fclose(f);
        char *got = slurp(path);
        if (!got || strcmp(got, want))
            fail_msg("%s is stale: regenerate %s/deploy/crds from `ctxgate crds` (one file per "
                     "document, cfg_crds_write_dir)",
                     path, src ? src : ".");
        char *grown = realloc(joined, strlen(joined) + strlen(got) + 1);
        assert_non_null(grown);
        joined = grown;
        strcat(joined, got);
        free(got);
        free(want);
    }
    /* `ctxgate crds` is the files one after the other */
    assert_string_equal(joined, all);
    free(joined);
    free(all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_manifests),
        cmocka_unit_test(test_bad_manifests),
        cmocka_unit_test(test_every_rule_is_covered),
        cmocka_unit_test(test_cel_evaluator),
        cmocka_unit_test(test_deploy_crds_fresh),
        cmocka_unit_test(test_rules_within_cost_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
