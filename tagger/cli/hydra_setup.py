"""How the command line sets Hydra up: the arguments it rewrites and checks before Hydra
sees them, the resolvers the configs use, one-line config errors, and composing a run's
config without launching one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra._internal.utils as hydra_utils
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from tagger.config import CONFIG_DIR
from tagger.data.store import DEFAULT_WINDOW_SECONDS, store_info
from tagger.errors import ConfigError, find_config_error
from tagger.optim import scaled_lr
from tagger.run_files import describe_os_error

#: How a Hydra command (train, eval) writes its run elsewhere.
HYDRA_ELSEWHERE = "paths.log_dir=DIR or hydra.run.dir=DIR"


def exit_on_config_error(error: Exception, elsewhere: str = "") -> None:
    """Print a ``ConfigError`` behind ``error``, or a config Hydra cannot compose or build
    (``hydra_config_error``), as one line and exit with status 2; else, an ``OSError``
    behind it with status 1 (``exit_on_os_error``); else return."""
    config_error = find_config_error(error)
    line = str(config_error) if config_error is not None else hydra_config_error(error)
    if line is not None:
        print(f"tagger: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    exit_on_os_error(error, elsewhere)


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and the exceptions behind it, outermost first."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def hydra_config_error(error: BaseException) -> str | None:
    """One line for a config that Hydra could not compose (an unknown key, a bad override)
    or whose object could not be built (a class refusing its arguments), or None.

    With ``HYDRA_FULL_ERROR=1`` None, so Hydra shows the whole traceback for debugging.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return None
    chain = _chain(error)
    built = [e for e in chain if isinstance(e, InstantiationException)]
    if built:
        targets = re.findall(r"call to target '([^']+)'", str(built[-1]))
        cause = chain[-1]
        reason = (str(cause).splitlines() or [""])[0]
        what = f"{type(cause).__name__}: {reason}" if cause is not built[-1] else reason
        target = targets[0] if targets else "an object"
        return f"the config cannot build {target}: {what} (check its settings)"
    for e in chain:
        if isinstance(e, (HydraException, OmegaConfBaseException)):
            lines = [line.strip() for line in str(e).splitlines()]
            kept = [line for line in lines if line and not line.startswith(NOISE)]
            return f"bad override or config: {' '.join(kept) or type(e).__name__}"
    return None


#: Lines of Hydra's and OmegaConf's messages that repeat what the first lines said.
NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment variable")


