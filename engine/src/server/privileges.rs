//! Dropping root: once every port is bound and every file the gateway keeps open is open, the
//! whole process becomes `[service] user` (its group and supplementary groups too), for good.
//!
//! glibc's set*id functions change the credentials of every thread of the process (the kernel's
//! calls are per thread; glibc signals each thread to make the same call), so the executors, the
//! pools and the runtime threads started before this all end up unprivileged; the test checks
//! every thread in /proc.

use crate::error::{Error, Result};
use std::ffi::CString;

/// Who the gateway becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in the user database.
pub fn lookup(name: &str) -> Result<Account> {
    let c_name = CString::new(name).map_err(|_| Error::Startup(format!("bad user name {name:?}")))?;
    // SAFETY: passwd is a plain C struct of integers and pointers, for which all zeroes is a
    // valid (empty) value; getpwnam_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is a NUL-terminated string, `pwd`
    // and `result` are ours, and `buf` is as long as we say; getpwnam_r writes only into them.
    let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(Error::Startup(format!("no such user: {name}")));
    }
    Ok(Account {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Becomes `name` for good. Already being that user is fine; being another non-root user is an
/// error (only root can switch).
pub fn drop_to(name: &str) -> Result<Account> {
    let account = lookup(name)?;
    // SAFETY: getuid/geteuid cannot fail and touch no memory.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == account.uid && euid == account.uid {
        return Ok(account);
    }
    if euid != 0 {
        return Err(Error::Startup(format!(
            "[service] user = {name:?}: the gateway runs as uid {euid}, and only root can switch users"
        )));
    }
    let c_name = CString::new(name).map_err(|_| Error::Startup(format!("bad user name {name:?}")))?;
    let fail = |what: &str| {
        Error::Startup(format!(
            "cannot drop privileges to {name} ({what}): {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: plain system calls through glibc with valid arguments (a NUL-terminated name);
    // their failure is checked. Order matters: groups and gid while still root, uid last.
    unsafe {
        if libc::initgroups(c_name.as_ptr(), account.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setresgid(account.gid, account.gid, account.gid) != 0 {
            return Err(fail("setresgid"));
        }
        if libc::setresuid(account.uid, account.uid, account.uid) != 0 {
            return Err(fail("setresuid"));
        }
        // For good: getting root back must fail.
        if libc::setuid(0) == 0 {
            return Err(Error::Startup(format!(
                "dropped to {name}, but could become root again"
            )));
        }
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_users_up() {
        assert_eq!(lookup("root").unwrap(), Account { uid: 0, gid: 0 });
        assert!(lookup("no-such-user-here").is_err());
    }
}
