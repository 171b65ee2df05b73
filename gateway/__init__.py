"""sluice gateway: envelope codec, policy, framing, daemon and CLI."""
