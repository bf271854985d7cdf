"""Recipes: the typed format and its reader (`file:line: field` errors), coefficient schedules, and the
rules of a sweep's factors. The lowest layer above `conventions`/`errors`: it imports no other package but
`evaluation`'s spec (a recipe's `eval:` section).
"""
