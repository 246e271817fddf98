#!/bin/sh
# The guest side of `cargo xtask vm-test`: POSIX sh, run by selfheal-vm-runner.service inside a
# Debian bookworm guest whose PID 1 is systemd, with the payload share mounted at /payload.
#
# Protocol (the host parses these lines on the serial console; nothing else there matters):
#   SELFHEAL-VM ready <facts>             the guest booted and the scenarios begin
#   SELFHEAL-VM start <scenario>          a scenario begins (the host times it)
#   SELFHEAL-SCENARIO <scenario> PASS|FAIL <detail>
#   SELFHEAL-VM done                      all scenarios ran; the guest powers off next
#
# The host writes the scenario names to run, one a line, to /payload/scenarios. Scenario
# `some-name` is the function scenario_some_name below; it ends by calling `pass` or `fail`
# exactly once, then returns. Scenarios run in order and may rely on earlier ones (everything
# after agent-starts needs the installed agent). After the last one, the journal, the agent's
# status and the units' state are saved to /payload/out for the host's run directory.
#
# The misbehaving services come from /payload/units (tests/vm/units) and run
# /payload/selfheal-workload (the tests crate's binary) where they need more than sh; the
# agent's config (tests/vm/selfheal.toml) already names them, so installing one and reloading
# systemd is all it takes for the agent to watch it. A scenario stops the units it started.
set -u

PAYLOAD=/payload
OUT=$PAYLOAD/out
CONFIG=/etc/selfheal/selfheal.toml
# Only with a unit file under test (SELFHEAL_VM_UNIT): it overrides the packaged one.
UNIT_FILE=/etc/systemd/system/selfheal.service
# Where the package installs the binary (and its unit's ExecStart runs it).
AGENT=/usr/bin/selfheal-agent
# Where the test units of tests/vm/units expect selfheal-workload.
WORKLOAD=/usr/local/lib/selfheal-vm/selfheal-workload

# --- reporting -------------------------------------------------------------------------------

# Markers go straight to the serial console, whole lines, so that the host sees them even if
# the journal's forwarding is slow or off.
say() {
    printf '%s\n' "$*" > /dev/ttyS0
}

pass() {
    RESULT=PASS
    say "SELFHEAL-SCENARIO $CURRENT PASS $*"
}

fail() {
    RESULT=FAIL
    say "SELFHEAL-SCENARIO $CURRENT FAIL $*"
}

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# wait_until SECONDS COMMAND...: runs COMMAND every 100 ms until it succeeds (status 0) or
# SECONDS have passed (status 1).
wait_until() {
    deadline=$(($(now_ms) + $1 * 1000))
    shift
    while ! "$@" > /dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# --- the agent and the units -----------------------------------------------------------------

# The agent's JSON status (empty when it does not answer).
agent_status() {
    "$AGENT" status --json 2> /dev/null
}

# agent_unit UNIT FILTER: a jq FILTER applied to the agent's view of UNIT.
agent_unit() {
    agent_status | jq -r --arg u "$1" ".units[] | select(.name == \$u) | $2"
}

agent_sees_active() {
    [ "$(agent_unit "$1" .active_state)" = active ]
}

agent_sees_main_pid() {
    [ "$(agent_unit "$1" .main_pid)" = "$2" ]
}

# Restarts the agent did and reports done.
agent_restarts() {
    agent_unit "$1" .restarts
}

agent_restarts_above() {
    [ "$(agent_restarts "$1")" -gt "$2" ] 2> /dev/null
}

# What systemd says about UNIT, and its last log lines, for a failure's detail.
unit_state() {
    echo "[systemd: $(systemctl show -P Type "$1") unit $(systemctl is-active "$1")," \
        "Result=$(systemctl show -P Result "$1"), NRestarts=$(systemctl show -P NRestarts "$1");" \
        "its last log lines: $(journalctl -b -u "$1" -n 4 --no-pager -o cat | cut -c 1-160 | tr '\n' '|')]"
}

main_pid() {
    systemctl show -P MainPID "$1"
}

# When UNIT's current main process started, in ms since the epoch (systemd's own timestamp,
# not when a poll noticed it: under TCG one `status` call takes a good part of a second).
main_started_ms() {
    ts=$(systemctl show -P ExecMainStartTimestamp --timestamp=us+utc "$1")
    date -d "${ts#* }" +%s%3N
}

# When the agent recorded its last decision about PROBLEM for UNIT, in ms since the epoch, from
# its audit log.
decided_ms() {
    jq -r --arg u "$1" --arg p "$2" \
        'select(.event == "decision" and .unit == $u and .problem == $p) | .at_ms' \
        /var/log/selfheal/actions.jsonl 2> /dev/null | tail -n 1
}

restarted_with_new_pid() {
    new=$(main_pid "$1")
    [ "$new" != 0 ] && [ "$new" != "$2" ] && systemctl is-active --quiet "$1"
}

# Installs the agent as an operator would: `apt install ./selfheal_….deb` (which installs the
# binary, the unit, a default config, and enables and starts the service), then the test
# config over the default one, and a restart to read it. With SELFHEAL_VM_UNIT on the host, a
# unit file under test overrides the packaged one from /etc/systemd/system. On failure prints
# why and returns 1.
install_agent() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$PAYLOAD/selfheal.deb" 2>&1 || return 1
    if [ -f "$PAYLOAD/selfheal.service.override" ]; then
        install -D -m 0644 "$PAYLOAD/selfheal.service.override" "$UNIT_FILE" || return 1
        systemctl daemon-reload || return 1
    fi
    install -D -m 0644 "$PAYLOAD/selfheal.toml" "$CONFIG" || return 1
    "$AGENT" check-config "$CONFIG" 2>&1 || return 1
    systemctl restart selfheal.service 2>&1 || return 1
}

