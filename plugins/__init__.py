"""Built-in plugins. Each registers through the `boomerang` entry-point group, like any other."""
