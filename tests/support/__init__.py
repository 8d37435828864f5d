"""Test-support code shared by the integration tests and the benchmarks (not tests themselves)."""