# agent_count UNIT CONDITION: how many of the agent's history records of UNIT meet the jq
# CONDITION (e.g. '.kind == "decision" and .problem == "stopped"').
agent_count() {
    agent_unit "$1" "[.history[] | select($2)] | length"
}

agent_count_above() {
    [ "$(agent_count "$1" "$2")" -gt "$3" ] 2> /dev/null
}

# The agent's last history records of UNIT, for a failure's detail.
agent_tail() {
    agent_unit "$1" "[.history[-${2:-4}:][] | \"\(.kind) \(.problem // .action // .message // .pid) \(.outcome // .action // \"\") \(.detail // .reason // \"\")\"] | join(\" | \")"
}

# The evidence of the agent's last decision about PROBLEM for UNIT, from its audit log (a
# delayed action's own decision, taken when its backoff ends, carries none).
audit_evidence() {
    jq -r --arg u "$1" --arg p "$2" \
        'select(.event == "decision" and .unit == $u and .problem == $p and .evidence != "") | .evidence' \
        /var/log/selfheal/actions.jsonl 2> /dev/null | tail -n 1
}

# Clears what earlier scenarios left in the agent's policy for UNIT (incident, backoff, restart
# budget), as an operator would with `selfheal-agent reset`: each scenario starts from a unit
# in good standing.
agent_reset() {
    "$AGENT" reset "$1" > /dev/null 2>&1
}

# install_test_unit NAME: installs /payload/units/NAME (and the workload binary its ExecStart
# may name) and reloads systemd. On failure prints why and returns 1.
install_test_unit() {
    if [ ! -x "$WORKLOAD" ]; then
        [ -f "$PAYLOAD/selfheal-workload" ] || {
            echo "the payload has no selfheal-workload binary (cargo build -p selfheal-tests)"
            return 1
        }
        install -D -m 0755 "$PAYLOAD/selfheal-workload" "$WORKLOAD" || return 1
    fi
    mkdir -p /run/selfheal-vm
    install -m 0644 "$PAYLOAD/units/$1" "/etc/systemd/system/$1" || return 1
    systemctl daemon-reload 2>&1 || return 1
}

# start_test_unit NAME: installs and starts NAME, and waits for the agent to watch it running.
start_test_unit() {
    install_test_unit "$1" || return 1
    systemctl start "$1" 2>&1 || return 1
    wait_until 30 agent_sees_active "$1" || {
        echo "the agent does not report $1 active 30 s after its start" \
            "(it says '$(agent_unit "$1" .active_state)')"
        return 1
    }
}

