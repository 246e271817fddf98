//! Issue 5 end to end, strategies beyond restarting: the circuit breaker and the fallback unit,
//! and `scale` changing a unit's CPU and memory limits in systemd (and the kernel) and stepping
//! them back down.

use anyhow::Context as _;
use selfheal_tests::agent::{
    WAIT, history_and_log, restart_done, sandbox_file, text, wait_for_policy, wait_for_record,
    wait_loaded, wait_watching, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

const PRIMARY: &str = "primary.service";
const FALLBACK: &str = "primary-fallback.service";

#[test]
fn an_open_circuit_starts_the_fallback_and_the_recovered_primary_stops_it() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("fallback")?;
    // Runs 1 and 2 crash: one restart (max_attempts = 1) does not help, the ladder falls back.
    // Run 3, the half-open circuit's trial, stays up.
    let runs = sandbox_file(&sandbox, "primary.runs");
    let exec = workload(&format!("fail-first {runs} 2 300"));
    sandbox.install_unit(PRIMARY, &service_unit("primary", &exec, &[]))?;
    sandbox.install_unit(FALLBACK, &service_unit("fallback", &workload("sleep"), &[]))?;
    let config = format!(
        r#"
[policy]
cooldown = "2s"

[policy.backoff]
initial = "200ms"
max_attempts = 1

[policy.breaker]
open_for = "3s"
success_threshold = 2

[[unit]]
name = "{PRIMARY}"

[unit.remediation]
fallback = "{FALLBACK}"
"#
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, PRIMARY)?;
    sandbox.systemctl(&["start", PRIMARY])?;

    let fallen_back = wait_for_record(&agent, PRIMARY, "decision", "the fallback decision", |d| {
        d["action"] == format!("start_fallback {FALLBACK}")
    })?;
    assert!(
        text(&fallen_back, "reason").contains("1 of 1 attempts used")
            && text(&fallen_back, "reason").contains("circuit open"),
        "{fallen_back:#}"
    );
    wait_for_record(&agent, PRIMARY, "action", "the fallback started", |a| {
        a["action"] == format!("start_fallback {FALLBACK}") && a["outcome"] == "done"
    })?;
    assert_eq!(sandbox.property(FALLBACK, "ActiveState")?, "active");
    let open = wait_for_policy(&agent, PRIMARY, "the circuit open", |p| {
        p["circuit"] == "open"
    })?;
    assert_eq!(open["fallback_running"], true, "{open:#}");

    // After open_for: half-open, one trial restart; the primary stays up this time.
    let trial = wait_for_record(&agent, PRIMARY, "decision", "the trial restart", |d| {
        d["problem"] == "breaker" && d["action"] == "restart"
    })?;
    assert!(
        text(&trial, "reason").contains("trial restart"),
        "{trial:#}"
    );
    wait_for_record(
        &agent,
        PRIMARY,
        "action",
        "the trial's restart",
        restart_done,
    )?;
    let trial_pid = sandbox.main_pid(PRIMARY)?;

    // Healthy for long enough: the circuit closes and the fallback stops.
    wait_for_record(&agent, PRIMARY, "action", "the fallback stopped", |a| {
        a["action"] == format!("stop_fallback {FALLBACK}") && a["outcome"] == "done"
    })?;
    let closed = wait_for_policy(&agent, PRIMARY, "the circuit to close", |p| {
        p["circuit"] == "closed"
    })?;
    assert_eq!(closed["fallback_running"], false, "{closed:#}");
    assert_eq!(sandbox.property(FALLBACK, "ActiveState")?, "inactive");
    assert_eq!(sandbox.property(PRIMARY, "ActiveState")?, "active");
    assert_eq!(
        sandbox.main_pid(PRIMARY)?,
        trial_pid,
        "{}",
        history_and_log(&agent, PRIMARY)
    );
    Ok(())
}

/// A detector the test switches on and off: it fails while `flag` exists.
fn flag_detector(name: &str, kind: &str, flag: &str) -> String {
    format!(
        "[[unit.detector]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e '{flag}'\"]\n\
         kind = \"{kind}\"\ninterval = \"500ms\"\ntimeout = \"5s\"\n"
    )
}

/// `CPUQuota=20%` and `MemoryMax=64M`, the bases: one step (× 1.5) is 30 % and 96 MiB.
const BASE_QUOTA: &str = "200ms";
const SCALED_QUOTA: &str = "300ms";
const BASE_MEMORY: u64 = 64 << 20;
const SCALED_MEMORY: u64 = 96 << 20;

