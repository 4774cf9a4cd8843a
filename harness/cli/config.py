"""Sweep settings: one typed config, from defaults < pyproject [tool.attnbench] < --config < flags.

Every key is checked; an unknown key or a bad value is refused with a message that names it, and
so are settings given to `--resume` that differ from the run's own.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import impls
from harness.cli.options import (
    UsageError,
    parse_dtype_list,
    parse_fraction,
    parse_int_list,
    parse_non_negative_int,
    parse_positive_int,
    split_list,
)
from harness.results.machine import usable_cores
from harness.results.rundir import RunDir, RunDirError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MIN_SAMPLES = 5  # fewer and the median and IQR say little
DEFAULT_N = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
# How the baseline is chosen when none is given, in the words of every command's help.
DEFAULT_BASELINE = f"the first of {', '.join(impls.DEFAULT_BASELINES)} measured"
QUICK = {"n": (64, 128, 256, 512, 1024), "d": (64,), "target_s": 0.2, "sweep_budget_s": 100.0}


def setting(default=None, help: str | None = None, factory=None, *, parse, **flag):
    """A field of SweepConfig and how a given value of it is checked and converted (`parse`,
    given the option's name and the value); with `help` it is also a flag of `attnbench run`
    (--name with '_' as '-' and no '_s' suffix), whose argparse options `flag` adds."""
    metadata = {"parse": parse, **({"help": help, "flag": flag} if help else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _as_text_list(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{key}: expected a list or a comma-separated string, got {value!r}")


def _names(option: str, value) -> tuple[str, ...]:
    return tuple(split_list("--impl", _as_text_list(option, value)))


def _sizes(option: str, value) -> tuple[int, ...]:
    return tuple(parse_int_list(option, _as_text_list(option, value)))


def _dtypes(option: str, value) -> tuple[str, ...]:
    return tuple(parse_dtype_list(_as_text_list(option, value)))


def _name(option: str, value) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{option}: expected an implementation's name, got {value!r}")
    return value.strip()


def _switch(option: str, value) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{option}: expected true or false, got {value!r}")
    return value


def _count(option: str, value) -> int:
    if isinstance(value, (bool, float)):
        raise UsageError(f"{option}: expected a positive integer, got {value!r}")
    return parse_positive_int(option, value)


def _samples(option: str, value) -> int:
    number = _count(option, value)
    if number < MIN_SAMPLES:
        raise UsageError(f"{option}: expected at least {MIN_SAMPLES}, got {number}")
    return number


def _threads(option: str, value) -> int:
    threads = _count(option, value)
    if threads > usable_cores():
        raise UsageError(
            f"--threads: expected at most {usable_cores()} (the usable cores), got {threads}"
        )
    return threads


def _precision(option: str, value) -> float:
    return parse_fraction(option, value, allow_zero=True)


def _seconds(option: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")  # refused below, as is any number not above 0 or not finite
    if not (number > 0 and number < float("inf")):
        raise UsageError(f"{option}: expected a positive number of seconds, got {value!r}")
    return number


MASK_WORDS = {"true": (True,), "false": (False,), "both": (False, True)}


def parse_masks(option: str, value) -> tuple[bool, ...]:
    """true, false or both (a flag or TOML key), or a list of booleans: the masks to sweep."""
    if isinstance(value, bool):
        return (value,)
    if isinstance(value, str) and value.strip().lower() in MASK_WORDS:
        return MASK_WORDS[value.strip().lower()]
    if isinstance(value, list) and value and all(isinstance(v, bool) for v in value):
        return tuple(sorted(set(value)))
    raise UsageError(f"{option}: expected true, false or both, got {value!r}")


@dataclass(frozen=True)
class SweepConfig:
    """What to measure and how; every field can be a TOML key, and those with a help text are
    also flags of `attnbench run` (declared here once: the parser and the errors read them)."""

    impl: tuple[str, ...] = setting(
        (),
        "comma-separated names (default: all; any that cannot run here is listed, with why)",
        parse=_names,
    )
    n: tuple[int, ...] = setting(
        DEFAULT_N, "sequence lengths (keys), e.g. 64,128,256", parse=_sizes
    )
    d: tuple[int, ...] = setting((32, 64, 128), "head dimensions", parse=_sizes)
    dtype: tuple[str, ...] = setting(("float32",), "float32, float64 or both", parse=_dtypes)
    batch: int = setting(1, "batch size", parse=_count)
    heads: int = setting(1, "query heads", parse=_count)
    kv_heads: int = setting(
        0,
        "key/value heads, a divisor of --heads (0: as many as --heads; fewer is grouped-query)",
        parse=parse_non_negative_int,
    )
    n_q: int = setting(
        0,
        "a fixed query length (0: n); --n-q 1 is decode, n sweeps the KV cache",
        parse=parse_non_negative_int,
    )
    tokens: int = setting(
        0,
        "a fixed token budget: each case's batch is tokens // n (0: --batch)",
        parse=parse_non_negative_int,
    )
    causal: tuple[bool, ...] = setting(
        (False,),
        "apply the causal mask; `--causal both` measures each shape with and without it",
        parse=parse_masks,
        nargs="?",
        const="true",
        metavar="both",
    )
    cold_cache: bool = setting(
        False,
        "evict the CPU caches before every timed call (DRAM-bound figures)",
        parse=_switch,
        action="store_const",
        const=True,
    )
    threads: int = setting(
        help="threads for every implementation (default: all usable cores)",
        factory=usable_cores,
        parse=_threads,
    )
    budget_s: float = setting(
        2.0, "seconds one call may take; slower cases are skipped", parse=_seconds
    )
    sweep_budget_s: float = setting(
        900.0, "seconds for the whole sweep; cases that won't fit skip", parse=_seconds
    )
    target_s: float = setting(
        1.0, "measuring seconds per case after warm-up, over the rounds", parse=_seconds
    )
    rounds: int = setting(3, "rounds per shape, each in fresh workers taking turns", parse=_count)
    ci: float = setting(
        0.0,
        "precision wanted, e.g. 2%%: more rounds (5 at least) until each ratio's 95%% "
        "interval is within +-2%% of it (or --max-rounds, or the sweep budget, ends it)",
        parse=_precision,
    )
    max_rounds: int = setting(12, "the most rounds --ci may take per shape", parse=_count)
    baseline: str = setting(
        "",
        f"implementation every ratio is to (default: {DEFAULT_BASELINE})",
        parse=_name,
    )
    min_samples: int = setting(5, parse=_samples)
    max_samples: int = setting(100, parse=_count)
    min_sample_s: float = setting(0.02, parse=_seconds)
    # a worker silent this long is killed, its case failed
    case_timeout_s: float = setting(300.0, parse=_seconds)
    seed: int = setting(0, "seed of the random inputs", parse=parse_non_negative_int)

    def settings(self) -> dict:
        """What defines the measurements (what --resume must match)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


FIELDS = {f.name: f for f in dataclasses.fields(SweepConfig)}
KEYS = set(FIELDS)
ALIASES = {  # TOML keys also accepted, as the flags spell them
    "budget": "budget_s",
    "sweep_budget": "sweep_budget_s",
    "target": "target_s",
    "impls": "impl",
}
RUN_FIELDS = tuple(f for f in dataclasses.fields(SweepConfig) if f.metadata.get("help"))
FLAGS = {f.name for f in RUN_FIELDS}


def flag_name(key: str) -> str:
    """--cold-cache for cold_cache, --budget for budget_s."""
    return f"--{key.removesuffix('_s').replace('_', '-')}"


def add_run_flags(parser, keys=None, defaults: dict | None = None) -> None:
    """The flags of `attnbench run` that are settings (those named in `keys`: all by default),
    with the default in the help: that of `defaults` (another command's) where given."""
    config = SweepConfig()
    for f in RUN_FIELDS:
        if keys is not None and f.name not in keys:
            continue
        default = (defaults or {}).get(f.name, getattr(config, f.name))
        text, options = f.metadata["help"], dict(f.metadata["flag"])
        if "default" not in text and default not in ((), (False,), False, 0, ""):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            text += f" (default {shown})"
        if f.name.endswith("_s"):
            options.setdefault("metavar", "SECONDS")
        parser.add_argument(flag_name(f.name), dest=f.name, help=text, **options)


# The settings `attnbench check` shares with `attnbench run`, and its own defaults among them.
CHECK_KEYS = ("impl", "dtype", "batch", "heads", "kv_heads", "n_q", "seed")
CHECK_DEFAULTS = {"dtype": ("float32", "float64")}


def check_settings(given: dict) -> dict:
    """`attnbench check`'s shared settings: run's defaults (CHECK_DEFAULTS where it has its
    own), then the flags given (None: not given), each checked by its field's parser."""
    config = SweepConfig()
    chosen = {key: CHECK_DEFAULTS.get(key, getattr(config, key)) for key in CHECK_KEYS}
    chosen.update({key: coerce(key, value) for key, value in given.items() if value is not None})
    return chosen


def coerce(key: str, value):
    """Check one setting and convert it to its field's type, by the field's own parser."""
    option = flag_name(key) if key in FLAGS else key
    return FIELDS[key].metadata["parse"](option, value)


def apply(config: SweepConfig, values: dict, source: str) -> SweepConfig:
    changes = {}
    for raw_key, value in values.items():
        key = ALIASES.get(raw_key, raw_key).replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in KEYS:
            valid = ", ".join(sorted(KEYS | set(ALIASES)))
            raise UsageError(f"{source}: unknown key {raw_key!r}; valid keys: {valid}")
        try:
            changes[key] = coerce(key, value)
        except UsageError as exc:
            raise UsageError(exc if source == "command line" else f"{source}: {exc}") from None
    merged = dataclasses.replace(config, **changes)
    if merged.rounds > merged.max_rounds:
        raise UsageError(
            f"{source}: rounds ({merged.rounds}) exceeds max_rounds ({merged.max_rounds})"
        )
    check_shapes(merged, source)
    if merged.min_samples > merged.max_samples:
        raise UsageError(
            f"{source}: min_samples ({merged.min_samples}) exceeds "
            f"max_samples ({merged.max_samples})"
        )
    return merged


def check_shapes(config: SweepConfig, source: str) -> None:
    """The settings that only make sense together: heads and kv_heads, tokens and n, batch."""
    if config.kv_heads and config.heads % config.kv_heads:
        raise UsageError(
            f"{source}: --kv-heads: expected a divisor of --heads ({config.heads}) "
            f"(grouped-query attention), got {config.kv_heads}"
        )
    if config.tokens:
        if config.batch != 1:
            raise UsageError(
                f"{source}: --tokens sets the batch of each case (tokens // n); give --tokens "
                f"or --batch, not both (got --batch {config.batch})"
            )
        if config.tokens < max(config.n):
            raise UsageError(
                f"{source}: --tokens: expected at least the longest --n ({max(config.n)}), "
                f"so that every case has a batch of 1 or more, got {config.tokens}"
            )


def read_toml(path: Path, table: tuple[str, ...] = ()) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--config: no such file: {path}") from None
    except OSError as exc:
        raise UsageError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config: {path} is not valid TOML: {exc}") from None
    for name in table:
        data = data.get(name, {})
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a table at {'.'.join(table)}")
    return data


PRESETS_FILE = Path(__file__).with_name("presets.toml")


def presets(project_dir: Path | None = None) -> dict[str, dict]:
    """Named workloads: harness/presets.toml's, then the project's
    [tool.attnbench.presets.NAME] tables (which replace a built-in one of the same name)."""
    named = tomllib.loads(PRESETS_FILE.read_text())
    pyproject = (project_dir or Path.cwd()) / "pyproject.toml"
    if pyproject.is_file():
        own = read_toml(pyproject, ("tool", "attnbench")).get("presets", {})
        if not isinstance(own, dict) or not all(isinstance(t, dict) for t in own.values()):
            raise UsageError(f"{pyproject}: [tool.attnbench.presets] must hold tables")
        named.update(own)
    return named


def preset_settings(name: str, project_dir: Path | None = None) -> dict:
    named = presets(project_dir)
    if name not in named:
        raise UsageError(
            f"--preset: unknown preset {name!r}; valid names: {', '.join(sorted(named))}"
        )
    return {k: v for k, v in named[name].items() if k != "description"}


def load_config(
    flags: dict,
    config_file: str | None = None,
    project_dir: Path | None = None,
    preset: str | None = None,
) -> SweepConfig:
    """Defaults, then pyproject.toml's [tool.attnbench], then the preset, then the --config
    file, then flags."""
    config = SweepConfig()
    pyproject = (project_dir or Path.cwd()) / "pyproject.toml"
    if pyproject.is_file():
        table = read_toml(pyproject, ("tool", "attnbench"))
        table.pop("presets", None)  # named workloads, not settings
        config = apply(config, table, f"{pyproject} [tool.attnbench]")
    if preset is not None:
        config = apply(config, preset_settings(preset, project_dir), f"--preset {preset}")
    if config_file is not None:
        config = apply(config, read_toml(Path(config_file)), f"--config {config_file}")
    return apply(config, {k: v for k, v in flags.items() if v is not None}, "command line")


def resume_config(run: RunDir, given: dict, config_file_values: dict) -> tuple[SweepConfig, dict]:
    """The stored settings and meta.json of a run to resume; settings given now that differ
    from the stored ones are refused."""
    try:
        meta = run.meta()
    except RunDirError as exc:
        raise UsageError(f"--resume: {exc}") from None
    if "migrated_from" in meta:
        raise UsageError(
            f"--resume: {run.path} was measured by an older attnbench (schema "
            f"{meta['migrated_from']}, another method); start a new run with its settings: "
            f"{meta.get('command', 'attnbench run ...')}"
        )
    for key, kind in (("settings", dict), ("impls", list)):
        if not isinstance(meta.get(key), kind):
            raise UsageError(f"--resume: {run.meta_path}: no {key!r} recorded; cannot resume")
    stored = apply(SweepConfig(), meta["settings"], f"{run.meta_path} settings")
    asked = apply(stored, {**config_file_values, **given}, "command line")
    differ = [
        f"{f.name} (run: {getattr(stored, f.name)!r}, given: {getattr(asked, f.name)!r})"
        for f in dataclasses.fields(SweepConfig)
        if getattr(stored, f.name) != getattr(asked, f.name)
    ]
    if differ:
        raise UsageError(
            f"--resume: settings differ from the run being resumed: {'; '.join(differ)}. "
            "Resume without them, or start a new run."
        )
    return stored, meta
