//! CPU use from `/proc`: the server's (`/proc/PID/stat`), this process's
//! (`/proc/self/stat`) and the whole machine's (`/proc/stat`), over a run.

use std::time::Instant;

/// Clock ticks per second of `/proc` times (`USER_HZ`): 100 on every
/// Linux architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in ticks.
fn process_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis. utime and stime are
    // fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) ticks of all CPUs since boot.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let vals: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = vals.iter().take(8).sum();
    // idle (4th) and iowait (5th) are not busy.
    let idle = vals.get(3).copied().unwrap_or(0) + vals.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

pub struct CpuSampler {
    server_path: Option<String>,
    server: Option<u64>,
    client: Option<u64>,
    machine: Option<(u64, u64)>,
    at: Instant,
}

/// CPU over a run: server and client in % of one core, machine in % of all cores.
pub struct Usage {
    pub server: Option<f64>,
    pub client: Option<f64>,
    pub machine: Option<f64>,
}

impl CpuSampler {
    pub fn start(server_pid: Option<u32>) -> CpuSampler {
        let server_path = server_pid.map(|p| format!("/proc/{p}/stat"));
        CpuSampler {
            server: server_path.as_deref().and_then(process_ticks),
            server_path,
            client: process_ticks("/proc/self/stat"),
            machine: machine_ticks(),
            at: Instant::now(),
        }
    }

    pub fn finish(self) -> Usage {
        let secs = self.at.elapsed().as_secs_f64();
        let share = |t0: Option<u64>, t1: Option<u64>| -> Option<f64> {
            let (t0, t1) = (t0?, t1?);
            (secs > 0.0).then(|| t1.saturating_sub(t0) as f64 / TICKS_PER_SEC / secs * 100.0)
        };
        let machine = match (self.machine, machine_ticks()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0)
            }
            _ => None,
        };
        Usage {
            server: share(
                self.server,
                self.server_path.as_deref().and_then(process_ticks),
            ),
            client: share(self.client, process_ticks("/proc/self/stat")),
            machine,
        }
    }
}
