#!/bin/bash
# SPDX-License-Identifier: BSD-2-Clause
#
# metrics.sh - the Prometheus endpoint (issue 10): a real Postfix feeds the
# daemon a known mix of traffic, and curl reads GET /metrics; the values
# must be what was sent.
#
#   - 5 messages from one sender against "3 per hour" -> 3 queued, 2
#     refused at RCPT: decisions_total{policy="per-sender",action="reject"}
#     is 2; 2 messages from a blocked sender refused at MAIL:
#     {policy="blocked",action="reject"} is 2; one message to 2 recipients
#     against a dry-run "at most 1 recipient": {action="dry_run"} is 1
#   - stage_duration_seconds_count for mail, rcpt and eom equals the MAIL
#     and RCPT commands and the messages the clients saw go through; the
#     sessions gauge goes back to 0; redis_duration_seconds_count > 0;
#     build_info has the version; HELP and TYPE lines; Content-Type
#   - config_reloads_total{result="ok"} after SIGUSR1, {result="failed"}
#     after a reload of a broken file; a reload that moves the endpoint
#     says a restart is needed and the endpoint stays where it was
#   - Redis stopped: redis_errors_total grows, redis_breaker_open is 1,
#     and the policy's Redis failures count the messages sent meanwhile
#   - a path other than /metrics is 404, POST is 405; SIGTERM: exit 0
#
# Needs root (Postfix's master), postfix, swaks, redis-server, python3 and
# curl; skips (77) without them.  TAP on stdout.  Runs in about 15 s.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pm_need curl
pm_setup

QUEUED='^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$'
RL_REPLY='550 5.7.1 Too many messages from this sender'
BLOCK_REPLY='550 5.7.1 Sender refused'
METRICS_PORT=$(pm_free_ports 1) || pm_bail "cannot find a free port"
METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
echo "# metrics port $METRICS_PORT"

redis_start || pm_bail "cannot start Redis"
postfix_start || pm_bail "cannot start Postfix"

metrics_config() {  # metrics_config [METRICS-PORT]
	milter_config_head pmmetrics:
	cat <<EOF
metrics = "inet:${1:-$METRICS_PORT}@127.0.0.1";
policies = (
  { name = "blocked"; type = "block"; match = "sender";
    entries = [ "spam@bad.example" ]; action = "reject"; reply = "$BLOCK_REPLY"; },
  { name = "one-rcpt"; type = "recipients"; max = 1; action = "reject";
    reply = "550 5.5.3 Too many recipients"; dry_run = true; },
  { name = "per-sender"; type = "ratelimit"; key = [ "sender" ]; count = "messages";
    limit = 3; window = "1h"; action = "reject"; reply = "$RL_REPLY"; }
);
EOF
}

SCRAPE=
scrape() {  # scrape : GET /metrics into $SCRAPE; 1 when curl fails
	SCRAPE=$(curl -sS --max-time 5 "$METRICS_URL") || { SCRAPE=; return 1; }
}

# The value of one series (exact name and labels) in $SCRAPE; empty if none.
value() {  # value SERIES
	printf '%s\n' "$SCRAPE" | awk -v s="$1" 'index($0, s " ") == 1 { print $2; exit }'
}

