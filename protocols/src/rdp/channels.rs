//! The static virtual channels an RDP client asks for, and the gateway's filter that makes the
//! ones a target's policy refuses unusable.
//!
//! A client lists its static virtual channels once, in the Client Network Data block (CS_NET,
//! MS-RDPBCGR 2.2.1.3.4) of the GCC Conference Create Request inside its MCS Connect Initial: the
//! first TPKT it sends after the security handshake (with TLS alone, the first thing it sends; with
//! NLA, after its CredSSP messages, DER). The server answers with one channel id per entry, in order, and opens its end
//! of the channels it knows by name (`cliprdr`: clipboard, `rdpdr`: drives, printers, smart cards
//! and ports). The gateway renames each refused entry in place to a placeholder no server
//! implements ([`ChannelPolicy`]): the lengths stay, the server still assigns every entry an id
//! (so the client's bookkeeping holds), and nothing on the server's side ever speaks on that
//! channel; everything else in the PDU is left alone.
//!
//! Only what a server would read the same way passes: the Connect Initial must have exactly the
//! layout every client sends (xrdp, for one, skips the 23 bytes of GCC header without reading
//! them), the user data blocks must tile it exactly, and there may be one CS_NET block at most.
//! Anything else is refused, and so is a first PDU that is not a Connect Initial: the session then
//! ends before the server has it (fail closed). Names are matched as servers match them:
//! case-insensitively, up to the first NUL; a name that merely starts with a refused one (xrdp cuts
//! an unterminated 8-byte name to 7 characters) counts as it.

use super::{tpkt_len, RdpError};

/// Client Network Data (TS_UD_CS_NET).
pub const CS_NET: u16 = 0xC003;
/// The longest Connect Initial accepted (real ones are 300 to 1,500 bytes).
pub const MAX_CONNECT_INITIAL: usize = 16 * 1024;
/// Static channels per client at most (MS-RDPBCGR 2.2.1.3.4: 31).
pub const MAX_CHANNELS: usize = 31;
/// CredSSP (NLA) bytes that may pass before the Connect Initial, in all.
pub const MAX_BEFORE_CONNECT_INITIAL: usize = 1 << 20;
/// CredSSP messages that may pass before the Connect Initial.
pub const MAX_MESSAGES_BEFORE: usize = 32;

/// Bytes of a channel name in a CHANNEL_DEF (NUL-padded ANSI).
const NAME_LEN: usize = 8;
/// A CHANNEL_DEF: the name and a u32 of options.
const CHANNEL_DEF_LEN: usize = NAME_LEN + 4;
/// X.224 Data TPDU header: length indicator 2, DT, EOT.
const X224_DATA: [u8; 3] = [0x02, 0xF0, 0x80];
/// T.124 ConnectData key: object identifier { 0 0 20 124 0 1 } (PER).
const T124_KEY: [u8; 7] = [0x00, 0x05, 0x00, 0x14, 0x7C, 0x00, 0x01];
/// ConferenceCreateRequest up to the client-to-server H.221 key: choice, selection (userData),
/// conference name "1", padding, one set of user data, h221NonStandard choice, key length 4.
const CONFERENCE_CREATE: [u8; 8] = [0x00, 0x08, 0x00, 0x10, 0x00, 0x01, 0xC0, 0x00];
const H221_CLIENT_KEY: &[u8; 4] = b"Duca";

/// A static virtual channel a target's policy can refuse, and the name it gets instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusable {
    /// The channel's name, as servers know it.
    pub name: &'static str,
    /// What the client's entry is renamed to: 7 characters and a NUL, a name no server implements.
    pub placeholder: [u8; NAME_LEN],
}

/// The clipboard (MS-RDPECLIP).
pub const CLIPBOARD: Refusable = Refusable {
    name: "cliprdr",
    placeholder: *b"PCNONE1\0",
};
/// Device redirection (MS-RDPEFS): drives, and with them printers, smart cards and ports.
pub const DRIVES: Refusable = Refusable {
    name: "rdpdr",
    placeholder: *b"PCNONE2\0",
};

/// What a target allows of the channels the gateway can refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelPolicy {
    pub clipboard: bool,
    pub drives: bool,
}

impl ChannelPolicy {
    /// Everything allowed: nothing to filter.
    pub const ALLOW_ALL: ChannelPolicy = ChannelPolicy {
        clipboard: true,
        drives: true,
    };

    /// The channels this policy refuses.
    pub fn refused(&self) -> impl Iterator<Item = &'static Refusable> + '_ {
        [(!self.clipboard, &CLIPBOARD), (!self.drives, &DRIVES)]
            .into_iter()
            .filter_map(|(refused, channel)| refused.then_some(channel))
    }

    /// Whether the client's channel request must be filtered at all.
    pub fn refuses_any(&self) -> bool {
        self.refused().next().is_some()
    }

    /// The refused channel a server would take an entry named `name` (its 8 bytes) for.
    pub fn refusal(&self, name: &[u8]) -> Option<&'static Refusable> {
        self.refused().find(|c| names(name, c.name))
    }
}

/// One entry of the client's channel list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelDef {
    /// The name's 8 bytes as sent.
    pub name: [u8; NAME_LEN],
    pub options: u32,
}

impl ChannelDef {
    /// The name up to its first NUL, lossily as text.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(c_name(&self.name)).into_owned()
    }
}

/// The name bytes up to the first NUL (all 8 without one).
fn c_name(name: &[u8]) -> &[u8] {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    &name[..end]
}

/// Whether a server would take the entry named `name` for the channel `refused`.
fn names(name: &[u8], refused: &str) -> bool {
    let name = c_name(name);
    name.len() >= refused.len() && name[..refused.len()].eq_ignore_ascii_case(refused.as_bytes())
}

