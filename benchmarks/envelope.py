"""Envelope seal/open throughput next to raw libsodium sign/verify, measured in the same run.

Run: .venv/bin/python benchmarks/envelope.py [--reps 9] [--seconds 0.2]

- ``seal``: the generic :func:`gateway.envelope.seal` (every claim checked and encoded per call).
- ``sealer``: :class:`gateway.envelope.Sealer.seal`, the reusable sealer for a workload's fixed
  claims (byte-identical output; tests check it).
- ``open``: :func:`gateway.envelope.open_envelope` (full verification, no stamps, table resolver)
  followed by the real policy decision :func:`gateway.policy.decide` against a store holding the
  destination's policy and the origin's lineage chain; the benchmark asserts it allows.
- ``stamp``: :func:`gateway.envelope.stamp`, the transit stamp a gateway appends to every
  envelope it forwards (signs the stamp claims, re-emits the envelope), on the opened envelope;
  compared with ``sign``.
- ``sign`` / ``verify``: the baselines, libsodium ``crypto_sign`` / ``crypto_sign_open`` through
  PyNaCl's bindings on a message as long as the envelope's payload: what signing the payload
  directly would cost, with no envelope at all.

All operations are timed interleaved (one batch of each per repetition, so load from other
processes hits them alike); the figures are medians over ``--reps`` repetitions and each ratio is
the median of the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.bindings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.policy import LineageWindow, Rule
from gateway.envelope import Sealer, open_envelope, seal, stamp
from gateway.policy import ZERO_HASH, PolicyRevision, PolicyStore, decide
from identity.spiffe_id import parse_spiffe_id
from tests.gateway.envelope_fixtures import (
    GATEWAY_IDS,
    GATEWAY_KEYS,
    ORIGIN_ID,
    ORIGIN_KEY,
    POLICY_REV,
    ROUTING,
    T0,
    standard_resolver,
)

ORIGIN_SCOPE = "payments/checkout"
DESTINATION_SCOPE = "payments/ledger"


def policy_store() -> tuple[PolicyStore, bytes]:
    """The ledger's policy (allow payments/* at tier >= 1, managed lineage) and the origin scope's
    revision chain; returns the store and the lineage hash envelopes must carry."""
    origin = PolicyRevision(
        scope=ORIGIN_SCOPE,
        number=1,
        previous=ZERO_HASH,
        issued_at=T0 - 1000,
        rules=(Rule("checkout-from-payments", from_scopes=("payments/*",)),),
    )
    ledger = PolicyRevision(
        scope=DESTINATION_SCOPE,
        number=1,
        previous=ZERO_HASH,
        issued_at=T0 - 1000,
        rules=(
            Rule("audit-only", from_scopes=("audit/*",), min_tier=2),
            Rule("ledger-from-payments", from_scopes=("payments/*",), min_tier=1),
        ),
        lineage=(LineageWindow(("payments/*",), grace_revisions=1),),
    )
    return PolicyStore.build([origin, ledger]), origin.digest


def batch_size(fn: Callable[[], object], seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds``."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def interleaved_rates(
    fns: dict[str, Callable[[], object]], seconds: float, reps: int
) -> dict[str, list[float]]:
    """Operations per second of every function, one batch of each per repetition."""
    batches = {name: batch_size(fn, seconds) for name, fn in fns.items()}
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            n = batches[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()
    issuer = parse_spiffe_id(ORIGIN_ID)
    resolver = standard_resolver()
    store, lineage = policy_store()
    fixed = dict(
        issuer=issuer,
        origin_scope=ORIGIN_SCOPE,
        destination_scope=DESTINATION_SCOPE,
        tier=2,
        lineage=lineage,
        routing=ROUTING,
        signing_key=ORIGIN_KEY,
    )
    sealer = Sealer(**fixed)  # type: ignore[arg-type]
    gateway_id = parse_spiffe_id(GATEWAY_IDS[0])
    sk = nacl.bindings.crypto_sign_seed_keypair(ORIGIN_KEY.encode())[1]
    pk = ORIGIN_KEY.verify_key.encode()
    print(
        f"{'payload':>8} {'seal/s':>8} {'sealer/s':>9} {'sign/s':>8} {'seal%':>6} {'sealer%':>8}"
        f"   {'open/s':>8} {'verify/s':>9} {'open%':>6}   {'stamp/s':>8} {'stamp%':>7}"
    )
    for size in (64, 1024, 16 * 1024):
        payload = bytes(size)

        def do_seal(payload: bytes = payload) -> bytes:
            return seal(payload=payload, issued_at=T0, expires_at=T0 + 300, **fixed)  # type: ignore[arg-type]

        def do_sealer(payload: bytes = payload) -> bytes:
            return sealer.seal(payload, issued_at=T0, expires_at=T0 + 300)

        envelope = do_seal()
        verified = open_envelope(envelope, resolver=resolver, now=T0)
        assert decide(verified, store, T0).allow, decide(verified, store, T0)
        assert do_sealer()[:-size] != b""  # byte identity with seal() is tested in tests/

        def do_open(envelope: bytes = envelope) -> bool:
            return decide(open_envelope(envelope, resolver=resolver, now=T0), store, T0).allow

        def do_stamp(verified: object = verified) -> bytes:
            return stamp(
                verified,  # type: ignore[arg-type]
                gateway_id=gateway_id,
                signing_key=GATEWAY_KEYS[0],
                from_network="weave",
                to_network="cilium",
                rule="ledger-from-payments",
                policy_revision=POLICY_REV,
                now=T0,
            )

        assert open_envelope(do_stamp(), resolver=resolver, now=T0).hops == 1

        signed = nacl.bindings.crypto_sign(payload, sk)

        def raw_sign(payload: bytes = payload) -> bytes:
            return nacl.bindings.crypto_sign(payload, sk)

        def raw_verify(signed: bytes = signed) -> bytes:
            return nacl.bindings.crypto_sign_open(signed, pk)

        rates = interleaved_rates(
            {
                "seal": do_seal,
                "sealer": do_sealer,
                "sign": raw_sign,
                "open": do_open,
                "verify": raw_verify,
                "stamp": do_stamp,
            },
            args.seconds,
            args.reps,
        )
        med = {name: statistics.median(values) for name, values in rates.items()}
        print(
            f"{size:>8} {med['seal']:>8.0f} {med['sealer']:>9.0f} {med['sign']:>8.0f} "
            f"{median_ratio(rates['seal'], rates['sign']):>6.0%} "
            f"{median_ratio(rates['sealer'], rates['sign']):>8.0%}   "
            f"{med['open']:>8.0f} {med['verify']:>9.0f} "
            f"{median_ratio(rates['open'], rates['verify']):>6.0%}   "
            f"{med['stamp']:>8.0f} {median_ratio(rates['stamp'], rates['sign']):>7.0%}"
        )
    print("open = open_envelope + gateway.policy.decide (allow); targets: seal, open >= 80%")
    print("stamp = gateway.envelope.stamp (one hop), compared with sign (the same raw baseline)")


if __name__ == "__main__":
    main()
