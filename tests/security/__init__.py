"""Reproductions of the trust defects of issue 9, each kept fixed by a test."""
