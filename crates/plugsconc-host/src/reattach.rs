//! Reattaching to a plugin another host process started: the address and pid it left behind, and
//! the check that the pid still is that plugin (it must own the listening socket), so a recycled
//! pid is never adopted or killed.

use plugsconc_protocol::Network;

/// Everything needed to reconnect to a running plugin (go-plugin's `ReattachConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReattachConfig {
    /// The plugin's name.
    pub name: String,
    /// `unix` or `tcp`.
    pub network: Network,
    /// Socket path or `host:port`.
    pub address: String,
    /// The plugin's pid.
    pub pid: u32,
    /// The negotiated application protocol version.
    pub protocol_version: u32,
}

/// Checks that `pid` is alive and holds the socket listening on `address`.
pub(crate) fn verify_owner(pid: u32, network: Network, address: &str) -> Result<(), String> {
    if !crate::process::alive(pid) {
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
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("cannot inspect process {pid}: {e}"))?;
    let wanted = format!("socket:[{inode}]");
    let owns = fds
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.as_os_str() == wanted.as_str());
    if owns {
        Ok(())
    } else {
        Err(format!(
            "process {pid} does not own the socket at {address:?}; it is not that plugin"
        ))
    }
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

/// Inode of the socket listening on `port`, from `/proc/net/tcp` (state 0A = LISTEN).
fn tcp_listen_inode(table: &str, port: u16) -> Option<u64> {
    let port_hex = format!("{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit_once(':')?.1;
        (local_port == port_hex && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
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
    fn refuses_missing_or_foreign_pid() {
        let err = verify_owner(u32::MAX - 1, Network::Unix, "/nope").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = verify_owner(std::process::id(), Network::Unix, "/nope").unwrap_err();
        assert!(err.contains("nothing listens"), "{err}");
    }
}