cgroup_file() {
    cat "/sys/fs/cgroup/system.slice/$1/$2" 2> /dev/null
}

cgroup_file_is() {
    [ "$(cgroup_file "$1" "$2")" = "$3" ]
}

# --- scenarios -------------------------------------------------------------------------------

# The guest is what the agent will live in: systemd as PID 1, a pure cgroup v2 tree, BTF.
scenario_environment() {
    pid1=$(cat /proc/1/comm)
    cgroupfs=$(stat -fc %T /sys/fs/cgroup)
    if [ "$pid1" != systemd ]; then
        fail "PID 1 is $pid1, not systemd"
    elif [ "$cgroupfs" != cgroup2fs ]; then
        fail "/sys/fs/cgroup is $cgroupfs, not a pure cgroup v2 tree (cgroup2fs)"
    elif [ ! -e /sys/kernel/btf/vmlinux ]; then
        fail "the kernel has no BTF (/sys/kernel/btf/vmlinux)"
    else
        pass "$(systemctl --version | head -n 1) as PID 1, pure cgroup v2, kernel $(uname -r) with BTF"
    fi
}

# The shipped unit starts the agent (with Type=notify, active means it said READY=1), it is
# enabled, the journal shows its start, and it answers `status` watching its units.
scenario_agent_starts() {
    started=$(now_ms)
    if ! why=$(install_agent); then
        fail "apt install of the package failed: $(echo "$why" | tail -n 3 | tr '\n' ' ')" \
            "$(unit_state selfheal.service)"
        return
    fi
    type=$(systemctl show -P Type selfheal.service)
    if ! wait_until 60 systemctl is-active --quiet selfheal.service; then
        fail "selfheal.service is not active 60 s after enable --now: $(unit_state selfheal.service)"
        return
    fi
    active_ms=$(($(now_ms) - started))
    if ! systemctl is-enabled --quiet selfheal.service; then
        fail "selfheal.service is active but not enabled: $(systemctl is-enabled selfheal.service)"
        return
    fi
    if ! journalctl -b -u selfheal.service --no-pager -o cat | grep -q '^Started '; then
        fail "the journal does not show systemd starting selfheal.service"
        return
    fi
    if ! wait_until 60 agent_sees_active nginx.service; then
        fail "the agent does not report nginx.service active within 60 s: status says" \
            "'$(agent_unit nginx.service '.active_state + " " + (.history[-1] | tostring)')'"
        return
    fi
    hooks=$(agent_status | jq -r '"\([.kernel.hooks[] | select(.attached)] | length)/\(.kernel.hooks | length)"')
    # Every kernel hook attaches on the kernel operators run (the verifier's log, if one is
    # refused, is in the hook's detail and the journal).
    refused=$(agent_status | jq -r '[.kernel.hooks[] | select(.attached | not)
        | .hook + ": " + (.detail | split("\n") | if length > 8 then .[0:2] + .[-6:] else . end | join(" / "))] | join("; ")')
    if [ -n "$refused" ]; then
        fail "selfheal.service is active but kernel hooks $hooks attached; refused: $(echo "$refused" | cut -c 1-1500)"
        return
    fi
    # The hardened unit as the running manager scores it (issue 16: at most 4.0).
    exposure=$(systemd-analyze security --no-pager selfheal.service 2>&1 |
        sed -n 's/.*Overall exposure level for selfheal.service: \([0-9.]*\).*/\1/p')
    if [ -z "$exposure" ] || awk -v e="$exposure" 'BEGIN { exit !(e > 4.0) }'; then
        fail "systemd-analyze security scores selfheal.service '${exposure:-?}', above 4.0"
        return
    fi
    pass "selfheal.service (Type=$type) installed from the package and active in $active_ms ms, enabled," \
        "started in the journal; status answers: kernel hooks attached $hooks, nginx.service active;" \
        "exposure $exposure"
}

