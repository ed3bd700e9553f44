//! A small `log` backend: one line per record, to stderr or a file, with the elapsed time
//! and the thread name (`vcpu0`, `vmm`, ...).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    start: Instant,
    file: Option<Mutex<File>>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let elapsed = self.start.elapsed();
        let thread = std::thread::current();
        let line = format!(
            "accordion: {}.{:06}s <{}> {}: {}\n",
            elapsed.as_secs(),
            elapsed.subsec_micros(),
            thread.name().unwrap_or("?"),
            record.level(),
            record.args()
        );
        match &self.file {
            Some(f) => {
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Level for a `-v` count: warnings and errors by default, then info, debug, trace.
pub fn level_for_verbosity(count: u8) -> LevelFilter {
    match count {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger once for the process.
pub fn init(level: LevelFilter, file: Option<File>) -> Result<(), log::SetLoggerError> {
    let logger = Logger {
        start: Instant::now(),
        file: file.map(Mutex::new),
    };
    log::set_boxed_logger(Box::new(logger))?;
    log::set_max_level(level);
    Ok(())
}
