"""Tests of the local Hub (chatvector.localhub): its API, pages, Xet CAS, network behaviour and divergences."""
