//! The peers and outside tools a benchmark compares against: the peer scripts (COPY limit,
//! naive queue), `wrk`, `nginx` as a fast receiver, Python's `ThreadingHTTPServer` as a small
//! one, and CPU accounting from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Runs a peer script (`copy-limit.sh`, `naive-queue.sh`) against `url`; returns the value of
/// `key=` on its output line.
pub fn peer_script(
    peers: &Path,
    script: &str,
    args: &[&str],
    url: &str,
    key: &str,
) -> anyhow::Result<f64> {
    let path = peers.join(script);
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    field(&text, key).with_context(|| format!("no {key}= in the output of {script}: {text}"))
}

fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `wrk` POSTing a ~1 KB JSON body: requests per second.
pub fn wrk(
    url: &str,
    threads: u32,
    connections: u32,
    duration: Duration,
    dir: &Path,
) -> anyhow::Result<f64> {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"pad\":\"{}\"}}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            "x".repeat(1000)
        ),
    )?;
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// A process that is stopped (and reaped) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILLed master leaves them
    /// running, orphaned, one set per bench run). SIGKILL after a few seconds regardless.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port}")
}

/// nginx answering 200 to anything, with keep-alive, on one worker per core.
pub fn nginx(dir: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\nerror_log logs/error.log;\npid logs/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
               server {{ listen 127.0.0.1:{port} backlog=4096;\n\
                 location / {{ return 200 'ok'; }} }} }}\n"
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}/hook"),
    };
    wait_listening(port)?;
    Ok(server)
}

/// Python's `ThreadingHTTPServer`: a thread per connection, HTTP/1.0 (a connection per
/// request) and the default accept backlog of 5. Small servers in the wild look like this.
pub fn python_sink(dir: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let script = dir.join("small_sink.py");
    std::fs::write(
        &script,
        r#"import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
    )?;
    let child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the Python sink")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}/hook"),
    };
    wait_listening(port)?;
    Ok(server)
}

/// Clock ticks per second: the unit of the CPU times in `/proc` (100 when unknown).
pub fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Seconds of CPU in fields `fields` (counted after the command name) of `/proc/PID/stat`:
/// 11 and 12 are the process's user and system time, 13 and 14 its reaped children's.
fn stat_seconds(pid: u32, fields: [usize; 2]) -> Option<f64> {
    let ticks = clock_ticks();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let a: f64 = f.get(fields[0])?.parse().ok()?;
    let b: f64 = f.get(fields[1])?.parse().ok()?;
    Some((a + b) / ticks)
}

/// CPU time (user + system) used so far by `pids`, in seconds.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| stat_seconds(*pid, [11, 12]))
        .sum()
}

/// CPU time (user + system) used so far by this process (every thread: the bench's load
/// generators and receivers), in seconds.
pub fn own_cpu_seconds() -> f64 {
    stat_seconds(std::process::id(), [11, 12]).unwrap_or(0.0)
}

/// CPU time (user + system) of this process's children that ended and were waited for (a
/// peer script, with the `psql` it waited for), in seconds.
pub fn reaped_children_cpu_seconds() -> f64 {
    stat_seconds(std::process::id(), [13, 14]).unwrap_or(0.0)
}

/// CPU time (user + system) used so far by a PostgreSQL server: its postmaster, the children
/// it has reaped (backends that ended count there) and the children alive now, in seconds.
pub fn server_cpu_seconds(postmaster: u32) -> f64 {
    cpu_seconds(&with_children(postmaster)) + stat_seconds(postmaster, [13, 14]).unwrap_or(0.0)
}

/// CPU time (user + system) used so far by a host and, when given, its PostgreSQL server
/// (backends that ended count through the postmaster), in seconds. Take the difference of two
/// calls: a fixed list of pids would lose the CPU of a backend that exits between them (a
/// window could come out negative) and miss one that starts.
pub fn host_and_server_cpu_seconds(host: Option<u32>, postmaster: Option<u32>) -> f64 {
    cpu_seconds(host.as_slice()) + postmaster.map_or(0.0, server_cpu_seconds)
}

/// How many times a listening socket's accept queue was full, machine-wide since boot
/// (`TcpExt: ListenOverflows` in `/proc/net/netstat`); a client whose connection was dropped
/// there retransmits its SYN a second later.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
}

/// Resident memory of a process, from `/proc/PID/status` (0 when unreadable).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// `root` and its child processes (one level: PostgreSQL's backends and workers).
fn with_children(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(root) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The peers directory: `--peers`, or `../shared/peers` next to the repository.
pub fn default_peers() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers")
}
