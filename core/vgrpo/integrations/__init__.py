"""Bridges to other training libraries. Each submodule needs its library only when its objects are used.

``vgrpo.integrations.trl``: vgrpo's tasks and rewards as reward functions for TRL's ``GRPOTrainer``.
"""
