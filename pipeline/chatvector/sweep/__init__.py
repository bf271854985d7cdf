"""λ sweeps: the run (`run`), the variants' plans, i.e. the scaled recipes (`variants`), and sweep.json /
sweep.md (`report`). The factor rules are the recipe's (`chatvector.recipe.recipe.sweep_factors`); publishing a sweep's
choice is `chatvector.publish.publish.sweep`.
"""
