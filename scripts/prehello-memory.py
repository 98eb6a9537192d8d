#!/usr/bin/env python3
# Measures what connections that never say Hello cost a gateway: starts the
# gateway binary, opens N WebSockets that each hold an unfinished frame of
# PARTIAL bytes (0: none), and prints the RSS before and after.
# Usage: scripts/prehello-memory.py GATEWAY_BIN N PARTIAL
import socket, os, sys, time, base64, struct, subprocess, re
bin_, n, partial = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
p = subprocess.Popen([bin_, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--max-connections-per-ip", "5000", "--max-sockets-per-ip", "6000", "--connection-rate-per-ip", "100000", "--connection-burst-per-ip", "100000", "--hello-timeout-ms", "600000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = p.stdout.readline()
addr = re.search(r"http://([\d.:]+)", line).group(1)
host, port = addr.split(":"); port = int(port)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
time.sleep(1)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    resp = b""
    while b"\r\n\r\n" not in resp: resp += s.recv(4096)
    assert b" 101 " in resp, resp
    if partial:
        # a masked binary frame announcing `partial` bytes, sent all but one byte
        hdr = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", partial) + b"\0\0\0\0"
        s.sendall(hdr + b"\0" * (partial - 1))
    socks.append(s)
time.sleep(3)
after = rss()
print(f"{n} pre-Hello connections, each holding an unfinished {partial}-byte frame: RSS {before/1024:.1f} MiB -> {after/1024:.1f} MiB, {(after-before)/n:.1f} KiB per connection")
p.kill()
