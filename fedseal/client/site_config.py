"""A site's configuration file (`sites/NAME.toml`), parsed into frozen, validated objects.

Everything a site decides for itself lives here: where its data is, which device trains, where its
state is kept and how to reach the coordinator. What must be identical across the federation (the
base model, LoRA shape, steps per round) comes from the coordinator's run instead.

Errors are `SiteConfigError` with a one-line message naming the file and the field, because the
people who edit these files are hospital and bank IT staff, not fedseal developers.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from fedseal.client.dp.errors import DpConfigError
from fedseal.client.dp.settings import DpSettings, parse_dp_section
from fedseal.client.errors import SiteError
from fedseal.contract.limits import SiteLimits
from fedseal.secure_agg.params import Mode

__all__ = [
    "SITE_NAME_PATTERN",
    "CoordinatorSettings",
    "DataSettings",
    "SecureAggPolicy",
    "SiteConfig",
    "SiteConfigError",
    "SiteSettings",
    "TrainingLimits",
    "load_site_config",
    "parse_site_config",
]

SITE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ADDRESS_PATTERN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DATA_SOURCES = ("demo", "csv")
MAX_CONFIG_BYTES = 1 << 20
"""A site config is a few hundred bytes; anything over this is refused before it is parsed."""


class SiteConfigError(SiteError, ValueError):
    """A site configuration that cannot be used; the message is one line meant for a person."""


@dataclass(frozen=True)
class SiteSettings:
    """Who the site is and where it keeps its state."""

    name: str
    state_dir: Path
    device: str = "auto"


@dataclass(frozen=True)
class CoordinatorSettings:
    """How the site reaches the coordinator's SuperLink (Fleet API)."""

    address: str
    insecure: bool = True
    root_certificates: Path | None = None
    connect_timeout_s: float = 60.0
    auth_key: Path | None = None
    """The SuperNode's authentication key (OpenSSH, P-384), for a SuperLink with node auth."""

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])


@dataclass(frozen=True)
class DataSettings:
    """Where the site's records come from: a demo scenario's shard, or the site's own CSV files."""

    source: str
    scenario: str | None = None
    num_sites: int | None = None
    seed: int = 0
    train_path: Path | None = None
    test_path: Path | None = None
    validation_path: Path | None = None
    text_column: str = "text"
    label_column: str = "label"


@dataclass(frozen=True)
class TrainingLimits:
    """What the site is willing to spend per round, whatever the coordinator asks for."""

    batch_size: int = 32
    max_steps_per_round: int = 1000
    threads: int = 1
    max_eval_examples: int = 0  # 0: every test record; a positive cap makes evaluation cheaper


@dataclass(frozen=True)
class SecureAggPolicy:
    """The `[secure_agg]` table: which aggregation modes this site takes part in, and the least
    Shamir threshold it accepts (on top of what its pinned manifest requires).

    The default is he+ss only: a message in any other mode, or with no mode, is refused. `plain`
    and `he` show the coordinator (he: any colluding site) a site's update; a site that allows
    them is warned at start."""

    modes: frozenset[Mode] = frozenset({Mode.HE_SS})
    min_threshold: int = 0

    @property
    def weaker_modes(self) -> list[Mode]:
        return sorted(m for m in self.modes if m is not Mode.HE_SS)


@dataclass(frozen=True)
class SiteConfig:
    """A whole, validated site configuration."""

    path: Path
    site: SiteSettings
    coordinator: CoordinatorSettings
    data: DataSettings
    training: TrainingLimits
    dp: DpSettings | None = None
    """The `[dp]` table; None trains without differential privacy. δ and the "could this noise
    level ever fit the budget" check depend on the site's number of records, so they are
    completed by `resolve_dp` once the data is loaded (before the site joins)."""
    limits: SiteLimits = field(default_factory=SiteLimits)
    """The `[limits]` table: the largest coordinator message the site reads, per kind."""
    secure_agg: SecureAggPolicy = field(default_factory=SecureAggPolicy)
    """The `[secure_agg]` table: the modes and least threshold this site accepts."""

    def resolve_dp(self, num_records: int) -> DpSettings | None:
        """The `[dp]` settings for `num_records` training records, or a `SiteConfigError`."""
        if self.dp is None:
            return None
        try:
            return self.dp.resolved(num_records, self.training.batch_size)
        except DpConfigError as exc:
            raise SiteConfigError(f"{self.path}: {exc}") from None


def load_site_config(path: Path) -> SiteConfig:
    """Read and validate a site config file."""
    path = Path(path)
    if not path.is_file():
        raise SiteConfigError(f"site config {path} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise SiteConfigError(
                f"{path}: file of {size} bytes exceeds the limit of {MAX_CONFIG_BYTES} bytes"
            )
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"site config {path} cannot be read: {exc.strerror}") from None
    except RecursionError:
        raise SiteConfigError(f"{path}: not valid TOML (nested too deeply)") from None
    except UnicodeDecodeError:
        raise SiteConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiteConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_site_config(raw, path)


