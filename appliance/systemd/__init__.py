"""The appliance's systemd units, shipped inside the wheel so an install needs only the wheel.

``packer/scripts/install-sluice.sh`` copies ``*.service`` from this directory to
``/etc/systemd/system``. See docs/appliance.md for what each unit does.
"""
