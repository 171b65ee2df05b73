"""The stash of the original NetworkPolicies (stage S2), with a SHA-256 checksum manifest.

Theory of operation: before the policies are deleted from the cluster, :func:`create_stash` writes
``networkpolicies.yaml`` (every NetworkPolicy object exactly as fetched, one YAML document each)
and ``SHA256SUMS`` (``sha256sum`` format, so ``sha256sum -c SHA256SUMS`` checks it by hand) plus
``manifest.json`` (count and per-object digests of ``namespace/name``). Files are written to a
temporary name, fsynced and renamed, then the directory is fsynced, so a crash leaves either the
old stash or the new one. :func:`verify_stash` recomputes everything and names the first
difference; :func:`restore_yaml` gives the objects ready for ``kubectl apply -f``, without the
fields the API server sets (``resourceVersion``, ``uid``, ``managedFields``, ``status`` ...), which
would make re-creation fail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.migration.netpol import NetpolError, parse_text
from gateway.migration.netpol_model import NetworkPolicy

OBJECTS_FILE = "networkpolicies.yaml"
SUMS_FILE = "SHA256SUMS"
MANIFEST_FILE = "manifest.json"
SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class StashError(ValueError):
    """The stash is missing, altered or inconsistent; the message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class StashManifest:
    """What a stash holds: the objects file's SHA-256 and each object's digest by key."""

    sha256: str
    count: int
    objects: tuple[tuple[str, str], ...]  # (namespace/name, sha256 of its canonical JSON)


def object_digest(obj: Mapping[str, Any]) -> str:
    """SHA-256 of the object's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def create_stash(policies: Iterable[NetworkPolicy], directory: Path) -> StashManifest:
    """Write the stash of ``policies`` (their ``raw`` objects) into ``directory``.

    Returns:
        The manifest written.

    Raises:
        StashError: two policies share a namespace/name.
        OSError: the directory cannot be written.
    """
    objects: list[Mapping[str, Any]] = []
    keys: list[str] = []
    for policy in policies:
        if policy.key in keys:
            raise StashError(f"{policy.source}: {policy.key} is listed twice")
        keys.append(policy.key)
        objects.append(policy.raw)
    text = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
    data = text.encode()
    manifest = StashManifest(
        hashlib.sha256(data).hexdigest(),
        len(objects),
        tuple((k, object_digest(o)) for k, o in zip(keys, objects, strict=True)),
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_durably(directory / OBJECTS_FILE, data)
    _write_durably(
        directory / MANIFEST_FILE,
        json.dumps(
            {"sha256": manifest.sha256, "count": manifest.count, "objects": dict(manifest.objects)},
            indent=2,
        ).encode(),
    )
    _write_durably(directory / SUMS_FILE, f"{manifest.sha256}  {OBJECTS_FILE}\n".encode())
    return manifest


def verify_stash(directory: Path) -> tuple[StashManifest, tuple[NetworkPolicy, ...]]:
    """Check the stash in ``directory`` against its checksums.

    Returns:
        The manifest and the stashed policies.

    Raises:
        StashError: a file is missing or unreadable, a checksum differs, the objects do not parse
            or do not match the manifest's count and per-object digests.
    """
    try:
        data = (directory / OBJECTS_FILE).read_bytes()
        sums = (directory / SUMS_FILE).read_text()
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise StashError(f"{directory}: cannot read the stash: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    expected, _, name = sums.strip().partition("  ")
    if name != OBJECTS_FILE:
        raise StashError(f"{directory / SUMS_FILE}: expected a line '<sha256>  {OBJECTS_FILE}'")
    if not hmac.compare_digest(actual, expected):
        raise StashError(
            f"{directory / OBJECTS_FILE}: SHA-256 is {actual}, {SUMS_FILE} records {expected}"
        )
    if not isinstance(manifest, dict) or manifest.get("sha256") != expected:
        raise StashError(f"{directory / MANIFEST_FILE}: sha256 does not match {SUMS_FILE}")
    try:
        policies = parse_text(data.decode(), str(directory / OBJECTS_FILE)).policies
    except (NetpolError, UnicodeDecodeError) as exc:
        raise StashError(f"stashed objects do not parse: {exc}") from exc
    recorded = manifest.get("objects")
    if manifest.get("count") != len(policies) or not isinstance(recorded, dict):
        raise StashError(
            f"{directory / MANIFEST_FILE}: records {manifest.get('count')} objects, the stash "
            f"holds {len(policies)}"
        )
    for policy in policies:
        digest = object_digest(policy.raw)
        if recorded.get(policy.key) != digest:
            raise StashError(f"{policy.source}: {policy.key} differs from its manifest digest")
    objects = tuple((p.key, object_digest(p.raw)) for p in policies)
    return StashManifest(actual, len(policies), objects), policies


def restore_yaml(directory: Path) -> str:
    """The stashed policies, verified, as YAML for ``kubectl apply -f -``.

    Raises:
        StashError: as :func:`verify_stash`.
    """
    _manifest, policies = verify_stash(directory)
    return yaml.safe_dump_all(
        [restorable(p.raw) for p in policies], sort_keys=False, default_flow_style=False
    )


def restorable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without server-set fields and ``status``."""
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for key in SERVER_FIELDS:
        meta.pop(key, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


def _write_durably(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
