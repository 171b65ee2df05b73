"""``sluice migrate``: inventory, plan, artifacts, and the journaled stage runner."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import click
import yaml

from config.errors import ConfigError
from config.migration_plan import MigrationPlan, load_plan, render_plan
from config.migration_probes import load_probes
from gateway.cli.common import EXIT_REFUSED, UserFacingError, one_line_errors
from gateway.cli.migrate_policy_cmd import freeze, restore
from gateway.migration.actions import MissingHook, commands_for, shell_line
from gateway.migration.artifacts import render_artifacts
from gateway.migration.executor import Executor, ProbeUnavailable, SubprocessExecutor
from gateway.migration.inventory import (
    InputError,
    Inventory,
    analyse,
    is_clean,
    parse_daemonset,
    parse_nodes,
    parse_peers_configmap,
    parse_report,
    parse_service_cidrs,
    render_text,
    service_cidrs_from_apiserver,
)
from gateway.migration.journal import (
    Direction,
    Journal,
    JournalError,
    JournalState,
    read_state,
)
from gateway.migration.plan import PlanError, build_plan
from gateway.migration.prober import GatewayProber, ProbingExecutor
from gateway.migration.simulated import SimulatedCluster
from gateway.migration.stages import (
    Runner,
    Stage,
    StageBlocked,
    StageFailed,
    next_unit,
    status_rows,
    steps,
    unit_id,
)
from gateway.spool._fs import atomic_create

MAX_FILE_BYTES = 16 * 1024 * 1024
_INPUT_ERRORS = (InputError, ConfigError, PlanError, JournalError, MissingHook, OSError)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()[: MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise UserFacingError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _count_network_policies(directory: Path) -> int:
    count = 0
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    for path in files:
        try:
            docs = list(yaml.safe_load_all(_read(path).decode("utf-8", "replace")))
        except yaml.YAMLError as exc:
            raise UserFacingError(f"{path}: invalid YAML: {exc}".splitlines()[0]) from None
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
            count += sum(
                1 for i in items or [] if isinstance(i, dict) and i.get("kind") == "NetworkPolicy"
            )
    return count


def _inventory(
    daemonset: Path, reports: Path, nodes: Path, service_cidr: str | None,
    apiserver: Path | None, node_cidr: tuple[str, ...], peers: Path | None, netpol: Path | None,
) -> Inventory:
    report_files = sorted(reports.glob("*.json")) if reports.is_dir() else [reports]
    if not report_files:
        raise UserFacingError(f"{reports}: no *.json Weave reports found")
    services: tuple[IPv4Network | IPv6Network, ...] = ()
    if service_cidr:
        services = parse_service_cidrs(service_cidr)
    elif apiserver is not None:
        services = service_cidrs_from_apiserver(_read(apiserver), str(apiserver))
    underlay = tuple(n for text in node_cidr for n in parse_service_cidrs(text, "--node-cidr"))
    return Inventory(
        weave=parse_daemonset(_read(daemonset), str(daemonset)),
        reports=tuple(parse_report(_read(p), str(p)) for p in report_files),
        nodes=parse_nodes(_read(nodes), str(nodes)),
        service_cidrs=services,
        node_cidrs=underlay,
        peers_configmap=parse_peers_configmap(_read(peers), str(peers)) if peers else None,
        network_policies=_count_network_policies(netpol) if netpol else None,
    )


def _inventory_options(fn: click.decorators.FC) -> click.decorators.FC:
    file = click.Path(path_type=Path, exists=True)
    for decorator in reversed(
        [
            click.option("--daemonset", type=file, required=True,
                         help="kubectl -n kube-system get ds weave-net -o yaml"),
            click.option("--reports", type=file, required=True,
                         help="directory of each node's Weave /report JSON (*.json)"),
            click.option("--nodes", type=file, required=True, help="kubectl get nodes -o yaml"),
            click.option("--service-cidr", help="the cluster's service CIDR(s), comma-separated"),
            click.option("--apiserver-manifest", type=file,
                         help="kube-apiserver static Pod YAML (for --service-cluster-ip-range)"),
            click.option("--node-cidr", multiple=True, help="underlay network(s) of the nodes"),
            click.option("--peers-configmap", type=file,
                         help="kubectl -n kube-system get cm weave-net -o yaml"),
            click.option("--netpol", type=click.Path(path_type=Path, exists=True,
                         file_okay=False), help="directory of NetworkPolicy YAML"),
        ]
    ):
        fn = decorator(fn)
    return fn


@click.group()
def migrate() -> None:
    """Stage a Weave Net -> Cilium migration (see docs/migration.md)."""


migrate.add_command(freeze)
migrate.add_command(restore)


@migrate.command()
@_inventory_options
@one_line_errors(*_INPUT_ERRORS)
def inventory(
    daemonset: Path, reports: Path, nodes: Path, service_cidr: str | None,
    apiserver_manifest: Path | None, node_cidr: tuple[str, ...], peers_configmap: Path | None,
    netpol: Path | None,
) -> None:
    """S0: report the Weave cluster's state; exit 1 when it is not clean."""
    inv = _inventory(daemonset, reports, nodes, service_cidr, apiserver_manifest, node_cidr,
                     peers_configmap, netpol)
    findings = analyse(inv)
    click.echo(render_text(inv, findings))
    if not is_clean(findings):
        raise SystemExit(EXIT_REFUSED)


