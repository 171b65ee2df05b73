"""sluice configuration: TOML schemas as frozen dataclasses and their loaders."""
