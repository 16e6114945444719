"""Reliability under faults: disk full, provider faults, crashes under load, fuzz."""
