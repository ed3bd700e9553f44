//! The wire: Cloud Hypervisor's framing (16-byte request and response headers, its command
//! numbers, the memory range table), with Accordion's own payloads.
//!
//! - A request is `command: u16`, six bytes of command headers, `length: u64` (little
//!   endian), then `length` bytes of payload.
//! - A response is `status: u16` (1 OK, 2 Error), six bytes of padding, `length: u64`, then
//!   `length` bytes: for an Error, the reason as UTF-8 (Cloud Hypervisor sends none).
//! - `Start`'s command headers carry Cloud Hypervisor's protocol version (0) in bytes 0–1
//!   and Accordion's tag and version in bytes 2–5, so that a peer of another kind or
//!   version fails at once with a message.
//! - `Memory`'s length counts only its table of 16-byte `(gpa, length)` ranges; the bytes of
//!   each range follow the table in order, and one response answers the lot.

use std::io::{self, Read, Write};

/// The commands, with Cloud Hypervisor's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start = 1,
    Config = 2,
    State = 3,
    Memory = 4,
    Complete = 5,
    Abandon = 6,
    MemoryFd = 7,
    CompletePaused = 8,
}

impl Command {
    fn from_u16(value: u16) -> Option<Self> {
        Some(match value {
            1 => Command::Start,
            2 => Command::Config,
            3 => Command::State,
            4 => Command::Memory,
            5 => Command::Complete,
            6 => Command::Abandon,
            7 => Command::MemoryFd,
            8 => Command::CompletePaused,
            _ => return None,
        })
    }
}

/// Bytes of a request or response header.
pub const HEADER_LEN: usize = 16;
/// Bytes of one entry of a memory range table.
pub const RANGE_LEN: usize = 16;
/// `Start`'s command headers: Cloud Hypervisor's version 0, then "ACC" and our version.
pub const START_HEADERS: [u8; 6] = [0, 0, b'A', b'C', b'C', VERSION];
/// The version of Accordion's payloads this build sends and accepts.
pub const VERSION: u8 = 1;
/// The largest `Config` or `State` payload accepted.
pub const MAX_PAYLOAD: u64 = 16 << 20;
/// The most ranges one `Memory` request may carry.
pub const MAX_RANGES: u64 = 1 << 16;
/// The longest reason text accepted in an Error response.
const MAX_REASON: u64 = 64 << 10;

/// What went wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the peer sent command {0}, which this protocol does not have")]
    UnknownCommand(u16),
    #[error("the peer is not an Accordion of this version (its Start carries {0:02x?}, ours {START_HEADERS:02x?})")]
    NotAccordion([u8; 6]),
    #[error("{what} of {len} bytes is larger than the {max} accepted")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("a memory range table of {0} bytes is not whole 16-byte entries")]
    RangeTable(u64),
    #[error("the peer answered with status {0}, neither OK nor Error")]
    BadStatus(u16),
    #[error("the peer refused: {0}")]
    Refused(String),
}

fn io(what: &'static str) -> impl FnOnce(io::Error) -> ProtocolError {
    move |source| ProtocolError::Io { what, source }
}

/// A request's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub headers: [u8; 6],
    pub length: u64,
}