# nginx's main process is SIGKILLed: the agent (not systemd: nginx.service has no Restart=)
# restarts it, and says so in its status.
scenario_crash_restart() {
    unit=nginx.service
    pid=$(main_pid $unit)
    if [ "$pid" = 0 ]; then
        fail "$unit has no main process to kill ($(systemctl is-active $unit))"
        return
    fi
    if ! wait_until 30 agent_sees_main_pid $unit "$pid"; then
        fail "the agent does not report $unit's main pid $pid (it says $(agent_unit $unit .main_pid))"
        return
    fi
    restarts=$(agent_restarts $unit)
    systemd_restarts=$(systemctl show -P NRestarts $unit)
    killed=$(now_ms)
    kill -KILL "$pid"
    if ! wait_until 30 restarted_with_new_pid $unit "$pid"; then
        fail "$unit not running again 30 s after SIGKILL of $pid: $(systemctl is-active $unit)," \
            "main pid $(main_pid $unit); agent history: $(agent_unit $unit '.history[-3:] | tostring')"
        return
    fi
    back_ms=$(($(now_ms) - killed))
    if ! wait_until 10 agent_restarts_above $unit "$restarts"; then
        fail "$unit is back but the agent reports no restart done (restarts still $restarts):" \
            "$(agent_unit $unit '.history[-3:] | tostring')"
        return
    fi
    if [ "$(systemctl show -P NRestarts $unit)" != "$systemd_restarts" ]; then
        fail "systemd restarted $unit itself (NRestarts changed): the test proves nothing"
        return
    fi
    exit_seen=$(agent_unit $unit "[.history[] | select(.kind == \"exit\" and .pid == $pid)][0].signal_name")
    if [ "$exit_seen" != SIGKILL ]; then
        fail "the agent's history has no exit of $pid by SIGKILL (found: $exit_seen)"
        return
    fi
    started=$(main_started_ms $unit)
    pass "main pid $pid killed by SIGKILL; the agent recorded it and restarted $unit:" \
        "new main pid $(main_pid $unit) started $((started - killed)) ms after the kill (systemd's" \
        "ExecMainStartTimestamp; active by polling after $back_ms ms), systemd's NRestarts" \
        "unchanged ($systemd_restarts)"
}

# Every process of nginx.service is stopped with SIGSTOP (the stall detector's `stopped` means
# the whole unit: a stopped master whose workers still serve is not a stall). With
# [unit.stall] threshold = "5s" the agent reports it and restarts the unit.
scenario_sigstop() {
    unit=nginx.service
    agent_reset $unit
    pid=$(main_pid $unit)
    if [ "$pid" = 0 ] || ! wait_until 30 agent_sees_main_pid $unit "$pid"; then
        fail "$unit is not running under the agent's eye (main pid $pid, agent says" \
            "$(agent_unit $unit .main_pid)): $(unit_state $unit)"
        return
    fi
    stalls=$(agent_count $unit '.kind == "decision" and .problem == "stopped"')
    restarts=$(agent_restarts $unit)
    stopped=$(now_ms)
    systemctl kill --signal=SIGSTOP $unit
    tasks=$(wc -l < /sys/fs/cgroup/system.slice/$unit/cgroup.procs)
    if ! wait_until 60 agent_count_above $unit '.kind == "decision" and .problem == "stopped"' "$stalls"; then
        fail "$unit's $tasks processes stopped, but no 'stopped' decision within 60 s; the agent's" \
            "stalls: $(agent_unit $unit '.view.stalls | tostring'), tasks by state:" \
            "$(agent_unit $unit '.view.sched.states | tostring'); last records: $(agent_tail $unit)"
        systemctl kill --signal=SIGCONT $unit
        return
    fi
    detected_ms=$(($(now_ms) - stopped))
    if ! wait_until 60 restarted_with_new_pid $unit "$pid"; then
        fail "'stopped' decided after $detected_ms ms, but $unit is not running again with a new" \
            "main pid 60 s later: $(unit_state $unit); last records: $(agent_tail $unit)"
        systemctl kill --signal=SIGCONT $unit
        return
    fi
    back_ms=$(($(now_ms) - stopped))
    if ! wait_until 10 agent_restarts_above $unit "$restarts"; then
        fail "$unit is back with a new main pid, but the agent reports no restart done:" \
            "$(agent_tail $unit)"
        return
    fi
    # The polls above add their own latency; the audit log and systemd timestamp the events.
    decided=$(decided_ms $unit stopped)
    started=$(main_started_ms $unit)
    pass "all $tasks processes of $unit stopped (main pid $pid); the agent decided 'stopped'" \
        "$((decided - stopped)) ms after the SIGSTOP (audit log; threshold 5 s) and restarted it:" \
        "new main pid $(main_pid $unit) started after $((started - stopped)) ms (systemd's" \
        "ExecMainStartTimestamp); seen by polling after $detected_ms / $back_ms ms"
}

