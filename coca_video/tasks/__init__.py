"""One module per user-facing job; each has a config dataclass at the top and ``run(cfg)``."""
