"""Putting a model on the Hub: the push (`publish`), the evaluation gate before it (`gate`), a sweep's publish
(`sweep`: `sweep --publish` and the scheduled publish of a swept recipe), why a publish would commit (`changes`)
and what `merge`/`publish` would do with a plan, for `chatvector plan` (`facts`).
"""
