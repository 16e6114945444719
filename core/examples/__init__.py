"""The reference scenarios and templates that `boomerang init` copies (links to the top-level folders)."""
