"""The gateway's Prometheus metrics, kept in a registry of its own so several gateways (the demo,
tests) can live in one process without mixing their figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Buckets for per-envelope processing time: the target is well under 2 ms at p99.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0)


class GatewayMetrics:
    """Counters, gauges and histograms for one gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "sluice_decisions",
            "Envelopes decided, by decision, reason code and the network they arrived on.",
            ["decision", "reason", "network"],
            registry=self.registry,
        )
        self.frames_rejected = Counter(
            "sluice_frames_rejected",
            "Connections cut for protocol errors, by reason code and network.",
            ["reason", "network"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "sluice_delivered",
            "Envelopes acknowledged by their next hop, by route target.",
            ["target"],
            registry=self.registry,
        )
        self.spooled = Counter(
            "sluice_spooled",
            "Envelopes written to the spool because the next hop was unavailable.",
            ["target"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "sluice_connections",
            "Open inbound connections per network.",
            ["network"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "sluice_connections_refused",
            "Inbound connections refused because the listener's limit was reached.",
            ["network"],
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "sluice_spool_entries",
            "Envelopes waiting in the spool.",
            registry=self.registry,
        )
        self.peer_up = Gauge(
            "sluice_link_up",
            "1 when the outbound link to a route target is connected.",
            ["target"],
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "sluice_processing_seconds",
            "Time from a complete envelope frame to the decision (verify, policy, stamp).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.identity_rotations = Counter(
            "sluice_identity_rotations",
            "SVID or bundle updates applied without restart.",
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "sluice_config_reloads",
            "Configuration reloads, by result.",
            ["result"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
