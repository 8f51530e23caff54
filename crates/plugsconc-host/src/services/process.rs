//! `ProcessService`: programs the host runs for a plugin — only whitelisted commands whose
//! arguments match a grant's patterns, confined by the plugin's own sandbox — and list, signal
//! and kill limited to the granted scopes (`children`: what this service started for the plugin;
//! `own`: the plugin itself). Children are killed when the plugin stops.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plugsconc_protocol::proto::host::process_service_server::ProcessService;
use plugsconc_protocol::proto::host::{
    ExecRequest, ExecResponse, KillRequest, KillResponse, ListProcessesRequest,
    ListProcessesResponse, SignalRequest, SignalResponse, SpawnRequest, SpawnResponse,
};
use plugsconc_transport::SocketDir;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};
use tonic::{Request, Response, Status};

use super::Grants;
use crate::manifest::{ProcessGrant, ProcessScope};
use crate::sandbox::{CgroupTree, Plan};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A background child, the temp folder and the cgroup its sandbox lives in.
struct Running {
    child: Child,
    _dir: SocketDir,
    _cgroup: Option<Arc<CgroupTree>>,
}

/// A command ready to spawn, with what must live as long as its process.
struct Prepared {
    command: Command,
    dir: SocketDir,
    cgroup: Option<Arc<CgroupTree>>,
}

pub(crate) struct Process {
    grants: Arc<Grants>,
    /// Background children by pid; dropping the service kills them (`kill_on_drop`).
    children: Arc<Mutex<HashMap<u32, Running>>>,
}

impl Process {
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        Self {
            grants,
            children: Arc::default(),
        }
    }

    fn check_exec(&self, command: &str, args: &[String]) -> Result<(), Status> {
        let wanted = std::fs::canonicalize(command).ok();
        let allowed = self
            .grants
            .capabilities
            .process
            .iter()
            .any(|grant| match grant {
                ProcessGrant::Exec {
                    command: granted,
                    args: patterns,
                } => {
                    let same = Path::new(command) == granted
                        || wanted
                            .as_ref()
                            .is_some_and(|w| std::fs::canonicalize(granted).is_ok_and(|g| &g == w));
                    same && args_match(patterns, args)
                }
                _ => false,
            });
        if allowed {
            Ok(())
        } else {
            Err(self.grants.deny(
                "exec",
                &std::iter::once(command)
                    .chain(args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                "no process exec grant names this command with matching arguments",
            ))
        }
    }

    /// Which scope `pid` is in for this plugin, if any.
    fn scope_of(&self, pid: u32) -> Option<ProcessScope> {
        if pid == self.grants.pid {
            Some(ProcessScope::Own)
        } else if self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&pid)
        {
            Some(ProcessScope::Children)
        } else {
            None
        }
    }

    fn check_scope(&self, operation: &str, pid: u32) -> Result<(), Status> {
        let scope = self.scope_of(pid);
        let granted = scope.is_some_and(|scope| {
            self.grants
                .capabilities
                .process
                .iter()
                .any(|grant| match (operation, grant) {
                    ("kill", ProcessGrant::Kill(scopes))
                    | ("signal", ProcessGrant::Signal(scopes)) => scopes.contains(&scope),
                    _ => false,
                })
        });
        if granted {
            return Ok(());
        }
        let lacking = match scope {
            None => "it is neither the plugin nor a process started for it".to_owned(),
            Some(scope) => format!(
                "no process {operation} grant covers scope `{}`",
                scope_name(scope)
            ),
        };
        Err(self.grants.deny(operation, &format!("pid {pid}"), &lacking))
    }

    /// A command confined like the plugin (when it is sandboxed), with its temp folder.
    fn command(&self, program: &str, args: &[String]) -> Result<Prepared, Status> {
        let dir = SocketDir::create().map_err(|err| Status::internal(err.to_string()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut cgroup = None;
        if let Some(spec) = &self.grants.sandbox {
            let plan = Plan::prepare(&spec.for_launch(
                &self.grants.plugin,
                Path::new(program),
                dir.path(),
            ))
            .map_err(|err| Status::failed_precondition(err.to_string()))?;
            command.envs(plan.env.iter().map(|(k, v)| (k, v)));
            cgroup.clone_from(&plan.cgroup);
            // SAFETY: only raw syscalls on data prepared above, as between fork and exec.
            unsafe {
                command.pre_exec(move || plan.apply_in_child());
            }
        }
        Ok(Prepared {
            command,
            dir,
            cgroup,
        })
    }
}

fn scope_name(scope: ProcessScope) -> &'static str {
    match scope {
        ProcessScope::Children => "children",
        ProcessScope::Own => "own",
    }
}

