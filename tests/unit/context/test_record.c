/* test_record.c — the stored-record codec alone: JSON and Text round trips, sealing with
 * (tenant, id) as associated data, schema upgrade of v0 records, refusals with clear messages,
 * and a deterministic mutation run over the decoder (it must reject, never crash or leak). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "context/record.h"

static ctx_record *sample(void)
{
    ctx_record *r = ctx_record_new("conv-1");
    r->version = 42;
    r->persona = strdup("You are\na pirate \\ matey");
    r->summary = strdup("earlier: \r\nthey talked");
    r->created_at = 1700000000000;
    r->updated_at = 1700000005000;
    json_decref(r->messages);
    r->messages =
        json_loads("[{\"role\":\"system\",\"content\":\"be nice\",\"ts\":1},"
                   "{\"role\":\"user\",\"content\":\"a\\\\nb\\nc\\\\\",\"ts\":2,\"name\":\"bob\"},"
                   "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t1\","
                   "\"type\":\"function\","
                   "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}],\"ts\":3},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"t1\",\"content\":[{\"type\":\"text\","
                   "\"text\":\"ok\"}],\"ts\":4},"
                   "{\"role\":\"user\",\"content\":\"\",\"ts\":5}]",
                   0, NULL);
    assert_non_null(r->messages);
    json_object_set_new(r->metadata, "channel", json_string("web\nchat"));
    return r;
}

static void roundtrip(bool text, bool encrypt)
{
    ctx_codec c = {.text = text, .encrypt = encrypt};
    memset(c.key, 7, sizeof(c.key));
    ctx_record *r = sample();
    buf b = BUF_INIT;
    char err[256];
    assert_int_equal(ctx_record_encode(&c, "acme", "conv-1", r, &b, err, sizeof(err)), 0);
    ctx_record *back = NULL;
    assert_int_equal(
        ctx_record_decode(&c, "acme", "conv-1", b.data, b.len, NULL, &back, err, sizeof(err)), 0);
    assert_true(ctx_record_equal(r, back));
    if (encrypt) {
        assert_int_equal((unsigned char)b.data[0], CTX_SEAL_VERSION);
        assert_null(memmem(b.data, b.len, "pirate", 6));
        /* bound to (tenant, id) */
        ctx_record *x = NULL;
        assert_int_equal(
            ctx_record_decode(&c, "acme", "conv-2", b.data, b.len, NULL, &x, err, sizeof(err)),
            CTX_ECORRUPT);
        assert_non_null(strstr(err, "failed authentication"));
        assert_int_equal(
            ctx_record_decode(&c, "acmf", "conv-1", b.data, b.len, NULL, &x, err, sizeof(err)),
            CTX_ECORRUPT);
        /* a flipped ciphertext bit and a wrong key fail too */
        b.data[20] ^= 1;
        assert_int_equal(
            ctx_record_decode(&c, "acme", "conv-1", b.data, b.len, NULL, &x, err, sizeof(err)),
            CTX_ECORRUPT);
        b.data[20] ^= 1;
        ctx_codec wrong = c;
        wrong.key[0] ^= 1;
        assert_int_equal(
            ctx_record_decode(&wrong, "acme", "conv-1", b.data, b.len, NULL, &x, err, sizeof(err)),
            CTX_ECORRUPT);
        assert_null(x);
    } else if (text) {
        /* exact: encoding the decoded record gives the same bytes */
        buf again = BUF_INIT;
        assert_int_equal(ctx_record_encode(&c, "acme", "conv-1", back, &again, err, sizeof(err)),
                         0);
        assert_int_equal(again.len, b.len);
        assert_memory_equal(again.data, b.data, b.len);
        buf_free(&again);
        /* one physical line per field: no raw newline escaped the encoding */
        assert_non_null(strstr(b.data, "\npersona You are\\na pirate \\\\ matey\n"));
    }
    ctx_record_free(back);
    ctx_record_free(r);
    buf_free(&b);
}

