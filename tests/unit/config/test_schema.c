/* test_schema.c — invariants of the schema tables: every field documented, every default valid
 * for its own field (it goes through the same converter as a manifest), enum values unique. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config/load_internal.h"
#include "config_test.h"

static size_t n_fields;

static void check_field(const sch_field *f, const char *path, bool top)
{
    n_fields++;
    if (!top && !f->desc && f->name) fail_msg("%s has no description", path);
    if (f->def) {
        json_error_t e;
        json_t *d = json_loads(f->def, JSON_DECODE_ANY, &e);
        if (!d) fail_msg("%s: default %s is not JSON: %s", path, f->def, e.text);
        bool ok = (f->kind == SCH_INT && json_is_integer(d)) ||
                  (f->kind == SCH_NUMBER && json_is_number(d)) ||
                  (f->kind == SCH_STRING && json_is_string(d)) ||
                  (f->kind == SCH_BOOL && json_is_boolean(d)) ||
                  (f->kind == SCH_OBJECT && json_is_object(d)) ||
                  (f->kind == SCH_ARRAY && json_is_array(d));
        if (!ok)
            fail_msg("%s: default %s does not match its type %s", path, f->def,
                     sch_kind_name(f->kind));
        if (json_is_string(d) && f->enums && !sch_enum_find(f, json_string_value(d)))
            fail_msg("%s: default %s is not an allowed value", path, f->def);
        if (json_is_number(d) && ((f->has_min && json_number_value(d) < f->min) ||
                                  (f->has_max && json_number_value(d) > f->max)))
            fail_msg("%s: default %s is out of range", path, f->def);
        json_decref(d);
    }
    if (f->enums)
        for (const sch_enum *a = f->enums; a->value; a++)
            for (const sch_enum *b = a + 1; b->value; b++)
                if (!strcmp(a->value, b->value))
                    fail_msg("%s: enum value %s twice", path, a->value);
    if (f->kind == SCH_OBJECT) {
        if (!f->fields) fail_msg("%s: object without fields", path);
        for (const sch_field *m = f->fields; m->name; m++) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s.%s", path, m->name);
            for (const sch_field *o = m + 1; o->name; o++)
                if (!strcmp(o->name, m->name)) fail_msg("%s declared twice", sub);
            check_field(m, sub, false);
        }
    }
    if (f->kind == SCH_ARRAY) {
        if (!f->items) fail_msg("%s: list without items", path);
        char sub[512];
        snprintf(sub, sizeof sub, "%s[]", path);
        check_field(f->items, sub, true);
    }
    if (f->flags & SCH_UNIQ) assert_true(f->kind == SCH_ARRAY && sch_field_find(f->items, "name"));
}

static void test_tables(void **state)
{
    (void)state;
    for (size_t i = 0; i < SCH_N_KINDS; i++) {
        assert_ptr_equal(sch_kind_find(sch_kinds[i].kind), &sch_kinds[i]);
        check_field(sch_kinds[i].root, sch_kinds[i].kind, true);
    }
    assert_true(n_fields > 150);
    assert_null(sch_kind_find("Deployment"));
    assert_ptr_equal(
        sch_field_at(&sch_llmgateway_doc, "spec.modelTargets[].config.mock.chunks"),
        sch_field_find(sch_field_at(&sch_llmgateway_doc, "spec.modelTargets[].config.mock"),
                       "chunks"));
    assert_null(sch_field_at(&sch_llmgateway_doc, "spec.nope"));
}

/* every target type the schema accepts builds a snapshot (the type table in snapshot.c
 * covers the schema's enum) */
static void test_every_target_type_loads(void **state)
{
    (void)state;
    const sch_field *type = sch_field_at(&sch_llmgateway_doc, "spec.modelTargets[].type");
    int seen = 0;
    for (const sch_enum *e = type->enums; e->value; e++, seen++) {
        char path[] = "/tmp/ctxgate-type-XXXXXX.yaml";
        int fd = mkstemps(path, 5);
        FILE *f = fdopen(fd, "w");
        fprintf(
            f,
            "apiVersion: ctxgate.io/v1alpha1\nkind: LLMGateway\nmetadata: {name: g}\nspec:\n"
            "  modelTargets: [{name: t, type: %s, config: {endpoint: 'https://h.example/x/'}}]\n",
            e->value);
        fclose(f);
        cfg_diags d = {0};
        cfg_snapshot *s = NULL;
        const char *paths[] = {path};
        assert_int_equal(cfg_load_paths(paths, 1, &s, &d), 0);
        const cfg_target *t = &cfg_find_gateway(s, NULL)->targets[0];
        assert_int_equal((int)t->type, seen);
        assert_string_equal(t->endpoint, "https://h.example/x");
        /* warnings exactly for the types not enforced yet */
        assert_int_equal(d.n, e->enforced ? 0 : 1);
        cfg_snapshot_unref(s);
        cfg_diags_free(&d);
        unlink(path);
    }
    assert_int_equal(seen, TARGET_MOCK + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tables),
                                       cmocka_unit_test(test_every_target_type_loads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
