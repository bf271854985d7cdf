"""The model card: its text from the template (`card`), the pinned recipe it shows (`pinned_recipe`) and the λ and
sweep charts (`chart`). The Hub's rules for card metadata live in `chatvector.hub.client.cardrules`.
"""
