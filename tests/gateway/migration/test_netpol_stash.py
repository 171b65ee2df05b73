"""The stash of the original NetworkPolicies: written durably, checksummed, verified, restored."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.migration.netpol import load_objects
from gateway.migration.stash import (
    MANIFEST_FILE,
    OBJECTS_FILE,
    SUMS_FILE,
    StashError,
    create_stash,
    restore_yaml,
    verify_stash,
)

CORPUS = Path(__file__).parent / "netpol_corpus"


def test_stash_round_trip_keeps_every_object_as_fetched(tmp_path: Path) -> None:
    policies = load_objects(CORPUS).policies
    manifest = create_stash(policies, tmp_path)
    assert manifest.count == 25
    data = (tmp_path / OBJECTS_FILE).read_bytes()
    assert manifest.sha256 == hashlib.sha256(data).hexdigest()
    verified, stashed = verify_stash(tmp_path)
    assert verified == manifest
    assert [p.raw for p in stashed] == [p.raw for p in policies]
    assert [p.key for p in stashed] == [p.key for p in policies]


def test_sha256sums_is_checkable_with_coreutils(tmp_path: Path) -> None:
    create_stash(load_objects(CORPUS).policies, tmp_path)
    done = subprocess.run(
        ["sha256sum", "-c", SUMS_FILE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_any_change_to_the_objects_is_detected(tmp_path: Path) -> None:
    create_stash(load_objects(CORPUS).policies, tmp_path)
    path = tmp_path / OBJECTS_FILE
    path.write_bytes(path.read_bytes().replace(b"5432", b"5433", 1))
    with pytest.raises(StashError, match="SHA-256 is"):
        verify_stash(tmp_path)


def test_manifest_and_objects_must_agree(tmp_path: Path) -> None:
    create_stash(load_objects(CORPUS).policies, tmp_path)
    manifest = tmp_path / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace('"count": 25', '"count": 24'))
    with pytest.raises(StashError, match="records 24 objects, the stash holds 25"):
        verify_stash(tmp_path)


def test_missing_stash_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StashError, match="cannot read the stash"):
        verify_stash(tmp_path)


def test_restore_strips_server_fields(tmp_path: Path) -> None:
    create_stash(load_objects(CORPUS).policies, tmp_path)
    documents = list(yaml.safe_load_all(restore_yaml(tmp_path)))
    assert len(documents) == 25
    fraud = next(d for d in documents if d["metadata"]["name"] == "fraud-from-api")
    assert fraud["metadata"] == {"name": "fraud-from-api", "namespace": "pay"}
    assert fraud["spec"]["podSelector"] == {"matchLabels": {"app": "fraud"}}
    # What is restored is what was stashed, minus server fields: it translates identically.
    restored = tmp_path / "restored.yaml"
    restored.write_text(restore_yaml(tmp_path))
    again = load_objects(restored).policies
    assert [p.key for p in again] == [p.key for p in load_objects(CORPUS).policies]
    assert [p.ingress for p in again] == [p.ingress for p in load_objects(CORPUS).policies]
