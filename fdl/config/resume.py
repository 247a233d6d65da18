"""What a resumed run may change: the keys that decide its numbers must stay as they were.

A checkpoint keeps the config's `training_identity` — the resolved config
without the keys that do not change what is trained (RESUMABLE_KEYS: how
long, how often to checkpoint, where and what to record). On resume the run
directory's config.yaml, with the `--set` overrides, must give the same
identity, so a truncated config.yaml, an edited one, or an override such as
`training.batch_size=50` is refused naming the key, never trained on.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from fdl.config.load import ConfigError

__all__ = ["RESUMABLE_KEYS", "training_identity", "check_same_training"]

RESUMABLE_KEYS = ("training.epochs", "training.verbose", "callbacks.checkpoint.every",
                  "callbacks.checkpoint.every_steps", "callbacks.checkpoint.every_seconds", "callbacks.checkpoint.keep", "output", "sample")


def training_identity(config: DictConfig) -> dict:
    """The resolved config as plain values, without RESUMABLE_KEYS."""
    identity = OmegaConf.to_container(config, resolve=True)
    for key in RESUMABLE_KEYS:
        *parents, name = key.split(".")
        section = identity
        for parent in parents:
            section = section.get(parent, {})
        section.pop(name, None)
    return identity


def check_same_training(config: DictConfig, saved: dict, where: str) -> None:
    """Raises ConfigError naming the first key where `config` trains something else than `saved`.

    where: what the config came from, e.g. "runs/a/config.yaml with --set ...".
    """
    difference = _first_difference(training_identity(config), saved)
    if difference is not None:
        key, now, then = difference
        raise ConfigError(f"{key}: {now!r} in {where}, {then!r} in the run being resumed — a resumed run "
                          f"trains as it began; only {', '.join(RESUMABLE_KEYS)} may change (start a new "
                          "run to change the rest)")


def _first_difference(now, then, prefix: str = ""):
    if isinstance(now, dict) and isinstance(then, dict):
        for key in list(now) + [key for key in then if key not in now]:
            found = _first_difference(now.get(key, "<unset>"), then.get(key, "<unset>"),
                                      f"{prefix}.{key}" if prefix else str(key))
            if found is not None:
                return found
        return None
    return None if now == then else (prefix or "config", now, then)