static void json_plain(void **state)
{
    roundtrip(false, false);
}
static void text_plain(void **state)
{
    roundtrip(true, false);
}
static void json_sealed(void **state)
{
    roundtrip(false, true);
}
static void text_sealed(void **state)
{
    roundtrip(true, true);
}

static void v0_upgrade(void **state)
{
    ctx_codec c = {0};
    const char *v0 = "{\"turns\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\","
                     "\"content\":\"yo\"}]}";
    ctx_record_meta meta = {3, 1000, 2000};
    ctx_record *r = NULL;
    char err[256];
    assert_int_equal(
        ctx_record_decode(&c, "t", "legacy", v0, strlen(v0), &meta, &r, err, sizeof(err)), 0);
    assert_int_equal(r->schema_version, CTX_SCHEMA_VERSION);
    assert_int_equal(r->version, 3);
    assert_int_equal(r->created_at, 1000);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r->messages, 1), "ts")),
                     2000);
    assert_string_equal(r->id, "legacy");
    /* re-encoded as v1 */
    buf b = BUF_INIT;
    assert_int_equal(ctx_record_encode(&c, "t", "legacy", r, &b, err, sizeof(err)), 0);
    assert_non_null(strstr(b.data, "\"schemaVersion\":1"));
    buf_free(&b);
    ctx_record_free(r);
}

static void refusals(void **state)
{
    ctx_codec c = {0};
    ctx_record *r = NULL;
    char err[256];
    const char *newer = "{\"schemaVersion\":9,\"id\":\"x\"}";
    assert_int_equal(
        ctx_record_decode(&c, "t", "x", newer, strlen(newer), NULL, &r, err, sizeof(err)),
        CTX_ECORRUPT);
    assert_non_null(strstr(err, "newer"));
    const char *other = "{\"schemaVersion\":1,\"id\":\"y\",\"version\":1,\"messages\":[],"
                        "\"metadata\":{},\"createdAt\":1,\"updatedAt\":1}";
    assert_int_equal(
        ctx_record_decode(&c, "t", "x", other, strlen(other), NULL, &r, err, sizeof(err)),
        CTX_ECORRUPT);
    assert_non_null(strstr(err, "belongs to conversation 'y'"));
    assert_int_equal(ctx_record_decode(&c, "t", "x", "\x01zzzz", 5, NULL, &r, err, sizeof(err)),
                     CTX_ECORRUPT);
    assert_non_null(strstr(err, "no encryption key"));
    assert_int_equal(ctx_record_decode(&c, "t", "x", "", 0, NULL, &r, err, sizeof(err)),
                     CTX_ECORRUPT);
    assert_null(r);
    /* ids */
    assert_int_equal(ctx_id_validate("id", "ok-id_1.2", false, err, sizeof(err)), 0);
    assert_int_equal(ctx_id_validate("id", "tab\there", false, err, sizeof(err)), CTX_EINVAL);
    assert_int_equal(ctx_id_validate("tenant", "a:b", true, err, sizeof(err)), CTX_EINVAL);
    assert_int_equal(ctx_id_validate("id", "a:b", false, err, sizeof(err)), 0);
}

/* A Text record whose strings are not valid UTF-8 is refused, naming the line: the JSON
 * encoding cannot hold such strings, so accepting them meant dropping the field (persona,
 * content) or the message's role on the next write (found by tests/fuzz/fuzz_record.c). */