# A service leaking a file descriptor every 200 ms under LimitNOFILE=512: the leak detector
# ([unit.leak] window = "20s") reports fd_leak with the time left before exhaustion, and the
# agent restarts the service before it runs out.
scenario_fd_leak() {
    unit=selfheal-vm-fdleak.service
    rm -f /run/selfheal-vm/fdleak-exhausted
    if ! why=$(start_test_unit $unit); then
        fail "cannot start $unit: $why $(unit_state $unit)"
        return
    fi
    pid=$(main_pid $unit)
    started=$(now_ms)
    if ! wait_until 120 agent_count_above $unit '.kind == "decision" and .problem == "fd_leak"' 0; then
        fail "no fd_leak decision for $unit within 120 s: $(ls /proc/"$pid"/fd 2> /dev/null | wc -l)" \
            "fds open; the agent's resources: $(agent_unit $unit '.view.resources | tostring');" \
            "last records: $(agent_tail $unit)"
        systemctl stop $unit
        return
    fi
    detected_ms=$(($(now_ms) - started))
    evidence=$(audit_evidence $unit fd_leak)
    if ! wait_until 60 restarted_with_new_pid $unit "$pid"; then
        fail "fd_leak decided ($evidence) but $unit was not restarted with a new main pid within" \
            "60 s: $(unit_state $unit); last records: $(agent_tail $unit)"
        systemctl stop $unit
        return
    fi
    back_ms=$(($(now_ms) - started))
    new_pid=$(main_pid $unit)
    systemctl stop $unit
    if [ -e /run/selfheal-vm/fdleak-exhausted ]; then
        fail "$unit ran out of file descriptors before the agent restarted it ($evidence)"
    elif ! echo "$evidence" | grep -q 'limit 512.*exhaustion in'; then
        fail "fd_leak decided and $unit restarted, but the evidence predicts no exhaustion of its" \
            "512 fds: '$evidence'"
    else
        pass "fd_leak found $detected_ms ms after the start ($evidence); $unit restarted" \
            "(main pid $pid → $new_pid) at $back_ms ms, before exhaustion"
    fi
}

