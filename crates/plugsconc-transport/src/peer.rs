//! Who is on the other end of a connection. A host dials the address a plugin printed; without a
//! check, a plugin could print the address of another process's socket (a sibling plugin's) and
//! have the host talk to — and stop — that process instead. [`ExpectedPeer`] names the process a
//! connection must lead to (the plugin the host started, or a process of its process group), and
//! the connector refuses any other: over a unix socket by the peer's credentials (`SO_PEERCRED`),
//! over TCP by finding, through `/proc`, which processes hold the listening socket.
//!
//! The same `/proc` tables tell whether a process owns a listening address at all
//! ([`listener_owner`], used before reattaching to a plugin), and identify a process across pid
//! reuse by its start time ([`ProcessStat`]).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use plugsconc_protocol::Network;

/// The process a connection must lead to: the leader of a process group (a plugin the host
/// started) or any member of that group (a plugin launched through a wrapper that forks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedPeer {
    leader: u32,
}

impl ExpectedPeer {
    /// The process `leader`, which leads its own process group, or any process of that group.
    pub fn process_group(leader: u32) -> Self {
        Self { leader }
    }

    /// The expected process.
    pub fn pid(&self) -> u32 {
        self.leader
    }

    /// Whether `pid` is the expected process or in its process group.
    pub fn admits(&self, pid: u32) -> bool {
        if pid == self.leader {
            return true;
        }
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: getpgid has no memory arguments; an unknown pid is ESRCH.
        let group = unsafe { libc::getpgid(raw) };
        u32::try_from(group).is_ok_and(|group| group == self.leader)
    }
}

/// A connection led to a process other than the expected one.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "it is served by {found}, not by process {expected} (or its process group) that was started for it"
)]
pub(crate) struct PeerRefused {
    /// The process that was expected.
    pub(crate) expected: u32,
    /// Who serves the address instead, for messages.
    pub(crate) found: String,
    /// That process's pid, when known.
    pub(crate) found_pid: Option<u32>,
}

/// Checks the process behind a connected unix socket (the one that listens on it).
pub(crate) fn check_unix(
    stream: &tokio::net::UnixStream,
    expected: ExpectedPeer,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().and_then(|pid| u32::try_from(pid).ok());
    match pid {
        Some(pid) if expected.admits(pid) => Ok(()),
        Some(pid) => Err(std::io::Error::other(PeerRefused {
            expected: expected.pid(),
            found: describe(pid),
            found_pid: Some(pid),
        })),
        // A pid of 0: the listener lives in a pid namespace this process cannot see.
        None => Err(std::io::Error::other(PeerRefused {
            expected: expected.pid(),
            found: "a process this host cannot see".to_owned(),
            found_pid: None,
        })),
    }
}

/// Checks the processes holding the socket that listens on `peer` (the far end of a connected
/// TCP stream). Reads `/proc`: call it off the async threads.
pub(crate) fn check_tcp(peer: SocketAddr, expected: ExpectedPeer) -> std::io::Result<()> {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect();
    let listeners = tcp_listeners_for(&tables, peer);
    let refuse = |found: String, found_pid: Option<u32>| {
        std::io::Error::other(PeerRefused {
            expected: expected.pid(),
            found,
            found_pid,
        })
    };
    if listeners.is_empty() {
        return Err(refuse(
            format!("no socket this host can see listening on {peer}"),
            None,
        ));
    }
    let held = sockets_of_group(expected.pid());
    match listeners.iter().find(|inode| !held.contains(inode)) {
        None => Ok(()),
        Some(inode) => Err(match socket_holder(*inode) {
            Some(pid) => refuse(describe(pid), Some(pid)),
            None => refuse("another process".to_owned(), None),
        }),
    }
}

