/* driver.c — the request pipeline as nginx builds one: an ordered table of phases walked by one
 * driver. A phase is one function in its own file that returns continue (the next phase runs),
 * suspend (it waits on the loop; its callback calls pl_resume) or finish (it answered). Phases
 * never call each other: the driver owns the order, and the call's single finish (call.c) runs
 * the finishing phases, account and log, whatever ended it.
 *
 * Lifetime: a call is freed only when it is finished and no entry is on the stack (pl_hold /
 * pl_unhold around the driver and every loop callback), so a finish deep inside a callback
 * cannot leave the code after it holding freed memory; and no phase runs on a finished call. */
#include <assert.h>
#include <stddef.h>

#include "pipeline/call.h"

typedef struct pl_phase {
    const char *name;
    pl_step (*run)(pl_call *c); /* NULL: a slot for a later policy, skipped */
} pl_phase;

static const pl_phase phases[PL_N_PHASES] = {
    [PL_PHASE_SURFACE] = {"surface", pl_phase_surface},
    [PL_PHASE_AUTHENTICATE] = {"authenticate", pl_phase_authenticate},
    [PL_PHASE_AUTHORIZE] = {"authorize", NULL},
    [PL_PHASE_DECODE] = {"decode", pl_phase_decode},
    [PL_PHASE_GUARDRAIL] = {"guardrail", NULL},
    [PL_PHASE_LIMIT] = {"limit", NULL},
    [PL_PHASE_CACHE_LOOKUP] = {"cache-lookup", NULL},
    [PL_PHASE_ROUTE] = {"route", pl_phase_route},
    [PL_PHASE_CONTEXT_LOAD] = {"context-load", pl_phase_context_load},
    [PL_PHASE_TRANSFORM] = {"transform", NULL},
    [PL_PHASE_UPSTREAM] = {"upstream", pl_phase_upstream},
    [PL_PHASE_CONTEXT_COMMIT] = {"context-commit", pl_phase_context_commit},
    [PL_PHASE_CACHE_STORE] = {"cache-store", NULL},
    [PL_PHASE_RESPOND] = {"respond", pl_phase_respond},
    [PL_PHASE_ACCOUNT] = {"account", pl_phase_account},
    [PL_PHASE_LOG] = {"log", pl_phase_log},
};

void pl_run(pl_call *c)
{
    pl_hold(c);
    while (!c->finished) {
        assert(c->phase < PL_PHASE_ACCOUNT); /* respond always finishes */
        const pl_phase *p = &phases[c->phase];
        pl_step s = p->run ? p->run(c) : PL_CONTINUE;
        if (s == PL_FINISH) {
            assert(c->finished);
            break;
        }
        if (s == PL_SUSPEND || c->finished) break; /* a suspended phase may finish at once */
        c->phase++;
    }
    pl_unhold(c);
}

void pl_resume(pl_call *c)
{
    assert(!c->finished);
    assert(c->phase < PL_PHASE_RESPOND);
    c->phase++;
    pl_run(c);
}

void pl_run_finish_phases(pl_call *c)
{
    assert(c->finished);
    for (int i = PL_PHASE_ACCOUNT; i < PL_N_PHASES; i++)
        phases[i].run(c);
}
