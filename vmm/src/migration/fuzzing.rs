//! The body of the `migration_stream` cargo-fuzz target (vmm/fuzz): what a destination runs
//! on the bytes a sender sends, on arbitrary input. The first byte picks:
//!
//! - 0: the whole stream, through the receiver (`destination::run`), into a guest memory of
//!   two small places with guard bytes around them;
//! - 1: a `Config` payload (`ConfigPayload::parse`);
//! - 2: a `State` payload.
//!
//! Nothing may panic; no byte outside the places may change; a migration that succeeds has
//! seen Start, Config and Complete; every answer the receiver writes is a well-formed
//! response.

use std::io::{Cursor, Read, Write};

use super::destination::{self, Builder};
use super::transport::FdStream;
use super::{protocol, ConfigPayload, Place, StatePayload};

const PLACE: usize = 64 << 10;
const GUARD: u8 = 0xa5;

/// Input in, answers out.
struct Wire {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A VMM that builds nothing: the places are in `memory`; a payload starting with `!` is
/// refused.
struct Fake {
    places: Vec<Place>,
    configured: bool,
    completed: bool,
}

impl FdStream for &mut Wire {
    fn read_with_fd(&mut self, buf: &mut [u8]) -> std::io::Result<Option<std::fs::File>> {
        self.input.read_exact(buf)?;
        Ok(None)
    }

    fn write_with_fd(&mut self, buf: &[u8], _fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.write_all(buf)
    }
}

impl Builder for &mut Fake {
    fn config(
        &mut self,
        payload: Vec<u8>,
        _files: Vec<std::fs::File>,
    ) -> Result<Vec<Place>, String> {
        if payload.first() == Some(&b'!') {
            return Err("refused".into());
        }
        self.configured = true;
        Ok(self.places.clone())
    }

    fn state(&mut self, payload: Vec<u8>) -> Result<(), String> {
        match payload.first() {
            Some(b'!') => Err("refused".into()),
            _ => Ok(()),
        }
    }

    fn complete(&mut self, _paused: bool) -> Result<(), String> {
        self.completed = true;
        Ok(())
    }
}

fn stream(data: &[u8]) {
    // guard | place at 0 | guard | place at 4 GiB | guard
    let mut memory = vec![GUARD; 5 * PLACE];
    let base = memory.as_mut_ptr() as u64;
    let places = vec![
        Place {
            gpa: 0,
            host: base + PLACE as u64,
            len: PLACE as u64,
        },
        Place {
            gpa: 1 << 32,
            host: base + 3 * PLACE as u64,
            len: PLACE as u64,
        },
    ];
    let mut fake = Fake {
        places,
        configured: false,
        completed: false,
    };
    let mut wire = Wire {
        input: Cursor::new(data.to_vec()),
        output: Vec::new(),
    };
    let result = destination::run(&mut wire, &mut fake);
    for (i, chunk) in memory.chunks(PLACE).enumerate() {
        if i % 2 == 0 {
            assert!(chunk.iter().all(|&b| b == GUARD), "guard {i} was written");
        }
    }
    if result.is_ok() {
        assert!(fake.configured && fake.completed, "{result:?}");
    }
    // Every answer is a response header (and a reason).
    let mut answers = &wire.output[..];
    while !answers.is_empty() {
        match protocol::read_response(&mut answers) {
            Ok(()) | Err(protocol::ProtocolError::Refused(_)) => {}
            Err(e) => panic!("a malformed answer: {e}"),
        }
    }
}

/// Runs one input through what its first byte picks.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => stream(rest),
        1 => {
            let _ = ConfigPayload::parse(rest);
        }
        _ => {
            let _ = serde_json::from_slice::<StatePayload>(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: u16, headers: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut out = command.to_le_bytes().to_vec();
        out.extend_from_slice(&headers);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn memory(ranges: &[(u64, u64)], data: &[u8]) -> Vec<u8> {
        let table = protocol::encode_ranges(
            &ranges
                .iter()
                .map(|&(gpa, length)| protocol::MemoryRange { gpa, length })
                .collect::<Vec<_>>(),
        );
        let mut out = request(4, [0; 6], &table);
        out.extend_from_slice(data);
        out
    }

    fn start() -> Vec<u8> {
        request(1, protocol::START_HEADERS, &[])
    }

    #[test]
    fn a_whole_stream_and_hostile_ones() {
        let mut good = vec![0u8];
        good.extend(start());
        good.extend(request(2, [0; 6], b"{}"));
        good.extend(memory(&[(0x1000, 16), (1 << 32, 8)], &[7u8; 24]));
        good.extend(request(3, [0; 6], b"{}"));
        good.extend(request(5, [0; 6], &[]));
        run(&good);
        for hostile in [
            memory(&[(PLACE as u64 - 8, 16)], &[1u8; 16]),
            memory(&[(0, u64::MAX)], &[]),
            memory(&[(u64::MAX - 4, 8)], &[]),
            memory(&[(2 << 32, 8)], &[1u8; 8]),
            memory(&[(0, 4096)], &[1u8; 100]),
        ] {
            let mut input = vec![0u8];
            input.extend(start());
            input.extend(request(2, [0; 6], b"{}"));
            input.extend(hostile);
            run(&input);
        }
        // Memory before Config, a second Start, a refused Config, garbage.
        let mut input = vec![0u8];
        input.extend(start());
        input.extend(memory(&[(0, 8)], &[1u8; 8]));
        run(&input);
        run(&[0, 1, 0, 9, 9, 9]);
        let mut input = vec![0u8];
        input.extend(start());
        input.extend(request(2, [0; 6], b"!no"));
        run(&input);
    }

    /// Pseudo-random streams built from valid pieces, cut and flipped.
    #[test]
    fn pseudo_random_streams() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut input = vec![0u8];
            input.extend(start());
            input.extend(request(2, [0; 6], b"{}"));
            for _ in 0..(next() % 4) {
                let gpa = if next() % 2 == 0 {
                    next() % (2 * PLACE as u64)
                } else {
                    (1 << 32) + next() % (2 * PLACE as u64)
                };
                let len = next() % 512;
                input.extend(memory(&[(gpa, len)], &vec![3u8; len as usize]));
            }
            input.extend(request(3, [0; 6], b"{}"));
            input.extend(request(5 + (next() % 4) as u16, [0; 6], &[]));
            let cut = (next() as usize) % (input.len() + 1);
            input.truncate(cut.max(1));
            if input.len() > 1 && next() % 2 == 0 {
                let at = 1 + (next() as usize) % (input.len() - 1);
                input[at] ^= 1 << (next() % 8);
            }
            run(&input);
        }
    }
}
