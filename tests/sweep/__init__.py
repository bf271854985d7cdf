"""Tests of λ sweeps (chatvector.sweep) and the scheduled publish of a swept recipe."""
