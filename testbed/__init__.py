"""The testbed: real hosts, real servers, real clients, and wire-level proof.

This first cut holds the loopback services (OpenSSH sshd, pyftpdlib) and helpers the proxy's
integration tests, the demo and the benchmarks share. Network-namespace hosts, captures and
the scenario runner grow here next (see ARCHITECTURE.md).
"""