/// Where the CS_NET block's entries are in a Connect Initial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChannelList {
    /// Offset of the first CHANNEL_DEF in the TPKT.
    at: usize,
    count: usize,
}

/// Reads a Connect Initial front to back; every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], RdpError> {
        if n > self.remaining() {
            return Err(malformed(format!("{what}: truncated")));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, what: &str) -> Result<u8, RdpError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16_le(&mut self, what: &str) -> Result<u16, RdpError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_le(&mut self, what: &str) -> Result<u32, RdpError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect(&mut self, bytes: &[u8], what: &str) -> Result<(), RdpError> {
        if self.take(bytes.len(), what)? != bytes {
            return Err(malformed(format!("{what}: unexpected bytes")));
        }
        Ok(())
    }

    /// A BER length: short form, or long form of one or two bytes.
    fn ber_len(&mut self, what: &str) -> Result<usize, RdpError> {
        match self.u8(what)? {
            short @ 0..=0x7F => Ok(usize::from(short)),
            0x81 => Ok(usize::from(self.u8(what)?)),
            0x82 => Ok(usize::from(self.u16_be(what)?)),
            _ => Err(malformed(format!("{what}: unsupported BER length"))),
        }
    }

    fn u16_be(&mut self, what: &str) -> Result<u16, RdpError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A BER element with tag `tag`: its contents.
    fn ber(&mut self, tag: &[u8], what: &str) -> Result<&'a [u8], RdpError> {
        self.expect(tag, what)?;
        let len = self.ber_len(what)?;
        self.take(len, what)
    }

    /// A PER length in its two-byte form (what every client sends: its user data is longer than
    /// 127 bytes, and xrdp assumes that form).
    fn per_len(&mut self, what: &str) -> Result<usize, RdpError> {
        let b = self.take(2, what)?;
        if b[0] & 0xC0 != 0x80 {
            return Err(malformed(format!("{what}: not a two-byte PER length")));
        }
        Ok(usize::from(b[0] & 0x3F) << 8 | usize::from(b[1]))
    }

    /// The rest must be exactly `len` bytes.
    fn rest_is(&self, len: usize, what: &str) -> Result<(), RdpError> {
        if len != self.remaining() {
            return Err(malformed(format!(
                "{what}: length {len}, but {} bytes follow",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// A DomainParameters SEQUENCE's contents: exactly eight INTEGERs (short form, 1 to 4 bytes),
/// filling it.
fn domain_parameters(contents: &[u8], what: &str) -> Result<(), RdpError> {
    let mut r = Reader { buf: contents, pos: 0 };
    for _ in 0..8 {
        let int = r.ber(&[0x02], what)?;
        if !(1..=4).contains(&int.len()) {
            return Err(malformed(format!("{what}: an INTEGER of {} bytes", int.len())));
        }
    }
    if r.remaining() != 0 {
        return Err(malformed(format!(
            "{what}: {} bytes after its eight INTEGERs",
            r.remaining()
        )));
    }
    Ok(())
}

fn malformed(what: String) -> RdpError {
    RdpError::Malformed(format!("MCS Connect Initial: {what}"))
}

/// Checks that `pdu` is one whole TPKT holding an MCS Connect Initial laid out as clients send it,
/// and finds its channel list.
fn parse(pdu: &[u8]) -> Result<Option<ChannelList>, RdpError> {
    match tpkt_len(pdu, MAX_CONNECT_INITIAL)? {
        Some(len) if len == pdu.len() => {}
        _ => return Err(malformed("not one whole TPKT".into())),
    }
    let mut r = Reader { buf: pdu, pos: 4 };
    r.expect(&X224_DATA, "X.224 Data TPDU header")?;
    // Connect-Initial ::= [APPLICATION 101] IMPLICIT SEQUENCE
    r.expect(&[0x7F, 0x65], "Connect-Initial tag")?;
    let len = r.ber_len("Connect-Initial length")?;
    r.rest_is(len, "Connect-Initial")?;
    r.ber(&[0x04], "callingDomainSelector")?;
    r.ber(&[0x04], "calledDomainSelector")?;
    if r.ber(&[0x01], "upwardFlag")?.len() != 1 {
        return Err(malformed("upwardFlag: not one byte".into()));
    }
    // Read element by element, as servers that ignore a sequence's length do (FreeRDP reads the
    // eight integers, not the length): nothing may hide inside a DomainParameters.
    for what in ["targetParameters", "minimumParameters", "maximumParameters"] {
        domain_parameters(r.ber(&[0x30], what)?, what)?;
    }
    // userData OCTET STRING: the GCC Conference Create Request, to the end of the PDU.
    r.expect(&[0x04], "userData tag")?;
    let len = r.ber_len("userData length")?;
    r.rest_is(len, "userData")?;
    r.expect(&T124_KEY, "T.124 ConnectData key")?;
    // The connectPDU length counts the rest (mstsc, FreeRDP) or, from IronRDP, 2 bytes fewer (it
    // leaves out the user data length); servers go by the user data length.
    let len = r.per_len("connectPDU length")?;
    if len != r.remaining() && len + 2 != r.remaining() {
        r.rest_is(len, "connectPDU")?;
    }
    r.expect(&CONFERENCE_CREATE, "ConferenceCreateRequest")?;
    r.expect(H221_CLIENT_KEY, "H.221 client key")?;
    let len = r.per_len("user data length")?;
    r.rest_is(len, "user data")?;
    // The client data blocks tile the rest.
    let mut channels = None;
    while r.remaining() > 0 {
        let start = r.pos;
        let kind = r.u16_le("user data block type")?;
        let len = usize::from(r.u16_le("user data block length")?);
        if len < 4 || len - 4 > r.remaining() {
            return Err(malformed(format!("user data block {kind:#06x} of {len} bytes")));
        }
        if kind == CS_NET {
            if channels.is_some() {
                return Err(malformed("two Client Network Data blocks".into()));
            }
            let mut block = Reader {
                buf: &pdu[..start + len],
                pos: r.pos,
            };
            let count = block.u32_le("channelCount")? as usize;
            if count > MAX_CHANNELS {
                return Err(malformed(format!("{count} channels (at most {MAX_CHANNELS})")));
            }
            block.rest_is(count * CHANNEL_DEF_LEN, "channelDefArray")?;
            channels = Some(ChannelList { at: block.pos, count });
        }
        r.pos = start + len;
    }
    Ok(channels)
}

/// The channels a whole Connect Initial TPKT asks for (empty without a CS_NET block).
pub fn requested_channels(pdu: &[u8]) -> Result<Vec<ChannelDef>, RdpError> {
    let Some(list) = parse(pdu)? else {
        return Ok(Vec::new());
    };
    Ok((0..list.count)
        .map(|i| {
            let at = list.at + i * CHANNEL_DEF_LEN;
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(&pdu[at..at + NAME_LEN]);
            let o = &pdu[at + NAME_LEN..at + CHANNEL_DEF_LEN];
            ChannelDef {
                name,
                options: u32::from_le_bytes([o[0], o[1], o[2], o[3]]),
            }
        })
        .collect())
}

/// Renames, in place, every entry of a whole Connect Initial TPKT that `policy` refuses; returns
/// the refused channels the client asked for (each once, by its name). Nothing is changed when the
/// PDU is refused.
pub fn filter_connect_initial(pdu: &mut [u8], policy: ChannelPolicy) -> Result<Vec<&'static str>, RdpError> {
    let Some(list) = parse(pdu)? else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for i in 0..list.count {
        let at = list.at + i * CHANNEL_DEF_LEN;
        let name = &mut pdu[at..at + NAME_LEN];
        if let Some(channel) = policy.refusal(name) {
            name.copy_from_slice(&channel.placeholder);
            if !removed.contains(&channel.name) {
                removed.push(channel.name);
            }
        }
    }
    Ok(removed)
}

/// The client data blocks of the IronRDP web client's Connect Initial as it reached xrdp (TLS
/// selected) before its CS_NET: CS_CORE and CS_SECURITY; the template of [`connect_initial`].
const SAMPLE_BLOCKS: &str = concat!(
    "01c0ea00040008004c047a0201ca03aa0000000000000000690072006f006e007200640070002d0077006500620000",
    "00000000000000000004000000000000000c0000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000001ca01000000000010",
    "000f002908000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000006000100000000000000000000000000000000000000000002",
    "c00c000000000000000000",
);

/// Domain selectors, upward flag and the three domain parameter sets of that Connect Initial.
const SAMPLE_PARAMETERS: &str = concat!(
    "0401010401010101ff301a020122020102020100020101020100020101020300ffff02010230190201010201010201",
    "01020101020100020101020204200201023020020300ffff020300fc17020300ffff020101020100020101020300ff",
    "ff020102",
);

/// A Connect Initial as the IronRDP web client sends it to a server that selected TLS, asking for
/// the channels named (up to 8 bytes each, with IronRDP's options `0x00800000`), for tests and
/// load generators. Lengths are encoded as FreeRDP does.
pub fn connect_initial(channels: &[&[u8]]) -> Vec<u8> {
    fn hex(text: &str) -> impl Iterator<Item = u8> + '_ {
        (0..text.len())
            .step_by(2)
            .map(move |i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or(0))
    }
    let mut net = (channels.len() as u32).to_le_bytes().to_vec();
    for name in channels {
        let mut field = [0u8; NAME_LEN];
        let n = name.len().min(NAME_LEN);
        field[..n].copy_from_slice(&name[..n]);
        net.extend_from_slice(&field);
        net.extend_from_slice(&0x0080_0000u32.to_le_bytes());
    }
    let mut user: Vec<u8> = hex(SAMPLE_BLOCKS).collect();
    user.extend_from_slice(&CS_NET.to_le_bytes());
    user.extend_from_slice(&((net.len() + 4) as u16).to_le_bytes());
    user.extend_from_slice(&net);
    let per = |n: usize| (0x8000 | n as u16).to_be_bytes();
    let ber = |n: usize| {
        let [hi, lo] = (n as u16).to_be_bytes();
        [0x82, hi, lo]
    };
    let mut gcc = T124_KEY.to_vec();
    gcc.extend_from_slice(&per(14 + user.len()));
    gcc.extend_from_slice(&CONFERENCE_CREATE);
    gcc.extend_from_slice(H221_CLIENT_KEY);
    gcc.extend_from_slice(&per(user.len()));
    gcc.extend_from_slice(&user);
    let mut body: Vec<u8> = hex(SAMPLE_PARAMETERS).collect();
    body.push(0x04);
    body.extend_from_slice(&ber(gcc.len()));
    body.extend_from_slice(&gcc);
    let mut pdu = vec![3, 0, 0, 0];
    pdu.extend_from_slice(&X224_DATA);
    pdu.extend_from_slice(&[0x7F, 0x65]);
    pdu.extend_from_slice(&ber(body.len()));
    pdu.extend_from_slice(&body);
    let len = (pdu.len() as u16).to_be_bytes();
    pdu[2..4].copy_from_slice(&len);
    pdu
}

/// What [`FirstPduFilter::inspect`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inspected {
    /// This many bytes at the front may go to the server; the rest must wait for more.
    Release(usize),
    /// The Connect Initial is through (filtered): everything may go, and all that follows.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a client message.
    Between,
    /// Inside a CredSSP message with this many bytes still to pass.
    Der(usize),
    Done,
}

/// A sans-IO filter over the client's byte stream to the server: passes CredSSP (NLA) messages
/// when the server selected NLA, holds the first TPKT until it is whole, filters it as a Connect
/// Initial ([`filter_connect_initial`]), and then lets everything through. The caller keeps the
/// bytes not yet released and hands all of them to [`inspect`](Self::inspect) whenever more
/// arrive; at most [`MAX_CONNECT_INITIAL`] bytes are ever held.
#[derive(Clone, Debug)]
pub struct FirstPduFilter {
    policy: ChannelPolicy,
    /// CredSSP messages may come first (the server selected HYBRID or HYBRID_EX).
    credssp: bool,
    state: State,
    /// CredSSP bytes and messages passed so far.
    before: usize,
    messages: usize,
    removed: Vec<&'static str>,
}

/// The security protocols after which the client speaks CredSSP first (PROTOCOL_HYBRID,
/// PROTOCOL_HYBRID_EX).
pub const CREDSSP_PROTOCOLS: u32 = 0x2 | 0x8;

impl FirstPduFilter {
    /// A filter for a session whose server selected `protocol` (the X.224 Connection Confirm's):
    /// CredSSP messages may come before the Connect Initial only when that is NLA.
    pub fn new(policy: ChannelPolicy, protocol: u32) -> FirstPduFilter {
        FirstPduFilter {
            policy,
            credssp: protocol & CREDSSP_PROTOCOLS != 0,
            state: State::Between,
            before: 0,
            messages: 0,
            removed: Vec::new(),
        }
    }

    /// `held` is every byte the client sent that has not been released yet, in order (the first
    /// call gets the first bytes after the RDCleanPath exchange). Changes them in place where the
    /// policy says, and tells how many may go on. After an error nothing more may go to the server.
    pub fn inspect(&mut self, held: &mut [u8]) -> Result<Inspected, RdpError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok(Inspected::Done),
                State::Der(left) => {
                    let take = left.min(held.len() - pos);
                    pos += take;
                    if take < left {
                        self.state = State::Der(left - take);
                        return Ok(Inspected::Release(pos));
                    }
                    self.state = State::Between;
                }
                State::Between => {
                    let rest = &mut held[pos..];
                    match rest.first() {
                        None => return Ok(Inspected::Release(pos)),
                        Some(0x30) if self.credssp => {
                            let Some(len) = der_len(rest)? else {
                                return Ok(Inspected::Release(pos));
                            };
                            self.messages += 1;
                            self.before = self.before.saturating_add(len);
                            if self.messages > MAX_MESSAGES_BEFORE || self.before > MAX_BEFORE_CONNECT_INITIAL {
                                return Err(RdpError::TooLarge {
                                    len: self.before,
                                    max: MAX_BEFORE_CONNECT_INITIAL,
                                });
                            }
                            self.state = State::Der(len);
                        }
                        Some(0x03) => {
                            let Some(len) = tpkt_len(rest, MAX_CONNECT_INITIAL)? else {
                                return Ok(Inspected::Release(pos));
                            };
                            let Some(pdu) = rest.get_mut(..len) else {
                                return Ok(Inspected::Release(pos));
                            };
                            self.removed = filter_connect_initial(pdu, self.policy)?;
                            self.state = State::Done;
                        }
                        Some(_) => return Err(RdpError::NotTpkt),
                    }
                }
            }
        }
    }

    /// Whether the Connect Initial has been through.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Where the Connect Initial started in the client's stream (after its CredSSP bytes), once
    /// done.
    pub fn connect_initial_at(&self) -> Option<usize> {
        self.is_done().then_some(self.before)
    }

    /// The refused channels the client asked for (known once done).
    pub fn removed(&self) -> &[&'static str] {
        &self.removed
    }
}

