"""fdl.population: many members of one model trained as ONE compiled program per epoch.

The engine for populations, beside `fdl.train` (it imports fdl.train, never
fdl.config or fdl.runs): members differ in seed and in the optimizer
hyperparameters fdl.optim injects; each has its own callbacks, and all minimize
one per-example loss on (x, y) or one objective (fdl.objectives) on any pytree
batch, or run one custom `step(state, batch) -> (state, logs)` (optionally from
`init(seed) -> TrainState`: several models), as `fdl.fit` does. `Population`
owns the compiled programs; `train_population` is the one-call form. Sweeps over configs live in
`fdl.runs.sweep`.

Example:
  >>> members = [MemberSpec(seed, {"learning_rate": lr}) for lr in (1e-3, 1e-2) for seed in range(2)]
  >>> result = fdl.population.train_population(model, train, val, members=members,
  ...                                          optimizer={"name": "adam"}, epochs=2, batch_size=100)
  >>> len(result.final), result.final[0]["epoch"]
  (4, 2)
"""
from fdl.population.members import (MemberSpec, Population, PopulationResult, evaluate_population,
                                    make_population_epoch, population_mesh, train_population)

__all__ = ["MemberSpec", "Population", "PopulationResult", "train_population", "evaluate_population",
           "make_population_epoch", "population_mesh"]