# Two busy loops share CPUQuota=10% (cpu.max "10000 100000") with MemoryMax=64M: the stall
# detector reports the unit starved, and `scale` raises both by 1.5 through systemd
# (SetUnitProperties); once the loops go idle, the unit steps back down after
# [policy] cooldown = "20s" (when the step is verified) and [policy.scale] step_down_after
# = "10s".
scenario_cpu_scale() {
    unit=selfheal-vm-busy.service
    base_cpu="10000 100000"
    base_memory=$((64 << 20))
    mkdir -p /run/selfheal-vm && touch /run/selfheal-vm/spin
    if ! why=$(install_test_unit $unit && systemctl start $unit 2>&1); then
        fail "cannot start $unit: $why $(unit_state $unit)"
        return
    fi
    started=$(now_ms)
    # Read at once: the agent needs starved_for (5 s) of starvation before it changes anything.
    if ! cgroup_file_is $unit cpu.max "$base_cpu" || ! cgroup_file_is $unit memory.max $base_memory; then
        fail "$unit starts with cpu.max '$(cgroup_file $unit cpu.max)' and memory.max" \
            "'$(cgroup_file $unit memory.max)', not '$base_cpu' and $base_memory"
        systemctl stop $unit
        return
    fi
    if ! wait_until 90 cgroup_file_is $unit cpu.max "15000 100000"; then
        fail "cpu.max still '$(cgroup_file $unit cpu.max)' 90 s after the start; the agent's" \
            "scheduler view: $(agent_unit $unit '.view.sched | tostring'); stalls:" \
            "$(agent_unit $unit '.view.stalls | tostring'); last records: $(agent_tail $unit)"
        systemctl stop $unit
        return
    fi
    up_ms=$(($(now_ms) - started))
    # The work stops: the starvation ends, and the scale step is undone after step_down_after.
    rm -f /run/selfheal-vm/spin
    scaled_memory=$(cgroup_file $unit memory.max)
    starved=$(agent_count $unit '.kind == "decision" and .problem == "starved"')
    if [ "$scaled_memory" != $((base_memory * 3 / 2)) ]; then
        fail "cpu.max scaled to 15000 after $up_ms ms but memory.max is $scaled_memory, not" \
            "$((base_memory * 3 / 2)) (64M × 1.5)"
        systemctl stop $unit
        return
    fi
    if [ "$starved" -lt 1 ]; then
        fail "cpu.max scaled, but the agent's history has no 'starved' decision: $(agent_tail $unit)"
        systemctl stop $unit
        return
    fi
    idle=$(now_ms)
    if ! wait_until 120 cgroup_file_is $unit cpu.max "$base_cpu"; then
        fail "scaled up after $up_ms ms, but cpu.max is still '$(cgroup_file $unit cpu.max)' 120 s" \
            "after the loops went idle; stalls: $(agent_unit $unit '.view.stalls | tostring');" \
            "last records: $(agent_tail $unit 6)"
        systemctl stop $unit
        return
    fi
    down_ms=$(($(now_ms) - idle))
    memory=$(cgroup_file $unit memory.max)
    systemctl stop $unit
    if [ "$memory" != $base_memory ]; then
        fail "cpu.max stepped back down but memory.max is $memory, not $base_memory"
        return
    fi
    pass "starved under CPUQuota=10%: scaled after $up_ms ms to cpu.max '15000 100000' and" \
        "memory.max $scaled_memory (×1.5); back to '$base_cpu' and $base_memory $down_ms ms after" \
        "the loops went idle"
}

# reach HOST PORT: whether a TCP connection from this process (the runner's unit, not
# quarantined) succeeds.
reach() {
    timeout 5 bash -c "exec 3<> /dev/tcp/$1/$2" 2> /dev/null
}

# The client's last connection attempt: "ok N" or "fail N".
client_state() {
    cat /run/selfheal-vm/client.state 2> /dev/null
}

# client_tries VERDICT AFTER: the client's last try had VERDICT and came after try AFTER.
client_tries() {
    set -- "$1" "$2" $(client_state)
    [ "${3:-}" = "$1" ] && [ "${4:-0}" -gt "$2" ]
}

client_try() {
    set -- $(client_state)
    echo "${2:-0}"
}

# An operator-written detector ([[unit.detector]], a command reading a flag file) raises the
# custom kind `compromised`, whose ladder is ["isolate"] with isolation = ["network"]: the
# client unit loses the network, loopback included (quarantine_allow_loopback = false), while
# other processes still reach nginx; `selfheal-agent release` gives it back.
scenario_quarantine() {
    unit=selfheal-vm-client.service
    flag=/run/selfheal-vm/compromised
    rm -f $flag
    if ! systemctl is-active --quiet nginx.service; then
        fail "nginx.service, the server the client talks to, is not active: $(unit_state nginx.service)"
        return
    fi
    if ! why=$(start_test_unit $unit); then
        fail "cannot start $unit: $why $(unit_state $unit)"
        return
    fi
    if ! wait_until 30 client_tries ok 0; then
        fail "$unit does not reach nginx on 127.0.0.1:80 before any quarantine: '$(client_state)'"
        systemctl stop $unit
        return
    fi
    flagged=$(now_ms)
    touch $flag
    if ! wait_until 60 agent_count_above $unit '.kind == "action" and .action == "quarantine" and .outcome == "done"' 0; then
        fail "no quarantine done within 60 s of the detector's flag: $(agent_tail $unit 6)"
        rm -f $flag
        systemctl stop $unit
        return
    fi
    quarantined_ms=$(($(now_ms) - flagged))
    try=$(client_try)
    if ! wait_until 30 client_tries fail "$try"; then
        fail "quarantined after $quarantined_ms ms, but $unit still reaches 127.0.0.1:80:" \
            "'$(client_state)'"
        rm -f $flag
        systemctl stop $unit
        return
    fi
    if ! reach 127.0.0.1 80; then
        fail "$unit is cut off, but so is this (unquarantined) process: nginx does not answer"
        rm -f $flag
        systemctl stop $unit
        return
    fi
    rm -f $flag
    released=$(now_ms)
    answer=$("$AGENT" release $unit 2>&1)
    try=$(client_try)
    if ! wait_until 30 client_tries ok "$try"; then
        fail "after \`selfheal-agent release\` ($answer) $unit still cannot reach nginx:" \
            "'$(client_state)'; $(agent_tail $unit 6)"
        systemctl stop $unit
        return
    fi
    back_ms=$(($(now_ms) - released))
    systemctl stop $unit
    pass "detector flag → '$unit' quarantined after $quarantined_ms ms: its connections to" \
        "127.0.0.1:80 fail while this process still connects; release ('$answer') → it connects" \
        "again after $back_ms ms"
}

