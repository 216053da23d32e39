"""slo-validate: SLO contracts in Gherkin, verified over Loki or a log file."""
