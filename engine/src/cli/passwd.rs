//! `portcullis passwd`: an Argon2id hash for a `[[user]]` `password_hash`.

use crate::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Reads the password (prompting twice without echo on a terminal, one line otherwise) and
/// prints its hash.
pub fn run() -> Result<()> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(Error::Usage("the passwords differ".into()));
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::Io("cannot read the password from stdin", e))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err(Error::Usage("empty password".into()));
    }
    println!("{}", portcullis_core::passwd::hash(&password)?);
    Ok(())
}

/// Prompts on stderr and reads a line from the terminal with echo off (restored afterwards,
/// also when the read fails).
fn prompt(label: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    eprint!("{label}");
    std::io::stderr().flush().map_err(|e| Error::Io("stderr", e))?;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        quiet.local_modes.insert(LocalModes::ECHONL);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
    }
    read.map_err(|e| Error::Io("cannot read the password", e))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
