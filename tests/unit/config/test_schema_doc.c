/* test_schema_doc.c — docs/reference.md must be exactly what `ctxgate schema-doc` prints, so the
 * reference never drifts from the schema. Regenerate: ctxgate schema-doc > docs/reference.md */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_test.h"

static void test_reference_is_fresh(void **state)
{
    (void)state;
    char *gen = NULL;
    size_t gen_len = 0;
    FILE *f = open_memstream(&gen, &gen_len);
    assert_int_equal(cfg_schema_doc_write(f), 0);
    fclose(f);
    assert_non_null(
        strstr(gen, "| `spec.listener.port` | integer, 1..65535 | `8080` |  | yes | TCP port. |"));
    assert_non_null(strstr(gen, "`OpenAI`, `AzureOpenAI`, `Anthropic`, `Gemini`, "));
    assert_null(strstr(gen, "`Anthropic` (not enforced)"));

    const char *src = getenv("CTXGATE_SOURCE_DIR");
    assert_non_null(src);
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/reference.md", src);
    FILE *in = fopen(path, "rb");
    if (!in) fail_msg("%s missing: run `ctxgate schema-doc > docs/reference.md`", path);
    char *file = malloc(gen_len + 2);
    size_t n = fread(file, 1, gen_len + 1, in);
    fclose(in);
    if (n != gen_len || memcmp(file, gen, gen_len) != 0)
        fail_msg("docs/reference.md is stale: run `ctxgate schema-doc > docs/reference.md`");
    free(file);
    free(gen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reference_is_fresh)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