# A new agent process runs and answers (the upgrade restarted the service).
agent_restarted() {
    restarted_with_new_pid selfheal.service "$1" && [ -n "$(agent_status)" ]
}

# The agent is restarted AGENT_RESTARTS times while processes come and go on the host: each
# new agent answers with every kernel hook attached and nginx.service active. A kernel that
# locks up while an agent loads, walks tasks or unloads panics the guest (kernel.softlockup_panic
# below), so the run fails at once with both CPUs' stacks on the console.
AGENT_RESTARTS=20

all_hooks_attached() {
    [ "$(agent_status | jq -r '[.kernel.hooks[] | select(.attached | not)] | length')" = 0 ] &&
        agent_sees_active nginx.service
}

scenario_agent_restarts() {
    # Forks and exits all along: the task walk and the fork hook race with them.
    ( while :; do /bin/true; done ) &
    churn=$!
    i=0
    slowest=0
    while [ "$i" -lt "$AGENT_RESTARTS" ]; do
        i=$((i + 1))
        pid=$(main_pid selfheal.service)
        start=$(now_ms)
        # An operator's deliberate restarts: not counted toward the unit's start limit.
        systemctl reset-failed selfheal.service
        systemctl restart selfheal.service
        if ! wait_until 90 agent_restarted "$pid" || ! wait_until 30 all_hooks_attached; then
            kill "$churn"
            fail "restart $i of $AGENT_RESTARTS: no new agent with every hook attached and nginx active" \
                "(main pid was $pid): $(unit_state selfheal.service)"
            return
        fi
        took=$(($(now_ms) - start))
        [ "$took" -le "$slowest" ] || slowest=$took
    done
    kill "$churn"
    pass "restarted the agent $AGENT_RESTARTS times under fork churn: back every time with every" \
        "kernel hook attached (slowest ${slowest} ms)"
}

