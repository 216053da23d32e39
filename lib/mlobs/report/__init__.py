"""publish-report: immutable static Hugo reports per model version, and comparison pages."""
