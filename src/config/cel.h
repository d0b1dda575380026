/* cel.h — a small evaluator for the subset of CEL (Common Expression Language) that the schema's
 * x-kubernetes-validations rules use, so `ctxgate validate` applies the very rule text the API
 * server applies in the cluster. Values are jansson values: `self` is the document's node.
 *
 * Supported: identifiers and `self`, field selection, indexing, has(), the macros all, exists,
 * exists_one, map and filter (over lists, and over maps' keys), `in`, size() (function and
 * method), startsWith / endsWith / contains, ==, !=, <, <=, >, >=, &&, ||, !, unary -, + - * / %,
 * ternary ?:, int / double / string / bool / null literals, list literals, + on strings and
 * lists. && and || are commutative over errors as in CEL (false && error is false). */
#ifndef CTXGATE_CONFIG_CEL_H
#define CTXGATE_CONFIG_CEL_H

#include <jansson.h>
#include <stddef.h>

#include "config/schema.h"

/* Evaluates a boolean rule with `self` bound: 1 true, 0 false, -1 error (message in err:
 * a syntax error, an unsupported construct, no such key, a type mismatch, ...). */
int cel_eval_bool(const char *expr, json_t *self, char *err, size_t errlen);

/* Parses only: 0 when expr is in the supported subset, -1 with the reason in err. */
int cel_parse_check(const char *expr, char *err, size_t errlen);

/* An estimate of the worst-case cost the Kubernetes API server computes for a rule on `self`
 * (cel-go's estimator, simplified: field selection 1, a comprehension size x (body + 2), `in`
 * the list's size, string comparison 1 + 0.1 x the shorter maxLength), from the schema's
 * maxItems / maxProperties / maxLength. -1 with a reason when a list, map or string the rule
 * iterates or compares is unbounded (the API server would estimate it from the request size). */
int cel_estimate_cost(const char *expr, const sch_field *self, double *cost, char *err,
                      size_t errlen);

#endif
