//! Rendering the status document for people (`ecs-warden status`).

use serde_json::Value;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    (!cur.is_null()).then_some(cur)
}

fn text(v: &Value, path: &[&str]) -> String {
    match s(v, path) {
        Some(Value::String(x)) => x.clone(),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

fn secs(n: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(n)).to_string()
}

/// A short human summary of the status document.
pub fn human(doc: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "ecs-warden {} (pid {}) on root {}\n",
        text(doc, &["warden", "version"]),
        text(doc, &["warden", "pid"]),
        text(doc, &["warden", "root"]),
    ));
    let state = text(doc, &["supervisor", "agentState"]);
    let mut agent = format!("agent:    {state}");
    if let Some(v) = s(doc, &["supervisor", "agentVersion"]) {
        agent.push_str(&format!(" {}", v.as_str().unwrap_or("")));
    }
    if let Some(pid) = s(doc, &["supervisor", "agentPid"]) {
        agent.push_str(&format!(" (pid {pid}"));
        if let Some(up) = s(doc, &["supervisor", "agentUptimeSeconds"]).and_then(Value::as_u64) {
            agent.push_str(&format!(", up {}", secs(up)));
        }
        agent.push(')');
    }
    if let Some(ms) = s(doc, &["supervisor", "nextStartInMs"]).and_then(Value::as_u64) {
        agent.push_str(&format!(", next start in {ms} ms"));
    }
    if let Some(rt) = s(doc, &["supervisor", "runtime"]).and_then(Value::as_str) {
        agent.push_str(&format!(" [{rt} runtime]"));
    }
    out.push_str(&agent);
    out.push('\n');
    if let Some(arn) = s(doc, &["containerInstanceArn"]).and_then(Value::as_str) {
        out.push_str(&format!("instance: {arn}\n"));
    }
    if let Some(n) = s(doc, &["runningTasksCount"]) {
        out.push_str(&format!("tasks:    {n} running\n"));
    }
    out.push_str(&format!(
        "restarts: {} (consecutive failures {})",
        text(doc, &["supervisor", "restarts"]),
        text(doc, &["supervisor", "consecutiveFailures"]),
    ));
    if let Some(d) = s(doc, &["supervisor", "lastExit", "description"]) {
        out.push_str(&format!(
            ", last: {} at {}",
            d.as_str().unwrap_or(""),
            text(doc, &["supervisor", "lastExit", "at"])
        ));
    }
    out.push('\n');
    if let Some(u) = s(doc, &["update"]) {
        out.push_str(&update_line(u));
    }
    out
}

/// One or two lines about the update in flight or the last one.
pub fn update_line(u: &Value) -> String {
    if let (None, Some(a)) = (
        s(u, &["state"]).and_then(Value::as_str),
        s(u, &["agentStaging"]).filter(|a| !a.is_null()),
    ) {
        // The agent downloads an update itself (before its exit 42).
        return format!(
            "update:   STAGING by the agent ({} since {})\n",
            text(a, &["file"]),
            text(a, &["since"])
        );
    }
    let state = text(u, &["state"]);
    let mut line = format!("update:   {state}");
    if let Some(t) = s(u, &["target"]).and_then(Value::as_str) {
        line.push_str(&format!(" -> {t}"));
    }
    if let Some(step) = s(u, &["step"]).and_then(Value::as_str) {
        line.push_str(&format!(" ({step})"));
    }
    if let (Some(done), Some(total)) = (
        s(u, &["bytesDone"]).and_then(Value::as_u64),
        s(u, &["bytesTotal"]).and_then(Value::as_u64),
    ) {
        if total > 0 {
            line.push_str(&format!(
                ", {done}/{total} bytes ({:.0}%)",
                done as f64 * 100.0 / total as f64
            ));
        }
    }
    line.push('\n');
    if let Some(e) = s(u, &["error"]) {
        line.push_str(&format!(
            "          last error: {}: {}\n",
            text(e, &["name"]),
            text(e, &["message"])
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agents_own_staging_is_shown() {
        let u = json!({"state": null, "agentStaging": {"file": "ab12.ecs-update.tar", "since": "2026-12-02T18:00:00Z"}});
        assert_eq!(
            update_line(&u),
            "update:   STAGING by the agent (ab12.ecs-update.tar since 2026-12-02T18:00:00Z)\n"
        );
        let u =
            json!({"state": "STAGED", "target": "1.105.2", "step": "staged", "agentStaging": null});
        assert_eq!(update_line(&u), "update:   STAGED -> 1.105.2 (staged)\n");
        let u = json!({"state": null, "agentStaging": null});
        assert_eq!(update_line(&u), "update:   -\n");
    }
}
