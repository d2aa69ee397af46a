#!/usr/bin/env bash
# Measures what the bearer check costs, with interleaved short wrk runs against a
# HYPEMAN_BENCH=1 rendering of the edge config (loopback only).
#
#   nginx/bench-auth.sh BASE_URL TOKEN [ROUNDS] [SECONDS] [CONNECTIONS]
#   e.g. nginx/bench-auth.sh http://127.0.0.1:8080 "$(hypeman-token --ttl 1h)" 5 3
#
# Pairs compared (same request, with and without the check):
#   /_bench/static-file vs /_bench/static-auth   nginx serving a tiny file, no FastCGI
#   /_bench/hello       vs /_bench/hello-auth    the app's tiny FastCGI answer
# (/_bench/static, nginx "return 200", is run too as a reference.)
# Prints req/s per round and the median ratio auth/no-auth for each pair. Throughput on a
# shared 2-vCPU machine is noisy, so when BENCH_NGINX_PIDFILE (nginx's pid file) is set it also
# reads the CPU time the nginx workers (and the processes in BENCH_APP_PIDS, if given) spent per
# request, which other load on the machine disturbs far less.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: bench-auth.sh BASE_URL TOKEN [ROUNDS] [SECONDS] [CONNECTIONS]" >&2; exit 2; }
base=$1 token=$2 rounds=${3:-5} secs=${4:-3} conns=${5:-32}
case "$base" in
    http://127.0.0.1:* | http://localhost:* | https://127.0.0.1:* | https://localhost:*) ;;
    *) echo "bench-auth.sh: loopback URLs only: $base" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "bench-auth.sh: wrk not installed" >&2; exit 2; }
cores=$(nproc)

paths=(static static-file static-auth hello hello-auth)
for p in "${paths[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/_bench/$p")
    [ "$code" = 200 ] || { echo "bench-auth.sh: $base/_bench/$p answered $code (HYPEMAN_BENCH=1? token valid? app up?)" >&2; exit 1; }
done

# CPU ticks (user+system) of the measured processes.
cpu_pids() {
    local pids=${BENCH_APP_PIDS:-}
    if [ -n "${BENCH_NGINX_PIDFILE:-}" ]; then
        pids="$pids $(pgrep -P "$(cat "$BENCH_NGINX_PIDFILE")" | tr '\n' ' ')"
    fi
    echo "$pids"
}
ticks() {
    local total=0 pid
    for pid in $(cpu_pids); do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A results cpu
for ((r = 1; r <= rounds; r++)); do
    line="round $r:"
    for p in "${paths[@]}"; do
        t0=$(ticks)
        out=$(wrk -t2 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $token" "$base/_bench/$p")
        t1=$(ticks)
        rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
        results[$p]="${results[$p]:-} $rps"
        line="$line $p=$rps"
        if [ -n "$(cpu_pids | tr -d ' ')" ]; then
            us=$(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", d / hz / n * 1e6 }')
            cpu[$p]="${cpu[$p]:-} $us"
            line="$line(${us}us)"
        fi
    done
    echo "$line"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratios() { # per-round ratio of $2 to $1
    paste <(tr ' ' '\n' <<<"${results[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${results[$2]}" | grep -v '^$') |
        awk '{ printf "%s ", $2 / $1 }'
}
for pair in "static-file static-auth" "hello hello-auth"; do
    set -- $pair
    base_m=$(median <<<"${results[$1]}")
    auth_m=$(median <<<"${results[$2]}")
    ratio_m=$(ratios "$1" "$2" | median)
    awk -v a="$1" -v b="$2" -v x="$base_m" -v y="$auth_m" -v q="$ratio_m" -v c="$cores" 'BEGIN {
        printf "%-11s median %.0f req/s, with auth %.0f req/s: ratio %.3f (cost %.1f%%), +%.1f us CPU/request\n",
            a, x, y, q, (1 - q) * 100, (c / y - c / x) * 1e6 }'
    if [ -n "${cpu[$1]:-}" ]; then
        base_c=$(median <<<"${cpu[$1]}")
        auth_c=$(median <<<"${cpu[$2]}")
        awk -v a="$1" -v x="$base_c" -v y="$auth_c" 'BEGIN {
            printf "%-11s measured CPU per request: %.1f us, with auth %.1f us: +%.1f us (+%.1f%%)\n", a, x, y, y - x, (y - x) / x * 100 }'
    fi
done
