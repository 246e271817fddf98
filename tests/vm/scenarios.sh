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
# Scenarios still to write (each needs the agent feature named, then a function here and an
# entry in xtask/src/vm/scenarios.rs):
#   stall       SIGSTOP nginx's main pid; the stall detector sees it stopped and the agent heals
#               the unit (needs the stall detector wired into the engine).
#   fd-leak     a service that opens files without closing them; the leak detector reports the
#               growth and the agent restarts it before it hits its LimitNOFILE (needs the leak
#               detector wired into the engine).
#   cpu-scale   a CPU-starved unit (CPUQuota= low, a busy workload): the agent raises it with
#               SetUnitProperties and the test reads cpu.max (and memory.max for the memory
#               variant) in the unit's cgroup v2 directory, as written by systemd (needs the
#               scale action).
#   quarantine  a unit that keeps failing after its restart budget: the agent quarantines it
#               (needs the quarantine action) and the test checks the unit's cgroup is isolated.
set -u

PAYLOAD=/payload
OUT=$PAYLOAD/out
CONFIG=/etc/selfheal/selfheal.toml
UNIT_FILE=/etc/systemd/system/selfheal.service
# Set by install_agent: where the shipped unit's ExecStart expects the binary.
AGENT=

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

restarted_with_new_pid() {
    new=$(main_pid "$1")
    [ "$new" != 0 ] && [ "$new" != "$2" ] && systemctl is-active --quiet "$1"
}

# Installs the agent as an operator would: the binary at $AGENT (where the shipped unit's
# ExecStart says), the unit in /etc/systemd/system, the config in /etc/selfheal, then
# enable --now. On failure prints why and returns 1.
install_agent() {
    install -D -m 0755 "$PAYLOAD/selfheal-agent" "$AGENT" || return 1
    install -D -m 0644 "$PAYLOAD/selfheal.service" "$UNIT_FILE" || return 1
    install -D -m 0644 "$PAYLOAD/selfheal.toml" "$CONFIG" || return 1
    "$AGENT" check-config "$CONFIG" 2>&1 || return 1
    systemctl daemon-reload || return 1
    systemctl enable --now selfheal.service 2>&1 || return 1
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
    AGENT=$(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$PAYLOAD/selfheal.service" | head -n 1)
    if [ -z "$AGENT" ]; then
        fail "the unit file has no ExecStart= line"
        return
    fi
    started=$(now_ms)
    if ! why=$(install_agent); then
        fail "installing as an operator failed: $(echo "$why" | tail -n 3 | tr '\n' ' ')" \
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
    hooks=$(agent_status | jq -r '"\([.kernel.hooks[] | select(.attached)] | length)/\(.kernel.hooks | length)"
        + ([.kernel.hooks[] | select(.attached | not) | .hook] | if length > 0 then
            " (not attached: " + join(", ") + ")" else "" end)')
    pass "selfheal.service (Type=$type) installed and active in $active_ms ms, enabled," \
        "started in the journal; status answers: kernel hooks attached $hooks, nginx.service active"
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
    pass "main pid $pid killed by SIGKILL; the agent recorded it and restarted $unit:" \
        "active again with main pid $(main_pid $unit) after $back_ms ms, systemd's NRestarts" \
        "unchanged ($systemd_restarts)"
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
    systemctl status --no-pager selfheal.service nginx.service > "$OUT/units.txt" 2>&1
    systemctl list-units --failed --no-pager > "$OUT/failed-units.txt" 2>&1
}

say "SELFHEAL-VM ready kernel $(uname -r), $(nproc) CPU(s), up $(cut -d ' ' -f 1 /proc/uptime) s"
# Names only (no spaces): read them all first, so no scenario's command can eat the list on stdin.
for scenario in $(cat "$PAYLOAD/scenarios"); do
    run_scenario "$scenario"
done
save_artifacts
say "SELFHEAL-VM done"
