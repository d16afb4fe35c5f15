"""One-off measurements behind statements in the reports, kept runnable."""
