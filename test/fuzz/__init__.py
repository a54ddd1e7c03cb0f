"""Fuzz tests: every wire parser and the configuration loader, fed random
bytes, mutations of valid messages and oversized or deeply nested input.

`make test` runs a short seeded pass of each target (test_*.py here);
`make fuzz` runs them for minutes each (python -m test.fuzz).
"""
