//! The web terminal's control channel, on the same WebSocket as the terminal bytes:
//! binary frames carry terminal data both ways; text frames carry small JSON control messages.
//!
//! Browser -> gateway: `{"type":"resize","cols":120,"rows":40}`, `{"type":"close"}`.
//! Gateway -> browser: `{"type":"exit","status":0}`, `{"type":"error","message":"…"}`.

use serde::{Deserialize, Serialize};

/// Control messages are small (the largest is an `auth` carrying a pasted private key); anything
/// longer is refused before JSON parsing.
pub const MAX_CONTROL_LEN: usize = 16 * 1024;
/// Bounds on a terminal size; a PTY larger than this is a client bug or an attack.
pub const MAX_COLS: u16 = 1000;
pub const MAX_ROWS: u16 = 1000;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    Resize {
        cols: u16,
        rows: u16,
    },
    Close {},
    /// Credentials the user typed, for targets where the gateway holds none. First message only.
    Auth {
        username: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key: Option<String>,
    },
    /// Starts an upload of `size` bytes to `path` on the target (SFTP); `chunk`s follow, then
    /// `done`.
    Upload {
        path: String,
        size: u64,
    },
    /// Up to [`MAX_CHUNK`] bytes of the file being uploaded, base64.
    Chunk {
        data: String,
    },
    /// The upload's last chunk was sent.
    Done {},
    /// Asks for the file at `path` on the target: `filedata` messages, then `filedone`.
    Download {
        path: String,
    },
}

/// Most bytes of a file one `chunk` or `filedata` message carries (base64 then fits a control
/// message).
pub const MAX_CHUNK: usize = 8 * 1024;