/// The whole length of the DER element (a CredSSP TSRequest, a SEQUENCE) at the start of `buf`;
/// `Ok(None)` until its header is in. Definite lengths of up to four bytes only.
fn der_len(buf: &[u8]) -> Result<Option<usize>, RdpError> {
    let Some(&first) = buf.get(1) else { return Ok(None) };
    let (header, len) = match first {
        0..=0x7F => (2, usize::from(first)),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7F);
            let Some(bytes) = buf.get(2..2 + n) else {
                return Ok(None);
            };
            let len = bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            (2 + n, usize::try_from(len).unwrap_or(usize::MAX))
        }
        _ => return Err(RdpError::Malformed("CredSSP message: unsupported DER length".into())),
    };
    Ok(Some(len.saturating_add(header)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::mcs::ConnectInitial;
    use ironrdp_pdu::x224::{X224Data, X224};

    /// The IronRDP web client's Connect Initial (iron-remote-desktop-rdp 0.7, as the gateway got
    /// it from Chromium): channels cliprdr and drdynvc.
    pub(crate) const IRONRDP_WEB: &[&str] = &[
        "0300019f02f0807f658201930401010401010101ff301a020122020102020100020101020100020101020300ffff0201",
        "023019020101020101020101020101020100020101020204200201023020020300ffff020300fc17020300ffff020101",
        "020100020101020300ffff0201020482012d000500147c00018122000800100001c00044756361811601c0ea00040008",
        "004c047a0201ca03aa0000000000000000690072006f006e007200640070002d00770065006200000000000000000000",
        "0004000000000000000c0000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000001ca01000000000010000f0029080000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000006000100000000000000000000000000000000000000000002c00c00000000000000000003",
        "c0200002000000636c69707264720000008000647264796e76630000008000",
    ];

    /// FreeRDP 2.11's (`xfreerdp /sec:rdp +clipboard /drive:… /sound`, standard RDP security so
    /// that it went out in the clear): rdpdr, rdpsnd, cliprdr, drdynvc.
    pub(crate) const FREERDP: &[&str] = &[
        "030001c302f0807f658201b70401010401010101ff301a020122020102020100020101020100020101020300ffff0201",
        "023019020101020101020101020101020100020101020204200201023020020300ffff020300fc17020300ffff020101",
        "020100020101020300ffff02010204820151000500147c00018148000800100001c00044756361813a01c0ea000c0008",
        "000004000301ca03aa09040000bb47000076006d00000000000000000000000000000000000000000000000000000000",
        "0004000000000000000c0000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000000000000000000000000000000000000001ca01000000000018000f00e3050000000000",
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000007000000000000000000000000000000000000000000000004c00c004d0000000000000002",
        "c00c001b0000000000000003c03800040000007264706472000000000080c0726470736e640000000000c0636c697072",
        "6472000000a0c0647264796e766300000080c0",
    ];

    pub(crate) fn unhex(lines: &[&str]) -> Vec<u8> {
        let hex: String = lines.concat();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn names_of(pdu: &[u8]) -> Vec<String> {
        requested_channels(pdu).unwrap().iter().map(ChannelDef::name).collect()
    }

    /// ironrdp-pdu's reading of the channel names (an independent decoder).
    fn ironrdp_names(pdu: &[u8]) -> Vec<String> {
        let X224(data) = ironrdp_core::decode::<X224<X224Data<'_>>>(pdu).expect("ironrdp decodes the TPDU");
        let ci = ironrdp_core::decode::<ConnectInitial>(&data.data).expect("ironrdp decodes the Connect Initial");
        ci.channel_names()
            .unwrap_or_default()
            .iter()
            .map(|c| c.name.as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Where the user data blocks start: behind the H.221 key and its 2-byte PER length.
    fn blocks_at(pdu: &[u8]) -> usize {
        pdu.windows(4).position(|w| w == H221_CLIENT_KEY).unwrap() + 4 + 2
    }

    fn blocks_of(pdu: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut at = blocks_at(pdu);
        let mut out = Vec::new();
        while at < pdu.len() {
            let kind = u16::from_le_bytes([pdu[at], pdu[at + 1]]);
            let len = usize::from(u16::from_le_bytes([pdu[at + 2], pdu[at + 3]]));
            out.push((kind, pdu[at + 4..at + len].to_vec()));
            at += len;
        }
        out
    }

    fn ber_len(n: usize) -> Vec<u8> {
        let mut v = vec![0x82];
        v.extend_from_slice(&(n as u16).to_be_bytes());
        v
    }

    fn per_len(n: usize) -> [u8; 2] {
        (0x8000 | n as u16).to_be_bytes()
    }

    /// A Connect Initial like `template`'s (its domain parameters) with these user data blocks,
    /// every length re-encoded (FreeRDP's way).
    pub(crate) fn build(template: &[u8], blocks: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut user = Vec::new();
        for (kind, body) in blocks {
            user.extend_from_slice(&kind.to_le_bytes());
            user.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
            user.extend_from_slice(body);
        }
        let mut gcc = T124_KEY.to_vec();
        gcc.extend_from_slice(&per_len(14 + user.len()));
        gcc.extend_from_slice(&CONFERENCE_CREATE);
        gcc.extend_from_slice(H221_CLIENT_KEY);
        gcc.extend_from_slice(&per_len(user.len()));
        gcc.extend_from_slice(&user);
        // The template's selectors, flag and domain parameters: from behind the Connect-Initial
        // header to the userData tag.
        let key = template.windows(T124_KEY.len()).position(|w| w == T124_KEY).unwrap();
        let params = &template[12..key - 4];
        let mut body = params.to_vec();
        body.push(0x04);
        body.extend_from_slice(&ber_len(gcc.len()));
        body.extend_from_slice(&gcc);
        let mut mcs = vec![0x7F, 0x65];
        mcs.extend_from_slice(&ber_len(body.len()));
        mcs.extend_from_slice(&body);
        let mut pdu = vec![3, 0];
        pdu.extend_from_slice(&((mcs.len() + 7) as u16).to_be_bytes());
        pdu.extend_from_slice(&X224_DATA);
        pdu.extend_from_slice(&mcs);
        pdu
    }

    /// A CS_NET body with these 8-byte names.
    pub(crate) fn cs_net(names: &[&[u8]]) -> Vec<u8> {
        let mut body = (names.len() as u32).to_le_bytes().to_vec();
        for name in names {
            let mut field = [0u8; 8];
            field[..name.len()].copy_from_slice(name);
            body.extend_from_slice(&field);
            body.extend_from_slice(&0x8080_0000u32.to_le_bytes());
        }
        body
    }

    /// `template` with its CS_NET block replaced by one naming `names`.
    pub(crate) fn with_channels(template: &[u8], names: &[&[u8]]) -> Vec<u8> {
        let blocks: Vec<_> = blocks_of(template)
            .into_iter()
            .map(|(kind, body)| {
                if kind == CS_NET {
                    (kind, cs_net(names))
                } else {
                    (kind, body)
                }
            })
            .collect();
        build(template, &blocks)
    }

    /// The Connection Confirm's selected protocol with NLA (HYBRID_EX), and with TLS alone.
    const HYBRID_EX: u32 = 8;
    const SSL: u32 = 1;

    const POLICIES: [ChannelPolicy; 4] = [
        ChannelPolicy::ALLOW_ALL,
        ChannelPolicy {
            clipboard: false,
            drives: true,
        },
        ChannelPolicy {
            clipboard: true,
            drives: false,
        },
        ChannelPolicy {
            clipboard: false,
            drives: false,
        },
    ];

    #[test]
    fn real_clients_ask_for_their_channels() {
        let web = unhex(IRONRDP_WEB);
        assert_eq!(names_of(&web), ["cliprdr", "drdynvc"]);
        assert_eq!(ironrdp_names(&web), ["cliprdr", "drdynvc"]);
        let freerdp = unhex(FREERDP);
        assert_eq!(names_of(&freerdp), ["rdpdr", "rdpsnd", "cliprdr", "drdynvc"]);
        assert_eq!(ironrdp_names(&freerdp), names_of(&freerdp));
        // The test builder encodes as FreeRDP does.
        assert_eq!(build(&freerdp, &blocks_of(&freerdp)), freerdp);
        // `connect_initial` rebuilds IronRDP's, but for the connectPDU length IronRDP sends short.
        let built = connect_initial(&[b"cliprdr", b"drdynvc"]);
        let differ: Vec<_> = (0..web.len()).filter(|&i| built.get(i) != web.get(i)).collect();
        assert_eq!((built.len(), differ), (web.len(), vec![0x7A]));
        assert_eq!((web[0x7A], built[0x7A]), (0x22, 0x24));
        assert_eq!(names_of(&connect_initial(&[b"rdpdr", b"x"])), ["rdpdr", "x"]);
        assert_eq!(ironrdp_names(&connect_initial(&[])), Vec::<String>::new());
        assert_eq!(ironrdp_names(&with_channels(&web, &[b"a", b"rdpsnd"])), ["a", "rdpsnd"]);
    }

    #[test]
    fn refused_channels_are_renamed_in_place_and_nothing_else_changes() {
        for capture in [IRONRDP_WEB, FREERDP] {
            let original = unhex(capture);
            for policy in POLICIES {
                let mut pdu = original.clone();
                let removed = filter_connect_initial(&mut pdu, policy).unwrap();
                assert_eq!(pdu.len(), original.len());
                let before = requested_channels(&original).unwrap();
                let after = requested_channels(&pdu).unwrap();
                let mut expected_removed = Vec::new();
                for (b, a) in before.iter().zip(&after) {
                    assert_eq!(a.options, b.options, "options are kept");
                    match policy.refused().find(|c| c.name == b.name()) {
                        Some(c) => {
                            assert_eq!(a.name, c.placeholder);
                            expected_removed.push(c.name);
                        }
                        None => assert_eq!(a.name, b.name),
                    }
                }
                assert_eq!(removed, expected_removed, "{policy:?}");
                // Only the renamed names' bytes differ.
                let changed = original.iter().zip(&pdu).filter(|(a, b)| a != b).count();
                assert!(changed <= removed.len() * 8, "{policy:?}: {changed} bytes changed");
                if policy == ChannelPolicy::ALLOW_ALL {
                    assert_eq!(pdu, original);
                }
                // ironrdp-pdu reads the same result, and the server gets an entry per request.
                assert_eq!(ironrdp_names(&pdu), names_of(&pdu));
                assert_eq!(after.len(), before.len());
                // Filtering again finds nothing more.
                let again = pdu.clone();
                assert!(filter_connect_initial(&mut pdu, policy).unwrap().is_empty());
                assert_eq!(pdu, again);
            }
        }
        let mut pdu = unhex(FREERDP);
        let all = POLICIES[3];
        assert_eq!(filter_connect_initial(&mut pdu, all).unwrap(), ["rdpdr", "cliprdr"]);
        assert_eq!(names_of(&pdu), ["PCNONE2", "rdpsnd", "PCNONE1", "drdynvc"]);
    }

    #[test]
    fn names_are_matched_as_servers_match_them() {
        let web = unhex(IRONRDP_WEB);
        let names: &[&[u8]] = &[
            b"CLIPRDR",
            b"ClipRdr",
            b"cliprdrX",
            b"RDPDR",
            b"rdpdr\0xy",
            b"rdpdrx",
            b"clip\0rdr",
            b"rdpsnd",
            b"cliprd",
            b"",
            b"drdynvc",
        ];
        let mut pdu = with_channels(&web, names);
        let removed = filter_connect_initial(&mut pdu, POLICIES[3]).unwrap();
        assert_eq!(removed, ["cliprdr", "rdpdr"]);
        assert_eq!(
            names_of(&pdu),
            [
                "PCNONE1", "PCNONE1", "PCNONE1", "PCNONE2", "PCNONE2", "PCNONE2", "clip", "rdpsnd", "cliprd", "",
                "drdynvc"
            ]
        );
        // No CS_NET block at all, or an empty one: nothing to do.
        let blocks: Vec<_> = blocks_of(&web).into_iter().filter(|(k, _)| *k != CS_NET).collect();
        let mut none = build(&web, &blocks);
        assert_eq!(filter_connect_initial(&mut none, POLICIES[3]), Ok(vec![]));
        let mut empty = with_channels(&web, &[]);
        assert_eq!(filter_connect_initial(&mut empty, POLICIES[3]), Ok(vec![]));
    }

    /// Changes `pdu` with `edit` and fixes up the TPKT length to the new size.
    fn edited(pdu: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut pdu = pdu.to_vec();
        edit(&mut pdu);
        let len = pdu.len() as u16;
        pdu[2..4].copy_from_slice(&len.to_be_bytes());
        pdu
    }

    fn malformed_inputs() -> Vec<(&'static str, Vec<u8>)> {
        let web = unhex(IRONRDP_WEB);
        let freerdp = unhex(FREERDP);
        let net = blocks_at(&web)
            + blocks_of(&web)
                .iter()
                .take_while(|(kind, _)| *kind != CS_NET)
                .map(|(_, body)| body.len() + 4)
                .sum::<usize>();
        assert_eq!(u16::from_le_bytes([web[net], web[net + 1]]), CS_NET);
        let mut v: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", web[..web.len() - 1].to_vec()),
            ("cut short", edited(&web, |p| p.truncate(p.len() - 3))),
            ("one byte more", edited(&web, |p| p.push(0))),
            ("not a data TPDU", edited(&web, |p| p[5] = 0xE0)),
            ("not EOT", edited(&web, |p| p[6] = 0)),
            ("not Connect-Initial", edited(&web, |p| p[8] = 0x66)),
            ("Connect-Initial length", edited(&web, |p| p[11] ^= 1)),
            ("userData length", edited(&web, |p| p[0x71] ^= 1)),
            ("T.124 key", edited(&web, |p| p[0x74] = 0x15)),
            ("one-byte PER length", edited(&web, |p| p[0x79] = 0x01)),
            ("connectPDU length", edited(&web, |p| p[0x7a] ^= 4)),
            ("conference name", edited(&web, |p| p[0x7e] = 0x20)),
            ("H.221 key", edited(&web, |p| p[0x84] = b'X')),
            ("user data length", edited(&web, |p| p[0x88] ^= 1)),
            ("trailing byte", edited(&web, |p| p.push(0))),
            ("block of 3 bytes", edited(&web, |p| p[net + 2] = 3)),
            ("block past the end", edited(&web, |p| p[net + 2] += 12)),
            ("channelCount one more", edited(&web, |p| p[net + 4] += 1)),
            ("CS_NET one byte short", edited(&web, |p| p[net + 2] -= 1)),
            ("32 channels", with_channels(&web, &[&b"x"[..]; 32])),
            ("TLS instead", edited(&web, |p| p[0] = 0x16)),
            ("Connection Request", crate::rdp::connection_request("alice")),
        ];
        let two = {
            let mut blocks = blocks_of(&freerdp);
            blocks.push((CS_NET, cs_net(&[b"cliprdr"])));
            build(&freerdp, &blocks)
        };
        v.push(("two CS_NET blocks", two));
        let huge = {
            let mut blocks = blocks_of(&freerdp);
            blocks.push((0xC0FF, vec![0; MAX_CONNECT_INITIAL]));
            build(&freerdp, &blocks)
        };
        v.push(("over 16 KiB", huge));
        v
    }

    #[test]
    fn malformed_connect_initials_are_refused_untouched() {
        for (what, pdu) in malformed_inputs() {
            let mut copy = pdu.clone();
            assert!(
                filter_connect_initial(&mut copy, POLICIES[3]).is_err(),
                "{what} passed: {:?}",
                requested_channels(&pdu)
            );
            assert_eq!(copy, pdu, "{what}: changed although refused");
            // Through the stream filter, with every policy that filters: an error (or, cut short,
            // a wait for the rest), and none of it released.
            for policy in POLICIES.into_iter().skip(1) {
                let (out, end) = stream(&pdu, policy, &[pdu.len()]);
                assert!(
                    end.is_err() || (what == "truncated" && end == Ok(false)),
                    "{what}: {end:?}"
                );
                assert!(out.is_empty(), "{what}: {} bytes released", out.len());
            }
        }
    }

    /// A DER message (a stand-in for a CredSSP TSRequest) of `len` content bytes.
    fn der(len: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![0x30];
        match len {
            0..=0x7F => v.push(len as u8),
            0x80..=0xFF => v.extend_from_slice(&[0x81, len as u8]),
            _ => {
                v.push(0x82);
                v.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        v.extend(std::iter::repeat_n(fill, len));
        v
    }

    /// Runs `input` through a filter the way the relay does: arrivals of the sizes in `cuts`
    /// (cycled), all unreleased bytes handed over each time. Returns what was released, and how
    /// the filter ended (`Ok(true)` done, `Ok(false)` still waiting).
    fn stream(input: &[u8], policy: ChannelPolicy, cuts: &[usize]) -> (Vec<u8>, Result<bool, RdpError>) {
        let mut filter = FirstPduFilter::new(policy, HYBRID_EX);
        let (mut held, mut out, mut pos) = (Vec::new(), Vec::new(), 0);
        for &cut in cuts.iter().cycle() {
            if pos >= input.len() {
                break;
            }
            let n = cut.max(1).min(input.len() - pos);
            held.extend_from_slice(&input[pos..pos + n]);
            pos += n;
            match filter.inspect(&mut held) {
                Ok(Inspected::Done) => {
                    out.append(&mut held);
                    out.extend_from_slice(&input[pos..]);
                    assert!(filter.is_done());
                    return (out, Ok(true));
                }
                Ok(Inspected::Release(k)) => {
                    assert!(k <= held.len());
                    out.extend(held.drain(..k));
                    assert!(held.len() < MAX_CONNECT_INITIAL, "holds {} bytes", held.len());
                }
                Err(e) => return (out, Err(e)),
            }
        }
        (out, Ok(false))
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_result() {
        let freerdp = unhex(FREERDP);
        let mut filtered = freerdp.clone();
        filter_connect_initial(&mut filtered, POLICIES[3]).unwrap();
        // TLS alone: the Connect Initial, then the next PDU (Erect Domain Request).
        let next = [3, 0, 0, 12, 2, 0xF0, 0x80, 4, 1, 0, 1, 0];
        // NLA: CredSSP messages first (short and long DER lengths), then the same.
        let credssp = [der(0x30, 1), der(0x1A0, 2), der(0x7F, 3)].concat();
        for prefix in [Vec::new(), credssp] {
            let input = [prefix.clone(), freerdp.clone(), next.to_vec()].concat();
            let expected = [prefix.clone(), filtered.clone(), next.to_vec()].concat();
            let tpkt = prefix.len()..prefix.len() + freerdp.len();
            for a in 0..=input.len() {
                for b in [1, 2, 7, 100, input.len()] {
                    let (out, end) = stream(&input, POLICIES[3], &[a, b]);
                    assert_eq!(end, Ok(true), "cuts {a}, {b}");
                    assert!(out == expected, "cuts {a}, {b}: output differs");
                }
                // Cut at `a` and stop there: nothing of an incomplete Connect Initial is released.
                let (out, end) = stream(&input[..a], POLICIES[3], &[1]);
                if a < tpkt.end {
                    assert_eq!(end, Ok(false), "{a} bytes");
                    assert!(out.len() <= tpkt.start, "{a} bytes: released {}", out.len());
                    assert_eq!(out, input[..out.len()], "CredSSP passes unchanged");
                    if a <= tpkt.start {
                        // CredSSP passes as it comes (all but a partial DER header).
                        assert!(out.len() + 6 > a, "{a} bytes: released {}", out.len());
                    }
                }
            }
            // Policy allows everything: the same bytes come out.
            let (out, end) = stream(&input, ChannelPolicy::ALLOW_ALL, &[5]);
            assert_eq!((out, end), (input.clone(), Ok(true)));
        }
    }

    #[test]
    fn what_comes_before_the_connect_initial_is_bounded() {
        let web = unhex(IRONRDP_WEB);
        let policy = POLICIES[1];
        // Too many CredSSP messages, or too many bytes of them.
        let many = [vec![der(1, 0); MAX_MESSAGES_BEFORE + 1].concat(), web.clone()].concat();
        assert!(matches!(stream(&many, policy, &[64]).1, Err(RdpError::TooLarge { .. })));
        let big = [der(0x7FFF, 0).repeat(40), web.clone()].concat();
        assert!(matches!(
            stream(&big, policy, &[4096]).1,
            Err(RdpError::TooLarge { .. })
        ));
        // Claimed at once, before a byte of it passes.
        let (out, end) = stream(&[0x30, 0x84, 0x7F, 0, 0, 0], policy, &[6]);
        assert!(matches!(end, Err(RdpError::TooLarge { .. })) && out.is_empty());
        // Indefinite DER length, anything else.
        for bad in [
            &[0x30, 0x80, 0, 0][..],
            &[0x30, 0x85, 0, 0, 0, 0, 1],
            &[0x16, 3, 1],
            &[0],
        ] {
            let (out, end) = stream(bad, policy, &[bad.len()]);
            assert!(end.is_err() && out.is_empty(), "{bad:?}");
        }
        // Within the bounds, passes.
        let ok = [vec![der(1, 0); MAX_MESSAGES_BEFORE].concat(), web.clone()].concat();
        assert_eq!(stream(&ok, policy, &[64]).1, Ok(true));
        // Without NLA, the Connect Initial must come first.
        for (protocol, first) in [(SSL, &ok), (0, &ok), (SSL, &web)] {
            let mut filter = FirstPduFilter::new(policy, protocol);
            let verdict = filter.inspect(&mut first.clone());
            assert_eq!(verdict.is_ok(), first == &web, "protocol {protocol}: {verdict:?}");
        }
        assert!(FirstPduFilter::new(policy, 2).inspect(&mut ok.clone()).is_ok());
    }

    /// A PDU from the FreeRDP capture's user data with these selectors, flag and domain
    /// parameters (`params`: the Connect-Initial's elements before its userData).
    fn with_params(params: &[u8]) -> Vec<u8> {
        let real = unhex(FREERDP);
        let mut template = vec![0u8; 12];
        template.extend_from_slice(params);
        template.extend_from_slice(&[0x04, 0x82, 0, 0]);
        template.extend_from_slice(&T124_KEY);
        build(&template, &blocks_of(&real))
    }

    /// Servers that read a DomainParameters element by element (FreeRDP) would find what hides
    /// after its eight integers, where the gateway would not look: refused.
    #[test]
    fn nothing_may_hide_inside_domain_parameters() {
        let ints: Vec<u8> = [0x22u8, 2, 0, 1, 0, 1, 0xff, 2]
            .iter()
            .flat_map(|v| [0x02, 0x01, *v])
            .collect();
        let seq = |extra: &[u8]| {
            let mut v = vec![0x30, (ints.len() + extra.len()) as u8];
            v.extend_from_slice(&ints);
            v.extend_from_slice(extra);
            v
        };
        let head = [0x04, 0x01, 0x01, 0x04, 0x01, 0x01, 0x01, 0x01, 0xff];
        let params = |target: Vec<u8>| [&head[..], &target, &seq(&[]), &seq(&[])].concat();
        let clean = with_params(&params(seq(&[])));
        let mut pdu = clean.clone();
        assert_eq!(
            filter_connect_initial(
                &mut pdu,
                ChannelPolicy {
                    clipboard: false,
                    drives: true
                }
            )
            .unwrap(),
            ["cliprdr"]
        );
        for hidden in [&[0x04, 0x02, 0xAA, 0xBB][..], &[0x02, 0x01, 0x05], &[0x00]] {
            let mut pdu = with_params(&params(seq(hidden)));
            let before = pdu.clone();
            assert!(filter_connect_initial(
                &mut pdu,
                ChannelPolicy {
                    clipboard: false,
                    drives: false
                }
            )
            .is_err());
            assert_eq!(pdu, before, "refused untouched");
        }
        // Seven integers, or one of five bytes: refused too.
        let seven: Vec<u8> = [&[0x30, 21][..], &ints[..21]].concat();
        assert!(filter_connect_initial(&mut with_params(&params(seven)), ChannelPolicy::ALLOW_ALL).is_err());
        let mut wide = seq(&[]);
        wide[1] += 4;
        wide.splice(2..5, [0x02, 0x05, 0, 0, 0, 0, 0x22]);
        assert!(filter_connect_initial(&mut with_params(&params(wide)), ChannelPolicy::ALLOW_ALL).is_err());
    }
}