static void text_invalid_utf8(void **state)
{
    static const char *const lines[] = {
        "persona terse \xa9\n",
        "summary \xc3\n",
        "message us\xff"
        "er\n",
        "message user\ncontent caf\xe9\n",
        "message tool\ntool_call_id \xed\xa0\x80\n",
    };
    ctx_codec c = {.text = true};
    char err[256];
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        buf b = BUF_INIT;
        buf_puts(&b, "ctxgate-record text 1\nschemaVersion 1\nid conv-1\nversion 1\n");
        buf_puts(&b, lines[i]);
        buf_puts(&b, "end\n");
        ctx_record *r = NULL;
        assert_int_equal(
            ctx_record_decode(&c, "t", "conv-1", b.data, b.len, NULL, &r, err, sizeof(err)),
            CTX_ECORRUPT);
        assert_null(r);
        assert_non_null(strstr(err, "is malformed"));
        buf_free(&b);
    }
    /* valid multi-byte UTF-8 still reads back */
    const char *ok =
        "ctxgate-record text 1\nschemaVersion 1\nid conv-1\nversion 1\n"
        "persona caf\xc3\xa9 \xf0\x9f\x98\x80\nmessage user\ncontent \xe2\x82\xac\nend\n";
    ctx_record *r = NULL;
    assert_int_equal(
        ctx_record_decode(&c, "t", "conv-1", ok, strlen(ok), NULL, &r, err, sizeof(err)), 0);
    assert_string_equal(r->persona, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(r->messages, 0), "content")),
        "\xe2\x82\xac");
    ctx_record_free(r);
}

/* Deterministic mutation run: every mutant of valid encodings decodes or is refused cleanly. */
static void decoder_mutations(void **state)
{
    unsigned seed = 12345;
    char err[256];
    for (int variant = 0; variant < 4; variant++) {
        ctx_codec c = {.text = variant & 1, .encrypt = (variant & 2) != 0};
        memset(c.key, 9, sizeof(c.key));
        ctx_record *r = sample();
        buf b = BUF_INIT;
        assert_int_equal(ctx_record_encode(&c, "acme", "conv-1", r, &b, err, sizeof(err)), 0);
        ctx_record_free(r);
        for (int i = 0; i < 3000; i++) {
            unsigned char *m = malloc(b.len + 8);
            size_t n = b.len;
            memcpy(m, b.data, n);
            int kind = rand_r(&seed) % 4;
            size_t at = (size_t)rand_r(&seed) % n;
            if (kind == 0)
                m[at] ^= (unsigned char)(1u << (rand_r(&seed) % 8));
            else if (kind == 1)
                n = at; /* truncate */
            else if (kind == 2)
                m[at] = (unsigned char)(rand_r(&seed) % 256);
            else
                m[at] = "\n\\ {}\":"[rand_r(&seed) % 7];
            ctx_record *out = NULL;
            int rc = ctx_record_decode(&c, "acme", "conv-1", m, n, NULL, &out, err, sizeof(err));
            if (rc == 0)
                assert_non_null(out);
            else
                assert_true(rc == CTX_ECORRUPT && err[0] && !out);
            if (c.encrypt && !(kind == 1 && n == b.len))
                assert_true(rc != 0 || memcmp(m, b.data, n) == 0);
            ctx_record_free(out);
            free(m);
        }
        buf_free(&b);
    }
}

/* an append must be replayable: tool calls with id, type and function.name, content parts with
 * a type; stored records are still read with the lenient check (nothing becomes unreadable) */
static void append_elements(void **state)
{
    (void)state;
    static const char *const refused[] = {
        "[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[5]}]",
        "[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":5,\"type\":\"function\","
        "\"function\":{\"name\":\"f\"}}]}]",
        "[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\","
        "\"function\":\"f\"}]}]",
        "[{\"role\":\"user\",\"content\":[5]}]",
        "[{\"role\":\"user\",\"content\":[{\"text\":\"no type\"}]}]",
    };
    char err[256];
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        json_t *m = json_loads(refused[i], 0, NULL);
        assert_non_null(m);
        assert_int_equal(ctx_messages_validate(m, err, sizeof err), 0);
        assert_int_equal(ctx_messages_validate_append(m, err, sizeof err), CTX_EINVAL);
        assert_non_null(strstr(err, "messages[0]."));
        json_decref(m);
    }
    ctx_record *r = sample();
    assert_int_equal(ctx_messages_validate_append(r->messages, err, sizeof err), 0);
    ctx_record_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_plain),        cmocka_unit_test(text_plain),
        cmocka_unit_test(json_sealed),       cmocka_unit_test(text_sealed),
        cmocka_unit_test(v0_upgrade),        cmocka_unit_test(refusals),
        cmocka_unit_test(decoder_mutations), cmocka_unit_test(append_elements),
        cmocka_unit_test(text_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