def parse_site_config(raw: dict[str, Any], path: Path) -> SiteConfig:
    """Validate an already-parsed TOML document; relative paths are resolved against its folder."""
    reader = _Reader(raw, path)
    base_dir = path.resolve().parent
    reader.only_sections("site", "coordinator", "data", "training", "dp", "limits", "secure_agg")

    site_raw = reader.section("site", required=True)
    site_raw.only("name", "state_dir", "device")
    name = site_raw.string("name", required=True)
    if not SITE_NAME_PATTERN.match(name):
        reader.fail("site.name", f"{name!r} must be lower-case letters, digits and _ (max 63)")
    device = site_raw.string("device", default="auto")
    if not _DEVICE_PATTERN.match(device):
        reader.fail("site.device", f"{device!r} must be auto, cpu, cuda or cuda:N")
    state_dir = _resolve(base_dir, site_raw.string("state_dir", default=f"state/{name}"))
    site = SiteSettings(name=name, state_dir=state_dir, device=device)

    coord_raw = reader.section("coordinator", required=True)
    coord_raw.only("address", "insecure", "root_certificates", "connect_timeout_s", "auth_key")
    address = coord_raw.string("address", required=True)
    match = _ADDRESS_PATTERN.match(address)
    if not match or not 0 < int(match.group(2)) < 65536:
        reader.fail("coordinator.address", f"{address!r} must be HOST:PORT")
    insecure = coord_raw.boolean("insecure", default=True)
    certs = coord_raw.string("root_certificates", default="")
    root_certificates = _resolve(base_dir, certs) if certs else None
    if not insecure and root_certificates is None:
        reader.fail("coordinator.root_certificates", "is required when insecure = false")
    if root_certificates is not None and not root_certificates.is_file():
        reader.fail("coordinator.root_certificates", f"file {root_certificates} does not exist")
    timeout = coord_raw.number("connect_timeout_s", default=60.0)
    if not 0 < timeout <= 86_400:
        reader.fail("coordinator.connect_timeout_s", "must be between 0 and 86400 seconds")
    auth = coord_raw.string("auth_key", default="")
    auth_key = _resolve(base_dir, auth) if auth else None
    if auth_key is not None and insecure:
        # Flower refuses node authentication without TLS: say so before anything starts.
        reader.fail("coordinator.auth_key", "needs TLS: set insecure = false and root_certificates")
    coordinator = CoordinatorSettings(
        address=address,
        insecure=insecure,
        root_certificates=root_certificates,
        connect_timeout_s=float(timeout),
        auth_key=auth_key,
    )

    data = _parse_data(reader, base_dir)

    train_raw = reader.section("training", required=False)
    train_raw.only("batch_size", "max_steps_per_round", "threads", "max_eval_examples")
    batch_size = train_raw.integer("batch_size", default=32)
    max_steps = train_raw.integer("max_steps_per_round", default=1000)
    threads = train_raw.integer("threads", default=1)
    if not 1 <= batch_size <= 4096:
        reader.fail("training.batch_size", "must be between 1 and 4096")
    if not 1 <= max_steps <= 1_000_000:
        reader.fail("training.max_steps_per_round", "must be between 1 and 1000000")
    if not 1 <= threads <= 256:
        reader.fail("training.threads", "must be between 1 and 256")
    max_eval = train_raw.integer("max_eval_examples", default=0)
    if max_eval < 0:
        reader.fail("training.max_eval_examples", "must be 0 (all) or positive")
    training = TrainingLimits(
        batch_size=batch_size,
        max_steps_per_round=max_steps,
        threads=threads,
        max_eval_examples=max_eval,
    )

    limits = _parse_limits(reader)
    secure_agg = _parse_secure_agg(reader)

    try:
        dp = parse_dp_section(raw.get("dp"), path)
    except DpConfigError as exc:
        raise SiteConfigError(str(exc)) from None

    return SiteConfig(
        path=path.resolve(),
        site=site,
        coordinator=coordinator,
        data=data,
        training=training,
        dp=dp,
        limits=limits,
        secure_agg=secure_agg,
    )


