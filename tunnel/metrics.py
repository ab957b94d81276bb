"""Prometheus metrics (`[proxy] metrics = "127.0.0.1:9108"`), with prometheus_client.

Two sources, so that `tunnel ctl status` and the metrics cannot disagree:
- what a session was, counted once when it ends, from its audit record (the same record the
  audit log gets): sessions by rule, action and result; bytes by rule and direction; SSH
  failures by kind; data channels by kind; session durations;
- what is live, read at scrape time from the same places `tunnel ctl status` reads: sessions
  open, SSH connections and channels open, SSH logins made, bytes moved by live sessions.

Labels are rule ids, action names and fixed words only: never a user name, a password, a
host or an FTP file name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tunnel.audit import AuditRecord

if TYPE_CHECKING:
    from tunnel.context import Context

log = logging.getLogger("tunnel.metrics")

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600)


class _Live(Collector):
    """Read at every scrape, from the context, as `tunnel ctl status` reads it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        sessions = list(self.ctx.sessions.values())
        yield GaugeMetricFamily("tunnel_sessions_open", "SOCKS sessions open now",
                                value=len(sessions))
        stats = self.ctx.pool.stats()
        yield GaugeMetricFamily("tunnel_ssh_connections_open", "SSH connections open now",
                                value=stats["ssh_connections"])
        yield GaugeMetricFamily("tunnel_ssh_channels_open", "SSH channels open now",
                                value=stats["ssh_channels"])
        yield CounterMetricFamily("tunnel_ssh_logins", "SSH logins that succeeded",
                                  value=stats["ssh_connections_made"])
        moved = CounterMetricFamily("tunnel_bytes_moved", "bytes moved by all sessions, "
                                    "ended and live (as tunnel ctl status)", labels=["direction"])
        moved.add_metric(["up"], self.ctx.bytes_up + sum(s.counts.bytes_up for s in sessions))
        moved.add_metric(["down"], self.ctx.bytes_down
                         + sum(s.counts.bytes_down for s in sessions))
        yield moved


class Metrics:
    def __init__(self, ctx: Context) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Counter("tunnel_sessions", "sessions that ended",
                                ["rule", "action", "result"], registry=self.registry)
        self.bytes = Counter("tunnel_session_bytes", "bytes of sessions that ended",
                             ["rule", "direction"], registry=self.registry)
        self.ssh_failures = Counter("tunnel_ssh_failures", "sessions whose SSH failed, by "
                                    "kind", ["kind"], registry=self.registry)
        self.data_channels = Counter("tunnel_data_channels", "FTP data channels, by kind",
                                     ["kind"], registry=self.registry)
        self.duration = Histogram("tunnel_session_duration_seconds", "how long sessions ran",
                                  ["action"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.reloads = Counter("tunnel_config_reloads", "config reloads, by result",
                               ["result"], registry=self.registry)
        self.registry.register(_Live(ctx))

    def session_ended(self, rec: AuditRecord) -> None:
        rule, action = rec.rule or "", rec.action or "none"
        self.sessions.labels(rule, action, rec.result).inc()
        self.bytes.labels(rule, "up").inc(rec.bytes_up)
        self.bytes.labels(rule, "down").inc(rec.bytes_down)
        if rec.ssh_failure:
            self.ssh_failures.labels(rec.ssh_failure).inc()
        if action in ("ftp-data", "ftp-sftp-data"):
            self.data_channels.labels("passive").inc()
        elif action == "ftp-data-bind":
            self.data_channels.labels("bind").inc()
        elif action == "ftp-tunnel" and rec.data_channels:
            self.data_channels.labels("active").inc(rec.data_channels)
        self.duration.labels(action).observe(rec.duration_ms / 1000)

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
