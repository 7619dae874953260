//! Pinned SSH host keys as written in the configuration (known_hosts format): checked here for
//! shape, so that `config check` catches a pasted fingerprint or a truncated key without the SSH
//! client library. The engine's SSH bridge parses the key itself when it connects.

use base64::Engine;

/// Public key algorithms an OpenSSH server offers as host keys.
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A host key line: `ssh-ed25519 AAAA…`, optionally with a known_hosts host field in front and a
/// comment after. Returns the algorithm and the key blob when the blob names that same algorithm.
pub fn parse_host_key_line(line: &str) -> Option<(&str, Vec<u8>)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields.iter().position(|f| ALGORITHMS.contains(f))?;
    let algorithm = fields[at];
    let blob = base64::engine::general_purpose::STANDARD
        .decode(fields.get(at + 1)?)
        .ok()?;
    // The blob starts with the algorithm name as an SSH string (u32 length, then the bytes).
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    (name == algorithm.as_bytes() && blob.len() > 4 + len).then_some((algorithm, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn host_key_lines() {
        assert_eq!(parse_host_key_line(ED25519).unwrap().0, "ssh-ed25519");
        assert!(parse_host_key_line(&format!("vm1,10.0.0.4 {ED25519} admin@vm1")).is_some());
        // The blob names another algorithm, is cut short, or is not base64.
        assert!(parse_host_key_line(&ED25519.replace("ssh-ed25519 ", "ssh-rsa ")).is_none());
        assert!(parse_host_key_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5").is_none());
        assert!(parse_host_key_line("ssh-ed25519 !!!").is_none());
        assert!(parse_host_key_line("SHA256:abcdef").is_none());
        assert!(parse_host_key_line("").is_none());
    }
}