impl Request {
    pub fn new(command: Command, length: u64) -> Self {
        let headers = if command == Command::Start {
            START_HEADERS
        } else {
            [0; 6]
        };
        Request {
            command,
            headers,
            length,
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..2].copy_from_slice(&(self.command as u16).to_le_bytes());
        out[2..8].copy_from_slice(&self.headers);
        out[8..].copy_from_slice(&self.length.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Result<Self, ProtocolError> {
        let command = u16::from_le_bytes([bytes[0], bytes[1]]);
        let mut headers = [0u8; 6];
        headers.copy_from_slice(&bytes[2..8]);
        let mut length = [0u8; 8];
        length.copy_from_slice(&bytes[8..]);
        Ok(Request {
            command: Command::from_u16(command).ok_or(ProtocolError::UnknownCommand(command))?,
            headers,
            length: u64::from_le_bytes(length),
        })
    }

    /// For a `Start`: that the peer is an Accordion speaking this version.
    pub fn check_start(&self) -> Result<(), ProtocolError> {
        if self.headers == START_HEADERS {
            Ok(())
        } else {
            Err(ProtocolError::NotAccordion(self.headers))
        }
    }
}

/// Reads one request header.
pub fn read_request(r: &mut impl Read) -> Result<Request, ProtocolError> {
    let mut bytes = [0u8; HEADER_LEN];
    r.read_exact(&mut bytes).map_err(io("reading a request"))?;
    Request::from_bytes(&bytes)
}

/// Writes a request header and its payload.
pub fn write_request(
    w: &mut impl Write,
    command: Command,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let header = Request::new(command, payload.len() as u64).to_bytes();
    w.write_all(&header)
        .and_then(|()| w.write_all(payload))
        .map_err(io("sending a request"))
}

/// Reads a `Config` or `State` payload of `len` bytes, refusing one past [`MAX_PAYLOAD`].
pub fn read_payload(
    r: &mut impl Read,
    what: &'static str,
    len: u64,
) -> Result<Vec<u8>, ProtocolError> {
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge {
            what,
            len,
            max: MAX_PAYLOAD,
        });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(io("reading a payload"))?;
    Ok(payload)
}

/// One entry of a `Memory` request's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    pub gpa: u64,
    pub length: u64,
}

/// Encodes a range table.
pub fn encode_ranges(ranges: &[MemoryRange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.len() * RANGE_LEN);
    for r in ranges {
        out.extend_from_slice(&r.gpa.to_le_bytes());
        out.extend_from_slice(&r.length.to_le_bytes());
    }
    out
}

/// Reads a `Memory` request's table of `len` bytes.
pub fn read_ranges(r: &mut impl Read, len: u64) -> Result<Vec<MemoryRange>, ProtocolError> {
    if !len.is_multiple_of(RANGE_LEN as u64) {
        return Err(ProtocolError::RangeTable(len));
    }
    if len / RANGE_LEN as u64 > MAX_RANGES {
        return Err(ProtocolError::TooLarge {
            what: "a memory range table",
            len,
            max: MAX_RANGES * RANGE_LEN as u64,
        });
    }
    let mut table = vec![0u8; len as usize];
    r.read_exact(&mut table)
        .map_err(io("reading a memory range table"))?;
    Ok(table
        .chunks_exact(RANGE_LEN)
        .map(|entry| {
            let mut gpa = [0u8; 8];
            let mut length = [0u8; 8];
            gpa.copy_from_slice(&entry[..8]);
            length.copy_from_slice(&entry[8..]);
            MemoryRange {
                gpa: u64::from_le_bytes(gpa),
                length: u64::from_le_bytes(length),
            }
        })
        .collect())
}

const STATUS_OK: u16 = 1;
const STATUS_ERROR: u16 = 2;

fn response_header(status: u16, length: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..2].copy_from_slice(&status.to_le_bytes());
    out[8..].copy_from_slice(&length.to_le_bytes());
    out
}

/// Answers OK.
pub fn write_ok(w: &mut impl Write) -> Result<(), ProtocolError> {
    w.write_all(&response_header(STATUS_OK, 0))
        .map_err(io("answering"))
}

/// Answers Error with `reason`.
pub fn write_error(w: &mut impl Write, reason: &str) -> Result<(), ProtocolError> {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON as usize)];
    w.write_all(&response_header(STATUS_ERROR, reason.len() as u64))
        .and_then(|()| w.write_all(reason))
        .map_err(io("answering"))
}

