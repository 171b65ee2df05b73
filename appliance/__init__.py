"""The appliance VM: network plan and apply, systemd units, first boot."""
