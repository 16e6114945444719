"""Built-in conditions."""