/// Reads a response: `Ok` for OK, [`ProtocolError::Refused`] with the peer's reason for
/// Error.
pub fn read_response(r: &mut impl Read) -> Result<(), ProtocolError> {
    let mut bytes = [0u8; HEADER_LEN];
    r.read_exact(&mut bytes).map_err(io("reading the answer"))?;
    let status = u16::from_le_bytes([bytes[0], bytes[1]]);
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[8..]);
    let length = u64::from_le_bytes(length);
    match status {
        STATUS_OK if length == 0 => Ok(()),
        STATUS_ERROR if length <= MAX_REASON => {
            let mut reason = vec![0u8; length as usize];
            r.read_exact(&mut reason)
                .map_err(io("reading the reason of a refusal"))?;
            let reason = String::from_utf8_lossy(&reason).into_owned();
            Err(ProtocolError::Refused(if reason.is_empty() {
                "no reason given".into()
            } else {
                reason
            }))
        }
        STATUS_ERROR => Err(ProtocolError::TooLarge {
            what: "a refusal's reason",
            len: length,
            max: MAX_REASON,
        }),
        other => Err(ProtocolError::BadStatus(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_cloud_hypervisors_layout() {
        let bytes = Request::new(Command::Memory, 0x20).to_bytes();
        assert_eq!(bytes[..2], [4, 0]);
        assert_eq!(bytes[2..8], [0; 6]);
        assert_eq!(bytes[8..], 0x20u64.to_le_bytes());
        let start = Request::new(Command::Start, 0).to_bytes();
        assert_eq!(start[..8], [1, 0, 0, 0, b'A', b'C', b'C', VERSION]);
        let parsed = Request::from_bytes(&start).unwrap();
        assert_eq!(parsed.command, Command::Start);
        parsed.check_start().unwrap();
    }

    #[test]
    fn a_start_without_our_tag_is_refused_by_name() {
        let mut bytes = Request::new(Command::Start, 0).to_bytes();
        bytes[2..8].copy_from_slice(&[0; 6]);
        let e = Request::from_bytes(&bytes)
            .unwrap()
            .check_start()
            .unwrap_err();
        assert!(e.to_string().contains("not an Accordion"), "{e}");
        bytes[0] = 42;
        assert!(matches!(
            Request::from_bytes(&bytes),
            Err(ProtocolError::UnknownCommand(42))
        ));
    }

    #[test]
    fn range_tables_round_trip_and_bad_ones_are_refused() {
        let ranges = [
            MemoryRange {
                gpa: 0x1000,
                length: 0x2000,
            },
            MemoryRange {
                gpa: 1 << 32,
                length: 2 << 20,
            },
        ];
        let bytes = encode_ranges(&ranges);
        assert_eq!(bytes.len(), 32);
        let back = read_ranges(&mut &bytes[..], 32).unwrap();
        assert_eq!(back, ranges);
        assert!(matches!(
            read_ranges(&mut &bytes[..], 17),
            Err(ProtocolError::RangeTable(17))
        ));
        assert!(matches!(
            read_ranges(&mut &bytes[..], (MAX_RANGES + 1) * 16),
            Err(ProtocolError::TooLarge { .. })
        ));
        // A table cut short is an I/O error, not a panic.
        assert!(read_ranges(&mut &bytes[..20], 32).is_err());
    }

    #[test]
    fn error_answers_carry_their_reason() {
        let mut wire = Vec::new();
        write_ok(&mut wire).unwrap();
        write_error(&mut wire, "range 0x1000 is unplugged").unwrap();
        let mut r = &wire[..];
        read_response(&mut r).unwrap();
        match read_response(&mut r) {
            Err(ProtocolError::Refused(reason)) => assert_eq!(reason, "range 0x1000 is unplugged"),
            other => panic!("{other:?}"),
        }
        // Cloud Hypervisor's Error has no reason.
        let ch = response_header(STATUS_ERROR, 0);
        assert!(
            matches!(read_response(&mut &ch[..]), Err(ProtocolError::Refused(r)) if r == "no reason given")
        );
        let odd = response_header(7, 0);
        assert!(matches!(
            read_response(&mut &odd[..]),
            Err(ProtocolError::BadStatus(7))
        ));
    }

    #[test]
    fn payloads_past_the_limit_are_refused_before_reading() {
        let e = read_payload(&mut io::empty(), "Config", MAX_PAYLOAD + 1).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { .. }));
    }
}
