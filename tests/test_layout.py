"""The architecture rule of DESIGN.md section 3: pure modules never import I/O libraries, and the
dependency direction is config/identity <- gateway, config <- appliance."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

IO_MODULES = {
    "trio",
    "socket",
    "pyroute2",
    "asyncio",
    "ssl",
    "grpc",
    "spiffe.workloadapi",
    "subprocess",
}

PURE = [
    "gateway/envelope",
    "gateway/policy",
    "gateway/framing",
    "gateway/replay.py",
    "gateway/reasons.py",
    "gateway/errors.py",
    "identity/spiffe_id.py",
    "identity/anchor_contract.py",
    "config",
    "appliance/plan.py",
    "appliance/netconfig.py",
    "appliance/diff.py",
    "gateway/router.py",
    "gateway/pipeline.py",
    "gateway/migration/inventory.py",
    "gateway/migration/plan.py",
    "gateway/migration/artifacts.py",
    "gateway/migration/actions.py",
    "gateway/migration/stages.py",
    "gateway/migration/_reader.py",
    "gateway/migration/netpol.py",
    "gateway/migration/netpol_model.py",
    "gateway/migration/to_cilium.py",
    "gateway/migration/to_sluice.py",
    "gateway/shim_stream.py",
    "gateway/migration/placement.py",
]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(rel: str) -> list[Path]:
    target = REPO_ROOT / rel
    if target.is_dir():
        return sorted(target.rglob("*.py"))
    return [target] if target.exists() else []


@pytest.mark.parametrize("rel", PURE)
def test_pure_modules_do_no_io(rel: str) -> None:
    offenders = []
    for path in _files(rel):
        for name in _imports(path):
            if any(name == io or name.startswith(io + ".") for io in IO_MODULES):
                offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("config", "gateway"),
        ("identity", "gateway"),
        ("config", "appliance"),
        ("identity", "appliance"),
    ],
)
def test_dependency_direction(package: str, forbidden: str) -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in _files(package)
        for name in _imports(path)
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert offenders == []
