#!/usr/bin/env python3
"""Expose a unix socket on a loopback TCP port: each TCP connection gets its own connection
to the unix socket, and bytes are copied both ways unchanged until either side closes.

Usage: unix-tcp-proxy.py UNIX_SOCKET [--host 127.0.0.1] [--port 0] [--port-file FILE]

Listens on HOST (a loopback address only: 127.0.0.0/8 or ::1) and PORT (0 picks a free
one). Once listening it prints the port as one line on stdout, and writes it to FILE when
--port-file is given (written aside and renamed, so a reader never sees half of it). Runs
until SIGTERM or SIGINT. Python 3 stdlib only.
"""

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading

CHUNK = 64 * 1024


def pump(src, dst):
    """Copy src to dst until EOF or an error, then pass the EOF on (half-close)."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def serve_client(client, path):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError as e:
        print(f"unix-tcp-proxy: connecting to {path}: {e}", file=sys.stderr)
        upstream.close()
        client.close()
        return
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    upstream.close()
    client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("unix_socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host {args.host} is not a loopback address")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    port = listener.getsockname()[1]

    # Exit quietly on SIGTERM/SIGINT; daemon threads end with the process.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.rename(tmp, args.port_file)
    print(port, flush=True)

    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve_client, args=(client, args.unix_socket), daemon=True).start()


if __name__ == "__main__":
    main()
