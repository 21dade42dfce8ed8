#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A redis run: start redis-server on 127.0.0.1, write a known data set with
# redis-cli, run redis-benchmark SET and GET with a fixed request count, read
# everything back with redis-cli, stop the server.
#
#   [SERVER_PRELOAD=lib.so] workloads/redis.sh [REQUESTS]
#
# SERVER_PRELOAD is put in LD_PRELOAD of redis-server only; the clients
# (redis-cli, redis-benchmark) run on the C library's malloc. Do not set
# LD_PRELOAD for the script itself: it would load the library into every
# client too. REQUESTS defaults to 100000 per test. REDIS_PORT is the
# first port tried (default: one derived from the script's pid); a port in
# use, or answered by a server that is not ours, moves on to the next.
#
# stdout depends only on REQUESTS (nothing random, timed or per-run), so two
# runs on two mallocs print the same text. The measurements go to stderr,
# one per line, as `measure NAME VALUE`:
#   measure set_rps  requests per second of redis-benchmark's SET
#   measure get_rps  requests per second of redis-benchmark's GET
#   measure server_vmhwm_kib  redis-server's peak resident memory (VmHWM)
# Exit status 0 when everything read back matched, 1 otherwise.
set -eu

requests=${1:-100000}
case $requests in
'' | *[!0-9]*)
	echo "redis.sh: REQUESTS must be a whole number, got '$requests'" >&2
	exit 2
	;;
esac
clients=50
pipeline=16
keyspace=10000
datasize=100
checks=1000

for tool in redis-server redis-cli redis-benchmark; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "redis.sh: $tool is not installed: run \`cargo xtask setup\` (Debian packages redis-server and redis-tools)" >&2
		exit 2
	fi
done

dir=$(mktemp -d)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# Start the server on REDIS_PORT or a port derived from our pid; move on
# when it is taken.
port=${REDIS_PORT:-$((20000 + $$ % 20000))}
case $port in
'' | *[!0-9]*)
	echo "redis.sh: REDIS_PORT must be a port number, got '$port'" >&2
	exit 2
	;;
esac
started=no
for attempt in 1 2 3 4 5; do
	: >"$dir/server.log"
	env ${SERVER_PRELOAD:+LD_PRELOAD="$SERVER_PRELOAD"} redis-server \
		--bind 127.0.0.1 --port "$port" --save '' --appendonly no \
		--daemonize no --dir "$dir" --logfile "$dir/server.log" &
	pid=$!
	i=0
	while [ $i -lt 100 ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		# The server that answers must be ours (its process_id), not one
		# another run left on this port while ours failed to bind it.
		owner=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
			tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
		if [ "$owner" = "$pid" ]; then
			started=yes
			break
		fi
		[ -n "$owner" ] && break
		sleep 0.05
		i=$((i + 1))
	done
	[ $started = yes ] && break
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
	port=$((port + 1))
done
if [ $started != yes ]; then
	echo "redis.sh: redis-server did not start on 127.0.0.1 (5 ports from $((port - 5)) tried; set REDIS_PORT to a free one); its log:" >&2
	cat "$dir/server.log" >&2
	exit 1
fi
cli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# The known data set: strings, a list and a hash, on an empty server.
cli flushdb >/dev/null
i=1
while [ $i -le $checks ]; do
	echo "SET check:$i value-$i-$(printf '%0*d' $((i % 50)) 0)"
	echo "RPUSH checklist item-$i"
	echo "HSET checkhash field-$i $((i * i))"
	i=$((i + 1))
done | cli >/dev/null

redis-benchmark -h 127.0.0.1 -p "$port" -n "$requests" -c $clients -P $pipeline \
	-r $keyspace -d $datasize -t set,get --csv -q >"$dir/bench.csv"
for t in SET GET; do
	rps=$(awk -F'"' -v t=$t '$2 == t { print $4 }' "$dir/bench.csv")
	if [ -z "$rps" ]; then
		echo "redis.sh: redis-benchmark printed no $t result; its output:" >&2
		cat "$dir/bench.csv" >&2
		exit 1
	fi
	echo "measure $(echo $t | tr A-Z a-z)_rps $rps" >&2
done

# Read back the known data set.
status=0
got=$(i=1; while [ $i -le $checks ]; do echo "GET check:$i"; i=$((i + 1)); done | cli)
want=$(i=1; while [ $i -le $checks ]; do echo "value-$i-$(printf '%0*d' $((i % 50)) 0)"; i=$((i + 1)); done)
if [ "$got" = "$want" ]; then
	echo "redis: $checks strings read back"
else
	echo "redis: the strings read back differ from those written" && status=1
fi
got=$(cli lrange checklist 0 -1)
want=$(i=1; while [ $i -le $checks ]; do echo "item-$i"; i=$((i + 1)); done)
if [ "$got" = "$want" ]; then
	echo "redis: list of $checks read back"
else
	echo "redis: the list read back differs from the one written" && status=1
fi
got=$(cli hgetall checkhash | paste - - | sort)
want=$(i=1; while [ $i -le $checks ]; do echo "field-$i	$((i * i))"; i=$((i + 1)); done | sort)
if [ "$got" = "$want" ]; then
	echo "redis: hash of $checks read back"
else
	echo "redis: the hash read back differs from the one written" && status=1
fi

# redis-benchmark's SET writes one payload of $datasize bytes to random keys:
# every key it wrote holds that same value. Which keys, and the payload's
# characters, are random, so only the verdict is printed.
cli --scan --pattern 'key:*' >"$dir/keys"
if [ ! -s "$dir/keys" ]; then
	echo "redis: redis-benchmark's SET left no keys" && status=1
else
	bad=$(sed 's/^/GET /' "$dir/keys" | cli | awk -v d=$datasize '
		NR == 1 { want = $0 } length($0) != d || $0 != want { bad++ }
		END { print bad + 0 }')
	if [ "$bad" = 0 ]; then
		echo "redis: every key of redis-benchmark's SET holds the same $datasize bytes"
	else
		echo "redis: $bad keys of redis-benchmark's SET hold a wrong value" && status=1
	fi
fi

hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
echo "measure server_vmhwm_kib $hwm" >&2
exit $status
