# Shared by the server-side loops (call-loop.sh, ack-claims.sh): they run
# the provider's SQL calls in a DO block on a scratch schema, which they
# empty first, so they refuse anything but a loopback server.

# check_scratch SCRIPT URL HASH...: exits unless URL is on loopback, psql is
# installed and each HASH looks like a function set's.
check_scratch() {
    local me=$1 url=$2 h
    shift 2
    case "$url" in
    *@127.0.0.1[:/]* | *@localhost[:/]* | *@\[::1\][:/]*) ;;
    *) echo "$me: $url is not a loopback address; refusing to empty its tables" >&2; exit 2 ;;
    esac
    command -v psql >/dev/null || { echo "$me: psql missing: apt-get install -y postgresql-client" >&2; exit 2; }
    for h in "$@"; do
        [[ $h =~ ^[0-9a-f]{16}$ ]] || { echo "$me: $h is not a function set hash" >&2; exit 2; }
    done
}

# run_loop URL SCHEMA: empties SCHEMA's tables, then runs the DO block read
# from stdin with synchronous_commit off (the WAL flush is left out of the
# figures); prints its notices and any error.
run_loop() {
    local url=$1 s=$2
    {
        echo "SET synchronous_commit = off;"
        echo "TRUNCATE $s.orchestrator_queue, $s.worker_queue, $s.instance_locks, $s.instances,"
        echo "    $s.executions, $s.history, $s.orchestrator_held, $s.kv_store, $s.kv_delta;"
        cat
    } | psql "$url" -X -q -v ON_ERROR_STOP=1 2>&1 | sed -n 's/.*NOTICE: *//p; /ERROR/p'
}