# The package's life after install: `man selfheal-agent` works; an upgrade to a newer
# version keeps the operator's config, the agent's state and its audit log, and restarts the
# service; a purge removes the binary, the unit, the config, the state and the log. Runs last:
# nothing is installed afterwards.
scenario_package() {
    if ! man -P cat selfheal-agent 2> /dev/null | grep -q 'events'; then
        fail "man selfheal-agent does not show the events command: $(man -P cat selfheal-agent 2>&1 | head -n 3 | tr '\n' ' ')"
        return
    fi
    if ! man -w selfheal-agent-status > /dev/null 2>&1; then
        fail "no man page selfheal-agent-status"
        return
    fi
    state=/var/lib/selfheal/$(ls /var/lib/selfheal 2> /dev/null | head -n 1)
    if [ ! -f "$state" ]; then
        fail "the agent left no state in /var/lib/selfheal to keep across the upgrade"
        return
    fi
    records=$(wc -l < /var/log/selfheal/actions.jsonl 2> /dev/null || echo 0)
    before=$(dpkg-query -W -f '${Version}' selfheal)
    agent_pid=$(main_pid selfheal.service)
    # --force-confold: the operator's edited config stays, as an interactive upgrade would ask.
    if ! why=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confold "$PAYLOAD/selfheal-upgrade.deb" 2>&1); then
        fail "apt install of the newer package failed: $(echo "$why" | tail -n 3 | tr '\n' ' ')"
        return
    fi
    after=$(dpkg-query -W -f '${Version}' selfheal)
    if [ "$after" = "$before" ]; then
        fail "the version is still $before after the upgrade"
        return
    fi
    if ! cmp -s "$PAYLOAD/selfheal.toml" "$CONFIG"; then
        fail "the upgrade replaced the operator's $CONFIG"
        return
    fi
    if [ ! -f "$state" ]; then
        fail "the upgrade removed the agent's state $state"
        return
    fi
    kept=$(wc -l < /var/log/selfheal/actions.jsonl 2> /dev/null || echo 0)
    if [ "$kept" -lt "$records" ]; then
        fail "the audit log had $records records before the upgrade and $kept after"
        return
    fi
    if ! wait_until 60 agent_restarted "$agent_pid"; then
        fail "after the upgrade no new agent answers (main pid was $agent_pid): $(unit_state selfheal.service)"
        return
    fi
    new_pid=$(main_pid selfheal.service)
    if ! why=$(DEBIAN_FRONTEND=noninteractive apt-get purge -y -q selfheal 2>&1); then
        fail "apt purge failed: $(echo "$why" | tail -n 3 | tr '\n' ' ')"
        return
    fi
    left=
    for path in "$AGENT" /usr/lib/systemd/system/selfheal.service "$CONFIG" /var/lib/selfheal \
        /var/log/selfheal /usr/share/man/man1/selfheal-agent.1.gz; do
        [ ! -e "$path" ] || left="$left $path"
    done
    if [ -n "$left" ]; then
        fail "the purge left$left"
        return
    fi
    if systemctl is-active --quiet selfheal.service; then
        fail "selfheal.service still runs after the purge"
        return
    fi
    AGENT=
    pass "man selfheal-agent works; upgrade $before -> $after kept the config, $state and" \
        "$kept audit records and restarted the agent (pid $agent_pid -> $new_pid); purge removed binary, unit, config, state and log"
}

# --- the run ---------------------------------------------------------------------------------

run_scenario() {
    CURRENT=$1
    RESULT=
    fn=scenario_$(echo "$1" | tr - _)
    say "SELFHEAL-VM start $1"
    if command -v "$fn" > /dev/null 2>&1; then
        "$fn"
    else
        fail "scenarios.sh has no function $fn"
    fi
    [ -n "$RESULT" ] || fail "$fn reported nothing"
}

save_artifacts() {
    mkdir -p "$OUT"
    journalctl -b --no-pager > "$OUT/journal.txt" 2>&1
    [ -z "$AGENT" ] || agent_status > "$OUT/status.json"
    systemctl status --no-pager selfheal.service nginx.service 'selfheal-vm-*' > "$OUT/units.txt" 2>&1
    cp /var/log/selfheal/actions.jsonl "$OUT/audit.jsonl" 2> /dev/null
    systemctl list-units --failed --no-pager > "$OUT/failed-units.txt" 2>&1
}

# A soft lockup or RCU stall is a kernel bug the agent triggered (or a deadlock in its programs):
# panic at once (qemu exits, the run fails fast) with every CPU's stack on the console, which
# shows messages up to info level from now on (the boot stays quiet).
sysctl -q -w kernel.softlockup_panic=1 kernel.softlockup_all_cpu_backtrace=1 \
    kernel.panic_on_rcu_stall=1 kernel.printk="7 4 1 7" || true
say "SELFHEAL-VM ready kernel $(uname -r), $(nproc) CPU(s), up $(cut -d ' ' -f 1 /proc/uptime) s"
# Names only (no spaces): read them all first, so no scenario's command can eat the list on stdin.
for scenario in $(cat "$PAYLOAD/scenarios"); do
    run_scenario "$scenario"
done
save_artifacts
say "SELFHEAL-VM done"
