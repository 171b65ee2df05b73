"""``sluice audit evidence export``: write the evidence bundle of a running gateway's configuration.

What goes in (format: :mod:`gateway.audit.evidence`), all read from the files the gateway itself
reads:

- trust bundles: ``[trust.bundles]``, the peers' bundle files, the identity's bundle file (file
  identity source), and bundles given on the command line. The gateway's own trust domain comes,
  with a ``workload_api`` identity source, from the Workload API (the SPIRE agent) as the
  gateway sees it, unless a file for it was given;
- anchor endorsements: every ``*.endorsement`` in ``[trust] anchors_dir``, the
  ``[trust] endorsements`` files, and the gateway's own endorsement (``[anchor] endorsement``,
  which the running gateway rewrites on every SVID rotation);
- every revision of every scope policy, signed as a policy document
  (:func:`gateway.policy.export_revision`) with the gateway's anchor key;
- the revocation list ``anchors_dir/revoked.toml``, the tier names, peers and routes.

Export is I/O (files, and the Workload API socket); it never writes anything but ``out``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from config.gateway import GatewayConfig, IdentitySource, load_gateway_config
from config.policy import TierNames
from gateway.audit.evidence import (
    Evidence,
    EvidenceError,
    EvidencePeer,
    EvidenceRoute,
    dump_evidence,
)
from gateway.policy.files import load_policy_store
from gateway.policy.signed import export_revision
from identity.anchors import load_private_key, write_file_atomic
from identity.bundle import BundleSet, load_bundle_file
from identity.endorsement import MAX_ENDORSEMENT_BYTES, decode_unverified
from identity.registry import ENDORSEMENT_SUFFIX, Revocations, load_revocations
from identity.sources import IdentityUnavailable, WorkloadApiSource
from identity.spiffe_id import TrustDomain

IDENTITY_TIMEOUT = 10.0  # seconds to wait for the Workload API's first answer


def export_evidence(
    config_path: Path | str,
    out: Path | str,
    *,
    extra_bundles: Mapping[TrustDomain, Path] | None = None,
    identity_timeout: float = IDENTITY_TIMEOUT,
    now: int | None = None,
) -> Evidence:
    """Build the evidence bundle of the gateway configured by ``config_path`` and write it.

    Args:
        config_path: the gateway's TOML config.
        out: where to write the bundle (atomically; an existing file is replaced).
        extra_bundles: bundle files (PEM or SPIFFE JSON) by trust domain, e.g. the gateway's own
            trust domain when its Workload API is not reachable from where this runs.
        identity_timeout: seconds to wait for the Workload API.
        now: unix seconds for ``created_at`` (default: the current time).

    Returns:
        The evidence written.

    Raises:
        ConfigError: the config is invalid.
        EvidenceError: a file it names cannot be read or is invalid (the message names it), or no
            bundle is available for the gateway's own trust domain.
    """
    cfg = load_gateway_config(config_path)
    evidence = build_evidence(
        cfg,
        extra_bundles=extra_bundles or {},
        identity_timeout=identity_timeout,
        now=int(time.time()) if now is None else now,
    )
    try:
        write_file_atomic(Path(out), dump_evidence(evidence), overwrite=True)
    except OSError as exc:
        raise EvidenceError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return evidence


def build_evidence(
    cfg: GatewayConfig,
    *,
    extra_bundles: Mapping[TrustDomain, Path],
    identity_timeout: float,
    now: int,
) -> Evidence:
    """The evidence of ``cfg`` (see :func:`export_evidence`)."""
    try:
        anchor = load_private_key(cfg.anchor.private_key)
        gateway_endorsement = _read(cfg.anchor.endorsement)
        own = decode_unverified(gateway_endorsement)
        if own.anchor_public_key != anchor.public_key or own.spiffe_id != cfg.gateway.spiffe_id:
            raise EvidenceError(
                f"{cfg.anchor.endorsement}: not an endorsement of this gateway's anchor key for "
                f"{cfg.gateway.spiffe_id} (has the gateway run with this config?)"
            )
        tiers = TierNames(tuple((t.name, t.level) for t in cfg.trust.tiers))
        store = load_policy_store([scope.policy for scope in cfg.scopes], tiers=tiers)
        revisions = tuple(
            (scope, tuple(export_revision(r, anchor.signing_key) for r in store.chain(scope)))
            for scope in store.scopes
        )
        return Evidence(
            created_at=now,
            gateway=cfg.gateway.spiffe_id,
            bundles=_bundles(cfg, extra_bundles, identity_timeout),
            endorsements=_endorsements(cfg, gateway_endorsement),
            gateway_endorsement=gateway_endorsement,
            policy_revisions=revisions,
            tiers=tiers,
            revocations=_revocations(cfg),
            peers=tuple(
                EvidencePeer(p.name, p.spiffe_id, p.trust_domain, p.export_scopes, p.import_scopes)
                for p in cfg.peers
            ),
            routes=tuple(EvidenceRoute(r.scope, r.workload, r.network, r.peer) for r in cfg.routes),
        )
    except EvidenceError:
        raise
    except (ValueError, OSError) as exc:
        # InvalidBundle, InvalidEndorsement, AnchorKeyError, ConfigError, LineageError and
        # RegistryLoadError are ValueErrors whose messages name the file.
        text = str(exc).strip()
        raise EvidenceError(text.splitlines()[0] if text else type(exc).__name__) from None


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_ENDORSEMENT_BYTES + 1)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_ENDORSEMENT_BYTES:
        raise EvidenceError(f"{path}: larger than {MAX_ENDORSEMENT_BYTES} bytes")
    return data


def _bundles(
    cfg: GatewayConfig, extra: Mapping[TrustDomain, Path], identity_timeout: float
) -> BundleSet:
    bundles = BundleSet()
    files: list[tuple[TrustDomain, Path]] = list(extra.items())
    files += [(b.trust_domain, b.path) for b in cfg.trust.bundles]
    files += [(p.trust_domain, p.bundle) for p in cfg.peers if p.bundle is not None]
    if cfg.identity.source is IdentitySource.FILES and cfg.identity.bundle is not None:
        files.append((cfg.identity.trust_domain, cfg.identity.bundle))
    for td, path in files:
        if td not in bundles:
            bundles = bundles.with_bundle(load_bundle_file(path, td))
    own = cfg.identity.trust_domain
    if own not in bundles and cfg.identity.socket is not None:
        for bundle in _workload_api_bundles(cfg.identity.socket, identity_timeout).values():
            if bundle.trust_domain not in bundles:
                bundles = bundles.with_bundle(bundle)
    if own not in bundles:
        raise EvidenceError(
            f"no trust bundle for the gateway's own trust domain {own.name}: give its file "
            f"(--bundle {own.name}=FILE)"
        )
    return bundles


def _workload_api_bundles(socket: str, timeout: float) -> BundleSet:
    source = WorkloadApiSource(socket)
    source.start()
    try:
        return source.wait_ready(timeout).bundles
    except IdentityUnavailable as exc:
        raise EvidenceError(
            f"the Workload API at {socket} gave no bundle within {timeout:g}s ({exc}); give the "
            "trust domain's bundle file with --bundle TRUST_DOMAIN=FILE"
        ) from None
    finally:
        source.close()


def _endorsements(cfg: GatewayConfig, own: bytes) -> tuple[bytes, ...]:
    paths: list[Path] = []
    anchors_dir = cfg.trust.anchors_dir
    if anchors_dir is not None and anchors_dir.is_dir():
        paths += sorted(
            p
            for p in anchors_dir.iterdir()
            if p.suffix == ENDORSEMENT_SUFFIX and not p.name.startswith(".") and p.is_file()
        )
    paths += [Path(p) for p in cfg.trust.endorsements]
    found = dict.fromkeys([own])
    for path in paths:
        found.setdefault(_read(path))
    return tuple(found)


def _revocations(cfg: GatewayConfig) -> Revocations:
    if cfg.trust.anchors_dir is None:
        return Revocations()
    path = cfg.trust.anchors_dir / "revoked.toml"
    return load_revocations(path) if os.path.exists(path) else Revocations()
