#!/usr/bin/env bash
# What each provider call costs the server, two function sets side by side.
#
# Runs, inside one server-side loop, the provider's own SQL calls of a turn
# (enqueue, orchestration fetch + ack, worker fetch + ack), with COMMIT after
# each call, for function set A and then for function set B, N times, and
# prints the microseconds per call of each set. Alternating inside one loop
# means drift of the machine's speed (about 25 % between runs on a 2-core
# VM) affects both sets alike; differences of about 5 us show.
# synchronous_commit is off, so the figures leave out the WAL flush (the
# bench's turns section has it); reclaims run every 50 loops, as a runtime's
# maintenance does.
#
# Both sets must be installed in SCHEMA: run `duroxide-postgres --url URL
# --schema SCHEMA migrate` from each build (function sets are versioned and
# coexist; the hash is printed by migrate). The loop EMPTIES the schema's
# tables first: use a scratch schema on a scratch server. Loopback only.
#
# usage: bench/call-loop.sh URL SCHEMA SET_A SET_B [N]
# e.g.   bench/call-loop.sh postgres://postgres@127.0.0.1:5499/postgres x \
#            1711963614aab2e3 7dd230ccbbacd271
set -euo pipefail

if [ $# -lt 4 ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
url=$1 schema=$2 a=$3 b=$4 n=${5:-3000}
# shellcheck source=bench/loop-lib.sh
. "$(dirname "$0")/loop-lib.sh"
check_scratch call-loop.sh "$url" "$a" "$b"

s=$schema
# The arguments a set's function takes beyond the oldest set's, as NULLs
# (the fetches' p_except and p_claim_sessions, the acks' p_prefetch_*: the
# loop measures each call on its own, so an ack claims no next turn).
extra() {
    local n
    n=$(psql "$url" -X -A -t -v ON_ERROR_STOP=1 -c \
        "SELECT pronargs - $3 FROM pg_proc WHERE proname = '$1__$2' AND pronamespace = '$s'::regnamespace")
    [ -n "$n" ] || { echo "call-loop.sh: $1__$2 is not installed in $s" >&2; exit 2; }
    for ((k = 0; k < n; k++)); do printf ', NULL'; done
}
# One turn of set $1, its instance ids prefixed $2, event ids from $3,
# timings accumulated in variables suffixed $2.
turn() {
    local h=$1 p=$2 e=$3 fx ax wfx wax
    fx=$(extra fetch_orchestration_item "$h" 4)
    ax=$(extra ack_orchestration_item "$h" 29)
    wfx=$(extra fetch_work_item "$h" 5)
    wax=$(extra ack_work_item "$h" 4)
    cat <<EOF
  e := $e;
  t0 := clock_timestamp();
  PERFORM * FROM $s.enqueue_orchestrator__$h('$p' || i, 'StartOrchestration', '{"x":1}', 0, NULL, NULL);
  COMMIT; en_$p := en_$p + (clock_timestamp() - t0); t0 := clock_timestamp();
  SELECT f.lock_token, f.instance_id INTO tok, inst FROM $s.fetch_orchestration_item__$h(30000, NULL, NULL, false$fx) f;
  COMMIT; of_$p := of_$p + (clock_timestamp() - t0); t0 := clock_timestamp();
  PERFORM * FROM $s.ack_orchestration_item__$h(tok, 1, ARRAY[e, e + 1, e + 2]::bigint[], ARRAY['e1','e2','e3'],
      ARRAY['w'], ARRAY[inst], ARRAY[1]::bigint[], ARRAY[e]::bigint[], ARRAY[NULL]::text[], ARRAY[NULL]::text[],
      ARRAY['t'], ARRAY[inst], ARRAY['TimerFired'], ARRAY[(extract(epoch from now()) * 1000)::bigint + 3600000],
      'Running', NULL, 'orch', '1.0.0', NULL, NULL, '{}'::text[], '{}'::bigint[], '{}'::bigint[], 0::smallint,
      NULL, false, '{}'::text[], '{}'::bytea[], '{}'::bigint[]$ax);
  COMMIT; oa_$p := oa_$p + (clock_timestamp() - t0); t0 := clock_timestamp();
  SELECT f.lock_token, f.instance_id INTO wtok, winst FROM $s.fetch_work_item__$h(30000, NULL, 30000, 0::smallint, NULL$wfx) f;
  COMMIT; wf_$p := wf_$p + (clock_timestamp() - t0); t0 := clock_timestamp();
  PERFORM $s.ack_work_item__$h(wtok, winst, 'ActivityCompleted', 'c'$wax);
  COMMIT; wa_$p := wa_$p + (clock_timestamp() - t0);
EOF
}
vars() { for v in en of oa wf wa; do echo "  ${v}_$1 interval := '0';"; done; }
report() {
    local us=""
    for v in en of oa wf wa; do us="$us, round((extract(epoch from ${v}_$2) * 1e6 / n)::numeric, 1)"; done
    echo "  RAISE NOTICE 'set $1 (us per call): enqueue % | orchestration fetch % ack % | worker fetch % ack %'$us;"
}

run_loop "$url" "$s" <<EOF
DO \$loop\$
DECLARE
  tok TEXT; inst TEXT; wtok TEXT; winst TEXT; e BIGINT; t0 timestamptz; n int := $n;
$(vars a)
$(vars b)
BEGIN
  FOR i IN 1..n LOOP
    IF i % 50 = 0 THEN
      PERFORM $s.reclaim_orchestrator_queue__$b(); PERFORM $s.reclaim_worker_queue__$b(); COMMIT;
    END IF;
$(turn "$a" a 'i * 20')
$(turn "$b" b 'i * 20 + 10')
  END LOOP;
$(report "$a" a)
$(report "$b" b)
END
\$loop\$;
EOF
