"""Real-process test harness shared by tests/ and benchmarks/: `python cli.py serve` on a free port
(servers.py) and a recording Socket.IO client (peer.py). Nothing outside tests and benchmarks uses it."""