@migrate.command()
@_inventory_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="plan.toml to write")
@click.option("--cilium-cidr", help="pin the Cilium pool instead of choosing one")
@click.option("--underlay-mtu", type=click.IntRange(626, 65535), default=1500, show_default=True)
@click.option("--accept-findings", is_flag=True, help="write a plan although S0 is not clean")
@one_line_errors(*_INPUT_ERRORS)
def plan(
    daemonset: Path, reports: Path, nodes: Path, service_cidr: str | None,
    apiserver_manifest: Path | None, node_cidr: tuple[str, ...], peers_configmap: Path | None,
    netpol: Path | None, out: Path, cilium_cidr: str | None, underlay_mtu: int,
    accept_findings: bool,
) -> None:
    """Choose the Cilium pool, MTU, port and node order; write them as editable TOML."""
    inv = _inventory(daemonset, reports, nodes, service_cidr, apiserver_manifest, node_cidr,
                     peers_configmap, netpol)
    findings = analyse(inv)
    if not is_clean(findings) and not accept_findings:
        for finding in findings:
            click.echo(str(finding), err=True)
        raise UserFacingError(
            "S0 is not clean: fix the errors above (or pass --accept-findings)", EXIT_REFUSED
        )
    chosen = build_plan(inv, pinned_cidr=cilium_cidr, underlay_mtu=underlay_mtu)
    text = render_plan(chosen, notes=(f"Inputs: {daemonset}, {reports}, {nodes}.",))
    atomic_create(out, [text.encode()])
    click.echo(f"wrote {out}: Cilium pool {chosen.cilium_cidr}, pod MTU {chosen.pod_mtu}, "
               f"{len(chosen.nodes)} nodes")


def _plan_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--plan", "plan_path", type=click.Path(path_type=Path, exists=True),
                        required=True, help="plan.toml from `sluice migrate plan`")(fn)


@migrate.command()
@_plan_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@one_line_errors(*_INPUT_ERRORS)
def artifacts(plan_path: Path, out: Path) -> None:
    """Write the Helm values, CiliumNodeConfig and runbook for the plan."""
    loaded = load_plan(plan_path)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_artifacts(loaded, str(out)).items():
        atomic_create(out / name, [text.encode()])
        click.echo(f"wrote {out / name}")


def _digest(path: Path) -> str:
    return hashlib.sha256(_read(path)).hexdigest()


def _executor(
    loaded: MigrationPlan, simulate: Path | None, artifacts_dir: Path,
    prober: GatewayProber | None = None,
) -> Executor:
    if simulate is not None:
        sim = SimulatedCluster(simulate, loaded)
        return sim if prober is None else ProbingExecutor(sim, prober)
    return SubprocessExecutor(loaded, str(artifacts_dir), prober=prober,
                              echo=lambda line: click.echo(f"$ {line}"))


