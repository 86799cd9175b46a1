"""Real-process test harness shared by tests/ and benchmarks/: `python cli.py serve` on a free port
(servers.py) and a recording Socket.IO client (peer.py). Nothing outside tests and benchmarks uses it,
so it is not one of the installed packages (pytest imports it from the repository root)."""
