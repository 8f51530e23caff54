//! Dropping Linux capabilities in the child: a plugin started by a root host would otherwise be
//! root with every capability — able to raise its own rlimits (`CAP_SYS_RESOURCE`), open raw
//! sockets around the TCP rules (`CAP_NET_RAW`), read any file's mode bits away
//! (`CAP_DAC_OVERRIDE`). Emptying the bounding set makes `execve` give root no capabilities;
//! the ambient and inheritable sets are emptied too, and so is the child's own set for what
//! runs before exec. Raw syscalls only: this runs between fork and exec.

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether the host holds capabilities a plugin could inherit (root, or a binary with file
/// capabilities); without any, there is nothing to drop.
pub(super) fn host_has_any() -> bool {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two `Data` words into our array, as version 3 defines.
    let read = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root || read != 0 || data.iter().any(|d| d.permitted != 0)
}

/// Empties the bounding, ambient, inheritable, permitted and effective sets of the calling
/// process.
pub(super) fn drop_all() -> std::io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows.
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(err);
        }
    }
    // SAFETY: as above.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads the header and two `Data` words from memory we own.
    if unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
