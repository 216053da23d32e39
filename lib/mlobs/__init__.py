"""ml-observability-action: SLO contracts, golden-set evaluation and reports, fed back to GitHub."""

__version__ = "0.1.0"