/// Never prints secrets, so a stray `{:?}` cannot leak a password into a log.
impl std::fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientMessage::Resize { cols, rows } => write!(f, "Resize {{ cols: {cols}, rows: {rows} }}"),
            ClientMessage::Close {} => f.write_str("Close"),
            ClientMessage::Auth { username, .. } => write!(f, "Auth {{ username: {username:?}, .. }}"),
            ClientMessage::Upload { path, size } => write!(f, "Upload {{ path: {path:?}, size: {size} }}"),
            ClientMessage::Chunk { data } => write!(f, "Chunk {{ {} bytes of base64 }}", data.len()),
            ClientMessage::Done {} => f.write_str("Done"),
            ClientMessage::Download { path } => write!(f, "Download {{ path: {path:?} }}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ServerMessage {
    /// The shell started; `clipboard: false` means the policy disables copy and paste;
    /// `file_transfer`: files may be moved, up to `max_file_size` bytes.
    Ready {
        clipboard: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        file_transfer: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_file_size: Option<u64>,
    },
    /// The remote command ended with this exit status (or signal name).
    Exit {
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// The session cannot start or continue; shown to the user as is.
    Error { message: String },
    /// How many administrators watch the session now (0: nobody any more): the user is told.
    Watched { watchers: usize },
    /// Up to [`MAX_CHUNK`] bytes of the file being downloaded, base64.
    FileData { data: String },
    /// Bytes of the current transfer done so far.
    FileProgress { bytes: u64 },
    /// A transfer is complete (`direction`: `upload` or `download`).
    FileDone {
        direction: String,
        path: String,
        size: u64,
        sha256: String,
    },
    /// A transfer was refused or failed; shown to the user.
    FileError { message: String },
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TerminalError {
    #[error("control message longer than {MAX_CONTROL_LEN} bytes")]
    TooLong,
    #[error("invalid control message: {0}")]
    Invalid(String),
    #[error("terminal size {cols}x{rows} out of range")]
    BadSize { cols: u16, rows: u16 },
}

/// Parses a text frame from the browser.
pub fn parse_client(text: &str) -> Result<ClientMessage, TerminalError> {
    if text.len() > MAX_CONTROL_LEN {
        return Err(TerminalError::TooLong);
    }
    let msg: ClientMessage = serde_json::from_str(text).map_err(|e| TerminalError::Invalid(e.to_string()))?;
    match &msg {
        ClientMessage::Resize { cols, rows } if *cols == 0 || *rows == 0 || *cols > MAX_COLS || *rows > MAX_ROWS => {
            return Err(TerminalError::BadSize {
                cols: *cols,
                rows: *rows,
            })
        }
        ClientMessage::Auth {
            username,
            password,
            private_key,
        } => {
            if username.is_empty() || username.len() > 256 || username.chars().any(char::is_control) {
                return Err(TerminalError::Invalid("bad username".into()));
            }
            if password.is_some() == private_key.is_some() {
                return Err(TerminalError::Invalid("give a password or a private key".into()));
            }
        }
        _ => {}
    }
    Ok(msg)
}

pub fn encode_client(msg: &ClientMessage) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

/// Parses a text frame from the gateway (for clients and tests).
pub fn parse_server(text: &str) -> Result<ServerMessage, TerminalError> {
    if text.len() > MAX_CONTROL_LEN {
        return Err(TerminalError::TooLong);
    }
    serde_json::from_str(text).map_err(|e| TerminalError::Invalid(e.to_string()))
}

/// Encodes a message for the browser, always within [`MAX_CONTROL_LEN`]: texts that come from
/// elsewhere (SSH servers' error and signal names) are cut until the JSON, escapes included, fits.
pub fn encode_server(msg: &ServerMessage) -> String {
    let mut msg = msg.clone();
    let mut keep = MAX_CONTROL_LEN;
    loop {
        let text = serde_json::to_string(&msg).unwrap_or_default();
        if text.len() <= MAX_CONTROL_LEN {
            return text;
        }
        // Escaping can grow a character up to six bytes; halve until it fits.
        keep /= 2;
        match &mut msg {
            ServerMessage::Error { message } | ServerMessage::FileError { message } => truncate_chars(message, keep),
            ServerMessage::Exit {
                signal: Some(signal), ..
            } => truncate_chars(signal, keep),
            _ => return text,
        }
    }
}

fn truncate_chars(s: &mut String, max_bytes: usize) {
    let mut cut = s.len().min(max_bytes);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        assert_eq!(
            parse_client(r#"{"type":"resize","cols":120,"rows":40}"#),
            Ok(ClientMessage::Resize { cols: 120, rows: 40 })
        );
        assert_eq!(parse_client(r#"{"type":"close"}"#), Ok(ClientMessage::Close {}));
        let auth = parse_client(r#"{"type":"auth","username":"root","password":"hunter2"}"#).unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"), "secrets stay out of Debug");
        assert!(parse_client(r#"{"type":"auth","username":"root"}"#).is_err());
        assert!(parse_client(r#"{"type":"auth","username":"root","password":"a","private_key":"b"}"#).is_err());
        assert!(parse_client(r#"{"type":"auth","username":"","password":"a"}"#).is_err());
        for bad in [
            r#"{"type":"resize","cols":0,"rows":40}"#,
            r#"{"type":"resize","cols":70000,"rows":40}"#,
            r#"{"type":"resize","cols":80}"#,
            r#"{"type":"exec","cmd":"rm -rf /"}"#,
            r#"{"type":"close","extra":1}"#,
            "not json",
            "",
        ] {
            assert!(parse_client(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_client(&" ".repeat(MAX_CONTROL_LEN + 1)),
            Err(TerminalError::TooLong)
        );
    }

    #[test]
    fn server_messages_round_trip_and_stay_bounded() {
        for msg in [
            ServerMessage::Exit {
                status: Some(3),
                signal: None,
            },
            ServerMessage::Exit {
                status: None,
                signal: Some("KILL".into()),
            },
            ServerMessage::Error {
                message: "host key changed".into(),
            },
            ServerMessage::Watched { watchers: 2 },
        ] {
            assert_eq!(parse_server(&encode_server(&msg)), Ok(msg));
        }
        assert_eq!(
            encode_server(&ServerMessage::Watched { watchers: 1 }),
            r#"{"type":"watched","watchers":1}"#
        );
        let long = ServerMessage::Error {
            message: "é".repeat(2000),
        };
        let text = encode_server(&long);
        assert!(text.len() <= MAX_CONTROL_LEN);
        assert!(parse_server(&text).is_ok());
        assert_eq!(
            encode_client(&ClientMessage::Resize { cols: 1, rows: 2 }),
            r#"{"type":"resize","cols":1,"rows":2}"#
        );
    }
}
