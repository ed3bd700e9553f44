//! The API under load: 50 clients pinging at once while the guest works. In a file of its
//! own so that it runs alone, not beside another test's guest (the nested test host has two
//! CPUs, and a boot next door would measure the neighbour, not the API).

mod common;

use std::time::{Duration, Instant};

use common::api::{booted_with_api, http, socket_in};
use common::{field, TempDir, BOOT_TIMEOUT, CMD_DONE};

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn fifty_concurrent_clients_while_the_guest_works() {
    const CLIENTS: usize = 50;
    const PINGS_EACH: usize = 10;
    let dir = TempDir::new("api-concurrent");
    let socket = socket_in(&dir.0);
    let mut vmm = booted_with_api("api-concurrent", &dir);
    // Keep the guest busy meanwhile: a CPU-bound loop, then a marker (computed, so that it
    // cannot be mistaken for the command itself).
    vmm.send("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo busy-$i-done");

    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                // One keep-alive connection per client.
                let mut client =
                    api_client::ApiClient::connect(&socket).map_err(|e| format!("connect: {e}"))?;
                let mut latencies = Vec::with_capacity(PINGS_EACH);
                for _ in 0..PINGS_EACH {
                    let start = Instant::now();
                    let body = client
                        .command("GET", "vmm.ping", None)
                        .map_err(|e| format!("ping: {e}"))?
                        .ok_or("a ping without a body")?;
                    latencies.push(start.elapsed());
                    if !body.contains("\"pid\"") {
                        return Err(format!("a ping without the pid: {body}"));
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        match thread.join().expect("a client thread panicked") {
            Ok(mine) => latencies.extend(mine),
            // The VMM's side of the story, with the client's.
            Err(e) => panic!(
                "a client failed: {e}\n--- accordion stderr ---\n{}",
                vmm.stderr()
            ),
        }
    }
    let total = started.elapsed();
    latencies.sort();
    assert_eq!(
        latencies.len(),
        CLIENTS * PINGS_EACH,
        "every ping is answered"
    );
    let at = |q: usize| latencies[(latencies.len() - 1) * q / 100];
    eprintln!(
        "{CLIENTS} clients x {PINGS_EACH} pings in {total:?}: median {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(90),
        at(99),
        at(100)
    );
    // The latencies are printed for the log; limits on them belong to a benchmark, not to
    // a test in a test host that shares two CPUs with TCG.

    vmm.wait_for("busy-20000-done", BOOT_TIMEOUT);
    vmm.wait_for(CMD_DONE, BOOT_TIMEOUT);
    let done = vmm.run_command("echo after-the-storm");
    assert_eq!(field(&done, "rc"), Some(0));
    assert_eq!(
        http(&socket, "GET", "/api/v1/vm.info", None).json()["state"],
        "Running"
    );
}
