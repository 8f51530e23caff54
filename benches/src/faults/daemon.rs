//! A `plugsconc serve` child on a folder: started with `--set` keys, its address read from its
//! first stdout line, its token from `data/api-token`; killed if the harness stops early.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::http::Client;
use crate::procs;

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub address: String,
    pub token: String,
}

impl Daemon {
    /// Starts `plugsconc serve` in `root` (plugins in `root/plugins`) and waits until it listens.
    pub fn start(plugsconc: &Path, root: &Path, sets: &[String]) -> anyhow::Result<Self> {
        let mut command = Command::new(plugsconc);
        command
            .current_dir(root)
            .args(["serve", "--set", "api.listen=127.0.0.1:0"])
            .args(["--set", "logging.log_level=warn"]);
        for set in sets {
            command.args(["--set", set]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", plugsconc.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        let Some(address) = address else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the daemon did not start: {line:?}");
        };
        // Keep reading so a full pipe never blocks the daemon.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let token = std::fs::read_to_string(root.join("data/api-token"))
            .context("reading data/api-token")?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            address,
            token,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client with the token.
    pub fn client(&self) -> Client {
        Client::new(&self.address, Some(&self.token))
    }

    /// `kill -9`, and the exit reaped.
    pub fn kill9(mut self) {
        procs::kill9(self.child.id());
        let _ = self.child.wait();
    }

    /// SIGTERM and a wait for the exit (bounded; killed after it).
    pub fn stop(mut self) -> anyhow::Result<()> {
        procs::terminate(self.child.id());
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("the daemon did not stop within 60 s of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies the assembled plugins folder `from` (examples/plugins.sh) into `root/plugins`,
/// keeping only `names`.
pub fn plugins_folder(from: &Path, root: &Path, names: &[&str]) -> anyhow::Result<()> {
    let to = root.join("plugins");
    std::fs::create_dir_all(&to)?;
    for name in names {
        copy_dir(&from.join(name), &to.join(name))?;
    }
    Ok(())
}

/// Writes plugin `name` into folder `to`: the example dog (from the assembled plugins folder)
/// under another name, with its checksum sidecar and manifest renamed to match.
pub fn pup_folder(plugins: &Path, name: &str, to: &Path) -> anyhow::Result<()> {
    copy_dir(&plugins.join("dog"), to)?;
    std::fs::rename(to.join("dog"), to.join(name))?;
    let digest = std::fs::read_to_string(to.join("dog.sha256"))?;
    std::fs::remove_file(to.join("dog.sha256"))?;
    let digest = digest.split_whitespace().next().unwrap_or_default();
    std::fs::write(
        to.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )?;
    let manifest = std::fs::read_to_string(to.join("manifest.yaml"))?;
    std::fs::write(
        to.join("manifest.yaml"),
        manifest
            .replace("name: dog", &format!("name: {name}"))
            .replace("./dog", &format!("./{name}")),
    )?;
    Ok(())
}

/// Copies a folder tree (files and folders).
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
