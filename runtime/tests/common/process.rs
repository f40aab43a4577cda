//! Running the runtime in the background: logs to a file, signals, waiting on the log or the
//! exit, and free loopback ports for its HTTP endpoints.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::runtime;

/// Starts `runtime ARGS` in the background with stderr going to a file the test can read.
pub fn spawn(args: &[&str], log: &Path) -> Child {
    spawn_with(&mut runtime(), args, log)
}

/// [`spawn`] with a prepared command (e.g. with S3 credentials).
pub fn spawn_with(cmd: &mut Command, args: &[&str], log: &Path) -> Child {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("runtime starts")
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} failed");
}

/// Waits (up to 40 s) until the log says `needle`.
pub fn wait_for_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !log_of(log).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log within 40 s:\n{}",
            log_of(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then a clean exit (0) within 30 s.
pub fn terminate(child: &mut Child, log: &Path) {
    signal(child, "-TERM");
    assert!(
        wait_exit(child, Duration::from_secs(30), log).success(),
        "{}",
        log_of(log)
    );
}

pub fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for a process to exit on its own; kills it and fails after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, log: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "runtime did not exit within {timeout:?}; log:\n{}",
                log_of(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback address nothing listens on (for --admin and --metrics).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The body of `GET http://ADDR/PATH` and its HTTP status (0: no answer).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// (HTTP status, JSON body) of an admin API call.
pub fn admin(addr: &str, method: &str, path: &str, body: Option<&Path>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "60",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ]);
    if let Some(file) = body {
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    let status = status
        .parse()
        .unwrap_or_else(|_| panic!("no answer from {addr}{path}: {text}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub fn wait_for_admin(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the admin API did not come up on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
