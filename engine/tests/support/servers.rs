//! Real servers for tests, started on a free port of 127.0.0.1 and killed on drop:
//! `tansu` (a Kafka-compatible broker, in-memory storage) and `moto_server` (SQS).
//! `scripts/test` installs both when they are missing.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Find an executable on PATH or in `~/.cargo/bin`.
fn find(name: &str, hint: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found on PATH or in ~/.cargo/bin: {hint} (scripts/test does it)"))
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what} did not listen on 127.0.0.1:{port} within 60s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "kill {sig} {pid}");
}

/// A tansu broker with in-memory storage.
pub struct Tansu {
    child: Child,
    port: u16,
    bin: PathBuf,
}

impl Tansu {
    pub fn start() -> Tansu {
        let bin = find("tansu", "install it with `cargo install tansu --features dynostore`");
        let port = super::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for_port(port, &mut child, "tansu");
        Tansu { child, port, bin }
    }

    /// `host:port` for Kafka clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Create a topic (tansu does not create topics on first use).
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let out = Command::new(&self.bin)
            .args(["topic", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("tansu topic create");
        assert!(out.status.success(), "tansu topic create {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Freeze the broker (SIGSTOP): connections stay open but nothing is answered, as with a
    /// broker that hangs or a network partition. Its in-memory data survives.
    pub fn pause(&self) {
        send_signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        send_signal(self.child.id(), "-CONT");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        send_signal(self.child.id(), "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fake credentials and no instance metadata, so the AWS chain stops at the environment: set by
/// the tests on their own processes only (the `phoenix` children and [`python_client`]) for a
/// [`Moto`] server.
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/phoenix-test"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/phoenix-test"),
];

/// A moto server (AWS mocks: SQS, S3, IAM). The tests give their own processes [`AWS_ENV`].
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// A moto server with settings of its own in its environment
    /// (`INITIAL_NO_AUTH_ACTION_COUNT`: check credentials and IAM policies after that many
    /// requests).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let bin = find("moto_server", "install it with `pip install 'moto[server]'`");
        let port = super::free_port();
        let mut child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_for_port(port, &mut child, "moto_server");
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL): connections are refused, and everything it held is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start a new, empty server on the same port (after [`Moto::kill`]), as a restarted
    /// in-memory S3 comes back: its clients need no new address.
    pub fn restart(&mut self) {
        let bin = find("moto_server", "install it with `pip install 'moto[server]'`");
        self.child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart moto_server");
        wait_for_port(self.port, &mut self.child, "moto_server");
    }

    /// Freeze the server (SIGSTOP), keeping its queues.
    pub fn pause(&self) {
        send_signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        send_signal(self.child.id(), "-CONT");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // After `kill` there is no process to wake (its pid may be another's by now).
        if matches!(self.child.try_wait(), Ok(None)) {
            send_signal(self.child.id(), "-CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The independent Python client (`support/clients.py`: confluent-kafka and boto3).
pub fn python_client(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> String {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/clients.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    if let Some(data) = stdin {
        child.stdin.take().expect("stdin").write_all(data).expect("write to python");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("python client");
    assert!(out.status.success(), "clients.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}
