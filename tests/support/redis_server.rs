//! A real `redis-server` (Debian's package) for the tests: started on 127.0.0.1 on a free
//! port in a temporary directory, with the production durability settings (AOF on,
//! fsync every second, no RDB snapshots), and stopped by the test that started it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` this test started; killed (only that pid) and its directory removed when dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port on 127.0.0.1")
}

impl RedisServer {
    /// Starts a server on a free port; panics, saying how to install it, if there is none.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sft-redis-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A port found free may be taken before the server binds it: then another try.
        for _ in 0..5 {
            let mut server = Self { port: free_port(), dir: dir.clone(), child: None };
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port (see its log in {})", dir.display());
    }

    /// The URL the stores connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server process again (same port, same directory: its AOF is read back).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        assert!(self.launch(), "redis-server did not start again on port {}", self.port);
    }

    /// Kills the server with SIGKILL, as a crash would: only what its AOF holds survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals exactly the pid it spawned (never 0 or a group).
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command on a connection of its own (for the tests' inspections).
    pub fn query<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
        command.query(&mut conn).unwrap()
    }

    fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("redis.log")).unwrap();
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""])
            .args(["--maxmemory-policy", "noeviction", "--daemonize", "no", "--protected-mode", "yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!("cannot run redis-server ({e}): install Debian's redis-server package (make deps)"),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let ready = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ready.is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