def _parse_data(reader: _Reader, base_dir: Path) -> DataSettings:
    data_raw = reader.section("data", required=True)
    data_raw.only(
        "source",
        "scenario",
        "num_sites",
        "seed",
        "train_path",
        "validation_path",
        "test_path",
        "text_column",
        "label_column",
    )
    source = data_raw.string("source", required=True)
    if source not in DATA_SOURCES:
        reader.fail("data.source", f"{source!r} must be one of {', '.join(DATA_SOURCES)}")
    seed = data_raw.integer("seed", default=0)
    if source == "demo":
        scenario = data_raw.string("scenario", required=True)
        num_sites = data_raw.integer("num_sites", required=True)
        if not 1 <= num_sites <= 1000:
            reader.fail("data.num_sites", "must be between 1 and 1000")
        return DataSettings(source=source, scenario=scenario, num_sites=num_sites, seed=seed)
    train_path = _resolve(base_dir, data_raw.string("train_path", required=True))
    test_path = _resolve(base_dir, data_raw.string("test_path", required=True))
    validation = data_raw.string("validation_path", default="")
    validation_path = _resolve(base_dir, validation) if validation else None
    paths = [("data.train_path", train_path), ("data.test_path", test_path)]
    if validation_path is not None:
        paths.append(("data.validation_path", validation_path))
    for key, value in paths:
        if not value.is_file():
            reader.fail(key, f"file {value} does not exist")
    return DataSettings(
        source=source,
        seed=seed,
        train_path=train_path,
        test_path=test_path,
        validation_path=validation_path,
        text_column=data_raw.string("text_column", default="text"),
        label_column=data_raw.string("label_column", default="label"),
    )


def _parse_limits(reader: _Reader) -> SiteLimits:
    """`[limits]`: MiB the site reads at most in one coordinator message, per kind."""
    table = reader.section("limits", required=False)
    table.only("max_message_mib", "max_control_message_mib")
    defaults = SiteLimits()
    message = table.integer("max_message_mib", default=defaults.message >> 20)
    control = table.integer("max_control_message_mib", default=defaults.control >> 20)
    if not 1 <= message <= 4095:
        reader.fail("limits.max_message_mib", "must be between 1 and 4095")
    if not 1 <= control <= 4095:
        reader.fail("limits.max_control_message_mib", "must be between 1 and 4095")
    return SiteLimits(message=message << 20, control=control << 20)


def _parse_secure_agg(reader: _Reader) -> SecureAggPolicy:
    """`[secure_agg]`: `modes` (a list of mode names; default ["he+ss"]) and `min_threshold`."""
    table = reader.section("secure_agg", required=False)
    table.only("modes", "min_threshold")
    raw = table.raw("modes")
    modes = SecureAggPolicy().modes
    if raw is not None:
        known = ", ".join(str(m) for m in Mode)
        if not isinstance(raw, list) or not raw or not all(isinstance(m, str) for m in raw):
            reader.fail("secure_agg.modes", f"must be a non-empty list of mode names ({known})")
        try:
            modes = frozenset(Mode(m) for m in raw)
        except ValueError:
            reader.fail("secure_agg.modes", f"{raw} must name only modes among {known}")
    min_threshold = table.integer("min_threshold", default=0)
    if not 0 <= min_threshold <= 1000:
        reader.fail("secure_agg.min_threshold", "must be between 0 and 1000")
    return SecureAggPolicy(modes=modes, min_threshold=min_threshold)


def _resolve(base_dir: Path, value: str) -> Path:
    try:
        candidate = Path(value).expanduser()
        return (candidate if candidate.is_absolute() else base_dir / candidate).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # ~unknown-user, NUL byte, loops
        raise SiteConfigError(f"path {value!r} cannot be used: {exc}") from None


class _Reader:
    """Typed access to one TOML table, failing with the file and dotted key in the message."""

    def __init__(self, table: dict[str, Any], path: Path, prefix: str = "") -> None:
        self._table = table
        self._path = path
        self._prefix = prefix

    def fail(self, key: str, problem: str) -> NoReturn:
        raise SiteConfigError(f"{self._path}: {key} {problem}")

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def only_sections(self, *allowed: str) -> None:
        self.only(*allowed)

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self._table) - set(allowed))
        if unknown:
            where = f"[{self._prefix.rstrip('.')}]" if self._prefix else "the file"
            self.fail(
                self._key(unknown[0]),
                f"is not a known setting in {where} (known: {', '.join(allowed)})",
            )

    def section(self, name: str, *, required: bool) -> _Reader:
        value = self._table.get(name)
        if value is None:
            if required:
                self.fail(f"[{name}]", "section is missing")
            value = {}
        if not isinstance(value, dict):
            self.fail(f"[{name}]", "must be a table")
        return _Reader(value, self._path, f"{name}.")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self._table and required:
            self.fail(self._key(key), "is missing")
        return self._table.get(key)

    def raw(self, key: str) -> Any:
        return self._table.get(key)

    def string(self, key: str, *, required: bool = False, default: str = "") -> str:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(self._key(key), "must be a non-empty string")
        return value.strip()

    def integer(self, key: str, *, required: bool = False, default: int = 0) -> int:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(self._key(key), "must be an integer")
        return value

    def number(self, key: str, *, required: bool = False, default: float = 0.0) -> float:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(self._key(key), "must be a number")
        return float(value)

    def boolean(self, key: str, *, required: bool = False, default: bool = False) -> bool:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(self._key(key), "must be true or false")
        return value
