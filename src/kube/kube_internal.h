/* kube_internal.h — what the files of src/kube/ share, and the pure pieces the unit tests reach
 * (watch-line splitting, watch-event decoding, the cache diff of a re-list, the Lease expiry
 * rule). Not a public API: other layers use kube.h. */
#ifndef CTXGATE_KUBE_KUBE_INTERNAL_H
#define CTXGATE_KUBE_KUBE_INTERNAL_H

#include <stdint.h>

#include "core/buf.h"
#include "kube/kube.h"

/* ---- client.c: calls and the client's bookkeeping ---- */

/* A streaming GET (watches): on_status once the status line arrived, on_chunk for every body
 * piece of a 200 answer (a non-200 body is accumulated and comes parsed with on_done, the way
 * kube_request delivers it), on_done once at the end. Any callback may kube_call_cancel the call
 * (then nothing more runs) or free the client. timeout_ms 0 = none. */
typedef struct kube_stream_fns {
    void (*on_status)(int status, void *udata);
    void (*on_chunk)(const char *data, size_t len, void *udata);
    kube_cb on_done;
} kube_stream_fns;
kube_call *kube_stream(kube_client *c, const char *path, unsigned timeout_ms,
                       const kube_stream_fns *fns, void *udata);

/* kube_request with a timeout of its own (0 = the 30 s default); detached calls survive
 * kube_client_free for a short grace period (the Lease release, Events) and their callbacks must
 * only touch what they own. */
kube_call *kube_request_ex(kube_client *c, const char *method, const char *path,
                           const char *content_type, const json_t *body, unsigned timeout_ms,
                           bool detached, kube_cb cb, void *udata);

/* the informers / leaders of a client, so kube_client_free stops them */
typedef struct kube_link {
    struct kube_link *prev, *next;
} kube_link;
void kube_link_add(kube_link *head, kube_link *l);
void kube_link_del(kube_link *l);
kube_link *kube_client_informers(kube_client *c);
kube_link *kube_client_leaders(kube_client *c);
uv_loop_t *kube_client_loop(kube_client *c);
bool kube_client_closing(const kube_client *c);
/* events.c keeps its series map and reporter in the client */
typedef struct kube_events_state kube_events_state;
kube_events_state **kube_client_events(kube_client *c);
void kube_events_state_free(kube_events_state *s);
void kube_informer_stop_all(kube_client *c);
void kube_leader_stop_all(kube_client *c);

/* ---- small helpers ---- */

/* a copy of s, NULL stays NULL; aborts on out of memory */
char *kube_strdup(const char *s);
/* uniformly random in [0, n) (n > 0) from a per-thread generator seeded from the clock and pid */
uint32_t kube_rand_below(uint32_t n);
/* monotonic milliseconds */
uint64_t kube_mono_ms(void);
/* "ns/name" (or "name" when ns is NULL or empty); caller frees */
char *kube_cache_key(const char *ns, const char *name);
/* the "ns/name" key of an API object, or NULL when it has no metadata.name */
char *kube_object_key(const json_t *obj);
/* metadata.resourceVersion of obj or NULL (borrowed) */
const char *kube_object_rv(const json_t *obj);

/* ---- informer.c pieces ---- */

/* Splits a byte stream into lines: kube_lines_feed calls on_line for every complete line (its
 * '\n' removed, a trailing '\r' too; empty lines skipped). A line longer than max_line makes feed
 * return -1 (the splitter is then unusable until reset); else the number of lines. */
typedef struct kube_lines {
    buf pending;
    size_t max_line;
} kube_lines;
void kube_lines_init(kube_lines *l, size_t max_line);
int kube_lines_feed(kube_lines *l, const char *data, size_t len,
                    bool (*on_line)(const char *line, size_t len, void *udata), void *udata);
void kube_lines_reset(kube_lines *l);

typedef enum {
    KUBE_WATCH_ADDED,
    KUBE_WATCH_MODIFIED,
    KUBE_WATCH_DELETED,
    KUBE_WATCH_BOOKMARK,
    KUBE_WATCH_ERROR,
    KUBE_WATCH_INVALID,
} kube_watch_type;
/* One line of a watch stream: {"type": ..., "object": ...}. *obj is the object (a new reference,
 * NULL for INVALID); for ERROR *code is the Status code (0 when absent). */
kube_watch_type kube_watch_decode(const char *line, size_t len, json_t **obj, int *code);

/* Sets kind / apiVersion of obj from r when they are missing (list items come without them). */
void kube_object_fill_type(json_t *obj, const kube_gvr *r);

/* The events that turn cache old into cache new (both "ns/name" -> object): DELETED for keys only
 * in old (with the old object), ADDED for keys only in new, MODIFIED for keys in both whose
 * metadata.resourceVersion differs. Calls emit in that order (deletions first); stops early
 * when emit returns false. Returns the number of events. */
size_t kube_cache_diff(const json_t *old_cache, const json_t *new_cache,
                       bool (*emit)(kube_event_type t, json_t *obj, void *udata), void *udata);

/* ---- leader.c pieces ---- */

/* client-go's rule: a Lease record is expired when the time since we observed it change exceeds
 * its leaseDurationSeconds (our clock only; never the renewTime the holder wrote). */
bool kube_lease_expired(uint64_t observed_ms, unsigned lease_s, uint64_t now_ms);

#endif