/// Checks that `pid` is alive and holds the socket listening on `address`.
///
/// # Errors
///
/// Why not, for messages.
pub fn listener_owner(pid: u32, network: Network, address: &str) -> Result<(), String> {
    if !ProcessStat::read(pid).is_some_and(|stat| stat.alive()) {
        return Err(format!("process {pid} does not exist"));
    }
    let inode = match network {
        Network::Unix => {
            let table = std::fs::read_to_string("/proc/net/unix").map_err(|e| e.to_string())?;
            unix_socket_inode(&table, address)
        }
        Network::Tcp => {
            let port = address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .ok_or_else(|| format!("{address:?} is not host:port"))?;
            ["/proc/net/tcp", "/proc/net/tcp6"]
                .iter()
                .filter_map(|path| std::fs::read_to_string(path).ok())
                .find_map(|table| tcp_listen_inode(&table, port))
        }
    }
    .ok_or_else(|| format!("nothing listens on {network} address {address:?}"))?;
    if sockets_of(pid).contains(&inode) {
        Ok(())
    } else {
        Err(format!(
            "process {pid} does not own the socket at {address:?}; it is not that plugin"
        ))
    }
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// One-letter state (`R`, `S`, `Z`...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgrp: u32,
    /// Start time in clock ticks after boot: with the pid, it names one process for the life of
    /// the machine (a recycled pid has a later start time).
    pub start_time: u64,
}

impl ProcessStat {
    /// Reads `/proc/<pid>/stat`; `None` when there is no such process.
    pub fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        // The command name is parenthesised and may hold spaces and parentheses: the fields
        // that matter come after the last `)`. They are fields 3 on, start time is field 22.
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            pgrp: fields.get(2)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Running, sleeping or stopped: not a zombie.
    pub fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// `process <pid> (<executable>)`, or without the executable when it cannot be read.
fn describe(pid: u32) -> String {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => format!("process {pid} ({})", exe.display()),
        Err(_) => format!("process {pid}"),
    }
}

/// Socket inodes held by `pid`'s file descriptors.
fn sockets_of(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Numeric entries of `/proc`.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Socket inodes held by the group `leader` leads.
fn sockets_of_group(leader: u32) -> HashSet<u64> {
    let mut held = sockets_of(leader);
    for pid in pids().filter(|&pid| pid != leader) {
        if ProcessStat::read(pid).is_some_and(|stat| stat.pgrp == leader) {
            held.extend(sockets_of(pid));
        }
    }
    held
}

/// A process holding socket `inode` (best effort: only processes this host may inspect).
fn socket_holder(inode: u64) -> Option<u32> {
    pids().find(|&pid| sockets_of(pid).contains(&inode))
}

/// Inode of the listening unix socket bound at `path`, from `/proc/net/unix`.
fn unix_socket_inode(table: &str, path: &str) -> Option<u64> {
    // Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = __SO_ACCEPTCON (listening).
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening = fields.get(3).is_some_and(|flags| *flags == "00010000");
        (listening && fields.get(7) == Some(&path))
            .then(|| fields.get(6)?.parse().ok())
            .flatten()
    })
}

/// Inode of a socket listening on `port`, from `/proc/net/tcp` (state 0A = LISTEN).
fn tcp_listen_inode(table: &str, port: u16) -> Option<u64> {
    tcp_listen_entries(table)
        .find(|(addr, _)| addr.port() == port)
        .map(|(_, inode)| inode)
}

