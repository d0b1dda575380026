/* conditions.c — metav1.Condition bookkeeping and the status comparison of conditions.h. */
#include <string.h>

#include "controller/conditions.h"

json_t *cond_get(const json_t *conds, const char *type)
{
    size_t i;
    json_t *c;
    json_array_foreach(conds, i, c)
    {
        const char *t = json_string_value(json_object_get(c, "type"));
        if (t && strcmp(t, type) == 0) return c;
    }
    return NULL;
}

const char *cond_status(const json_t *conds, const char *type)
{
    return json_string_value(json_object_get(cond_get(conds, type), "status"));
}

static bool str_field_is(const json_t *o, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && strcmp(v, want) == 0;
}

bool cond_set(json_t *conds, const char *type, const char *status, const char *reason,
              const char *message, json_int_t generation, const char *now)
{
    json_t *old = cond_get(conds, type);
    const char *since = now;
    bool changed = true;
    if (old && str_field_is(old, "status", status)) {
        const char *t = json_string_value(json_object_get(old, "lastTransitionTime"));
        if (t) since = t;
        changed = !str_field_is(old, "reason", reason) ||
                  !str_field_is(old, "message", message ? message : "") ||
                  json_integer_value(json_object_get(old, "observedGeneration")) != generation;
    }
    json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", type, "status", status,
                          "reason", reason, "message", message ? message : "", "lastTransitionTime",
                          since, "observedGeneration", generation);
    if (!c) return false;
    if (old) {
        size_t i;
        json_t *x;
        json_array_foreach(conds, i, x)
        {
            if (x == old) {
                json_array_set_new(conds, i, c); /* frees old (and `since` with it, after use) */
                return changed;
            }
        }
    }
    json_array_append_new(conds, c);
    return true;
}

static bool volatile_key(const char *k)
{
    return strcmp(k, "lastTransitionTime") == 0 || strcmp(k, "lastUpdated") == 0 ||
           strcmp(k, "lastReconciledTime") == 0;
}

static void strip(json_t *v)
{
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        void *tmp;
        json_object_foreach_safe(v, tmp, k, x)
        {
            if (volatile_key(k))
                json_object_del(v, k);
            else
                strip(x);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        for (i = 0; i < json_array_size(v); i++) {
            x = json_array_get(v, i);
            strip(x);
        }
    }
}

bool status_same(const json_t *a, const json_t *b)
{
    json_t *x = a ? json_deep_copy(a) : json_object();
    json_t *y = b ? json_deep_copy(b) : json_object();
    strip(x);
    strip(y);
    bool same = json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return same;
}