def _runner_options(fn: click.decorators.FC) -> click.decorators.FC:
    for decorator in reversed(
        [
            _plan_option,
            click.option("--journal", "journal_path", type=click.Path(path_type=Path),
                         required=True, help="the migration journal (created if missing)"),
            click.option("--node", help="a node's S4 instead of the next unit"),
            click.option("--stage", type=click.Choice([s.value for s in Stage]),
                         help="a cluster-wide stage instead of the next unit"),
            click.option("--artifacts", "artifacts_dir", type=click.Path(path_type=Path),
                         default=Path("migration"), show_default=True,
                         help="directory written by `sluice migrate artifacts`"),
            click.option("--simulate", type=click.Path(path_type=Path),
                         help="drive a simulated cluster state file instead of kubectl/helm"),
            click.option("--probes", "probes_path", type=click.Path(path_type=Path, exists=True),
                         help="probe file: send governed probes through the gateway"),
        ]
    ):
        fn = decorator(fn)
    return fn


@contextmanager
def _runner(
    plan_path: Path, journal_path: Path, simulate: Path | None, artifacts_dir: Path,
    resolve: dict[str, bool] | None = None, probes_path: Path | None = None,
) -> Iterator[Runner]:
    loaded = load_plan(plan_path)
    probes = load_probes(probes_path) if probes_path is not None else None
    with Journal.open(journal_path, plan_digest=_digest(plan_path)) as journal:
        prober = None
        if probes is not None:
            try:
                prober = GatewayProber(probes, journal.placement)
            except ValueError as exc:  # a missing policy, a bad key or policy file
                raise UserFacingError(f"{probes_path}: {exc}".splitlines()[0]) from None
        yield Runner(loaded, journal, _executor(loaded, simulate, artifacts_dir, prober),
                     resolve=resolve, echo=click.echo)


class _NothingToDo(Exception):
    pass


def _target(runner: Runner, stage: str | None, node: str | None) -> tuple[Stage, str | None]:
    if node is not None:
        try:
            runner.plan.node(node)
        except KeyError:
            raise UserFacingError(f"--node {node}: not a node of the plan") from None
        return Stage.S4, node
    if stage is not None:
        return Stage(stage), None
    nxt = runner.next_unit()
    if nxt is None:
        raise _NothingToDo
    return nxt


def _run(runner: Runner, stage: Stage, node: str | None, direction: Direction,
         confirm: bool) -> None:
    try:
        outcome = runner.run(stage, node, direction, confirm_irreversible=confirm)
    except (StageBlocked, StageFailed, ProbeUnavailable) as exc:
        raise UserFacingError(str(exc), EXIT_REFUSED) from None
    if outcome.noop:
        where = "done" if direction is Direction.ADVANCE else "rolled back"
        click.echo(f"{outcome.unit}: already {where}")
        return
    for key in outcome.verified_after_crash:
        click.echo(f"{outcome.unit}: {key} was interrupted; found done, not repeated")
    click.echo(f"{outcome.unit}: {direction.value} complete")


@migrate.command()
@_runner_options
@click.option("--dry-run", is_flag=True, help="print the commands of the next unit, do nothing")
@click.option("--irreversible", is_flag=True, help="confirm S6 (decommission Weave)")
@click.option("--step-done", multiple=True, help="an interrupted step you checked took effect")
@click.option("--step-rerun", multiple=True, help="an interrupted step to run again")
@one_line_errors(*_INPUT_ERRORS)
def advance(
    plan_path: Path, journal_path: Path, node: str | None, stage: str | None,
    artifacts_dir: Path, simulate: Path | None, probes_path: Path | None, dry_run: bool,
    irreversible: bool, step_done: tuple[str, ...], step_rerun: tuple[str, ...],
) -> None:
    """Move the next unit (or --stage / --node) forward, resuming an interrupted one."""
    resolve = {k: True for k in step_done} | {k: False for k in step_rerun}
    if dry_run:
        _preview(load_plan(plan_path), journal_path, stage, node, artifacts_dir)
        return
    with _runner(plan_path, journal_path, simulate, artifacts_dir, resolve,
                 probes_path) as runner:
        try:
            target = _target(runner, stage, node)
        except _NothingToDo:
            click.echo("nothing to do: every stage is done")
            return
        _run(runner, *target, Direction.ADVANCE, irreversible)


