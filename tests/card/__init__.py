"""Tests of the model card (chatvector.card) and the Hub's card-metadata rules (chatvector.hub.cardrules)."""
