use super::*;
use crate::manifest::{Egress, FsGrant, FsPermission, NetProtocol, ProcessGrant};

fn spec_in(dir: &Path) -> SandboxSpec {
    SandboxSpec {
        dir: dir.to_owned(),
        ..SandboxSpec::default()
    }
}

fn prepare(spec: &SandboxSpec, dir: &Path) -> Result<Plan, HostError> {
    let entrypoint = dir.join("plugin");
    std::fs::write(&entrypoint, b"\x7fELF").unwrap();
    let sockets = dir.join("sockets");
    std::fs::create_dir_all(&sockets).unwrap();
    Plan::prepare(&spec.for_launch("p", &entrypoint, &sockets))
}

#[test]
fn a_plugin_without_grants_gets_the_strictest_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = prepare(&spec_in(dir.path()), dir.path()).unwrap();
    let enforced = plan.protections.enforced.join("; ");
    assert!(enforced.contains("seccomp: no new processes"), "{enforced}");
    assert!(enforced.contains("seccomp: no udp sockets"), "{enforced}");
    assert!(enforced.contains("rlimits: core 0"), "{enforced}");
    assert_eq!(plan.filters.len(), 3, "fork, clone3 and udp filters");
    // Only host-level notes (cgroup), nothing about grants: there are none.
    assert!(
        plan.protections
            .unenforced
            .iter()
            .all(|note| note.starts_with("cgroup v2")),
        "{:?}",
        plan.protections
    );
    // The plugin's temp folder is private to the launch.
    let (key, tmp) = &plan.env[0];
    assert_eq!(key, "TMPDIR");
    assert!(Path::new(tmp).starts_with(dir.path().join("sockets")));
    if landlock_abi() >= 1 {
        assert!(plan.ruleset.is_some());
    } else {
        assert!(plan.protections.missing[0].starts_with("landlock"));
    }
}

#[test]
fn grants_relax_the_filters_and_say_what_the_os_cannot_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_in(dir.path());
    spec.capabilities.process.push(ProcessGrant::Exec {
        command: "/bin/true".into(),
        args: vec![],
    });
    spec.capabilities.egress.push(Egress {
        protocol: NetProtocol::Udp,
        hosts: vec!["dns.example".into()],
        ports: vec![53],
    });
    spec.capabilities.filesystem.push(FsGrant {
        path: dir.path().join("missing"),
        permissions: vec![FsPermission::Read],
        recursive: true,
    });
    spec.resources.memory_mb = Some(100);
    spec.resources.open_files = Some(64);
    spec.data_dir = Some(dir.path().join("data"));
    let plan = prepare(&spec, dir.path()).unwrap();
    assert!(plan.filters.is_empty());
    let unenforced = plan.protections.unenforced.join("; ");
    assert!(unenforced.contains("udp"), "{unenforced}");
    assert!(unenforced.contains("exec /bin/true"), "{unenforced}");
    assert!(
        unenforced.contains("does not exist at start"),
        "{unenforced}"
    );
    let enforced = plan.protections.enforced.join("; ");
    assert!(
        enforced.contains("open files 64, address space 356 MiB"),
        "{enforced}"
    );
    let data = &plan.env[1];
    assert_eq!(data.0, plugsconc_protocol::env::PLUGIN_DATA_DIR);
    assert!(Path::new(&data.1).is_dir());
}

#[test]
fn a_required_sandbox_refuses_what_the_kernel_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_in(dir.path());
    spec.require = true;
    let prepared = prepare(&spec, dir.path());
    if landlock_abi() >= 6 {
        prepared.unwrap();
    } else {
        let err = prepared.unwrap_err().to_string();
        assert!(err.contains("sandbox is required"), "{err}");
    }
}