/// `(local address, inode)` of each listening socket in a `/proc/net/tcp{,6}` table.
fn tcp_listen_entries(table: &str) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(3) != Some(&"0A") {
            return None;
        }
        let (ip, port) = fields.get(1)?.rsplit_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let inode = fields.get(9)?.parse().ok()?;
        Some((SocketAddr::new(proc_ip(ip)?, port), inode))
    })
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in host byte order.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let text = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(text, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The listening sockets a connection to `peer` may have reached: those bound to its exact
/// address, else the wildcard ones on its port (a v6 wildcard also takes v4 connections).
fn tcp_listeners_for(tables: &[String], peer: SocketAddr) -> Vec<u64> {
    let entries: Vec<(SocketAddr, u64)> = tables
        .iter()
        .flat_map(|table| tcp_listen_entries(table))
        .filter(|(addr, _)| addr.port() == peer.port())
        .collect();
    let exact: Vec<u64> = entries
        .iter()
        .filter(|(addr, _)| addr.ip() == peer.ip())
        .map(|(_, inode)| *inode)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    entries
        .iter()
        .filter(|(addr, _)| addr.ip().is_unspecified())
        .map(|(_, inode)| *inode)
        .collect()
}

/// Finds a refusal anywhere in an error's chain (tonic and tower wrap the dialler's error).
pub(crate) fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<PeerRefused> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<PeerRefused>() {
            return Some(refused.clone());
        }
        // io::Error's own `source` skips the error it wraps.
        if let Some(refused) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<PeerRefused>())
        {
            return Some(refused.clone());
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 31337 /tmp/plugsconc-1/plugin123
0000000000000000: 00000003 00000000 00000000 0001 03 31338 /tmp/plugsconc-1/plugin123
0000000000000000: 00000002 00000000 00010000 0001 01 4242 @abstract
";

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2710 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2710 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 20 4 30 10 -1
   2: 00000000:2711 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 779 1 0000000000000000 100 0 0 10 0
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2712 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 880 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:2711 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 881 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_listening_unix_socket() {
        assert_eq!(
            unix_socket_inode(UNIX, "/tmp/plugsconc-1/plugin123"),
            Some(31337)
        );
        assert_eq!(unix_socket_inode(UNIX, "/tmp/other"), None);
    }

    #[test]
    fn finds_listening_tcp_port() {
        assert_eq!(tcp_listen_inode(TCP, 10000), Some(777));
        assert_eq!(tcp_listen_inode(TCP, 50000), None);
    }

    #[test]
    fn decodes_proc_addresses() {
        assert_eq!(
            proc_ip("0100007F"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "little-endian words"
        );
        assert_eq!(
            proc_ip("00000000000000000000000001000000"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(proc_ip("xyz"), None);
    }

    #[test]
    fn exact_listeners_win_over_wildcards() {
        let tables = [TCP.to_owned(), TCP6.to_owned()];
        let loopback = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(tcp_listeners_for(&tables, loopback(10000)), [777]);
        // Nothing on 127.0.0.1:10001 itself: both wildcards may take it.
        assert_eq!(tcp_listeners_for(&tables, loopback(10001)), [779, 881]);
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 10002);
        assert_eq!(tcp_listeners_for(&tables, v6), [880]);
        assert!(tcp_listeners_for(&tables, loopback(9)).is_empty());
    }

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(
            ProcessStat::parse(stat),
            Some(ProcessStat {
                state: 'S',
                ppid: 1,
                pgrp: 42,
                start_time: 123_456
            })
        );
        assert!(ProcessStat::read(std::process::id()).is_some_and(|s| s.alive()));
        assert_eq!(ProcessStat::read(u32::MAX - 1), None);
    }

    #[test]
    fn refuses_missing_or_foreign_pid() {
        let err = listener_owner(u32::MAX - 1, Network::Unix, "/nope").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = listener_owner(std::process::id(), Network::Unix, "/nope").unwrap_err();
        assert!(err.contains("nothing listens"), "{err}");
    }

    #[test]
    fn admits_the_leader_and_its_group_only() {
        let own = std::process::id();
        // SAFETY: plain syscall.
        let group = u32::try_from(unsafe { libc::getpgrp() }).unwrap();
        assert!(ExpectedPeer::process_group(own).admits(own));
        assert!(ExpectedPeer::process_group(group).admits(own));
        assert!(!ExpectedPeer::process_group(u32::MAX - 1).admits(own));
    }

    #[test]
    fn refusals_are_found_through_wrapping() {
        let refused = PeerRefused {
            expected: 1,
            found: "process 2".into(),
            found_pid: Some(2),
        };
        let io = std::io::Error::other(refused);
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(io);
        assert_eq!(
            refusal_in(boxed.as_ref()).and_then(|r| r.found_pid),
            Some(2)
        );
        let plain = std::io::Error::other("no");
        assert!(refusal_in(&plain).is_none());
    }
}