/// Whether `args` match `patterns`: each pattern is an exact argument, `*` matches any rest.
fn args_match(patterns: &[String], args: &[String]) -> bool {
    let mut args = args.iter();
    for pattern in patterns {
        if pattern == "*" {
            return true;
        }
        if args.next() != Some(pattern) {
            return false;
        }
    }
    args.next().is_none()
}

fn signal_number(signal: i32) -> Result<i32, Status> {
    match signal {
        0 => Ok(libc::SIGTERM),
        1..=64 => Ok(signal),
        other => Err(Status::invalid_argument(format!(
            "{other} is not a signal number"
        ))),
    }
}

fn send_signal(pid: u32, signal: i32) -> Result<(), Status> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| Status::invalid_argument("pid out of range"))?;
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(Status::failed_precondition(
            std::io::Error::last_os_error().to_string(),
        ))
    }
}

#[tonic::async_trait]
impl ProcessService for Process {
    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let ExecRequest {
            command,
            args,
            stdin,
            timeout_ms,
        } = request.into_inner();
        self.check_exec(&command, &args)?;
        let Prepared {
            command: mut cmd,
            dir: _dir,
            cgroup,
        } = self.command(&command, &args)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|err| Status::failed_precondition(format!("cannot run {command}: {err}")))?;
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(&stdin).await;
        }
        let limit = if timeout_ms == 0 {
            DEFAULT_TIMEOUT
        } else {
            Duration::from_millis(timeout_ms)
        };
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{command} ran longer than {} ms",
                    limit.as_millis()
                ))
            })?
            .map_err(|err| Status::internal(err.to_string()))?;
        drop(cmd);
        if let Some(cgroup) = cgroup {
            // Anything the command left running goes with it.
            cgroup.remove().await;
        }
        tracing::info!(plugin = %self.grants.plugin, command, status = %output.status, "host service ran a command");
        Ok(Response::new(ExecResponse {
            exit_code: output.status.code().unwrap_or(-1),
            stdout: output.stdout,
            stderr: output.stderr,
        }))
    }

    async fn spawn(
        &self,
        request: Request<SpawnRequest>,
    ) -> Result<Response<SpawnResponse>, Status> {
        let SpawnRequest { command, args } = request.into_inner();
        self.check_exec(&command, &args)?;
        let Prepared {
            command: mut cmd,
            dir,
            cgroup,
        } = self.command(&command, &args)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|err| Status::failed_precondition(format!("cannot run {command}: {err}")))?;
        let pid = child
            .id()
            .ok_or_else(|| Status::internal("the child exited at once"))?;
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                pid,
                Running {
                    child,
                    _dir: dir,
                    _cgroup: cgroup,
                },
            );
        tracing::info!(plugin = %self.grants.plugin, command, pid, "host service started a child");
        Ok(Response::new(SpawnResponse { pid }))
    }

    async fn list(
        &self,
        _: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        let scopes: Vec<ProcessScope> = self
            .grants
            .capabilities
            .process
            .iter()
            .filter_map(|grant| match grant {
                ProcessGrant::List(scopes) => Some(scopes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if scopes.is_empty() {
            return Err(self
                .grants
                .deny("list", "processes", "no process list grant"));
        }
        let mut pids = Vec::new();
        if scopes.contains(&ProcessScope::Own) {
            pids.push(self.grants.pid);
        }
        if scopes.contains(&ProcessScope::Children) {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            // Reap the ones that ended.
            children.retain(|_, running| matches!(running.child.try_wait(), Ok(None)));
            pids.extend(children.keys().copied());
        }
        pids.sort_unstable();
        Ok(Response::new(ListProcessesResponse { pids }))
    }

    async fn signal(
        &self,
        request: Request<SignalRequest>,
    ) -> Result<Response<SignalResponse>, Status> {
        let SignalRequest { pid, signal } = request.into_inner();
        let signal = signal_number(signal)?;
        self.check_scope("signal", pid)?;
        send_signal(pid, signal)?;
        Ok(Response::new(SignalResponse {}))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let pid = request.into_inner().pid;
        self.check_scope("kill", pid)?;
        let running = self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        match running {
            Some(mut running) => {
                let _ = running.child.kill().await;
            }
            None => send_signal(pid, libc::SIGKILL)?,
        }
        Ok(Response::new(KillResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn argument_patterns_match_exactly_or_with_a_trailing_star() {
        let patterns = strings(&["-a", "--delete", "*"]);
        assert!(args_match(
            &patterns,
            &strings(&["-a", "--delete", "src", "dst"])
        ));
        assert!(args_match(&patterns, &strings(&["-a", "--delete"])));
        assert!(!args_match(
            &patterns,
            &strings(&["-a", "--remove-source-files"])
        ));
        assert!(args_match(&[], &[]));
        assert!(!args_match(&[], &strings(&["extra"])));
        assert!(!args_match(&strings(&["-v"]), &[]));
    }
}
