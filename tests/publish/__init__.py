"""Tests of publishing (chatvector.publish): the push, branches, --from, the evaluation gate."""