fn limits(sandbox: &Sandbox, unit: &str) -> anyhow::Result<(String, u64)> {
    let quota = sandbox.property(unit, "CPUQuotaPerSecUSec")?;
    let memory = sandbox.property(unit, "MemoryMax")?;
    Ok((quota, memory.parse()?))
}

/// The v1 hierarchies the scale test gives the sandbox's manager on a hybrid host, so that
/// systemd writes the unit's limits into the kernel there too (cpuacct: systemd realizes the
/// cpu controller of a unit only with it).
const V1_LIMIT_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory"];

/// The CPU quota (µs per period; `None` for no quota), the period (µs) and the memory limit
/// (bytes; `None` for none) the kernel enforces on a unit.
#[derive(Debug, PartialEq, Eq)]
struct KernelLimits {
    quota_us: Option<u64>,
    period_us: u64,
    memory: Option<u64>,
}

/// Reads a cgroup limit file: a number, or `max` / a negative number (v1's `-1`) for none.
fn limit(path: &std::path::Path) -> anyhow::Result<Option<u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = text.trim();
    if value == "max" || value.starts_with('-') {
        return Ok(None);
    }
    Ok(Some(value.parse().with_context(|| {
        format!("{} holds {value:?}", path.display())
    })?))
}

/// The limits from the unit's v2 cgroup, where the cpu and memory controllers are on (pure v2);
/// `Ok(None)` where they are not (hybrid: those controllers are v1).
fn v2_limits(sandbox: &Sandbox, unit: &str) -> anyhow::Result<Option<KernelLimits>> {
    let dir = sandbox.unit_cgroup(unit)?;
    let parent = dir.parent().context("a unit's cgroup has a parent")?;
    let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
        .with_context(|| format!("reading cgroup.subtree_control above {unit}"))?;
    let has = |controller: &str| enabled.split_whitespace().any(|c| c == controller);
    if !(has("cpu") && has("memory")) {
        return Ok(None);
    }
    // "<quota|max> <period>"
    let cpu_max = std::fs::read_to_string(dir.join("cpu.max"))
        .with_context(|| format!("cpu.max of {unit} is missing though its controller is on"))?;
    let (quota, period) = cpu_max
        .trim()
        .split_once(' ')
        .with_context(|| format!("cpu.max of {unit}: {cpu_max:?}"))?;
    Ok(Some(KernelLimits {
        quota_us: quota.parse().ok(),
        period_us: period.parse()?,
        memory: limit(&dir.join("memory.max"))?,
    }))
}

/// The limits from the unit's own cgroups in the v1 cpu and memory hierarchies (hybrid).
fn v1_limits(sandbox: &Sandbox, unit: &str) -> anyhow::Result<KernelLimits> {
    let control_group = sandbox.property(unit, "ControlGroup")?;
    let relative = control_group.trim_start_matches('/');
    let dir = |controller: &str| -> anyhow::Result<std::path::PathBuf> {
        let root = selfheal_tests::cgroupfs::v1_root(controller)
            .with_context(|| format!("the host has no v1 {controller} hierarchy"))?;
        let dir = root.join(relative);
        anyhow::ensure!(
            dir.is_dir(),
            "{unit} has no cgroup of its own in the v1 {controller} hierarchy ({} is missing), so \
             systemd did not write its limits there",
            dir.display()
        );
        Ok(dir)
    };
    let cpu = dir("cpu")?;
    Ok(KernelLimits {
        quota_us: limit(&cpu.join("cpu.cfs_quota_us"))?,
        period_us: limit(&cpu.join("cpu.cfs_period_us"))?
            .context("cpu.cfs_period_us is a number")?,
        memory: limit(&dir("memory")?.join("memory.limit_in_bytes"))?,
    })
}

/// The kernel's limits must follow systemd's: read where the host keeps them, v2 files when the
/// unit's v2 cgroup has the controllers, else the v1 equivalents (the sandbox is started with
/// [`V1_LIMIT_CONTROLLERS`]). When neither can be read, the part is not checked: a failure
/// with the reason under strict mode (`cargo xtask test`), announced and counted otherwise.
fn assert_kernel_limits(
    sandbox: &Sandbox,
    unit: &str,
    quota_us: u64,
    memory: u64,
) -> anyhow::Result<()> {
    let read = match v2_limits(sandbox, unit) {
        Ok(Some(limits)) => Ok(limits),
        Ok(None) => v1_limits(sandbox, unit),
        Err(err) => Err(err),
    };
    let limits = match read {
        Ok(limits) => limits,
        Err(err) => {
            let reason =
                format!("the kernel's cpu and memory limits of {unit} cannot be read: {err:#}");
            selfheal_tests::require::precondition(false, &reason);
            return Ok(());
        }
    };
    // systemd's default period is 100 ms; CPUQuota= is per second, so the quota per period is a
    // tenth of CPUQuotaPerSecUSec.
    assert_eq!(
        limits,
        KernelLimits {
            quota_us: Some(quota_us),
            period_us: 100_000,
            memory: Some(memory),
        },
        "the kernel's limits of {unit}"
    );
    Ok(())
}