def _preview(
    loaded: MigrationPlan, journal_path: Path, stage: str | None, node: str | None,
    artifacts_dir: Path,
) -> None:
    """Print the commands the next unit would run; touches neither the journal nor the cluster."""
    state = read_state(journal_path) if journal_path.exists() else JournalState()
    if node is not None:
        target: tuple[Stage, str | None] | None = (Stage.S4, node)
    elif stage is not None:
        target = (Stage(stage), None)
    else:
        target = next_unit(loaded, state)
    if target is None:
        click.echo("# nothing to do: every stage is done")
        return
    done = state.unit(unit_id(*target)).steps_done
    click.echo(f"# {unit_id(*target)} advance (dry run)")
    for action in steps(loaded, target[0], target[1], Direction.ADVANCE):
        if action.key in done:
            continue
        try:
            for argv in commands_for(action, loaded, str(artifacts_dir)):
                click.echo(shell_line(argv))
        except MissingHook as exc:
            click.echo(f"# {exc}")


@migrate.command()
@_runner_options
@one_line_errors(*_INPUT_ERRORS)
def rollback(plan_path: Path, journal_path: Path, node: str | None, stage: str | None,
             artifacts_dir: Path, simulate: Path | None, probes_path: Path | None) -> None:
    """Undo one node's S4 (--node) or the latest cluster-wide stage (or --stage)."""
    with _runner(plan_path, journal_path, simulate, artifacts_dir,
                 probes_path=probes_path) as runner:
        if node is not None:
            target: tuple[Stage, str | None] = _target(runner, None, node)
        elif stage is not None:
            target = (Stage(stage), None)
        else:
            last = runner.last_cluster_stage()
            if last is None:
                click.echo("nothing to roll back")
                return
            target = (last, None)
        _run(runner, *target, Direction.ROLLBACK, False)


@migrate.command()
@_runner_options
@one_line_errors(*_INPUT_ERRORS)
def verify(plan_path: Path, journal_path: Path, node: str | None, stage: str | None,
           artifacts_dir: Path, simulate: Path | None, probes_path: Path | None) -> None:
    """Run a unit's verification now (probes included) and journal the result."""
    with _runner(plan_path, journal_path, simulate, artifacts_dir,
                 probes_path=probes_path) as runner:
        try:
            target = _target(runner, stage, node)
        except _NothingToDo:
            raise UserFacingError("name the unit to verify: --stage or --node") from None
        uid = unit_id(*target)
        try:
            problems = runner.verify(target[0], target[1], Direction.ADVANCE)
        except ProbeUnavailable as exc:
            problems = [str(exc)]
        runner.journal.append("verified", unit=uid, ok=not problems, detail="; ".join(problems))
        for problem in problems:
            click.echo(f"{uid}: {problem}")
        if problems:
            raise UserFacingError(f"{uid}: verification failed", EXIT_REFUSED)
        click.echo(f"{uid}: verification passed")


@migrate.command()
@_plan_option
@click.option("--journal", "journal_path", type=click.Path(path_type=Path, exists=True),
              required=True)
@one_line_errors(*_INPUT_ERRORS)
def status(plan_path: Path, journal_path: Path) -> None:
    """Show every stage's and node's state from the journal (read-only, no lock)."""
    loaded = load_plan(plan_path)
    state = read_state(journal_path)
    rows = status_rows(loaded, state)
    click.echo(f"{'unit':<24} {'status':<22} {'placement':<10} detail")
    for uid, st, detail, placement in rows:
        click.echo(f"{uid:<24} {st:<22} {placement or '-':<10} {detail}".rstrip())