def find_os_error(error: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``error``, if any (Hydra and logging wrap exceptions), along
    the chain a traceback would show."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def exit_on_os_error(error: BaseException, elsewhere: str = "") -> None:
    """The command line's handler of a failed file system: print the ``OSError`` behind
    ``error`` as one line (``tagger: error: cannot write PATH: reason; fix``) and exit with
    status 1; else return. ``elsewhere`` says how to write elsewhere (``paths.log_dir=DIR``).
    A closed pipe on stdout (``tagger report | head``) exits 1 quietly.
    """
    os_error = find_os_error(error)
    if os_error is None:
        return
    if isinstance(os_error, BrokenPipeError) and os_error.filename is None:
        devnull = os.open(os.devnull, os.O_WRONLY)  # Python flushes stdout again at exit
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None
    print(f"tagger: error: {describe_os_error(os_error, elsewhere)}", file=sys.stderr)
    raise SystemExit(1) from None


@contextlib.contextmanager
def os_errors_in_one_line(elsewhere: str = "") -> Iterator[None]:
    """Within, an error that reaches Hydra's own error report (which prints a traceback
    and exits 1) is one line instead: a config Hydra cannot compose or build, status 2
    (``exit_on_config_error``); an ``OSError``, status 1 (``exit_on_os_error``): creating
    the run or sweep directory, writing ``.hydra/`` and the log file, or raised by the job.

    Hydra 1.3 has no hook for this; its reporter, ``hydra._internal.utils.run_and_report``,
    is wrapped for the duration and restored after.
    """
    report = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except Exception as error:
                exit_on_config_error(error, elsewhere)
                raise

        return report(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = report


def quote_path_values(overrides: list[str]) -> list[str]:
    """Quote override values that contain ``=``, such as paths into sweep job directories.

    Hydra cannot parse ``ckpt_path=.../0_conv.length=256,seed=1/last.ckpt`` unquoted; no
    unquoted Hydra value can contain ``=``, so quoting such values changes nothing else.
    """
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and "=" in value and value[:1] not in "'\"" and not key.startswith("-"):
            override = f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'"
        quoted.append(override)
    return quoted


def user_config_dirs(args: list[str]) -> list[Path] | None:
    """The config directories a command line adds to Hydra's search path, in its order:
    ``--config-dir DIR`` (``-cd DIR``) and ``hydra.searchpath=[file:///DIR,...]``.

    None when an entry is not a plain directory (``pkg://...``): its groups cannot be listed.
    """
    dirs: list[str] = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(args[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.partition("=")[2])
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            try:
                (override,) = OverridesParser.create().parse_overrides([arg])
            except Exception:  # Hydra itself will say what is wrong with it
                continue
            value = override.value()
            dirs.extend(value if isinstance(value, list) else [value])
    paths = []
    for entry in map(str, dirs):
        scheme, sep, rest = entry.partition("://")
        if sep and scheme != "file":
            return None
        paths.append(Path(rest if sep else entry).expanduser())
    return paths


def check_group_choices(overrides: list[str], config_dir: str = CONFIG_DIR) -> None:
    """Refuse ``group=name`` overrides naming no ``group/name.yaml``, in one sentence.

    The groups are looked up in ``config_dir`` and in the directories the overrides add to
    the search path (``user_config_dirs``); with a ``pkg://`` search path nothing is
    checked. Sweep lists (``model=a,b``) are checked name by name; ``null`` removes a group.
    ``hydra/...`` groups are left to Hydra, whose plugins add options outside ``conf/``.
    Hydra would refuse them too, but with a page of search-path details.
    """
    user_dirs = user_config_dirs(overrides)
    if user_dirs is None:
        return
    roots = [Path(config_dir), *user_dirs]
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        groups = [root / key for root in roots if (root / key).is_dir()]
        if not sep or not groups or "(" in value or key.startswith("hydra/"):
            continue
        available = sorted({p.stem for group in groups for p in group.glob("*.yaml")})
        where = " or ".join(f"{root}/{key}/*.yaml" for root in user_dirs)
        for choice in value.split(","):
            if choice.strip() not in (*available, "null"):
                raise ConfigError(
                    f"unknown {key} {choice.strip()!r} in '{override}'; "
                    f"choose one of: {', '.join(available)} (conf/{key}/*.yaml"
                    f"{' or ' + where if where else ''})"
                )


def bounded_dirname(name: str, limit: int = 160) -> str:
    """``name`` if it fits in ``limit`` characters, else its start plus a hash of the whole.

    Sweep job directories are named after their overrides, which can outgrow the
    255-byte file-name limit; the full overrides stay in the job's ``.hydra/overrides.yaml``.
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 10]}~{digest}"


def _store_subclip_len(path: str | None, n_subclips: int) -> int | None:
    """A clip store's clip length split into ``n_subclips`` windows; for a store of tracks
    (format version 2, no clip length) ``DEFAULT_WINDOW_SECONDS`` at its sample rate; None
    without a store."""
    clip_samples = store_info(path, "clip_samples")
    if clip_samples is None:
        sample_rate = store_info(path, "sample_rate")
        return None if sample_rate is None else round(DEFAULT_WINDOW_SECONDS * sample_rate)
    return clip_samples // int(n_subclips)


def register_resolvers() -> None:
    """Register the resolvers the configs use (once per process; again is a no-op).

    ``${run_id:}`` is a random 6-hex-digit token, drawn once per process (cached), so two
    runs or sweeps started in the same second never share a directory.
    ``${bounded_dirname:...}`` keeps a sweep job's directory name under the file-name limit.
    ``${scaled_lr:LR,BATCH,RULE}`` scales an optimizer's learning rate to the batch size
    (``tagger.optim.scaled_lr``).
    ``${store_sample_rate:PATH}`` and ``${store_subclip_len:PATH,N}`` read a clip store's
    ``meta.json`` (``conf/data/store.yaml``): its sample rate, and its clip length split
    into N windows (a store of tracks: 3 s windows, ``DEFAULT_WINDOW_SECONDS``); None when
    there is no store at PATH (the data module then says so).
    """
    resolvers: dict[str, Callable[..., object]] = {
        "store_sample_rate": lambda path: store_info(path, "sample_rate"),
        "store_subclip_len": _store_subclip_len,
        "scaled_lr": scaled_lr,
        "bounded_dirname": bounded_dirname,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)


def run_hydra_entry(hydra_main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` function from the command line: quote path values, refuse
    unknown config group names in one line, then hand over to Hydra; an ``OSError``
    anywhere in the run (the run directory included) ends it in one line, status 1."""
    sys.argv[1:] = quote_path_values(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        exit_on_config_error(error)
    with os_errors_in_one_line(HYDRA_ELSEWHERE):
        try:
            hydra_main()
        except Exception as error:
            exit_on_os_error(error, HYDRA_ELSEWHERE)
            raise


def compose_run_config(config_name: str, run_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as Hydra would for a run
    writing into ``run_dir``, without launching one (for tests, benchmarks, notebooks).

    An unknown group choice or an override Hydra cannot apply raises ``ConfigError``.
    """
    check_group_choices(overrides)
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"bad override: {str(error).splitlines()[0]}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        del cfg.hydra
    return cfg