#[test]
fn scale_raises_cpu_quota_and_memory_max_and_steps_back_down() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start_with_v1("scale", V1_LIMIT_CONTROLLERS)?;
    let flag = sandbox_file(&sandbox, "pressure.flag");
    sandbox.install_unit(
        "hungry.service",
        &service_unit(
            "hungry",
            &workload("sleep"),
            &["CPUQuota=20%", "MemoryMax=64M"],
        ),
    )?;
    let config = format!(
        r#"
[policy]
cooldown = "1s"

[policy.scale]
step_down_after = "4s"

[[unit]]
name = "hungry.service"

[unit.remediation]
cpu_quota = "20%"
memory_max = "64M"

[unit.remediation.custom]
pressure = ["scale"]

{}"#,
        flag_detector("pressure", "pressure", &flag)
    );
    sandbox.systemctl(&["start", "hungry.service"])?;
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, "hungry.service")?;
    assert_eq!(
        limits(&sandbox, "hungry.service")?,
        (BASE_QUOTA.to_owned(), BASE_MEMORY)
    );
    let pid = sandbox.main_pid("hungry.service")?;

    std::fs::write(&flag, "")?;
    let decision = wait_for_record(
        &agent,
        "hungry.service",
        "decision",
        "the scale decision",
        |d| d["problem"] == "pressure" && text(d, "action").starts_with("scale"),
    )?;
    assert!(
        text(&decision, "reason").contains("scale up to step 1"),
        "{decision:#}"
    );
    wait_for_record(&agent, "hungry.service", "action", "the scale step", |a| {
        text(a, "action").starts_with("scale") && a["outcome"] == "done"
    })?;
    Sandbox::wait_until("the scaled limits", WAIT, || {
        Ok(limits(&sandbox, "hungry.service")? == (SCALED_QUOTA.to_owned(), SCALED_MEMORY))
    })?;
    assert_kernel_limits(&sandbox, "hungry.service", 30_000, SCALED_MEMORY)?;
    wait_for_policy(&agent, "hungry.service", "step 1", |p| p["scale_step"] == 1)?;

    // The pressure is gone: after step_down_after without a problem, back to the bases.
    std::fs::remove_file(&flag)?;
    let down = wait_for_record(&agent, "hungry.service", "decision", "the step down", |d| {
        d["problem"] == "scale" && text(d, "action").starts_with("scale")
    })?;
    assert!(
        text(&down, "reason").contains("scaling down to step 0"),
        "{down:#}"
    );
    Sandbox::wait_until("the limits back at their bases", WAIT, || {
        Ok(limits(&sandbox, "hungry.service")? == (BASE_QUOTA.to_owned(), BASE_MEMORY))
    })?;
    assert_kernel_limits(&sandbox, "hungry.service", 20_000, BASE_MEMORY)?;
    wait_for_policy(&agent, "hungry.service", "step 0", |p| p["scale_step"] == 0)?;
    // Scaling changes limits at runtime; it never restarts the unit.
    assert_eq!(sandbox.main_pid("hungry.service")?, pid);
    Ok(())
}

#[test]
fn scale_without_configured_bases_multiplies_the_limits_systemd_had() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("scalebase")?;
    let flag = sandbox_file(&sandbox, "pressure.flag");
    sandbox.install_unit(
        "plain.service",
        &service_unit(
            "plain",
            &workload("sleep"),
            &["CPUQuota=20%", "MemoryMax=64M"],
        ),
    )?;
    let config = format!(
        "[[unit]]\nname = \"plain.service\"\n\n[unit.remediation.custom]\npressure = [\"scale\"]\n\n{}",
        flag_detector("pressure", "pressure", &flag)
    );
    sandbox.systemctl(&["start", "plain.service"])?;
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, "plain.service")?;

    std::fs::write(&flag, "")?;
    wait_for_record(&agent, "plain.service", "action", "the scale step", |a| {
        text(a, "action").starts_with("scale") && a["outcome"] == "done"
    })?;
    // deploy/selfheal.toml: "unset ones scale what systemd had when the agent started".
    Sandbox::wait_until("the limits systemd had, scaled", WAIT, || {
        Ok(limits(&sandbox, "plain.service")? == (SCALED_QUOTA.to_owned(), SCALED_MEMORY))
    })
    .map_err(|e| e.context(history_and_log(&agent, "plain.service")))?;
    Ok(())
}
