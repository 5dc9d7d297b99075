//! CPU time of a process, for the benches' "CPU µs per request" columns.

/// User + system CPU time of process `pid` (or `"self"`) so far, in µs, from `/proc/<pid>/stat` (10 ms
/// ticks; 0 where unreadable, e.g. off Linux).
pub fn cpu_micros(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10_000.0
}
