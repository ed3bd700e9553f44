//! `--event-monitor`: one JSON object a line for each lifecycle event, in Cloud Hypervisor's
//! shape (`timestamp` since the VMM started, `source`, `event`, `properties`). A thread of
//! its own does the writing, so a slow reader never holds up the VMM.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::seccomp::ThreadFilter;

#[derive(Serialize)]
struct Timestamp {
    secs: u64,
    nanos: u32,
}

#[derive(Serialize)]
struct Event<'a> {
    timestamp: Timestamp,
    source: &'a str,
    event: &'a str,
    properties: Option<&'a BTreeMap<String, String>>,
}

/// Renders one event as a line of JSON (with its newline).
fn render(
    since_start: Duration,
    source: &str,
    event: &str,
    properties: Option<&BTreeMap<String, String>>,
) -> String {
    let event = Event {
        timestamp: Timestamp {
            secs: since_start.as_secs(),
            nanos: since_start.subsec_nanos(),
        },
        source,
        event,
        properties,
    };
    // Serialising strings and integers cannot fail.
    let mut line = serde_json::to_string(&event).unwrap_or_default();
    line.push('\n');
    line
}

struct Monitor {
    start: Instant,
    /// `None` tells the writer thread to finish.
    lines: Sender<Option<String>>,
}

static MONITOR: OnceLock<Monitor> = OnceLock::new();

/// The writer thread; `finish` waits until every event raised before it is written.
pub struct EventMonitorThread(Option<JoinHandle<()>>);

impl EventMonitorThread {
    pub fn finish(mut self) {
        if let Some(m) = MONITOR.get() {
            let _ = m.lines.send(None);
        }
        if let Some(handle) = self.0.take() {
            if handle.join().is_err() {
                log::error!("the event monitor thread panicked");
            }
        }
    }
}

/// Starts the writer thread on `file`; it applies `seccomp` first. Events raised before
/// this, or with no monitor, are dropped.
pub fn start(mut file: File, seccomp: ThreadFilter) -> std::io::Result<EventMonitorThread> {
    let (tx, rx) = channel::<Option<String>>();
    let handle = std::thread::Builder::new()
        .name("event-monitor".into())
        .spawn(move || {
            if let Err(e) = seccomp.apply_to_current() {
                log::error!("no events are written: {e}");
                return;
            }
            for line in rx.iter().map_while(|line| line) {
                if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                    log::warn!("event monitor: {e}; no more events are written");
                    return;
                }
            }
        })?;
    let installed = MONITOR
        .set(Monitor {
            start: Instant::now(),
            lines: tx,
        })
        .is_ok();
    if !installed {
        log::warn!("event monitor already started");
    }
    Ok(EventMonitorThread(Some(handle)))
}

/// Records an event with properties.
pub fn event_with(source: &str, event: &str, properties: Option<BTreeMap<String, String>>) {
    if let Some(m) = MONITOR.get() {
        let line = render(m.start.elapsed(), source, event, properties.as_ref());
        // The writer thread only goes away when the monitor file failed; then there is
        // nobody to tell.
        let _ = m.lines.send(Some(line));
    }
}

/// Records an event without properties.
pub fn event(source: &str, event: &str) {
    event_with(source, event, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_object_per_line() {
        let mut props = BTreeMap::new();
        props.insert("id".to_string(), "mem0".to_string());
        let line = render(Duration::new(3, 5), "vm", "booted", Some(&props));
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"]["secs"], 3);
        assert_eq!(v["timestamp"]["nanos"], 5);
        assert_eq!(v["source"], "vm");
        assert_eq!(v["event"], "booted");
        assert_eq!(v["properties"]["id"], "mem0");
        let bare = render(Duration::ZERO, "vmm", "starting", None);
        let v: serde_json::Value = serde_json::from_str(&bare).unwrap();
        assert!(v["properties"].is_null());
    }
}
