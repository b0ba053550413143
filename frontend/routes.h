/*
 * routes.h - request -> handler (spec/http-api.md §2-§3): method check,
 * path normalisation and dispatch, /ping, /status, /vms, /vms/<z>, the
 * error answers, and the "HTTP request" log line.  /events is handed to
 * subscribers.c.
 */
#ifndef VMINFOD_FE_ROUTES_H
#define VMINFOD_FE_ROUTES_H

#include <h2o.h>

struct frontend;

/* Register the API handler for every path of config.  0 or -ENOMEM. */
int routes_register(struct frontend *fe, h2o_globalconf_t *config);
/* Register the handler that answers 503 to everything (connections past
 * --max-connections).  0 or -ENOMEM. */
int routes_register_busy(struct frontend *fe, h2o_globalconf_t *config);

#endif