# Scrape until SERIES equals WANT (what the client saw happens a moment
# before the daemon's close callback); up to TENTHS/10 s.
wait_value() {  # wait_value SERIES WANT [TENTHS]
	local i=0
	while :; do
		scrape && [ "$(value "$1")" = "$2" ] && return 0
		[ "$i" -ge "${3:-50}" ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

assert_value() {  # assert_value DESC SERIES WANT : after waiting up to 5 s
	wait_value "$2" "$3"
	assert_eq "$1" "$3" "$(value "$2")" "$(printf '%s\n' "$SCRAPE" | grep -F "${2%%\{*}")"
}

CONF=$PM_TMP/metrics.conf
metrics_config >"$CONF"
assert_milter_start "milter starts with metrics on 127.0.0.1:$METRICS_PORT" "$CONF" ||
	pm_bail "the milter did not start"

# ---------------------------------------------------------------- before traffic

scrape
assert_contains "GET /metrics answers before any traffic" \
	"# TYPE policy_milter_decisions_total counter" "$SCRAPE"
version=$("$PM_MILTER_BIN" -V | awk '{ print $2 }')
assert_eq "build_info carries the version ($version)" 1 \
	"$(value "policy_milter_build_info{version=\"$version\"}")" "$SCRAPE"
start=$(value policy_milter_start_time_seconds)
now=$(date +%s)
assert_true "start_time_seconds is the start, in Unix seconds ($start, now $now)" \
	awk -v s="${start:-0}" -v n="$now" 'BEGIN { exit !(s > n - 60 && s <= n + 1) }'
for f in decisions_total:counter checks_total:counter sessions:gauge \
	stage_duration_seconds:histogram redis_duration_seconds:histogram \
	redis_errors_total:counter redis_breaker_open:gauge config_reloads_total:counter \
	build_info:gauge start_time_seconds:gauge; do
	n=policy_milter_${f%%:*}
	if printf '%s\n' "$SCRAPE" | grep -qx "# TYPE $n ${f#*:}" &&
		printf '%s\n' "$SCRAPE" | grep -q "^# HELP $n "; then
		pm_ok "$n has HELP and TYPE ${f#*:}"
	else
		pm_not_ok "$n has HELP and TYPE ${f#*:}" "$(printf '%s\n' "$SCRAPE" | grep "$n" | head -n 5)"
	fi
done
ctype=$(curl -sS -o /dev/null -w '%{content_type}' "$METRICS_URL")
assert_match "Content-Type is text/plain; version=0.0.4 ($ctype)" \
	'^text/plain; version=0\.0\.4' "$ctype"
assert_eq "GET /other is 404" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/other")"
assert_eq "GET / is 404" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT/")"
assert_eq "POST /metrics is 405" 405 \
	"$(curl -s -o /dev/null -w '%{http_code}' -X POST "$METRICS_URL")"

# ---------------------------------------------------------------- traffic

# Connections before the traffic (the harness' port probes open some).
scrape
connect0=$(value 'policy_milter_stage_duration_seconds_count{stage="connect"}')
close0=$(value 'policy_milter_stage_duration_seconds_count{stage="close"}')
pm_diag "before the traffic: $connect0 connect, $close0 close callbacks"

ALL=
send() {  # send smtp_send-options... : one session; its transcript is kept in ALL
	local t
	t=$(smtp_send "$@")
	ALL="$ALL$t"$'\n'
	LAST=$t
}

limited_ok=0 limited_refused=0
for i in 1 2 3 4 5; do
	send --from limited@example.org --body "message $i"
	if printf '%s\n' "$(smtp_reply "$LAST" DOT)" | grep -Eq "$QUEUED"; then
		limited_ok=$((limited_ok + 1))
	elif [ "$(smtp_reply "$LAST" RCPT)" = "$RL_REPLY" ]; then
		limited_refused=$((limited_refused + 1))
	fi
done
assert_eq "client side: 5 from one sender -> 3 queued, 2 refused at RCPT" "3 2" \
	"$limited_ok $limited_refused" "$LAST"
blocked=0
for i in 1 2; do
	send --from spam@bad.example --body "spam $i"
	[ "$(smtp_reply "$LAST" MAIL)" = "$BLOCK_REPLY" ] && blocked=$((blocked + 1))
done
assert_eq "client side: 2 from the blocked sender refused at MAIL" 2 "$blocked" "$LAST"
send --from two@example.org --to a@example.net --to b@example.net --body "two rcpts"
assert_reply_match "client side: the message to 2 recipients is queued (dry run)" \
	"$LAST" DOT 1 "$QUEUED"

n_mail=$(smtp_ncmds "$ALL" MAIL)
n_rcpt=$(smtp_ncmds "$ALL" RCPT)
n_queued=$(printf '%s\n' "$ALL" | grep -cE '^<-  250 2\.0\.0 Ok: queued as ')
n_sessions=$(printf '%s\n' "$ALL" | grep -c '^=== Connected to')
pm_diag "sent: $n_sessions sessions, $n_mail MAIL, $n_rcpt RCPT, $n_queued queued"

D=policy_milter_decisions_total
wait_value policy_milter_sessions 0
printf '%s\n' "$SCRAPE" >"$PM_TMP/scrape.txt"   # for a look (PM_KEEP_TMP=1)
assert_value "decisions: per-sender reject = 2" "$D{policy=\"per-sender\",action=\"reject\"}" 2
assert_value "decisions: per-sender accept = 0" "$D{policy=\"per-sender\",action=\"accept\"}" 0
assert_value "decisions: blocked reject = 2" "$D{policy=\"blocked\",action=\"reject\"}" 2
assert_value "decisions: one-rcpt dry_run = 1" "$D{policy=\"one-rcpt\",action=\"dry_run\"}" 1
assert_value "decisions: one-rcpt reject = 0 (dry run)" \
	"$D{policy=\"one-rcpt\",action=\"reject\"}" 0
assert_value "decisions: nothing tempfailed" "$D{policy=\"per-sender\",action=\"tempfail\"}" 0
S=policy_milter_stage_duration_seconds_count
assert_value "sessions gauge back to 0 after the sessions closed" policy_milter_sessions 0
assert_value "stage rcpt: one observation per RCPT the clients sent ($n_rcpt)" \
	"$S{stage=\"rcpt\"}" "$n_rcpt"
assert_value "stage mail: one observation per MAIL ($n_mail)" "$S{stage=\"mail\"}" "$n_mail"
assert_value "stage eom: one observation per queued message ($n_queued)" \
	"$S{stage=\"eom\"}" "$n_queued"
assert_value "stage connect: one observation per session ($n_sessions)" \
	"$S{stage=\"connect\"}" $((connect0 + n_sessions))
assert_value "stage close: one observation per session ($n_sessions)" \
	"$S{stage=\"close\"}" $((close0 + n_sessions))
assert_value "stage rcpt: the +Inf bucket equals the count" \
	"policy_milter_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"+Inf\"}" "$n_rcpt"
rd=$(value policy_milter_redis_duration_seconds_count)
assert_true "redis_duration_seconds_count > 0 (${rd:-none})" [ "${rd:-0}" -gt 0 ]
assert_eq "no Redis error while Redis runs" 0 \
	"$(printf '%s\n' "$SCRAPE" | awk '/^policy_milter_redis_errors_total\{/ { s += $2 } END { print s + 0 }')"
assert_eq "redis_breaker_open is 0 while Redis runs" 0 "$(value policy_milter_redis_breaker_open)"
assert_not_contains "no address from the traffic in any label" "example.org" "$SCRAPE"

# ---------------------------------------------------------------- reloads

R=policy_milter_config_reloads_total
assert_eq "reloads: none yet" "0 0" "$(value "$R{result=\"ok\"}") $(value "$R{result=\"failed\"}")"
milter_reload
assert_value "SIGUSR1: config_reloads_total{result=\"ok\"} = 1" "$R{result=\"ok\"}" 1
cp "$CONF" "$CONF.good"
echo 'policies = ( { name = "broken"; type = "nosuch"; } );' >>"$CONF"
milter_reload
assert_value "SIGUSR1 with a broken file: {result=\"failed\"} = 1" "$R{result=\"failed\"}" 1
assert_eq "the failed reload leaves {result=\"ok\"} at 1" 1 "$(value "$R{result=\"ok\"}")"
other_port=$(pm_free_ports 1)
metrics_config "$other_port" >"$CONF"
milter_reload
assert_value "a reload that moves the endpoint succeeds" "$R{result=\"ok\"}" 2
assert_grep "... and says that a restart is needed" \
	"metrics takes effect only after a restart; the endpoint stays on inet:$METRICS_PORT@127.0.0.1" \
	"$MILTER_LOG"
assert_true "... and the endpoint stays where it was" scrape
cp "$CONF.good" "$CONF"

# ---------------------------------------------------------------- Redis stopped

errors_before=$(printf '%s\n' "$SCRAPE" |
	awk '/^policy_milter_redis_errors_total\{/ { s += $2 } END { print s + 0 }')
F=policy_milter_policy_redis_failures_total
fail_before=$(value "$F{policy=\"per-sender\"}")
redis_stop
down_ok=0
for i in 1 2 3 4; do
	send --from down$i@example.org --body "redis down $i"
	smtp_reply "$LAST" DOT | grep -Eq "$QUEUED" && down_ok=$((down_ok + 1))
done
assert_eq "Redis stopped: 4 messages accepted (on_redis_error = accept)" 4 "$down_ok" "$LAST"
scrape
errors_after=$(printf '%s\n' "$SCRAPE" |
	awk '/^policy_milter_redis_errors_total\{/ { s += $2 } END { print s + 0 }')
pm_diag "redis errors: $(printf '%s\n' "$SCRAPE" | grep '^policy_milter_redis_errors_total{' | paste -sd ' ')"
assert_true "Redis stopped: redis_errors_total grew by at least 4 ($errors_before -> $errors_after)" \
	[ "$errors_after" -ge $((errors_before + 4)) ]
assert_true "Redis stopped: connect errors counted" \
	[ "$(value 'policy_milter_redis_errors_total{kind="connect"}')" -ge 1 ]
assert_value "Redis stopped: redis_breaker_open = 1" policy_milter_redis_breaker_open 1
assert_value "Redis stopped: per-sender's Redis failures grew by the 4 messages" \
	"$F{policy=\"per-sender\"}" $((fail_before + 4))

# The endpoint's port taken (by the running daemon): a second daemon, on
# another milter port, refuses to start and says why.
ports=$(pm_free_ports 1)
MILTER_PORT=$ports metrics_config >"$PM_TMP/second.conf"
"$PM_MILTER_BIN" -f -c "$PM_TMP/second.conf" >"$PM_TMP/inuse.log" 2>&1 &
pid=$!
pm_wait_gone "$pid" 50 || kill -TERM "$pid"
wait "$pid"
rc=$?
assert_eq "metrics port in use: a second daemon exits with status 1" 1 "$rc" \
	"$(cat "$PM_TMP/inuse.log")"
assert_grep "metrics port in use: its log says why" \
	"cannot listen for metrics on inet:$METRICS_PORT@127\.0\.0\.1: Address already in use" \
	"$PM_TMP/inuse.log"

assert_milter_stop "SIGTERM: exit status 0, no sanitizer report"
if curl -s --max-time 2 -o /dev/null "$METRICS_URL"; then
	pm_not_ok "the endpoint is gone after the stop"
else
	pm_ok "the endpoint is gone after the stop"
fi

pm_finish
