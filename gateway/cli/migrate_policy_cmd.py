"""``sluice migrate freeze`` and ``sluice migrate restore``: the S2 policy freeze and its undo.

``freeze`` stashes every NetworkPolicy (with checksums), translates them into sluice scope
policies (one file per scope) and writes the unsupported report; with ``--delete`` it then deletes
the stashed policies from the cluster (so weave-npc stops enforcing on addresses it can no longer
see). Running it again with the same input writes the same files: the plan's ``policy_freeze``
hook can be re-run after a crash. ``restore`` checks the stash against its checksums and
re-applies it (``--apply``) or prints it for ``kubectl apply -f -``. Both are hooks of the plan
(``hooks.policy_freeze`` / ``hooks.policy_restore``), so S2's advance and rollback (and S5) run
them; see docs/migration.md.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import click

from gateway.cli.common import EXIT_REFUSED, UserFacingError, one_line_errors
from gateway.migration.netpol import load_objects
from gateway.migration.stash import create_stash, restore_yaml, verify_stash
from gateway.migration.to_cilium import to_cilium_yaml
from gateway.migration.to_sluice import SluiceOptions, translate, write_translation
from gateway.spool._fs import atomic_create

KUBECTL_TIMEOUT_S = 300
STASH_DIR = "stash"
POLICIES_DIR = "policies"
CILIUM_FILE = "cilium-network-policies.yaml"
_ERRORS = (ValueError, OSError)  # NetpolError, StashError, bad trust domains


def _kubectl(argv: list[str], stdin: str | None = None) -> None:
    try:
        done = subprocess.run(
            ["kubectl", *argv], input=stdin, capture_output=True, text=True,
            timeout=KUBECTL_TIMEOUT_S, check=False,
        )
    except FileNotFoundError:
        raise UserFacingError("kubectl: command not found") from None
    except subprocess.TimeoutExpired:
        raise UserFacingError(f"kubectl {' '.join(argv)}: timed out") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
        raise UserFacingError(f"kubectl {' '.join(argv)}: {first}", EXIT_REFUSED)


@click.command()
@click.option("--netpol", type=click.Path(path_type=Path, exists=True), required=True,
              help="NetworkPolicy YAML (file or directory): kubectl get netpol -A -o yaml")
@click.option("--inventory", type=click.Path(path_type=Path, exists=True),
              help="pods and namespaces YAML (kubectl get pods,ns -A -o yaml) for exact scopes")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="directory for stash/, policies/ and the Cilium policies")
@click.option("--trust-domain", default="cluster.local", show_default=True,
              help="the cluster's SPIFFE trust domain (workload IDs of the policies)")
@click.option("--scope-label", default="app", show_default=True)
@click.option("--origin-domain", "origin_domains", multiple=True,
              help="trust domain allowed as origin in every rule (repeat)")
@click.option("--issued-at", type=int, help="policies' issued_at (unix seconds; default: now, "
              "or the previous freeze's, so a re-run writes the same files)")
@click.option("--delete", is_flag=True, help="then delete the stashed policies from the cluster")
@one_line_errors(*_ERRORS)
def freeze(
    netpol: Path, inventory: Path | None, out: Path, trust_domain: str, scope_label: str,
    origin_domains: tuple[str, ...], issued_at: int | None, delete: bool,
) -> None:
    """S2: stash the NetworkPolicies, translate them into sluice policies, report the rest."""
    objects = load_objects(netpol)
    inv = load_objects(inventory) if inventory is not None else objects
    have_pods = inventory is not None or bool(objects.pods)
    stamp_file = out / "issued_at"
    if issued_at is None:
        issued_at = int(stamp_file.read_text()) if stamp_file.exists() else int(time.time())
    out.mkdir(parents=True, exist_ok=True)
    manifest = create_stash(objects.policies, out / STASH_DIR)
    result = translate(
        objects.policies,
        pods=inv.pods if have_pods else None,
        namespaces=inv.namespaces if inv.namespaces else None,
        options=SluiceOptions(trust_domain=trust_domain, scope_label=scope_label,
                              issued_at=issued_at, origin_domains=origin_domains),
    )
    write_translation(result, out / POLICIES_DIR)
    atomic_create(out / CILIUM_FILE, [to_cilium_yaml(objects.policies).encode()])
    atomic_create(stamp_file, [f"{issued_at}\n".encode()])
    click.echo(f"stashed {manifest.count} NetworkPolicies in {out / STASH_DIR} "
               f"(sha256 {manifest.sha256})")
    click.echo(f"wrote {len(result.policies)} sluice policies in {out / POLICIES_DIR}, "
               f"{len(result.findings)} unsupported element(s) listed in "
               f"{out / POLICIES_DIR / 'unsupported.txt'}")
    for finding in result.findings:
        click.echo(f"  {finding}")
    if delete:
        for policy in objects.policies:
            namespace, _, name = policy.key.partition("/")
            _kubectl(["delete", "networkpolicy", name, "--namespace", namespace,
                      "--ignore-not-found"])
        click.echo(f"deleted {len(objects.policies)} NetworkPolicies from the cluster")


@click.command()
@click.option("--stash", type=click.Path(path_type=Path, exists=True, file_okay=False),
              required=True, help="the stash/ directory written by `sluice migrate freeze`")
@click.option("--apply", "apply_", is_flag=True, help="kubectl apply the stash")
@one_line_errors(*_ERRORS)
def restore(stash: Path, apply_: bool) -> None:
    """Undo S2: check the stash's checksums, then re-apply (or print) the NetworkPolicies."""
    manifest, _policies = verify_stash(stash)
    text = restore_yaml(stash)
    if not apply_:
        click.echo(text, nl=False)
        return
    _kubectl(["apply", "-f", "-"], stdin=text)
    click.echo(f"re-applied {manifest.count} NetworkPolicies (stash sha256 {manifest.sha256})",
               err=True)
