"""`fdl sweep`: parse, then call fdl.population.run_sweep (see its docstring for the directory)."""
from __future__ import annotations


def run_sweep(args) -> int:
    """Runs `fdl sweep CONFIG` / joins a shared study / resumes a sweep directory; 0 when done."""
    try:
        from fdl.population import sweep as population_sweep
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"fdl sweep needs {error.name} — install it with "
                                  "pip install \"fdl[sweep]\"") from None
    result = population_sweep.run_sweep(
        args.config, out_dir=args.out, storage=args.storage, study_name=args.study,
        workers=args.workers, resume=args.resume, overrides=args.overrides,
        report=not args.worker, verbose=0 if args.quiet else 1)
    if args.worker:
        print(f"worker done: trained {result.trained} trials of study {result.study_name!r}")
    else:
        print(f"sweep directory: {result.sweep_dir}  (results.csv, best.yaml, plots/)")
    return 0
