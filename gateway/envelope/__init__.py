"""The governed envelope: COSE_Sign1 codec, seal/open, transit stamps (pure, sans-I/O)."""
