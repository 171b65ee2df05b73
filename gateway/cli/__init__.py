"""The ``sluice`` command line. Each command group lives in its own module."""

from __future__ import annotations

import click

from gateway.cli.anchor_cmd import anchor
from gateway.cli.appliance_cmd import appliance
from gateway.cli.audit_cmd import audit
from gateway.cli.config_cmd import config
from gateway.cli.envelope_cmd import envelope
from gateway.cli.firstboot_cmd import firstboot
from gateway.cli.migrate_cmd import migrate
from gateway.cli.run_cmd import demo, run
from gateway.cli.send_cmd import receive, send
from gateway.cli.shim_cmd import shim


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice")
def main() -> None:
    """sluice: governed envelopes across network boundaries."""


main.add_command(anchor)
main.add_command(envelope)
main.add_command(config)
main.add_command(appliance)
main.add_command(audit)
main.add_command(run)
main.add_command(demo)
main.add_command(firstboot)
main.add_command(send)
main.add_command(receive)
main.add_command(shim)
main.add_command(migrate)
