#!/bin/sh
# bench-touch-vm.sh - the publish command of `make bench`: makes vminfod
# emit exactly one "modify" event, stamped with the publisher's clock so
# the referee can time it end to end.
#
# usage: bench-touch-vm.sh ROOT ZONENAME [ZONENAME...]
#
# Writes {"customer_metadata":{"bench_ts_ns":"$BENCH_TS_NS"},
# "internal_metadata":{}} to <ROOT>/zones/<zone>/config/metadata.json the
# way the real tools do: a temporary file in the same directory, then a
# rename.  With several zones, event BENCH_SEQ (1, 2, ...) goes to zone
# number (BENCH_SEQ - 1) mod count + 1, so that consecutive changes never
# name the same file: the supervisor's queue drops a task identical to
# one still waiting, and two changes of one file in a burst would make a
# single event.  BENCH_TS_NS (CLOCK_REALTIME ns, set by the referee's
# publisher just before this command starts) must differ from the zone's
# previous value, or no event comes out.  It runs once per event, so it
# stays in sh with one external command (mv).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 ROOT ZONENAME [ZONENAME...]" >&2; exit 2; }
: "${BENCH_TS_NS:?BENCH_TS_NS is not set}"
root=$1
shift
i=$(( (${BENCH_SEQ:-1} - 1) % $# + 1 ))
eval "zone=\${$i}"
dir=$root/zones/$zone/config
tmp=$dir/.metadata.json.bench.$$
printf '{"customer_metadata":{"bench_ts_ns":"%s"},"internal_metadata":{}}\n' \
    "$BENCH_TS_NS" >"$tmp"
exec mv -f "$tmp" "$dir/metadata.json"
