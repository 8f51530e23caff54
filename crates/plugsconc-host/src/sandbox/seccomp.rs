//! Syscall filters (seccomp-bpf) for what Landlock cannot express: a plugin without a process
//! grant cannot create processes (threads still work), and one without a UDP grant cannot open
//! UDP sockets (Landlock only knows TCP).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::Protections;
use crate::manifest::{Capabilities, NetProtocol, ProcessGrant};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The filters `capabilities` call for, compiled.
pub(super) fn filters(
    capabilities: &Capabilities,
    protections: &mut Protections,
) -> Result<Vec<BpfProgram>, String> {
    let compile =
        |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| -> Result<BpfProgram, String> {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno.unsigned_abs()),
                ARCH,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|err| format!("cannot build the syscall filter: {err}"))
        };
    let mut programs = Vec::new();
    let may_exec = capabilities
        .process
        .iter()
        .any(|grant| matches!(grant, ProcessGrant::Exec { .. }));
    if !may_exec {
        // clone without CLONE_THREAD, fork and vfork create processes; clone3 hides its flags
        // in memory a filter cannot read, so it is refused with ENOSYS, which makes libc fall
        // back to clone for threads.
        let new_process = condition(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD.unsigned_abs().into()),
            0,
        )?;
        let mut rules = BTreeMap::new();
        rules.insert(libc::SYS_clone, vec![rule(vec![new_process])?]);
        #[cfg(target_arch = "x86_64")]
        {
            rules.insert(libc::SYS_fork, Vec::new());
            rules.insert(libc::SYS_vfork, Vec::new());
        }
        programs.push(compile(rules, libc::EPERM)?);
        let mut clone3 = BTreeMap::new();
        clone3.insert(libc::SYS_clone3, Vec::new());
        programs.push(compile(clone3, libc::ENOSYS)?);
        protections
            .enforced
            .push("seccomp: no new processes (no exec grant)".to_owned());
    }
    let may_udp = capabilities
        .egress
        .iter()
        .any(|e| e.protocol == NetProtocol::Udp)
        || capabilities
            .ingress
            .iter()
            .any(|i| i.protocol == NetProtocol::Udp);
    if may_udp {
        protections
            .unenforced
            .push("udp: the OS checks neither hosts nor ports".to_owned());
    } else {
        let mut udp = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            udp.push(rule(vec![
                condition(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    family.unsigned_abs().into(),
                )?,
                // The type argument carries SOCK_CLOEXEC / SOCK_NONBLOCK in its high bits.
                condition(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(0xf),
                    libc::SOCK_DGRAM.unsigned_abs().into(),
                )?,
            ])?);
        }
        let mut rules = BTreeMap::new();
        rules.insert(libc::SYS_socket, udp);
        programs.push(compile(rules, libc::EACCES)?);
        protections
            .enforced
            .push("seccomp: no udp sockets (no udp grant)".to_owned());
    }
    Ok(programs)
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, len, op, value)
        .map_err(|err| format!("cannot build the syscall filter: {err}"))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|err| format!("cannot build the syscall filter: {err}"))
}

/// Installs one filter on the calling thread (between fork and exec: no allocation).
pub(super) fn apply(program: &BpfProgram) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
    };
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: the kernel copies the program from `fprog`, which outlives the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u64,
            &raw const fprog,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
