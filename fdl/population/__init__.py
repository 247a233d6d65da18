"""fdl.population: many members of a model trained as one compiled program, and sweeps.

Importable on its own (it never imports the command line).
"""
from fdl.population.members import MemberSpec, PopulationResult, evaluate_population, train_population

__all__ = ["MemberSpec", "PopulationResult", "train_population", "evaluate_population"]
