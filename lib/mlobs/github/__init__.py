"""Reporting to GitHub: context, workflow commands, Markdown, and the reporter that sends it all."""
