"""Regenerate tests/vectors/envelope/*.json: deterministic envelope vectors from fixed keys.

Run: .venv/bin/python scripts/gen_envelope_vectors.py [--check]

Keys come from fixed seeds (tests/gateway/envelope_fixtures.py), envelope ids and times are fixed,
and Ed25519 is deterministic, so every vector is reproducible byte for byte. The one exception is
the sealed payload: a NaCl SealedBox uses a fresh ephemeral key, so its ciphertext was produced
once and is read back from the existing vector file (and checked to unseal) on regeneration.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import cbor2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.envelope import decode_unverified, encode, open_envelope, seal, seal_claims, stamp  # noqa: E402
from gateway.envelope.cose import sign1  # noqa: E402
from gateway.envelope.recipe import digest  # noqa: E402
from identity.anchor_contract import key_id  # noqa: E402
from identity.spiffe_id import parse_spiffe_id  # noqa: E402
from tests.gateway.envelope_fixtures import (  # noqa: E402
    DESTINATION_BOX,
    GATEWAY_IDS,
    GATEWAY_KEYS,
    LINEAGE,
    ORIGIN_ID,
    ORIGIN_KEY,
    POLICY_REV,
    ROUTING,
    T0,
    seeded_signing_key,
    standard_resolver,
)

OUT = ROOT / "tests" / "vectors" / "envelope"
PAYLOAD = b'{"order": 4711, "amount": "12.00 EUR"}'


def _base(**kw: Any) -> bytes:
    fields: dict[str, Any] = dict(
        issuer=parse_spiffe_id(ORIGIN_ID),
        origin_scope="payments/checkout",
        destination_scope="payments/ledger",
        tier=2,
        lineage=LINEAGE,
        routing=ROUTING,
        issued_at=T0,
        expires_at=T0 + 300,
        payload=PAYLOAD,
        signing_key=ORIGIN_KEY,
        envelope_id=bytes.fromhex("00112233445566778899aabbccddeeff"),
    )
    fields.update(kw)
    return seal(**fields)


def _hop(data: bytes, n: int) -> bytes:
    verified = open_envelope(data, resolver=standard_resolver(), now=T0 + 1)
    return stamp(
        verified,
        gateway_id=parse_spiffe_id(GATEWAY_IDS[n]),
        signing_key=GATEWAY_KEYS[n],
        from_network=f"net-{n}",
        to_network=f"net-{n + 1}",
        rule="allow-checkout",
        policy_revision=POLICY_REV,
        now=T0 + 1,
    )


def _sealed(previous: dict[str, Any] | None) -> bytes:
    ciphertext: bytes | None = None
    if previous is not None:
        for case in previous["cases"]:
            if case["name"] == "sealed-no-stamps":
                ciphertext = decode_unverified(bytes.fromhex(case["envelope"])).payload
    if ciphertext is None:
        return _base(seal_to=DESTINATION_BOX.public_key.encode())
    claims = dataclasses.replace(
        decode_unverified(_base()).claims,
        payload_digest=digest(ciphertext),
        payload_length=len(ciphertext),
        sealed=True,
    )
    return seal_claims(claims, ciphertext, ORIGIN_KEY)


def _anchors() -> list[dict[str, Any]]:
    resolver = standard_resolver()
    return [
        {
            "kid": a.kid.hex(),
            "public_key": a.public_key.hex(),
            "spiffe_id": str(a.spiffe_id),
            "scopes": list(a.scopes),
            "max_tier": a.max_tier,
            "not_before": a.not_before,
            "not_after": a.not_after,
        }
        for a in resolver.anchors.values()
    ]


def _invalid(valid: bytes, stamped: bytes) -> list[tuple[str, bytes, int, str]]:
    env = decode_unverified(stamped)
    claims_map = cbor2.loads(decode_unverified(valid).origin.payload)
    kid = key_id(ORIGIN_KEY.verify_key.encode())

    def resigned(changes: dict[int, Any]) -> bytes:
        m = dict(claims_map)
        m.update(changes)
        return encode(sign1({1: -8, 4: kid}, cbor2.dumps(m, canonical=True), ORIGIN_KEY), PAYLOAD)

    flipped_sig = bytearray(valid)
    # Last signature byte: before the payload, its 2-byte bstr head and the empty stamp array.
    flipped_sig[len(valid) - len(PAYLOAD) - 4] ^= 1
    s = [x.encoded for x in env.stamps]
    return [
        ("unsupported-version", b"\x84\x02" + valid[2:], T0, "unsupported_version"),
        ("non-canonical-version", b"\x84\x18\x01" + valid[2:], T0, "non_canonical"),
        ("truncated", valid[:-1], T0, "malformed"),
        ("expired", valid, T0 + 300 + 60, "expired"),
        ("not-yet-valid", valid, T0 - 61, "not_yet_valid"),
        ("lifetime-too-long", resigned({4: T0 + 3601}), T0, "lifetime_too_long"),
        ("unknown-claim", resigned({-70000: 0}), T0, "unknown_critical"),
        ("unknown-anchor", _base(signing_key=seeded_signing_key("stranger")), T0, "unknown_anchor"),
        ("bad-signature", bytes(flipped_sig), T0, "bad_signature"),
        ("scope-not-endorsed", _base(origin_scope="billing/x"), T0, "scope_not_endorsed"),
        ("tier-exceeds", _base(tier=4), T0, "tier_exceeds_endorsement"),
        ("payload-mismatch", encode(env.origin_bytes, PAYLOAD + b" "), T0, "payload_mismatch"),
        ("stamps-reordered", encode(env.origin_bytes, env.payload, [s[1], s[0]]), T0 + 1,
         "stamp_chain_broken"),
        ("stamp-truncated-front", encode(env.origin_bytes, env.payload, s[1:]), T0 + 1,
         "stamp_chain_broken"),
    ]  # fmt: skip


def build(previous: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """All vector documents, keyed by file name."""
    plain = _base()
    one = _hop(plain, 0)
    two = _hop(one, 1)
    sealed = _sealed(previous)
    valid_cases = [
        ("no-stamps", plain, T0, None),
        ("one-stamp", one, T0 + 1, None),
        ("two-stamps", two, T0 + 1, None),
        ("sealed-no-stamps", sealed, T0, PAYLOAD),
    ]
    valid = {
        "about": "Envelopes that open with the anchors in anchors.json at time `now`.",
        "cases": [
            {
                "name": name,
                "now": now,
                "envelope": data.hex(),
                "issuer": ORIGIN_ID,
                "hops": len(decode_unverified(data).stamps),
                "sealed": plaintext is not None,
                "plaintext": (plaintext or decode_unverified(data).payload).hex(),
            }
            for name, data, now, plaintext in valid_cases
        ],
    }
    invalid = {
        "about": "Envelopes that must be refused with `reason` at time `now`.",
        "cases": [
            {"name": n, "now": now, "envelope": d.hex(), "reason": r}
            for n, d, now, r in _invalid(plain, two)
        ],
    }
    anchors = {
        "about": "Verified anchors (as the registry would resolve them) and the X25519 private "
        "key of scope payments/ledger, for the sealed vector. Test keys only.",
        "anchors": _anchors(),
        "destination_box_private_key": DESTINATION_BOX.encode().hex(),
    }
    return {"valid.json": valid, "invalid.json": invalid, "anchors.json": anchors}


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    previous_path = OUT / "valid.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else None
    docs = build(previous)
    if "--check" in argv:
        stale = [n for n, d in docs.items() if (OUT / n).read_text() != _dump(d)]
        print("stale: " + ", ".join(stale) if stale else "vectors are current")
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (OUT / name).write_text(_dump(doc))
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
