#!/usr/bin/env bash
# What an ack that claims the next turn costs the server (decision 0014),
# against an ack that does not followed by a fetch.
#
# In one server-side loop, N times: an orchestration ack without a claim
# then a fetch of the next instance, and an ack that claims the next
# instance itself; COMMIT after each call, synchronous_commit off (the WAL
# flush is left out, as in call-loop.sh), reclaims every 50 loops. Prints
# the microseconds per turn of each shape.
#
# SET must be a function set with the acks' p_prefetch_* parameters
# (installed by `duroxide-postgres --url URL --schema SCHEMA migrate`,
# which prints its hash). The loop EMPTIES the schema's tables first: use a
# scratch schema on a scratch server. Loopback only.
#
# usage: bench/ack-claims.sh URL SCHEMA SET [N]
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
url=$1 s=$2 h=$3 n=${4:-1000}
# shellcheck source=bench/loop-lib.sh
. "$(dirname "$0")/loop-lib.sh"
check_scratch ack-claims.sh "$url" "$h"

# An ack of the fetched turn (tok, inst), events from e; $1: the claim's
# lease in ms, or NULL for none.
ack() {
    cat <<EOF
    SELECT * INTO r FROM $s.ack_orchestration_item__$h(tok, 1, ARRAY[e, e + 1, e + 2]::bigint[], ARRAY['e1','e2','e3'],
      ARRAY['w'], ARRAY[inst], ARRAY[1]::bigint[], ARRAY[e]::bigint[], ARRAY[NULL]::text[], ARRAY[NULL]::text[],
      ARRAY['t'], ARRAY[inst], ARRAY['TimerFired'], ARRAY[(extract(epoch from now()) * 1000)::bigint + 3600000],
      'Running', NULL, 'orch', '1.0.0', NULL, NULL, '{}'::text[], '{}'::bigint[], '{}'::bigint[], 0::smallint,
      NULL, false, '{}'::text[], '{}'::bytea[], '{}'::bigint[], $1, NULL, NULL);
EOF
}

run_loop "$url" "$s" <<EOF
DO \$loop\$
DECLARE
  tok TEXT; inst TEXT; e BIGINT := 1; t0 timestamptz; r RECORD; n int := $n;
  separate interval := '0'; fetched interval := '0'; claiming interval := '0';
BEGIN
  FOR i IN 1 .. 2 * n + 2 LOOP
    PERFORM * FROM $s.enqueue_orchestrator__$h('i' || i, 'StartOrchestration', '{"x":1}', 0, NULL, NULL);
  END LOOP;
  COMMIT;
  SELECT f.lock_token, f.instance_id INTO tok, inst FROM $s.fetch_orchestration_item__$h(30000, NULL, NULL, false, NULL) f;
  COMMIT;
  FOR i IN 1 .. n LOOP
    t0 := clock_timestamp();
$(ack NULL)
    COMMIT; separate := separate + (clock_timestamp() - t0); t0 := clock_timestamp();
    SELECT f.lock_token, f.instance_id INTO tok, inst FROM $s.fetch_orchestration_item__$h(30000, NULL, NULL, false, NULL) f;
    COMMIT; fetched := fetched + (clock_timestamp() - t0); t0 := clock_timestamp();
    e := e + 10;
$(ack 30000)
    COMMIT; claiming := claiming + (clock_timestamp() - t0);
    tok := r.lock_token; inst := r.instance_id; e := e + 10;
    IF i % 50 = 0 THEN
      PERFORM $s.reclaim_orchestrator_queue__$h(); PERFORM $s.reclaim_worker_queue__$h(); COMMIT;
    END IF;
  END LOOP;
  RAISE NOTICE 'us per turn: ack % + fetch % = %; an ack that claims the next turn %',
    round(extract(epoch FROM separate) * 1e6 / n), round(extract(epoch FROM fetched) * 1e6 / n),
    round(extract(epoch FROM separate + fetched) * 1e6 / n), round(extract(epoch FROM claiming) * 1e6 / n);
END
\$loop\$;
EOF
